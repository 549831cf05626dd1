//! A request body that is not buffered whole is streamed to the upstream
//! ([`upload`]) while the upstream connection is watched for an early
//! response ([`Watch`]): a backend that answers before reading the body
//! (413, 401, a redirect) and stops reading gets its answer relayed
//! instead of a failed upload. Sending then stops, that upstream
//! connection is closed, and the client connection is closed after the
//! response with a lingering close (see "Uploads are full duplex" in the
//! parent module). Interim (1xx) responses that arrive meanwhile are
//! dropped, up to `proto::exchange::MAX_INTERIM` of them; more is a 502
//! ([`warn_interim_flood`]).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::task::Poll;

use monoio::io::AsyncReadRent;

use super::attempt::AttemptError;
use super::request::{send_continue, BodyState, Req};
use super::respond::respond;
use super::{Client, Failure, Next, ReqLog, Target, UpConn, UPSTREAM_BUF};
use crate::data::buf::RecvBuf;
use crate::data::deadline::{ClientWatch, Shut};
use crate::data::io::{relay, Pipe, RelayError};
use crate::data::shard::Shard;
use crate::proto::exchange::{too_many_interim, Sent};
use crate::proto::http1::{decode_response, Field, Method};

/// How the upload phase of a streamed request ended.
enum Upload {
    /// The body was sent; then the response head (or a failure) came.
    Sent(Result<(), Watch>),
    /// A response head arrived (or the upstream failed) before the body was
    /// entirely sent.
    Early(Result<(), Watch>),
    /// The upstream stopped taking the body; then its response, if any.
    Refused(Result<(), Watch>),
    /// The client failed while sending its body.
    ClientGone,
    /// The client sent a malformed chunked body (400), or one larger than
    /// `client_max_body_size` (413).
    BadBody(u16),
}

/// Why watching for a response head failed.
#[derive(Debug)]
pub(super) enum Watch {
    Closed,
    Timeout,
    Malformed,
    /// More informational (1xx) responses than a backend may send.
    Flood,
    /// The client left while the response was awaited.
    ClientGone,
}

impl Watch {
    pub(super) fn into_error(self) -> AttemptError {
        let failure = match self {
            Watch::Closed => Failure::Reset,
            Watch::Timeout => Failure::Timeout,
            Watch::Malformed | Watch::Flood => Failure::Malformed,
            Watch::ClientGone => return AttemptError::ClientGone,
        };
        AttemptError::Upstream {
            failure,
            sent: Sent::Maybe,
            stale: false,
        }
    }
}

/// Reads from the upstream until a final response head is buffered in
/// `ubuf` (1xx heads are dropped: the client already got its `100` from
/// the proxy, if it asked).
async fn watch_head<R: AsyncReadRent>(
    ur: &mut R,
    ubuf: &mut RecvBuf,
    rfields: &mut Vec<Field>,
    head_request: bool,
) -> Result<(), Watch> {
    let mut interim = 0;
    loop {
        match decode_response(ubuf.data(), UPSTREAM_BUF, head_request, rfields) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => {
                interim += 1;
                if too_many_interim(interim) {
                    return Err(Watch::Flood);
                }
                ubuf.consume(r.head_len)
            }
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {
                if ubuf.fill_untimed(ur).await.is_err() {
                    return Err(Watch::Closed);
                }
            }
            Err(_) => return Err(Watch::Malformed),
        }
    }
}

/// Which of two futures finished first; the other is left as it is.
enum First<A, B> {
    A(A),
    B(B),
}

/// Polls `a` then `b` until one is ready (`a` wins a tie).
async fn first<A: Future, B: Future>(
    mut a: Pin<&mut A>,
    mut b: Pin<&mut B>,
) -> First<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(First::A(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(First::B(v));
        }
        Poll::Pending
    })
    .await
}

/// Streams the request body while watching the upstream for an early
/// response (see the module docs), then relays the response.
pub(super) async fn upload(
    shard: &Shard,
    c: &mut Client,
    req: &mut Req<'_>,
    t: Target<'_>,
    conn: UpConn,
    log: &mut ReqLog,
) -> Result<Next, AttemptError> {
    let up = t.up;
    let head = req.head;
    let client_timeout = c.client_timeout;
    if send_continue(c, req).await.is_err() {
        return Err(AttemptError::Client);
    }
    // Streaming: from here on the request cannot be replayed.
    c.rbuf.consume(head.head_len + req.body.prefix);
    req.body.state = BodyState::Cut;
    let Some(mut rest) = req.body.rest.take() else {
        return Err(AttemptError::Client);
    };
    let reused = conn.reused;
    let ufd = conn.stream.as_raw_fd();
    let cfd = c.stream.as_raw_fd();
    let is_tls = c.stream.is_tls();
    let (mut ur, mut uw) = conn.stream.into_split();
    let out = std::mem::take(&mut c.out);
    let mut sent = 0;
    let mut out_back = None;
    let outcome = {
        let Client {
            stream,
            rbuf,
            ubuf,
            rfields,
            timer,
            ..
        } = &mut *c;
        let pipe = Pipe {
            src: stream,
            src_fd: cfd,
            sbuf: rbuf,
            dst: &mut uw,
            dst_fd: ufd,
            timer,
            read_limit: client_timeout,
            write_limit: up.config.send_timeout,
            watch: None,
        };
        let send = pin!(relay(pipe, out, &mut rest, false, &mut sent));
        let mut recv = pin!(watch_head(
            &mut ur,
            ubuf,
            rfields,
            head.method == Method::Head
        ));
        // The response watch runs without a deadline while the upload holds
        // the connection's; once the upload is over it gets `read_timeout`.
        let timed = |r: (Result<(), Watch>, Result<(), _>)| match r {
            (_, Err(_)) if timer.client_gone() => Err(Watch::ClientGone),
            (_, Err(_)) => Err(Watch::Timeout),
            (r, Ok(())) => r,
        };
        // Once the body is sent, the wait for the response watches the
        // client. (Requests it pipelined behind a streamed body are not
        // known here: a FIN after them counts as leaving.)
        let watch = Some(ClientWatch {
            tls: is_tls,
            pipelined: false,
        });
        // The upload is polled first: when its last write and the response
        // head complete in the same wake-up, the body was all sent, which is
        // not an early response (that would close the client connection).
        match first(send, recv.as_mut()).await {
            // The upload's write deadline (`send_timeout`) shut the
            // upstream socket under the response watch: a timeout, not a
            // close by the backend.
            First::B(Err(Watch::Closed)) if timer.fired() => Upload::Refused(Err(Watch::Timeout)),
            First::B(r) => Upload::Early(r),
            First::A((r, o)) => {
                out_back = Some(o);
                match r {
                    Ok(()) => Upload::Sent(timed(
                        timer
                            .run_watched(ufd, Shut::Both, up.config.read_timeout, watch, recv)
                            .await,
                    )),
                    // The backend stopped reading for `send_timeout`: its
                    // socket was shut by the deadline, so no answer can
                    // follow; like nginx's proxy_send_timeout, a 504.
                    Err(RelayError::DstTimeout) => Upload::Refused(Err(Watch::Timeout)),
                    Err(RelayError::DstIo(_)) => Upload::Refused(timed(
                        timer
                            .run_watched(ufd, Shut::Both, up.config.read_timeout, watch, recv)
                            .await,
                    )),
                    Err(RelayError::Malformed(e)) => {
                        // Over client_max_body_size mid-stream: the upstream
                        // got part of the body and is dropped.
                        Upload::BadBody(e.status())
                    }
                    Err(_) => Upload::ClientGone,
                }
            }
        }
    };
    log.bytes_in += sent;
    match out_back {
        Some(o) => c.out = o,
        None => {
            // The upload was dropped mid-operation: its deadline and the
            // client read buffer went with it.
            c.timer.disarm();
            c.rbuf.reset();
        }
    }
    let stream = match ur.reunite(uw) {
        Some(s) => s,
        None => return Err(AttemptError::Client),
    };
    let conn = UpConn { stream, reused };
    let got = match outcome {
        Upload::Sent(r) => {
            req.body.state = BodyState::Read;
            r
        }
        Upload::Early(r) | Upload::Refused(r) => r,
        Upload::ClientGone => return Err(AttemptError::Client),
        Upload::BadBody(status) => return Ok(c.refuse(log, status, client_timeout).await),
    };
    match got {
        Ok(()) => respond(shard, c, req, t, conn, log).await,
        Err(w) => {
            if matches!(w, Watch::Flood) {
                warn_interim_flood(&t);
            }
            Err(w.into_error())
        }
    }
}

/// Logs a backend that sent more 1xx responses than [`too_many_interim`]
/// allows (the request is answered 502, the connection closed).
pub(super) fn warn_interim_flood(t: &Target<'_>) {
    crate::warn!(
        "upstream {} server {}: more than {} informational (1xx) responses → 502",
        t.up.config.name,
        t.server().addr,
        crate::proto::exchange::MAX_INTERIM,
    );
}
