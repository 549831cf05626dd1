//! VRRP on the control core: the I/O driver around `proto::vrrp::Machine`.
//!
//! The protocol logic is sans-IO (`crate::proto::vrrp`); this module is the
//! thin, careful shell that gives it a network and a clock, interoperable
//! with keepalived:
//!
//! - [`socket`]: one raw protocol-112 socket per interface and family, bound
//!   to the device, multicast group joined, TTL / hop limit 255, exact source
//!   address (own IPv4 header; `IPV6_PKTINFO` with the link-local address);
//! - [`vip`]: VIP add/remove over rtnetlink (hand-written messages, ACKed;
//!   IPv6 without DAD);
//! - [`garp`]: gratuitous ARP frames and their repeat/refresh schedule;
//! - [`nd`]: unsolicited neighbour advertisements, IPv6's gratuitous ARP;
//! - [`iface`]: interface index, primary IPv4, MAC, link state;
//! - [`track`]: keepalived-style tracking (interfaces, scripts, upstreams,
//!   data-plane liveness) into an effective priority or FAULT;
//! - [`liveness`]: the data plane's progress, telling a dead data plane
//!   (FAULT, or a priority penalty that moves the VIP) from a busy host;
//! - [`notify`]: non-blocking `notify` scripts;
//! - [`plan`]: what a reload does to each instance (a pure decision);
//! - [`driver`]: the loop that ties them together.
//!
//! # Why a dedicated thread
//!
//! Measured here (ARCHITECTURE.md, "Measured"): at 10 ms adverts a 200 ms
//! stall of keepalived's process causes a false failover, and the backup's
//! advert gaps must stay near the interval under full load. So VRRP runs on its own thread named `vrrp`,
//! pinned to the control CPU, `SCHED_FIFO` where permitted (with
//! `SCHED_RESET_ON_FORK` so scripts it starts are ordinary processes), and
//! it waits with `ppoll` on exactly the next deadline any machine reports
//! (`Machine::poll_timeout`), nanosecond timeout, no sleep rounding. Nothing
//! on this thread blocks for long: scripts are spawned and reaped later,
//! netlink requests are single ACKed round trips to the kernel.
//!
//! # Sync groups
//!
//! Instances sharing a `sync_group` name move together, like keepalived's
//! `vrrp_sync_group`: if any member's own tracking says FAULT, every member
//! is held in FAULT (so the peer takes the whole group), and all leave FAULT
//! together; the largest tracking penalty of any member lowers every
//! member's priority alike; and a member that is Backup because a peer
//! outranks it holds the others in Backup (a master among them steps down
//! with a priority-0 advert, and none preempts the peer), so the group's
//! VIPs never end up split between two nodes.
//!
//! # Use
//!
//! ```text
//! let vrrp = vrrp::spawn(vrrp::SpawnArgs::new(&config))?;   // after the shards run
//! vrrp.roles();                                             // [(name, State, priority)]
//! vrrp.reload(&new.vrrp, "ringlb.toml")?;                  // SIGHUP (see `plan`)
//! vrrp.shutdown();   // SIGTERM: priority-0 adverts, VIPs handed over, thread joined
//! ```

pub mod driver;
pub mod garp;
pub mod handover;
pub mod iface;
pub mod liveness;
pub mod nd;
pub mod notify;
pub mod plan;
pub mod socket;
pub mod track;
pub mod vip;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, VrrpInstanceConfig};
use crate::metrics::Registry;
pub use crate::proto::vrrp::{Role, State};
pub use liveness::{SampleFn, ShardSample};
pub use track::UpstreamDownFn;

/// What [`spawn`] needs. Build with [`SpawnArgs::new`], then set the optional
/// data-plane hooks.
#[derive(Clone)]
pub struct SpawnArgs {
    pub instances: Vec<VrrpInstanceConfig>,
    /// Pin the `vrrp` thread here (`runtime.control_cpu`).
    pub control_cpu: Option<usize>,
    /// Where role, priority, transitions, adverts and drops are published.
    pub registry: Option<Arc<Registry>>,
    /// `track_upstream`: returns true when every server of the named
    /// upstream is down. Without it, `track_upstream` entries are ignored.
    pub upstream_down: Option<Arc<UpstreamDownFn>>,
    /// The shards' heartbeats (`track_data_plane`): a slow data plane lowers
    /// every instance's priority, a dead one faults them. Without it the
    /// data plane is not tracked.
    pub data_plane: Option<Arc<SampleFn>>,
    /// Called on the `vrrp` thread after any role or priority changed, with
    /// the new table (the control plane republishes its snapshot with it).
    pub on_roles: Option<Arc<RolesFn>>,
}

/// See [`SpawnArgs::on_roles`].
pub type RolesFn = dyn Fn(&[Role]) + Send + Sync;

impl SpawnArgs {
    pub fn new(config: &Config) -> SpawnArgs {
        SpawnArgs {
            instances: config.vrrp.clone(),
            control_cpu: config.runtime.control_cpu,
            registry: None,
            upstream_down: None,
            data_plane: None,
            on_roles: None,
        }
    }
}

/// Roles of every instance, written by the `vrrp` thread.
pub type Roles = Arc<Mutex<Vec<Role>>>;

/// How long a reload waits for the `vrrp` thread to apply it.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// The running VRRP thread. Dropping it shuts VRRP down like [`VrrpHandle::shutdown`].
pub struct VrrpHandle {
    roles: Roles,
    wake: Option<Arc<OwnedFd>>,
    cmds: Option<mpsc::Sender<driver::Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// What it was started with (a reload that adds the first instance
    /// starts the thread with the same hooks).
    args: SpawnArgs,
}

impl VrrpHandle {
    /// `(instance name, state, effective priority)` of every instance.
    pub fn roles(&self) -> Vec<(String, State, u8)> {
        self.roles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|r| (r.name.clone(), r.state, r.priority))
            .collect()
    }

    /// The shared role table itself (for a snapshot builder that wants to
    /// read it without going through the handle).
    pub fn shared_roles(&self) -> Roles {
        Arc::clone(&self.roles)
    }

    /// Whether any instance is master.
    pub fn is_master(&self) -> bool {
        self.roles().iter().any(|r| r.1 == State::Master)
    }

    /// The instances running now (as last applied).
    pub fn instances(&self) -> &[VrrpInstanceConfig] {
        &self.args.instances
    }

    /// Applies a reload's `[[vrrp.instance]]` list (see [`plan`]): all of it
    /// or, with an error naming `file:line:col` of what cannot be applied
    /// live, nothing. Returns one line per change applied.
    pub fn reload(
        &mut self,
        new: &[VrrpInstanceConfig],
        file: &str,
    ) -> Result<Vec<String>, String> {
        let actions = plan::plan(&self.args.instances, new).map_err(|refused| {
            let lines: Vec<String> = refused
                .iter()
                .map(|(name, r)| {
                    let at = new
                        .iter()
                        .find(|c| &c.name == name)
                        .and_then(|c| c.position(r.key))
                        .map_or(String::new(), |(l, c)| format!("{file}:{l}:{c}: "));
                    format!("{at}{}", r.message(name))
                })
                .collect();
            lines.join("\n")
        })?;
        if actions.iter().all(|(_, a)| *a == plan::Action::Keep) {
            self.args.instances = new.to_vec();
            return Ok(Vec::new());
        }
        let Some(tx) = &self.cmds else {
            // No thread yet (started without instances): start one now.
            let mut args = self.args.clone();
            args.instances = new.to_vec();
            let started =
                spawn_with(args, Arc::clone(&self.roles)).map_err(|e| format!("vrrp: {e}"))?;
            let lines = new
                .iter()
                .map(|c| format!("vrrp {}: added", c.name))
                .collect();
            *self = started;
            return Ok(lines);
        };
        let (reply, rx) = mpsc::channel();
        tx.send(driver::Cmd::Reload {
            instances: new.to_vec(),
            reply,
        })
        .map_err(|_| "vrrp: the vrrp thread is gone".to_string())?;
        self.wake_thread();
        let lines = rx
            .recv_timeout(RELOAD_WAIT)
            .map_err(|_| "vrrp: the vrrp thread did not answer the reload".to_string())??;
        self.args.instances = new.to_vec();
        Ok(lines)
    }

    fn wake_thread(&self) {
        if let Some(fd) = &self.wake {
            let one: u64 = 1;
            // SAFETY: an eventfd accepts an 8-byte write.
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Graceful stop: every master sends a priority-0 advert, `notify` runs
    /// with STOP, and the VIPs are removed once the new master is heard (or
    /// after one advert interval plus 200 ms) and a short linger has passed
    /// (`handover.rs`); returns when the thread has exited.
    pub fn shutdown(mut self) {
        self.stop(None);
    }

    /// [`VrrpHandle::shutdown`] for a node whose data plane counts its
    /// client exchanges in flight: a handing-over master keeps its
    /// addresses until none is left, briefly (`handover.rs`, lingering).
    pub fn shutdown_after_exchanges(mut self, in_flight: driver::InFlightFn) {
        self.stop(Some(in_flight));
    }

    fn stop(&mut self, in_flight: Option<driver::InFlightFn>) {
        if let Some(tx) = self.cmds.take() {
            let _ = tx.send(driver::Cmd::Shutdown(in_flight));
        }
        self.wake_thread();
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VrrpHandle {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// Starts the `vrrp` thread running every configured instance. With no
/// instances, no thread is started. Fails (before starting anything) if a
/// configured interface does not exist or the raw sockets cannot be opened
/// (CAP_NET_RAW is required).
pub fn spawn(args: SpawnArgs) -> io::Result<VrrpHandle> {
    spawn_with(args, Arc::new(Mutex::new(Vec::new())))
}

fn spawn_with(args: SpawnArgs, roles: Roles) -> io::Result<VrrpHandle> {
    if args.instances.is_empty() {
        return Ok(VrrpHandle {
            roles,
            wake: None,
            cmds: None,
            thread: None,
            args,
        });
    }
    // SAFETY: plain eventfd(2); the fd is owned right away.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let (tx, rx) = mpsc::channel();
    let mut driver = driver::Driver::new(&args, Arc::clone(&roles), Arc::clone(&wake), rx)?;
    let cpu = args.control_cpu;
    let thread = std::thread::Builder::new()
        .name("vrrp".to_string())
        .spawn(move || {
            driver::prepare_thread(cpu);
            driver.run();
        })?;
    Ok(VrrpHandle {
        roles,
        wake: Some(wake),
        cmds: Some(tx),
        thread: Some(thread),
        args,
    })
}
