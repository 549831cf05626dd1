//! The control plane's single source of truth, and the only snapshot builder.
//!
//! Reloads (signal thread), health changes (health thread) and draining all
//! go through one [`Publisher`]: it holds the running config, the health of
//! every server, keyed by (upstream name, address) so it survives reloads,
//! and the generation counter. Every change rebuilds one immutable
//! [`Snapshot`] and publishes it; shards never see health from one
//! generation with servers from another. The mutex here is control-plane
//! only: shards never take it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::Config;
use crate::metrics::Registry;
use crate::proto::health::PassiveWindow;
use crate::snapshot::{Snapshot, SnapshotCell, VrrpRole};

/// What the control plane knows about one server.
pub struct ServerHealth {
    /// Active checks say up (always true without checks).
    pub active_up: bool,
    /// nginx-style `max_fails`/`fail_timeout` from shard observations.
    pub passive: PassiveWindow,
    /// Last time the server became available (slow start).
    pub up_since: Option<Instant>,
    /// Availability in the last published snapshot.
    pub published_available: bool,
}

pub type ServerKey = (String, SocketAddr);

pub struct State {
    pub config: Arc<Config>,
    pub generation: u64,
    pub draining: bool,
    pub health: HashMap<ServerKey, ServerHealth>,
    /// VRRP roles, copied into every snapshot.
    pub vrrp: Vec<VrrpRole>,
}

impl State {
    fn sync_health(&mut self) {
        let mut keep: HashMap<ServerKey, ServerHealth> = HashMap::new();
        for u in &self.config.upstreams {
            for s in &u.servers {
                let key = (u.name.clone(), s.addr);
                let h = self.health.remove(&key).unwrap_or_else(|| ServerHealth {
                    active_up: true,
                    passive: PassiveWindow::new(s.max_fails, s.fail_timeout),
                    up_since: None,
                    published_available: true,
                });
                keep.insert(key, h);
            }
        }
        self.health = keep;
    }

    /// Whether server `key` may get requests at `now`.
    pub fn available(&self, key: &ServerKey, now: Instant) -> bool {
        self.health
            .get(key)
            .is_none_or(|h| h.active_up && h.passive.available(now))
    }
}

pub struct Publisher {
    cell: SnapshotCell,
    registry: Arc<Registry>,
    state: Mutex<State>,
}

impl Publisher {
    /// Builds generation 1 from `config`.
    pub fn new(config: Arc<Config>, registry: Arc<Registry>) -> Publisher {
        let mut st = State {
            config: Arc::clone(&config),
            generation: 0,
            draining: false,
            health: HashMap::new(),
            vrrp: Vec::new(),
        };
        st.sync_health();
        let cell = SnapshotCell::new(Snapshot::build(config, 1, None, false));
        let p = Publisher {
            cell,
            registry,
            state: Mutex::new(st),
        };
        p.publish(&mut p.lock(), Instant::now());
        p
    }

    pub fn cell(&self) -> &SnapshotCell {
        &self.cell
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.lock().config)
    }

    /// Rebuilds and publishes the snapshot from `st`.
    pub fn publish(&self, st: &mut State, now: Instant) {
        st.generation += 1;
        let cfg = Arc::clone(&st.config);
        for (key, h) in st.health.iter_mut() {
            let avail = h.active_up && h.passive.available(now);
            if avail != h.published_available {
                h.published_available = avail;
                if avail {
                    h.up_since = Some(now);
                }
                self.registry
                    .control()
                    .health_transition(&key.0, &key.1.to_string(), avail);
            }
        }
        let avail = |ui: usize, si: usize| {
            let u = &cfg.upstreams[ui];
            let key = (u.name.clone(), u.servers[si].addr);
            match st.health.get(&key) {
                Some(h) => (h.published_available, h.up_since, h.active_up),
                None => (true, None, true),
            }
        };
        let mut snap = Snapshot::build(Arc::clone(&cfg), st.generation, Some(&avail), st.draining);
        snap.vrrp = st.vrrp.clone();
        self.cell.publish(snap);
        self.registry.control().set_generation(st.generation);
        self.registry.control().set_draining(st.draining);
    }

    /// Swaps in a new config (already validated) and publishes it.
    pub fn reload(&self, config: Arc<Config>) {
        let mut st = self.lock();
        st.config = config;
        st.sync_health();
        let keys: Vec<(String, String)> = st
            .health
            .keys()
            .map(|(u, a)| (u.clone(), a.to_string()))
            .collect();
        self.registry
            .control()
            .retain_servers(&|u, s| keys.iter().any(|(ku, ks)| ku == u && ks == s));
        self.publish(&mut st, Instant::now());
    }

    /// Marks the node as draining (graceful stop) and publishes.
    pub fn drain(&self) {
        let mut st = self.lock();
        st.draining = true;
        self.publish(&mut st, Instant::now());
    }

    /// Records new VRRP roles (from the `vrrp` thread) and publishes.
    pub fn set_vrrp(&self, roles: Vec<VrrpRole>) {
        let mut st = self.lock();
        if st.vrrp != roles {
            st.vrrp = roles;
            self.publish(&mut st, Instant::now());
        }
    }

    /// Whether every server of upstream `ui` is unavailable (VRRP tracking).
    pub fn upstream_all_down(&self, ui: usize) -> bool {
        let snap = self.cell.load_full();
        snap.upstreams
            .get(ui)
            .is_some_and(|u| u.servers.iter().all(|s| !s.available))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::vrrp::State as VrrpState;

    fn publisher() -> Publisher {
        let cfg = crate::config::parse_str(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9\"\nmax_fails = 1\nfail_timeout = \"10s\"\n",
            "t.toml",
        )
        .unwrap();
        Publisher::new(Arc::new(cfg), Registry::new(1))
    }

    #[test]
    fn vrrp_roles_reach_the_snapshot() {
        let p = publisher();
        let before = p.cell().load_full().generation;
        let roles = vec![VrrpRole {
            name: "VI_1".into(),
            state: VrrpState::Master,
            priority: 150,
        }];
        p.set_vrrp(roles.clone());
        let snap = p.cell().load_full();
        assert_eq!(snap.vrrp, roles);
        assert!(snap.generation > before);
        // Unchanged roles do not republish.
        p.set_vrrp(roles);
        assert_eq!(p.cell().load_full().generation, snap.generation);
    }

    #[test]
    fn passive_failure_takes_a_server_out_and_expiry_brings_it_back() {
        let p = publisher();
        let key = ("app".to_string(), "127.0.0.1:9".parse().unwrap());
        let t0 = Instant::now();
        {
            let mut st = p.lock();
            assert!(st.health.get_mut(&key).unwrap().passive.record_failure(t0));
            p.publish(&mut st, t0);
        }
        assert!(!p.cell().load_full().upstreams[0].servers[0].available);
        assert!(p.upstream_all_down(0));
        let later = t0 + std::time::Duration::from_secs(11);
        p.publish(&mut p.lock(), later);
        let snap = p.cell().load_full();
        assert!(snap.upstreams[0].servers[0].available);
        assert_eq!(snap.upstreams[0].servers[0].up_since, Some(later));
    }
}
