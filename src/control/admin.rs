//! The admin HTTP endpoint: `GET /metrics`, `GET /stats`, `GET /healthz`,
//! `POST /reset`.
//!
//! It runs on plain `std` threads with blocking sockets, away from both the
//! shards and the VRRP timers: a slow scrape can never delay a request or an
//! advert. The protocol is the smallest honest HTTP/1.1: read one request
//! head (at most [`MAX_HEAD`] bytes, within [`HEAD_DEADLINE`] in total, not
//! per read), answer with `Content-Length` and `Connection: close`, close.
//!
//! Every connection gets its own short-lived thread, so a client that
//! trickles its request one byte at a time holds only its own thread until
//! its deadline and `/healthz` keeps answering the probes meanwhile.
//!
//! Admission is bounded, and a full house is not a denial of service: the
//! accept loop keeps a table of at most [`MAX_CLIENTS`] admitted
//! connections, each either still reading its request head or answering.
//! When every slot is taken, the oldest connection still reading its head
//! is evicted to admit the new one ([`admit`]): its socket is shut down for
//! reading, which wakes its thread, and that thread answers it `408` and
//! closes. A load balancer's `/healthz` probe sends its whole head at once,
//! so it is past its head within microseconds of its accept and is never
//! the oldest head-reader for long; a local process holding 32 (or 1000)
//! silent or trickling connections only evicts its own. This is nginx's
//! answer too: with no free connection it closes the oldest idle ones
//! ("reusable": keep-alive, and new connections that have sent nothing),
//! and `client_header_timeout` ends the rest; here [`HEAD_DEADLINE`] ends
//! every head read. Only when all slots are answering (each bounded by
//! [`WRITE_TIMEOUT`]) is a client told `503` at once. Threads stay bounded
//! as well: an evicted connection leaves its slot at once and its thread
//! ends right after its `408`, and no more than [`MAX_THREADS`] connection
//! threads (admitted plus leaving) ever run; beyond that, `503` too.
//!
//! Routes:
//! - `GET /metrics` — Prometheus text, since-boot values (counters must be monotonic).
//! - `GET /stats[?buckets=1][&raw=1][&pretty=1]` — JSON, since the last reset
//!   (`raw=1`: since boot); `buckets=1` adds raw histogram buckets. The
//!   `extra` callback's value is added under `"extra"` (VRRP/health details
//!   owned elsewhere).
//! - `GET /healthz` — `200 ok`, or `503 draining` during a graceful stop.
//! - `POST /reset` — start a fresh `/stats` window.
//!
//! State-changing routes take `POST` only (`405` otherwise, so a crawler or
//! a prefetching browser cannot trigger them) and, when `[admin] token` is
//! set, an `Authorization: Bearer <token>` header (`401` otherwise). The
//! read-only routes stay open for scrapers and probes.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::AdminConfig;
use crate::metrics::{JsonOptions, Registry};

/// Extra JSON merged into `/stats` under `"extra"`.
pub type ExtraFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to receive a full request head (in total).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time allowed for writing a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections admitted at once; when all are taken the oldest one still
/// reading its request head is evicted (see [`admit`]).
pub const MAX_CLIENTS: usize = 32;
/// Connection threads at once, admitted ones and evicted ones still
/// closing; more clients are answered `503` and closed.
pub const MAX_THREADS: usize = 2 * MAX_CLIENTS;

/// A response produced by [`Admin::route`].
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
        401 => "Unauthorized",
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

/// Whether a request carrying `authorization` (the header's value, if any)
/// may call a state-changing route. With no token configured everyone may;
/// otherwise exactly `Bearer <token>` (scheme case-insensitive), compared
/// without an early exit so the time taken does not reveal a prefix.
pub fn authorized(token: Option<&str>, authorization: Option<&[u8]>) -> bool {
    let Some(token) = token else { return true };
    let Some(value) = authorization else {
        return false;
    };
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = value[7..].trim_ascii_start();
    let want = token.as_bytes();
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// One parsed request, as [`Admin::route`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// Value of the `Authorization` header, if present.
    pub authorization: Option<&'a [u8]>,
}

/// What the endpoint serves: the registry, the `/stats` extra, the token.
pub struct Admin {
    pub registry: Arc<Registry>,
    pub extra: Option<ExtraFn>,
    /// `[admin] token`: required (as a bearer token) by state-changing routes.
    pub token: Option<String>,
}

impl Admin {
    /// Answer one request. Pure with respect to I/O, so it is unit-testable.
    pub fn route(&self, req: &Request<'_>) -> Response {
        let registry = &self.registry;
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let read = matches!(req.method, "GET" | "HEAD");
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
                if let Some(f) = &self.extra {
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
                if req.method != "POST" {
                    return Response::method_not_allowed("POST");
                }
                if !authorized(self.token.as_deref(), req.authorization) {
                    return Response::text(
                        401,
                        "unauthorized: Authorization: Bearer <token> required\n",
                    );
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
}

/// A running admin server. Dropping it stops the server and joins its
/// threads, so keep it alive for as long as the endpoint should answer.
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

    /// Stop accepting, finish the requests in progress, join the threads.
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

/// Bind `[admin] listen` and serve it on a new thread named `ringlb-admin`.
pub fn spawn(
    config: &AdminConfig,
    registry: Arc<Registry>,
    extra: Option<ExtraFn>,
) -> io::Result<AdminServer> {
    let admin = Admin {
        registry,
        extra,
        token: config.token.clone(),
    };
    spawn_on(TcpListener::bind(config.listen)?, admin)
}

/// Serve on an already bound listener (e.g. inherited over SCM_RIGHTS).
pub fn spawn_on(listener: TcpListener, admin: Admin) -> io::Result<AdminServer> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringlb-admin".into())
        .spawn(move || serve(listener, Arc::new(admin), &stop2))?;
    Ok(AdminServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// Where an admitted connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading its request head: may be evicted.
    Head,
    /// Its head is in (or its deadline passed): being answered.
    Answer,
}

/// What to do with a newly accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A slot is free.
    Take,
    /// Every slot is taken: evict the connection at this index (the oldest
    /// still reading its head) and take its slot.
    Evict(usize),
    /// Every slot is answering, or [`MAX_THREADS`] threads run: `503`.
    Busy,
}

/// Admission of a new connection, given the phases of the admitted ones,
/// oldest first, and the number of connection threads running.
pub fn admit(admitted: &[Phase], threads: usize) -> Admit {
    if threads >= MAX_THREADS {
        return Admit::Busy;
    }
    if admitted.len() < MAX_CLIENTS {
        return Admit::Take;
    }
    match admitted.iter().position(|p| *p == Phase::Head) {
        Some(i) => Admit::Evict(i),
        None => Admit::Busy,
    }
}

/// One admitted connection.
struct Slot {
    id: u64,
    phase: Phase,
    /// A second handle on the socket, to shut it down on eviction.
    socket: TcpStream,
}

/// The admission table, oldest first, and the connection threads running.
#[derive(Default)]
struct Slots {
    admitted: Mutex<Vec<Slot>>,
    threads: AtomicUsize,
    next_id: AtomicU64,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.admitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits `stream` (its id; a thread is counted for it) or `None`: busy.
    fn admit(&self, stream: &TcpStream) -> Option<u64> {
        let mut admitted = self.lock();
        let phases: Vec<Phase> = admitted.iter().map(|s| s.phase).collect();
        let evict = match admit(&phases, self.threads.load(Ordering::Acquire)) {
            Admit::Busy => return None,
            Admit::Take => None,
            Admit::Evict(i) => Some(i),
        };
        let socket = stream.try_clone().ok()?;
        if let Some(i) = evict {
            // Wakes the thread blocked reading its head; it answers 408.
            let _ = admitted.remove(i).socket.shutdown(Shutdown::Read);
            crate::warn!(
                "admin: all {MAX_CLIENTS} slots taken; closed the oldest client still sending its request head"
            );
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        admitted.push(Slot {
            id,
            phase: Phase::Head,
            socket,
        });
        self.threads.fetch_add(1, Ordering::AcqRel);
        Some(id)
    }

    /// Connection `id` is done reading its head; `false` if it was evicted.
    fn answering(&self, id: u64) -> bool {
        let mut admitted = self.lock();
        match admitted.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.phase = Phase::Answer;
                true
            }
            None => false,
        }
    }

    /// Connection `id` gives its slot up (if eviction did not already).
    fn leave(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

/// Accept loop: one thread per connection, admitted by [`admit`].
fn serve(listener: TcpListener, admin: Arc<Admin>, stop: &AtomicBool) {
    let slots = Arc::new(Slots::default());
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        workers.retain(|w| !w.is_finished());
        match accepted {
            Ok((stream, _)) => {
                let Some(id) = slots.admit(&stream) else {
                    busy(stream);
                    continue;
                };
                let (admin, slots2) = (Arc::clone(&admin), Arc::clone(&slots));
                let spawned = std::thread::Builder::new()
                    .name("ringlb-admin-conn".into())
                    .spawn(move || {
                        let mut stream = stream;
                        // Errors are per-connection (client went away); nothing to do.
                        let answered = handle_conn(&mut stream, &admin, &slots2, id);
                        slots2.leave(id);
                        if answered.unwrap_or(false) {
                            linger(&mut stream);
                        }
                        slots2.threads.fetch_sub(1, Ordering::AcqRel);
                    });
                match spawned {
                    Ok(w) => workers.push(w),
                    Err(_) => {
                        // The closure (and the stream) is gone with the error.
                        slots.leave(id);
                        slots.threads.fetch_sub(1, Ordering::AcqRel);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // Every worker ends within HEAD_DEADLINE + WRITE_TIMEOUT (+ the drain).
    for w in workers {
        let _ = w.join();
    }
}

/// Too many clients at once: a best-effort `503`, never blocking the accept loop.
fn busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n",
    );
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
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Head::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads one request head on `stream` and answers it; `Ok(true)` once an
/// answer was written (the caller then lingers), `Ok(false)` when the
/// client left first. An evicted connection (see [`admit`]) is answered
/// `408`, as one whose head deadline passed.
fn handle_conn(stream: &mut TcpStream, admin: &Admin, slots: &Slots, id: u64) -> io::Result<bool> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let head = read_head(stream, &mut buf)?;
    let evicted = !slots.answering(id);
    let (resp, head_only) = match head {
        _ if evicted => (Response::text(408, "request timeout\n"), false),
        Head::Closed => return Ok(false),
        Head::TimedOut => (Response::text(408, "request timeout\n"), false),
        Head::TooLarge => (Response::text(431, "request head too large\n"), false),
        Head::Complete(n) => {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or("");
                    let authorization = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                        .map(|h| h.value);
                    let r = Request {
                        method,
                        target: req.path.unwrap_or(""),
                        authorization,
                    };
                    (admin.route(&r), method == "HEAD")
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
    if resp.status == 401 {
        head.push_str("WWW-Authenticate: Bearer\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&resp.body)?;
    }
    stream.flush()?;
    Ok(true)
}

/// After an answer: half-close, then drain briefly so unread request bytes
/// (a POST body) don't turn our close into a RST that eats the response.
fn linger(stream: &mut TcpStream) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::stats as stats_cli;
    use crate::metrics::Layout;
    use crate::proto::vrrp::State;
    use serde_json::Value;

    const N_PER_SHARD: u64 = 500;

    fn layout() -> Arc<Layout> {
        Arc::new(Layout {
            listeners: vec!["127.0.0.1:8080".into()],
            servers: vec![
                ("app".into(), "127.0.0.1:9001".into()),
                ("app".into(), "127.0.0.1:9002".into()),
            ],
        })
    }

    /// Two fake shards on their own threads record N_PER_SHARD requests each.
    fn busy_registry() -> Arc<Registry> {
        let reg = Registry::new(2);
        let threads: Vec<_> = (0..2)
            .map(|shard| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    let mut r = reg.recorder(shard, layout(), 1);
                    for i in 0..N_PER_SHARD {
                        r.on_accept();
                        r.on_handled();
                        let total = 200 + (i * 37) % 5000;
                        let status = if i % 50 == 0 { 503 } else { 200 };
                        r.on_request_done(0, Some(shard), status, total, Some(total / 2), 80, 200);
                        r.on_close(crate::metrics::ConnState::Reading);
                    }
                    r.on_connect_time(shard, 120);
                    while !r.publish() {
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = reg.control();
        c.set_generation(1);
        c.set_server_health("app", "127.0.0.1:9001", true);
        c.health_transition("app", "127.0.0.1:9002", false);
        c.set_vrrp("VI_1", State::Backup, 100);
        c.vrrp_transition("VI_1", State::Master);
        c.vrrp_advert_received("VI_1", Some(Duration::from_millis(1000)));
        c.vrrp_drop("bad_checksum");
        reg
    }

    fn serve_test(
        registry: Arc<Registry>,
        extra: Option<ExtraFn>,
        token: Option<&str>,
    ) -> AdminServer {
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_string),
        };
        spawn(&config, registry, extra).unwrap()
    }

    fn get_json(addr: SocketAddr, path: &str) -> Value {
        let (status, body) = stats_cli::http_request(addr, "GET", path).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A python3 that has prometheus_client, if any.
    fn python_with_prometheus() -> Option<&'static str> {
        ["/usr/bin/python3", "python3"].into_iter().find(|py| {
            std::process::Command::new(py)
                .args(["-c", "import prometheus_client.parser"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }

    const PARSE_PY: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
types, vals = {}, {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    types[fam.name] = fam.type
    for s in fam.samples:
        vals[s.name + json.dumps(s.labels, sort_keys=True, separators=(',', ':'))] = s.value
print(json.dumps({"types": types, "vals": vals}))
"#;

    #[test]
    fn stats_counts_are_exact_over_http() {
        let reg = busy_registry();
        let extra: ExtraFn = Arc::new(|| serde_json::json!({"node": "lb1"}));
        let srv = serve_test(reg.clone(), Some(extra), None);
        let addr = srv.local_addr();
        let n = 2 * N_PER_SHARD;

        let v = get_json(addr, "/stats");
        assert_eq!(v["connections"]["requests"], n);
        assert_eq!(v["connections"]["accepted"], n);
        assert_eq!(v["connections"]["handled"], n);
        assert_eq!(v["connections"]["active"], 0);
        assert_eq!(v["totals"]["requests"], n);
        assert_eq!(v["totals"]["status"]["5xx"], 2 * (N_PER_SHARD / 50));
        assert_eq!(v["totals"]["status"]["2xx"], n - 2 * (N_PER_SHARD / 50));
        assert_eq!(v["totals"]["bytes_in"], 80 * n);
        assert_eq!(v["totals"]["latency"]["count"], n);
        assert_eq!(v["totals"]["upstream_latency"]["count"], n);
        assert_eq!(v["listeners"][0]["requests"], n);
        for s in 0..2 {
            assert_eq!(v["servers"][s]["requests"], N_PER_SHARD);
            assert_eq!(v["servers"][s]["latency"]["count"], N_PER_SHARD);
            assert_eq!(v["servers"][s]["connect_time"]["count"], 1);
        }
        assert_eq!(v["servers"][0]["health"], "up");
        assert_eq!(v["servers"][1]["health"], "down");
        assert_eq!(v["servers"][1]["health_transitions"]["down"], 1);
        assert_eq!(v["vrrp"]["instances"][0]["role"], "MASTER");
        assert_eq!(v["vrrp"]["dropped"]["bad_checksum"], 1);
        assert_eq!(v["generation"], 1);
        assert_eq!(v["extra"]["node"], "lb1");
        let p = &v["totals"]["latency"]["percentiles_us"];
        let mut last = v["totals"]["latency"]["min_us"].as_u64().unwrap();
        for k in ["50", "75", "90", "99", "99.9", "99.99"] {
            let x = p[k].as_u64().unwrap();
            assert!(x >= last, "p{k} = {x} < {last}");
            last = x;
        }
        assert!(v["totals"]["latency"]["max_us"].as_u64().unwrap() >= last);
        assert!(v["totals"]["latency"].get("buckets").is_none());
        let b = get_json(addr, "/stats?buckets=1");
        assert!(!b["totals"]["latency"]["buckets"]
            .as_array()
            .unwrap()
            .is_empty());

        // Reset: /stats starts over, /metrics stays monotonic.
        let mut out = Vec::new();
        stats_cli::run_to(&mut out, addr, None, true, None).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("stats window reset"));
        let v = get_json(addr, "/stats");
        assert_eq!(v["connections"]["requests"], 0);
        assert_eq!(v["totals"]["latency"]["count"], 0);
        assert_eq!(v["vrrp"]["dropped"]["bad_checksum"], 0);
        assert_eq!(v["vrrp"]["instances"][0]["role"], "MASTER");
        let v = get_json(addr, "/stats?raw=1");
        assert_eq!(v["connections"]["requests"], n);
        let (_, metrics) = stats_cli::http_request(addr, "GET", "/metrics").unwrap();
        assert!(metrics.contains(&format!("\nringlb_requests_total {n}\n")));
        srv.shutdown();
    }

    #[test]
    fn metrics_parse_with_prometheus_client() {
        let reg = busy_registry();
        let srv = serve_test(reg, None, None);
        let resp = raw(
            srv.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        let (head, text) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", text.len())));
        let Some(py) = python_with_prometheus() else {
            println!("SKIP prometheus_client parse: no python3 with prometheus_client");
            return;
        };
        let mut child = std::process::Command::new(py)
            .args(["-c", PARSE_PY])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prometheus_client rejected the text: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let types = &parsed["types"];
        let vals = &parsed["vals"];
        let n = (2 * N_PER_SHARD) as f64;
        assert_eq!(types["ringlb_requests"], "counter");
        assert_eq!(
            types["ringlb_listener_request_duration_seconds"],
            "histogram"
        );
        assert_eq!(types["ringlb_server_connect_duration_seconds"], "histogram");
        assert_eq!(types["ringlb_connections"], "gauge");
        assert_eq!(vals["ringlb_requests_total{}"], n);
        let l = r#"{"listener":"127.0.0.1:8080"}"#;
        assert_eq!(
            vals[format!("ringlb_listener_request_duration_seconds_count{l}")],
            n
        );
        assert_eq!(
            vals[r#"ringlb_listener_request_duration_seconds_bucket{"le":"+Inf","listener":"127.0.0.1:8080"}"#],
            n
        );
        // All samples in this run are <= 5.2 ms.
        assert_eq!(
            vals[r#"ringlb_listener_request_duration_seconds_bucket{"le":"0.01","listener":"127.0.0.1:8080"}"#],
            n
        );
        assert_eq!(
            vals[r#"ringlb_server_requests_total{"server":"127.0.0.1:9001","upstream":"app"}"#],
            N_PER_SHARD as f64
        );
        assert_eq!(
            vals[r#"ringlb_vrrp_state{"instance":"VI_1","state":"MASTER"}"#],
            1.0
        );
        assert_eq!(
            vals[r#"ringlb_vrrp_dropped_packets_total{"reason":"bad_checksum"}"#],
            1.0
        );
    }

    #[test]
    fn routes_and_errors() {
        let reg = Registry::new(1);
        let srv = serve_test(reg.clone(), None, None);
        let a = srv.local_addr();
        let r = raw(a, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        reg.control().set_draining(true);
        let r = raw(a, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        let r = raw(a, b"GET /nope HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = raw(a, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("\r\nAllow: GET, HEAD\r\n"),
            "{r}"
        );
        let r = raw(a, b"HEAD /stats HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = raw(a, b"\x01\x02 garbage\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let mut big = b"GET /stats HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        big.extend_from_slice(b"\r\n\r\n");
        let r = raw(a, &big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // State-changing routes take POST only.
        let r = raw(a, b"GET /reset HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("\r\nAllow: POST\r\n"),
            "{r}"
        );
        let r = raw(a, b"POST /reset HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.contains("\"reset\":true"),
            "{r}"
        );
        // Still serving after all of that.
        let v = get_json(a, "/stats");
        assert_eq!(v["shards"], 1);
        srv.shutdown();
    }

    #[test]
    fn stats_cli_renders_wrk_view() {
        let reg = busy_registry();
        let srv = serve_test(reg, None, None);
        let addr = srv.local_addr();
        let mut out = Vec::new();
        stats_cli::run_to(&mut out, addr, None, false, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        let n = 2 * N_PER_SHARD;
        assert!(text.contains(&format!("Requests: {n} total")), "{text}");
        assert!(text.contains(&format!(
            "Latency Distribution (window, total, {n} samples)"
        )));
        for p in ["50%", "75%", "90%", "99%", "99.9%", "99.99%", "max"] {
            assert!(text.contains(p), "missing {p}\n{text}");
        }
        assert!(text.contains("127.0.0.1:9002"), "{text}");
        assert!(text.contains("VI_1") && text.contains("MASTER"));
        assert!(text.contains("1/(1-Percentile)"));
        assert!(
            text.contains(&format!("Total count    = {n:>12}]")),
            "{text}"
        );

        let mut out = Vec::new();
        stats_cli::run_to(
            &mut out,
            addr,
            Some(Duration::from_millis(10)),
            false,
            Some(2),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.matches("\nringlb ").count() + usize::from(text.starts_with("ringlb ")),
            2
        );
        // Second block is an interval with no new requests.
        assert!(text.contains("Latency (interval)"), "{text}");
        assert!(
            text.contains("Latency Distribution (interval, total, 0 samples)"),
            "{text}"
        );
        srv.shutdown();
    }

    #[test]
    fn recorder_is_send() {
        fn is_send<T: Send>() {}
        is_send::<crate::metrics::ShardRecorder>();
        fn is_sync<T: Send + Sync>() {}
        is_sync::<Registry>();
    }

    #[test]
    fn bearer_token_rules() {
        type Case<'a> = (Option<&'a str>, Option<&'a [u8]>, bool);
        let cases: &[Case<'_>] = &[
            (None, None, true),
            (None, Some(b"Bearer whatever"), true),
            (Some("s3cret"), None, false),
            (Some("s3cret"), Some(b"Bearer s3cret"), true),
            (Some("s3cret"), Some(b"bearer s3cret"), true),
            (Some("s3cret"), Some(b"  Bearer   s3cret  "), true),
            (Some("s3cret"), Some(b"Bearer s3cre"), false),
            (Some("s3cret"), Some(b"Bearer s3cret2"), false),
            (Some("s3cret"), Some(b"Bearer S3CRET"), false),
            (Some("s3cret"), Some(b"Basic s3cret"), false),
            (Some("s3cret"), Some(b"s3cret"), false),
            (Some("s3cret"), Some(b"Bearer"), false),
            (Some("s3cret"), Some(b""), false),
        ];
        for (token, header, want) in cases {
            assert_eq!(
                authorized(*token, *header),
                *want,
                "token {token:?} header {:?}",
                header.map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn token_guards_reset_but_not_reads() {
        let reg = busy_registry();
        let srv = serve_test(reg.clone(), None, Some("s3cret"));
        let a = srv.local_addr();
        let requests = || {
            reg.snapshot().to_json_value(JsonOptions::default())["connections"]["requests"].clone()
        };
        assert_eq!(requests(), 2 * N_PER_SHARD);
        for req in [
            &b"POST /reset HTTP/1.1\r\n\r\n"[..],
            b"POST /reset HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
            b"POST /reset HTTP/1.1\r\nAuthorization: Basic czNjcmV0\r\n\r\n",
        ] {
            let r = raw(a, req);
            assert!(
                r.starts_with("HTTP/1.1 401 ") && r.contains("\r\nWWW-Authenticate: Bearer\r\n"),
                "{r}"
            );
            assert_eq!(
                requests(),
                2 * N_PER_SHARD,
                "a refused reset must not reset"
            );
        }
        // Without a token the reads stay open (scrapers, probes).
        for path in ["/metrics", "/healthz", "/stats"] {
            let r = raw(a, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            assert!(r.starts_with("HTTP/1.1 200 "), "{path}: {r}");
        }
        let r = raw(
            a,
            b"POST /reset HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        assert_eq!(requests(), 0);
        srv.shutdown();
    }

    /// Clients that trickle their request a byte every 150 ms each hold only
    /// their own connection: /healthz and /metrics answer while they are
    /// still sending, and the tricklers are cut off at the head deadline.
    #[test]
    fn trickling_clients_do_not_block_probes() {
        let reg = busy_registry();
        let srv = serve_test(reg, None, None);
        let a = srv.local_addr();
        let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let done = Arc::new(AtomicUsize::new(0));
        let tricklers: Vec<_> = (0..4)
            .map(|_| {
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(a).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let started = Instant::now();
                    // One byte per 150 ms: the full head would take ~5 s.
                    for b in req {
                        if s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(150));
                    }
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    done.fetch_add(1, Ordering::SeqCst);
                    (
                        String::from_utf8_lossy(&out).into_owned(),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut answered = 0;
        let t0 = Instant::now();
        for i in 0..10 {
            let path = if i % 2 == 0 { "/healthz" } else { "/metrics" };
            let r = raw(a, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            assert!(r.starts_with("HTTP/1.1 200 "), "{path}: {r}");
            if done.load(Ordering::SeqCst) == 0 {
                answered += 1;
            }
        }
        let probes = t0.elapsed();
        assert_eq!(
            answered, 10,
            "every probe must be answered while the tricklers are still sending"
        );
        for t in tricklers {
            let (r, took) = t.join().unwrap();
            println!("trickler: {took:?}: {}", r.lines().next().unwrap_or(""));
            assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
        }
        println!("10 probes answered in {probes:?} beside 4 trickling clients");
        srv.shutdown();
    }

    /// More silent clients than MAX_CLIENTS at once: each new client takes
    /// the slot of the oldest one still reading its head, which is told
    /// 408 and closed; the probes behind them are answered 200.
    #[test]
    fn silent_clients_beyond_the_slots_are_evicted_oldest_first() {
        let reg = Registry::new(1);
        let srv = serve_test(reg, None, None);
        let a = srv.local_addr();
        let extra = 4;
        let idle: Vec<TcpStream> = (0..MAX_CLIENTS + extra)
            .map(|_| TcpStream::connect(a).unwrap())
            .collect();
        let r = raw(a, b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        // The oldest `extra + 1` made room (FIFO accept queue); each saw 408.
        for (i, mut s) in idle.into_iter().take(extra + 1).enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            let r = String::from_utf8_lossy(&out);
            assert!(r.starts_with("HTTP/1.1 408 "), "client {i}: {r}");
        }
        srv.shutdown();
    }

    #[test]
    fn admission_evicts_the_oldest_head_reader_only_when_full() {
        use Phase::{Answer, Head};
        let full = |f: &dyn Fn(usize) -> Phase| -> Vec<Phase> { (0..MAX_CLIENTS).map(f).collect() };
        let cases: Vec<(Vec<Phase>, usize, Admit)> = vec![
            (vec![], 0, Admit::Take),
            (vec![Head, Answer], 2, Admit::Take),
            (full(&|_| Head), MAX_CLIENTS, Admit::Evict(0)),
            (
                full(&|i| if i < 3 { Answer } else { Head }),
                MAX_CLIENTS,
                Admit::Evict(3),
            ),
            (
                full(&|i| if i == MAX_CLIENTS - 1 { Head } else { Answer }),
                MAX_CLIENTS,
                Admit::Evict(MAX_CLIENTS - 1),
            ),
            (full(&|_| Answer), MAX_CLIENTS, Admit::Busy),
            // Evicted threads still closing count against MAX_THREADS.
            (vec![Head], MAX_THREADS, Admit::Busy),
            (full(&|_| Head), MAX_THREADS - 1, Admit::Evict(0)),
            (full(&|_| Head), MAX_THREADS, Admit::Busy),
        ];
        for (i, (admitted, threads, want)) in cases.iter().enumerate() {
            assert_eq!(admit(admitted, *threads), *want, "case {i}");
        }
    }
}
