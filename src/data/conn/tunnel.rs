//! After `101 Switching Protocols` (WebSocket and other upgrades): bytes
//! are copied both ways ([`tunnel`]) until both sides are done, or until
//! nothing moved either way for `[http] tunnel_timeout`. A tunnel keeps
//! its client connection's slot, so it counts against `max_connections`.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::Client;
use crate::data::upstream::UpStream;

/// After `101 Switching Protocols`: copy bytes both ways until both sides
/// are done, or nothing moved either way for `idle_limit`.
pub(super) async fn tunnel(mut c: Client, upstream: UpStream, idle_limit: Duration) {
    // Bytes the client sent after its request head belong to the new protocol.
    let mut early = Vec::new();
    early.extend_from_slice(c.rbuf.data());
    c.rbuf.consume(c.rbuf.len());
    let mut upstream = upstream;
    if !early.is_empty() && upstream.write_all(early).await.0.is_err() {
        return;
    }
    let fds = [c.stream.as_raw_fd(), upstream.as_raw_fd()];
    let idle = Idle {
        clock: Rc::clone(&c.timer.clock),
        last_ms: Cell::new(c.timer.clock.get()),
        limit: idle_limit,
        fds,
    };
    let (mut cr, mut cw) = c.stream.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let a = copy_until_idle(&mut cr, &mut uw, &idle);
    let b = copy_until_idle(&mut ur, &mut cw, &idle);
    monoio::join!(a, b);
}

/// The idle clock shared by the two directions of a tunnel.
struct Idle {
    /// The shard's coarse clock (ms).
    pub(super) clock: Rc<Cell<u64>>,
    pub(super) last_ms: Cell<u64>,
    pub(super) limit: Duration,
    /// Both sockets, shut down when the tunnel has been idle too long.
    pub(super) fds: [RawFd; 2],
}

impl Idle {
    /// Time left before the tunnel counts as idle.
    pub(super) fn left(&self) -> Duration {
        let idle = self.clock.get().saturating_sub(self.last_ms.get());
        self.limit.saturating_sub(Duration::from_millis(idle))
    }
}

async fn copy_until_idle<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, idle: &Idle) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let left = idle.left();
        if left.is_zero() {
            // Idle both ways: end both directions.
            for fd in idle.fds {
                // SAFETY: both sockets are open for the whole tunnel.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
            break;
        }
        let (res, b) = match monoio::time::timeout(left, r.read(buf)).await {
            Ok(x) => x,
            Err(_) => {
                // This direction was quiet; the other may not have been.
                buf = Vec::with_capacity(16 * 1024);
                continue;
            }
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => idle.last_ms.set(idle.clock.get()),
        }
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
