//! Metrics: per-shard counters and latency histograms, merged on demand by the
//! control side and exposed as Prometheus text and JSON.
//!
//! # Why it is built this way
//!
//! The data plane is thread-per-core and must never wait for another thread,
//! so nothing on the request path takes a lock or performs a contended atomic
//! read-modify-write:
//!
//! - **Counters** are per-shard `AtomicU64`s with exactly one writer (the
//!   owning shard's [`ShardRecorder`]). The writer does a `Relaxed` load and a
//!   `Relaxed` store — a plain `mov` on x86, no `lock` prefix — and readers
//!   (the admin thread) do `Relaxed` loads. Because there is one writer no
//!   increment is ever lost, so counter reads are **exact and live**.
//! - **Histograms** (HdrHistogram, 1 µs .. 60 s, 3 significant digits) are far
//!   too big to update atomically, so every shard records into its *own*
//!   local delta histograms and, every [`PUBLISH_INTERVAL`] (and when it goes
//!   idle), calls [`ShardRecorder::publish`], which folds the deltas into the
//!   shard's published copy inside its [`ShardSlot`]. That slot's mutex is
//!   touched only by that shard's `publish` and by the reader — never per
//!   request — and `publish` uses `try_lock`: if a reader holds it, the shard
//!   keeps its deltas and tries again next tick. A shard therefore never
//!   blocks. **Lag:** histogram counts may trail the live counters by up to
//!   one publish interval (two if a publish collided with a read).
//! - **Labels** are strings (listen address; upstream name + server address)
//!   but the hot path only sees indexes into a [`Layout`]. A config reload
//!   hands the shard a new layout; the old counters are folded, by key, into
//!   the slot's *retired* totals under the slot lock, so per-server numbers
//!   stay continuous across reloads and nothing is counted twice.
//! - **Control-side** numbers (health and VRRP transitions, dropped VRRP
//!   packets, advert gaps, roles, priorities, config generation) are written
//!   only by the control thread into [`ControlStats`] (a plain mutex: it is
//!   touched a few hundred times a second at most).
//! - **Reset** (`ringlb stats --reset`) never touches a shard: the registry
//!   stores a baseline [`MergedStats`] and [`Registry::snapshot`] subtracts it.
//!   Everything the shards publish only ever grows, so the subtraction is
//!   exact. Gauges (active connections, health, roles) are not subtracted.
//!   `/metrics` always reports since-boot values ([`Registry::snapshot_raw`])
//!   because Prometheus expects monotonic counters; `/stats` reports the window.
//!
//! Counter blocks are 128-byte aligned so two shards never share a cache line.
//!
//! # Use
//!
//! ```
//! use std::sync::Arc;
//! use ringlb::metrics::{ConnState, Layout, Registry};
//!
//! let reg = Registry::new(1); // at boot, with the shard count
//! let layout = Arc::new(Layout {
//!     listeners: vec!["0.0.0.0:80".into()],
//!     servers: vec![("app".into(), "10.0.0.1:80".into())],
//! });
//! let mut rec = reg.recorder(0, layout, 1); // move it into shard 0
//! rec.on_accept();
//! rec.on_handled();
//! rec.conn_transition(ConnState::Reading, ConnState::Writing);
//! rec.on_request_done(0, Some(0), 200, 850, Some(600), 78, 1024);
//! rec.conn_transition(ConnState::Writing, ConnState::Waiting);
//! rec.publish(); // every PUBLISH_INTERVAL while busy, and when idle
//!
//! let m = reg.snapshot(); // admin thread
//! assert_eq!(m.conn.requests, 1);
//! assert_eq!(m.listeners["0.0.0.0:80"].latency.count(), 1);
//! assert_eq!(m.conn.waiting, 1);
//! ```
//!
//! Memory: a local delta histogram is ~70 KB (u32 counts), a published or
//! merged one ~140 KB (u64 counts); published histograms are allocated on the
//! first sample only.

mod control_stats;
mod hist;
mod json;
mod merged;
mod prometheus;
mod shard;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use control_stats::{ControlSnapshot, ControlStats, ServerHealth, VrrpStats};
pub use hist::{
    percentile_distribution, LatencyHist, Percentiles, HIGHEST_US, LOWEST_US, PERCENTILE_POINTS,
    SIGFIG,
};
pub use json::JsonOptions;
pub use merged::{ConnStats, ListenerStats, MergedStats, ServerStats};
pub use prometheus::PROM_BUCKETS_SECONDS;
pub use shard::{ConnState, ShardRecorder, ShardSlot};

/// How often a shard should call [`ShardRecorder::publish`] while busy.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Response status classes, in the order of every `status` array here.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Index into [`STATUS_CLASSES`]: 100..=599 by hundreds, anything else
/// (including 0 = "no response was sent") is "other".
#[inline]
pub fn status_class(status: u16) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => 5,
    }
}

/// Why a try against an upstream server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// TCP connect failed or timed out.
    Connect,
    /// The connection was reset or closed early.
    Reset,
    /// Read/write timeout after the connection was up.
    Timeout,
    /// The upstream sent an invalid response.
    Malformed,
    /// A local resource shortage (no descriptor, no free port, no buffer):
    /// the proxy's failure, not the server's (never counts to `max_fails`).
    Local,
    /// A pooled connection found expired, closed by the server, or holding
    /// unread bytes, and dropped before use (not a failed request).
    Discarded,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Connect,
        FailureKind::Reset,
        FailureKind::Timeout,
        FailureKind::Malformed,
        FailureKind::Local,
        FailureKind::Discarded,
    ];

    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Malformed => "malformed",
            FailureKind::Local => "local",
            FailureKind::Discarded => "discarded",
        }
    }
}

/// The label set a shard records against: listeners by listen address,
/// servers by (upstream name, server address). Hot-path calls use indexes
/// into these vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub listeners: Vec<String>,
    pub servers: Vec<(String, String)>,
}

struct Window {
    start: Instant,
    baseline: Option<MergedStats>,
}

/// All metrics of one process. Create once at boot (`Arc<Registry>`), give
/// each shard its [`ShardRecorder`], give the control thread
/// [`Registry::control`], and let the admin server call
/// [`Registry::snapshot`].
pub struct Registry {
    slots: Box<[Arc<ShardSlot>]>,
    control: ControlStats,
    boot: Instant,
    window: Mutex<Window>,
}

impl Registry {
    /// A registry for `shards` data-plane shards.
    pub fn new(shards: usize) -> Arc<Registry> {
        let now = Instant::now();
        Arc::new(Registry {
            slots: (0..shards).map(|_| Arc::new(ShardSlot::new())).collect(),
            control: ControlStats::default(),
            boot: now,
            window: Mutex::new(Window {
                start: now,
                baseline: None,
            }),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.slots.len()
    }

    /// The recorder for shard `shard`, set to `layout` at config `generation`.
    ///
    /// Panics if `shard` is out of range or that shard's recorder is still
    /// alive (one writer per slot is what makes the counters exact). A
    /// dropped recorder releases the slot; a new one continues its counters.
    pub fn recorder(&self, shard: usize, layout: Arc<Layout>, generation: u64) -> ShardRecorder {
        assert!(
            shard < self.slots.len(),
            "metrics: shard {shard} out of range (registry has {})",
            self.slots.len()
        );
        ShardRecorder::attach(self.slots[shard].clone(), shard, layout, generation)
    }

    /// The control thread's part of the registry.
    pub fn control(&self) -> &ControlStats {
        &self.control
    }

    /// Everything since boot (ignores [`Registry::reset`]).
    pub fn snapshot_raw(&self) -> MergedStats {
        let now = Instant::now();
        let mut m = MergedStats::empty(self.slots.len());
        for slot in self.slots.iter() {
            slot.merge_into(&mut m);
        }
        m.control = self.control.snapshot();
        m.uptime = now.saturating_duration_since(self.boot);
        m.window = m.uptime;
        m
    }

    /// Everything since the last [`Registry::reset`] (or boot).
    pub fn snapshot(&self) -> MergedStats {
        let raw = self.snapshot_raw();
        let w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let mut m = match &w.baseline {
            Some(base) => raw.delta_since(base),
            None => raw,
        };
        m.window = Instant::now().saturating_duration_since(w.start);
        m
    }

    /// Start a fresh window for [`Registry::snapshot`]. Shards are not touched.
    pub fn reset(&self) {
        let raw = self.snapshot_raw();
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        w.baseline = Some(raw);
        w.start = Instant::now();
    }
}

#[cfg(test)]
mod tests;
