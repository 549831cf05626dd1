//! The control plane's single source of truth, and the only snapshot builder.
//!
//! Reloads (signal thread), health changes (health thread), VRRP roles
//! (`vrrp` thread) and draining all go through one [`Publisher`]: it holds
//! the running config, the health of every server, keyed by (upstream name,
//! address) so it survives reloads, and the generation counter. Every change
//! rebuilds one immutable [`Snapshot`] and publishes it; shards never see
//! health from one generation with servers from another.
//!
//! Whether a server may get requests — configured up, active checks passing,
//! passive window not tripped — is decided here and nowhere else
//! ([`ServerHealth::available`]); the snapshot carries the answer. The state
//! is behind a mutex that only the control plane takes, and only inside the
//! methods below: no caller holds it, shards never see it.
//!
//! The same verdict is what `/stats` shows as a server's `health`. Every
//! change of it is reported as a transition; a server with active checks
//! is reported from the moment it is configured too ([`reported_health`]),
//! so one whose checks pass from the start, and so never changes state,
//! shows `"up"` rather than nothing. A server without active checks is
//! reported only once passive failures take it out: until then nothing
//! has checked it, and `/stats` says so with `null`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::Config;
use crate::metrics::Registry;
use crate::proto::health::PassiveWindow;
use crate::proto::vrrp::Role;
use crate::snapshot::{Snapshot, SnapshotCell};

/// What the control plane knows about one server.
struct ServerHealth {
    /// Active checks say up (always true without checks).
    active_up: bool,
    /// nginx-style `max_fails`/`fail_timeout` from shard observations.
    passive: PassiveWindow,
    /// Last time the server became available (slow start).
    up_since: Option<Instant>,
    /// Availability in the last published snapshot.
    published_available: bool,
}

impl ServerHealth {
    /// The one rule: a server gets requests while active checks pass and its
    /// passive window is not tripped. (`down = true` servers are never
    /// available; the snapshot applies that from the config.)
    fn available(&self, now: Instant) -> bool {
        self.active_up && self.passive.available(now)
    }
}

/// A server, by upstream name and address: stable across reloads.
pub type ServerKey = (String, SocketAddr);

struct State {
    config: Arc<Config>,
    generation: u64,
    draining: bool,
    /// Handing the VIPs over: keep no client connection alive.
    wind_down: bool,
    health: HashMap<ServerKey, ServerHealth>,
    /// VRRP roles, copied into every snapshot.
    vrrp: Vec<Role>,
}

/// Does a reload bring a server (back) into service, so that its
/// `slow_start` ramp starts now? `before` is its `down` in the running
/// configuration, `None` when the reload adds it. A server set from
/// `down = true` to `false`, or added to an upstream that already serves,
/// starts with a small share like one whose health came back (nginx's
/// "becomes available after it was unavailable"); one that stays up keeps
/// its ramp, or none.
fn comes_back(before: Option<bool>, down: bool) -> bool {
    !down && before != Some(false)
}

/// The health `/stats` shows for a server that has not changed state since
/// it was configured: its availability if active checks watch it, else
/// nothing (`None`: left as it is, `null` until a passive transition).
fn reported_health(active_checks: bool, available: bool) -> Option<bool> {
    active_checks.then_some(available)
}

/// A kept server's active-check verdict after a reload: the last one while
/// the upstream is still checked, else up (a server that failed a check
/// that was then removed would otherwise stay out with nothing to bring it
/// back).
fn active_up_after_reload(last: bool, checked: bool) -> bool {
    last || !checked
}

impl State {
    /// Health entries for the servers of `self.config`: kept per (upstream,
    /// address), new ones up. `reloaded`: the configuration it replaced and
    /// the time, to start the slow-start ramp of servers that come back
    /// ([`comes_back`]); `None` at start (nothing ramps).
    fn sync_health(&mut self, reloaded: Option<(&Config, Instant)>) {
        let mut keep: HashMap<ServerKey, ServerHealth> = HashMap::new();
        for u in &self.config.upstreams {
            for s in &u.servers {
                let key = (u.name.clone(), s.addr);
                let ramp_from = reloaded.and_then(|(old, now)| {
                    let before = old
                        .upstreams
                        .iter()
                        .find(|o| o.name == u.name)
                        .and_then(|o| o.servers.iter().find(|x| x.addr == s.addr))
                        .map(|x| x.down);
                    comes_back(before, s.down).then_some(now)
                });
                let mut h = match self.health.remove(&key) {
                    // A server that stays keeps its health but takes the
                    // reloaded `max_fails` / `fail_timeout`; its last check
                    // verdict stands only while a check can revise it.
                    Some(mut h) => {
                        h.passive.reconfigure(s.max_fails, s.fail_timeout);
                        h.active_up = active_up_after_reload(h.active_up, u.health_check.is_some());
                        h
                    }
                    None => ServerHealth {
                        active_up: true,
                        passive: PassiveWindow::new(s.max_fails, s.fail_timeout),
                        up_since: None,
                        published_available: true,
                    },
                };
                if ramp_from.is_some() {
                    h.up_since = ramp_from;
                }
                keep.insert(key, h);
            }
        }
        self.health = keep;
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
            wind_down: false,
            health: HashMap::new(),
            vrrp: Vec::new(),
        };
        st.sync_health(None);
        let cell = SnapshotCell::new(Snapshot::build(config, 1, None, false));
        let p = Publisher {
            cell,
            registry,
            state: Mutex::new(st),
        };
        let mut st = p.lock();
        p.report_health(&st);
        p.publish(&mut st, Instant::now());
        drop(st);
        p
    }

    /// The cell shards read snapshots from.
    pub fn cell(&self) -> &SnapshotCell {
        &self.cell
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.lock().config)
    }

    /// The generation of the last published snapshot.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Reports to the metrics the health of the servers of `st.config` as
    /// [`reported_health`] says (after the health entries were synced).
    fn report_health(&self, st: &State) {
        let control = self.registry.control();
        for u in &st.config.upstreams {
            for s in &u.servers {
                let Some(h) = st.health.get(&(u.name.clone(), s.addr)) else {
                    continue;
                };
                if let Some(up) = reported_health(u.health_check.is_some(), h.published_available) {
                    control.set_server_health(&u.name, &s.addr.to_string(), up);
                }
            }
        }
    }

    /// Rebuilds and publishes the snapshot from `st`.
    fn publish(&self, st: &mut State, now: Instant) {
        st.generation += 1;
        let cfg = Arc::clone(&st.config);
        for (key, h) in st.health.iter_mut() {
            let avail = h.available(now);
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
        snap.wind_down = st.wind_down;
        self.cell.publish(snap);
        self.registry.control().set_generation(st.generation);
        self.registry.control().set_draining(st.draining);
    }

    /// Swaps in a new config (already validated) and publishes it; returns
    /// the new generation.
    pub fn reload(&self, config: Arc<Config>) -> u64 {
        let mut st = self.lock();
        let old = std::mem::replace(&mut st.config, config);
        let now = Instant::now();
        st.sync_health(Some((&old, now)));
        let keys: Vec<(String, String)> = st
            .health
            .keys()
            .map(|(u, a)| (u.clone(), a.to_string()))
            .collect();
        self.registry
            .control()
            .retain_servers(&|u, s| keys.iter().any(|(ku, ks)| ku == u && ks == s));
        self.report_health(&st);
        self.publish(&mut st, now);
        st.generation
    }

    /// Marks the node as draining (graceful stop) and publishes: shards
    /// read it from the snapshot.
    pub fn drain(&self) {
        let mut st = self.lock();
        st.draining = true;
        self.publish(&mut st, Instant::now());
    }

    /// First step of a graceful stop on a VRRP master: shards keep
    /// accepting but keep no client connection alive (see
    /// `Snapshot::wind_down`).
    pub fn wind_down(&self) {
        let mut st = self.lock();
        st.wind_down = true;
        self.publish(&mut st, Instant::now());
    }

    /// Records new VRRP roles (from the `vrrp` thread) and publishes.
    pub fn set_vrrp(&self, roles: Vec<Role>) {
        let mut st = self.lock();
        if st.vrrp != roles {
            st.vrrp = roles;
            self.publish(&mut st, Instant::now());
        }
    }

    /// Feeds upstream failures observed by the shards into the passive
    /// windows. Takes effect at the next [`Publisher::publish_if_changed`].
    pub fn record_failures(
        &self,
        reports: impl IntoIterator<Item = (Box<str>, SocketAddr)>,
        now: Instant,
    ) {
        let mut st = self.lock();
        for (upstream, addr) in reports {
            if let Some(h) = st.health.get_mut(&(upstream.to_string(), addr)) {
                if h.passive.record_failure(now) {
                    crate::warn!(
                        "upstream {upstream} server {addr}: marked unavailable (max_fails reached)"
                    );
                }
            }
        }
    }

    /// Records an active-check verdict for `key`. Takes effect at the next
    /// [`Publisher::publish_if_changed`].
    pub fn set_active(&self, key: &ServerKey, up: bool) {
        let mut st = self.lock();
        if let Some(h) = st.health.get_mut(key) {
            if h.active_up != up {
                h.active_up = up;
                if up {
                    crate::info!(
                        "upstream {} server {}: health check passing, back in rotation",
                        key.0,
                        key.1
                    );
                } else {
                    crate::warn!(
                        "upstream {} server {}: health check failing, taken out",
                        key.0,
                        key.1
                    );
                }
            }
        }
    }

    /// Publishes a new snapshot if any server's availability at `now`
    /// differs from the published one (a check flipped, a passive window
    /// tripped or expired). Returns whether it published.
    pub fn publish_if_changed(&self, now: Instant) -> bool {
        let mut st = self.lock();
        let changed = st
            .health
            .values()
            .any(|h| h.available(now) != h.published_available);
        if changed {
            self.publish(&mut st, now);
        }
        changed
    }

    /// Whether every server of the upstream named `name` is unavailable in
    /// the current snapshot (VRRP `track_upstream`). By name, so a reload
    /// that reorders upstreams keeps the tracking on the same one; a name
    /// the snapshot does not have is not down.
    pub fn upstream_all_down(&self, name: &str) -> bool {
        let snap = self.cell.load_full();
        snap.upstreams
            .iter()
            .find(|u| u.config.name == name)
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
    fn servers_that_a_reload_brings_into_service_ramp() {
        // (down before the reload, None: added; down after; ramps)
        for (before, down, ramps) in [
            (Some(true), false, true),
            (None, false, true),
            (Some(false), false, false),
            (Some(false), true, false),
            (Some(true), true, false),
            (None, true, false),
        ] {
            assert_eq!(comes_back(before, down), ramps, "{before:?} -> {down}");
        }
    }

    #[test]
    fn a_reload_starts_the_ramp_of_a_server_set_up_or_added() {
        let text = |b_down: bool, c: bool| {
            let mut t = String::from("[[listener]]\nlisten = \"127.0.0.1:0\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9\"\nslow_start = \"10s\"\n");
            t += &format!("[[upstream.app.server]]\naddress = \"127.0.0.1:10\"\nslow_start = \"10s\"\ndown = {b_down}\n");
            if c {
                t += "[[upstream.app.server]]\naddress = \"127.0.0.1:11\"\nslow_start = \"10s\"\n";
            }
            Arc::new(crate::config::parse_str(&t, "t.toml").unwrap())
        };
        let p = Publisher::new(text(true, false), Registry::new(1));
        let snap = p.cell().load_full();
        assert!(snap.upstreams[0]
            .servers
            .iter()
            .all(|s| s.up_since.is_none()));
        p.reload(text(false, true));
        let snap = p.cell().load_full();
        let since: Vec<bool> = snap.upstreams[0]
            .servers
            .iter()
            .map(|s| s.up_since.is_some())
            .collect();
        assert_eq!(since, [false, true, true]);
        assert!(snap.upstreams[0].ramping);
        // Reloading the same file again starts no new ramp.
        let t = snap.upstreams[0].servers[1].up_since;
        p.reload(text(false, true));
        assert_eq!(p.cell().load_full().upstreams[0].servers[1].up_since, t);
    }

    #[test]
    fn only_servers_with_active_checks_report_health_from_the_start() {
        // (active checks, available, reported)
        for (checks, available, want) in [
            (true, true, Some(true)),
            (true, false, Some(false)),
            (false, true, None),
            (false, false, None),
        ] {
            assert_eq!(
                reported_health(checks, available),
                want,
                "checks {checks}, available {available}"
            );
        }
    }

    /// Upstream "app" (127.0.0.1:9, with a tcp check if `check`) and
    /// "plain" (127.0.0.1:10, never checked).
    fn app_and_plain(check: bool) -> Arc<Config> {
        let mut t = String::from("[[listener]]\nlisten = \"127.0.0.1:0\"\nupstream = \"app\"\n[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"plain\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9\"\n[upstream.plain]\n[[upstream.plain.server]]\naddress = \"127.0.0.1:10\"\n");
        if check {
            t += "[upstream.app.health_check]\nkind = \"tcp\"\n";
        }
        config(&t)
    }

    #[test]
    fn a_checked_server_is_in_the_stats_before_any_transition() {
        let text = app_and_plain;
        let health = |p: &Publisher| {
            let h = p.registry.control().snapshot().health;
            let get = |u: &str, a: &str| h.get(&(u.to_string(), a.to_string())).map(|h| h.up);
            (get("app", "127.0.0.1:9"), get("plain", "127.0.0.1:10"))
        };
        let p = Publisher::new(text(true), Registry::new(1));
        assert_eq!(health(&p), (Some(true), None));
        let key = ("app".to_string(), "127.0.0.1:9".parse().unwrap());
        p.set_active(&key, false);
        p.publish_if_changed(Instant::now());
        assert_eq!(health(&p), (Some(false), None));
        // A reload that adds checks reports the server at once.
        let p = Publisher::new(text(false), Registry::new(1));
        assert_eq!(health(&p), (None, None));
        p.reload(text(true));
        assert_eq!(health(&p), (Some(true), None));
    }

    #[test]
    fn active_up_after_reload_table() {
        for (last, checked, want) in [
            (true, true, true),
            (false, true, false),
            (true, false, true),
            (false, false, true),
        ] {
            assert_eq!(
                active_up_after_reload(last, checked),
                want,
                "{last} {checked}"
            );
        }
    }

    #[test]
    fn a_reload_that_removes_the_check_returns_a_server_that_failed_it() {
        let text = app_and_plain;
        let available = |p: &Publisher| {
            let snap = p.cell().load_full();
            let app = snap
                .upstreams
                .iter()
                .find(|u| u.config.name == "app")
                .unwrap();
            app.servers[0].available
        };
        let key = ("app".to_string(), "127.0.0.1:9".parse().unwrap());
        let p = Publisher::new(text(true), Registry::new(1));
        p.set_active(&key, false);
        p.publish_if_changed(Instant::now());
        assert!(!available(&p));
        // A reload that keeps the check keeps the verdict until the next one.
        p.reload(text(true));
        assert!(!available(&p));
        // Without a check nothing would ever bring it back: it is up again.
        p.reload(text(false));
        assert!(available(&p));
    }

    #[test]
    fn vrrp_roles_reach_the_snapshot() {
        let p = publisher();
        let before = p.cell().load_full().generation;
        let roles = vec![Role {
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
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        let g0 = p.generation();
        p.record_failures([("app".into(), addr)], t0);
        assert!(p.publish_if_changed(t0));
        assert!(!p.cell().load_full().upstreams[0].servers[0].available);
        assert!(p.upstream_all_down("app"));
        assert!(!p.upstream_all_down("other"));
        assert_eq!(p.generation(), g0 + 1);
        // Nothing changed: no new generation.
        assert!(!p.publish_if_changed(t0));
        let later = t0 + std::time::Duration::from_secs(11);
        assert!(p.publish_if_changed(later));
        let snap = p.cell().load_full();
        assert!(snap.upstreams[0].servers[0].available);
        assert_eq!(snap.upstreams[0].servers[0].up_since, Some(later));
    }

    #[test]
    fn active_check_and_passive_window_both_decide_availability() {
        let p = publisher();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let key = ("app".to_string(), addr);
        let t0 = Instant::now();
        p.set_active(&key, false);
        assert!(p.publish_if_changed(t0));
        assert!(!p.cell().load_full().upstreams[0].servers[0].available);
        // Passing checks again, but the passive window tripped meanwhile:
        // still out until it expires.
        p.record_failures([("app".into(), addr)], t0);
        p.set_active(&key, true);
        assert!(!p.publish_if_changed(t0));
        assert!(!p.cell().load_full().upstreams[0].servers[0].available);
        assert!(p.publish_if_changed(t0 + std::time::Duration::from_secs(11)));
        assert!(p.cell().load_full().upstreams[0].servers[0].available);
    }

    fn config(text: &str) -> Arc<Config> {
        Arc::new(crate::config::parse_str(text, "t.toml").unwrap())
    }

    /// Upstreams `app` (server :9, weight 9) and `api` (server :10) in the
    /// given order, each behind its own listener.
    fn two_upstreams(first: &str, second: &str, max_fails: u32) -> String {
        let mut s = String::new();
        for (i, name) in [first, second].into_iter().enumerate() {
            s.push_str(&format!(
                "[[listener]]\nlisten = \"127.0.0.1:{}\"\nupstream = \"{name}\"\n",
                i + 1
            ));
        }
        for name in [first, second] {
            let port = if name == "app" { 9 } else { 10 };
            s.push_str(&format!(
                "[upstream.{name}]\n[[upstream.{name}.server]]\naddress = \"127.0.0.1:{port}\"\n\
                 max_fails = {max_fails}\nfail_timeout = \"10s\"\nweight = {port}\n"
            ));
        }
        s
    }

    #[test]
    fn reloaded_servers_take_the_new_max_fails_and_weight() {
        let p = Publisher::new(config(&two_upstreams("app", "api", 1)), Registry::new(1));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        // max_fails 1 → 3: two failures no longer take the server out.
        p.reload(config(
            &two_upstreams("app", "api", 3).replace("weight = 9", "weight = 4"),
        ));
        p.record_failures([("app".into(), addr), ("app".into(), addr)], t0);
        assert!(!p.publish_if_changed(t0));
        let snap = p.cell().load_full();
        assert!(snap.upstreams[0].servers[0].available);
        assert_eq!(snap.upstreams[0].config.servers[0].weight, 4);
        // The third does (the count carried over the reload).
        p.record_failures([("app".into(), addr)], t0);
        assert!(p.publish_if_changed(t0));
        assert!(!p.cell().load_full().upstreams[0].servers[0].available);
        // max_fails = 0 turns the window off: back at once.
        p.reload(config(&two_upstreams("app", "api", 0)));
        assert!(p.cell().load_full().upstreams[0].servers[0].available);
        p.record_failures([("app".into(), addr)], t0);
        assert!(!p.publish_if_changed(t0));
    }

    #[test]
    fn upstream_tracking_follows_the_name_across_a_reorder() {
        let p = Publisher::new(config(&two_upstreams("app", "api", 1)), Registry::new(1));
        let app: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t0 = Instant::now();
        p.record_failures([("app".into(), app)], t0);
        assert!(p.publish_if_changed(t0));
        assert!(p.upstream_all_down("app"));
        assert!(!p.upstream_all_down("api"));
        // Reordered: "api" is now upstream 0, "app" upstream 1.
        p.reload(config(&two_upstreams("api", "app", 1)));
        let snap = p.cell().load_full();
        assert_eq!(snap.upstreams[0].config.name, "api");
        assert!(p.upstream_all_down("app"), "health follows the name");
        assert!(!p.upstream_all_down("api"));
    }

    #[test]
    fn draining_is_snapshot_state() {
        let p = publisher();
        assert!(!p.cell().load_full().draining);
        p.drain();
        assert!(p.cell().load_full().draining);
    }

    #[test]
    fn winding_down_is_snapshot_state_and_survives_a_reload() {
        let p = publisher();
        assert!(!p.cell().load_full().wind_down);
        p.wind_down();
        let snap = p.cell().load_full();
        assert!(snap.wind_down && !snap.draining);
        p.reload(p.config());
        assert!(p.cell().load_full().wind_down);
        p.drain();
        let snap = p.cell().load_full();
        assert!(snap.wind_down && snap.draining);
    }
}
