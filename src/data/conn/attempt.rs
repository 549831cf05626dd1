//! One try of a request on one server ([`attempt`]): on an idle pooled
//! connection when the request may take one (`proto::pool_policy::
//! reuse_within`: a request that cannot be sent again only takes a
//! connection that was busy moments ago), else on a new one ([`connect`],
//! within `connect_timeout`, a PROXY header first when the upstream wants
//! one); the rewritten head and any buffered body in one write; then the
//! response (`respond.rs`), or for a body still to stream the upload
//! (`upload.rs`).
//!
//! A failure comes back as an [`AttemptError`] that says how far the
//! request got (nothing sent, maybe received, a pooled connection found
//! stale), which is what `exchange` in the parent and
//! `proto::exchange::retry` decide the next step on.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::request::Req;
use super::respond::respond;
use super::upload::upload;
use super::{Client, Failure, Next, ReqLog, Target, UpConn};
use crate::data::buf;
use crate::data::io::{write_counted, RelayError};
use crate::data::pool::Taken;
use crate::data::shard::Shard;
use crate::data::upstream::{ConnectFailure, UpStream};
use crate::metrics::FailureKind;
use crate::proto::exchange::Sent;
use crate::proto::http1::encode::{encode_request_set, Forwarded, SetField};
use crate::proto::http1::{ChunkedDecoder, Framing, RequestHead};
use crate::proto::pool_policy::reuse_within;

/// How an attempt failed, for `exchange` to decide what follows.
pub(super) enum AttemptError {
    /// The client failed, or was already answered; nothing more to do.
    Client,
    /// The client went away while the response was awaited (499).
    ClientGone,
    /// The upstream failed before any response byte went to the client.
    /// `sent`: whether request bytes may have reached the server; `stale`:
    /// a pooled connection that failed before any response byte.
    Upstream {
        failure: Failure,
        sent: Sent,
        stale: bool,
    },
}

/// One try of a request on a server: on an idle pooled connection if
/// `pooled` allows and one is usable, else on a new one.
pub(super) async fn attempt(
    shard: &Shard,
    c: &mut Client,
    req: &mut Req<'_>,
    t: Target<'_>,
    pooled: bool,
    log: &mut ReqLog,
) -> Result<Next, AttemptError> {
    let up = t.up;
    let server = t.server();
    let (key, now, idle_limit) = (pool_key(&t), shard.clock.get(), up.config.keepalive_timeout);
    // Sent again if the connection turns out closed (see `retry`)?
    let replayable = req.head.method.is_idempotent() && req.body.whole();
    let within = reuse_within(replayable, idle_limit);
    let taken = match up.config.send_proxy_protocol {
        _ if !pooled => Taken::none(),
        // A PROXY-tagged connection names one client: it is private to
        // that client's connection (see `proxy_protocol`).
        Some(_) => c.private.take(key, now, idle_limit, within),
        None => shard.pool.borrow_mut().take(key, now, idle_limit, within),
    };
    if taken.discarded > 0 {
        let mut rec = shard.rec.borrow_mut();
        for _ in 0..taken.discarded {
            rec.on_upstream_failure(t.label(), FailureKind::Discarded);
        }
    }
    let conn = match taken.stream {
        Some(stream) => UpConn {
            stream,
            reused: true,
        },
        None => {
            let t0 = Instant::now();
            let tls = up.config.tls.as_deref().map(|tls| (tls, t.si));
            // On a TLS upstream the PROXY header goes before the handshake.
            let mut preamble = Vec::new();
            if let (Some(v), Some(_)) = (up.config.send_proxy_protocol, tls) {
                let fd = c.stream.as_raw_fd();
                crate::data::proxy_protocol::upstream_header(v, c.peer, c.dst, fd, &mut preamble);
            }
            // Boxed, like `upload` below: a connect (its timeout holds a
            // 640-byte, 128-aligned timer entry) is rare next to a reuse,
            // and inline it would more than double every connection
            // task's state (moved on every request's await).
            let stream = Box::pin(connect(shard, &t, tls, preamble, up.config.connect_timeout))
                .await
                .map_err(|failure| AttemptError::Upstream {
                    failure,
                    sent: Sent::Nothing,
                    stale: false,
                })?;
            let us = t0.elapsed().as_micros() as u64;
            shard.rec.borrow_mut().on_connect_time(t.label(), us);
            UpConn {
                stream,
                reused: false,
            }
        }
    };
    // Whatever a previous exchange left is not this response.
    c.ubuf.consume(c.ubuf.len());

    // Head (+ buffered body) in one write.
    let head = req.head;
    let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
    let plain = up.config.tls.is_none();
    if let (Some(v), false, true) = (up.config.send_proxy_protocol, conn.reused, plain) {
        crate::data::proxy_protocol::upstream_header(
            v,
            c.peer,
            c.dst,
            c.stream.as_raw_fd(),
            &mut out,
        );
    }
    {
        let buf = c.rbuf.data();
        let fwd = Forwarded {
            client_ip: c.ip(),
            https: c.stream.is_tls(),
            set: c.subject.as_ref().map(|(name, value)| SetField {
                name,
                value: value.as_deref(),
            }),
        };
        let prefix = &buf[head.head_len..head.head_len + req.body.prefix];
        let whole_chunked = req.body.chunked_len.filter(|_| req.dechunk_whole);
        match (head.framing, whole_chunked) {
            (Framing::Chunked, Some(len)) => {
                // The whole chunked body is buffered: sent with a
                // Content-Length, as nginx sends every buffered body (a
                // WSGI application reads the body by CONTENT_LENGTH).
                // Already validated by plan_body.
                let sent = RequestHead {
                    framing: Framing::Length(len),
                    ..*head
                };
                encode_request_set(&mut out, buf, &sent, &c.fields, &server.host, &fwd);
                let _ = ChunkedDecoder::request(0).dechunk(prefix, &mut out);
            }
            (Framing::Chunked, None) => {
                encode_request_set(&mut out, buf, head, &c.fields, &server.host, &fwd);
                // Streamed from here on: chunked. This drops forbidden trailers.
                let _ = ChunkedDecoder::request(0).forward(prefix, &mut out);
            }
            _ => {
                encode_request_set(&mut out, buf, head, &c.fields, &server.host, &fwd);
                out.extend_from_slice(prefix);
            }
        }
    }
    if req.body.rest.is_some() {
        c.out = out;
        return Box::pin(upload(shard, c, req, t, conn, log)).await;
    }
    let mut conn = conn;
    let fd = conn.stream.as_raw_fd();
    let (r, n, o) =
        write_counted(&mut conn.stream, fd, out, &c.timer, up.config.send_timeout).await;
    c.out = o;
    if let Err(e) = r {
        let failed = AttemptError::Upstream {
            failure: match e {
                RelayError::DstTimeout => Failure::Timeout,
                _ => Failure::Reset,
            },
            sent: if n == 0 { Sent::Nothing } else { Sent::Maybe },
            stale: conn.reused,
        };
        // A backend may answer a request it will not take (413, 401)
        // after its head, then close without reading the body: the body's
        // write then fails with a reset, but the answer is already in our
        // receive queue (the kernel keeps received data readable after a
        // reset). Relay it, as the streaming path does; else the failure
        // stands as it was.
        if n > 0 && !matches!(e, RelayError::DstTimeout) {
            match respond(shard, c, req, t, conn, log).await {
                // Nothing came back: the failure is the write's.
                Err(AttemptError::Upstream { .. }) => {}
                // An answer was relayed, or the client went away meanwhile.
                other => return other,
            }
        }
        return Err(failed);
    }
    respond(shard, c, req, t, conn, log).await
}

/// The pool key of a target server: its address and TLS identity.
pub(super) fn pool_key(t: &Target<'_>) -> crate::data::pool::Key {
    let tls = t.up.config.tls.as_deref();
    (t.server().addr, tls.map_or(0, |tls| tls.pool_key[t.si]))
}

async fn connect(
    shard: &Shard,
    t: &Target<'_>,
    tls: Option<(&crate::tls::upstream::UpstreamTls, usize)>,
    preamble: Vec<u8>,
    limit: Duration,
) -> Result<UpStream, Failure> {
    match crate::data::upstream::connect(t.server().addr, tls, preamble, limit).await {
        Ok((s, resumed)) => {
            if let Some(resumed) = resumed {
                shard.rec.borrow_mut().on_upstream_tls_handshake(resumed);
            }
            Ok(s)
        }
        Err(ConnectFailure::Tcp(e)) => Err(Failure::of_connect(&e)),
        Err(ConnectFailure::Timeout) => Err(Failure::ConnectTimeout),
        Err(ConnectFailure::TlsTimeout) => {
            shard.rec.borrow_mut().on_upstream_tls_failure(true);
            crate::warn!(
                "upstream {} server {}: TLS handshake timed out (not finished within connect_timeout {:?})",
                t.up.config.name,
                t.server().addr,
                limit,
            );
            Err(Failure::TlsHandshakeTimeout)
        }
        Err(ConnectFailure::Tls(e)) => {
            shard.rec.borrow_mut().on_upstream_tls_failure(false);
            crate::warn!(
                "upstream {} server {}: TLS handshake failed: {e}",
                t.up.config.name,
                t.server().addr,
            );
            Err(Failure::TlsHandshake)
        }
    }
}
