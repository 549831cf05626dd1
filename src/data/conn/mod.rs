//! One client connection: read a request head, route it, proxy the
//! exchange, repeat while keep-alive allows.
//!
//! Requests on a connection are handled strictly one after another, so
//! pipelined requests are answered in order by construction. This module
//! is the I/O driver of an exchange; every choice it makes (may this pooled
//! connection be used, may this failure be retried and where, may either
//! connection be kept) is a pure function of `proto::exchange`.
//!
//! This file holds the connection's state (`Client`) and one request:
//! route and pick (`one_request`, `pick`), and the attempts with what
//! follows a failure (`exchange`). Around it: how the task starts or
//! resumes (`start.rs`), the keep-alive loop, the wait between requests and
//! the lingering close (`keepalive.rs`), reading a request's head and
//! planning its body (`request.rs`), one try on one server (`attempt.rs`),
//! the response (`respond.rs`), streamed uploads (`upload.rs`) and
//! upgraded connections (`tunnel.rs`).
//!
//! # Request-body buffering
//!
//! With `[http] request_buffering` (the default, like nginx's
//! `proxy_request_buffering on`) a request body is read before an upstream
//! is chosen, into the client buffer (lent larger storage by `body_buf`),
//! up to `request_buffer_size` bytes and within the shard's budget; what
//! does not fit is streamed from there. A slow client thus holds no
//! upstream connection and the backend sees the request only once it is
//! whole (or the cap was reached). `proto::exchange::body_step` decides.
//! A chunked body buffered whole is sent with a `Content-Length` (its data
//! alone, trailers dropped), as nginx sends every buffered body: a WSGI
//! server (gunicorn) hands the application the body by `CONTENT_LENGTH`,
//! so Django sees a chunked request as empty. Its length is what the
//! decoder counted while buffering; the copy of the data is one pass over
//! a body of at most `request_buffer_size`. A body streamed past the cap
//! stays chunked, canonical, forbidden trailer fields dropped. A backend
//! that answers before reading a large buffered body and resets the
//! connection still has its answer relayed (it is read after the failed
//! write).
//!
//! # Replay
//!
//! A request body that is entirely buffered before the upstream is chosen
//! stays in the receive buffer until a response head arrives, which makes
//! the request replayable. A request whose bytes never left the proxy
//! (connect failed, or the first write failed) may go again whatever its
//! method; one that may have reached a backend goes again only when it is
//! idempotent and still buffered. A POST is never sent twice, so it only
//! goes on a pooled connection that was busy moments ago, never on one
//! that may be meeting the backend's own idle close
//! (`proto::pool_policy::reuse_within`).
//!
//! # Uploads are full duplex
//!
//! A body that is not entirely buffered is streamed, and while it is, the
//! upstream connection is watched for a response. A backend that answers
//! early (413, 401, a redirect…) and stops reading gets its answer relayed:
//! sending stops, that upstream connection is closed, and the client
//! connection is closed after the response with a lingering close (its
//! unread body is drained for a while, so closing does not reset the
//! connection before the client read the answer). Informational (1xx)
//! responses that arrive during the upload are dropped.
//!
//! `Expect: 100-continue` is answered by the proxy: `100 Continue` goes to
//! the client when the proxy starts reading its body (to buffer it, or
//! when it is about to be streamed), and `Expect` is not
//! forwarded (the backend sees an ordinary upload). A backend that refuses
//! the upload is then an early response, as above.
//!
//! # A client that leaves while its response is awaited
//!
//! Behind nginx (`proxy_ignore_client_abort off`), a client that closes
//! its connection while the backend is still working (a long poll, a slow
//! report, an event stream with nothing to send) makes the proxy close
//! the upstream connection too, so the backend sees its client leave (a
//! gunicorn worker is freed, a Starlette app's `is_disconnected()` turns
//! true), and logs 499. So does ringlb: every upstream read of a response
//! watches the client (`deadline.rs`), from one second into the wait on,
//! once a second; a client found gone (`proto::exchange::client_gone`)
//! ends the exchange, the upstream connection is closed (never pooled),
//! and the request is logged and counted with status 499 when no
//! response head had reached the client (after one, with the status it
//! got, as nginx does). Pipelined requests arriving meanwhile are not an
//! abort; a FIN after a complete request (`shutdown(SHUT_WR)`) is, as in
//! nginx, unless requests pipelined before it are buffered (they are owed
//! answers). curl, wrk, ab and the Python clients never half-close.
//!
//! # Tunnels
//!
//! After `101 Switching Protocols` bytes are copied both ways until both
//! sides are done, or until nothing moved either way for
//! `[http] tunnel_timeout`. A tunnel keeps its client connection's slot,
//! so it counts against `max_connections`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::upstream::UpStream;

use super::body_buf::{self, BodyBuf};
use super::buf::{self, ReadError, RecvBuf};
use super::client_stream::ClientStream;
use super::deadline::Timer;
use super::idle::Parked;
use super::io::write_all;
use super::pool::Pool;
use super::shard::{Shard, ShardView, Slot};
use crate::config::{HashKey, HttpConfig};
use crate::lb::{hash_bytes, NoServer, ShardState};
use crate::metrics::{ConnState, FailureKind};
use crate::proto::exchange::{
    body_step, buffer_limit, counts_against_server, linger_after_refusal, retry, wire_cap,
    BodyFacts, BodyStep, Failed, Retry, Tried,
};
use crate::proto::http1::encode::{client_ip_text, encode_canned};
use crate::proto::http1::{Field, Framing, RequestHead};
use crate::snapshot::{ServerSnap, UpstreamSnap};

mod attempt;
mod keepalive;
mod request;
mod respond;
mod start;
mod tunnel;
mod upload;

use attempt::{attempt, AttemptError};
use request::{plan_body, read_head, send_continue, Req};
pub use start::{spawn_accepted, spawn_resumed};

/// The status logged and counted for a request whose client left before
/// its response head (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;
/// Largest upstream response head accepted (the upstream buffer's size).
const UPSTREAM_BUF: usize = buf::POOLED;
/// Retries of a request whose pooled connection turned out stale; they do
/// not count against `retries`.
const STALE_RETRIES: u32 = 2;

/// What happens to the client connection after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Close after draining what the client still sends (its request body
    /// was not read), so the response is not lost to a reset.
    Linger,
    Tunnel(UpStream),
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
    stream: ClientStream,
    /// The client: the socket's peer, or the one a PROXY header carried.
    peer: SocketAddr,
    /// The address the client connected to, when a PROXY header said.
    dst: Option<SocketAddr>,
    /// Idle upstream connections private to this client connection: those
    /// that began with a PROXY header naming this client (at most one per
    /// server; closed with the client). Allocates nothing until used.
    private: Pool,
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
    /// `keepalive_timeout` of that snapshot is not zero.
    keep_enabled: bool,
    /// Requests read on this connection so far.
    requests: u64,
    /// Requests in a row that arrived within [`HOT_GAP_MS`] of the
    /// previous response (see [`read_directly`]).
    streak: u32,
    /// Coarse clock (ms) when the connection last went idle.
    idle_since: u64,
    /// Servers tried for the current request (kept to reuse its storage).
    tried: Tried,
    /// Mutual TLS: the verified client subject field (name, value) set on
    /// every request of this connection (see `tls::client_auth`).
    subject: Option<super::tls::OwnedField>,
    /// TLS version and cipher for the access log (read once per connection).
    tls_desc: Option<(&'static str, &'static str)>,
    /// Larger storage lent to `rbuf` while a request body is buffered.
    body_buf: BodyBuf,
    /// The socket is in the shard's parked set already (parked before;
    /// left registered, disabled, by its one-shot event).
    rearm: bool,
}

impl Client {
    fn new(
        shard: &Shard,
        stream: ClientStream,
        peer: SocketAddr,
        dst: Option<SocketAddr>,
        timer: Timer,
    ) -> Client {
        let max_head = shard.view().snap.config.http.max_header_bytes;
        let mut ip = ([0u8; 48], 0u8);
        ip.1 = client_ip_text(peer.ip(), &mut ip.0) as u8;
        Client {
            stream,
            peer,
            dst,
            private: Pool::default(),
            ip,
            rbuf: RecvBuf::client(max_head),
            ubuf: RecvBuf::pooled(),
            out: Vec::new(),
            fields: Vec::new(),
            rfields: Vec::new(),
            timer,
            log_line: Vec::new(),
            client_timeout: Duration::ZERO,
            keep_enabled: true,
            requests: 0,
            streak: 0,
            idle_since: 0,
            tried: Tried::default(),
            subject: None,
            tls_desc: None,
            body_buf: BodyBuf::default(),
            rearm: false,
        }
    }

    /// Whether this idle connection may wait in the shard's parked set
    /// rather than in its task (see `idle.rs` for what is not parked).
    fn parkable(&mut self) -> bool {
        self.private.idle_count() == 0 && self.rbuf.is_empty() && self.stream.is_idle()
    }

    /// What survives of a parkable idle connection; the rest is dropped.
    fn into_parked(self, slot: Slot) -> (Parked, bool) {
        let (stream, tls) = match self.stream {
            ClientStream::Plain(s) => (s, None),
            ClientStream::Tls(s) => {
                let (io, sess) = super::tls::park(*s);
                let t = super::tls::ParkedTls {
                    sess,
                    subject: self.subject,
                    desc: self.tls_desc,
                };
                (io, Some(Box::new(t)))
            }
        };
        // No operation is in flight on an idle socket: the descriptor has
        // no other owner.
        let fd = stream.into_raw_fd();
        let p = Parked {
            // SAFETY: `into_raw_fd` gave up ownership of this open socket.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            peer: self.peer,
            dst: self.dst.map(Box::new),
            slot,
            requests: self.requests,
            streak: self.streak,
            idle_since: self.idle_since,
            tls,
        };
        (p, self.rearm)
    }

    /// Gives every buffer back to the shard's pools (the connection is idle
    /// and its receive buffer empty).
    fn park(&mut self) {
        self.rbuf.release();
        self.ubuf.release();
        buf::give_back(std::mem::take(&mut self.out));
        buf::give_back_fields(std::mem::take(&mut self.fields));
        buf::give_back_fields(std::mem::take(&mut self.rfields));
        self.stream.release_idle();
    }

    /// Takes the field tables back (the receive buffer is taken by its
    /// first read).
    fn unpark(&mut self) {
        if self.fields.capacity() == 0 {
            self.fields = buf::take_fields();
        }
        if self.rfields.capacity() == 0 {
            self.rfields = buf::take_fields();
        }
    }

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

    /// Answers a request refused before its body was read with `status`,
    /// then closes the way [`linger_after_refusal`] says.
    async fn refuse(&mut self, log: &mut ReqLog, status: u16, write_limit: Duration) -> Next {
        self.reply(log, status, false, write_limit).await;
        after_refusal(status)
    }
}

/// How a connection whose request was refused (`status`, 0: none) ends.
fn after_refusal(status: u16) -> Next {
    if linger_after_refusal(status) {
        Next::Linger
    } else {
        Next::Close
    }
}

/// Reads, routes and proxies one request; also returns the tunnel timeout
/// of the snapshot it ran on (for `Next::Tunnel`).
async fn one_request(
    shard: &Shard,
    c: &mut Client,
    state: &mut ConnState,
    listen: SocketAddr,
) -> (Next, Duration) {
    let mut log = ReqLog::default();
    let Some((view, head, started)) = read_head(shard, c, state, &mut log).await else {
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
        return (after_refusal(log.status), Duration::ZERO);
    };
    // Listeners are found by address: a reload may renumber them.
    let Some(listener) = view.snap.listeners.iter().position(|l| l.listen == listen) else {
        return (Next::Close, Duration::ZERO);
    };
    transition(shard, state, ConnState::Writing);
    log.bytes_in = head.head_len as u64;
    if let Some(al) = &shard.access_log {
        al.begin(
            &mut c.log_line,
            &c.ip.0[..c.ip.1 as usize],
            c.rbuf.data(),
            &head,
            &c.fields,
            c.tls_desc,
        );
    }
    let next = exchange(shard, &view, c, head, listener, &mut log).await;
    c.body_buf.restore(&mut c.rbuf);
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
    (next, view.snap.config.http.tunnel_timeout)
}

fn transition(shard: &Shard, state: &mut ConnState, to: ConnState) {
    if *state != to {
        shard.rec.borrow_mut().conn_transition(*state, to);
        *state = to;
    }
}

/// The server an attempt goes to.
#[derive(Clone, Copy)]
struct Target<'a> {
    up: &'a UpstreamSnap,
    si: usize,
}

impl Target<'_> {
    fn server(&self) -> &ServerSnap {
        &self.up.servers[self.si]
    }

    /// Metrics label of the server.
    fn label(&self) -> usize {
        self.up.metric_base + self.si
    }
}

/// An upstream connection and whether it came from the pool.
struct UpConn {
    stream: UpStream,
    reused: bool,
}

/// Why an attempt on one server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    ConnectRefused,
    ConnectTimeout,
    /// The TLS handshake with the server failed (logged with its reason).
    TlsHandshake,
    /// The server took the TCP connection but had not finished the TLS
    /// handshake within `connect_timeout`: a connect timeout for the client
    /// (504) and for passive health, counted as a TLS handshake failure.
    TlsHandshakeTimeout,
    /// A local resource shortage (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS,
    /// ENOMEM): not the server's fault.
    Local,
    /// Reset or I/O error before any response byte (also a write the
    /// server refused): it did not take the whole request.
    Reset,
    /// The server ended the connection (FIN) before any response byte,
    /// after taking the request: it may have acted on it, or fail on it.
    Eof,
    /// No response byte within `read_timeout`.
    Timeout,
    Malformed,
}

impl Failure {
    fn kind(self) -> FailureKind {
        match self {
            Failure::ConnectRefused
            | Failure::ConnectTimeout
            | Failure::TlsHandshake
            | Failure::TlsHandshakeTimeout => FailureKind::Connect,
            Failure::Local => FailureKind::Local,
            Failure::Reset | Failure::Eof => FailureKind::Reset,
            Failure::Timeout => FailureKind::Timeout,
            Failure::Malformed => FailureKind::Malformed,
        }
    }

    fn status(self) -> u16 {
        match self {
            Failure::ConnectTimeout | Failure::TlsHandshakeTimeout | Failure::Timeout => 504,
            Failure::Local => 503,
            _ => 502,
        }
    }

    /// A connect error: the proxy's own shortage, or the server's refusal.
    fn of_connect(e: &std::io::Error) -> Failure {
        match e.raw_os_error() {
            Some(
                libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM,
            ) => Failure::Local,
            _ => Failure::ConnectRefused,
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

/// Picks a server not tried yet. When none is available, servers that are
/// out only because of passive failures are tried anyway: a lone server
/// (or a whole upstream) is never left unused because of `max_fails`
/// alone, as in nginx.
fn pick(
    view: &ShardView,
    ui: usize,
    key: u64,
    tried: &Tried,
    now: Option<Instant>,
) -> Result<usize, NoServer> {
    let up = &view.snap.upstreams[ui];
    let mut lb = view.lb.borrow_mut();
    let weight = |i: usize| now.map_or(1000, |n| up.weight_permille(i, n));
    let r = up.selector.pick(
        &mut lb[ui],
        key,
        |i| !up.servers[i].available || tried.contains(i),
        weight,
    );
    match r {
        Err(NoServer::AllDown) => up.selector.pick(
            &mut lb[ui],
            key,
            |i| !(up.servers[i].available || up.servers[i].passive_down) || tried.contains(i),
            weight,
        ),
        r => r,
    }
}

/// A request in flight to a server, for `max_conns` and `least_conn`;
/// released when dropped, on every exit including a panic.
struct InFlight<'a> {
    lb: &'a RefCell<Vec<ShardState>>,
    ui: usize,
    si: usize,
}

impl<'a> InFlight<'a> {
    fn start(lb: &'a RefCell<Vec<ShardState>>, ui: usize, si: usize) -> Self {
        lb.borrow_mut()[ui].on_start(si);
        InFlight { lb, ui, si }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Never borrowed across an await; `try_` only so that a drop while
        // unwinding can never turn into a double panic.
        if let Ok(mut lb) = self.lb.try_borrow_mut() {
            lb[self.ui].on_finish(self.si);
        }
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
    c.keep_enabled = !http.keepalive_timeout.is_zero();
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
        // Refused before reading a byte of the body (nor sending 100); the
        // client may be sending it all the same: a lingering close lets it
        // read the answer (as nginx does; a TLS client cannot read past a
        // reset).
        return c.refuse(log, 413, write_limit).await;
    }
    let body = match plan_body(c, &head, max_body) {
        Ok(b) => b,
        Err(e) => {
            // Bad framing (or too large) in the body bytes that came with
            // the head: the client may still be sending the rest.
            crate::warn!("{}: chunked request body: {e:?} → {}", c.peer, e.status());
            return c.refuse(log, e.status(), write_limit).await;
        }
    };
    log.bytes_in += body.prefix as u64;
    let mut req = Req {
        head: &head,
        body,
        continue_sent: false,
        dechunk_whole: http.request_buffering,
    };
    let Some(ui) = route else {
        return finish_local(shard, c, log, &mut req, 404).await;
    };
    if let Some(next) = buffer_body(c, &mut req, http, log).await {
        return next;
    }
    let up = &snap.upstreams[ui];
    let key = if up.selector.balance() == crate::config::Balance::Hash {
        hash_key(up, c, &head)
    } else {
        0
    };

    c.tried.clear();
    let mut tries = 0u32;
    let mut fresh_left = STALE_RETRIES;
    // A retry after a stale pooled connection opens a new one: the pool
    // may hold more connections the backend is closing (a worker that
    // exits closes all of its idle ones at once).
    let mut pooled = true;
    // The last failure may go to a server already tried (`Retry::NextOrAgain`).
    let mut again = false;
    let mut last_failure = Failure::ConnectRefused;
    // The clock is read only when a server is ramping up (slow start).
    let now = up.ramping.then(Instant::now);
    loop {
        let si = match pick(view, ui, key, &c.tried, now) {
            Ok(si) => si,
            Err(NoServer::AllFull) => return finish_local(shard, c, log, &mut req, 503).await,
            Err(NoServer::AllDown) if tries == 0 => {
                crate::warn!("upstream {}: no server available → 502", up.config.name);
                return finish_local(shard, c, log, &mut req, 502).await;
            }
            Err(NoServer::AllDown) if again => {
                // Every server was tried: once more among all of them.
                again = false;
                c.tried.clear();
                continue;
            }
            Err(NoServer::AllDown) => {
                // Every server was tried: the failure belongs to the last one
                // (`log.server` stays set for the metrics).
                return fail(shard, c, log, &mut req, last_failure.status()).await;
            }
        };
        if let Some(prev) = log.server {
            // A retry is counted once it has somewhere to go.
            shard.rec.borrow_mut().on_retry(prev);
        }
        c.tried.insert(si);
        tries += 1;
        let target = Target { up, si };
        log.server = Some(target.label());
        let result = {
            let _in_flight = InFlight::start(&view.lb, ui, si);
            attempt(shard, c, &mut req, target, pooled, log).await
        };
        let (failure, sent, stale) = match result {
            Ok(next) => return next,
            Err(AttemptError::Client) => return req.closing(),
            Err(AttemptError::ClientGone) => {
                // nginx's 499: no response, the upstream connection closed.
                log.status = CLIENT_CLOSED;
                return Next::Close;
            }
            Err(AttemptError::Upstream {
                failure,
                sent,
                stale,
            }) => (failure, sent, stale),
        };
        let server = target.server();
        let blame = counts_against_server(failure == Failure::Local, stale);
        {
            let kind = if blame || failure == Failure::Local {
                failure.kind()
            } else {
                FailureKind::Discarded
            };
            shard
                .rec
                .borrow_mut()
                .on_upstream_failure(target.label(), kind);
        }
        if blame {
            crate::warn!(
                "upstream {} server {}: {failure:?}",
                up.config.name,
                server.addr
            );
            shard.link.report_failure(&up.config.name, server.addr);
        }
        last_failure = failure;
        let failed = Failed {
            sent,
            idempotent: head.method.is_idempotent(),
            buffered: req.body.intact(),
            stale,
            reset: failure == Failure::Reset,
        };
        let decision = retry(failed, tries, up.config.retries, fresh_left);
        again = decision == Retry::NextOrAgain;
        match decision {
            Retry::Fresh => {
                // Most likely the backend closed the pooled connection just
                // as it was used: the same server, on another connection.
                fresh_left -= 1;
                tries -= 1;
                c.tried.remove(si);
                pooled = false;
            }
            Retry::Next => pooled = true,
            // Maybe the same server: its idle connections may be going too.
            Retry::NextOrAgain => pooled = false,
            Retry::No => {
                if !blame {
                    crate::warn!(
                        "upstream {} server {}: {failure:?} ({})",
                        up.config.name,
                        server.addr,
                        if stale { "reused connection" } else { "local" }
                    );
                }
                return fail(shard, c, log, &mut req, failure.status()).await;
            }
        }
    }
}

/// Reads the request body into the client buffer before an upstream is
/// chosen, as far as `proto::exchange::body_step` allows (see the module
/// docs). `Some`: the client was answered or is gone.
async fn buffer_body(
    c: &mut Client,
    req: &mut Req<'_>,
    http: &HttpConfig,
    log: &mut ReqLog,
) -> Option<Next> {
    let head = req.head;
    let cap = wire_cap(http.request_buffer_size, head.framing == Framing::Chunked);
    let limit = buffer_limit(head.head_len, cap, http.max_header_bytes);
    loop {
        let room = c.rbuf.capacity() - c.rbuf.len();
        let step = body_step(BodyFacts {
            buffering: http.request_buffering,
            complete: req.body.rest.is_none(),
            buffered: req.body.prefix,
            cap,
            room,
            grow: c.body_buf.grow_size(&c.rbuf, limit),
            budget_left: body_buf::budget_left(),
        });
        if step != BodyStep::Read {
            return None;
        }
        if room == 0 {
            c.body_buf.grow(&mut c.rbuf, limit);
        }
        if send_continue(c, req).await.is_err() {
            return Some(Next::Close);
        }
        match c.rbuf.fill(&mut c.stream, &c.timer, c.client_timeout).await {
            Ok(_) => {}
            Err(ReadError::Timeout) => {
                // client_body_timeout, as in nginx: 408 and close.
                return Some(c.refuse(log, 408, c.client_timeout).await);
            }
            Err(_) => return Some(Next::Close),
        }
        let before = req.body.prefix;
        if let Err(e) = req.body.extend(&c.rbuf.data()[head.head_len..]) {
            crate::warn!("{}: chunked request body: {e:?} → {}", c.peer, e.status());
            return Some(c.refuse(log, e.status(), c.client_timeout).await);
        }
        log.bytes_in += (req.body.prefix - before) as u64;
    }
}

/// Answers a request locally (404/502/503…), keeping the connection only if
/// the request body was entirely read.
async fn finish_local(
    shard: &Shard,
    c: &mut Client,
    log: &mut ReqLog,
    req: &mut Req<'_>,
    status: u16,
) -> Next {
    log.server = None;
    fail(shard, c, log, req, status).await
}

/// Answers the client with an error status for `req`.
async fn fail(
    shard: &Shard,
    c: &mut Client,
    log: &mut ReqLog,
    req: &mut Req<'_>,
    status: u16,
) -> Next {
    req.release(c);
    let keep = req.client_keep(c, false, shard.keep_alive_off(&c.timer));
    match c.reply(log, status, keep, c.client_timeout).await {
        Next::KeepAlive => Next::KeepAlive,
        _ => req.closing(),
    }
}
