//! The control thread: boot, signals, reload, graceful stop.
//!
//! The control thread owns everything that is not on the request path. It
//! builds snapshots and publishes them; shards never wait for it. Signals
//! are received here with `signal-hook` (the shards block none and handle
//! none): SIGHUP reloads, SIGTERM/SIGINT drain and stop.

pub mod admin;
pub mod fd_budget;
pub mod health;
pub mod listeners;
pub mod publisher;
pub mod vrrp;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::data::shard::{self, ListenerCmd, ShardControl};
use crate::metrics::Registry;
use crate::snapshot::SnapshotCell;
use publisher::Publisher;

/// A running data plane and its control-plane threads.
pub struct Running {
    pub publisher: Arc<Publisher>,
    pub registry: Arc<Registry>,
    pub admin: Option<admin::AdminServer>,
    pub shards: Vec<(Arc<ShardControl>, JoinHandle<()>)>,
    /// Actual bound address of each listener (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    /// The running configuration (as of the last successful reload).
    pub config: Arc<Config>,
    health: Option<JoinHandle<()>>,
    health_stop: Arc<AtomicBool>,
    access_log: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

/// Binds every listener and starts the shards and the health thread.
pub fn start(mut config: Config) -> std::io::Result<Running> {
    let rt = &config.runtime;
    let planned = crate::runtime::plan_cpus(rt.workers, rt.control_cpu, rt.worker_cpus.as_deref());
    fd_budget::apply(&mut config, planned.0.len());
    let config = Arc::new(config);
    let rt = &config.runtime;
    let (shard_cpus, control_cpu) =
        crate::runtime::plan_cpus(rt.workers, rt.control_cpu, rt.worker_cpus.as_deref());
    if let Some(cpu) = control_cpu {
        crate::runtime::pin(cpu);
    }
    let n = shard_cpus.len();
    // Bind everything before starting anything.
    let mut per_shard: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
        (0..n).map(|_| Vec::new()).collect();
    let mut listen_addrs = Vec::new();
    for l in &config.listeners {
        let group = listeners::bind_group(l.listen, l.backlog, n)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen {}: {e}", l.listen)))?;
        listen_addrs.push(group[0].local_addr()?);
        for (si, sock) in group.into_iter().enumerate() {
            per_shard[si].push((l.listen, sock));
        }
    }
    let registry = Registry::new(n);
    let publisher = Arc::new(Publisher::new(Arc::clone(&config), Arc::clone(&registry)));
    let admin = match &config.admin {
        Some(a) => Some(admin::spawn(a, Arc::clone(&registry), None).map_err(|e| {
            std::io::Error::new(e.kind(), format!("admin listen {}: {e}", a.listen))
        })?),
        None => None,
    };
    let access_log = match &config.log.access_log {
        Some(path) => Some(crate::data::access_log::spawn_writer(path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
        })?),
        None => None,
    };
    let mut shards = Vec::new();
    for (id, (listeners, cpu)) in per_shard.into_iter().zip(shard_cpus).enumerate() {
        let control = Arc::new(ShardControl::default());
        let c = Arc::clone(&control);
        let cell: SnapshotCell = publisher.cell().clone();
        let reg = Arc::clone(&registry);
        let al = access_log.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    crate::runtime::pin(cpu);
                }
                if let Err(e) = shard::run(id, cell, listeners, Arc::clone(&c), reg, al) {
                    crate::error!("shard {id} failed to start: {e}");
                    c.exited.store(true, Ordering::Release);
                }
            })?;
        shards.push((control, handle));
    }
    let health_stop = Arc::new(AtomicBool::new(false));
    let health = health::spawn(
        Arc::clone(&publisher),
        shards.iter().map(|(c, _)| Arc::clone(c)).collect(),
        control_cpu,
        Arc::clone(&health_stop),
    )?;
    crate::info!(
        "ringlb started: {} shard(s), listeners {:?}",
        shards.len(),
        listen_addrs
    );
    Ok(Running {
        publisher,
        registry,
        admin,
        shards,
        listen_addrs,
        config,
        health: Some(health),
        health_stop,
        access_log,
    })
}

impl Running {
    /// Re-reads `path`. On success: new listeners are opened on every shard,
    /// removed ones closed, and the new snapshot published; connections in
    /// flight finish on the snapshot they started with. On any error the
    /// running configuration stays and every problem is logged.
    pub fn reload(&mut self, path: &Path) -> bool {
        let mut new = match crate::config::load(path) {
            Ok(c) => c,
            Err(e) => {
                crate::error!("reload failed, keeping the running configuration:\n{e}");
                return false;
            }
        };
        fd_budget::apply(&mut new, self.shards.len());
        let old: HashSet<SocketAddr> = self.config.listeners.iter().map(|l| l.listen).collect();
        let new_set: HashSet<SocketAddr> = new.listeners.iter().map(|l| l.listen).collect();
        // Bind new listeners first: if one fails, nothing changes.
        let mut added = Vec::new();
        for l in new.listeners.iter().filter(|l| !old.contains(&l.listen)) {
            match listeners::bind_group(l.listen, l.backlog, self.shards.len()) {
                Ok(group) => added.push((l.listen, group)),
                Err(e) => {
                    crate::error!(
                        "reload failed, keeping the running configuration: listen {}: {e}",
                        l.listen
                    );
                    return false;
                }
            }
        }
        let new = Arc::new(new);
        // Publish first so requests on new listeners find their routes.
        self.publisher.reload(Arc::clone(&new));
        for (addr, group) in added {
            for ((c, _), sock) in self.shards.iter().zip(group) {
                c.listener_cmds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ListenerCmd::Add(addr, sock));
            }
            crate::info!("reload: listening on {addr}");
        }
        for addr in old.iter().filter(|a| !new_set.contains(a)) {
            for (c, _) in &self.shards {
                c.listener_cmds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ListenerCmd::Remove(*addr));
            }
            crate::info!("reload: closed listener {addr}");
        }
        self.config = new;
        if let Some(tx) = &self.access_log {
            // An empty buffer asks the writer to reopen (log rotation).
            let _ = tx.try_send(Vec::new());
        }
        crate::info!(
            "reload: configuration generation {} published",
            self.publisher.lock().generation
        );
        true
    }

    /// Graceful stop: stop accepting, finish requests in flight (answering
    /// them with `Connection: close`), close idle connections, exit when
    /// empty or after `shutdown_timeout`.
    pub fn stop(mut self) {
        let limit = self.config.runtime.shutdown_timeout + Duration::from_secs(1);
        self.publisher.drain();
        for (c, _) in &self.shards {
            c.stop.store(true, Ordering::Relaxed);
        }
        let all_exited = crate::runtime::wait_until(limit, || {
            self.shards
                .iter()
                .all(|(c, _)| c.exited.load(Ordering::Acquire))
        });
        self.health_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.health.take() {
            let _ = h.join();
        }
        if all_exited {
            for (_, h) in self.shards {
                let _ = h.join();
            }
        }
    }
}

/// The data plane's heartbeats as VRRP's `track_data_plane` reads them.
pub fn liveness(
    shards: Vec<Arc<ShardControl>>,
) -> impl Fn(&mut Vec<vrrp::ShardSample>) + Send + Sync {
    move |out| {
        out.clear();
        out.extend(shards.iter().map(|c| vrrp::ShardSample {
            heartbeat: c.heartbeat.load(Ordering::Relaxed),
            exited: c.exited.load(Ordering::Relaxed),
        }));
    }
}

/// `ringlb run`: start, then serve signals until told to stop.
pub fn run(path: PathBuf, config: Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    #[cfg(feature = "fault-injection")]
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, libc::SIGUSR2])?;
    #[cfg(not(feature = "fault-injection"))]
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let mut running = start(config)?;
    let mut args = vrrp::SpawnArgs::new(&running.config);
    args.registry = Some(Arc::clone(&running.registry));
    let publisher = Arc::clone(&running.publisher);
    args.upstream_down = Some(Arc::new(move |ui| publisher.upstream_all_down(ui)));
    args.data_plane = Some(Arc::new(liveness(
        running.shards.iter().map(|(c, _)| Arc::clone(c)).collect(),
    )));
    let publisher = Arc::clone(&running.publisher);
    args.on_roles = Some(Arc::new(move |roles: &[vrrp::Role]| {
        publisher.set_vrrp(
            roles
                .iter()
                .map(|r| crate::snapshot::VrrpRole {
                    name: r.name.clone(),
                    state: r.state,
                    priority: r.priority,
                })
                .collect(),
        )
    }));
    let vrrp = vrrp::spawn(args)?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                crate::info!("SIGHUP: reloading {}", path.display());
                running.reload(&path);
            }
            #[cfg(feature = "fault-injection")]
            libc::SIGUSR2 => {
                let stalled = !crate::data::shard::FAULT_STALL.load(Ordering::Relaxed);
                crate::warn!(
                    "fault injection: shards {}",
                    if stalled { "stalled" } else { "resumed" }
                );
                crate::data::shard::FAULT_STALL.store(stalled, Ordering::Relaxed);
            }
            _ => {
                crate::info!("signal {sig}: draining and stopping");
                vrrp.shutdown();
                running.stop();
                crate::info!("stopped");
                return Ok(());
            }
        }
    }
    Ok(())
}
