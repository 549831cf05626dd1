//! The keep-alive loop of one client connection ([`drive`]) and the wait
//! between its requests.
//!
//! Each turn of the loop is one exchange (`one_request` in the parent).
//! Between exchanges the connection waits for its next request in one of
//! three ways: a busy one (its last [`HOT_STREAK`] requests each came
//! within [`HOT_GAP_MS`] of the previous response) reads directly, saving
//! an operation per request; any other one that has had an exchange is
//! parked outside any task in the shard's parked set (`idle.rs`), so an
//! idle client holds no task and no buffer; a new connection, and one that
//! holds more than its socket (a private upstream connection, unread
//! bytes), waits for readiness in its task, with every buffer given back.
//!
//! A connection whose request body was left unread ends with a lingering
//! close ([`linger`]), as nginx's does, so that its close does not reset
//! the connection before the client has read the response.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::request::wait_readable;
use super::tunnel::tunnel;
use super::{one_request, transition, Client, Next};
use crate::data::client_stream::ClientStream;
use crate::data::deadline::Shut;
use crate::data::shard::{Shard, Slot};
use crate::metrics::ConnState;

/// The keep-alive loop of a connection, until it closes or parks.
/// `woken`: the socket is known readable (a resumed parked connection).
pub(super) fn drive(
    mut c: Client,
    shard: Rc<Shard>,
    slot: Slot,
    mut state: ConnState,
    listen: SocketAddr,
    mut woken: bool,
) -> impl Future<Output = ()> {
    if woken {
        c.unpark();
    }
    // Not an `async fn`: its arguments would be stored twice in the task
    // (once as arguments, once as locals); the block uses them in place.
    async move {
        // `slot` unregisters on every exit, including unwinding from a panic.
        loop {
            // Keep-alive: an idle connection waits here, holding no buffer
            // (or parks outside its task, `idle.rs`). A request runs in the
            // task's own state, not boxed: a box per request cost an
            // allocation and a move of the future (measured at 1000
            // clients: 30.9 → 21.2 µs of CPU per request).
            if c.rbuf.is_empty() && !std::mem::take(&mut woken) {
                if shard.draining() {
                    break;
                }
                match wait_idle(&shard, &mut c, &mut state).await {
                    IdleWait::Ready => {}
                    IdleWait::Closed => break,
                    IdleWait::Park(limit) => {
                        park(&shard, c, slot, limit);
                        return;
                    }
                }
            }
            let (next, tunnel_timeout) = one_request(&shard, &mut c, &mut state, listen).await;
            match next {
                Next::KeepAlive if !shard.keep_alive_off(&c.timer) => continue,
                Next::KeepAlive | Next::Close => break,
                Next::Linger => {
                    Box::pin(linger(&mut c)).await;
                    break;
                }
                Next::Tunnel(upstream) => {
                    Box::pin(tunnel(c, upstream, tunnel_timeout)).await;
                    shard.rec.borrow_mut().on_close(state);
                    return;
                }
            }
        }
        if let ClientStream::Tls(s) = &mut c.stream {
            Box::pin(s.close_notify(&c.timer)).await;
        }
        c.park();
        shard.rec.borrow_mut().on_close(state);
    }
}

/// Moves an idle connection into the shard's parked set, its idle deadline
/// (`limit`) armed on its slot; the task then ends. A connection the set
/// refuses (the kernel's epoll limits) is closed, as nginx would.
fn park(shard: &Shard, c: Client, slot: Slot, limit: Duration) {
    let fd = c.stream.as_raw_fd();
    let timer = slot.timer.clone();
    let (p, rearm) = c.into_parked(slot);
    timer.arm(fd, Shut::Read, limit);
    if !shard.parked.park(p, rearm) {
        shard.rec.borrow_mut().on_close(ConnState::Waiting);
    }
}

/// How an idle wait ended.
enum IdleWait {
    /// Bytes to read (or a busy client that reads directly).
    Ready,
    /// Closed or timed out.
    Closed,
    /// Wait outside the task, in the shard's parked set, at most this long.
    Park(Duration),
}

/// Waits until an idle keep-alive connection (empty receive buffer) has
/// bytes to read, with every buffer given back, or says to park it.
async fn wait_idle(shard: &Shard, c: &mut Client, state: &mut ConnState) -> IdleWait {
    c.idle_since = c.timer.clock.get();
    c.timer.set_idle_since(c.idle_since);
    transition(shard, state, ConnState::Waiting);
    let limit = {
        let view = shard.view();
        let http = &view.snap.config.http;
        if c.requests == 0 {
            // The first request is a head like any other: it gets
            // `client_header_timeout`, also when keep-alive is off.
            http.client_header_timeout
        } else {
            http.keepalive_timeout
        }
    };
    if read_directly(c.streak) {
        // A busy client: its next request is a read away (read_head's,
        // with this same limit); a readiness wait would cost an io_uring
        // operation per request.
        return IdleWait::Ready;
    }
    c.park();
    // A new connection waits for its first request in its task: parking
    // it would add an epoll registration and a second task before it.
    if c.requests > 0 && c.parkable() {
        return IdleWait::Park(limit);
    }
    if wait_readable(&mut c.stream, &c.timer, limit).await {
        c.unpark();
        IdleWait::Ready
    } else {
        IdleWait::Closed
    }
}

/// A request that arrives within this long of the previous response (shard
/// ticks: 10 ms) counts towards a connection's busy streak.
///
/// The gap is what the shard sees: from its last write to the moment it
/// reads the next request, so it includes how long that request waited in
/// this shard's own queue. Under load that wait is most of it (1000 busy
/// clients on one shard: ~30 ms at p50), and with a 20 ms bound every busy
/// connection was parked after each request: an `epoll_ctl`, an epoll
/// event and a new task per request, which made the shard slower and the
/// waits longer still (measured: 0.8 `epoll_ctl` per request, ~8% more CPU
/// per request, and runs that settled in either state). 200 ms keeps busy
/// clients hot well past that; a client idle for longer than a blink still
/// parks after its next request.
const HOT_GAP_MS: u64 = 200;
/// Busy streak after which a connection reads its next request directly.
const HOT_STREAK: u32 = 4;

/// Whether a keep-alive connection waits for its next request with a read
/// (holding its receive buffer) rather than a readiness wait (holding
/// none). Only a connection whose last [`HOT_STREAK`] requests each came
/// within [`HOT_GAP_MS`] of the previous response does: for it the read
/// saves an operation per request, and the buffer is in use anyway. One
/// slower request ends the streak: a busy client that goes quiet holds its
/// receive buffer through that one wait (at most `keepalive_timeout`), and
/// none after its next request.
fn read_directly(streak: u32) -> bool {
    streak >= HOT_STREAK
}

/// The busy streak after a request arrived `gap_ms` after the connection
/// went idle.
pub(super) fn next_streak(streak: u32, gap_ms: u64) -> u32 {
    if gap_ms <= HOT_GAP_MS {
        streak.saturating_add(1)
    } else {
        0
    }
}

/// Lingering close (nginx's `lingering_time` / `lingering_timeout`): how
/// long a client's unread body is drained after the final response, and
/// how long one read of it may wait.
const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_READ: Duration = Duration::from_secs(5);

/// Closes a client connection whose request body was not read: stop
/// sending, then drain what it still sends for a while, so that closing
/// does not reset the connection before the client read the response.
async fn linger(c: &mut Client) {
    let stream: &mut TcpStream = match &mut c.stream {
        ClientStream::Plain(s) => s,
        ClientStream::Tls(s) => s.linger_socket(&c.timer).await,
    };
    // SAFETY: the fd belongs to `c.stream`, open for the whole call.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    let until = Instant::now() + LINGER_TIME;
    c.rbuf.consume(c.rbuf.len());
    while Instant::now() < until {
        if c.rbuf.fill(stream, &c.timer, LINGER_READ).await.is_err() {
            break;
        }
        c.rbuf.consume(c.rbuf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::{next_streak, read_directly, HOT_GAP_MS, HOT_STREAK};

    #[test]
    fn only_a_busy_streak_reads_directly() {
        for (streak, direct) in [(0, false), (HOT_STREAK - 1, false), (HOT_STREAK, true)] {
            assert_eq!(read_directly(streak), direct, "streak {streak}");
        }
        for (streak, gap, next) in [
            (0, 0, 1),
            (3, HOT_GAP_MS, 4),
            // 1000 busy clients on one shard: requests wait ~30-100 ms in
            // its queue, and the connection stays hot.
            (4, 100, 5),
            (4, HOT_GAP_MS + 1, 0),
            (9, 75_000, 0),
            (u32::MAX, 0, u32::MAX),
        ] {
            assert_eq!(next_streak(streak, gap), next, "streak {streak} gap {gap}");
        }
        // One GET, then idle (the memory benchmark's client): never direct.
        assert!(!read_directly(next_streak(0, 0)));
    }
}
