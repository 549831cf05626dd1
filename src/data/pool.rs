//! Per-shard pool of idle keep-alive connections to upstream servers.
//!
//! Each shard keeps its own pool (no sharing, no locks): a connection is
//! only ever used by the shard that opened it. A connection enters the pool
//! only after a complete, error-free exchange whose response allowed reuse
//! and left no byte unread (`proto::exchange::may_pool_upstream`); anything
//! else is closed.
//!
//! A pooled connection is never handed out dead or dirty: [`Pool::take`]
//! drops connections idle for longer than their upstream's
//! `keepalive_timeout` (which should stay below the backend's own idle
//! timeout, so the proxy closes first), then looks at the warmest one with
//! a non-blocking `recv(MSG_PEEK)`: end of stream means the backend closed
//! it while idle, and any byte means the backend sent more than its last
//! response (a later segment past `Content-Length`, or a body after a
//! HEAD/204/304) — bytes that must never become the answer to the next
//! request. Both are closed and counted, and the next one is tried. That
//! peek is one non-blocking syscall per reuse, the price of never sending
//! a request into a connection that is already gone.
//!
//! How many stay is `proto::pool_policy`: up to `keepalive` per server,
//! and above that for a short window (`SURPLUS_IDLE`), so a load above the
//! cap reuses its connections instead of closing one on every return and
//! opening one on the next take. Each server's list is oldest first; a
//! return closes the oldest while the policy says so (one comparison in the
//! common case), and the shard's periodic [`Pool::sweep`] does the same for
//! lists nobody returns to, and drops servers that vanished. Closing is a
//! reset ([`abort_close`]): no TIME_WAIT on the proxy's side.
//!
//! Idle connections are keyed by server address, so a reload that keeps a
//! server keeps its warm connections. Times are the shard's coarse
//! millisecond clock (no clock read per request).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::peek::peek;
use crate::proto::exchange::{pooled_verdict, Discard};
use crate::proto::pool_policy::{close_oldest, may_cache, Oldest};

/// A pooled connection: plain or TLS (`super::upstream`). TLS ones are
/// peeked the same way: a close_notify (bytes) or an end of stream while
/// idle makes them dead.
type TcpStream = super::upstream::UpStream;

/// Server address and TLS identity (`tls::upstream::UpstreamTls::pool_key`;
/// 0 for plain): a connection verified for one server name is never
/// reused for another.
pub type Key = (SocketAddr, u64);

struct Idle {
    stream: TcpStream,
    /// Coarse clock (ms) when it went idle.
    since_ms: u64,
    /// The upstream's `keepalive_timeout` when it was pooled, in ms.
    timeout_ms: u64,
}

/// One server's idle connections, oldest first, and its `keepalive`.
#[derive(Default)]
struct Servers {
    list: VecDeque<Idle>,
    keepalive: usize,
}

impl Servers {
    /// Closes the oldest connections while the policy says so.
    fn trim(&mut self, now_ms: u64) {
        while let Some(c) = self.list.front() {
            let oldest = Oldest {
                idle: self.list.len(),
                keepalive: self.keepalive,
                idle_for: Duration::from_millis(now_ms.saturating_sub(c.since_ms)),
                timeout: Duration::from_millis(c.timeout_ms),
            };
            if !close_oldest(oldest) {
                break;
            }
            if let Some(c) = self.list.pop_front() {
                abort_close(c.stream);
            }
        }
    }
}

#[derive(Default)]
pub struct Pool {
    /// Per server (and TLS identity), oldest first. Looked up twice per
    /// request: hashed with Fx, not SipHash (keys come from the config).
    idle: HashMap<Key, Servers, fxhash::FxBuildHasher>,
}

/// The result of [`Pool::take`]: a usable connection, if any, and how many
/// pooled ones were found expired, closed or dirty and dropped.
pub struct Taken {
    pub stream: Option<TcpStream>,
    pub discarded: u32,
}

impl Taken {
    /// No connection (none idle, or none wanted), nothing discarded.
    pub fn none() -> Taken {
        Taken {
            stream: None,
            discarded: 0,
        }
    }
}

impl Pool {
    /// The warmest idle connection to `addr` that may carry a request at
    /// coarse time `now_ms` (see the module docs); unusable ones met on
    /// the way are closed. One idle for `within` or longer is not taken
    /// but left for a request that may have a longer limit (a request that
    /// cannot be sent again gets a shorter one:
    /// `proto::pool_policy::reuse_within`).
    pub fn take(
        &mut self,
        addr: Key,
        now_ms: u64,
        keepalive_timeout: Duration,
        within: Duration,
    ) -> Taken {
        let mut discarded = 0;
        let Some(Servers { list, .. }) = self.idle.get_mut(&addr) else {
            return Taken::none();
        };
        while let Some(c) = list.back() {
            let idle_for = Duration::from_millis(now_ms.saturating_sub(c.since_ms));
            if within < keepalive_timeout && idle_for >= within {
                // The warmest is too old for this request, so are the rest.
                break;
            }
            let Some(c) = list.pop_back() else { break };
            match pooled_verdict(idle_for, keepalive_timeout, || peek(c.stream.as_raw_fd())) {
                Ok(()) => {
                    return Taken {
                        stream: Some(c.stream),
                        discarded,
                    }
                }
                Err(why) => {
                    discarded += 1;
                    if why == Discard::Expired {
                        abort_close(c.stream);
                    }
                }
            }
        }
        Taken {
            stream: None,
            discarded,
        }
    }

    /// Returns a connection at coarse time `now_ms`: it becomes the
    /// warmest; idle ones the policy no longer keeps (above `keepalive` for
    /// the surplus window, or expired) are closed, oldest first.
    /// `keepalive_timeout` 0 (or `keepalive` 0) keeps none.
    pub fn put(
        &mut self,
        addr: Key,
        stream: TcpStream,
        keepalive: usize,
        keepalive_timeout: Duration,
        now_ms: u64,
    ) {
        if !may_cache(keepalive, keepalive_timeout) {
            return;
        }
        let s = self.idle.entry(addr).or_default();
        s.keepalive = keepalive;
        s.list.push_back(Idle {
            stream,
            since_ms: now_ms,
            timeout_ms: keepalive_timeout.as_millis() as u64,
        });
        s.trim(now_ms);
    }

    /// Closes idle connections the policy no longer keeps at coarse time
    /// `now_ms`, and those to servers for which `keep(addr)` is false.
    pub fn sweep(&mut self, now_ms: u64, keep: impl Fn(SocketAddr) -> bool) {
        self.idle.retain(|addr, s| {
            if !keep(addr.0) {
                return false;
            }
            s.trim(now_ms);
            !s.list.is_empty()
        });
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(|s| s.list.len()).sum()
    }

    pub fn clear(&mut self) {
        self.idle.clear();
    }
}

/// Closes an idle, complete upstream connection with a reset instead of a
/// FIN: under churn (more concurrent requests than `keepalive`) this keeps
/// the proxy's side free of TIME_WAIT sockets and their ephemeral ports.
pub fn abort_close(stream: TcpStream) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected loopback pair: (pooled side as a monoio stream, peer).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// A connection idle for longer than a request's limit is left in the
    /// pool (open) for a request with a longer one.
    #[test]
    fn a_connection_too_old_for_one_request_stays_for_the_next() {
        let mut rt = crate::runtime::ring::build_epoll().unwrap();
        rt.block_on(async {
            let mut pool = Pool::default();
            let addr: Key = ("127.0.0.1:9".parse().unwrap(), 0);
            let t = Duration::from_secs(60);
            let (a, _peer) = pair();
            let a = monoio::net::TcpStream::from_std(a).unwrap();
            pool.put(addr, super::super::upstream::UpStream::Plain(a), 2, t, 0);
            let short = pool.take(addr, 600, t, Duration::from_millis(500));
            assert!(short.stream.is_none() && short.discarded == 0);
            assert_eq!(pool.idle_count(), 1, "left, not closed");
            assert!(pool.take(addr, 600, t, t).stream.is_some());
            assert_eq!(pool.idle_count(), 0);
        });
    }

    /// Above the cap, returned connections stay for the surplus window and
    /// then the oldest are reset, down to the cap.
    #[test]
    fn surplus_stays_for_the_window_then_the_oldest_are_reset() {
        use std::io::Read;
        let mut rt = crate::runtime::ring::build_epoll().unwrap();
        rt.block_on(async {
            let mut pool = Pool::default();
            let addr: Key = ("127.0.0.1:9".parse().unwrap(), 0);
            let t = Duration::from_secs(60);
            let mut peers = Vec::new();
            for i in 0..5u64 {
                let (a, b) = pair();
                peers.push(b);
                let a = monoio::net::TcpStream::from_std(a).unwrap();
                pool.put(addr, super::super::upstream::UpStream::Plain(a), 2, t, i);
            }
            assert_eq!(pool.idle_count(), 5, "a burst above the cap is kept");
            pool.sweep(1000, |_| true);
            assert_eq!(pool.idle_count(), 4, "only the oldest has been idle 1 s");
            pool.sweep(1004, |_| true);
            assert_eq!(pool.idle_count(), 2, "down to the cap, not below");
            pool.sweep(50_000, |_| true);
            assert_eq!(pool.idle_count(), 2);
            for (i, p) in peers.iter_mut().enumerate() {
                p.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let r = p.read(&mut [0u8; 1]);
                if i < 3 {
                    let e = r.expect_err("evicted: reset");
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "peer {i}");
                } else {
                    let e = r.expect_err("kept: still open, nothing to read");
                    assert!(
                        matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                        "peer {i}: {e:?}"
                    );
                }
            }
            // The warmest comes back first.
            let Some(super::super::upstream::UpStream::Plain(got)) =
                pool.take(addr, 50_001, t, t).stream
            else {
                panic!("a pooled plain connection");
            };
            assert_eq!(
                got.peer_addr().unwrap(),
                peers[4].local_addr().unwrap(),
                "the last returned is taken first"
            );
        });
    }
}
