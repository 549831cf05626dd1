//! Coarse per-connection deadlines, enforced by the shard's tick.
//!
//! Wrapping every read and write in a runtime timer cost about 7% of
//! throughput here (a timer registered and cancelled per operation, four
//! times per request). Timeouts in a proxy are seconds long and need no
//! microsecond precision, so instead each connection owns one [`Deadline`]
//! (a few `Cell`s): arming it is two stores of a coarse clock the shard
//! updates every tick, and the shard's housekeeping task scans its
//! connections once per tick. A deadline that has passed shuts the socket
//! down (`shutdown(2)`), which ends the pending operation with EOF or an
//! error; the connection then sees the `fired` flag and treats the outcome
//! as a timeout. Precision is one tick ([`super::shard::TICK`]).
//!
//! The scan is skipped while nothing can be due: every arming lowers a
//! per-shard "earliest deadline" mark ([`due`]), and a scan sets it to the
//! earliest deadline still armed. With 10 000 connections the scan touched
//! 10 000 cache lines every tick (11% of a shard's time with slow clients);
//! now it runs about once per timeout period.
//!
//! The deadlines live in one per-shard table (a slab in a thread-local),
//! not in a heap allocation per connection: with idle connections parked
//! outside their tasks (`idle.rs`), small allocations that outlive each
//! connection's task were what fragmented the heap between the freed task
//! states. The table is also the shard's connection registry: each entry
//! carries the client socket and whether it is idle (draining shuts those).
//!
//! # Watching a client that waits for its response
//!
//! An upstream read may carry a [`ClientWatch`]: while it waits for the
//! response (its head, or more of a body the backend is slow to produce),
//! the same scan looks at the client's socket once the wait has lasted
//! `proto::exchange::CLIENT_WATCH_MS`, and again as often, with a
//! non-blocking peek (`peek.rs`). A client that has gone
//! (`proto::exchange::client_gone`: its FIN or a reset, not pipelined
//! bytes) ends the wait like a deadline: the upstream socket is shut both
//! ways (the backend sees its client leave) and the connection reads
//! [`Timer::client_gone`]. A response that comes within the first second
//! costs two more stores on arming and no system call; the watch only
//! makes the scan run about once a second while responses are awaited.
//!
//! # Connections of a removed listener
//!
//! Each entry also records the listener that accepted its connection. A
//! reload that removes a listener ([`listener_removed`]) winds its
//! connections down as draining winds down a whole shard: the idle ones are
//! shut now, and the others are marked, so their answer in flight carries
//! `Connection: close` and they close after it ([`Timer::listener_gone`],
//! read through `Shard::keep_alive_off`). A request that came on later would
//! find no listener in the new snapshot and could not be routed. A
//! per-shard count of marked connections keeps the check to one
//! thread-local read while there are none.
//!
//! A connection runs one operation at a time (the upgrade tunnel, which
//! runs two, uses no deadlines), so one deadline per connection suffices.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::peek::{peek, read_hup};
use crate::proto::exchange::{client_gone, client_watch_at};

/// How to unblock an operation that overran its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shut {
    /// Reads: the socket can still send (e.g. a 408).
    Read,
    /// Writes and upstream operations: abort both directions.
    Both,
}

thread_local! {
    // One shard per thread: no armed deadline of this shard is earlier.
    static NEXT_DUE: Cell<u64> = const { Cell::new(u64::MAX) };
    // One shard per thread: its connections' deadlines.
    static TABLE: RefCell<Table> = const { RefCell::new(Table { entries: Vec::new(), free: Vec::new(), live: 0 }) };
    // One shard per thread: its connections whose listener was removed.
    static GONE: Cell<usize> = const { Cell::new(0) };
    // One shard per thread: the listener addresses its entries name.
    static LISTENS: RefCell<Vec<SocketAddr>> = const { RefCell::new(Vec::new()) };
}

/// An entry names its listener by a small key instead of a `SocketAddr`
/// (32 bytes): the table holds one entry per connection, and an idle
/// connection is otherwise little more than its entry and its parked
/// record (bench/memory.sh). Key 0 is "none"; key k is the (k-1)th address
/// this shard's entries have named. The list only grows, by the distinct
/// listen addresses the configurations have had, which is a handful.
fn listen_key(listen: Option<SocketAddr>) -> u32 {
    let Some(addr) = listen else { return 0 };
    LISTENS.with(|l| {
        let mut l = l.borrow_mut();
        let i = match l.iter().position(|a| *a == addr) {
            Some(i) => i,
            None => {
                l.push(addr);
                l.len() - 1
            }
        };
        i as u32 + 1
    })
}

/// The address behind a key of [`listen_key`].
fn listen_addr(key: u32) -> Option<SocketAddr> {
    let i = key.checked_sub(1)? as usize;
    LISTENS.with(|l| l.borrow().get(i).copied())
}

/// Whether a deadline of this shard may have passed at `now_ms` (the tick
/// scans only then).
pub fn due(now_ms: u64) -> bool {
    now_ms >= NEXT_DUE.with(Cell::get)
}

/// After a scan: the earliest deadline still armed (`u64::MAX`: none).
pub fn set_next_due(at_ms: u64) {
    NEXT_DUE.with(|n| n.set(at_ms));
}

/// What an upstream read needs to watch its client (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientWatch {
    /// The client speaks TLS (its unread bytes are records).
    pub tls: bool,
    /// The client's next requests are buffered already (owed answers).
    pub pipelined: bool,
}

/// One connection's entry: its current deadline, its socket, idle or not.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Coarse-clock milliseconds; 0 = disarmed.
    at_ms: u64,
    /// When the client is next looked at (0 = not watched).
    watch_at: u64,
    watch: ClientWatch,
    /// The last operation ended because the client had gone.
    gone: bool,
    /// The socket the running operation uses, and how to shut it.
    fd: RawFd,
    how: i32,
    /// The connection's client socket (shut when idle and draining).
    conn_fd: RawFd,
    fired: bool,
    idle: bool,
    /// Coarse-clock ms when the connection last became idle.
    idle_since: u64,
    /// Open since before the shard's wind-down (`mark_old`).
    old: bool,
    /// The listener that accepted the connection ([`listen_key`]).
    listen: u32,
    /// That listener was removed by a reload ([`listener_removed`]).
    listener_gone: bool,
    live: bool,
}

struct Table {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
}

fn with_entry<R>(key: u32, f: impl FnOnce(&mut Entry) -> R) -> R {
    TABLE.with(|t| f(&mut t.borrow_mut().entries[key as usize]))
}

/// Connections registered on this shard.
pub fn registered() -> usize {
    TABLE.with(|t| t.borrow().live)
}

/// Called by the shard tick: fires every deadline that has passed (shuts
/// its socket) and notes the earliest one still armed.
pub fn check_all(now_ms: u64) {
    let next = TABLE.with(|t| {
        let mut next = u64::MAX;
        for e in t.borrow_mut().entries.iter_mut() {
            next = next.min(check(e, now_ms));
        }
        next
    });
    set_next_due(next);
}

/// Fires `e` if its deadline has passed, or if it watches its client and
/// the client has gone. Returns when it is due if it is still armed
/// afterwards (`u64::MAX` if not).
fn check(e: &mut Entry, now_ms: u64) -> u64 {
    if e.at_ms == 0 || !e.live {
        return u64::MAX;
    }
    if e.watch_at != 0 && now_ms >= e.watch_at {
        let (fd, w) = (e.conn_fd, e.watch);
        if client_gone(peek(fd), w.tls, w.pipelined, || read_hup(fd)) {
            e.gone = true;
            e.how = libc::SHUT_RDWR;
            fire(e);
            return u64::MAX;
        }
        e.watch_at = client_watch_at(now_ms);
    }
    if now_ms >= e.at_ms {
        fire(e);
        return u64::MAX;
    }
    match e.watch_at {
        0 => e.at_ms,
        w => e.at_ms.min(w),
    }
}

/// Ends `e`'s operation: disarms it and shuts its socket down.
fn fire(e: &mut Entry) {
    e.at_ms = 0;
    e.watch_at = 0;
    e.fired = true;
    // SAFETY: the fd belongs to the connection's live socket for as long
    // as the deadline is armed (disarmed before the op returns).
    unsafe { libc::shutdown(e.fd, e.how) };
}

/// Shuts the read side of every idle connection's socket (draining), so
/// its wait ends and it closes.
pub fn shut_idle() {
    shut_idle_of(|_| true);
}

/// [`shut_idle`] for the connections `pick` picks.
fn shut_idle_of(pick: impl Fn(&Entry) -> bool) {
    TABLE.with(|t| {
        for e in t.borrow().entries.iter() {
            if e.live && e.idle && pick(e) {
                // SAFETY: the fd belongs to a live connection of this shard;
                // shutdown does not close it, the owner still does.
                unsafe { libc::shutdown(e.conn_fd, libc::SHUT_RD) };
            }
        }
    });
}

/// A reload removed listener `listen`: its connections wind down (see the
/// module docs). The idle ones are shut; returns how many were marked.
pub fn listener_removed(listen: SocketAddr) -> usize {
    let key = listen_key(Some(listen));
    let marked = TABLE.with(|t| {
        let mut marked = 0;
        for e in t.borrow_mut().entries.iter_mut() {
            if e.live && !e.listener_gone && e.listen == key {
                e.listener_gone = true;
                marked += 1;
            }
        }
        marked
    });
    GONE.with(|g| g.set(g.get() + marked));
    shut_idle_of(|e| e.listener_gone);
    marked
}

/// How long a connection must have waited for its next request before a
/// winding-down shard closes it. A client may be sending its next request
/// at the moment the server closes an idle connection (the request is then
/// reset); one that has been quiet this long rarely is, while a busy one
/// sends within this time and gets `Connection: close` on its answer.
pub const WIND_DOWN_IDLE_MS: u64 = 100;

/// Whether a winding-down shard closes this connection now: it has waited
/// for its next request for at least [`WIND_DOWN_IDLE_MS`].
pub fn close_in_wind_down(idle: bool, idle_since: u64, now_ms: u64) -> bool {
    idle && now_ms.saturating_sub(idle_since) >= WIND_DOWN_IDLE_MS
}

/// Marks every connection open now as old (the shard starts winding down).
pub fn mark_old() {
    TABLE.with(|t| {
        for e in t.borrow_mut().entries.iter_mut().filter(|e| e.live) {
            e.old = true;
        }
    });
}

/// What a winding-down shard reports every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindDown {
    /// Connections open since before the wind-down.
    pub old: usize,
    /// Connections in an exchange (not waiting for a next request).
    pub busy: usize,
}

/// A winding-down shard's tick: shuts the read side of every connection
/// that [`close_in_wind_down`] picks (its wait ends and it closes) and
/// counts what is left.
pub fn wind_down(now_ms: u64) -> WindDown {
    TABLE.with(|t| {
        let mut w = WindDown { old: 0, busy: 0 };
        for e in t.borrow().entries.iter().filter(|e| e.live) {
            if close_in_wind_down(e.idle, e.idle_since, now_ms) {
                // SAFETY: as in `shut_idle`.
                unsafe { libc::shutdown(e.conn_fd, libc::SHUT_RD) };
            }
            w.old += usize::from(e.old);
            w.busy += usize::from(!e.idle);
        }
        w
    })
}

/// Frees the table's storage once no connection is registered (after a
/// burst closed; called with the allocator trim).
pub fn shrink() {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        if t.live == 0 {
            t.entries = Vec::new();
            t.free = Vec::new();
        }
    });
}

/// A connection's deadline plus the shard's coarse clock: what an
/// operation needs to be bounded in time. Cloning is one non-atomic
/// reference-count bump. Made by [`Timer::register`]; the connection's
/// registration (`shard::Slot`) calls [`Timer::release`] once, at its end.
#[derive(Clone)]
pub struct Timer {
    pub clock: Rc<Cell<u64>>,
    key: u32,
}

/// The operation did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// What [`Timed`] arms on its first poll.
#[derive(Debug, Clone, Copy)]
struct Arming {
    fd: RawFd,
    how: Shut,
    limit: Duration,
    watch: Option<ClientWatch>,
}

pin_project_lite::pin_project! {
    /// An operation under the connection's deadline ([`Timer::run`]): arms
    /// it on the first poll and finishes it when the operation completes,
    /// resolving to the operation's output and whether it was cut off. A
    /// future dropped before it completes leaves the deadline armed, for
    /// its owner to [`Timer::disarm`].
    ///
    /// A hand-written future rather than an `async fn`, so the operation
    /// (a few hundred bytes: a read or a write and the state around it)
    /// is stored once: the `async fn` kept it among its arguments, moved it
    /// into its await slot on the first poll, and was itself moved into its
    /// caller's — three copies of every read and write of every request.
    pub struct Timed<'a, F> {
        #[pin]
        op: F,
        timer: &'a Timer,
        arm: Option<Arming>,
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = (F::Output, Result<(), Elapsed>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(a) = this.arm.take() {
            this.timer.arm_watched(a.fd, a.how, a.limit, a.watch);
        }
        let out = std::task::ready!(this.op.poll(cx));
        Poll::Ready((out, this.timer.finish()))
    }
}

impl Timer {
    /// Registers a connection whose client socket is `conn_fd`, accepted
    /// on listener `listen`.
    pub fn register(clock: Rc<Cell<u64>>, conn_fd: RawFd, listen: Option<SocketAddr>) -> Timer {
        let key = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let e = Entry {
                conn_fd,
                listen: listen_key(listen),
                live: true,
                ..Entry::default()
            };
            t.live += 1;
            match t.free.pop() {
                Some(k) => {
                    t.entries[k as usize] = e;
                    k
                }
                None => {
                    t.entries.push(e);
                    (t.entries.len() - 1) as u32
                }
            }
        });
        Timer { clock, key }
    }

    /// Ends the registration (the connection is gone).
    pub fn release(&self) {
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            if t.entries[self.key as usize].listener_gone {
                GONE.with(|g| g.set(g.get() - 1));
            }
            t.entries[self.key as usize] = Entry::default();
            t.free.push(self.key);
            t.live -= 1;
        });
    }

    /// Runs `op` on socket `fd`, allowing it `limit` (rounded up to the
    /// tick). The operation always completes (so rented buffers come back);
    /// `Err(Elapsed)` says it was cut off and its result is meaningless.
    pub fn run<F: Future>(&self, fd: RawFd, how: Shut, limit: Duration, op: F) -> Timed<'_, F> {
        self.run_watched(fd, how, limit, None, op)
    }

    /// [`Timer::run`] for an upstream read that also watches the client
    /// (`watch`, see the module docs): `Err(Elapsed)` with
    /// [`Timer::client_gone`] when it was cut off because the client left.
    pub fn run_watched<F: Future>(
        &self,
        fd: RawFd,
        how: Shut,
        limit: Duration,
        watch: Option<ClientWatch>,
        op: F,
    ) -> Timed<'_, F> {
        Timed {
            op,
            timer: self,
            arm: Some(Arming {
                fd,
                how,
                limit,
                watch,
            }),
        }
    }

    /// Arms the deadline: `limit` from now (rounded up to the tick) the
    /// tick shuts `fd` down as `how` says. [`Timer::run`] arms and
    /// finishes around one operation; a parked idle connection
    /// (`idle.rs`) is armed while no task waits on it.
    pub fn arm(&self, fd: RawFd, how: Shut, limit: Duration) {
        self.arm_watched(fd, how, limit, None);
    }

    fn arm_watched(&self, fd: RawFd, how: Shut, limit: Duration, watch: Option<ClientWatch>) {
        let now = self.clock.get();
        // +1 so a deadline is never 0 (disarmed) and never fires early.
        let at = now + limit.as_millis() as u64 + 1;
        let watch_at = watch.map_or(0, |_| client_watch_at(now));
        with_entry(self.key, |e| {
            e.fd = fd;
            e.how = match how {
                Shut::Read => libc::SHUT_RD,
                Shut::Both => libc::SHUT_RDWR,
            };
            e.fired = false;
            e.gone = false;
            e.at_ms = at;
            e.watch_at = watch_at;
            e.watch = watch.unwrap_or_default();
        });
        let due = if watch_at == 0 { at } else { at.min(watch_at) };
        NEXT_DUE.with(|n| n.set(n.get().min(due)));
    }

    /// Disarms the deadline; `Err(Elapsed)` if it fired since [`Timer::arm`].
    pub fn finish(&self) -> Result<(), Elapsed> {
        let fired = with_entry(self.key, |e| {
            e.at_ms = 0;
            e.watch_at = 0;
            std::mem::replace(&mut e.fired, false)
        });
        if fired {
            Err(Elapsed)
        } else {
            Ok(())
        }
    }

    /// Whether the running operation's deadline has fired (its socket was
    /// shut), for a concurrent reader of the same socket that saw the end
    /// of stream and must not mistake it for the peer closing.
    pub fn fired(&self) -> bool {
        with_entry(self.key, |e| e.fired)
    }

    /// Whether the last operation was cut off because its watched client
    /// had gone (until the next arming).
    pub fn client_gone(&self) -> bool {
        with_entry(self.key, |e| e.gone)
    }

    /// Disarms the deadline of an operation that was dropped before it
    /// finished (so it can never shut a socket that is closed by then).
    pub fn disarm(&self) {
        with_entry(self.key, |e| {
            e.at_ms = 0;
            e.watch_at = 0;
            e.fired = false;
        });
    }

    /// Marks the connection idle since `now_ms` (the shard clock): waiting
    /// for a next request, so draining closes it, and winding down once it
    /// has waited long enough.
    pub fn set_idle_since(&self, now_ms: u64) {
        with_entry(self.key, |e| {
            e.idle = true;
            e.idle_since = now_ms;
        });
    }

    /// The listener that accepted the connection, as registered.
    pub fn listen(&self) -> Option<SocketAddr> {
        listen_addr(with_entry(self.key, |e| e.listen))
    }

    /// Whether the connection's listener was removed by a reload: it is
    /// kept no longer (see the module docs). One thread-local read while no
    /// connection of the shard is marked.
    #[inline]
    pub fn listener_gone(&self) -> bool {
        GONE.with(Cell::get) > 0 && with_entry(self.key, |e| e.listener_gone)
    }

    /// Marks the connection in an exchange (no longer idle).
    pub fn set_busy(&self) {
        with_entry(self.key, |e| e.idle = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::exchange::Peek;

    fn timer(now: u64) -> Timer {
        // An fd that is not a socket: shutdown fails harmlessly.
        Timer::register(Rc::new(Cell::new(now)), -1, None)
    }

    #[test]
    fn fires_only_after_the_deadline() {
        let t = timer(0);
        t.arm(-1, Shut::Read, Duration::from_millis(99));
        with_entry(t.key, |e| {
            assert_eq!(check(e, 99), 100);
            assert!(!e.fired);
            assert_eq!(check(e, 100), u64::MAX);
            assert!(e.fired);
            assert_eq!(e.at_ms, 0);
        });
        assert!(t.fired());
        assert_eq!(t.finish(), Err(Elapsed));
        // Disarmed deadlines never fire.
        with_entry(t.key, |e| assert_eq!(check(e, 1_000_000), u64::MAX));
        assert!(!t.fired());
        t.release();
    }

    #[test]
    fn scans_only_when_something_can_be_due() {
        set_next_due(u64::MAX);
        assert!(!due(1_000_000));
        let t = timer(1000);
        let op = t.run(-1, Shut::Read, Duration::from_millis(500), async {
            // Armed: due from 1501 on; a scan before reports it still armed.
            assert!(!due(1500) && due(1501));
            assert_eq!(with_entry(t.key, |e| check(e, 1500)), 1501);
        });
        let (_, r) = block_on_ready(op);
        assert!(r.is_ok());
        // Disarmed: a scan finds nothing armed.
        check_all(5000);
        assert!(!due(1_000_000));
        t.release();
    }

    #[test]
    fn a_timed_operation_arms_on_its_first_poll_and_reports_a_deadline_that_fired() {
        set_next_due(u64::MAX);
        let t = timer(1000);
        // Created, not polled: nothing armed (two operations may be made
        // before the one that runs first is polled).
        let op = t.run(-1, Shut::Both, Duration::from_millis(10), async {
            // The tick passes the deadline while the operation runs.
            with_entry(t.key, |e| check(e, 2000));
            7
        });
        assert!(!due(1_000_000));
        assert_eq!(with_entry(t.key, |e| e.at_ms), 0);
        assert_eq!(block_on_ready(op), (7, Err(Elapsed)));
        // Finished: disarmed, and the next operation starts clean.
        assert!(!t.fired());
        assert_eq!(with_entry(t.key, |e| e.at_ms), 0);
        t.release();
    }

    /// A connected loopback pair.
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Waits (bounded) until `f` holds: loopback segments arrive
    /// asynchronously.
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        (0..200).any(|_| {
            let ok = f();
            if !ok {
                std::thread::sleep(Duration::from_millis(10));
            }
            ok
        })
    }

    #[test]
    fn a_watched_read_ends_when_its_client_has_gone() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let (client, client_peer) = pair();
        let (upstream, mut backend) = pair();
        let t = Timer::register(Rc::new(Cell::new(1000)), client.as_raw_fd(), None);
        let w = ClientWatch::default();
        t.arm_watched(
            upstream.as_raw_fd(),
            Shut::Read,
            Duration::from_secs(60),
            Some(w),
        );
        with_entry(t.key, |e| {
            // Not looked at before a second of waiting.
            assert_eq!(check(e, 1999), 2000);
            // Looked at: still there, looked at again a second later.
            assert_eq!(check(e, 2000), 3000);
            assert!(!e.fired && !e.gone);
        });
        // Pipelined bytes arriving are not an abort.
        (&client_peer).write_all(b"GET /next").unwrap();
        assert!(eventually(
            || super::peek(client.as_raw_fd()) == Peek::Unread
        ));
        with_entry(t.key, |e| assert_eq!(check(e, 3000), 4000));
        // The client closes (its unread bytes are read first, as a
        // connection that buffered them would have).
        let mut sink = [0u8; 9];
        (&client).read_exact(&mut sink).unwrap();
        drop(client_peer);
        assert!(eventually(|| super::peek(client.as_raw_fd()) == Peek::Eof));
        with_entry(t.key, |e| assert_eq!(check(e, 4000), u64::MAX));
        assert!(t.client_gone() && t.fired());
        assert_eq!(t.finish(), Err(Elapsed));
        // The upstream socket was shut both ways: the backend sees its end.
        backend
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(backend.read(&mut sink).unwrap(), 0, "backend sees EOF");
        // The next arming starts afresh; an unwatched one never looks.
        t.arm(upstream.as_raw_fd(), Shut::Read, Duration::from_secs(60));
        assert!(!t.client_gone());
        with_entry(t.key, |e| assert_eq!(check(e, 5000), 60_001 + 1000));
        t.finish().unwrap();
        t.release();
    }

    #[test]
    fn a_client_that_half_closed_after_pipelining_is_not_gone() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (client, client_peer) = pair();
        let (upstream, _backend) = pair();
        let t = Timer::register(Rc::new(Cell::new(0)), client.as_raw_fd(), None);
        let w = ClientWatch {
            tls: false,
            pipelined: true,
        };
        (&client_peer).write_all(b"x").unwrap();
        client_peer.shutdown(std::net::Shutdown::Write).unwrap();
        t.arm_watched(
            upstream.as_raw_fd(),
            Shut::Read,
            Duration::from_secs(60),
            Some(w),
        );
        // Plain bytes then FIN: not gone; buffered pipelined requests and
        // FIN: not gone either.
        assert!(eventually(|| super::read_hup(client.as_raw_fd())));
        with_entry(t.key, |e| assert_eq!(check(e, 1000), 2000));
        // The same for a TLS client: bytes then FIN is its close.
        t.arm_watched(
            upstream.as_raw_fd(),
            Shut::Read,
            Duration::from_secs(60),
            Some(ClientWatch {
                tls: true,
                pipelined: false,
            }),
        );
        with_entry(t.key, |e| assert_eq!(check(e, 1000), u64::MAX));
        assert!(t.client_gone());
        let _ = t.finish();
        t.release();
    }

    #[test]
    fn the_table_reuses_released_entries_and_frees_when_empty() {
        let base = registered();
        let a = timer(0);
        let b = timer(0);
        assert_eq!(registered(), base + 2);
        a.release();
        let c = timer(0);
        assert_eq!(c.key, a.key, "a released entry is reused");
        assert_eq!(registered(), base + 2);
        b.release();
        c.release();
        assert_eq!(registered(), base);
        if base == 0 {
            shrink();
            assert_eq!(TABLE.with(|t| t.borrow().entries.capacity()), 0);
        }
    }

    #[test]
    fn a_winding_down_shard_closes_connections_idle_long_enough() {
        let w = WIND_DOWN_IDLE_MS;
        for (idle, since, now, close) in [
            (false, 0, 10 * w, false),
            (true, 1000, 1000, false),
            (true, 1000, 1000 + w - 1, false),
            (true, 1000, 1000 + w, true),
            // A clock read before `idle_since` was stored (never negative).
            (true, 1000, 999, false),
        ] {
            assert_eq!(
                close_in_wind_down(idle, since, now),
                close,
                "idle {idle} since {since} now {now}"
            );
        }
    }

    #[test]
    fn winding_down_shuts_long_idle_sockets_and_counts_the_old() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let clock = Rc::new(Cell::new(1000));
        let (_c1, mut busy_sock) = pair();
        let (_c2, mut idle_sock) = pair();
        busy_sock.set_nonblocking(true).unwrap();
        idle_sock.set_nonblocking(true).unwrap();
        let busy = Timer::register(Rc::clone(&clock), busy_sock.as_raw_fd(), None);
        let idle = Timer::register(Rc::clone(&clock), idle_sock.as_raw_fd(), None);
        idle.set_idle_since(1000);
        mark_old();
        let newer = timer(1000);
        let would_block = |s: &mut std::net::TcpStream| {
            s.read(&mut [0u8; 1]).unwrap_err().kind() == std::io::ErrorKind::WouldBlock
        };
        let left = |old, busy| WindDown { old, busy };
        // `newer` is in an exchange too (not idle): busy, but not old.
        assert_eq!(wind_down(1000 + WIND_DOWN_IDLE_MS - 1), left(2, 2));
        assert!(would_block(&mut idle_sock), "idle too briefly to be closed");
        assert_eq!(wind_down(1000 + WIND_DOWN_IDLE_MS), left(2, 2));
        assert_eq!(
            idle_sock.read(&mut [0u8; 1]).unwrap(),
            0,
            "shut for reading"
        );
        assert!(
            would_block(&mut busy_sock),
            "a busy connection is left alone"
        );
        idle.release();
        assert_eq!(wind_down(5000), left(1, 2));
        busy.release();
        assert_eq!(
            wind_down(5000),
            left(0, 1),
            "the one registered later is not old"
        );
        newer.set_idle_since(5000);
        assert_eq!(wind_down(5000), left(0, 0));
        newer.release();
    }

    #[test]
    fn a_removed_listener_shuts_its_idle_connections_and_marks_the_busy() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let clock = Rc::new(Cell::new(1000));
        let (gone, kept): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let pairs: Vec<_> = (0..3).map(|_| pair()).collect();
        let socks: Vec<_> = pairs.iter().map(|p| &p.1).collect();
        for s in &socks {
            s.set_nonblocking(true).unwrap();
        }
        let reg = |i: usize, l| Timer::register(Rc::clone(&clock), socks[i].as_raw_fd(), Some(l));
        let (busy, idle, other) = (reg(0, gone), reg(1, gone), reg(2, kept));
        idle.set_idle_since(1000);
        other.set_idle_since(1000);
        assert!(![&busy, &idle, &other].iter().any(|t| t.listener_gone()));
        assert_eq!(listener_removed(gone), 2);
        assert_eq!(
            [&busy, &idle, &other].map(|t| t.listener_gone()),
            [true, true, false]
        );
        let shut = |i: usize| {
            let mut s: &std::net::TcpStream = socks[i];
            s.read(&mut [0u8; 1]).ok() == Some(0)
        };
        assert_eq!(
            [0, 1, 2].map(shut),
            [false, true, false],
            "only the idle one is shut"
        );
        // Marked once; a second removal of the same address marks nothing.
        assert_eq!(listener_removed(gone), 0);
        busy.release();
        idle.release();
        assert_eq!(GONE.with(Cell::get), 0, "released entries are counted out");
        // Each entry still names its own listener.
        assert_eq!(other.listen(), Some(kept));
        let again = reg(0, gone);
        assert!(!again.listener_gone(), "a reused entry starts afresh");
        again.release();
        other.release();
    }

    #[test]
    fn entries_name_their_listener_by_key() {
        let clock = Rc::new(Cell::new(0));
        let addrs: Vec<SocketAddr> = ["127.0.0.1:7", "[::1]:7", "127.0.0.1:8"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let timers: Vec<Timer> = [
            Some(addrs[0]),
            Some(addrs[1]),
            Some(addrs[0]),
            None,
            Some(addrs[2]),
        ]
        .into_iter()
        .map(|l| Timer::register(Rc::clone(&clock), -1, l))
        .collect();
        assert_eq!(
            timers.iter().map(Timer::listen).collect::<Vec<_>>(),
            [
                Some(addrs[0]),
                Some(addrs[1]),
                Some(addrs[0]),
                None,
                Some(addrs[2])
            ]
        );
        assert_eq!(
            listen_key(Some(addrs[0])),
            listen_key(Some(addrs[0])),
            "one key per address"
        );
        assert_ne!(listen_key(Some(addrs[0])), listen_key(Some(addrs[1])));
        assert_eq!((listen_key(None), listen_addr(0)), (0, None));
        for t in timers {
            t.release();
        }
    }

    /// Polls a future that never waits.
    fn block_on_ready<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the future waited"),
        }
    }
}
