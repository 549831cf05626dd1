//! Numbers owned by the control thread: health and VRRP state and
//! transitions, dropped VRRP packets by reason, advert gaps, config
//! generation, draining.
//!
//! Only the control thread writes here and the admin thread reads, a few
//! hundred times a second at most, so a plain mutex is the simplest correct
//! choice; critical sections are short (no I/O, no formatting), so the
//! VRRP timers never wait long behind a reader. Label strings are allocated
//! only the first time a label is seen.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::hist::LatencyHist;

use crate::proto::vrrp::State;

/// Health of one upstream server as decided by the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerHealth {
    pub up: bool,
    /// Transitions to up / to down (counters).
    pub to_up: u64,
    pub to_down: u64,
}

/// One VRRP instance.
#[derive(Debug, Clone, Default)]
pub struct VrrpStats {
    pub role: State,
    pub priority: u8,
    /// Transitions *into* each role, by [`State::ALL`].
    pub transitions: [u64; 4],
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Time between consecutive adverts received from the master (µs).
    pub advert_gap: LatencyHist,
}

/// A copy of everything in [`ControlStats`].
#[derive(Debug, Clone, Default)]
pub struct ControlSnapshot {
    pub generation: u64,
    pub draining: bool,
    /// Key: (upstream name, server address).
    pub health: BTreeMap<(String, String), ServerHealth>,
    /// Key: instance name.
    pub vrrp: BTreeMap<String, VrrpStats>,
    /// Dropped VRRP packets by reason.
    pub vrrp_drops: BTreeMap<String, u64>,
}

impl ControlSnapshot {
    /// Counters minus `base`; states (role, priority, up, generation) from self.
    pub fn delta_since(&self, base: &ControlSnapshot) -> ControlSnapshot {
        let mut out = self.clone();
        for (k, h) in out.health.iter_mut() {
            if let Some(b) = base.health.get(k) {
                h.to_up = h.to_up.saturating_sub(b.to_up);
                h.to_down = h.to_down.saturating_sub(b.to_down);
            }
        }
        for (k, v) in out.vrrp.iter_mut() {
            if let Some(b) = base.vrrp.get(k) {
                for (a, bb) in v.transitions.iter_mut().zip(b.transitions.iter()) {
                    *a = a.saturating_sub(*bb);
                }
                v.adverts_sent = v.adverts_sent.saturating_sub(b.adverts_sent);
                v.adverts_received = v.adverts_received.saturating_sub(b.adverts_received);
                v.advert_gap = v.advert_gap.minus(&b.advert_gap);
            }
        }
        for (k, v) in out.vrrp_drops.iter_mut() {
            if let Some(b) = base.vrrp_drops.get(k) {
                *v = v.saturating_sub(*b);
            }
        }
        out
    }
}

/// Control-thread metrics; see the module docs.
#[derive(Default)]
pub struct ControlStats {
    inner: Mutex<ControlSnapshot>,
}

fn entry<'a, V: Default>(
    map: &'a mut BTreeMap<(String, String), V>,
    a: &str,
    b: &str,
) -> &'a mut V {
    // Control path, a handful of calls per second: allocating the key is fine.
    map.entry((a.to_string(), b.to_string())).or_default()
}

fn vrrp_entry<'a>(map: &'a mut BTreeMap<String, VrrpStats>, name: &str) -> &'a mut VrrpStats {
    if !map.contains_key(name) {
        map.insert(name.to_string(), VrrpStats::default());
    }
    map.get_mut(name).expect("just inserted")
}

impl ControlStats {
    fn lock(&self) -> MutexGuard<'_, ControlSnapshot> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> ControlSnapshot {
        self.lock().clone()
    }

    /// Config generation now published to the shards.
    pub fn set_generation(&self, generation: u64) {
        self.lock().generation = generation;
    }

    /// Graceful stop in progress (makes `/healthz` answer 503).
    pub fn set_draining(&self, draining: bool) {
        self.lock().draining = draining;
    }

    pub fn draining(&self) -> bool {
        self.lock().draining
    }

    /// Set a server's health without counting a transition (initial state,
    /// or a server added by a reload).
    pub fn set_server_health(&self, upstream: &str, server: &str, up: bool) {
        entry(&mut self.lock().health, upstream, server).up = up;
    }

    /// The health checker flipped a server; counts a transition.
    pub fn health_transition(&self, upstream: &str, server: &str, up: bool) {
        let mut g = self.lock();
        let h = entry(&mut g.health, upstream, server);
        h.up = up;
        if up {
            h.to_up += 1;
        } else {
            h.to_down += 1;
        }
    }

    /// Forget servers that are no longer configured.
    pub fn retain_servers(&self, keep: &dyn Fn(&str, &str) -> bool) {
        self.lock().health.retain(|(u, s), _| keep(u, s));
    }

    /// Set a VRRP instance's role and priority without counting a transition.
    pub fn set_vrrp(&self, instance: &str, role: State, priority: u8) {
        let mut g = self.lock();
        let v = vrrp_entry(&mut g.vrrp, instance);
        v.role = role;
        v.priority = priority;
    }

    /// Forget a VRRP instance a reload removed.
    pub fn remove_vrrp(&self, instance: &str) {
        self.lock().vrrp.remove(instance);
    }

    /// A VRRP instance changed role; counts a transition into `to`.
    pub fn vrrp_transition(&self, instance: &str, to: State) {
        let mut g = self.lock();
        let v = vrrp_entry(&mut g.vrrp, instance);
        v.role = to;
        v.transitions[to.index()] += 1;
    }

    /// Effective priority changed (e.g. tracked upstream went down).
    pub fn set_vrrp_priority(&self, instance: &str, priority: u8) {
        vrrp_entry(&mut self.lock().vrrp, instance).priority = priority;
    }

    pub fn vrrp_advert_sent(&self, instance: &str) {
        vrrp_entry(&mut self.lock().vrrp, instance).adverts_sent += 1;
    }

    /// An advert from the current master was accepted; `gap` is the time
    /// since the previous one (None for the first).
    pub fn vrrp_advert_received(&self, instance: &str, gap: Option<Duration>) {
        let mut g = self.lock();
        let v = vrrp_entry(&mut g.vrrp, instance);
        v.adverts_received += 1;
        if let Some(gap) = gap {
            v.advert_gap
                .record(u64::try_from(gap.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// A VRRP packet was dropped; `reason` is a short static label such as
    /// `"bad_checksum"`, `"ttl"`, `"auth"`, `"vrid_unknown"`.
    pub fn vrrp_drop(&self, reason: &str) {
        let mut g = self.lock();
        if let Some(c) = g.vrrp_drops.get_mut(reason) {
            *c += 1;
        } else {
            g.vrrp_drops.insert(reason.to_string(), 1);
        }
    }
}
