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
//! A connection runs one operation at a time (the upgrade tunnel, which
//! runs two, uses no deadlines), so one deadline per connection suffices.

use std::cell::Cell;
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

/// One connection's current deadline.
#[derive(Debug, Default)]
pub struct Deadline {
    /// Coarse-clock milliseconds; 0 = disarmed.
    at_ms: Cell<u64>,
    fd: Cell<RawFd>,
    how: Cell<i32>,
    fired: Cell<bool>,
}

impl Deadline {
    /// Called by the shard tick: fires the deadline if it has passed.
    /// Returns when the deadline is due if it is still armed afterwards
    /// (`u64::MAX` if not).
    pub fn check(&self, now_ms: u64) -> u64 {
        let at = self.at_ms.get();
        if at == 0 {
            return u64::MAX;
        }
        if now_ms >= at {
            self.at_ms.set(0);
            self.fired.set(true);
            // SAFETY: the fd belongs to the connection's live socket for as
            // long as the deadline is armed (disarmed before the op returns).
            unsafe { libc::shutdown(self.fd.get(), self.how.get()) };
            return u64::MAX;
        }
        at
    }
}

/// A deadline plus the shard's coarse clock: what an operation needs to be
/// bounded in time. Cloning is two non-atomic reference-count bumps.
#[derive(Clone)]
pub struct Timer {
    pub clock: Rc<Cell<u64>>,
    pub deadline: Rc<Deadline>,
}

/// The operation did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl Timer {
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
        let d = &*self.deadline;
        d.fd.set(fd);
        d.how.set(match how {
            Shut::Read => libc::SHUT_RD,
            Shut::Both => libc::SHUT_RDWR,
        });
        d.fired.set(false);
        // +1 so a deadline is never 0 (disarmed) and never fires early.
        let at = self.clock.get() + limit.as_millis() as u64 + 1;
        d.at_ms.set(at);
        NEXT_DUE.with(|n| n.set(n.get().min(at)));
    }

    /// Disarms the deadline; `Err(Elapsed)` if it fired since [`Timer::arm`].
    pub fn finish(&self) -> Result<(), Elapsed> {
        let d = &*self.deadline;
        d.at_ms.set(0);
        if d.fired.replace(false) {
            Err(Elapsed)
        } else {
            Ok(())
        }
    }

    /// Whether the running operation's deadline has fired (its socket was
    /// shut), for a concurrent reader of the same socket that saw the end
    /// of stream and must not mistake it for the peer closing.
    pub fn fired(&self) -> bool {
        self.deadline.fired.get()
    }

    /// Disarms the deadline of an operation that was dropped before it
    /// finished (so it can never shut a socket that is closed by then).
    pub fn disarm(&self) {
        self.deadline.at_ms.set(0);
        self.deadline.fired.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_only_after_the_deadline() {
        let d = Deadline::default();
        // An fd that is not a socket: shutdown fails harmlessly.
        d.fd.set(-1);
        d.at_ms.set(100);
        d.check(99);
        assert!(!d.fired.get());
        d.check(100);
        assert!(d.fired.get());
        assert_eq!(d.at_ms.get(), 0);
        // Disarmed deadlines never fire.
        d.fired.set(false);
        d.check(1_000_000);
        assert!(!d.fired.get());
    }

    #[test]
    fn scans_only_when_something_can_be_due() {
        set_next_due(u64::MAX);
        assert!(!due(1_000_000));
        let t = Timer {
            clock: Rc::new(Cell::new(1000)),
            deadline: Rc::new(Deadline::default()),
        };
        t.deadline.fd.set(-1);
        let op = t.run(-1, Shut::Read, Duration::from_millis(500), async {
            // Armed: due from 1501 on; a scan before reports it still armed.
            assert!(!due(1500) && due(1501));
            assert_eq!(t.deadline.check(1500), 1501);
        });
        let (_, r) = block_on_ready(op);
        assert!(r.is_ok());
        // Disarmed: a scan finds nothing armed.
        assert_eq!(t.deadline.check(5000), u64::MAX);
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
