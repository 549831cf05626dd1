//! Start: bind, spawn, pin, and start the control services.
//!
//! In this order, so that anything that can fail fails before anything
//! runs: pin the calling (control) thread; bind every listener once per
//! shard; build the first snapshot; open the admin listener and the access
//! log; spawn one pinned thread per shard (each builds its own ring and
//! starts accepting); start the health thread; start VRRP last, once there
//! is a data plane whose liveness it can track.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::listeners::{self, Source};
use crate::config::Config;
use crate::control::{admin, health, publisher::Publisher, vrrp};
use crate::data::link::{ShardEnd, ShardLink};
use crate::data::shard;
use crate::metrics::Registry;

/// A running node: the data plane, the control-plane services, and the
/// configuration they run on.
pub struct Running {
    /// The single source of truth for snapshots (health, draining, VRRP roles).
    pub publisher: Arc<Publisher>,
    pub registry: Arc<Registry>,
    pub admin: Option<admin::AdminServer>,
    /// One link and thread per shard.
    pub shards: Vec<(Arc<ShardLink>, JoinHandle<()>)>,
    /// Actual bound address of each listener (port 0 resolved).
    pub listen_addrs: Vec<SocketAddr>,
    /// The running configuration (as of the last successful reload).
    pub config: Arc<Config>,
    pub(super) health: Option<JoinHandle<()>>,
    pub(super) health_stop: Arc<AtomicBool>,
    pub(super) access_log: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    pub(super) vrrp: Option<vrrp::VrrpHandle>,
}

/// Starts everything `config` asks for; returns once every shard thread is
/// spawned (they tick for the first time shortly after).
pub fn start(mut config: Config) -> std::io::Result<Running> {
    for w in &config.warnings {
        crate::warn!("{w}");
    }
    let rt = &config.runtime;
    let shards = super::plan_cpus(rt.workers, rt.control_cpu, rt.worker_cpus.as_deref()).0;
    crate::control::fd_budget::apply(&mut config, shards.len());
    let config = Arc::new(config);
    let rt = &config.runtime;
    let (shard_cpus, control_cpu) =
        super::plan_cpus(rt.workers, rt.control_cpu, rt.worker_cpus.as_deref());
    if let Some(cpu) = control_cpu {
        super::pin(cpu);
    }
    let n = shard_cpus.len();
    // Bind everything before starting anything.
    let mut per_shard: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
        (0..n).map(|_| Vec::new()).collect();
    let mut listen_addrs = Vec::new();
    for l in &config.listeners {
        let group = listeners::open_group(Source::Bind(l.listen), l.backlog, n)
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
        let end = ShardEnd {
            link: Arc::new(ShardLink::default()),
            snapshots: publisher.cell().clone(),
        };
        let link = Arc::clone(&end.link);
        let reg = Arc::clone(&registry);
        let al = access_log.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    super::pin(cpu);
                }
                let link = Arc::clone(&end.link);
                if let Err(e) = shard::run(id, end, listeners, reg, al) {
                    crate::error!("shard {id} failed to start: {e}");
                    link.mark_exited();
                }
            })?;
        shards.push((link, handle));
    }
    let links: Vec<Arc<ShardLink>> = shards.iter().map(|(l, _)| Arc::clone(l)).collect();
    let health_stop = Arc::new(AtomicBool::new(false));
    let failures = {
        let links = links.clone();
        move || {
            links
                .iter()
                .flat_map(|l| l.take_failures())
                .map(|f| (f.upstream, f.addr))
                .collect()
        }
    };
    let health = health::spawn(
        Arc::clone(&publisher),
        Box::new(failures),
        control_cpu,
        Arc::clone(&health_stop),
    )?;
    let vrrp = vrrp::spawn(vrrp_args(&config, &registry, &publisher, links))?;
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
        vrrp: Some(vrrp),
    })
}

/// VRRP's view of this node: metrics, `track_upstream`, data-plane liveness,
/// and where its roles go (into every snapshot).
fn vrrp_args(
    config: &Config,
    registry: &Arc<Registry>,
    publisher: &Arc<Publisher>,
    links: Vec<Arc<ShardLink>>,
) -> vrrp::SpawnArgs {
    let mut args = vrrp::SpawnArgs::new(config);
    args.registry = Some(Arc::clone(registry));
    let p = Arc::clone(publisher);
    args.upstream_down = Some(Arc::new(move |name: &str| p.upstream_all_down(name)));
    args.data_plane = Some(Arc::new(super::liveness::liveness(links)));
    let p = Arc::clone(publisher);
    args.on_roles = Some(Arc::new(move |roles: &[vrrp::Role]| {
        p.set_vrrp(roles.to_vec())
    }));
    args
}
