//! The admin HTTP endpoint: `GET /metrics`, `GET /stats`, `GET /healthz`,
//! `POST /reset`.
//!
//! It runs on its own plain `std` thread with blocking sockets, away from
//! both the shards and the VRRP timers: a slow scrape can delay another
//! scrape, never a request or an advert. The protocol is the smallest honest
//! HTTP/1.1: read one request head (at most [`MAX_HEAD`] bytes, within
//! [`HEAD_DEADLINE`]), answer with `Content-Length` and `Connection: close`,
//! close. Requests are served one at a time, so a stuck client costs at most
//! [`HEAD_DEADLINE`] of admin availability and never a thread per client.
//!
//! Routes:
//! - `GET /metrics` — Prometheus text, since-boot values (counters must be monotonic).
//! - `GET /stats[?buckets=1][&raw=1][&pretty=1]` — JSON, since the last reset
//!   (`raw=1`: since boot); `buckets=1` adds raw histogram buckets. The
//!   `extra` callback's value is added under `"extra"` (VRRP/health details
//!   owned elsewhere).
//! - `GET /healthz` — `200 ok`, or `503 draining` during a graceful stop.
//! - `POST /reset` (or `GET`) — start a fresh `/stats` window.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::{JsonOptions, Registry};

/// Extra JSON merged into `/stats` under `"extra"`.
pub type ExtraFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to receive a full request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time allowed for writing a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A response produced by [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Allow` header for 405.
    pub allow: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: None,
        }
    }

    fn json(status: u16, v: &serde_json::Value, pretty: bool) -> Self {
        let body = if pretty {
            serde_json::to_vec_pretty(v)
        } else {
            serde_json::to_vec(v)
        }
        .unwrap_or_default();
        Response {
            status,
            content_type: "application/json",
            body,
            allow: None,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Response {
            allow: Some(allow),
            ..Response::text(405, "method not allowed\n")
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn flag(query: &str, name: &str) -> bool {
    query.split('&').any(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "1"));
        k == name && matches!(v, "1" | "true" | "yes" | "")
    })
}

/// Answer one request. Pure with respect to I/O, so it is unit-testable.
pub fn route(registry: &Registry, extra: Option<&ExtraFn>, method: &str, target: &str) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let read = matches!(method, "GET" | "HEAD");
    match path {
        "/metrics" => {
            if !read {
                return Response::method_not_allowed("GET, HEAD");
            }
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: registry.snapshot_raw().to_prometheus().into_bytes(),
                allow: None,
            }
        }
        "/stats" => {
            if !read {
                return Response::method_not_allowed("GET, HEAD");
            }
            let snap = if flag(query, "raw") {
                registry.snapshot_raw()
            } else {
                registry.snapshot()
            };
            let mut v = snap.to_json_value(JsonOptions {
                buckets: flag(query, "buckets"),
            });
            if let Some(f) = extra {
                v["extra"] = f();
            }
            Response::json(200, &v, flag(query, "pretty"))
        }
        "/healthz" => {
            if !read {
                return Response::method_not_allowed("GET, HEAD");
            }
            if registry.control().draining() {
                Response::text(503, "draining\n")
            } else {
                Response::text(200, "ok\n")
            }
        }
        "/reset" => {
            if !matches!(method, "POST" | "GET") {
                return Response::method_not_allowed("POST, GET");
            }
            registry.reset();
            Response::json(200, &serde_json::json!({"reset": true}), false)
        }
        "/" => {
            if !read {
                return Response::method_not_allowed("GET, HEAD");
            }
            Response::text(
                200,
                "ringlb admin: /metrics /stats /healthz /reset (POST)\n",
            )
        }
        _ => Response::text(404, "not found\n"),
    }
}

/// A running admin server. Dropping it stops the server and joins its thread,
/// so keep it alive for as long as the endpoint should answer.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, finish the request in progress, join the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(t) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = t.join();
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind `listen` and serve on a new thread named `ringlb-admin`.
pub fn spawn(
    listen: SocketAddr,
    registry: Arc<Registry>,
    extra: Option<ExtraFn>,
) -> io::Result<AdminServer> {
    spawn_on(TcpListener::bind(listen)?, registry, extra)
}

/// Serve on an already bound listener (e.g. inherited over SCM_RIGHTS).
pub fn spawn_on(
    listener: TcpListener,
    registry: Arc<Registry>,
    extra: Option<ExtraFn>,
) -> io::Result<AdminServer> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringlb-admin".into())
        .spawn(move || serve(listener, &registry, extra.as_ref(), &stop2))?;
    Ok(AdminServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn serve(listener: TcpListener, registry: &Registry, extra: Option<&ExtraFn>, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                // Errors are per-connection (client went away); nothing to do.
                let _ = handle_conn(stream, registry, extra);
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

enum Head {
    Complete(usize),
    TooLarge,
    Closed,
    TimedOut,
}

fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Head::Complete(pos + 4));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(Head::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::TimedOut);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(Head::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn handle_conn(
    mut stream: TcpStream,
    registry: &Registry,
    extra: Option<&ExtraFn>,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let (resp, head_only) = match read_head(&mut stream, &mut buf)? {
        Head::Closed => return Ok(()),
        Head::TimedOut => (Response::text(408, "request timeout\n"), false),
        Head::TooLarge => (Response::text(431, "request head too large\n"), false),
        Head::Complete(n) => {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or("");
                    let target = req.path.unwrap_or("");
                    (route(registry, extra, method, target), method == "HEAD")
                }
                _ => (Response::text(400, "bad request\n"), false),
            }
        }
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if let Some(a) = resp.allow {
        head.push_str("Allow: ");
        head.push_str(a);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&resp.body)?;
    }
    stream.flush()?;
    // Half-close, then drain briefly so unread request bytes (a POST body)
    // don't turn our close into a RST that eats the response.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

