//! A tiny, fast HTTP/1.1 origin server for tests, benchmarks and `ringlb demo`.
//!
//! # Why it exists
//!
//! Benchmarks compare proxies, so the server behind them must never be the
//! bottleneck and must behave the same for every proxy: one pinned monoio
//! thread, a fixed precomputed response, no allocation per request, and all
//! responses to a pipelined batch sent in one write. Tests need to see *which*
//! server answered, so every response carries `X-Backend: NAME`, and they need
//! servers that can be stopped mid-test (a "dead upstream"), which
//! [`spawn_stoppable`] provides.
//!
//! # Why it has its own HTTP framing
//!
//! The framing code below ([`Framer`]) is deliberately independent of
//! `proto::http1`: this server is the reference the proxy is tested against,
//! and a shared parser would share its bugs. It is small and strict instead:
//! httparse for heads, `Content-Length` or `chunked` request bodies read and
//! discarded, `Expect: 100-continue` answered, HTTP/1.0 closes unless it asks
//! for keep-alive, `Connection: close` honoured, malformed input answered with
//! `400`/`431` and a close. [`Framer`] is sans-IO (bytes in, bytes out), so
//! its rules are unit-tested without sockets.
//!
//! # Runtime
//!
//! The thread is pinned and its ring built exactly like a shard's
//! ([`crate::runtime::pin`], [`crate::runtime::build`]: the measured io_uring
//! flags, falling back to fewer flags and then to epoll, each fallback
//! logged), so a benchmark's origin runs on the same footing as the proxy.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::runtime::ShardRuntime;

/// Default response body: short, like a typical "hello" benchmark origin.
pub const DEFAULT_BODY: &[u8] = b"hello\n";
/// Largest request head (request line + headers) accepted; larger gets `431`.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one request head; more gets `431`.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (with extensions) accepted in a chunked body.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Initial read buffer per connection; grows (up to `MAX_HEAD` + this) only
/// while a head is incomplete.
const READ_BUF: usize = 16 * 1024;
/// listen(2) backlog: benchmarks open many connections at once.
const BACKLOG: i32 = 4096;

/// What [`run`] and [`spawn`] serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOpts {
    /// Address to listen on; port 0 picks a free port (see [`spawn`]).
    pub listen: SocketAddr,
    /// Response body length in bytes (the body repeats `"hello\n"`).
    pub body_size: usize,
    /// Value of the `X-Backend` response header.
    pub name: String,
    /// CPU to pin the server thread to.
    pub cpu: Option<usize>,
}

impl BackendOpts {
    /// Defaults: 6-byte `"hello\n"` body, name `"backend"`, no pinning.
    pub fn new(listen: SocketAddr) -> Self {
        BackendOpts {
            listen,
            body_size: DEFAULT_BODY.len(),
            name: "backend".to_string(),
            cpu: None,
        }
    }

    /// Builder-style setter for [`BackendOpts::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builder-style setter for [`BackendOpts::body_size`].
    pub fn body_size(mut self, n: usize) -> Self {
        self.body_size = n;
        self
    }
}

/// Command-line arguments of `ringlb backend` / `ringlb-backend`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Response body size in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY.len())]
    pub body_size: usize,
    /// CPU to pin the server thread to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Value of the X-Backend response header.
    #[arg(long, default_value = "backend")]
    pub name: String,
}

impl From<BackendArgs> for BackendOpts {
    fn from(a: BackendArgs) -> Self {
        BackendOpts {
            listen: a.listen,
            body_size: a.body_size,
            name: a.name,
            cpu: a.cpu,
        }
    }
}

/// Binds and serves on the calling thread; returns only on a setup error.
pub fn run(opts: BackendOpts) -> io::Result<()> {
    let listener = bind(opts.listen)?;
    eprintln!(
        "ringlb-backend {}: listening on {}",
        opts.name,
        listener.local_addr()?
    );
    serve(listener, &opts, None)
}

/// Binds on the calling thread (so port 0 works and the port is listening when
/// this returns), then serves forever on a new thread.
pub fn spawn(opts: BackendOpts) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    let listener = bind(opts.listen)?;
    let addr = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name(format!("backend-{}", opts.name))
        .spawn(move || serve(listener, &opts, None))?;
    Ok((addr, handle))
}

/// A running backend that can be stopped, e.g. to simulate a dead upstream.
pub struct BackendHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackendHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every open connection, then joins the thread.
    /// Afterwards connecting to [`BackendHandle::addr`] is refused.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Release);
        // Wake the pending accept; the loop then sees the flag.
        let _ = std::net::TcpStream::connect(wake_addr(self.addr));
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("backend thread panicked")))
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Like [`spawn`], but returns a handle whose [`BackendHandle::stop`] (or
/// drop) shuts the server down.
pub fn spawn_stoppable(opts: BackendOpts) -> io::Result<BackendHandle> {
    let listener = bind(opts.listen)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("backend-{}", opts.name))
        .spawn(move || serve(listener, &opts, Some(flag)))?;
    Ok(BackendHandle {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// An unspecified listen address cannot be connected to; use loopback.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        match a {
            SocketAddr::V4(_) => a.set_ip(std::net::Ipv4Addr::LOCALHOST.into()),
            SocketAddr::V6(_) => a.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
        }
    }
    a
}

fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    // The legacy (epoll) driver needs a non-blocking fd; io_uring doesn't care.
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Pins, builds the best runtime available, and runs the accept loop.
fn serve(
    listener: StdListener,
    opts: &BackendOpts,
    stop: Option<Arc<AtomicBool>>,
) -> io::Result<()> {
    if let Some(cpu) = opts.cpu {
        crate::runtime::pin(cpu);
    }
    let resp = Rc::new(Responses::new(opts.body_size, &opts.name));
    let rt = crate::runtime::build()?;
    drive(rt, listener, resp, stop)
}

fn drive(
    mut rt: ShardRuntime,
    listener: StdListener,
    resp: Rc<Responses>,
    stop: Option<Arc<AtomicBool>>,
) -> io::Result<()> {
    rt.block_on(accept_loop(listener, resp, stop))
}

/// Open connections, so a stop can shut them down and wait for their tasks.
#[derive(Default)]
struct Live {
    next: Cell<u64>,
    fds: RefCell<HashMap<u64, RawFd>>,
}

async fn accept_loop(
    listener: StdListener,
    resp: Rc<Responses>,
    stop: Option<Arc<AtomicBool>>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let live = Rc::new(Live::default());
    let stopped = || stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire));
    loop {
        let accepted = listener.accept().await;
        if stopped() {
            break;
        }
        let (stream, _peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE & co: back off instead of spinning.
                eprintln!("ringlb-backend: accept: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = live.next.get();
        live.next.set(id + 1);
        if stop.is_some() {
            live.fds.borrow_mut().insert(id, stream.as_raw_fd());
        }
        let (resp, live) = (resp.clone(), live.clone());
        monoio::spawn(async move {
            connection(stream, &resp).await;
            live.fds.borrow_mut().remove(&id);
        });
    }
    // Stopping: close the listener first so new connects are refused, then
    // wake every connection task (shutdown makes their reads return 0) and
    // wait until they have all dropped their sockets.
    drop(listener);
    for fd in live.fds.borrow().values() {
        // SAFETY: the fd belongs to a live TcpStream owned by a task that only
        // removes it from `live` right before dropping the stream.
        unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
    }
    while !live.fds.borrow().is_empty() {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Serves one client connection until it closes, errs, or asks to close.
async fn connection(mut stream: TcpStream, resp: &Responses) {
    let _ = stream.set_nodelay(true);
    let mut framer = Framer::new();
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut wbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    loop {
        let len = rbuf.len();
        if len == rbuf.capacity() {
            // Only an incomplete head/line stays buffered; the framer bounds it.
            rbuf.reserve(READ_BUF);
        }
        let (res, slice) = stream.read(rbuf.slice_mut(len..)).await;
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (used, verdict) = framer.feed(&rbuf, resp, &mut wbuf);
        rbuf.drain(..used);
        if !wbuf.is_empty() {
            let (res, buf) = stream.write_all(wbuf).await;
            wbuf = buf;
            wbuf.clear();
            if res.is_err() {
                return;
            }
        }
        if verdict == Verdict::Close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// The precomputed responses; a request only ever copies one of them.
struct Responses {
    /// HTTP/1.1 keep-alive: no `Connection` header needed.
    keep_alive: Vec<u8>,
    /// HTTP/1.0 client that asked for keep-alive: must be told it's kept.
    keep_alive_10: Vec<u8>,
    /// Last response on the connection.
    close: Vec<u8>,
    body_len: usize,
    bad_request: Vec<u8>,
    too_large: Vec<u8>,
}

impl Responses {
    fn new(body_size: usize, name: &str) -> Self {
        // Header values must not carry CR/LF or other controls.
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let body: Vec<u8> = DEFAULT_BODY
            .iter()
            .copied()
            .cycle()
            .take(body_size)
            .collect();
        let make = |conn: &str| {
            let mut v = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {body_size}\r\nContent-Type: text/plain\r\nX-Backend: {name}\r\n{conn}\r\n"
            )
            .into_bytes();
            v.extend_from_slice(&body);
            v
        };
        let error = |status: &str| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nX-Backend: {name}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes()
        };
        Responses {
            keep_alive: make(""),
            keep_alive_10: make("Connection: keep-alive\r\n"),
            close: make("Connection: close\r\n"),
            body_len: body_size,
            bad_request: error("400 Bad Request"),
            too_large: error("431 Request Header Fields Too Large"),
        }
    }

    fn push_ok(&self, out: &mut Vec<u8>, req: &Pending) {
        let full = match (req.keep_alive, req.http10) {
            (false, _) => &self.close,
            (true, true) => &self.keep_alive_10,
            (true, false) => &self.keep_alive,
        };
        let end = if req.head_only {
            full.len() - self.body_len
        } else {
            full.len()
        };
        out.extend_from_slice(&full[..end]);
    }
}

/// Whether the connection stays open after a [`Framer::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    KeepOpen,
    Close,
}

/// The request being read: what its response must look like.
#[derive(Debug, Clone, Copy)]
struct Pending {
    keep_alive: bool,
    http10: bool,
    head_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request head.
    Head,
    /// `Content-Length` body: bytes still to discard.
    Fixed(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Chunk data still to discard.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailer,
}

/// Sans-IO request framing: feed it the buffered bytes, it appends responses.
struct Framer {
    state: State,
    req: Pending,
}

/// What a request head says about its body and connection.
struct HeadInfo {
    body: Body,
    pending: Pending,
    expect_continue: bool,
}

enum Body {
    None,
    Fixed(u64),
    Chunked,
}

enum HeadError {
    Bad,
    TooLarge,
}

impl Framer {
    fn new() -> Self {
        Framer {
            state: State::Head,
            req: Pending {
                keep_alive: true,
                http10: false,
                head_only: false,
            },
        }
    }

    /// Consumes complete requests (and body bytes) from `buf`, appending one
    /// response per finished request to `out`. Returns how many bytes were
    /// used; the caller keeps the rest and calls again with more appended.
    /// After `Verdict::Close` the connection must be closed once `out` is
    /// written.
    fn feed(&mut self, buf: &[u8], resp: &Responses, out: &mut Vec<u8>) -> (usize, Verdict) {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        return (pos, Verdict::KeepOpen);
                    }
                    match parse_head(rest) {
                        Ok(None) => {
                            if rest.len() > MAX_HEAD {
                                out.extend_from_slice(&resp.too_large);
                                return (buf.len(), Verdict::Close);
                            }
                            return (pos, Verdict::KeepOpen);
                        }
                        Ok(Some((n, info))) => {
                            pos += n;
                            self.req = info.pending;
                            match info.body {
                                Body::None => {}
                                Body::Fixed(0) => {}
                                Body::Fixed(len) => self.state = State::Fixed(len),
                                Body::Chunked => self.state = State::ChunkSize,
                            }
                            if self.state != State::Head && info.expect_continue {
                                out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                            }
                        }
                        Err(e) => {
                            out.extend_from_slice(match e {
                                HeadError::Bad => &resp.bad_request,
                                HeadError::TooLarge => &resp.too_large,
                            });
                            return (buf.len(), Verdict::Close);
                        }
                    }
                }
                State::Fixed(left) => {
                    let take = (rest.len() as u64).min(left);
                    pos += take as usize;
                    if take < left {
                        self.state = State::Fixed(left - take);
                        return (pos, Verdict::KeepOpen);
                    }
                    self.state = State::Head;
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = if size == 0 {
                            State::Trailer
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > MAX_CHUNK_LINE {
                            out.extend_from_slice(&resp.bad_request);
                            return (buf.len(), Verdict::Close);
                        }
                        return (pos, Verdict::KeepOpen);
                    }
                    Err(_) => {
                        out.extend_from_slice(&resp.bad_request);
                        return (buf.len(), Verdict::Close);
                    }
                },
                State::ChunkData(left) => {
                    let take = (rest.len() as u64).min(left);
                    pos += take as usize;
                    if take < left {
                        self.state = State::ChunkData(left - take);
                        return (pos, Verdict::KeepOpen);
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            out.extend_from_slice(&resp.bad_request);
                            return (buf.len(), Verdict::Close);
                        }
                        return (pos, Verdict::KeepOpen);
                    }
                    if &rest[..2] != b"\r\n" {
                        out.extend_from_slice(&resp.bad_request);
                        return (buf.len(), Verdict::Close);
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailer => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        pos += 2;
                        self.state = State::Head;
                    }
                    Some(i) => pos += i + 2,
                    None => {
                        if rest.len() > MAX_HEAD {
                            out.extend_from_slice(&resp.bad_request);
                            return (buf.len(), Verdict::Close);
                        }
                        return (pos, Verdict::KeepOpen);
                    }
                },
            }
            if self.state == State::Head {
                // A request (head and body) is complete: answer it.
                resp.push_ok(out, &self.req);
                if !self.req.keep_alive {
                    return (buf.len(), Verdict::Close);
                }
            }
        }
    }
}

/// Parses one request head: `Ok(None)` if incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, HeadInfo)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Bad),
    };
    if n > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let http10 = req.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_content_length(h.value).ok_or(HeadError::Bad)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(HeadError::Bad);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            // Only the final coding matters: is the body chunked at the end?
            if let Some(last) = h.value.rsplit(|&b| b == b',').next() {
                if !last.trim_ascii().is_empty() {
                    te_chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                conn_close |= tok.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    let mut keep_alive = if http10 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    let body = if te_seen {
        // RFC 9112 §6.1: a request whose final coding isn't chunked has no
        // determinable length.
        if !te_chunked {
            return Err(HeadError::Bad);
        }
        // RFC 9112 §6.3: with both headers, TE wins and the connection closes.
        if content_length.is_some() {
            keep_alive = false;
        }
        Body::Chunked
    } else {
        match content_length {
            Some(n) => Body::Fixed(n),
            None => Body::None,
        }
    };
    let head_only = req.method == Some("HEAD");
    Ok(Some((
        n,
        HeadInfo {
            body,
            pending: Pending {
                keep_alive,
                http10,
                head_only,
            },
            expect_continue,
        },
    )))
}

/// Strict `Content-Length`: 1*DIGIT, no sign, no list, no overflow.
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream as StdStream;

    fn resp() -> Responses {
        Responses::new(6, "t1")
    }

    /// Feeds `input` in pieces of `step` bytes like a socket would deliver it,
    /// returning everything written and the final verdict.
    fn feed_all(input: &[u8], step: usize) -> (Vec<u8>, Verdict) {
        let r = resp();
        let mut f = Framer::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut verdict = Verdict::KeepOpen;
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            let (used, v) = f.feed(&buf, &r, &mut out);
            buf.drain(..used);
            verdict = v;
            if v == Verdict::Close {
                break;
            }
        }
        (out, verdict)
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn simple_get_keeps_alive() {
        let (out, v) = feed_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1000);
        assert_eq!(out, resp().keep_alive);
        assert!(out.ends_with(b"\r\n\r\nhello\n"));
        assert_eq!(v, Verdict::KeepOpen);
    }

    #[test]
    fn pipelined_requests_get_one_response_each_byte_by_byte() {
        let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 7, 1000] {
            let (out, v) = feed_all(req, step);
            assert_eq!(count(&out, b"HTTP/1.1 200 OK"), 3, "step {step}");
            assert_eq!(v, Verdict::KeepOpen);
        }
    }

    #[test]
    fn content_length_body_is_skipped() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n";
        for step in [1, 3, 1000] {
            let (out, _) = feed_all(req, step);
            assert_eq!(count(&out, b"HTTP/1.1 200 OK"), 2, "step {step}");
        }
    }

    #[test]
    fn chunked_body_with_extension_and_trailer_is_skipped() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n\
                    GET / HTTP/1.1\r\n\r\n";
        for step in [1, 5, 1000] {
            let (out, v) = feed_all(req, step);
            assert_eq!(count(&out, b"HTTP/1.1 200 OK"), 2, "step {step}");
            assert_eq!(v, Verdict::KeepOpen);
        }
    }

    #[test]
    fn chunk_data_must_end_in_crlf() {
        let (out, v) = feed_all(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
            1000,
        );
        assert!(out.starts_with(b"HTTP/1.1 400"));
        assert_eq!(v, Verdict::Close);
    }

    #[test]
    fn response_only_after_body_is_complete() {
        let (out, _) = feed_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc", 1000);
        assert!(out.is_empty());
    }

    #[test]
    fn expect_continue_gets_interim_response() {
        let (out, _) = feed_all(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nab",
            1000,
        );
        assert!(out.starts_with(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"));
    }

    #[test]
    fn connection_close_answers_then_closes_and_ignores_rest() {
        let (out, v) = feed_all(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            1000,
        );
        assert_eq!(out, resp().close);
        assert_eq!(v, Verdict::Close);
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (out, v) = feed_all(b"GET / HTTP/1.0\r\n\r\n", 1000);
        assert_eq!(out, resp().close);
        assert_eq!(v, Verdict::Close);
        let (out, v) = feed_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1000);
        assert_eq!(out, resp().keep_alive_10);
        assert_eq!(v, Verdict::KeepOpen);
    }

    #[test]
    fn head_gets_no_body() {
        let (out, _) = feed_all(b"HEAD / HTTP/1.1\r\n\r\n", 1000);
        assert!(out
            .ends_with(b"Content-Length: 6\r\nContent-Type: text/plain\r\nX-Backend: t1\r\n\r\n"));
    }

    #[test]
    fn malformed_and_ambiguous_requests_are_rejected() {
        for req in [
            &b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GARBAGE\x01 / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (out, v) = feed_all(req, 1000);
            assert!(
                out.starts_with(b"HTTP/1.1 400"),
                "{:?}",
                String::from_utf8_lossy(req)
            );
            assert_eq!(v, Verdict::Close);
        }
    }

    #[test]
    fn te_and_cl_together_uses_chunked_and_closes() {
        let (out, v) = feed_all(
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            1000,
        );
        assert_eq!(out, resp().close);
        assert_eq!(v, Verdict::Close);
    }

    #[test]
    fn oversized_head_is_431() {
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.resize(MAX_HEAD + 10, b'a');
        let (out, v) = feed_all(&req, 4096);
        assert!(out.starts_with(b"HTTP/1.1 431"));
        assert_eq!(v, Verdict::Close);
    }

    #[test]
    fn body_size_and_name_shape_the_response() {
        let r = Responses::new(20, "a\r\nb");
        assert!(r
            .keep_alive
            .ends_with(b"X-Backend: a__b\r\n\r\nhello\nhello\nhello\nhe"));
        assert_eq!(parse_content_length(b"18446744073709551616"), None);
        assert_eq!(parse_content_length(b" 42 "), Some(42));
    }

    // ---- socket tests: the real server on 127.0.0.1 ----

    fn local(name: &str) -> BackendOpts {
        BackendOpts::new("127.0.0.1:0".parse().unwrap()).name(name)
    }

    /// Reads one response (head + Content-Length body); returns the head.
    fn read_response(r: &mut BufReader<StdStream>) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "EOF inside head");
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        head
    }

    fn connect(addr: SocketAddr) -> (StdStream, BufReader<StdStream>) {
        let s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }

    #[test]
    fn serves_keep_alive_over_tcp() {
        let (addr, _t) = spawn(local("ka")).unwrap();
        let (mut s, mut r) = connect(addr);
        for _ in 0..3 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let head = read_response(&mut r);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
            assert!(head.contains("X-Backend: ka\r\n"));
        }
        s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut r).contains("Connection: close"));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "server must close after Connection: close");
    }

    #[test]
    fn pipelines_over_tcp() {
        let (addr, _t) = spawn(local("pipe").body_size(1000)).unwrap();
        let (mut s, mut r) = connect(addr);
        let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 50).collect();
        s.write_all(&batch).unwrap();
        for _ in 0..50 {
            assert!(read_response(&mut r).contains("Content-Length: 1000\r\n"));
        }
    }

    #[test]
    fn chunked_upload_over_tcp() {
        let (addr, _t) = spawn(local("chunk")).unwrap();
        let (mut s, mut r) = connect(addr);
        s.write_all(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = vec![b'z'; 100_000];
        for _ in 0..3 {
            s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .unwrap();
            s.write_all(&chunk).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_response(&mut r).starts_with("HTTP/1.1 200 OK"));
        assert!(read_response(&mut r).starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn epoll_fallback_serves_too() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = crate::runtime::build_epoll().unwrap();
            drive(rt, listener, Rc::new(Responses::new(6, "epoll")), None)
        });
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut r).contains("X-Backend: epoll\r\n"));
        assert!(read_response(&mut r).contains("X-Backend: epoll\r\n"));
    }

    #[test]
    fn stop_closes_listener_and_open_connections() {
        let h = spawn_stoppable(local("stop")).unwrap();
        let addr = h.addr();
        let (mut s, mut r) = connect(addr);
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(read_response(&mut r).contains("X-Backend: stop"));
        h.stop().unwrap();
        let mut rest = Vec::new();
        // Either a clean EOF or a reset: the idle connection must be gone.
        let n = r.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(StdStream::connect(addr).is_err());
    }
}
