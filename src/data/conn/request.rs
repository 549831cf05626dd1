//! Reading a request: its head ([`read_head`]: the header timeout, the
//! head and URI limits, the malformed-request answers) and the plan for its
//! body ([`plan_body`]: none, a length, chunked; read whole into the
//! client buffer or streamed), plus the proxy's own `100 Continue`
//! ([`send_continue`]).
//!
//! The decisions are pure functions of `proto::http1` (parsing, framing)
//! and `proto::exchange` (how much to buffer); this file does the reads
//! and keeps what a request carries through its exchange ([`Req`]).

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::keepalive::next_streak;
use super::{transition, Client, Next, ReqLog};
use crate::data::buf::ReadError;
use crate::data::client_stream::ClientStream;
use crate::data::deadline::{Shut, Timer};
use crate::data::io::{write_all, Body};
use crate::data::shard::{Shard, ShardView};
use crate::metrics::ConnState;
use crate::proto::exchange::{may_keep_client, ClientEnd};
use crate::proto::http1::encode::CONTINUE;
use crate::proto::http1::{
    decode_request, ChunkError, ChunkedDecoder, Framing, Limits, RequestHead,
};

/// Reads until a complete request head is buffered. `None`: the connection
/// is finished (closed, timed out, or answered with an error).
pub(super) async fn read_head(
    shard: &Shard,
    c: &mut Client,
    state: &mut ConnState,
    log: &mut ReqLog,
) -> Option<(Rc<ShardView>, RequestHead, Instant)> {
    let mut view = shard.view();
    let mut deadline: Option<Instant> = None;
    let mut started = (!c.rbuf.is_empty()).then(Instant::now);
    loop {
        if !c.rbuf.is_empty() {
            let http = &view.snap.config.http;
            let limits = Limits {
                max_head_bytes: http.max_header_bytes,
                max_headers: http.max_headers,
                max_uri_bytes: http.max_uri_bytes,
            };
            match decode_request(c.rbuf.data(), &limits, &mut c.fields) {
                Ok(Some(head)) => {
                    c.requests += 1;
                    return Some((view, head, started.unwrap_or_else(Instant::now)));
                }
                Ok(None) => {}
                Err(e) => {
                    crate::warn!("{}: bad request: {e:?} → {}", c.peer, e.status());
                    c.reply(log, e.status(), false, http.client_body_timeout)
                        .await;
                    return None;
                }
            }
        }
        let http = &view.snap.config.http;
        let limit = if c.rbuf.is_empty() {
            if shard.draining() {
                return None;
            }
            // Woken by `wait_idle`: the next request's first bytes.
            if c.requests == 0 {
                http.client_header_timeout
            } else {
                http.keepalive_timeout
            }
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + http.client_header_timeout);
            d.saturating_duration_since(Instant::now())
        };
        let was_empty = c.rbuf.is_empty();
        let r = c.rbuf.fill(&mut c.stream, &c.timer, limit).await;
        c.timer.set_busy();
        match r {
            Ok(_) => {
                if was_empty {
                    c.streak =
                        next_streak(c.streak, c.timer.clock.get().saturating_sub(c.idle_since));
                    // A new request started; route it with the newest config.
                    started = Some(Instant::now());
                    transition(shard, state, ConnState::Reading);
                    view = shard.view();
                }
            }
            Err(ReadError::Timeout) if !was_empty => {
                c.reply(log, 408, false, http.client_body_timeout).await;
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Waits until the idle client sends something (or closes); `false` when
/// `limit` passed first or the socket failed. Holds no buffer while it waits.
pub(super) async fn wait_readable(
    stream: &mut ClientStream,
    timer: &Timer,
    limit: Duration,
) -> bool {
    if stream.has_buffered() {
        return true;
    }
    let fd = stream.as_raw_fd();
    let (r, in_time) = timer.run(fd, Shut::Read, limit, stream.readable()).await;
    in_time.is_ok() && r.is_ok()
}

/// Where a request's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
    /// The whole request is in `c.rbuf`, unconsumed: it can be sent again.
    Buffered,
    /// Part of the body is still with the client; nothing consumed yet.
    Pending,
    /// Consumed and entirely read from the client.
    Read,
    /// Consumed, but the client still has body bytes we did not read (the
    /// upload stopped early).
    Cut,
}

/// How the request body is sent upstream.
pub(super) struct ReqBody {
    /// Body bytes already buffered right after the head.
    pub(super) prefix: usize,
    pub(super) state: BodyState,
    /// The rest, when not buffered.
    pub(super) rest: Option<Body>,
    /// A chunked body read whole: the length of its data (what it is sent
    /// with when it goes as a `Content-Length` body).
    pub(super) chunked_len: Option<u64>,
}

impl ReqBody {
    /// Nothing of the request was consumed: it can be sent from the start.
    pub(super) fn intact(&self) -> bool {
        matches!(self.state, BodyState::Buffered | BodyState::Pending)
    }

    /// The whole request is buffered and untouched, so it will still be
    /// [`intact`](Self::intact) if this attempt fails: unlike a `Pending`
    /// body, which is consumed as soon as it streams upstream.
    pub(super) fn whole(&self) -> bool {
        self.rest.is_none() && self.intact()
    }

    /// The client has no more body bytes to send for this request.
    pub(super) fn read(&self) -> bool {
        matches!(self.state, BodyState::Buffered | BodyState::Read)
    }

    /// Takes in body bytes that arrived after planning (`avail`: all the
    /// bytes after the head). Chunked bodies are decoded incrementally, so
    /// a trickled body is scanned once.
    pub(super) fn extend(&mut self, avail: &[u8]) -> Result<(), ChunkError> {
        let more = &avail[self.prefix.min(avail.len())..];
        let done = match &mut self.rest {
            None => return Ok(()),
            Some(Body::Length(left)) => {
                let n = (*left).min(more.len() as u64);
                self.prefix += n as usize;
                *left -= n;
                *left == 0
            }
            Some(Body::Chunked { dec, .. }) => {
                self.prefix += dec.feed(more)?;
                if dec.is_done() {
                    self.chunked_len = Some(dec.data_len());
                }
                dec.is_done()
            }
            Some(Body::Close | Body::Rechunk) => false,
        };
        if done {
            self.rest = None;
            self.state = BodyState::Buffered;
        }
        Ok(())
    }
}

/// `max_body`: `client_max_body_size` (0 = unlimited) for a chunked body.
/// Sends `100 Continue` once, when the client asked for it (`Expect:
/// 100-continue`) and has not sent any of its body yet: it waits for this
/// before it sends the body, whether the body is buffered or streamed.
pub(super) async fn send_continue(c: &mut Client, req: &mut Req<'_>) -> Result<(), ()> {
    if !req.head.expect_continue || req.body.prefix != 0 || req.continue_sent {
        return Ok(());
    }
    req.continue_sent = true;
    let mut o = Vec::with_capacity(CONTINUE.len());
    o.extend_from_slice(CONTINUE);
    let (res, _) = write_all(&mut c.stream, o, &c.timer, c.client_timeout).await;
    res.map(|_| ()).map_err(|_| ())
}

pub(super) fn plan_body(
    c: &Client,
    head: &RequestHead,
    max_body: u64,
) -> Result<ReqBody, ChunkError> {
    let avail = &c.rbuf.data()[head.head_len..];
    let mut chunked_len = None;
    let (prefix, rest) = match head.framing {
        Framing::None | Framing::Close => (0, None),
        Framing::Length(n) => {
            let prefix = (n.min(avail.len() as u64)) as usize;
            let left = n - prefix as u64;
            (prefix, (left > 0).then_some(Body::Length(left)))
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::request(max_body);
            let prefix = dec.feed(avail)?;
            let done = dec.is_done();
            if done {
                chunked_len = Some(dec.data_len());
            }
            (
                prefix,
                (!done).then_some(Body::Chunked {
                    dec,
                    dechunk: false,
                }),
            )
        }
    };
    Ok(ReqBody {
        prefix,
        state: if rest.is_some() {
            BodyState::Pending
        } else {
            BodyState::Buffered
        },
        rest,
        chunked_len,
    })
}

/// One request being proxied: its head (spans into `c.rbuf`) and body.
pub(super) struct Req<'h> {
    pub(super) head: &'h RequestHead,
    pub(super) body: ReqBody,
    pub(super) continue_sent: bool,
    /// A chunked body buffered whole goes upstream with a Content-Length
    /// (`request_buffering` on, as nginx sends it); with buffering off the
    /// client's framing streams through, however the bytes arrived.
    pub(super) dechunk_whole: bool,
}

impl Req<'_> {
    /// Drops the buffered request from `c.rbuf` once it needs no replay
    /// (a response was committed, or the proxy answers itself).
    pub(super) fn release(&mut self, c: &mut Client) {
        if self.body.state == BodyState::Buffered {
            c.rbuf.consume(self.head.head_len + self.body.prefix);
            self.body.state = BodyState::Read;
        }
    }

    /// May the client connection carry another request after this one?
    pub(super) fn client_keep(
        &self,
        c: &Client,
        close_delimited: bool,
        keep_alive_off: bool,
    ) -> bool {
        may_keep_client(ClientEnd {
            request_keep_alive: self.head.keep_alive(),
            keepalive_enabled: c.keep_enabled,
            request_read: self.body.read(),
            close_delimited,
            draining: keep_alive_off,
        })
    }

    /// How the client connection ends when it is not kept.
    pub(super) fn closing(&self) -> Next {
        if self.body.read() {
            Next::Close
        } else {
            Next::Linger
        }
    }
}
