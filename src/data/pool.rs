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
            let (old, _) = list.remove(0);
            abort_close(old);
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

/// Closes an idle, complete upstream connection with a reset instead of a
/// FIN: under churn (more concurrent requests than `keepalive`) this keeps
/// the proxy's side free of TIME_WAIT sockets and their ephemeral ports.
pub fn abort_close(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `stream`, which is dropped (closed) right after.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}
