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
//! A connection runs one operation at a time (the upgrade tunnel, which
//! runs two, uses no deadlines), so one deadline per connection suffices.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

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

/// One connection's entry: its current deadline, its socket, idle or not.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Coarse-clock milliseconds; 0 = disarmed.
    at_ms: u64,
    /// The socket the running operation uses, and how to shut it.
    fd: RawFd,
    how: i32,
    /// The connection's client socket (shut when idle and draining).
    conn_fd: RawFd,
    fired: bool,
    idle: bool,
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

/// Fires `e` if its deadline has passed. Returns when it is due if it is
/// still armed afterwards (`u64::MAX` if not).
fn check(e: &mut Entry, now_ms: u64) -> u64 {
    if e.at_ms == 0 || !e.live {
        return u64::MAX;
    }
    if now_ms >= e.at_ms {
        e.at_ms = 0;
        e.fired = true;
        // SAFETY: the fd belongs to the connection's live socket for as
        // long as the deadline is armed (disarmed before the op returns).
        unsafe { libc::shutdown(e.fd, e.how) };
        return u64::MAX;
    }
    e.at_ms
}

/// Shuts the read side of every idle connection's socket (draining), so
/// its wait ends and it closes.
pub fn shut_idle() {
    TABLE.with(|t| {
        for e in t.borrow().entries.iter() {
            if e.live && e.idle {
                // SAFETY: the fd belongs to a live connection of this shard;
                // shutdown does not close it, the owner still does.
                unsafe { libc::shutdown(e.conn_fd, libc::SHUT_RD) };
            }
        }
    });
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

impl Timer {
    /// Registers a connection whose client socket is `conn_fd`.
    pub fn register(clock: Rc<Cell<u64>>, conn_fd: RawFd) -> Timer {
        let key = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let e = Entry {
                conn_fd,
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
            t.entries[self.key as usize] = Entry::default();
            t.free.push(self.key);
            t.live -= 1;
        });
    }

    /// Runs `op` on socket `fd`, allowing it `limit` (rounded up to the
    /// tick). The operation always completes (so rented buffers come back);
    /// `Err(Elapsed)` says it was cut off and its result is meaningless.
    pub async fn run<F: Future>(
        &self,
        fd: RawFd,
        how: Shut,
        limit: Duration,
        op: F,
    ) -> (F::Output, Result<(), Elapsed>) {
        self.arm(fd, how, limit);
        let out = op.await;
        (out, self.finish())
    }

    /// Arms the deadline: `limit` from now (rounded up to the tick) the
    /// tick shuts `fd` down as `how` says. [`Timer::run`] arms and
    /// finishes around one operation; a parked idle connection
    /// (`idle.rs`) is armed while no task waits on it.
    pub fn arm(&self, fd: RawFd, how: Shut, limit: Duration) {
        // +1 so a deadline is never 0 (disarmed) and never fires early.
        let at = self.clock.get() + limit.as_millis() as u64 + 1;
        with_entry(self.key, |e| {
            e.fd = fd;
            e.how = match how {
                Shut::Read => libc::SHUT_RD,
                Shut::Both => libc::SHUT_RDWR,
            };
            e.fired = false;
            e.at_ms = at;
        });
        NEXT_DUE.with(|n| n.set(n.get().min(at)));
    }

    /// Disarms the deadline; `Err(Elapsed)` if it fired since [`Timer::arm`].
    pub fn finish(&self) -> Result<(), Elapsed> {
        let fired = with_entry(self.key, |e| {
            e.at_ms = 0;
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

    /// Disarms the deadline of an operation that was dropped before it
    /// finished (so it can never shut a socket that is closed by then).
    pub fn disarm(&self) {
        with_entry(self.key, |e| {
            e.at_ms = 0;
            e.fired = false;
        });
    }

    /// Marks the connection idle (waiting for a next request: draining
    /// closes it) or not.
    pub fn set_idle(&self, idle: bool) {
        with_entry(self.key, |e| e.idle = idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(now: u64) -> Timer {
        // An fd that is not a socket: shutdown fails harmlessly.
        Timer::register(Rc::new(Cell::new(now)), -1)
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
