//! The one link between a shard and the rest of the process.
//!
//! A shard is a thread that owns everything it touches; this file is the
//! whole of what crosses its boundary, so the contract can be read in one
//! place:
//!
//! | direction | what | how |
//! |---|---|---|
//! | in  | routing state, settings, draining | the [`SnapshotCell`] (lock-free load) |
//! | in  | listener changes of a reload | [`ShardLink::send_listener`], applied on the next tick |
//! | in  | stop: stop accepting, finish, exit | [`ShardLink::request_stop`] |
//! | out | connections left from before a wind-down, exchanges in flight | [`ShardLink::report_wind_down`] |
//! | out | heartbeat (progress) | [`ShardLink::heartbeat`], bumped every tick |
//! | out | passive-health failures | [`ShardLink::take_failures`] |
//! | out | exited | [`ShardLink::has_exited`] |
//!
//! Everything is written by one side and read by the other: atomics for the
//! per-tick facts, and two short mutexes that are touched only when
//! something happens (an upstream failure, a reload), never per request. No
//! method here blocks a shard on the control side: the control thread holds
//! these mutexes only to swap a vector out.
//!
//! The orchestrator ([`crate::runtime`]) holds both ends; control-plane
//! services get only narrow functions built from the control end (the way
//! VRRP tracking takes a `SampleFn`), so nothing in `control/` knows what a
//! shard is, and nothing in `data/` calls into the control plane.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::snapshot::SnapshotCell;

/// Pending passive-health reports kept per shard between two control ticks;
/// more are dropped (the window has long tripped by then).
pub const MAX_PENDING_FAILURES: usize = 4096;

/// An upstream server that failed a request (connect error, reset, timeout),
/// reported for the passive health window (`max_fails` / `fail_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFailure {
    pub upstream: Box<str>,
    pub addr: SocketAddr,
}

/// A change to a shard's listening sockets, sent by a reload; applied on the
/// shard's next tick.
pub enum ListenerCmd {
    /// Start accepting on this socket; requests find their routes by the
    /// configured address.
    Add(SocketAddr, std::net::TcpListener),
    /// Stop accepting on the listener configured with this address.
    Remove(SocketAddr),
}

/// What one shard shares with the control side. Created by the orchestrator,
/// one per shard.
#[derive(Default)]
pub struct ShardLink {
    stop: AtomicBool,
    heartbeat: AtomicU64,
    exited: AtomicBool,
    /// 0: no wind-down applied yet; else 1 + the connections open from
    /// before it.
    wind_down: AtomicU64,
    /// Client exchanges in flight, while winding down.
    busy: AtomicU64,
    failures: Mutex<Vec<UpstreamFailure>>,
    listener_cmds: Mutex<Vec<ListenerCmd>>,
}

fn unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shard side: what a shard publishes and receives.
impl ShardLink {
    /// Records progress (called every tick with the tick count).
    pub fn beat(&self, ticks: u64) {
        self.heartbeat.store(ticks, Ordering::Relaxed);
    }

    /// Reports an upstream failure for the passive health window. Touched
    /// only when a failure happens; bounded.
    pub fn report_failure(&self, upstream: &str, addr: SocketAddr) {
        let mut f = unpoisoned(&self.failures);
        if f.len() < MAX_PENDING_FAILURES {
            f.push(UpstreamFailure {
                upstream: upstream.into(),
                addr,
            });
        }
    }

    /// Listener changes sent since the last call.
    pub fn take_listener_changes(&self) -> Vec<ListenerCmd> {
        std::mem::take(&mut *unpoisoned(&self.listener_cmds))
    }

    /// Whether the shard was told to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// The shard has applied a wind-down snapshot, `old` connections it
    /// had before are still open and `busy` connections are in an exchange
    /// (reported every tick from then on).
    pub fn report_wind_down(&self, old: usize, busy: usize) {
        self.busy.store(busy as u64, Ordering::Relaxed);
        self.wind_down.store(old as u64 + 1, Ordering::Release);
    }

    /// The shard has left its runtime (drained, timed out, or failed to start).
    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
    }
}

/// Control side: what the orchestrator reads and sends.
impl ShardLink {
    /// The last heartbeat (0 until the first tick).
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    /// Connections still open from before the wind-down; `None` until the
    /// shard has applied it.
    pub fn wind_down_left(&self) -> Option<u64> {
        self.wind_down.load(Ordering::Acquire).checked_sub(1)
    }

    /// Client exchanges in flight at the last wind-down report (0 before).
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Failures reported since the last call.
    pub fn take_failures(&self) -> Vec<UpstreamFailure> {
        std::mem::take(&mut *unpoisoned(&self.failures))
    }

    /// Queues a listener change for the shard's next tick.
    pub fn send_listener(&self, cmd: ListenerCmd) {
        unpoisoned(&self.listener_cmds).push(cmd);
    }

    /// Tells the shard to stop accepting, finish what is in flight and exit.
    /// Publish the draining snapshot first: a shard that sees the stop also
    /// sees that snapshot (release/acquire).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Everything a shard is handed at start: its link and the snapshots.
#[derive(Clone)]
pub struct ShardEnd {
    pub link: Arc<ShardLink>,
    pub snapshots: SnapshotCell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wind_down_is_unknown_until_reported() {
        let l = ShardLink::default();
        assert_eq!((l.wind_down_left(), l.busy()), (None, 0));
        l.report_wind_down(3, 2);
        assert_eq!((l.wind_down_left(), l.busy()), (Some(3), 2));
        l.report_wind_down(0, 0);
        assert_eq!((l.wind_down_left(), l.busy()), (Some(0), 0));
    }

    #[test]
    fn failures_are_taken_once_and_bounded() {
        let l = ShardLink::default();
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..MAX_PENDING_FAILURES + 10 {
            l.report_failure("app", a);
        }
        let got = l.take_failures();
        assert_eq!(got.len(), MAX_PENDING_FAILURES);
        assert_eq!(
            got[0],
            UpstreamFailure {
                upstream: "app".into(),
                addr: a
            }
        );
        assert!(l.take_failures().is_empty());
    }

    #[test]
    fn listener_changes_arrive_in_order_once() {
        let l = ShardLink::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        l.send_listener(ListenerCmd::Remove(a));
        l.send_listener(ListenerCmd::Remove(b));
        let got: Vec<SocketAddr> = l
            .take_listener_changes()
            .into_iter()
            .map(|c| match c {
                ListenerCmd::Remove(x) | ListenerCmd::Add(x, _) => x,
            })
            .collect();
        assert_eq!(got, [a, b]);
        assert!(l.take_listener_changes().is_empty());
    }

    #[test]
    fn stop_heartbeat_and_exit_are_seen_by_the_other_side() {
        let l = ShardLink::default();
        assert!(!l.stop_requested() && !l.has_exited());
        assert_eq!(l.heartbeat(), 0);
        l.request_stop();
        l.beat(7);
        l.mark_exited();
        assert!(l.stop_requested() && l.has_exited());
        assert_eq!(l.heartbeat(), 7);
    }
}
