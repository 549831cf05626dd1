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
use crate::snapshot::{Snapshot, SnapshotCell};

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
                Some(h) => (h.published_available, h.up_since),
                None => (true, None),
            }
        };
        let snap = Snapshot::build(Arc::clone(&cfg), st.generation, Some(&avail), st.draining);
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

    /// Whether every server of upstream `ui` is unavailable (VRRP tracking).
    pub fn upstream_all_down(&self, ui: usize) -> bool {
        let snap = self.cell.load_full();
        snap.upstreams
            .get(ui)
            .is_some_and(|u| u.servers.iter().all(|s| !s.available))
    }
}
