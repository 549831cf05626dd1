//! One shard: its listeners, its connections, its pools and its view of the
//! current snapshot.
//!
//! A shard is a single thread with its own monoio runtime. Everything here
//! is `!Send` (`Rc`, `Cell`, `RefCell`): no other thread ever touches it, so
//! nothing needs a lock. Everything that crosses the shard's boundary goes
//! through its [`link`](super::link): snapshots in (routing state, settings,
//! draining), listener changes and stop in, heartbeats, passive-health
//! failures and its exit out.
//!
//! Draining is snapshot state. The shard applies a draining snapshot on its
//! tick, in one step: it stops accepting, then marks itself draining, so no
//! connection is accepted only to be closed unanswered. From then on
//! [`Shard::draining`] is true: requests in flight are answered with
//! `Connection: close` and idle connections are shut every tick. The stop
//! on the link only adds "exit once empty, or at `shutdown_timeout`".
//!
//! A listener a reload removes is wound down the same way, for its own
//! connections only: on the tick that closes the listening socket, its idle
//! connections are shut and the others answer with `Connection: close`
//! and close (`deadline::listener_removed`, [`Shard::keep_alive_off`]).
//!
//! Winding down comes before draining on a VRRP master that is about to
//! hand its VIPs over: the shard keeps accepting, but answers every
//! request with `Connection: close` ([`Shard::keep_alive_off`]) and closes
//! connections that have waited [`deadline::WIND_DOWN_IDLE_MS`] for a next
//! request. Keep-alive clients thus reconnect while this node still holds
//! the address, instead of sending their next request on a connection the
//! new master would reset. Every tick it reports on the link how many
//! connections from before the wind-down are still open; the stop waits
//! for none (or a bound) before giving the VIPs away.
//!
//! Memory after a burst: idle connections hold no buffers (`buf.rs`), and
//! what closing connections free goes back to the allocator's arena of
//! this thread, which glibc does not return to the OS while other chunks
//! sit above it. So once a second the tick checks [`should_trim`]: after
//! many connections closed, `malloc_trim` hands the free pages back.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use monoio::net::TcpListener;

use super::access_log::AccessLog;
use super::buf;
use super::conn;
use super::deadline::Timer;
use super::link::{ListenerCmd, ShardEnd, ShardLink};
use super::multishot::{Accepted, MultishotAccept};
use super::pool::Pool;
use crate::lb::ShardState;
use crate::metrics::{Registry, ShardRecorder};
use crate::snapshot::{Snapshot, SnapshotReader};

/// How often a shard does its housekeeping (deadlines, stop flag, listener
/// changes, heartbeat). The heartbeat is what VRRP watches for a stalled
/// data plane, so this bounds how fast a stall is noticed.
pub const TICK: Duration = Duration::from_millis(10);

/// Trim the allocator when at least this many connections closed since the
/// last trim (the peak since then minus those open now), or this many
/// pooled buffers were freed by the last sweep.
const TRIM_AFTER_CLOSED: usize = 256;
const TRIM_AFTER_FREED: usize = 16;
/// Ticks in a row with no receive buffer in use after which the shard's
/// buffer pools are freed whole (200 ms: a burst of clients gone idle).
const QUIET_TICKS: u32 = 20;

/// Whether the tick should return freed memory to the OS: `peak` is the
/// most connections open since the last trim, `active` how many are open,
/// `freed` how many pooled buffers the last sweep freed.
pub fn should_trim(peak: usize, active: usize, freed: usize) -> bool {
    peak.saturating_sub(active) >= TRIM_AFTER_CLOSED || freed >= TRIM_AFTER_FREED
}

/// Returns the free pages of every malloc arena to the OS.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the arena
    // locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fault injection (feature `fault-injection`, test builds only): while set,
/// every shard thread blocks in its tick — a stalled data plane.
#[cfg(feature = "fault-injection")]
pub static FAULT_STALL: AtomicBool = AtomicBool::new(false);

/// The snapshot a shard routes with, plus this shard's selector state for
/// it. Requests hold an `Rc` to the view they started with, so a reload
/// never changes the rules under a request in flight; the in-flight counts
/// (`max_conns`, `least_conn`) of a server that stays (same upstream name
/// and address) carry over to the next view and are shared with it.
pub struct ShardView {
    pub snap: Arc<Snapshot>,
    pub lb: RefCell<Vec<ShardState>>,
}

impl ShardView {
    fn new(snap: Arc<Snapshot>, seed: u64, prev: Option<&ShardView>) -> ShardView {
        let prev_lb = prev.map(|p| p.lb.borrow());
        let lb = snap
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let seed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let old = prev.and_then(|p| {
                    let j = p
                        .snap
                        .upstreams
                        .iter()
                        .position(|o| o.config.name == u.config.name)?;
                    Some((j, &p.snap.upstreams[j]))
                });
                let (Some((j, o)), Some(prev_lb)) = (old, &prev_lb) else {
                    return ShardState::new(&u.selector, seed);
                };
                let addrs = |x: &crate::snapshot::UpstreamSnap| -> Vec<SocketAddr> {
                    x.servers.iter().map(|s| s.addr).collect()
                };
                let same = crate::lb::same_servers(&addrs(o), &addrs(u));
                ShardState::follow(&u.selector, seed, Some(&prev_lb[j]), |k| same[k])
            })
            .collect();
        drop(prev_lb);
        ShardView {
            snap,
            lb: RefCell::new(lb),
        }
    }
}

pub struct Shard {
    pub id: usize,
    reader: RefCell<SnapshotReader>,
    view: RefCell<Rc<ShardView>>,
    pub pool: RefCell<Pool>,
    /// This shard's end of the link to the control side.
    pub link: Arc<ShardLink>,
    /// Open client connections.
    active: Cell<usize>,
    /// Accept operations in flight (each may bring one more connection).
    accepts: Cell<usize>,
    /// Accept operations each listener keeps in flight (by driver).
    accepts_per_listener: usize,
    /// Multishot accepts on the shard's ring (`multishot.rs`), when the
    /// kernel has them; else accept loops on the runtime's ring.
    multishot: Option<Rc<MultishotAccept>>,
    /// When (shard clock, ms) an accept error was last logged.
    accept_warned: Cell<Option<u64>>,
    /// Most connections open since the allocator was last trimmed.
    peak: Cell<usize>,
    /// A draining snapshot has been applied (see the module docs).
    draining: Cell<bool>,
    /// A wind-down snapshot has been applied (see the module docs).
    wind_down: Cell<bool>,
    /// This shard's metrics; never borrowed across an `.await`.
    pub rec: RefCell<ShardRecorder>,
    /// Coarse milliseconds since the shard started, advanced every tick.
    pub clock: Rc<Cell<u64>>,
    /// Access log, when configured.
    pub access_log: Option<AccessLog>,
    /// Idle keep-alive connections waiting outside any task (`idle.rs`).
    pub parked: super::idle::ParkedSet,
}

impl Shard {
    /// The view of the current snapshot (one pointer compare when unchanged).
    #[inline]
    pub fn view(&self) -> Rc<ShardView> {
        let mut reader = self.reader.borrow_mut();
        let current = reader.load();
        let mut view = self.view.borrow_mut();
        if !Arc::ptr_eq(current, &view.snap) {
            *view = Rc::new(ShardView::new(
                Arc::clone(current),
                self.id as u64 + 1,
                Some(&view),
            ));
            self.rec
                .borrow_mut()
                .set_layout(Arc::clone(&current.layout), current.generation);
        }
        Rc::clone(&view)
    }

    /// A draining snapshot has been applied: nothing new is accepted, and
    /// a connection waiting for a next request is closed.
    #[inline]
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Whether the connection of `timer` answers with `Connection: close`
    /// and is kept no longer: the shard drains or winds down, or the
    /// connection's listener was removed by a reload
    /// ([`Timer::listener_gone`]).
    #[inline]
    pub fn keep_alive_off(&self, timer: &Timer) -> bool {
        self.draining.get() || self.wind_down.get() || timer.listener_gone()
    }

    /// Registers a client connection. Called by the accept loop before the
    /// connection's task is spawned, so the `max_connections` check of the
    /// next accept already counts it. Dropping the slot (the task's exit,
    /// a panic, or a task dropped before it ever ran) unregisters it.
    pub fn register(self: &Rc<Self>, fd: RawFd, listen: SocketAddr) -> Slot {
        self.active.set(self.active.get() + 1);
        self.peak.set(self.peak.get().max(self.active.get()));
        Slot {
            shard: Rc::clone(self),
            timer: Timer::register(Rc::clone(&self.clock), fd, Some(listen)),
        }
    }

    /// Fires every connection deadline that has passed.
    fn check_deadlines(&self, now_ms: u64) {
        if super::deadline::due(now_ms) {
            super::deadline::check_all(now_ms);
        }
    }

    fn unregister(&self, timer: &Timer) {
        timer.release();
        self.active.set(self.active.get() - 1);
    }

    /// Shuts the read side of every idle keep-alive connection so its pending
    /// read ends and the connection closes.
    fn close_idle(&self) {
        super::deadline::shut_idle();
    }
}

/// Runs a shard on the calling thread until it is told to stop and has
/// drained (or `shutdown_timeout` passed). `listeners` are keyed by their
/// configured address, which is how requests find their routes.
pub fn run(
    id: usize,
    end: ShardEnd,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    registry: Arc<Registry>,
    access_log: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut rt = crate::runtime::build()?;
    if id == 0 {
        crate::info!("shards use the {} driver", rt.driver_name());
    }
    let accepts_per_listener = accepts_in_flight(rt.is_uring());
    let ms = multishot_accept(id, rt.is_uring());
    let link = Arc::clone(&end.link);
    let parked = super::idle::ParkedSet::new()?;
    rt.block_on(async move {
        let first = end.snapshots.load_full();
        let mut rec = registry.recorder(id, Arc::clone(&first.layout), first.generation);
        rec.set_histograms(first.config.log.latency_histograms);
        let access_log =
            access_log.map(|tx| AccessLog::new(first.config.log.access_log_format, tx));
        let shard = Rc::new(Shard {
            access_log,
            rec: RefCell::new(rec),
            clock: Rc::new(Cell::new(0)),
            id,
            reader: RefCell::new(end.snapshots.reader()),
            view: RefCell::new(Rc::new(ShardView::new(first, id as u64 + 1, None))),
            pool: RefCell::new(Pool::default()),
            link: end.link,
            active: Cell::new(0),
            accepts: Cell::new(0),
            accepts_per_listener,
            multishot: ms,
            accept_warned: Cell::new(None),
            peak: Cell::new(0),
            draining: Cell::new(false),
            wind_down: Cell::new(false),
            parked,
        });
        monoio::spawn(super::idle::run(Rc::clone(&shard)));
        if let Some(ms) = &shard.multishot {
            monoio::spawn(multishot_loop(Rc::clone(&shard), Rc::clone(ms)));
        }
        let mut accepting = HashMap::new();
        for (addr, l) in listeners {
            start_listener(&shard, &mut accepting, addr, l);
        }
        housekeeping(&shard, accepting).await;
        // Parked connections hold their slots, which hold the shard.
        shard.parked.clear();
    });
    link.mark_exited();
    Ok(())
}

fn start_listener(
    shard: &Rc<Shard>,
    accepting: &mut HashMap<SocketAddr, Canceller>,
    addr: SocketAddr,
    l: std::net::TcpListener,
) {
    if let Some(ms) = &shard.multishot {
        ms.add(addr, l);
        return;
    }
    match TcpListener::from_std(l) {
        Ok(listener) => {
            let canceller = Canceller::new();
            let listener = Rc::new(listener);
            for nth in 0..shard.accepts_per_listener {
                monoio::spawn(accept_loop(
                    Rc::clone(shard),
                    Rc::clone(&listener),
                    addr,
                    canceller.handle(),
                    nth,
                ));
            }
            if let Some(old) = accepting.insert(addr, canceller) {
                old.cancel();
            }
        }
        Err(e) => crate::error!("shard {}: listener {addr}: {e}", shard.id),
    }
}

/// One registered client connection: its deadline timer, whose entry in
/// the shard's table also says whether it is idle (waiting for a next
/// request, so a graceful stop can close it).
pub struct Slot {
    shard: Rc<Shard>,
    pub timer: Timer,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shard.unregister(&self.timer);
    }
}

/// Accept operations each listener keeps in flight per shard.
///
/// With one in flight, a shard accepts one connection per turn of its
/// event loop, and under load a turn serves many ready connections: new
/// clients wait in the kernel's queue turn after turn while the shard has
/// time for everyone else. With several in flight, one turn takes as many
/// queued connections as there are, up to this many, in one submission.
/// Measured with `Connection: close` clients (64 at a time, one request
/// per connection): p99 0.99 → 0.65× nginx's, proxy CPU per request −7%,
/// req/s +6% (bench/RESULTS.md). An idle listener costs one armed poll per
/// operation, and the kernel wakes one of them per new connection.
const ACCEPTS_IN_FLIGHT: usize = 64;

/// Accept operations each listener keeps in flight per shard, by driver.
/// The epoll fallback keeps one: there an accept is a non-blocking
/// `accept(2)` after a readiness wake-up, and 64 waiting on one listener
/// cost 6% more CPU per `Connection: close` request than one did (18.7k vs
/// 20.3k req/s), with no p99 gain.
fn accepts_in_flight(uring: bool) -> usize {
    if uring {
        ACCEPTS_IN_FLIGHT
    } else {
        1
    }
}

/// Whether one more accept may go in flight: connections open plus those
/// accepts already in flight stay within `max_connections`, so the limit
/// holds exactly however many accepts are in flight.
fn may_accept(active: usize, in_flight: usize, max_connections: usize) -> bool {
    active + in_flight < max_connections
}

/// How often the `nth` accept loop of a listener looks again whether the
/// shard is below `max_connections`: the first soon, so a freed slot is
/// taken within a few milliseconds; the others seldom, so a shard held at
/// its limit is not woken thousands of times a second by the loops.
fn recheck_when_full(nth: usize) -> Duration {
    Duration::from_millis(if nth == 0 { 5 } else { 50 })
}

/// Whether an accept error at `now_ms` is logged, the last one having been
/// logged at `last_ms`: at most one line a second per shard.
fn log_accept_error(last_ms: Option<u64>, now_ms: u64) -> bool {
    last_ms.is_none_or(|last| now_ms.saturating_sub(last) >= 1000)
}

/// An accept failed (EMFILE/ENFILE/ENOBUFS): the listener stays and
/// pending clients wait in the backlog while connections close; it is
/// tried again after `backoff`. Every accept in flight meets the same
/// error, so one line a second per shard says it.
fn warn_accept_error(shard: &Shard, addr: SocketAddr, err: &std::io::Error, backoff: Duration) {
    let now = shard.clock.get();
    if log_accept_error(shard.accept_warned.get(), now) {
        shard.accept_warned.set(Some(now));
        crate::warn!("accept on {addr}: {err}; retrying in {backoff:?}");
    }
}

/// The pause after an accept error that follows one paused for `backoff`:
/// doubled, at most 500 ms.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(Duration::from_millis(500))
}

/// Counts one accept operation in flight for as long as it lives.
struct InFlight<'a>(&'a Cell<usize>);

impl<'a> InFlight<'a> {
    fn new(count: &'a Cell<usize>) -> Self {
        count.set(count.get() + 1);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Multishot accepts on the shard's ring, unless the driver is not
/// io_uring, `RINGLB_ACCEPT=loops` asks for the accept loops, or the kernel
/// has no multishot accept.
fn multishot_accept(id: usize, uring: bool) -> Option<Rc<MultishotAccept>> {
    if !uring || std::env::var("RINGLB_ACCEPT").as_deref() == Ok("loops") {
        if id == 0 && uring {
            crate::info!(
                "accepts: {ACCEPTS_IN_FLIGHT} in flight per listener (RINGLB_ACCEPT=loops)"
            );
        }
        return None;
    }
    match MultishotAccept::new() {
        Ok(ms) => {
            if id == 0 {
                crate::info!("accepts: one multishot accept per listener");
            }
            Some(Rc::new(ms))
        }
        Err(e) => {
            if id == 0 {
                crate::info!("accepts: {ACCEPTS_IN_FLIGHT} in flight per listener ({e})");
            }
            None
        }
    }
}

/// Serves what the multishot accepts take: waits until the runtime has
/// handed over completions, takes them, and serves new connections while
/// the shard is below `max_connections`. At the limit every accept is
/// cancelled (clients wait in the kernel's backlog) and the loop looks
/// again as often as the first accept loop would.
async fn multishot_loop(shard: Rc<Shard>, ms: Rc<MultishotAccept>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        if ms.paused() || !ms.pending.borrow().is_empty() {
            let _ = monoio::time::timeout(recheck_when_full(0), super::multishot::ready()).await;
        } else {
            super::multishot::ready().await;
        }
        for done in ms.completions() {
            match done {
                Accepted::Conn {
                    stream,
                    peer,
                    listen,
                } => ms.pending.borrow_mut().push_back((stream, peer, listen)),
                Accepted::Failed { listen, err } => {
                    warn_accept_error(&shard, listen, &err, backoff);
                    let ms = Rc::clone(&ms);
                    monoio::spawn(async move {
                        monoio::time::sleep(backoff).await;
                        ms.rearm(listen);
                    });
                    backoff = next_backoff(backoff);
                }
            }
        }
        if shard.draining() {
            // Accepted just before the listeners closed: closed unanswered,
            // as those still in the backlog are.
            ms.pending.borrow_mut().clear();
        }
        let max = shard.view().snap.config.http.max_connections;
        while may_accept(shard.active.get(), 0, max) {
            let Some((stream, peer, listen)) = ms.pending.borrow_mut().pop_front() else {
                break;
            };
            match monoio::net::TcpStream::from_std(stream) {
                Ok(stream) => {
                    backoff = Duration::from_millis(5);
                    serve_accepted(&shard, stream, peer, listen);
                }
                Err(e) => crate::warn!("connection from {peer}: {e}"),
            }
        }
        if !may_accept(shard.active.get(), 0, max) {
            ms.pause();
        } else if ms.paused() && ms.pending.borrow().is_empty() {
            ms.resume();
        }
    }
}

/// Registers an accepted connection and spawns its task.
fn serve_accepted(
    shard: &Rc<Shard>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    addr: SocketAddr,
) {
    let slot = shard.register(stream.as_raw_fd(), addr);
    conn::spawn_accepted(shard, stream, peer, addr, slot);
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: Rc<TcpListener>,
    addr: SocketAddr,
    cancel: monoio::io::CancelHandle,
    nth: usize,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // At `max_connections`, leave new clients in the kernel backlog
        // until connections close.
        while !may_accept(
            shard.active.get(),
            shard.accepts.get(),
            shard.view().snap.config.http.max_connections,
        ) {
            monoio::time::sleep(recheck_when_full(nth)).await;
        }
        let accepted = {
            let _in_flight = InFlight::new(&shard.accepts);
            listener.cancelable_accept(cancel.clone()).await
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                serve_accepted(&shard, stream, peer, addr);
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            Err(_) if shard.draining() || shard.link.stop_requested() => return,
            Err(e) => {
                warn_accept_error(&shard, addr, &e, backoff);
                monoio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// The shard's periodic duties; returns when the shard may exit.
async fn housekeeping(shard: &Rc<Shard>, mut accepting: HashMap<SocketAddr, Canceller>) {
    let mut stopping = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut ticks: u64 = 0;
    let mut quiet: u32 = 0;
    let started = Instant::now();
    loop {
        monoio::time::sleep(TICK).await;
        #[cfg(feature = "fault-injection")]
        while FAULT_STALL.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        ticks += 1;
        shard.link.beat(ticks);
        // The stop flag first: the orchestrator publishes the draining
        // snapshot before it sets the flag, so a shard that sees the stop
        // also sees that snapshot below.
        let stop = shard.link.stop_requested();
        // Whether the published snapshot drains, even with no request
        // arriving: one pointer compare through the reader's cache (the view,
        // selector state and metric layout are rebuilt by the next request).
        let (drain_published, wind_down_published) = {
            let mut reader = shard.reader.borrow_mut();
            let snap = reader.load();
            (snap.draining, snap.wind_down)
        };
        let now = Instant::now();
        let now_ms = now.duration_since(started).as_millis() as u64;
        shard.clock.set(now_ms);
        super::date::refresh(std::time::SystemTime::now());
        shard.check_deadlines(now_ms);
        if ticks.is_multiple_of(10) {
            // Histograms are folded into the shared slot every 100 ms
            // (metrics::PUBLISH_INTERVAL); counters are live anyway.
            let mut rec = shard.rec.borrow_mut();
            if rec.has_pending() {
                rec.publish();
            }
        }
        if let Some(al) = &shard.access_log {
            al.flush();
        }
        shard
            .rec
            .borrow_mut()
            .set_buffers(buf::in_use(), buf::pooled());
        shard.rec.borrow_mut().set_parked(shard.parked.count());
        // No connection holding a buffer for QUIET_TICKS in a row (every
        // one idle, or none): the pools are freed whole, not a second later.
        quiet = if buf::in_use() == 0 {
            quiet.saturating_add(1)
        } else {
            0
        };
        let freed = if ticks.is_multiple_of(100) {
            Some(buf::sweep_pools())
        } else if quiet == QUIET_TICKS && buf::pooled() > 0 {
            Some(buf::free_pools())
        } else {
            None
        };
        if let Some(freed) = freed {
            if should_trim(shard.peak.get(), shard.active.get(), freed) {
                shard.peak.set(shard.active.get());
                super::deadline::shrink();
                shard.parked.shrink();
                trim_heap();
            }
        }
        if ticks.is_multiple_of(100) {
            let view = shard.view();
            shard.pool.borrow_mut().sweep(now_ms, |addr: SocketAddr| {
                view.snap
                    .upstreams
                    .iter()
                    .any(|u| u.servers.iter().any(|s| s.addr == addr))
            });
        }
        for cmd in shard.link.take_listener_changes() {
            match cmd {
                // A draining shard accepts nothing new; the socket closes.
                ListenerCmd::Add(..) if shard.draining() => {}
                ListenerCmd::Add(addr, l) => start_listener(shard, &mut accepting, addr, l),
                ListenerCmd::Remove(addr) => {
                    if let Some(c) = accepting.remove(&addr) {
                        c.cancel();
                    }
                    if let Some(ms) = &shard.multishot {
                        ms.remove(addr);
                    }
                    // Its connections wind down as draining ones do.
                    super::deadline::listener_removed(addr);
                }
            }
        }
        if (drain_published || stop) && !shard.draining() {
            // Apply draining: stop accepting first, then tell connections.
            for (_, c) in accepting.drain() {
                c.cancel();
            }
            if let Some(ms) = &shard.multishot {
                ms.remove_all();
            }
            shard.draining.set(true);
        }
        if wind_down_published && !shard.wind_down.get() {
            super::deadline::mark_old();
            shard.wind_down.set(true);
        }
        if shard.draining() {
            shard.close_idle();
        } else if shard.wind_down.get() {
            let w = super::deadline::wind_down(now_ms);
            shard.link.report_wind_down(w.old, w.busy);
        }
        if stop {
            if !stopping {
                stopping = true;
                let limit = shard.view().snap.config.runtime.shutdown_timeout;
                drain_deadline = Some(now + limit);
                shard.pool.borrow_mut().clear();
            }
            let active = shard.active.get();
            if active == 0 || drain_deadline.is_some_and(|d| now >= d) {
                if active > 0 {
                    crate::warn!(
                        "shard {}: shutdown_timeout reached with {active} connections open",
                        shard.id
                    );
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        accepts_in_flight, log_accept_error, may_accept, next_backoff, recheck_when_full,
        should_trim, InFlight, ACCEPTS_IN_FLIGHT,
    };
    use std::cell::Cell;
    use std::time::Duration;

    #[test]
    fn accept_error_backoff_doubles_up_to_half_a_second() {
        for (now, next) in [(5, 10), (10, 20), (250, 500), (300, 500), (500, 500)] {
            assert_eq!(
                next_backoff(Duration::from_millis(now)),
                Duration::from_millis(next),
                "after {now} ms"
            );
        }
    }

    #[test]
    fn accepts_in_flight_count_against_max_connections() {
        for (active, in_flight, max, may) in [
            (0, 0, 1024, true),
            (0, 63, 1024, true),
            (960, 63, 1024, true),
            (961, 63, 1024, false),
            (1024, 0, 1024, false),
            // `max_connections = 1`: one accept in flight, none beside it
            (0, 0, 1, true),
            (0, 1, 1, false),
            (1, 0, 1, false),
            // a reload lowered the limit below what is open
            (50, 0, 10, false),
        ] {
            assert_eq!(
                may_accept(active, in_flight, max),
                may,
                "active {active} in flight {in_flight} max {max}"
            );
        }
    }

    #[test]
    fn io_uring_keeps_many_accepts_in_flight_epoll_one() {
        assert_eq!(accepts_in_flight(true), ACCEPTS_IN_FLIGHT);
        assert_eq!(accepts_in_flight(false), 1);
        assert!(accepts_in_flight(true) > accepts_in_flight(false));
    }

    #[test]
    fn at_the_limit_one_loop_looks_often_and_the_rest_seldom() {
        assert_eq!(recheck_when_full(0), Duration::from_millis(5));
        for nth in 1..ACCEPTS_IN_FLIGHT {
            assert_eq!(
                recheck_when_full(nth),
                Duration::from_millis(50),
                "loop {nth}"
            );
        }
        // Wake-ups a second per listener and shard while it is full.
        let per_sec: u128 = (0..ACCEPTS_IN_FLIGHT)
            .map(|n| 1000 / recheck_when_full(n).as_millis())
            .sum();
        assert!(per_sec <= 1500, "{per_sec} wake-ups a second");
    }

    #[test]
    fn accept_errors_are_logged_once_a_second() {
        for (last, now, log) in [
            (None, 0, true),
            (None, 12_345, true),
            (Some(0), 0, false),
            (Some(0), 999, false),
            (Some(0), 1000, true),
            (Some(5000), 5990, false),
            // a clock behind the last line (cannot happen) logs nothing
            (Some(5000), 10, false),
        ] {
            assert_eq!(log_accept_error(last, now), log, "last {last:?} now {now}");
        }
    }

    #[test]
    fn an_accept_counts_while_in_flight_and_stops_when_dropped() {
        let count = Cell::new(0);
        {
            let _a = InFlight::new(&count);
            let _b = InFlight::new(&count);
            assert_eq!(count.get(), 2);
        }
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn trims_after_many_closes_or_a_pool_sweep() {
        for (peak, active, freed, trim) in [
            (0, 0, 0, false),
            (255, 0, 0, false),
            (256, 0, 0, true),
            (9000, 8745, 0, false),
            (9000, 8744, 0, true),
            (9000, 9000, 0, false),
            // a peak below active cannot happen; never trims
            (10, 300, 0, false),
            // the pools shed buffers nobody took for a second
            (10, 10, 15, false),
            (10, 10, 16, true),
        ] {
            assert_eq!(
                should_trim(peak, active, freed),
                trim,
                "peak {peak} active {active} freed {freed}"
            );
        }
    }
}
