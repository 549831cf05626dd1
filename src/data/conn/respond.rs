//! The response of an exchange ([`respond`]): its head read and decoded
//! (interim 1xx heads relayed, up to a bound), rewritten for the client,
//! the body framed as `proto::exchange::body_out` says (a close-delimited
//! body chunked for an HTTP/1.1 client, a chunked one de-chunked for
//! HTTP/1.0) and relayed: spliced when large and plain on both sides, and
//! for a connection that closes after it, its last segment carrying the
//! FIN (`LastWrites`, over TLS with the close_notify: `TlsLastWrites`).
//! Then the upstream connection goes back to its pool if
//! `proto::exchange::may_pool_upstream` allows.
//!
//! While the upstream is read, its client is watched ([`client_watch`],
//! `deadline.rs`): a client that left ends the exchange (499 when no
//! response head had reached it) and the upstream connection is closed,
//! as nginx does by default.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::attempt::{pool_key, AttemptError};
use super::request::{BodyState, Req};
use super::upload::{warn_interim_flood, Watch};
use super::{Client, Failure, Next, ReqLog, Target, UpConn, UPSTREAM_BUF};
use crate::data::buf::ReadError;
use crate::data::client_stream::ClientStream;
use crate::data::deadline::ClientWatch;
use crate::data::io::{relay, write_all, Body, LastWrites, Pipe, RelayError};
use crate::data::shard::Shard;
use crate::data::upstream::UpStream;
use crate::data::{buf, splice};
use crate::proto::exchange::{body_out, may_pool_upstream, too_many_interim, Sent, UpstreamEnd};
use crate::proto::http1::encode::{encode_response, BodyOut, ClientConn};
use crate::proto::http1::{decode_response, FieldKind, Framing, Method, Version};

/// What watching the client of `req` needs to know while its response is
/// awaited: TLS or not, and whether requests it pipelined are buffered
/// already (bytes in `c.rbuf` past this request, or held in its TLS
/// stream).
fn client_watch(c: &mut Client, req: &Req<'_>) -> ClientWatch {
    let this = match req.body.state {
        BodyState::Buffered => req.head.head_len + req.body.prefix,
        _ => 0,
    };
    ClientWatch {
        tls: c.stream.is_tls(),
        // A TLS stream may hold more of what the client sent (plaintext
        // rustls decrypted, ciphertext not yet fed to it) when the receive
        // buffer was full: those are pipelined requests too, though the
        // socket no longer shows them.
        pipelined: c.rbuf.len() > this || c.stream.holds_unread(),
    }
}

/// Reads the response head (unless already buffered) and relays the
/// response.
pub(super) async fn respond(
    shard: &Shard,
    c: &mut Client,
    req: &mut Req<'_>,
    t: Target<'_>,
    conn: UpConn,
    log: &mut ReqLog,
) -> Result<Next, AttemptError> {
    let up = t.up;
    let server = t.server();
    let head = req.head;
    let UpConn { mut stream, reused } = conn;
    let key = pool_key(&t);
    let us = &mut stream;
    let client_timeout = c.client_timeout;
    let sent_at = Instant::now();
    let mut got_bytes = !c.ubuf.is_empty();
    let watch = Some(client_watch(c, req));
    let mut interim = 0;
    let resp = loop {
        match decode_response(
            c.ubuf.data(),
            UPSTREAM_BUF,
            head.method == Method::Head,
            &mut c.rfields,
        ) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => {
                interim += 1;
                if too_many_interim(interim) {
                    warn_interim_flood(&t);
                    return Err(Watch::Flood.into_error());
                }
                // 1xx: pass to an HTTP/1.1 client, then wait for the final head.
                let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
                if head.version == Version::Http11 {
                    encode_response(
                        &mut out,
                        c.ubuf.data(),
                        &r,
                        &c.rfields,
                        ClientConn::KeepAlive(Version::Http11),
                        BodyOut::AsIs,
                        b"",
                    );
                }
                c.ubuf.consume(r.head_len);
                let (res, o) = write_all(&mut c.stream, out, &c.timer, client_timeout).await;
                c.out = o;
                if res.is_err() {
                    return Err(AttemptError::Client);
                }
                continue;
            }
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                crate::warn!(
                    "upstream {} server {}: malformed response head ({e:?})",
                    up.config.name,
                    server.addr
                );
                return Err(AttemptError::Upstream {
                    failure: Failure::Malformed,
                    sent: Sent::Maybe,
                    stale: false,
                });
            }
        }
        let (timer, limit) = (&c.timer, up.config.read_timeout);
        let read = c.ubuf.fill_upto(us, timer, limit, splice::HEAD_READ, watch);
        match read.await {
            Ok(_) => got_bytes = true,
            Err(ReadError::ClientGone) => return Err(AttemptError::ClientGone),
            Err(ReadError::Timeout) => {
                return Err(AttemptError::Upstream {
                    failure: Failure::Timeout,
                    sent: Sent::Maybe,
                    stale: false,
                })
            }
            Err(e) => {
                return Err(AttemptError::Upstream {
                    failure: if matches!(e, ReadError::Eof) {
                        Failure::Eof
                    } else {
                        Failure::Reset
                    },
                    sent: Sent::Maybe,
                    stale: reused && !got_bytes,
                })
            }
        }
    };
    // Committed: the response goes to the client, whatever happens next.
    req.release(c);
    log.upstream_us = Some(sent_at.elapsed().as_micros() as u64);
    log.status = resp.status;
    let draining = shard.draining();

    if resp.status == 101 {
        if !head.upgrade || !req.body.read() {
            crate::warn!(
                "upstream {} server {}: unsolicited 101 → 502",
                up.config.name,
                server.addr
            );
            let _ = c.reply(log, 502, false, client_timeout).await;
            return Ok(req.closing());
        }
        let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
        encode_response(
            &mut out,
            c.ubuf.data(),
            &resp,
            &c.rfields,
            ClientConn::Upgrade,
            BodyOut::AsIs,
            b"",
        );
        c.ubuf.consume(resp.head_len);
        out.extend_from_slice(c.ubuf.data());
        c.ubuf.consume(c.ubuf.len());
        let (r, o) = write_all(&mut c.stream, out, &c.timer, client_timeout).await;
        c.out = o;
        if r.is_err() {
            return Ok(Next::Close);
        }
        return Ok(Next::Tunnel(stream));
    }

    // Only a close-delimited body asks (one with a length or chunked
    // framing never does): no scan of the fields on the common path.
    let transfer_coded = resp.framing == Framing::Close
        && c.rfields
            .iter()
            .any(|f| f.kind == FieldKind::TransferEncoding);
    let body_out = body_out(resp.framing, head.version, transfer_coded);
    let client_keep = req.client_keep(
        c,
        body_out.close_delimited(),
        shard.keep_alive_off(&c.timer),
    );
    let conn_opt = if client_keep {
        ClientConn::KeepAlive(head.version)
    } else {
        ClientConn::Close
    };
    let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
    let date = crate::data::date::current();
    encode_response(
        &mut out,
        c.ubuf.data(),
        &resp,
        &c.rfields,
        conn_opt,
        body_out,
        &date,
    );
    c.ubuf.consume(resp.head_len);
    let mut body = match resp.framing {
        Framing::None => Body::Length(0),
        Framing::Length(n) => Body::Length(n),
        Framing::Chunked => Body::chunked_response(body_out == BodyOut::Dechunk),
        Framing::Close if body_out == BodyOut::Rechunk => Body::Rechunk,
        Framing::Close => Body::Close,
    };
    let done = match body.absorb(&mut c.ubuf, &mut out) {
        Ok(d) => d,
        Err(_) => {
            let _ = c.reply(log, 502, false, client_timeout).await;
            return Ok(req.closing());
        }
    };
    let mut written = 0;
    let sfd = us.as_raw_fd();
    let dfd = c.stream.as_raw_fd();
    // The same pipe over either pair of stream types.
    macro_rules! pipe {
        ($src:expr, $dst:expr) => {
            Pipe {
                src: $src,
                src_fd: sfd,
                sbuf: &mut c.ubuf,
                dst: $dst,
                dst_fd: dfd,
                timer: &c.timer,
                read_limit: up.config.read_timeout,
                write_limit: client_timeout,
                watch,
            }
        };
    }
    let (r, o) = match (&mut *us, &mut c.stream) {
        // The whole response is buffered and the connection closes after
        // it: its last segment leaves with the FIN (`LastWrites`), over TLS
        // with the close_notify too (`TlsLastWrites`).
        (src, ClientStream::Plain(dst)) if done && !client_keep => {
            let dst = &mut LastWrites(dst);
            relay(pipe!(src, dst), out, &mut body, done, &mut written).await
        }
        // Plain on both sides: a large body may be spliced (`splice.rs`).
        (UpStream::Plain(src), ClientStream::Plain(dst)) => {
            splice::relay_plain(pipe!(src, dst), out, &mut body, done, &mut written).await
        }
        (src, ClientStream::Tls(dst)) if done && !client_keep => {
            let dst = &mut crate::data::tls::TlsLastWrites(dst);
            relay(pipe!(src, dst), out, &mut body, done, &mut written).await
        }
        (src, dst) => relay(pipe!(src, dst), out, &mut body, done, &mut written).await,
    };
    c.out = o;
    log.bytes_out += written;
    match r {
        Ok(()) => {}
        Err(
            RelayError::SrcEof
            | RelayError::SrcTimeout
            | RelayError::SrcIo(_)
            | RelayError::Malformed(_),
        ) => {
            crate::warn!(
                "upstream {} server {}: response body cut short",
                up.config.name,
                server.addr
            );
            return Ok(req.closing());
        }
        // The client left while the backend was slow to send more of the
        // body: the response keeps the status it was sent with (as in
        // nginx), the upstream connection is closed.
        Err(RelayError::DstIo(_) | RelayError::DstTimeout | RelayError::ClientGone) => {
            return Ok(Next::Close)
        }
    }
    let pool = may_pool_upstream(UpstreamEnd {
        response_keep_alive: resp.keep_alive(),
        response_complete: true,
        request_complete: req.body.read(),
        leftover: !c.ubuf.is_empty() || !stream.is_clean(),
        draining,
    });
    if pool && up.config.send_proxy_protocol.is_some() {
        let cap = up.config.keepalive.min(1);
        c.private.put(
            key,
            stream,
            cap,
            up.config.keepalive_timeout,
            shard.clock.get(),
        );
    } else if pool {
        shard.pool.borrow_mut().put(
            key,
            stream,
            up.config.keepalive,
            up.config.keepalive_timeout,
            shard.clock.get(),
        );
    }
    Ok(if client_keep {
        Next::KeepAlive
    } else {
        req.closing()
    })
}
