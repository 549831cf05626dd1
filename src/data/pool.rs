//! Per-shard pool of idle keep-alive connections to upstream servers.
//!
//! Each shard keeps its own pool (no sharing, no locks): a connection is
//! only ever used by the shard that opened it. A connection enters the pool
//! only after a complete, error-free exchange whose response allowed reuse;
//! anything else is closed. Idle connections are keyed by server address, so
//! a reload that keeps a server keeps its warm connections, and connections
//! to servers that vanished are closed by the idle sweep.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

/// Idle connections older than this are closed by the sweep, whatever the
/// upstream's own keep-alive timeout (most servers use 60 s or more).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Pool {
    idle: HashMap<SocketAddr, Vec<(TcpStream, Instant)>>,
}

impl Pool {
    /// Most recently used idle connection to `addr` (warmest first).
    pub fn take(&mut self, addr: SocketAddr) -> Option<TcpStream> {
        self.idle.get_mut(&addr)?.pop().map(|(s, _)| s)
    }

    /// Returns a connection; beyond `cap` idle ones the oldest is closed.
    pub fn put(&mut self, addr: SocketAddr, stream: TcpStream, cap: usize, now: Instant) {
        if cap == 0 {
            return;
        }
        let list = self.idle.entry(addr).or_default();
        if list.len() >= cap {
            list.remove(0);
        }
        list.push((stream, now));
    }

    /// Closes connections idle since before `now - IDLE_TIMEOUT` and those to
    /// servers for which `keep(addr)` is false.
    pub fn sweep(&mut self, now: Instant, keep: impl Fn(SocketAddr) -> bool) {
        self.idle.retain(|addr, list| {
            if !keep(*addr) {
                return false;
            }
            list.retain(|(_, since)| now.saturating_duration_since(*since) < IDLE_TIMEOUT);
            !list.is_empty()
        });
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    pub fn clear(&mut self) {
        self.idle.clear();
    }
}
