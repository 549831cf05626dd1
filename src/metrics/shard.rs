//! The per-shard half: single-writer counters, local delta histograms, and
//! the slot they are published into.
//!
//! A [`ShardRecorder`] is the only writer of its [`ShardSlot`]'s counters, so
//! an increment is a `Relaxed` load plus a `Relaxed` store (no `lock` prefix,
//! no cache-line ping-pong) and still never loses a count. Histograms are
//! recorded locally and folded into the slot by [`ShardRecorder::publish`],
//! which uses `try_lock` so the shard never waits for a reader.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use super::hist::{DeltaHist, LatencyHist};
use super::merged::{ListenerStats, MergedStats, ServerStats};
use super::{status_class, FailureKind, Layout};

/// A counter with exactly one writing thread.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    fn add(&self, n: u64) {
        // Single writer: load+store is exact and avoids a locked RMW.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Connection state, as in nginx's stub_status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Reading a request head/body from the client.
    Reading,
    /// Request in flight: talking to the upstream or writing the response.
    Writing,
    /// Idle keep-alive connection waiting for the next request.
    Waiting,
}

/// Aligned to 128 bytes (two cache lines, for the adjacent-line prefetcher)
/// so no other shard's data ever shares a line with these counters.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct ConnCounters {
    pub(crate) accepted: Counter,
    pub(crate) handled: Counter,
    pub(crate) requests: Counter,
    // Gauges: per shard never negative when calls are balanced; stored as
    // wrapping u64 and summed as i64.
    pub(crate) active: Counter,
    pub(crate) reading: Counter,
    pub(crate) writing: Counter,
    pub(crate) waiting: Counter,
    /// Receive buffers held by connections, and buffers parked in the
    /// shard's pools (set by the shard's tick).
    pub(crate) buffers_in_use: Counter,
    pub(crate) buffers_pooled: Counter,
    /// Idle connections parked outside any task (`data::idle`).
    pub(crate) parked: Counter,
    // TLS listeners: handshakes completed (of which resumed), their summed
    // duration, and failed handshakes by [`crate::tls::Failure`] index.
    pub(crate) tls_handshakes: Counter,
    pub(crate) tls_resumed: Counter,
    pub(crate) tls_handshake_us: Counter,
    pub(crate) tls_failures: [Counter; crate::tls::Failure::ALL.len()],
    // `proxy_protocol` listeners: headers read, and connections closed
    // for a missing or bad header by [`crate::proto::proxy_protocol::Error`] index.
    pub(crate) pp_headers: Counter,
    pub(crate) pp_errors: [Counter; crate::proto::proxy_protocol::Error::ALL.len()],
    // TLS to upstream servers: handshakes (resumed ones too) and failures
    // (timeouts too).
    pub(crate) up_tls_handshakes: Counter,
    pub(crate) up_tls_resumed: Counter,
    pub(crate) up_tls_failures: Counter,
    pub(crate) up_tls_timeouts: Counter,
}

impl ConnCounters {
    #[inline]
    fn gauge(&self, s: ConnState) -> &Counter {
        match s {
            ConnState::Reading => &self.reading,
            ConnState::Writing => &self.writing,
            ConnState::Waiting => &self.waiting,
        }
    }
}

/// What listeners and servers both count for every request.
#[derive(Default)]
struct RequestCounters {
    requests: Counter,
    status: [Counter; 6],
    bytes_in: Counter,
    bytes_out: Counter,
}

impl RequestCounters {
    #[inline]
    fn count(&self, class: usize, bytes_in: u64, bytes_out: u64) {
        self.requests.add(1);
        self.status[class].add(1);
        self.bytes_in.add(bytes_in);
        self.bytes_out.add(bytes_out);
    }

    /// Reads them into a stats row's fields.
    fn read(
        &self,
        requests: &mut u64,
        status: &mut [u64; 6],
        bytes_in: &mut u64,
        bytes_out: &mut u64,
    ) {
        *requests = self.requests.get();
        *bytes_in = self.bytes_in.get();
        *bytes_out = self.bytes_out.get();
        for (d, c) in status.iter_mut().zip(self.status.iter()) {
            *d = c.get();
        }
    }
}

#[derive(Default)]
#[repr(align(128))]
pub(crate) struct ListenerCounters {
    req: RequestCounters,
}

#[derive(Default)]
#[repr(align(128))]
pub(crate) struct ServerCounters {
    req: RequestCounters,
    failures: [Counter; FailureKind::ALL.len()],
    retries: Counter,
    connects: Counter,
}

/// Counters for one layout; shared (Arc) by the recorder (writes) and the
/// slot (reads).
pub(crate) struct CounterBlock {
    listeners: Box<[ListenerCounters]>,
    servers: Box<[ServerCounters]>,
}

impl CounterBlock {
    fn new(layout: &Layout) -> Self {
        CounterBlock {
            listeners: layout
                .listeners
                .iter()
                .map(|_| ListenerCounters::default())
                .collect(),
            servers: layout
                .servers
                .iter()
                .map(|_| ServerCounters::default())
                .collect(),
        }
    }
}

#[derive(Default)]
struct ListenerPub {
    total: Option<LatencyHist>,
    upstream: Option<LatencyHist>,
}

#[derive(Default)]
struct ServerPub {
    total: Option<LatencyHist>,
    upstream: Option<LatencyHist>,
    connect: Option<LatencyHist>,
}

fn add_opt(dst: &mut LatencyHist, src: &Option<LatencyHist>) {
    if let Some(h) = src {
        dst.add(h);
    }
}

/// What the slot mutex protects: the current layout's counters and
/// published histograms, plus totals retired by earlier layouts.
struct SlotState {
    layout: Arc<Layout>,
    generation: u64,
    block: Arc<CounterBlock>,
    listeners: Vec<ListenerPub>,
    servers: Vec<ServerPub>,
    retired_listeners: BTreeMap<String, ListenerStats>,
    retired_servers: BTreeMap<(String, String), ServerStats>,
    /// TLS listener handshake times (not tied to a layout).
    tls_handshake: Option<LatencyHist>,
}

impl SlotState {
    fn listener_stats(&self, i: usize) -> ListenerStats {
        let c = &self.block.listeners[i];
        let p = &self.listeners[i];
        let mut s = ListenerStats::default();
        c.req.read(
            &mut s.requests,
            &mut s.status,
            &mut s.bytes_in,
            &mut s.bytes_out,
        );
        add_opt(&mut s.latency, &p.total);
        add_opt(&mut s.upstream_latency, &p.upstream);
        s
    }

    fn server_stats(&self, i: usize) -> ServerStats {
        let c = &self.block.servers[i];
        let p = &self.servers[i];
        let mut s = ServerStats {
            retries: c.retries.get(),
            connects: c.connects.get(),
            ..ServerStats::default()
        };
        c.req.read(
            &mut s.requests,
            &mut s.status,
            &mut s.bytes_in,
            &mut s.bytes_out,
        );
        for (d, c) in s.failures.iter_mut().zip(c.failures.iter()) {
            *d = c.get();
        }
        add_opt(&mut s.latency, &p.total);
        add_opt(&mut s.upstream_latency, &p.upstream);
        add_opt(&mut s.connect_time, &p.connect);
        s
    }

    /// Fold the current layout's numbers into the retired maps and start
    /// `layout` from zero. Called under the lock, after a final drain.
    fn switch_layout(&mut self, layout: Arc<Layout>) {
        for (i, name) in self.layout.listeners.iter().enumerate() {
            let s = self.listener_stats(i);
            self.retired_listeners
                .entry(name.clone())
                .or_default()
                .add(&s);
        }
        for (i, key) in self.layout.servers.iter().enumerate() {
            let s = self.server_stats(i);
            self.retired_servers.entry(key.clone()).or_default().add(&s);
        }
        self.block = Arc::new(CounterBlock::new(&layout));
        self.listeners = layout
            .listeners
            .iter()
            .map(|_| ListenerPub::default())
            .collect();
        self.servers = layout
            .servers
            .iter()
            .map(|_| ServerPub::default())
            .collect();
        self.layout = layout;
    }
}

/// One shard's published metrics. Created by the registry; written by that
/// shard's [`ShardRecorder`], read by [`super::Registry::snapshot`].
pub struct ShardSlot {
    conn: ConnCounters,
    attached: AtomicBool,
    state: Mutex<SlotState>,
}

impl ShardSlot {
    pub(crate) fn new() -> Self {
        let layout = Arc::new(Layout::default());
        ShardSlot {
            conn: ConnCounters::default(),
            attached: AtomicBool::new(false),
            state: Mutex::new(SlotState {
                block: Arc::new(CounterBlock::new(&layout)),
                layout,
                generation: 0,
                listeners: Vec::new(),
                servers: Vec::new(),
                retired_listeners: BTreeMap::new(),
                retired_servers: BTreeMap::new(),
                tls_handshake: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hold the slot lock (tests: simulate a reader mid-merge).
    #[cfg(test)]
    pub(crate) fn hold_lock(&self) -> impl Drop + '_ {
        self.lock()
    }

    /// Add this slot's numbers into `m` (keyed by label strings).
    pub(crate) fn merge_into(&self, m: &mut MergedStats) {
        let c = &self.conn;
        m.conn.accepted += c.accepted.get();
        m.conn.handled += c.handled.get();
        m.conn.requests += c.requests.get();
        m.conn.active += c.active.get() as i64;
        m.conn.reading += c.reading.get() as i64;
        m.conn.writing += c.writing.get() as i64;
        m.conn.waiting += c.waiting.get() as i64;
        m.conn.buffers_in_use += c.buffers_in_use.get();
        m.conn.buffers_pooled += c.buffers_pooled.get();
        m.conn.parked += c.parked.get();
        m.tls.handshakes += c.tls_handshakes.get();
        m.tls.resumed += c.tls_resumed.get();
        m.tls.handshake_us += c.tls_handshake_us.get();
        m.tls.upstream_handshakes += c.up_tls_handshakes.get();
        m.tls.upstream_resumed += c.up_tls_resumed.get();
        m.tls.upstream_failures += c.up_tls_failures.get();
        m.tls.upstream_timeouts += c.up_tls_timeouts.get();
        for (dst, src) in m.tls.failures.iter_mut().zip(&c.tls_failures) {
            *dst += src.get();
        }
        m.proxy_protocol.headers += c.pp_headers.get();
        for (dst, src) in m.proxy_protocol.errors.iter_mut().zip(&c.pp_errors) {
            *dst += src.get();
        }

        let st = self.lock();
        add_opt(&mut m.tls_handshake_time, &st.tls_handshake);
        m.shard_generations.push(st.generation);
        for (name, s) in &st.retired_listeners {
            m.listeners.entry(name.clone()).or_default().add(s);
        }
        for (key, s) in &st.retired_servers {
            m.servers.entry(key.clone()).or_default().add(s);
        }
        for (i, name) in st.layout.listeners.iter().enumerate() {
            let s = st.listener_stats(i);
            let e = m.listeners.entry(name.clone()).or_default();
            e.add(&s);
            e.in_layout = true;
        }
        for (i, key) in st.layout.servers.iter().enumerate() {
            let s = st.server_stats(i);
            let e = m.servers.entry(key.clone()).or_default();
            e.add(&s);
            e.in_layout = true;
        }
    }
}

/// Request latencies since the last publication, per listener or server.
struct ListenerDeltas {
    total: DeltaHist,
    upstream: DeltaHist,
}

impl ListenerDeltas {
    fn new() -> Self {
        ListenerDeltas {
            total: DeltaHist::new(),
            upstream: DeltaHist::new(),
        }
    }

    #[inline]
    fn record(&mut self, total_us: u64, upstream_us: Option<u64>) {
        self.total.record(total_us);
        if let Some(u) = upstream_us {
            self.upstream.record(u);
        }
    }
}

struct ServerDeltas {
    req: ListenerDeltas,
    connect: DeltaHist,
}

fn deltas_for(layout: &Layout) -> (Box<[ListenerDeltas]>, Box<[ServerDeltas]>) {
    (
        layout
            .listeners
            .iter()
            .map(|_| ListenerDeltas::new())
            .collect(),
        layout
            .servers
            .iter()
            .map(|_| ServerDeltas {
                req: ListenerDeltas::new(),
                connect: DeltaHist::new(),
            })
            .collect(),
    )
}

fn drain(d: &mut DeltaHist, dst: &mut Option<LatencyHist>) {
    if !d.is_empty() {
        d.drain_into(dst.get_or_insert_with(LatencyHist::new));
    }
}

/// The shard's handle: the only writer of one [`ShardSlot`].
///
/// Hot-path methods take indexes into the current [`Layout`]; an index out
/// of range is ignored (and asserts in debug builds). They never allocate,
/// hash or lock. `Send` so it can be built before the shard thread starts.
pub struct ShardRecorder {
    slot: Arc<ShardSlot>,
    shard: usize,
    block: Arc<CounterBlock>,
    layout: Arc<Layout>,
    generation: u64,
    l_deltas: Box<[ListenerDeltas]>,
    s_deltas: Box<[ServerDeltas]>,
    pending: bool,
    /// Latency histograms on (counters are always on).
    histograms: bool,
    /// TLS listener handshake times (per shard, published with the rest).
    tls_handshake: DeltaHist,
}

impl ShardRecorder {
    pub(crate) fn attach(
        slot: Arc<ShardSlot>,
        shard: usize,
        layout: Arc<Layout>,
        generation: u64,
    ) -> Self {
        assert!(
            !slot.attached.swap(true, Relaxed),
            "metrics: shard {shard} already has a live recorder"
        );
        let block = slot.lock().block.clone();
        let mut r = ShardRecorder {
            slot,
            shard,
            block,
            layout: Arc::new(Layout::default()),
            generation: 0,
            l_deltas: Box::new([]),
            s_deltas: Box::new([]),
            pending: false,
            histograms: true,
            tls_handshake: DeltaHist::new(),
        };
        // Adopt the slot's current layout first so a re-attach with the
        // same layout continues the same counters.
        r.layout = r.slot.lock().layout.clone();
        let (l, s) = deltas_for(&r.layout);
        r.l_deltas = l;
        r.s_deltas = s;
        r.set_layout(layout, generation);
        r
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Switch to a new label layout after a config reload (not a hot path:
    /// allocates and takes the slot lock). Samples recorded so far stay with
    /// their old labels; a label present in both layouts continues.
    pub fn set_layout(&mut self, layout: Arc<Layout>, generation: u64) {
        let slot = self.slot.clone();
        let mut st = slot.lock();
        self.drain_locked(&mut st);
        st.generation = generation;
        self.generation = generation;
        if *st.layout == *layout {
            return;
        }
        st.switch_layout(layout.clone());
        self.block = st.block.clone();
        drop(st);
        let (l, s) = deltas_for(&layout);
        self.l_deltas = l;
        self.s_deltas = s;
        self.layout = layout;
    }

    // ---- connections (nginx stub_status) ----

    /// A connection was accepted.
    #[inline]
    pub fn on_accept(&mut self) {
        self.slot.conn.accepted.add(1);
    }

    /// A TLS handshake completed in `us` microseconds.
    #[inline]
    pub fn on_tls_handshake(&mut self, resumed: bool, us: u64) {
        let c = &self.slot.conn;
        c.tls_handshakes.add(1);
        c.tls_handshake_us.add(us);
        if resumed {
            c.tls_resumed.add(1);
        }
        if self.histograms {
            self.tls_handshake.record(us);
            self.pending = true;
        }
    }

    /// A TLS handshake with an upstream server completed.
    #[inline]
    pub fn on_upstream_tls_handshake(&mut self, resumed: bool) {
        let c = &self.slot.conn;
        c.up_tls_handshakes.add(1);
        if resumed {
            c.up_tls_resumed.add(1);
        }
    }

    /// A TLS handshake with an upstream server failed; `timed_out`: it was
    /// still unfinished when `connect_timeout` ran out.
    pub fn on_upstream_tls_failure(&mut self, timed_out: bool) {
        let c = &self.slot.conn;
        c.up_tls_failures.add(1);
        if timed_out {
            c.up_tls_timeouts.add(1);
        }
    }

    /// A client TLS handshake failed, counted by reason.
    pub fn on_tls_failure(&mut self, why: crate::tls::Failure) {
        self.slot.conn.tls_failures[why.index()].add(1);
    }

    /// A PROXY header was read (`Ok`), or its absence or fault closed the
    /// connection.
    #[inline]
    pub fn on_proxy_protocol(&mut self, r: Result<(), crate::proto::proxy_protocol::Error>) {
        let c = &self.slot.conn;
        match r {
            Ok(()) => c.pp_headers.add(1),
            Err(e) => c.pp_errors[e.index()].add(1),
        }
    }

    /// An accepted connection is being served (not dropped for limits). It
    /// becomes active in the `Reading` state.
    #[inline]
    pub fn on_handled(&mut self) {
        let c = &self.slot.conn;
        c.handled.add(1);
        c.active.add(1);
        c.reading.add(1);
    }

    /// A handled connection moved from one state to another.
    #[inline]
    pub fn conn_transition(&mut self, from: ConnState, to: ConnState) {
        if from != to {
            let c = &self.slot.conn;
            c.gauge(from).sub(1);
            c.gauge(to).add(1);
        }
    }

    /// The shard's buffer figures (`data::buf::in_use`, `pooled`); called
    /// by its tick, not per request.
    pub fn set_buffers(&mut self, in_use: usize, pooled: usize) {
        let c = &self.slot.conn;
        c.buffers_in_use.0.store(in_use as u64, Relaxed);
        c.buffers_pooled.0.store(pooled as u64, Relaxed);
    }

    /// Idle connections parked outside any task; called by the tick.
    pub fn set_parked(&mut self, parked: usize) {
        self.slot.conn.parked.0.store(parked as u64, Relaxed);
    }

    /// A handled connection closed while in `state`.
    #[inline]
    pub fn on_close(&mut self, state: ConnState) {
        let c = &self.slot.conn;
        c.active.sub(1);
        c.gauge(state).sub(1);
    }

    // ---- requests ----

    /// A request finished (response fully written, or given up).
    /// `status` 0 means no response was sent. `server` is the server that
    /// produced the response, if any. `total_us` runs from the first request
    /// byte to the last response byte; `upstream_us` from sending the request
    /// to receiving the response head. `bytes_in`/`bytes_out` are the bytes
    /// read from / written to the client for this request.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn on_request_done(
        &mut self,
        listener: usize,
        server: Option<usize>,
        status: u16,
        total_us: u64,
        upstream_us: Option<u64>,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let class = status_class(status);
        self.slot.conn.requests.add(1);
        self.pending = true;
        debug_assert!(listener < self.block.listeners.len(), "listener index");
        if let (Some(c), Some(d)) = (
            self.block.listeners.get(listener),
            self.l_deltas.get_mut(listener),
        ) {
            c.req.count(class, bytes_in, bytes_out);
            if self.histograms {
                d.record(total_us, upstream_us);
            }
        }
        if let Some(si) = server {
            debug_assert!(si < self.block.servers.len(), "server index");
            if let (Some(c), Some(d)) = (self.block.servers.get(si), self.s_deltas.get_mut(si)) {
                c.req.count(class, bytes_in, bytes_out);
                if self.histograms {
                    d.req.record(total_us, upstream_us);
                }
            }
        }
    }

    /// Turns latency histograms on or off (counters stay on).
    pub fn set_histograms(&mut self, on: bool) {
        self.histograms = on;
    }

    /// A new upstream connection to `server` was established in `us`.
    #[inline]
    pub fn on_connect_time(&mut self, server: usize, us: u64) {
        debug_assert!(server < self.block.servers.len(), "server index");
        if let (Some(c), Some(d)) = (
            self.block.servers.get(server),
            self.s_deltas.get_mut(server),
        ) {
            c.connects.add(1);
            d.connect.record(us);
            self.pending = true;
        }
    }

    /// A try against `server` failed.
    #[inline]
    pub fn on_upstream_failure(&mut self, server: usize, kind: FailureKind) {
        debug_assert!(server < self.block.servers.len(), "server index");
        if let Some(c) = self.block.servers.get(server) {
            c.failures[kind.index()].add(1);
        }
    }

    /// A request is being retried after a failure on `server`.
    #[inline]
    pub fn on_retry(&mut self, server: usize) {
        debug_assert!(server < self.block.servers.len(), "server index");
        if let Some(c) = self.block.servers.get(server) {
            c.retries.add(1);
        }
    }

    // ---- publishing ----

    /// True if there are histogram samples not yet published.
    pub fn has_pending(&self) -> bool {
        self.pending
    }

    /// Fold local histogram deltas into the slot. Never blocks: returns
    /// `false` (keeping the deltas) if a reader holds the slot right now;
    /// call again on the next tick. Call every [`super::PUBLISH_INTERVAL`]
    /// while busy and once when going idle.
    pub fn publish(&mut self) -> bool {
        if !self.pending {
            return true;
        }
        let slot = self.slot.clone();
        let mut st = match slot.state.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        self.drain_locked(&mut st);
        true
    }

    /// Like [`ShardRecorder::publish`] but waits for the lock (shutdown,
    /// tests, reload).
    pub fn publish_blocking(&mut self) {
        let slot = self.slot.clone();
        let mut st = slot.lock();
        self.drain_locked(&mut st);
    }

    fn drain_locked(&mut self, st: &mut SlotState) {
        if !self.pending {
            return;
        }
        for (d, p) in self.l_deltas.iter_mut().zip(st.listeners.iter_mut()) {
            drain(&mut d.total, &mut p.total);
            drain(&mut d.upstream, &mut p.upstream);
        }
        for (d, p) in self.s_deltas.iter_mut().zip(st.servers.iter_mut()) {
            drain(&mut d.req.total, &mut p.total);
            drain(&mut d.req.upstream, &mut p.upstream);
            drain(&mut d.connect, &mut p.connect);
        }
        drain(&mut self.tls_handshake, &mut st.tls_handshake);
        self.pending = false;
    }
}

impl Drop for ShardRecorder {
    fn drop(&mut self) {
        self.publish_blocking();
        self.slot.attached.store(false, Relaxed);
    }
}
