//! The decisions of one proxied exchange, as small pure functions.
//!
//! The I/O driver (`data::conn`) does the reading and writing; every
//! choice that decides whether a client ever sees a 502, or whether a
//! backend ever sees a request twice, is made here, from plain facts, and
//! is tested with a table of cases:
//!
//! - [`pooled_verdict`]: may an idle pooled upstream connection carry the
//!   next request? Not when it is older than the upstream's
//!   `keepalive_timeout`, nor when a non-blocking peek sees end of stream
//!   (the backend closed it while idle) or unread bytes (it sent more than
//!   the last response: those bytes must never become the next answer).
//! - [`retry`]: may a failed attempt be tried again, and where? A request
//!   whose bytes never left may always go again; one that may have reached
//!   the backend only when its method is idempotent, and only while its
//!   whole body is still buffered (a streamed body is gone).
//! - [`may_pool_upstream`] / [`may_keep_client`]: what happens to each
//!   connection once the response has been relayed.
//! - [`body_out`]: how a response body is framed for the client; a
//!   close-delimited one is re-chunked for an HTTP/1.1 client, so only the
//!   upstream connection has to close.
//! - [`counts_against_server`]: whether a failure is the server's (towards
//!   `max_fails`) or ours (a local resource shortage) or the ordinary race
//!   of a keep-alive connection closed by the backend while idle.
//!
//! - [`body_step`]: request-body buffering (nginx's
//!   `proxy_request_buffering`). Before an upstream is chosen, the body is
//!   read into the client's buffer up to `request_buffer_size`, so a slow
//!   client holds no upstream connection and a whole buffered body stays
//!   replayable; a body that outgrows the cap, or that would take the
//!   shard past its buffer budget, is streamed from that point.
//!
//! - [`client_gone`] / [`client_watch_at`]: has a client that waits for
//!   its response gone away (nginx's 499)? Looked at only once the wait
//!   has lasted [`CLIENT_WATCH_MS`], then every as long, so a response
//!   that comes in time costs nothing.
//!
//! - [`too_many_interim`]: a backend may send informational (1xx)
//!   responses before its final one; past [`MAX_INTERIM`] of them it is
//!   flooding (or looping), and the request gets a 502.
//! - [`linger_after_refusal`]: a request refused before its body was read
//!   (a bad head, bad chunked framing, a body over the limit) closes its
//!   connection with a lingering close, so the client reads the answer.
//!
//! [`Tried`] is the set of servers already tried for one request: a bitset
//! that keeps excluding servers past the 64th (kept per connection and
//! cleared per request, so no allocation per request).

use std::time::Duration;

use super::http1::encode::BodyOut;
use super::http1::{Framing, Version};

/// What a non-blocking peek at an idle pooled connection saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Nothing to read: the connection is idle and open.
    Idle,
    /// End of stream: the backend closed it.
    Eof,
    /// Bytes the backend sent after its last response.
    Unread,
    /// A socket error (reset…).
    Error,
}

/// Why a pooled connection was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Idle longer than the upstream's `keepalive_timeout`.
    Expired,
    /// Closed or reset by the backend while idle.
    Closed,
    /// Holds bytes no request asked for.
    Dirty,
}

/// Whether an idle connection may carry a request. `peek` is only looked
/// at when the connection is not already too old (a caller may skip the
/// syscall then).
pub fn pooled_verdict(
    idle_for: Duration,
    keepalive_timeout: Duration,
    peek: impl FnOnce() -> Peek,
) -> Result<(), Discard> {
    if idle_for >= keepalive_timeout {
        return Err(Discard::Expired);
    }
    match peek() {
        Peek::Idle => Ok(()),
        Peek::Eof | Peek::Error => Err(Discard::Closed),
        Peek::Unread => Err(Discard::Dirty),
    }
}

/// How far request bytes got before an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Nothing left the proxy (connect failed, or the very first write
    /// failed): the backend cannot have seen the request.
    Nothing,
    /// Some bytes may have reached the backend.
    Maybe,
}

/// The facts about one failed attempt (no response byte went to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub sent: Sent,
    /// GET, HEAD, PUT, DELETE, OPTIONS, TRACE (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// The whole request (head and body) is still in the receive buffer.
    pub buffered: bool,
    /// The attempt used a pooled connection and failed before any response
    /// byte: most likely the backend closed it while idle.
    pub stale: bool,
    /// The server reset the connection before any response byte, without
    /// taking the whole request (an RST, or a write it refused): not a
    /// clean close after reading it, not a timeout, not a refused connect.
    pub reset: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Answer the client with an error.
    No,
    /// The same server again on a new connection (not another pooled one:
    /// a backend closing idle connections closes them all); not counted as
    /// a try.
    Fresh,
    /// Another server (counted against `retries`); when every server was
    /// tried already, the client gets the error.
    Next,
    /// Another server, or when every server was tried already (a lone
    /// server), one of them again; counted against `retries`.
    NextOrAgain,
}

/// May the failed attempt be tried again? `tries` is how many counted
/// attempts were made so far, `retries` the upstream's limit, and
/// `fresh_left` how many not-counted fresh-connection retries remain.
///
/// A server that resets a connection before answering may go again even
/// when it is the only one (nginx has nowhere to go and answers 502): an
/// application server restarting its workers as planned (gunicorn's
/// `max_requests`, `kill -HUP`) drops the connections an exiting worker had
/// just accepted, unread, which the kernel answers with a reset, and the
/// next connection reaches a live worker. A server that read the request
/// and then closed cleanly is not asked again (it may fail on that very
/// request: nginx and haproxy do not resend it either), nor is one that
/// timed out or refused the connect: it would only wait or fail once more.
pub fn retry(f: Failed, tries: u32, retries: u32, fresh_left: u32) -> Retry {
    if !f.buffered {
        // The body was streamed: there is nothing left to send again.
        return Retry::No;
    }
    if f.sent == Sent::Maybe && !f.idempotent {
        // The backend may have acted on it; never replay.
        return Retry::No;
    }
    if f.stale && fresh_left > 0 {
        return Retry::Fresh;
    }
    match (tries <= retries, f.reset) {
        (false, _) => Retry::No,
        (true, false) => Retry::Next,
        (true, true) => Retry::NextOrAgain,
    }
}

/// Whether a failure counts against the server's `max_fails`. Local
/// resource errors are ours; a pooled connection failing before any
/// response byte is the idle-close race, not a sick server.
pub fn counts_against_server(local: bool, stale: bool) -> bool {
    !local && !stale
}

/// How the exchange ended, for the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamEnd {
    /// The response allows reuse (version, `Connection`, framing).
    pub response_keep_alive: bool,
    /// The response body was relayed completely.
    pub response_complete: bool,
    /// The whole request body was sent (false after an early response).
    pub request_complete: bool,
    /// Bytes beyond the response are buffered.
    pub leftover: bool,
    pub draining: bool,
}

/// May the upstream connection go back to the pool?
pub fn may_pool_upstream(e: UpstreamEnd) -> bool {
    e.response_keep_alive && e.response_complete && e.request_complete && !e.leftover && !e.draining
}

/// How the exchange ended, for the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEnd {
    /// The client's request allows keep-alive.
    pub request_keep_alive: bool,
    /// `keepalive_timeout` is not zero.
    pub keepalive_enabled: bool,
    /// The whole request body was read from the client.
    pub request_read: bool,
    /// The response is delimited by the connection closing.
    pub close_delimited: bool,
    pub draining: bool,
}

/// May the client connection carry another request?
pub fn may_keep_client(e: ClientEnd) -> bool {
    e.request_keep_alive
        && e.keepalive_enabled
        && e.request_read
        && !e.close_delimited
        && !e.draining
}

/// How a response body framed as `upstream` crosses to a client speaking
/// `client`. `transfer_coded`: the upstream's head names a transfer coding
/// (a close-delimited body under `Transfer-Encoding: gzip` is not re-framed:
/// its coding would have to be listed before `chunked`, and nginx refuses
/// such a response outright).
///
/// - Chunked to an HTTP/1.0 client: de-chunked, delimited by the close.
/// - Close-delimited to an HTTP/1.1 client: chunked, a chunk per read, so
///   the client connection stays open (only the upstream one closes) and a
///   body cut short shows as a missing last chunk, as behind nginx.
/// - Close-delimited to an HTTP/1.0 client: as it came, then the close.
/// - Anything else (a length, chunked to HTTP/1.1, no body): as it came.
pub fn body_out(upstream: Framing, client: Version, transfer_coded: bool) -> BodyOut {
    match (upstream, client) {
        (Framing::Chunked, Version::Http10) => BodyOut::Dechunk,
        (Framing::Close, Version::Http11) if !transfer_coded => BodyOut::Rechunk,
        (Framing::Close, _) => BodyOut::UntilClose,
        (Framing::None | Framing::Length(_) | Framing::Chunked, _) => BodyOut::AsIs,
    }
}

/// How long a response may be awaited before the client is first looked
/// at, and then between looks (the shard's tick does it: no syscall on a
/// request answered sooner). nginx looks whenever epoll reports the
/// client's FIN; one second later is soon enough to free a backend worker
/// that is tied to a client that left.
pub const CLIENT_WATCH_MS: u64 = 1000;

/// When a wait that starts at `now_ms` (coarse clock) first looks at the
/// client, and when the next look comes after one at `now_ms`.
pub fn client_watch_at(now_ms: u64) -> u64 {
    now_ms + CLIENT_WATCH_MS
}

/// Whether a client whose response is awaited has gone, from a
/// non-blocking peek at its socket: the exchange is then abandoned and the
/// upstream connection closed (the backend sees its client leave, as
/// behind nginx with `proxy_ignore_client_abort off`).
///
/// - Nothing to read (`Idle`): still there.
/// - A reset or socket error: gone.
/// - End of stream with nothing before it: gone — the client closed, or
///   half-closed after its request (`shutdown(SHUT_WR)`), which nginx
///   treats as gone too. Unless it pipelined requests that are buffered
///   already (`pipelined`): those are owed answers, and a half-closed
///   socket can still receive them.
/// - Bytes to read (`Unread`): a plain client pipelining its next request,
///   not an abort, even if its FIN follows. A TLS client's bytes are
///   records that cannot be told apart unread (a `close_notify` or a next
///   request): it is gone when the end of stream follows them (`hup`,
///   asked only then).
pub fn client_gone(peek: Peek, tls: bool, pipelined: bool, hup: impl FnOnce() -> bool) -> bool {
    match peek {
        Peek::Idle => false,
        Peek::Error => true,
        Peek::Eof => !pipelined,
        Peek::Unread => tls && !pipelined && hup(),
    }
}

/// Most informational (1xx) responses taken from a backend for one
/// request: as many as CPython's `http.client` and Ruby's `net/http`
/// accept before they give up (100). `100 Continue` and `103 Early Hints`
/// come once or twice, and a WebDAV server may send `102 Processing` now
/// and then through a long operation, well within it. Neither nginx 1.22
/// (it takes the first 1xx for the final response) nor haproxy 2.6 (it
/// relays them all) bounds them; without a bound a backend that loops on
/// them holds the exchange forever, each one resetting `read_timeout`.
pub const MAX_INTERIM: u32 = 100;

/// Whether `seen` interim responses (counting the one just decoded) are
/// more than a backend may send before its final response: the exchange
/// then fails as a malformed response (502, the connection closed).
pub fn too_many_interim(seen: u32) -> bool {
    seen > MAX_INTERIM
}

/// Whether a connection whose request was refused before its body was
/// read (or with no request head at all) ends with a lingering close,
/// given the status it was answered with (0: none). A refused head (400,
/// 414, 431, 501, 505…), chunked framing refused before any body was read
/// (400) or a body over the limit (413) may be followed by bytes the
/// client already sent or is still sending (the rest of a long line, a
/// body, pipelined requests): closing with them unread resets the
/// connection, and a client still writing its body meets the reset before
/// it reads the answer (a TLS client cannot read past it at all). A
/// silent close (nothing answered) or a 408 (the client sent nothing more
/// in time) has nothing to protect.
pub fn linger_after_refusal(status: u16) -> bool {
    status != 0 && status != 408
}

/// The facts about a request body before an upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFacts {
    /// `request_buffering` is on.
    pub buffering: bool,
    /// The whole body is buffered (or there is none).
    pub complete: bool,
    /// Body bytes buffered so far (wire bytes: chunk framing included).
    pub buffered: usize,
    /// `request_buffer_size`: most body bytes buffered before streaming.
    pub cap: usize,
    /// Free bytes in the buffer: a read needs no new memory.
    pub room: usize,
    /// Bytes the buffer would take from the shard's budget to grow (0: it
    /// cannot grow).
    pub grow: usize,
    /// What is left of the shard's budget for request-body buffers.
    pub budget_left: usize,
}

/// What to do next with a request body before an upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStep {
    /// Everything is buffered: send it (the request stays replayable).
    Send,
    /// Read more of the body from the client first.
    Read,
    /// Connect now and stream the rest (buffering off, the cap reached, or
    /// the shard's budget spent).
    Stream,
}

/// Buffer this body further, send it, or stream it from here?
pub fn body_step(f: BodyFacts) -> BodyStep {
    if f.complete {
        BodyStep::Send
    } else if !f.buffering || f.buffered >= f.cap {
        BodyStep::Stream
    } else if f.room > 0 || (f.grow > 0 && f.grow <= f.budget_left) {
        BodyStep::Read
    } else {
        BodyStep::Stream
    }
}

/// `request_buffer_size` counts body bytes; a buffer holds wire bytes. A
/// chunked body's wire bytes carry its framing too (size lines and CRLFs:
/// ~0.01% with 64 KiB chunks, under 1% with 1 KiB ones), so its cap gets
/// an eighth more room: a chunked body of up to `cap` bytes in chunks of
/// 64 bytes or more is still buffered whole (and sent with a
/// `Content-Length`) rather than streamed for its framing.
pub fn wire_cap(cap: usize, chunked: bool) -> usize {
    if chunked {
        cap.saturating_add(cap / 8)
    } else {
        cap
    }
}

/// How large the client buffer may grow while a body is buffered: the
/// head, then at most `cap` body bytes.
pub fn buffer_limit(head_len: usize, cap: usize, head_limit: usize) -> usize {
    head_len.saturating_add(cap).max(head_limit)
}

/// Servers already tried for one request. Indexes below 64 live in one
/// word; beyond, in a vector that is allocated once per connection and
/// only for upstreams that large.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    low: u64,
    high: Vec<u64>,
}

impl Tried {
    /// Forgets every server (a new request).
    #[inline]
    pub fn clear(&mut self) {
        self.low = 0;
        self.high.iter_mut().for_each(|w| *w = 0);
    }

    #[inline]
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
        } else {
            let w = i / 64 - 1;
            if self.high.len() <= w {
                self.high.resize(w + 1, 0);
            }
            self.high[w] |= 1 << (i % 64);
        }
    }

    #[inline]
    pub fn remove(&mut self, i: usize) {
        if i < 64 {
            self.low &= !(1 << i);
        } else if let Some(w) = self.high.get_mut(i / 64 - 1) {
            *w &= !(1 << (i % 64));
        }
    }

    #[inline]
    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.high
                .get(i / 64 - 1)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pooled_connections() {
        use Peek::*;
        let cases = [
            // (idle for, keepalive_timeout, peek, verdict)
            (0, 4, Idle, Ok(())),
            (3, 4, Idle, Ok(())),
            (4, 4, Idle, Err(Discard::Expired)),
            (9, 4, Eof, Err(Discard::Expired)),
            (1, 4, Eof, Err(Discard::Closed)),
            (1, 4, Error, Err(Discard::Closed)),
            (1, 4, Unread, Err(Discard::Dirty)),
            (0, 0, Idle, Err(Discard::Expired)),
        ];
        for (idle, timeout, peek, want) in cases {
            assert_eq!(
                pooled_verdict(idle * S, timeout * S, || peek),
                want,
                "{idle} {timeout} {peek:?}"
            );
        }
    }

    #[test]
    fn clients_that_are_gone() {
        use Peek::*;
        let cases = [
            // (peek, tls, pipelined, end of stream behind the bytes, gone)
            (Idle, false, false, false, false),
            (Idle, true, false, true, false),
            (Error, false, false, false, true),
            (Error, true, true, false, true),
            // Closed, or half-closed after the request (as nginx).
            (Eof, false, false, false, true),
            (Eof, true, false, false, true),
            // Half-closed after pipelining: the answers are still owed.
            (Eof, false, true, false, false),
            (Eof, true, true, false, false),
            // Pipelined bytes arriving (plain): never an abort.
            (Unread, false, false, false, false),
            (Unread, false, false, true, false),
            // TLS: a close_notify (or anything) then FIN is gone; bytes
            // without FIN are not.
            (Unread, true, false, true, true),
            (Unread, true, false, false, false),
            (Unread, true, true, true, false),
        ];
        for (peek, tls, pipelined, hup, want) in cases {
            assert_eq!(
                client_gone(peek, tls, pipelined, || hup),
                want,
                "{peek:?} tls {tls} pipelined {pipelined} hup {hup}"
            );
        }
        // The second syscall only for a TLS client with unread bytes.
        for peek in [Idle, Error, Eof] {
            client_gone(peek, true, false, || panic!("asked for {peek:?}"));
        }
        client_gone(Unread, false, false, || panic!("asked for a plain client"));
    }

    #[test]
    fn interim_responses_are_bounded() {
        for (seen, over) in [
            (1, false),
            (2, false),
            (99, false),
            (100, false),
            (101, true),
            (u32::MAX, true),
        ] {
            assert_eq!(too_many_interim(seen), over, "{seen}");
        }
    }

    #[test]
    fn a_refusal_lingers_a_silent_or_timed_out_close_does_not() {
        for (status, linger) in [
            (0, false),
            (408, false),
            (400, true),
            (413, true),
            (414, true),
            (431, true),
            (501, true),
            (505, true),
        ] {
            assert_eq!(linger_after_refusal(status), linger, "status {status}");
        }
    }

    #[test]
    fn clients_are_looked_at_only_after_a_second_of_waiting() {
        for (now, at) in [(0, 1000), (5, 1005), (60_000, 61_000)] {
            assert_eq!(client_watch_at(now), at);
        }
    }

    #[test]
    fn expired_connections_are_not_peeked() {
        let r = pooled_verdict(5 * S, 4 * S, || panic!("peeked"));
        assert_eq!(r, Err(Discard::Expired));
    }

    #[test]
    fn retries() {
        use Retry::*;
        use Sent::*;
        let f = |sent, idempotent, buffered, stale| Failed {
            sent,
            idempotent,
            buffered,
            stale,
            reset: false,
        };
        let reset = |sent, idempotent, stale| Failed {
            reset: true,
            ..f(sent, idempotent, true, stale)
        };
        let cases = [
            // (failure, tries, retries, fresh_left, decision)
            // Nothing sent: any method goes again.
            (f(Nothing, false, true, false), 1, 1, 2, Next),
            (f(Nothing, false, true, true), 1, 0, 2, Fresh),
            (f(Nothing, true, true, false), 2, 1, 2, No),
            // Sent POST: never again, stale or not.
            (f(Maybe, false, true, true), 1, 5, 2, No),
            (f(Maybe, false, true, false), 1, 5, 2, No),
            // Sent GET: again while buffered.
            (f(Maybe, true, true, true), 1, 0, 2, Fresh),
            (f(Maybe, true, true, true), 1, 0, 0, No),
            (f(Maybe, true, true, true), 1, 1, 0, Next),
            (f(Maybe, true, true, false), 1, 1, 2, Next),
            (f(Maybe, true, true, false), 2, 1, 2, No),
            // Streamed body: gone.
            (f(Maybe, true, false, true), 1, 5, 2, No),
            (f(Nothing, false, false, false), 1, 5, 2, No),
            // Reset before answering (the request unread): the same server may go again.
            (reset(Maybe, true, false), 1, 1, 2, NextOrAgain),
            (reset(Maybe, true, true), 1, 1, 0, NextOrAgain),
            (reset(Maybe, true, true), 1, 1, 2, Fresh),
            (reset(Nothing, false, false), 1, 1, 2, NextOrAgain),
            (reset(Maybe, true, false), 2, 1, 2, No),
            (reset(Maybe, false, false), 1, 5, 2, No),
            (
                Failed {
                    buffered: false,
                    ..reset(Maybe, true, false)
                },
                1,
                5,
                2,
                No,
            ),
        ];
        for (failed, tries, retries, fresh, want) in cases {
            assert_eq!(
                retry(failed, tries, retries, fresh),
                want,
                "{failed:?} tries={tries} retries={retries} fresh={fresh}"
            );
        }
    }

    #[test]
    fn server_blame() {
        assert!(counts_against_server(false, false));
        assert!(!counts_against_server(true, false));
        assert!(!counts_against_server(false, true));
    }

    #[test]
    fn upstream_reuse() {
        let ok = UpstreamEnd {
            response_keep_alive: true,
            response_complete: true,
            request_complete: true,
            leftover: false,
            draining: false,
        };
        assert!(may_pool_upstream(ok));
        for bad in [
            UpstreamEnd {
                response_keep_alive: false,
                ..ok
            },
            UpstreamEnd {
                response_complete: false,
                ..ok
            },
            UpstreamEnd {
                request_complete: false,
                ..ok
            },
            UpstreamEnd {
                leftover: true,
                ..ok
            },
            UpstreamEnd {
                draining: true,
                ..ok
            },
        ] {
            assert!(!may_pool_upstream(bad), "{bad:?}");
        }
    }

    #[test]
    fn client_reuse() {
        let ok = ClientEnd {
            request_keep_alive: true,
            keepalive_enabled: true,
            request_read: true,
            close_delimited: false,
            draining: false,
        };
        assert!(may_keep_client(ok));
        for bad in [
            ClientEnd {
                request_keep_alive: false,
                ..ok
            },
            ClientEnd {
                keepalive_enabled: false,
                ..ok
            },
            ClientEnd {
                request_read: false,
                ..ok
            },
            ClientEnd {
                close_delimited: true,
                ..ok
            },
            ClientEnd {
                draining: true,
                ..ok
            },
        ] {
            assert!(!may_keep_client(bad), "{bad:?}");
        }
    }

    #[test]
    fn response_bodies_for_each_client() {
        use BodyOut::*;
        use Framing as F;
        use Version::*;
        let cases = [
            // (upstream framing, client version, transfer-coded, out, client may keep)
            (F::Close, Http11, false, Rechunk, true),
            (F::Close, Http11, true, UntilClose, false),
            (F::Close, Http10, false, UntilClose, false),
            (F::Close, Http10, true, UntilClose, false),
            (F::Chunked, Http10, true, Dechunk, false),
            (F::Chunked, Http11, true, AsIs, true),
            (F::Length(5), Http11, false, AsIs, true),
            (F::Length(5), Http10, false, AsIs, true),
            (F::None, Http11, false, AsIs, true),
            (F::None, Http10, false, AsIs, true),
        ];
        for (framing, client, coded, want, keep) in cases {
            let out = body_out(framing, client, coded);
            assert_eq!(out, want, "{framing:?} {client:?} coded {coded}");
            let end = ClientEnd {
                request_keep_alive: true,
                keepalive_enabled: true,
                request_read: true,
                close_delimited: out.close_delimited(),
                draining: false,
            };
            assert_eq!(may_keep_client(end), keep, "{framing:?} {client:?}");
        }
    }

    #[test]
    fn body_steps() {
        use BodyStep::*;
        let f = |buffering, complete, buffered, room, grow, budget_left| BodyFacts {
            buffering,
            complete,
            buffered,
            cap: 100,
            room,
            grow,
            budget_left,
        };
        let cases = [
            // (facts, step)
            // Complete: send, buffering or not, whatever the budget.
            (f(true, true, 0, 0, 0, 0), Send),
            (f(false, true, 50, 0, 0, 0), Send),
            (f(true, true, 100, 0, 64, 0), Send),
            // Buffering off: stream at once.
            (f(false, false, 0, 10, 0, 1000), Stream),
            // Under the cap with room, or growth within budget: read.
            (f(true, false, 0, 10, 0, 0), Read),
            (f(true, false, 99, 1, 0, 0), Read),
            (f(true, false, 50, 0, 64, 64), Read),
            // Cap reached: stream from here.
            (f(true, false, 100, 10, 0, 1000), Stream),
            (f(true, false, 150, 0, 0, 1000), Stream),
            // Buffer full and the budget cannot pay for growth: stream.
            (f(true, false, 50, 0, 64, 63), Stream),
            (f(true, false, 50, 0, 64, 0), Stream),
            // Buffer full and unable to grow: stream.
            (f(true, false, 50, 0, 0, 1000), Stream),
        ];
        for (facts, want) in cases {
            assert_eq!(body_step(facts), want, "{facts:?}");
        }
    }

    #[test]
    fn buffer_limits() {
        // (head_len, cap, head_limit, limit)
        for (h, cap, hl, want) in [
            (100, 1000, 8192, 8192),
            (100, 65536, 8192, 65636),
            (8000, 0, 8192, 8192),
            (usize::MAX, 10, 8192, usize::MAX),
        ] {
            assert_eq!(buffer_limit(h, cap, hl), want, "{h} {cap} {hl}");
        }
    }

    #[test]
    fn wire_caps() {
        // (cap, chunked, wire cap)
        for (cap, chunked, want) in [
            (1 << 20, false, 1 << 20),
            (1 << 20, true, (1 << 20) + (1 << 17)),
            (0, true, 0),
            (usize::MAX, true, usize::MAX),
        ] {
            assert_eq!(wire_cap(cap, chunked), want, "{cap} {chunked}");
        }
        // A 1 MiB body in 64-byte chunks ("40\r\n" + data + "\r\n") fits.
        let framed = (1usize << 20) / 64 * (64 + 6) + 5;
        assert!(framed <= wire_cap(1 << 20, true));
    }

    #[test]
    fn tried_set_keeps_excluding_past_64() {
        let mut t = Tried::default();
        for i in [0, 1, 63, 64, 65, 127, 128, 200] {
            assert!(!t.contains(i));
            t.insert(i);
            assert!(t.contains(i), "{i}");
        }
        assert!(!t.contains(2) && !t.contains(66) && !t.contains(199));
        t.remove(64);
        assert!(!t.contains(64) && t.contains(65));
        t.clear();
        for i in [0, 1, 63, 64, 65, 127, 128, 200] {
            assert!(!t.contains(i), "{i}");
        }
    }
}
