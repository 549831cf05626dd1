//! The control thread: boot, signals, reload, graceful stop.
//!
//! The control thread owns everything that is not on the request path. It
//! builds snapshots and publishes them; shards never wait for it. Signals
//! are received here with `signal-hook` (the shards block none and handle
//! none): SIGHUP reloads, SIGTERM/SIGINT drain and stop.

pub mod admin;
pub mod listeners;
pub mod vrrp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::data::shard::{self, ShardControl};
use crate::snapshot::{Snapshot, SnapshotCell};

/// A running data plane.
pub struct Running {
    pub cell: SnapshotCell,
    pub shards: Vec<(Arc<ShardControl>, JoinHandle<()>)>,
    /// Actual bound address of each listener (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    pub generation: u64,
    pub config: Arc<Config>,
}

/// Binds every listener and starts the shards. Returns once they run.
pub fn start(config: Config) -> std::io::Result<Running> {
    let config = Arc::new(config);
    let rt = &config.runtime;
    let (shard_cpus, control_cpu) =
        crate::runtime::plan_cpus(rt.workers, rt.control_cpu, rt.worker_cpus.as_deref());
    if let Some(cpu) = control_cpu {
        crate::runtime::pin(cpu);
    }
    let n = shard_cpus.len();
    // Bind everything before starting anything.
    let mut per_shard: Vec<Vec<(usize, std::net::TcpListener)>> =
        (0..n).map(|_| Vec::new()).collect();
    let mut listen_addrs = Vec::new();
    for (li, l) in config.listeners.iter().enumerate() {
        let group = listeners::bind_group(l.listen, l.backlog, n)
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen {}: {e}", l.listen)))?;
        listen_addrs.push(group[0].local_addr()?);
        for (si, sock) in group.into_iter().enumerate() {
            per_shard[si].push((li, sock));
        }
    }
    let cell = SnapshotCell::new(Snapshot::build(Arc::clone(&config), 1, None, false));
    let mut shards = Vec::new();
    for (id, (listeners, cpu)) in per_shard.into_iter().zip(shard_cpus).enumerate() {
        let control = Arc::new(ShardControl::default());
        let c = Arc::clone(&control);
        let cell = cell.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    crate::runtime::pin(cpu);
                }
                if let Err(e) = shard::run(id, cell, listeners, Arc::clone(&c)) {
                    crate::error!("shard {id} failed to start: {e}");
                    c.exited.store(true, Ordering::Release);
                }
            })?;
        shards.push((control, handle));
    }
    crate::info!(
        "ringlb started: {} shard(s), listeners {:?}",
        shards.len(),
        listen_addrs
    );
    Ok(Running {
        cell,
        shards,
        listen_addrs,
        generation: 1,
        config,
    })
}

impl Running {
    /// Re-reads `path`; on success publishes a new snapshot, on error keeps
    /// the running config and logs every problem.
    pub fn reload(&mut self, path: &std::path::Path) -> bool {
        match crate::config::load(path) {
            Ok(new) => {
                let old: Vec<SocketAddr> = self.config.listeners.iter().map(|l| l.listen).collect();
                let new_addrs: Vec<SocketAddr> = new.listeners.iter().map(|l| l.listen).collect();
                if old != new_addrs {
                    crate::warn!("reload: listener changes need a restart in this version; routes and upstreams reloaded");
                    return false;
                }
                self.generation += 1;
                let config = Arc::new(new);
                self.cell.publish(Snapshot::build(
                    Arc::clone(&config),
                    self.generation,
                    None,
                    false,
                ));
                self.config = config;
                crate::info!(
                    "reload: configuration generation {} published",
                    self.generation
                );
                true
            }
            Err(e) => {
                crate::error!("reload failed, keeping the running configuration:\n{e}");
                false
            }
        }
    }

    /// Graceful stop: drain every shard, wait up to `shutdown_timeout`.
    pub fn stop(self) {
        let limit = self.config.runtime.shutdown_timeout + Duration::from_secs(1);
        self.cell.publish(Snapshot::build(
            Arc::clone(&self.config),
            self.generation + 1,
            None,
            true,
        ));
        for (c, _) in &self.shards {
            c.stop.store(true, Ordering::Relaxed);
        }
        let all_exited = crate::runtime::wait_until(limit, || {
            self.shards
                .iter()
                .all(|(c, _)| c.exited.load(Ordering::Acquire))
        });
        if all_exited {
            for (_, h) in self.shards {
                let _ = h.join();
            }
        }
    }
}

/// `ringlb run`: start, then serve signals until told to stop.
pub fn run(path: PathBuf, config: Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let mut running = start(config)?;
    let vrrp = vrrp::spawn(vrrp::SpawnArgs::new(&running.config))?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                crate::info!("SIGHUP: reloading {}", path.display());
                running.reload(&path);
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
