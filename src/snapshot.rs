//! The one immutable value the shards route with, and how it is published.
//!
//! Everything a shard needs to route a request — routers, upstreams with
//! their selectors, per-server availability, the drain flag — lives in one
//! [`Snapshot`] with a generation number.
//!
//! Its shape has two parts, and every fact has one home:
//!
//! - **settings**, exactly as configured: `snap.config` (`http`, `runtime`,
//!   `log`, …) and, per upstream, `snap.upstreams[ui].config` — the same
//!   shared `UpstreamConfig` as `snap.config.upstreams[ui]`, never a copy;
//! - **state derived for routing**: routers, selectors, metric layout, and
//!   per server whether it is available and since when (decided by the
//!   control plane's publisher), plus `draining` and the VRRP roles.
//!
//! The control thread builds a new one whenever anything changes and swaps it in; shards read it through an
//! `arc_swap::Cache`, which costs one atomic load of a pointer that almost
//! never changes (no lock, no syscall, no reference-count traffic). State is
//! never split over several cells, so a shard can never see a server list
//! from one generation with health from another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{Config, UpstreamConfig};
use crate::lb::route::Router;
use crate::lb::{Selector, ServerSpec};
use crate::metrics::Layout;

/// An immutable view of the routing state.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Indexed like `config.listeners`.
    pub listeners: Vec<ListenerSnap>,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<UpstreamSnap>,
    /// Graceful stop in progress: accept nothing new, answer with
    /// `Connection: close`.
    pub draining: bool,
    /// A VRRP master is about to hand its VIPs over (the first step of a
    /// graceful stop): keep accepting, but keep no client connection alive,
    /// so keep-alive clients reconnect while this node still holds the VIP
    /// and the new master inherits no connection it would have to reset.
    pub wind_down: bool,
    /// VRRP instances on this node: (name, role, effective priority).
    pub vrrp: Vec<crate::proto::vrrp::Role>,
    /// Metric labels for this generation; server `si` of upstream `ui` is
    /// label `upstreams[ui].metric_base + si`.
    pub layout: Arc<Layout>,
}

pub struct ListenerSnap {
    pub listen: SocketAddr,
    pub router: Router,
}

pub struct UpstreamSnap {
    /// The upstream's settings (name, timeouts, retries, keepalive, hash
    /// key, servers as configured): `config.upstreams[ui]` itself.
    pub config: Arc<UpstreamConfig>,
    /// Index of this upstream's first server in the metrics layout.
    pub metric_base: usize,
    /// Some server is in its slow-start ramp: picking needs the clock.
    pub ramping: bool,
    pub selector: Selector,
    /// Indexed like `config.servers`.
    pub servers: Vec<ServerSnap>,
}

impl UpstreamSnap {
    /// Slow-start ramp of server `si` in permille of its full weight at `now`.
    pub fn weight_permille(&self, si: usize, now: Instant) -> u32 {
        match self.servers[si].up_since {
            Some(since) => {
                crate::lb::slow_start_permille(since, now, self.config.servers[si].slow_start)
            }
            None => 1000,
        }
    }
}

/// What routing needs to know about one server beyond its settings
/// (`UpstreamSnap::config.servers[si]`).
pub struct ServerSnap {
    /// The server's identity (its configured, resolved address), the key of
    /// the upstream connection pool.
    pub addr: SocketAddr,
    /// `addr` as text, used as `Host` for HTTP/1.0 clients that sent none.
    pub host: Box<[u8]>,
    /// Configured up, healthy by active checks and by passive observation.
    pub available: bool,
    /// Out only because of passive failures (`max_fails`): not `down` in
    /// the config, not failing active checks. When no server of the
    /// upstream is available, these are tried anyway (nginx never leaves
    /// an upstream with no server because of passive failures alone).
    pub passive_down: bool,
    /// When the server last came back, for the slow-start ramp.
    pub up_since: Option<Instant>,
}

/// Availability of every server as decided by the control thread, indexed
/// `[upstream][server]`: (available, up since, up by active checks);
/// `None` means "all up".
pub type Availability<'a> = Option<&'a dyn Fn(usize, usize) -> (bool, Option<Instant>, bool)>;

impl Snapshot {
    /// Builds a snapshot of `config`; `avail` gives each server's health and
    /// the time it last came back up.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        avail: Availability<'_>,
        draining: bool,
    ) -> Snapshot {
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerSnap {
                listen: l.listen,
                router: Router::build(&l.routes, l.upstream),
            })
            .collect();
        let mut metric_base = 0;
        let upstreams = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(ui, u)| {
                let base = metric_base;
                metric_base += u.servers.len();
                let specs: Vec<ServerSpec> =
                    u.servers.iter().map(ServerSpec::from_config).collect();
                let servers: Vec<ServerSnap> = u
                    .servers
                    .iter()
                    .enumerate()
                    .map(|(si, s)| {
                        let (healthy, up_since, active_up) =
                            avail.map_or((true, None, true), |f| f(ui, si));
                        ServerSnap {
                            addr: s.addr,
                            host: s.addr.to_string().into_bytes().into(),
                            available: !s.down && healthy,
                            passive_down: !s.down && active_up && !healthy,
                            up_since,
                        }
                    })
                    .collect();
                UpstreamSnap {
                    config: Arc::clone(u),
                    metric_base: base,
                    selector: Selector::build(u.balance, &specs),
                    // Stays set until the next publish after the ramp ends;
                    // `weight_permille` is exact either way.
                    ramping: servers
                        .iter()
                        .zip(&u.servers)
                        .any(|(s, c)| s.up_since.is_some() && !c.slow_start.is_zero()),
                    servers,
                }
            })
            .collect();
        let layout = Arc::new(Layout {
            listeners: config
                .listeners
                .iter()
                .map(|l| l.listen.to_string())
                .collect(),
            servers: config
                .upstreams
                .iter()
                .flat_map(|u| {
                    u.servers
                        .iter()
                        .map(|s| (u.name.clone(), s.addr.to_string()))
                })
                .collect(),
        });
        Snapshot {
            generation,
            config,
            listeners,
            upstreams,
            draining,
            wind_down: false,
            vrrp: Vec::new(),
            layout,
        }
    }
}

/// The shared cell the control thread publishes into.
#[derive(Clone)]
pub struct SnapshotCell(Arc<ArcSwap<Snapshot>>);

impl SnapshotCell {
    pub fn new(s: Snapshot) -> Self {
        SnapshotCell(Arc::new(ArcSwap::from_pointee(s)))
    }

    /// Publishes a new snapshot; shards see it on their next request.
    pub fn publish(&self, s: Snapshot) {
        self.0.store(Arc::new(s));
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// A per-shard reader: one pointer comparison per read once warm.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader(arc_swap::Cache::new(Arc::clone(&self.0)))
    }
}

/// A shard's cached view of the [`SnapshotCell`].
pub struct SnapshotReader(arc_swap::Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>);

impl SnapshotReader {
    #[inline]
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.0.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(slow_start: &str) -> Arc<Config> {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9\"\nslow_start = \"{slow_start}\"\n"
        );
        Arc::new(crate::config::parse_str(&text, "t.toml").unwrap())
    }

    #[test]
    fn clock_is_needed_only_while_a_server_ramps_up() {
        let since = crate::testutil::epoch();
        let back = |_: usize, _: usize| (true, Some(since), true);
        let never_down = |_: usize, _: usize| (true, None, true);
        assert!(Snapshot::build(config("10s"), 1, Some(&back), false).upstreams[0].ramping);
        assert!(!Snapshot::build(config("10s"), 1, Some(&never_down), false).upstreams[0].ramping);
        assert!(!Snapshot::build(config("0s"), 1, Some(&back), false).upstreams[0].ramping);
        let s = Snapshot::build(config("10s"), 1, Some(&back), false);
        let up = &s.upstreams[0];
        assert_eq!(up.weight_permille(0, since + Duration::from_secs(5)), 500);
        assert_eq!(up.weight_permille(0, since + Duration::from_secs(20)), 1000);
        assert!(Arc::ptr_eq(&up.config, &s.config.upstreams[0]));
    }
}
