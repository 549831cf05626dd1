//! One client connection: read a request head, route it, proxy the
//! exchange, repeat while keep-alive allows.
//!
//! Requests on a connection are handled strictly one after another, so
//! pipelined requests are answered in order by construction. A request body
//! that is entirely buffered before the upstream is chosen stays in the
//! receive buffer until a response head arrives, which makes the request
//! replayable: that is what allows a retry on another server after a
//! connect error, a reset or a timeout before the first response byte.

use std::cell::Cell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use super::buf::{self, ReadError, RecvBuf};
use super::deadline::Timer;
use super::io::{relay, write_all, Body, RelayError};
use super::shard::{Shard, ShardView};
use crate::config::HashKey;
use crate::lb::{hash_bytes, NoServer};
use crate::metrics::{ConnState, FailureKind};
use crate::proto::http1::encode::{
    encode_canned, encode_request, encode_response, ClientConn, CONTINUE,
};
use crate::proto::http1::{
    decode_request, decode_response, ChunkError, ChunkedDecoder, Field, Framing, Limits, Method,
    RequestHead, Version,
};
use crate::snapshot::UpstreamSnap;

/// Largest upstream response head accepted (the upstream buffer's size).
const UPSTREAM_BUF: usize = buf::POOLED;
/// Initial client receive buffer; it grows up to `max_header_bytes` for a
/// large head.
const CLIENT_BUF: usize = 4096;
/// Retries of a request whose pooled connection turned out stale; they do
/// not count against `retries`.
const STALE_RETRIES: u32 = 2;

/// What happens to the client connection after an exchange.
enum Next {
    KeepAlive,
    Close,
    Tunnel(TcpStream),
}

/// What one request did, for metrics (filled in as the exchange goes).
#[derive(Default)]
struct ReqLog {
    status: u16,
    /// Metrics label index of the server that answered.
    server: Option<usize>,
    upstream_us: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
}

/// Per-connection buffers and identity.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    ip: ([u8; 48], u8),
    rbuf: RecvBuf,
    ubuf: RecvBuf,
    out: Vec<u8>,
    fields: Vec<Field>,
    rfields: Vec<Field>,
    timer: Timer,
    /// The access-log line being built for the current request.
    log_line: Vec<u8>,
    /// `client_body_timeout` of the snapshot the current request started on.
    client_timeout: Duration,
}

impl Client {
    fn ip(&self) -> &[u8] {
        &self.ip.0[..self.ip.1 as usize]
    }

    /// Sends one of the proxy's own responses.
    async fn reply(
        &mut self,
        log: &mut ReqLog,
        status: u16,
        keep_alive: bool,
        write_limit: Duration,
    ) -> Next {
        log.status = status;
        let mut out = buf::ensure_pooled(std::mem::take(&mut self.out));
        out.clear();
        encode_canned(&mut out, status, keep_alive, &super::date::current());
        log.bytes_out += out.len() as u64;
        let (r, out) = write_all(&mut self.stream, out, &self.timer, write_limit).await;
        self.out = out;
        if r.is_ok() && keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

/// Serves a client connection until it closes.
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    fd: RawFd,
) {
    let _ = stream.set_nodelay(true);
    let (conn_id, idle, timer) = shard.register(fd);
    // Unregisters on every exit, including unwinding from a panic.
    let _registered = Registered(&shard, conn_id);
    {
        let mut rec = shard.rec.borrow_mut();
        rec.on_accept();
        rec.on_handled();
    }
    let mut state = ConnState::Reading;
    let max_head = shard.view().snap.config.http.max_header_bytes;
    let mut ip = ([0u8; 48], 0u8);
    let mut w = &mut ip.0[..];
    let _ = write!(w, "{}", peer.ip());
    ip.1 = (48 - w.len()) as u8;
    let mut c = Client {
        stream,
        peer,
        ip,
        rbuf: RecvBuf::growable(CLIENT_BUF, max_head),
        ubuf: RecvBuf::pooled(),
        out: Vec::new(),
        fields: Vec::with_capacity(32),
        rfields: Vec::with_capacity(32),
        timer,
        log_line: Vec::new(),
        client_timeout: Duration::ZERO,
    };
    loop {
        let mut log = ReqLog::default();
        let Some((view, head, started)) =
            read_head(&shard, &mut c, &idle, &mut state, &mut log).await
        else {
            if log.status != 0 {
                let view = shard.view();
                let listener = view
                    .snap
                    .listeners
                    .iter()
                    .position(|l| l.listen == listen)
                    .unwrap_or(0);
                shard.rec.borrow_mut().on_request_done(
                    listener,
                    None,
                    log.status,
                    0,
                    None,
                    0,
                    log.bytes_out,
                );
            }
            break;
        };
        // Listeners are found by address: a reload may renumber them.
        let Some(listener) = view.snap.listeners.iter().position(|l| l.listen == listen) else {
            break;
        };
        transition(&shard, &mut state, ConnState::Writing);
        log.bytes_in = head.head_len as u64;
        if let Some(al) = &shard.access_log {
            al.begin(
                &mut c.log_line,
                &c.ip.0[..c.ip.1 as usize],
                c.rbuf.data(),
                &head,
                &c.fields,
            );
        }
        let next = exchange(&shard, &view, &mut c, head, listener, &mut log).await;
        let elapsed = started.elapsed();
        let total_us = elapsed.as_micros() as u64;
        if let Some(al) = &shard.access_log {
            let upstream = log
                .server
                .and_then(|i| view.snap.layout.servers.get(i))
                .map(|s| s.1.as_str());
            al.finish(&c.log_line, log.status, log.bytes_out, elapsed, upstream);
        }
        shard.rec.borrow_mut().on_request_done(
            listener,
            log.server,
            log.status,
            total_us,
            log.upstream_us,
            log.bytes_in,
            log.bytes_out,
        );
        match next {
            Next::KeepAlive if !shard.draining() => continue,
            Next::KeepAlive | Next::Close => break,
            Next::Tunnel(upstream) => {
                tunnel(c, upstream).await;
                break;
            }
        }
    }
    shard.rec.borrow_mut().on_close(state);
}

/// Removes a connection from its shard's registry when dropped.
struct Registered<'a>(&'a Shard, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

fn transition(shard: &Shard, state: &mut ConnState, to: ConnState) {
    if *state != to {
        shard.rec.borrow_mut().conn_transition(*state, to);
        *state = to;
    }
}

/// Reads until a complete request head is buffered. `None`: the connection
/// is finished (closed, timed out, or answered with an error).
async fn read_head(
    shard: &Shard,
    c: &mut Client,
    idle: &Cell<bool>,
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
                Ok(Some(head)) => return Some((view, head, started.unwrap_or_else(Instant::now))),
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
            idle.set(true);
            transition(shard, state, ConnState::Waiting);
            // An idle connection keeps only its client buffer.
            c.ubuf.release();
            buf::give_back(std::mem::take(&mut c.out));
            http.keepalive_timeout
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + http.client_header_timeout);
            d.saturating_duration_since(Instant::now())
        };
        let was_empty = c.rbuf.is_empty();
        let r = c.rbuf.fill(&mut c.stream, &c.timer, limit).await;
        idle.set(false);
        match r {
            Ok(_) => {
                if was_empty {
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

/// How the request body is sent upstream.
struct ReqBody {
    /// Body bytes already buffered right after the head.
    prefix: usize,
    /// The whole body is in the buffer: the request can be replayed.
    complete: bool,
    /// The rest, when not complete.
    rest: Option<Body>,
}

/// `max_body`: `client_max_body_size` (0 = unlimited) for a chunked body.
fn plan_body(c: &Client, head: &RequestHead, max_body: u64) -> Result<ReqBody, ChunkError> {
    let avail = &c.rbuf.data()[head.head_len..];
    Ok(match head.framing {
        Framing::None | Framing::Close => ReqBody {
            prefix: 0,
            complete: true,
            rest: None,
        },
        Framing::Length(n) => {
            let prefix = (n.min(avail.len() as u64)) as usize;
            let left = n - prefix as u64;
            ReqBody {
                prefix,
                complete: left == 0,
                rest: (left > 0).then_some(Body::Length(left)),
            }
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::with_limit(max_body);
            let prefix = dec.feed(avail)?;
            let complete = dec.is_done();
            ReqBody {
                prefix,
                complete,
                rest: (!complete).then_some(Body::Chunked {
                    dec,
                    dechunk: false,
                }),
            }
        }
    })
}

/// Why an attempt on one server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    ConnectRefused,
    ConnectTimeout,
    /// Reset, EOF or I/O error before any response byte.
    Reset,
    /// No response byte within `read_timeout`.
    Timeout,
    Malformed,
}

impl Failure {
    fn kind(self) -> FailureKind {
        match self {
            Failure::ConnectRefused | Failure::ConnectTimeout => FailureKind::Connect,
            Failure::Reset => FailureKind::Reset,
            Failure::Timeout => FailureKind::Timeout,
            Failure::Malformed => FailureKind::Malformed,
        }
    }

    fn status(self) -> u16 {
        match self {
            Failure::ConnectTimeout | Failure::Timeout => 504,
            _ => 502,
        }
    }
}

fn hash_key(up: &UpstreamSnap, c: &Client, head: &RequestHead) -> u64 {
    let buf = c.rbuf.data();
    match &up.config.hash_key {
        HashKey::ClientIp => hash_bytes(c.ip()),
        HashKey::Uri => hash_bytes(head.target.get(buf)),
        HashKey::Header(name) => c
            .fields
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map_or(0, |f| hash_bytes(f.value.get(buf))),
    }
}

/// Proxies one request. The head is at the start of `c.rbuf`.
async fn exchange(
    shard: &Shard,
    view: &Rc<ShardView>,
    c: &mut Client,
    head: RequestHead,
    listener: usize,
    log: &mut ReqLog,
) -> Next {
    let snap = &view.snap;
    let http = &snap.config.http;
    let write_limit = http.client_body_timeout;
    c.client_timeout = write_limit;
    let buf = c.rbuf.data();
    let hit = snap.listeners[listener]
        .router
        .find(head.host.map(|h| h.get(buf)), head.target.get(buf));
    let route = hit.upstream;
    let max_body = hit
        .max_body
        .or_else(|| {
            snap.config
                .listeners
                .get(listener)
                .map(|l| l.client_max_body_size)
        })
        .unwrap_or(http.client_max_body_size);
    if head.body_too_large(max_body) {
        // Refused before reading a byte of the body (nor sending 100).
        return c.reply(log, 413, false, write_limit).await;
    }
    let mut body = match plan_body(c, &head, max_body) {
        Ok(b) => b,
        Err(e) => {
            let status = if e == ChunkError::TooLarge { 413 } else { 400 };
            crate::warn!("{}: chunked request body: {e:?} → {status}", c.peer);
            return c.reply(log, status, false, write_limit).await;
        }
    };
    log.bytes_in += body.prefix as u64;
    let Some(ui) = route else {
        return finish_local(c, log, &head, &body, 404, write_limit).await;
    };
    let up = &snap.upstreams[ui];
    let key = if up.selector.balance() == crate::config::Balance::Hash {
        hash_key(up, c, &head)
    } else {
        0
    };

    let mut tried: u64 = 0;
    let mut attempts = 0u32;
    let mut stale_left = STALE_RETRIES;
    let mut continue_sent = false;
    let mut last_failure = Failure::ConnectRefused;
    // The clock is read only when a server is ramping up (slow start).
    let now = up.ramping.then(Instant::now);
    loop {
        // Pick a server that has not been tried for this request.
        let picked = {
            let mut lb = view.lb.borrow_mut();
            up.selector.pick(
                &mut lb[ui],
                key,
                |i| !up.servers[i].available || (i < 64 && tried & (1 << i) != 0),
                |i| now.map_or(1000, |n| up.weight_permille(i, n)),
            )
        };
        let si = match picked {
            Ok(si) => si,
            Err(NoServer::AllFull) => {
                return finish_local(c, log, &head, &body, 503, write_limit).await
            }
            Err(NoServer::AllDown) if attempts == 0 => {
                crate::warn!("upstream {}: no server available → 502", up.config.name);
                return finish_local(c, log, &head, &body, 502, write_limit).await;
            }
            Err(NoServer::AllDown) => {
                // Every server was tried: the failure belongs to the last one
                // (`log.server` stays set for the metrics).
                let keep = body.complete && head.keep_alive() && !shard.draining();
                if body.complete {
                    c.rbuf.consume(head.head_len + body.prefix);
                }
                return c.reply(log, last_failure.status(), keep, write_limit).await;
            }
        };
        if let Some(prev) = log.server {
            // A retry is counted once it has somewhere to go.
            shard.rec.borrow_mut().on_retry(prev);
        }
        let server = &up.servers[si];
        if si < 64 {
            tried |= 1 << si;
        }
        attempts += 1;
        view.lb.borrow_mut()[ui].on_start(si);
        let label = up.metric_base + si;
        log.server = Some(label);
        let result = attempt(shard, c, &head, &mut body, up, si, &mut continue_sent, log).await;
        view.lb.borrow_mut()[ui].on_finish(si);
        match result {
            Ok(next) => return next,
            Err(AttemptError::Client) => return Next::Close,
            Err(AttemptError::Upstream {
                failure,
                stale,
                sent,
            }) => {
                if stale && body.complete && stale_left > 0 {
                    // A pooled connection the server had already closed: the
                    // request never reached it; try again on a fresh one.
                    stale_left -= 1;
                    attempts -= 1;
                    if si < 64 {
                        tried &= !(1 << si);
                    }
                    continue;
                }
                crate::warn!(
                    "upstream {} server {}: {failure:?}",
                    up.config.name,
                    server.addr
                );
                shard
                    .rec
                    .borrow_mut()
                    .on_upstream_failure(label, failure.kind());
                shard.link.report_failure(&up.config.name, server.addr);
                last_failure = failure;
                // Replay needs the whole body still buffered; after bytes may
                // have reached a server only idempotent methods are replayed.
                let retry_ok = body.complete && (!sent || head.method.is_idempotent());
                if attempts > up.config.retries || !retry_ok {
                    let keep = body.complete && head.keep_alive();
                    if body.complete {
                        c.rbuf.consume(head.head_len + body.prefix);
                    }
                    return c
                        .reply(
                            log,
                            failure.status(),
                            keep && !shard.draining(),
                            write_limit,
                        )
                        .await;
                }
            }
        }
    }
}

/// Answers a request locally (404/502/503…), keeping the connection only if
/// the request body was already entirely read.
async fn finish_local(
    c: &mut Client,
    log: &mut ReqLog,
    head: &RequestHead,
    body: &ReqBody,
    status: u16,
    limit: Duration,
) -> Next {
    log.server = None;
    let keep = body.complete && head.keep_alive();
    if body.complete {
        c.rbuf.consume(head.head_len + body.prefix);
    }
    c.reply(log, status, keep, limit).await
}

enum AttemptError {
    /// The client failed; nothing more can be done.
    Client,
    /// The upstream failed before any response byte went to the client.
    /// `stale`: it was a pooled connection that failed without a byte.
    /// `sent`: request bytes may have reached the server.
    Upstream {
        failure: Failure,
        stale: bool,
        sent: bool,
    },
}

/// One try of a request on server `si`.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    shard: &Shard,
    c: &mut Client,
    head: &RequestHead,
    body: &mut ReqBody,
    up: &UpstreamSnap,
    si: usize,
    continue_sent: &mut bool,
    log: &mut ReqLog,
) -> Result<Next, AttemptError> {
    let server = &up.servers[si];
    let client_timeout = c.client_timeout;
    let pooled = shard.pool.borrow_mut().take(server.addr);
    let reused = pooled.is_some();
    let mut us = match pooled {
        Some(s) => s,
        None => {
            let t0 = Instant::now();
            let s = connect(server.addr, up.config.connect_timeout)
                .await
                .map_err(|failure| AttemptError::Upstream {
                    failure,
                    stale: false,
                    sent: false,
                })?;
            let us = t0.elapsed().as_micros() as u64;
            shard
                .rec
                .borrow_mut()
                .on_connect_time(up.metric_base + si, us);
            s
        }
    };

    // Head (+ buffered body) in one write.
    let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
    out.clear();
    {
        let buf = c.rbuf.data();
        encode_request(&mut out, buf, head, &c.fields, c.ip(), &server.host);
        let prefix = &buf[head.head_len..head.head_len + body.prefix];
        if head.framing == Framing::Chunked {
            // Already validated by plan_body; this drops forbidden trailers.
            let _ = ChunkedDecoder::new().forward(prefix, &mut out);
        } else {
            out.extend_from_slice(prefix);
        }
    }
    if let Some(rest) = body.rest.as_mut() {
        // Streaming body: no replay possible past this point.
        if head.expect_continue && body.prefix == 0 && !*continue_sent {
            *continue_sent = true;
            let mut o = Vec::with_capacity(CONTINUE.len());
            o.extend_from_slice(CONTINUE);
            if write_all(&mut c.stream, o, &c.timer, client_timeout)
                .await
                .0
                .is_err()
            {
                c.out = out;
                return Err(AttemptError::Client);
            }
        }
        c.rbuf.consume(head.head_len + body.prefix);
        let mut sent = 0;
        let (r, o) = relay(
            &mut c.stream,
            &mut c.rbuf,
            &mut us,
            out,
            rest,
            false,
            &c.timer,
            client_timeout,
            up.config.send_timeout,
            &mut sent,
        )
        .await;
        c.out = o;
        log.bytes_in += sent;
        match r {
            Ok(()) => {}
            Err(RelayError::DstIo(_) | RelayError::DstTimeout) => {
                // The upstream went away mid-body: the client's request is
                // half-consumed, so the connection can't continue.
                let _ = c.reply(log, 502, false, client_timeout).await;
                return Err(AttemptError::Client);
            }
            Err(RelayError::Malformed(e)) => {
                // Over client_max_body_size mid-stream: the upstream got part
                // of the body and is dropped; the client, which has no
                // response yet, gets 413 and the connection closes.
                let status = if e == ChunkError::TooLarge { 413 } else { 400 };
                let _ = c.reply(log, status, false, client_timeout).await;
                return Err(AttemptError::Client);
            }
            Err(_) => return Err(AttemptError::Client),
        }
        body.complete = true;
        body.prefix = 0;
        body.rest = None;
        // Already consumed from rbuf: make later consume() calls no-ops.
        return respond(shard, c, head, us, up, si, reused, 0, log).await;
    }
    let (r, o) = write_all(&mut us, out, &c.timer, up.config.send_timeout).await;
    c.out = o;
    if r.is_err() {
        return Err(AttemptError::Upstream {
            failure: Failure::Reset,
            stale: reused,
            sent: true,
        });
    }
    respond(
        shard,
        c,
        head,
        us,
        up,
        si,
        reused,
        head.head_len + body.prefix,
        log,
    )
    .await
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Failure> {
    match monoio::time::timeout(limit, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(Failure::ConnectRefused),
        Err(_) => Err(Failure::ConnectTimeout),
    }
}

/// Reads the response head and relays the response. `req_len`: request
/// bytes still in `c.rbuf` to consume once the response is committed.
#[allow(clippy::too_many_arguments)]
async fn respond(
    shard: &Shard,
    c: &mut Client,
    head: &RequestHead,
    mut us: TcpStream,
    up: &UpstreamSnap,
    si: usize,
    reused: bool,
    req_len: usize,
    log: &mut ReqLog,
) -> Result<Next, AttemptError> {
    let server = &up.servers[si];
    let client_timeout = c.client_timeout;
    let sent_at = Instant::now();
    let mut got_bytes = false;
    c.ubuf.consume(c.ubuf.len());
    let resp = loop {
        match decode_response(
            c.ubuf.data(),
            UPSTREAM_BUF,
            head.method == Method::Head,
            &mut c.rfields,
        ) {
            Ok(Some(r)) if r.is_informational() && r.status != 101 => {
                // 1xx: pass to an HTTP/1.1 client, then wait for the final head.
                let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
                out.clear();
                if head.version == Version::Http11 {
                    encode_response(
                        &mut out,
                        c.ubuf.data(),
                        &r,
                        &c.rfields,
                        ClientConn::KeepAlive(Version::Http11),
                        false,
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
                    stale: false,
                    sent: true,
                });
            }
        }
        match c.ubuf.fill(&mut us, &c.timer, up.config.read_timeout).await {
            Ok(_) => got_bytes = true,
            Err(ReadError::Timeout) => {
                return Err(AttemptError::Upstream {
                    failure: Failure::Timeout,
                    stale: false,
                    sent: true,
                })
            }
            Err(_) => {
                return Err(AttemptError::Upstream {
                    failure: Failure::Reset,
                    stale: reused && !got_bytes,
                    sent: true,
                })
            }
        }
    };
    // Committed: the response goes to the client, whatever happens next.
    c.rbuf.consume(req_len);
    log.upstream_us = Some(sent_at.elapsed().as_micros() as u64);
    log.status = resp.status;
    let draining = shard.draining();

    if resp.status == 101 {
        if !head.upgrade {
            crate::warn!(
                "upstream {} server {}: unsolicited 101 → 502",
                up.config.name,
                server.addr
            );
            let _ = c.reply(log, 502, false, client_timeout).await;
            return Ok(Next::Close);
        }
        let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
        out.clear();
        encode_response(
            &mut out,
            c.ubuf.data(),
            &resp,
            &c.rfields,
            ClientConn::Upgrade,
            false,
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
        return Ok(Next::Tunnel(us));
    }

    let dechunk = resp.framing == Framing::Chunked && head.version == Version::Http10;
    let client_keep = head.keep_alive() && !draining && resp.framing != Framing::Close && !dechunk;
    let conn = if client_keep {
        ClientConn::KeepAlive(head.version)
    } else {
        ClientConn::Close
    };
    let mut out = buf::ensure_pooled(std::mem::take(&mut c.out));
    out.clear();
    let date = super::date::current();
    encode_response(
        &mut out,
        c.ubuf.data(),
        &resp,
        &c.rfields,
        conn,
        dechunk,
        &date,
    );
    c.ubuf.consume(resp.head_len);
    let mut body = match resp.framing {
        Framing::None => Body::Length(0),
        Framing::Length(n) => Body::Length(n),
        Framing::Chunked => Body::chunked(dechunk),
        Framing::Close => Body::Close,
    };
    let done = match body.absorb(&mut c.ubuf, &mut out) {
        Ok(d) => d,
        Err(_) => {
            let _ = c.reply(log, 502, false, client_timeout).await;
            return Ok(Next::Close);
        }
    };
    let mut written = 0;
    let (r, o) = relay(
        &mut us,
        &mut c.ubuf,
        &mut c.stream,
        out,
        &mut body,
        done,
        &c.timer,
        up.config.read_timeout,
        client_timeout,
        &mut written,
    )
    .await;
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
            return Ok(Next::Close);
        }
        Err(RelayError::DstIo(_) | RelayError::DstTimeout) => return Ok(Next::Close),
    }
    if resp.keep_alive() && c.ubuf.is_empty() && !draining {
        shard
            .pool
            .borrow_mut()
            .put(server.addr, us, up.config.keepalive, Instant::now());
    }
    Ok(if client_keep {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// After `101 Switching Protocols`: copy bytes both ways until both sides
/// are done.
async fn tunnel(mut c: Client, upstream: TcpStream) {
    // Bytes the client sent after its request head belong to the new protocol.
    let mut early = Vec::new();
    early.extend_from_slice(c.rbuf.data());
    c.rbuf.consume(c.rbuf.len());
    let mut upstream = upstream;
    if !early.is_empty() && upstream.write_all(early).await.0.is_err() {
        return;
    }
    let (mut cr, mut cw) = c.stream.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let a = copy_until_eof(&mut cr, &mut uw);
    let b = copy_until_eof(&mut ur, &mut cw);
    monoio::join!(a, b);
}

async fn copy_until_eof<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
