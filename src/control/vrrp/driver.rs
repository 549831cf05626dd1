//! The VRRP loop: sockets in, machines stepped, adverts/VIPs/GARP/notify out.
//!
//! One thread runs every instance. Each iteration:
//!
//! 1. `ppoll` on the interface sockets and the shutdown eventfd, with a
//!    timeout equal to the earliest deadline of any machine timer, GARP round
//!    or tracking tick (nanosecond `timespec`, no rounding to ticks);
//! 2. drain every readable socket: validate the IP envelope (protocol
//!    112), find the instance by VRID, parse and check the advert, check the
//!    TTL / hop limit (255, or any from a unicast peer: `wire::hops_ok`),
//!    hand it to the machine; every drop is counted by reason
//!    (`ControlStats::vrrp_drop`), adverts for VRIDs we don't run are someone
//!    else's and are counted as `unknown_vrid` without a log line;
//! 3. fire due machine timers, due GARP rounds, and on the tracking tick
//!    re-evaluate tracking into priority/FAULT (sync groups applied);
//! 4. flush every machine: send queued adverts (to 224.0.0.18 or to each
//!    unicast peer — ff02::12 for IPv6; the v3 checksum covers the destination so each is
//!    emitted separately), act on state changes (VIPs, GARP, notify,
//!    metrics), publish roles.
//!
//! The eventfd also carries the handle's commands ([`Cmd`]): a reload is
//! applied between two iterations, all at once (see `plan` and
//! [`Driver`]'s `reload`), and answered on a channel; shutdown ends the loop
//! once every master has sent its priority-0 advert and handed its VIPs
//! over (kept until the new master's first advert: `handover.rs`).
//!
//! Order matters on becoming master: the VIPs are added first and only then
//! does the first advert go out and the GARP burst start, so a router never
//! advertises mastership of addresses it does not hold. If any VIP cannot be
//! added (no CAP_NET_ADMIN, the interface refusing it), the instance goes to
//! FAULT instead of MASTER (its queued advert is not sent; a priority-0 one
//! is, so a backup takes over at once) and tries again after
//! [`VIP_RETRY`].

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, PoisonError};
use std::time::{Duration, Instant};

use super::garp::{ArpSocket, Schedule};
use super::handover;
use super::liveness::{SampleFn, Sched, SchedStats, ShardSample};
use super::notify::Notifier;
use super::plan::{self, Action, Changes};
use super::socket::{Meta, VrrpSocket};
use super::track::{DataPlaneView, Tracker, UpstreamDownFn};
use super::vip::Netlink;
use super::{iface, Role, Roles, SpawnArgs};
use crate::config::VrrpInstanceConfig;
use crate::metrics::Registry;
use crate::proto::vrrp::{self, wire, Event, Machine, Packet, Repr, State};

/// How often tracking (links, scripts, upstreams, liveness) is evaluated.
/// The data plane's liveness checks run on it, and count on it.
pub const TRACK_TICK: Duration = super::liveness::CHECK_INTERVAL;
/// How long an instance whose VIPs could not be added stays in FAULT
/// before it tries again.
pub const VIP_RETRY: Duration = Duration::from_secs(1);
/// Real-time priority of the `vrrp` thread when SCHED_FIFO is permitted.
pub const RT_PRIORITY: i32 = 10;
/// A misconfigured peer is logged at most this often per instance (drops are counted always).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Receive buffer: a full IPv4 header plus the largest VRRP message.
const RECV_BUF: usize = 60 + 8 + 255 * 16 + 8;

/// Pins, raises to SCHED_FIFO (children reset to normal), tightens timer slack.
pub fn prepare_thread(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        crate::runtime::pin(cpu);
    }
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: pid 0 = the calling thread; `param` is a valid sched_param.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc != 0 {
        crate::warn!(
            "vrrp: SCHED_FIFO not permitted ({}); running with normal priority",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long; 1 µs.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

/// One interface's I/O.
struct Link {
    /// Whether `sock` joined the VRRP multicast group.
    joined: bool,
    sock: VrrpSocket,
    arp: Option<ArpSocket>,
    mac: [u8; 6],
}

struct Inst {
    cfg: VrrpInstanceConfig,
    link: usize,
    /// Created once the source address is known.
    machine: Option<Machine>,
    src: Option<IpAddr>,
    dests: Vec<IpAddr>,
    peers: Vec<IpAddr>,
    tracker: Tracker,
    /// Fault from this instance's own tracking (or a VIP it could not add).
    own_fault: bool,
    /// Until when a failed VIP add holds the instance in FAULT.
    vip_retry_at: Option<Instant>,
    fault_reason: Option<String>,
    priority: u8,
    group: Option<usize>,
    garp: Schedule,
    /// Last accepted advert from the master (for the advert-gap histogram).
    last_rx: Option<Instant>,
    published: Option<(State, u8)>,
    /// Last time a rejected advert was logged (at most one line per [`WARN_EVERY`]).
    last_warn: Option<Instant>,
    /// A stopping master's addresses stay until its successor is heard or
    /// this passes (`handover.rs`).
    handover: Option<Instant>,
    /// Handed over; its addresses go after the linger.
    handed_over: bool,
}

/// What the `vrrp` thread is asked to do (with a write to its eventfd).
pub enum Cmd {
    /// Apply a reload's instances (see [`super::plan`]); the reply carries
    /// one log line per change, or why nothing was applied.
    Reload {
        instances: Vec<VrrpInstanceConfig>,
        reply: mpsc::Sender<Result<Vec<String>, String>>,
    },
    /// Resign everything and exit; a handing-over master keeps its
    /// addresses while this counts client exchanges in flight
    /// (`handover.rs`, lingering).
    Shutdown(Option<InFlightFn>),
}

/// How many client exchanges the node's data plane has in flight.
pub type InFlightFn = Box<dyn Fn() -> usize + Send>;

/// A socket change a reload needs, prepared before anything is changed.
enum LinkChange {
    Add(Link),
    /// The link's socket, re-opened joined to the multicast group.
    Rejoin(usize, VrrpSocket),
}

pub struct Driver {
    cmds: mpsc::Receiver<Cmd>,
    links: Vec<Link>,
    insts: Vec<Inst>,
    groups: usize,
    netlink: Netlink,
    links_probe: iface::LinkProbe,
    /// Last known link state per tracked interface name.
    link_state: std::cell::RefCell<std::collections::HashMap<String, bool>>,
    notifier: Notifier,
    registry: Option<Arc<Registry>>,
    on_roles: Option<Arc<super::RolesFn>>,
    upstream_down: Option<Arc<UpstreamDownFn>>,
    data_plane: Option<Arc<SampleFn>>,
    sched: SchedStats,
    samples: Vec<ShardSample>,
    scheds: Vec<Option<Sched>>,
    roles: Roles,
    wake: Arc<OwnedFd>,
    next_tick: Instant,
    buf: Vec<u8>,
    /// Given with the shutdown command (see [`Cmd::Shutdown`]).
    in_flight: Option<InFlightFn>,
}

/// An instance is IPv6 when its VIPs are (the config allows no mix).
fn is_v6(cfg: &VrrpInstanceConfig) -> bool {
    cfg.virtual_ipaddress
        .first()
        .is_some_and(|(a, _)| a.is_ipv6())
}

/// The socket of `l` is the one for `cfg` (same interface and family).
fn serves(l: &Link, cfg: &VrrpInstanceConfig) -> bool {
    l.sock.ifname == cfg.interface && l.sock.v6 == is_v6(cfg)
}

impl Driver {
    pub fn new(
        args: &SpawnArgs,
        roles: Roles,
        wake: Arc<OwnedFd>,
        cmds: mpsc::Receiver<Cmd>,
    ) -> std::io::Result<Driver> {
        let now = Instant::now();
        let netlink = Netlink::open()?;
        let cfgs: Vec<&VrrpInstanceConfig> = args.instances.iter().collect();
        let mut links: Vec<Link> = Vec::new();
        let changes = prepare_links(&links, &cfgs)?;
        apply_links(&mut links, changes);
        let mut insts: Vec<Inst> = cfgs.iter().map(|c| new_inst(c, &links, now)).collect();
        let groups = assign_groups(&mut insts);
        let mut d = Driver {
            cmds,
            links,
            insts,
            groups,
            netlink,
            links_probe: iface::LinkProbe::open()?,
            link_state: Default::default(),
            notifier: Notifier::default(),
            registry: args.registry.clone(),
            on_roles: args.on_roles.clone(),
            upstream_down: args.upstream_down.clone(),
            data_plane: args.data_plane.clone(),
            sched: SchedStats::default(),
            samples: Vec::new(),
            scheds: Vec::new(),
            roles,
            wake,
            next_tick: now,
            buf: vec![0u8; RECV_BUF],
            in_flight: None,
        };
        d.reset_roles();
        Ok(d)
    }

    /// The shared role table, one row per instance in `insts` order
    /// (re-published by the next [`Driver::publish`]).
    fn reset_roles(&mut self) {
        *self.roles.lock().unwrap_or_else(PoisonError::into_inner) = self
            .insts
            .iter()
            .map(|i| Role {
                name: i.cfg.name.clone(),
                state: State::Initialize,
                priority: i.cfg.priority,
            })
            .collect();
        for i in &mut self.insts {
            i.published = None;
        }
    }

    /// A reload's VRRP part, all or nothing: the plan is refused as a whole
    /// if any instance's identity changed, and every socket a new instance
    /// needs is opened before anything running is touched. Then removed
    /// instances resign, kept ones take their new settings without a
    /// state change, added ones start; tracking runs at once so a new
    /// priority is in the next advert.
    fn reload(
        &mut self,
        new: Vec<VrrpInstanceConfig>,
        now: Instant,
    ) -> Result<Vec<String>, String> {
        let old: Vec<VrrpInstanceConfig> = self.insts.iter().map(|i| i.cfg.clone()).collect();
        let actions = plan::plan(&old, &new).map_err(|refused| {
            let msgs: Vec<String> = refused.iter().map(|(n, r)| r.message(n)).collect();
            msgs.join("\n")
        })?;
        let wanted: Vec<&VrrpInstanceConfig> = new.iter().collect();
        let changes = prepare_links(&self.links, &wanted).map_err(|e| e.to_string())?;
        // Nothing has changed so far; from here on everything is applied.
        apply_links(&mut self.links, changes);
        let mut log = Vec::new();
        for (name, action) in &actions {
            if *action == Action::Resign {
                if let Some(ii) = self.insts.iter().position(|i| &i.cfg.name == name) {
                    self.resign(ii, now);
                    log.push(format!(
                        "vrrp {name}: removed (resigned, addresses dropped)"
                    ));
                }
            }
        }
        for (name, action) in actions {
            let Some(cfg) = new.iter().find(|c| c.name == name) else {
                continue;
            };
            match action {
                Action::Update(c) => {
                    if let Some(ii) = self.insts.iter().position(|i| i.cfg.name == name) {
                        self.update(ii, cfg, &c, now);
                        log.push(format!("vrrp {name}: applied {}", c.describe()));
                    }
                }
                Action::Start => {
                    self.insts.push(new_inst(cfg, &self.links, now));
                    log.push(format!("vrrp {name}: added"));
                }
                Action::Keep | Action::Resign | Action::Refuse(_) => {}
            }
        }
        self.groups = assign_groups(&mut self.insts);
        self.reset_roles();
        self.track(now);
        self.flush_all(now);
        Ok(log)
    }

    /// A removed instance: priority-0 advert if master, VIPs removed,
    /// notify STOP, then gone.
    fn resign(&mut self, ii: usize, now: Instant) {
        if let Some(m) = &mut self.insts[ii].machine {
            m.handle_shutdown(now);
        }
        self.flush(ii, now);
        let inst = self.insts.remove(ii);
        if let Some(r) = &self.registry {
            r.control().remove_vrrp(&inst.cfg.name);
        }
    }

    /// Applies `c` to running instance `ii` (same identity), keeping its state.
    fn update(&mut self, ii: usize, cfg: &VrrpInstanceConfig, c: &Changes, now: Instant) {
        let inst = &mut self.insts[ii];
        let name = cfg.name.clone();
        let ifindex = self.links[inst.link].sock.ifindex;
        let master = inst.machine.as_ref().is_some_and(Machine::is_master);
        let mut failed = None;
        if master {
            for (a, p) in &c.vips_removed {
                if let Err(e) = self.netlink.remove(ifindex, *a, *p) {
                    crate::error!("vrrp {name}: remove {a}/{p}: {e}");
                }
            }
            for (a, p) in &c.vips_added {
                if let Err(e) = self.netlink.add(ifindex, *a, *p) {
                    failed.get_or_insert(format!("add {a}/{p}: {e}"));
                }
            }
        }
        inst.cfg = cfg.clone();
        if c.peers {
            inst.dests = dests(cfg);
            inst.peers = cfg.unicast_peers.clone();
            if let Some(src) = source_address(cfg) {
                inst.src = Some(src);
            }
        }
        if c.tracking {
            inst.tracker = Tracker::new(cfg, now);
        }
        if c.garp {
            inst.garp = garp_schedule(cfg);
        }
        if master && (c.garp || !c.vips_added.is_empty()) {
            inst.garp.start(now);
        }
        let reconfigure =
            c.protocol || c.peers || !c.vips_added.is_empty() || !c.vips_removed.is_empty();
        if let (Some(m), Some(src), true) = (&mut inst.machine, inst.src, reconfigure) {
            m.reconfigure(now, vrrp::machine::Config::from_instance(cfg, src));
        }
        if let (Some(why), Some(m)) = (failed, &mut inst.machine) {
            crate::error!(
                "vrrp {name}: cannot hold the virtual addresses ({why}); FAULT, retrying in {VIP_RETRY:?}"
            );
            inst.vip_retry_at = Some(now + VIP_RETRY);
            inst.own_fault = true;
            m.set_fault(now, true);
        }
    }

    fn drop_packet(&self, reason: &str) {
        if let Some(r) = &self.registry {
            r.control().vrrp_drop(reason);
        }
    }

    /// Runs until the shutdown eventfd is written.
    pub fn run(&mut self) {
        crate::info!(
            "vrrp: running {} instance(s) on {} interface(s)",
            self.insts.len(),
            self.links.len()
        );
        let now = Instant::now();
        self.track(now);
        self.flush_all(now);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.links.len() + 1);
        loop {
            if !self.wait(&mut fds, self.next_deadline()) {
                continue;
            }
            let now = Instant::now();
            if fds[0].revents != 0 && self.commands(now) {
                self.shutdown(now);
                return;
            }
            for li in 0..self.links.len() {
                if fds[li + 1].revents != 0 {
                    self.receive(li, now);
                }
            }
            for inst in &mut self.insts {
                if let Some(m) = &mut inst.machine {
                    if m.poll_timeout().is_some_and(|t| t <= now) {
                        m.handle_timeout(now);
                    }
                }
            }
            if now >= self.next_tick {
                self.track(now);
            }
            self.garp(now);
            self.flush_all(now);
        }
    }

    /// Waits until the wake eventfd or an interface socket is readable, or
    /// `deadline`; `fds` says which (the eventfd first, then each link's
    /// socket). `false` when the wait failed (already logged).
    fn wait(&self, fds: &mut Vec<libc::pollfd>, deadline: Instant) -> bool {
        fds.clear();
        fds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for l in &self.links {
            fds.push(libc::pollfd {
                fd: l.sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
        };
        // SAFETY: `fds` is a valid array of pollfd of the given length; `ts` lives across the call.
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                crate::error!("vrrp: ppoll: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
            return false;
        }
        true
    }

    /// Resets the wake eventfd's counter (it stays readable until read).
    fn clear_wake(&self) {
        let mut counter = [0u8; 8];
        // SAFETY: an eventfd read of 8 bytes into a valid buffer (non-blocking).
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
    }

    /// Runs what the handle asked for; true = shut down.
    fn commands(&mut self, now: Instant) -> bool {
        self.clear_wake();
        loop {
            match self.cmds.try_recv() {
                Ok(Cmd::Reload { instances, reply }) => {
                    let r = self.reload(instances, now);
                    let _ = reply.send(r);
                }
                Ok(Cmd::Shutdown(in_flight)) => {
                    self.in_flight = in_flight;
                    return true;
                }
                Err(mpsc::TryRecvError::Disconnected) => return true,
                Err(mpsc::TryRecvError::Empty) => return false,
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.next_tick;
        for i in &self.insts {
            if let Some(t) = i.machine.as_ref().and_then(Machine::poll_timeout) {
                d = d.min(t);
            }
            if let Some(t) = i.garp.next() {
                d = d.min(t);
            }
        }
        d
    }

    /// Drains one interface socket.
    fn receive(&mut self, li: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        // Bounded: a flood cannot starve the timers of this loop.
        for _ in 0..64 {
            let (n, meta) = match self.links[li].sock.recv(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    crate::warn!("vrrp: recv on {}: {e}", self.links[li].sock.ifname);
                    break;
                }
            };
            if n >= buf.len() {
                // Larger than any VRRP message can be (the read was cut).
                self.drop_packet("oversized");
                continue;
            }
            self.packet(li, meta, &buf[..n], now);
        }
        self.buf = buf;
    }

    fn packet(&mut self, li: usize, meta: Meta, bytes: &[u8], now: Instant) {
        let env = match meta.envelope(bytes) {
            Ok(e) => e,
            Err(e) => return self.drop_packet(e.as_str()),
        };
        let pkt = match Packet::new_checked(env.payload) {
            Ok(p) => p,
            Err(e) => return self.drop_packet(e.as_str()),
        };
        let vrid = pkt.vrid();
        let Some(ii) = self
            .insts
            .iter()
            .position(|i| i.link == li && i.cfg.virtual_router_id == vrid)
        else {
            // Another virtual router's advert on this link: not ours to judge.
            return self.drop_packet("unknown_vrid");
        };
        let (src, dst) = (env.src, env.dst);
        let repr = match Repr::parse(&pkt, src, dst) {
            Ok(r) => r,
            Err(e) => return self.drop_packet(e.as_str()),
        };
        let inst = &mut self.insts[ii];
        if !inst.peers.is_empty() && !inst.peers.contains(&src) {
            return self.drop_packet("unknown_peer");
        }
        // A unicast instance's source was just checked against its peers.
        if !wire::hops_ok(env.ttl, dst, !inst.peers.is_empty()) {
            return self.drop_packet(wire::Error::BadTtl.as_str());
        }
        if inst.handover.is_some() {
            // The stopped machine still checks the advert (version, auth,
            // interval, addresses, not our own) before it says Inactive: a
            // misconfigured or forged advert must not end the handover.
            if let Some(Err(reject)) = inst
                .machine
                .as_mut()
                .map(|m| m.handle_advert(now, src, &repr))
            {
                if !matches!(reject, vrrp::Reject::Inactive) {
                    return self.drop_packet(reject.as_str());
                }
            }
            if handover::successor_heard(inst.src, src, repr.priority) {
                crate::info!("vrrp {}: {src} is master now", inst.cfg.name);
                self.end_handover(ii);
            }
            return;
        }
        let Some(m) = inst.machine.as_mut() else {
            return self.drop_packet("inactive");
        };
        match m.handle_advert(now, src, &repr) {
            Ok(()) => {
                if m.state() == State::Backup && m.current_master() == Some(src) {
                    let gap = inst.last_rx.map(|t| now.saturating_duration_since(t));
                    inst.last_rx = Some(now);
                    if let Some(r) = &self.registry {
                        r.control().vrrp_advert_received(&inst.cfg.name, gap);
                    }
                } else if repr.priority == 0 {
                    inst.last_rx = None;
                }
            }
            Err(reject) => {
                let misconfigured = matches!(
                    reject,
                    vrrp::Reject::AuthMismatch
                        | vrrp::Reject::IntervalMismatch
                        | vrrp::Reject::AddressMismatch
                        | vrrp::Reject::WrongVersion
                );
                if misconfigured && inst.last_warn.is_none_or(|t| now >= t + WARN_EVERY) {
                    inst.last_warn = Some(now);
                    crate::warn!(
                        "vrrp {}: advert from {src} dropped: {} (further drops counted, logged every {WARN_EVERY:?})",
                        inst.cfg.name,
                        reject.as_str()
                    );
                }
                self.drop_packet(reject.as_str());
            }
        }
    }

    /// Tracking tick: source addresses, tracked objects, sync groups.
    fn track(&mut self, now: Instant) {
        self.next_tick = now + TRACK_TICK;
        let (probe, known) = (&self.links_probe, &self.link_state);
        let link_up = |name: &str| {
            let mut known = known.borrow_mut();
            match probe.link_up(name) {
                Some(up) => {
                    if known.get(name) != Some(&up) {
                        known.insert(name.to_string(), up);
                    }
                    up
                }
                // Unknown (the kernel could not answer): keep the last state.
                None => known.get(name).copied().unwrap_or(true),
            }
        };
        let view = match &self.data_plane {
            Some(f) => {
                f(&mut self.samples);
                self.sched.read(self.samples.len(), now, &mut self.scheds);
                Some(DataPlaneView {
                    samples: &self.samples,
                    scheds: &self.scheds,
                })
            }
            None => None,
        };
        for inst in &mut self.insts {
            let v = inst.tracker.evaluate(
                now,
                inst.cfg.priority,
                &link_up,
                self.upstream_down.as_deref(),
                view,
            );
            let mut v = v;
            let vip_hold = inst.vip_retry_at.is_some_and(|t| now < t);
            if !vip_hold {
                inst.vip_retry_at = None;
            } else if v.priority.is_some() {
                v.fault_reason = Some("a virtual address could not be added".into());
            }
            let fault = v.priority.is_none() || vip_hold;
            if fault && !inst.own_fault {
                crate::warn!(
                    "vrrp {}: fault: {}",
                    inst.cfg.name,
                    v.fault_reason.as_deref().unwrap_or("tracking")
                );
            } else if !fault && inst.own_fault {
                crate::info!("vrrp {}: fault cleared", inst.cfg.name);
            }
            inst.own_fault = fault;
            inst.fault_reason = v.fault_reason;
            if let Some(p) = v.priority {
                inst.priority = p;
            }
            if inst.machine.is_none() {
                start_machine(inst, now);
            }
        }
        // A sync group moves as one: a fault of any member faults all, and
        // the largest tracking penalty of any member applies to every member
        // (so a weight that sends one instance's VIP to the peer sends the
        // whole group's along, instead of splitting it).
        let mut group_fault = vec![false; self.groups];
        let mut group_penalty = vec![0i32; self.groups];
        for inst in &self.insts {
            if let Some(g) = inst.group {
                group_fault[g] |= inst.own_fault;
                let delta = i32::from(inst.priority) - i32::from(inst.cfg.priority);
                group_penalty[g] = group_penalty[g].min(delta);
            }
        }
        for inst in &mut self.insts {
            let fault = inst.own_fault || inst.group.is_some_and(|g| group_fault[g]);
            let priority = match inst.group {
                // The address owner (255) is never lowered, as for tracking.
                Some(g) if inst.cfg.priority < 255 => {
                    let own = i32::from(inst.priority) - i32::from(inst.cfg.priority);
                    let p = i32::from(inst.cfg.priority) + own.min(group_penalty[g]);
                    p.clamp(1, 254) as u8
                }
                _ => inst.priority,
            };
            if let Some(m) = &mut inst.machine {
                m.set_priority(now, priority);
                if fault != m.is_faulted() {
                    m.set_fault(now, fault);
                }
            }
        }
        // ... and a member that is Backup because a peer outranks it drags
        // the others to Backup (keepalived's sync group rule), so the
        // group's addresses stay on one node.
        let mut outranked = vec![0usize; self.groups];
        for inst in &self.insts {
            if let (Some(g), Some(m)) = (inst.group, &inst.machine) {
                outranked[g] += usize::from(m.outranked());
            }
        }
        for inst in &mut self.insts {
            if let (Some(g), Some(m)) = (inst.group, &mut inst.machine) {
                let held = outranked[g] > usize::from(m.outranked());
                if held != m.is_held() {
                    crate::info!(
                        "vrrp {}: {} by sync group",
                        inst.cfg.name,
                        if held { "held in BACKUP" } else { "released" }
                    );
                    m.set_group_backup(now, held);
                }
            }
        }
    }

    fn garp(&mut self, now: Instant) {
        for inst in &mut self.insts {
            if inst.garp.take_due(now) {
                let link = &self.links[inst.link];
                if let Some(arp) = &link.arp {
                    for ip in vip_addrs(&inst.cfg) {
                        if let Err(e) = arp.send(link.mac, ip) {
                            crate::warn!("vrrp {}: gratuitous ARP for {ip}: {e}", inst.cfg.name);
                        }
                    }
                }
            }
        }
    }

    fn flush_all(&mut self, now: Instant) {
        for ii in 0..self.insts.len() {
            self.flush(ii, now);
        }
        self.notifier.reap();
        self.publish();
    }

    fn flush(&mut self, ii: usize, now: Instant) {
        let inst = &mut self.insts[ii];
        let (Some(m), Some(src)) = (inst.machine.as_mut(), inst.src) else {
            return;
        };
        let link = &self.links[inst.link];
        // State changes first: VIPs are in place before an advert claims them.
        while let Some(ev) = m.poll_event() {
            let prio = m.priority();
            let name = &inst.cfg.name;
            crate::info!(
                "vrrp {name}: {} -> {} (priority {prio})",
                ev.from().as_str(),
                ev.to().as_str()
            );
            inst.last_rx = None;
            match ev {
                Event::BecameMaster { .. } => {
                    let mut failed = None;
                    for (a, p) in &inst.cfg.virtual_ipaddress {
                        if let Err(e) = self.netlink.add(link.sock.ifindex, *a, *p) {
                            failed.get_or_insert(format!("add {a}/{p}: {e}"));
                        }
                    }
                    match failed {
                        None => inst.garp.start(now),
                        Some(why) => {
                            crate::error!(
                                "vrrp {name}: cannot hold the virtual addresses ({why}); FAULT, retrying in {VIP_RETRY:?}"
                            );
                            inst.vip_retry_at = Some(now + VIP_RETRY);
                            inst.own_fault = true;
                            // Enters Fault: the next event removes what was added.
                            m.set_fault(now, true);
                        }
                    }
                }
                Event::BecameBackup { .. } | Event::BecameFault { .. } | Event::Stopped { .. } => {
                    inst.garp.stop();
                    // Also on entering Backup from Initialize: a VIP left
                    // behind by a previous run must not linger on a backup.
                    // A stopping master keeps them until its successor is
                    // heard (`handover.rs`, `end_handover`).
                    if inst.handover.is_none() {
                        remove_vips(&self.netlink, link.sock.ifindex, &inst.cfg);
                    }
                }
            }
            if let Some(r) = &self.registry {
                r.control().vrrp_transition(name, ev.to());
            }
            if let Some(script) = &inst.cfg.notify {
                let state = match ev.to() {
                    State::Initialize => "STOP",
                    s => s.as_str(),
                };
                self.notifier.notify(script, name, state, prio);
            }
        }
        while let Some(repr) = m.poll_transmit() {
            // Only a master claims the address (a resigning router's
            // priority-0 advert still goes out).
            if repr.priority != 0 && m.state() != State::Master {
                continue;
            }
            for dst in &inst.dests {
                let bytes = repr.to_bytes(src, *dst);
                match link.sock.send(src, *dst, &bytes) {
                    Ok(()) => {
                        if let Some(r) = &self.registry {
                            r.control().vrrp_advert_sent(&inst.cfg.name);
                        }
                    }
                    Err(e) => crate::warn!("vrrp {}: send to {dst}: {e}", inst.cfg.name),
                }
            }
        }
    }

    fn publish(&mut self) {
        let mut changed = false;
        for inst in &mut self.insts {
            let now = match &inst.machine {
                Some(m) => (m.state(), m.priority()),
                None => (State::Initialize, inst.priority),
            };
            if inst.published != Some(now) {
                inst.published = Some(now);
                changed = true;
                if let Some(r) = &self.registry {
                    r.control().set_vrrp(&inst.cfg.name, now.0, now.1);
                }
            }
        }
        if changed {
            let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
            for (r, inst) in roles.iter_mut().zip(&self.insts) {
                if let Some((s, p)) = inst.published {
                    r.state = s;
                    r.priority = p;
                }
            }
            if let Some(f) = &self.on_roles {
                f(&roles);
            }
        }
    }

    /// Shutdown: priority-0 adverts from masters, STOP notified, VIPs
    /// removed; a master's only once its successor is heard, or after
    /// [`handover::limit`] (`handover.rs`).
    fn shutdown(&mut self, now: Instant) {
        crate::info!("vrrp: shutting down");
        for inst in &mut self.insts {
            if let Some(m) = &mut inst.machine {
                if m.state() == State::Master {
                    inst.handover = Some(now + handover::limit(inst.cfg.advert_interval));
                }
                m.handle_shutdown(now);
            }
        }
        self.flush_all(now);
        self.await_successors();
    }

    /// The rest of a graceful stop: reads adverts until every stopping
    /// master has heard its successor (`packet` ends its handover) or
    /// passed its bound, then lingers ([`Driver::linger`]).
    fn await_successors(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.links.len() + 1);
        loop {
            let now = Instant::now();
            for ii in 0..self.insts.len() {
                if self.insts[ii].handover.is_some_and(|t| t <= now) {
                    crate::info!("vrrp {}: no new master heard", self.insts[ii].cfg.name);
                    self.end_handover(ii);
                }
            }
            let Some(deadline) = self.insts.iter().filter_map(|i| i.handover).min() else {
                break;
            };
            if !self.wait(&mut fds, deadline) {
                continue;
            }
            let now = Instant::now();
            if fds[0].revents != 0 {
                self.clear_wake();
            }
            for li in 0..self.links.len() {
                if fds[li + 1].revents != 0 {
                    self.receive(li, now);
                }
            }
        }
        self.linger();
    }

    /// A stopping master's handover is over; its addresses go after the
    /// linger ([`Driver::linger`]).
    fn end_handover(&mut self, ii: usize) {
        let inst = &mut self.insts[ii];
        inst.handover = None;
        inst.handed_over = true;
    }

    /// After every handover: keeps the handed-over addresses while the data
    /// plane still answers requests received before the move
    /// ([`handover::linger_done`]), then removes them.
    fn linger(&mut self) {
        if !self.insts.iter().any(|i| i.handed_over) {
            return;
        }
        let start = Instant::now();
        let in_flight = || self.in_flight.as_ref().map_or(0, |f| f());
        while !handover::linger_done(start.elapsed(), in_flight()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        crate::info!(
            "vrrp: dropping the virtual addresses {} ms after the handover ({} exchanges in flight)",
            start.elapsed().as_millis(),
            in_flight()
        );
        for inst in self.insts.iter_mut().filter(|i| i.handed_over) {
            inst.handed_over = false;
            remove_vips(&self.netlink, self.links[inst.link].sock.ifindex, &inst.cfg);
        }
    }
}

/// The gratuitous-ARP schedule an instance's settings ask for.
fn garp_schedule(cfg: &VrrpInstanceConfig) -> Schedule {
    Schedule::new(
        cfg.garp_repeat,
        cfg.garp_interval,
        cfg.garp_refresh,
        cfg.garp_master_delay,
    )
}

/// Removes an instance's virtual addresses (each failure logged).
fn remove_vips(netlink: &Netlink, ifindex: u32, cfg: &VrrpInstanceConfig) {
    for (a, p) in &cfg.virtual_ipaddress {
        if let Err(e) = netlink.remove(ifindex, *a, *p) {
            crate::error!("vrrp {}: remove {a}/{p}: {e}", cfg.name);
        }
    }
}

/// RFC 5798 §5.2.9 wants an IPv6 router's link-local VIP listed first;
/// keepalived warns and runs anyway, advertising the VIPs as listed, and so
/// does ringlb.
fn warn_link_local_first(cfg: &VrrpInstanceConfig) {
    if is_v6(cfg) && !matches!(vip_addrs(cfg)[0], IpAddr::V6(a) if a.is_unicast_link_local()) {
        crate::warn!(
            "vrrp {}: the first IPv6 virtual address should be link-local (RFC 5798 §5.2.9); advertising them as configured, like keepalived",
            cfg.name
        );
    }
}

/// The sockets `cfgs` need that `links` lack: a new interface, or a link
/// opened unicast-only that a multicast instance now shares. Opens them;
/// changes nothing (so a failure leaves the running links as they are).
fn prepare_links(links: &[Link], cfgs: &[&VrrpInstanceConfig]) -> std::io::Result<Vec<LinkChange>> {
    let mut out: Vec<LinkChange> = Vec::new();
    for cfg in cfgs {
        let multicast = cfg.unicast_peers.is_empty();
        let v6 = is_v6(cfg);
        let existing = links.iter().position(|l| serves(l, cfg));
        let pending = out.iter().position(|c| match c {
            LinkChange::Add(l) => serves(l, cfg),
            LinkChange::Rejoin(i, _) => serves(&links[*i], cfg),
        });
        let joined = match (existing, pending) {
            (_, Some(p)) => match &out[p] {
                LinkChange::Add(l) => l.joined,
                LinkChange::Rejoin(..) => true,
            },
            (Some(i), None) => links[i].joined,
            (None, None) => {
                let ifindex = iface::index(&cfg.interface).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("interface {:?}: {e}", cfg.interface))
                })?;
                let sock = VrrpSocket::open(&cfg.interface, ifindex, multicast, v6)?;
                let arp = match ArpSocket::open(ifindex) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        crate::warn!("vrrp: no gratuitous ARP on {}: {e}", cfg.interface);
                        None
                    }
                };
                let mac = iface::mac(&cfg.interface).unwrap_or([0; 6]);
                out.push(LinkChange::Add(Link {
                    joined: multicast,
                    sock,
                    arp,
                    mac,
                }));
                continue;
            }
        };
        if multicast && !joined {
            // Another instance opened it unicast-only: join now.
            match (existing, pending) {
                (_, Some(p)) => {
                    if let LinkChange::Add(l) = &mut out[p] {
                        l.sock = VrrpSocket::open(&cfg.interface, l.sock.ifindex, true, v6)?;
                        l.joined = true;
                    }
                }
                (Some(i), None) => {
                    let s = VrrpSocket::open(&cfg.interface, links[i].sock.ifindex, true, v6)?;
                    out.push(LinkChange::Rejoin(i, s));
                }
                (None, None) => {}
            }
        }
    }
    Ok(out)
}

fn apply_links(links: &mut Vec<Link>, changes: Vec<LinkChange>) {
    for c in changes {
        match c {
            LinkChange::Add(l) => links.push(l),
            LinkChange::Rejoin(i, s) => {
                links[i].sock = s;
                links[i].joined = true;
            }
        }
    }
}

/// Advert destinations: the multicast group of the family, or each unicast peer.
fn dests(cfg: &VrrpInstanceConfig) -> Vec<IpAddr> {
    match (cfg.unicast_peers.is_empty(), is_v6(cfg)) {
        (true, false) => vec![IpAddr::V4(wire::MULTICAST_V4)],
        (true, true) => vec![IpAddr::V6(wire::MULTICAST_V6)],
        (false, _) => cfg.unicast_peers.clone(),
    }
}

/// A not-yet-started instance on its link (which `links` has).
fn new_inst(cfg: &VrrpInstanceConfig, links: &[Link], now: Instant) -> Inst {
    warn_link_local_first(cfg);
    let link = links
        .iter()
        .position(|l| serves(l, cfg))
        .expect("prepare_links opened every interface");
    Inst {
        tracker: Tracker::new(cfg, now),
        link,
        machine: None,
        src: None,
        dests: dests(cfg),
        peers: cfg.unicast_peers.clone(),
        own_fault: false,
        vip_retry_at: None,
        fault_reason: None,
        priority: cfg.priority,
        group: None,
        garp: garp_schedule(cfg),
        last_rx: None,
        published: None,
        last_warn: None,
        handover: None,
        handed_over: false,
        cfg: cfg.clone(),
    }
}

/// Numbers the sync groups (by name) and returns how many there are.
fn assign_groups(insts: &mut [Inst]) -> usize {
    let mut names: Vec<String> = Vec::new();
    for inst in insts.iter_mut() {
        inst.group = inst.cfg.sync_group.as_ref().map(|g| {
            names.iter().position(|n| n == g).unwrap_or_else(|| {
                names.push(g.clone());
                names.len() - 1
            })
        });
    }
    names.len()
}

/// The advert source: `unicast_src`, else the interface's primary IPv4 or
/// (IPv6) its usable link-local address, never a VIP. `None` while the
/// interface has none.
fn source_address(cfg: &VrrpInstanceConfig) -> Option<IpAddr> {
    match cfg.unicast_src {
        Some(a) => Some(a),
        None => iface::source(&cfg.interface, is_v6(cfg), &vip_addrs(cfg)).unwrap_or_else(|e| {
            crate::warn!("vrrp {}: reading addresses: {e}", cfg.name);
            None
        }),
    }
}

fn vip_addrs(cfg: &VrrpInstanceConfig) -> Vec<IpAddr> {
    cfg.virtual_ipaddress.iter().map(|(a, _)| *a).collect()
}

/// Creates and starts the machine once the source address is known.
fn start_machine(inst: &mut Inst, now: Instant) {
    let Some(src) = source_address(&inst.cfg) else {
        if inst.published.is_none() {
            crate::warn!(
                "vrrp {}: interface {} has no usable {} address yet; waiting",
                inst.cfg.name,
                inst.cfg.interface,
                if is_v6(&inst.cfg) {
                    "IPv6 link-local"
                } else {
                    "IPv4"
                }
            );
            inst.published = Some((State::Initialize, inst.priority));
        }
        return;
    };
    let mut m = Machine::new(vrrp::machine::Config::from_instance(&inst.cfg, src));
    m.set_priority(now, inst.priority);
    m.set_fault(now, inst.own_fault);
    m.handle_startup(now);
    crate::info!(
        "vrrp {}: started on {} from {src}, vrid {}, priority {}, advert {:?}",
        inst.cfg.name,
        inst.cfg.interface,
        inst.cfg.virtual_router_id,
        inst.priority,
        m.advert_interval()
    );
    inst.src = Some(src);
    inst.machine = Some(m);
}
