//! The merged, read-side view of all shards plus the control thread.
//!
//! Built on demand by [`super::Registry::snapshot`]; plain owned values, so
//! rendering (JSON, Prometheus, the CLI) never holds any lock. Labels are the
//! keys of ordered maps, so output order is stable.

use std::collections::BTreeMap;
use std::time::Duration;

use super::control_stats::ControlSnapshot;
use super::hist::LatencyHist;
use super::FailureKind;

/// nginx stub_status-style connection numbers, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub accepted: u64,
    pub handled: u64,
    /// Completed requests (all listeners).
    pub requests: u64,
    /// Gauges (not affected by reset).
    pub active: i64,
    pub reading: i64,
    pub writing: i64,
    pub waiting: i64,
    /// Receive buffers held by connections (an idle one holds none) and
    /// buffers parked in the shards' pools.
    pub buffers_in_use: u64,
    pub buffers_pooled: u64,
    /// Idle connections parked outside any task (a subset of `waiting`).
    pub parked: u64,
}

/// TLS listeners, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// Handshakes completed, of which `resumed` were resumptions.
    pub handshakes: u64,
    pub resumed: u64,
    /// Summed handshake time (accept to handshake done), microseconds.
    pub handshake_us: u64,
    /// Failed handshakes by [`crate::tls::Failure::ALL`] index.
    pub failures: [u64; crate::tls::Failure::ALL.len()],
    /// TLS to upstream servers: handshakes, of which resumed; failures, of
    /// which timeouts (unfinished within `connect_timeout`).
    pub upstream_handshakes: u64,
    pub upstream_resumed: u64,
    pub upstream_failures: u64,
    pub upstream_timeouts: u64,
}

impl TlsStats {
    fn minus(&self, b: &TlsStats) -> TlsStats {
        let mut out = *self;
        out.handshakes = self.handshakes.saturating_sub(b.handshakes);
        out.resumed = self.resumed.saturating_sub(b.resumed);
        out.handshake_us = self.handshake_us.saturating_sub(b.handshake_us);
        out.upstream_handshakes = self
            .upstream_handshakes
            .saturating_sub(b.upstream_handshakes);
        out.upstream_resumed = self.upstream_resumed.saturating_sub(b.upstream_resumed);
        out.upstream_failures = self.upstream_failures.saturating_sub(b.upstream_failures);
        out.upstream_timeouts = self.upstream_timeouts.saturating_sub(b.upstream_timeouts);
        for (o, x) in out.failures.iter_mut().zip(b.failures) {
            *o = o.saturating_sub(x);
        }
        out
    }
}

/// `proxy_protocol` listeners, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyProtocolStats {
    /// Headers read.
    pub headers: u64,
    /// Connections closed for a missing or bad header, by
    /// [`crate::proto::proxy_protocol::Error::ALL`] index.
    pub errors: [u64; crate::proto::proxy_protocol::Error::ALL.len()],
}

impl ProxyProtocolStats {
    fn minus(&self, b: &ProxyProtocolStats) -> ProxyProtocolStats {
        let mut out = *self;
        out.headers = self.headers.saturating_sub(b.headers);
        for (o, x) in out.errors.iter_mut().zip(b.errors) {
            *o = o.saturating_sub(x);
        }
        out
    }
}

/// Per-listener numbers (key: listen address).
#[derive(Debug, Clone, Default)]
pub struct ListenerStats {
    pub requests: u64,
    /// By [`super::STATUS_CLASSES`].
    pub status: [u64; 6],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// First request byte to last response byte.
    pub latency: LatencyHist,
    /// Request sent upstream to response head received.
    pub upstream_latency: LatencyHist,
    /// In at least one shard's current layout (false: only seen before a reload).
    pub in_layout: bool,
}

impl ListenerStats {
    pub fn add(&mut self, o: &ListenerStats) {
        self.requests += o.requests;
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.latency.add(&o.latency);
        self.upstream_latency.add(&o.upstream_latency);
        self.in_layout |= o.in_layout;
    }

    fn minus(&self, b: &ListenerStats) -> ListenerStats {
        ListenerStats {
            requests: self.requests.saturating_sub(b.requests),
            status: sub6(&self.status, &b.status),
            bytes_in: self.bytes_in.saturating_sub(b.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(b.bytes_out),
            latency: self.latency.minus(&b.latency),
            upstream_latency: self.upstream_latency.minus(&b.upstream_latency),
            in_layout: self.in_layout,
        }
    }
}

/// Per-upstream-server numbers (key: (upstream name, server address)).
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    pub requests: u64,
    /// By [`super::STATUS_CLASSES`].
    pub status: [u64; 6],
    /// By [`super::FailureKind::ALL`].
    pub failures: [u64; FailureKind::ALL.len()],
    pub retries: u64,
    /// New upstream connections established.
    pub connects: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: LatencyHist,
    pub upstream_latency: LatencyHist,
    pub connect_time: LatencyHist,
    pub in_layout: bool,
}

impl ServerStats {
    pub fn add(&mut self, o: &ServerStats) {
        self.requests += o.requests;
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += b;
        }
        for (a, b) in self.failures.iter_mut().zip(o.failures.iter()) {
            *a += b;
        }
        self.retries += o.retries;
        self.connects += o.connects;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.latency.add(&o.latency);
        self.upstream_latency.add(&o.upstream_latency);
        self.connect_time.add(&o.connect_time);
        self.in_layout |= o.in_layout;
    }

    fn minus(&self, b: &ServerStats) -> ServerStats {
        let mut failures = [0; FailureKind::ALL.len()];
        for (i, f) in failures.iter_mut().enumerate() {
            *f = self.failures[i].saturating_sub(b.failures[i]);
        }
        ServerStats {
            requests: self.requests.saturating_sub(b.requests),
            status: sub6(&self.status, &b.status),
            failures,
            retries: self.retries.saturating_sub(b.retries),
            connects: self.connects.saturating_sub(b.connects),
            bytes_in: self.bytes_in.saturating_sub(b.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(b.bytes_out),
            latency: self.latency.minus(&b.latency),
            upstream_latency: self.upstream_latency.minus(&b.upstream_latency),
            connect_time: self.connect_time.minus(&b.connect_time),
            in_layout: self.in_layout,
        }
    }
}

fn sub6(a: &[u64; 6], b: &[u64; 6]) -> [u64; 6] {
    let mut o = [0; 6];
    for i in 0..6 {
        o[i] = a[i].saturating_sub(b[i]);
    }
    o
}

/// Everything, merged over shards, plus the control thread's view.
#[derive(Debug, Clone, Default)]
pub struct MergedStats {
    pub shards: usize,
    /// Config generation each shard's recorder last saw, by shard index.
    pub shard_generations: Vec<u64>,
    pub uptime: Duration,
    /// Length of the current stats window (since boot or the last reset).
    pub window: Duration,
    pub conn: ConnStats,
    pub tls: TlsStats,
    pub proxy_protocol: ProxyProtocolStats,
    /// TLS listener handshake times (accept to handshake done).
    pub tls_handshake_time: LatencyHist,
    pub listeners: BTreeMap<String, ListenerStats>,
    pub servers: BTreeMap<(String, String), ServerStats>,
    pub control: ControlSnapshot,
}

impl MergedStats {
    pub(crate) fn empty(shards: usize) -> Self {
        MergedStats {
            shards,
            shard_generations: Vec::with_capacity(shards),
            ..MergedStats::default()
        }
    }

    /// All listeners summed (what `ringlb stats` shows as the headline).
    pub fn totals(&self) -> ListenerStats {
        let mut t = ListenerStats::default();
        for s in self.listeners.values() {
            t.add(s);
        }
        t.in_layout = true;
        t
    }

    /// `self - base` for every counter and histogram; gauges, health, roles
    /// and generations are taken from `self`. Labels new since `base` are kept whole.
    pub fn delta_since(&self, base: &MergedStats) -> MergedStats {
        let mut out = self.clone();
        out.conn.accepted = self.conn.accepted.saturating_sub(base.conn.accepted);
        out.conn.handled = self.conn.handled.saturating_sub(base.conn.handled);
        out.conn.requests = self.conn.requests.saturating_sub(base.conn.requests);
        out.tls = self.tls.minus(&base.tls);
        out.proxy_protocol = self.proxy_protocol.minus(&base.proxy_protocol);
        out.tls_handshake_time = self.tls_handshake_time.minus(&base.tls_handshake_time);
        for (k, v) in out.listeners.iter_mut() {
            if let Some(b) = base.listeners.get(k) {
                *v = v.minus(b);
            }
        }
        for (k, v) in out.servers.iter_mut() {
            if let Some(b) = base.servers.get(k) {
                *v = v.minus(b);
            }
        }
        out.control = self.control.delta_since(&base.control);
        out
    }
}
