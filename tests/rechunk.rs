//! Close-delimited responses (no Content-Length, not chunked: HTTP/1.0
//! servers, CGI-style apps) to keep-alive clients.
//!
//! As nginx does, ringlb sends such a body chunked to an HTTP/1.1 client, a
//! chunk per read and the last chunk when the upstream closes, so the client
//! connection stays open and only the upstream one closes (it is never
//! pooled). An HTTP/1.0 client gets the body as it came, then the close. A
//! backend that resets mid-body leaves the client without the last chunk,
//! so the truncation shows. Every test asserts what the client got (bytes,
//! framing, one connection) and what the backend got (each request once).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};

use common::peers::{
    app_pattern, curl, dechunk, peers_dir, py_client, read_until_close, sha256_hex, wait_listening,
    Proc,
};
use common::*;
use serde_json::{json, Value};

/// What a backend saw: the request line of each connection (one request
/// a connection), in arrival order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A backend that answers each connection's first request close-delimited
/// (`HTTP/1.0`, no framing fields) with `body_of(path)` in three writes,
/// then closes, as an HTTP/1.0 server does. A HEAD gets the head only.
fn close_delimited_backend(body_of: fn(&str) -> Vec<u8>) -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        let Some(req) = read_request(&mut s, &mut buf) else {
            return;
        };
        let line = request_line(&req);
        s2.lock().unwrap().push(line.clone());
        let mut words = line.split(' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
        if method != "HEAD" {
            let body = body_of(path);
            let third = body.len() / 3;
            for part in [&body[..third], &body[third..2 * third], &body[2 * third..]] {
                let _ = s.write_all(part);
                let _ = s.flush();
            }
        }
    });
    (be, seen)
}

/// Bodies that look like chunked framing themselves: re-framing must not
/// be fooled by what the data says.
fn tricky_body(path: &str) -> Vec<u8> {
    let mut b = format!("{path}\r\n0\r\n\r\n").into_bytes();
    b.extend((0..3000u32).map(|i| (i % 251) as u8));
    b.extend_from_slice(b"\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
    b
}

/// The head (lower-cased) and the decoded body of one chunked response
/// read from `s`; panics unless it is complete.
fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut tmp = [0u8; 16384];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let (body, used, complete) = dechunk(&buf[end + 4..]);
            if complete {
                let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
                buf.drain(..end + 4 + used);
                return (head, body);
            }
        }
        let n = s.read(&mut tmp).expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn close_delimited_bodies_are_rechunked_and_the_client_connection_kept() {
    let (be, seen) = close_delimited_backend(tricky_body);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    for path in ["/one", "/two", "/three"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = read_chunked(&mut s, &mut buf);
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert_eq!(
            header(&head, "transfer-encoding"),
            Some("chunked"),
            "{head}"
        );
        assert_eq!(header(&head, "content-length"), None, "{head}");
        assert_eq!(header(&head, "connection"), None, "{head}");
        assert!(body == tricky_body(path), "{path}: body differs");
        assert!(buf.is_empty(), "bytes after the last chunk: {buf:?}");
    }
    // The same connection, now asking to close: still chunked (the client
    // can tell a whole body from a cut one), then the close.
    s.write_all(b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, body) = read_chunked(&mut s, &mut buf);
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(body == tricky_body("/four"));
    let (rest, closed) = read_until_close(&mut s);
    assert!(closed && rest.is_empty() && buf.is_empty(), "{rest:?}");
    // Each request reached the backend once, each on its own connection
    // (a close-delimited response's connection is never pooled).
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "GET /three HTTP/1.1",
            "GET /four HTTP/1.1"
        ]
    );
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 4);
}

/// Requests pipelined behind one whose answer is close-delimited were lost
/// when the client connection closed after it; now each is answered, in
/// order, and each reached the backend once.
#[test]
fn pipelined_requests_behind_close_delimited_responses_are_all_answered() {
    let (be, seen) = close_delimited_backend(tricky_body);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(
        b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    for path in ["/p1", "/p2", "/p3"] {
        let (head, body) = read_chunked(&mut s, &mut buf);
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(body == tricky_body(path), "{path}: body differs");
    }
    let (rest, closed) = read_until_close(&mut s);
    assert!(closed && rest.is_empty() && buf.is_empty(), "{rest:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /p1 HTTP/1.1", "GET /p2 HTTP/1.1", "GET /p3 HTTP/1.1"]
    );
}

#[test]
fn http10_clients_get_the_body_as_it_came_then_the_close() {
    let (be, seen) = close_delimited_backend(tricky_body);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let (raw, closed) = read_until_close(&mut s);
    assert!(closed);
    let end = find(&raw, b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&raw[..end + 4]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(raw[end + 4..] == tricky_body("/old"), "body differs");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn head_responses_are_not_reframed_and_keep_the_connection() {
    let (be, seen) = close_delimited_backend(tricky_body);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut buf, true).expect("a HEAD response");
    let head = r.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{r}");
    assert_eq!(header(&head, "transfer-encoding"), None, "{r}");
    assert_eq!(header(&head, "connection"), None, "{r}");
    assert!(body_of(&r).is_empty(), "{r}");
    // The connection carries the next request.
    s.write_all(b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (_, body) = read_chunked(&mut s, &mut buf);
    assert!(body == tricky_body("/g"));
    assert_eq!(
        *seen.lock().unwrap(),
        ["HEAD /h HTTP/1.1", "GET /g HTTP/1.1"]
    );
}

/// A backend that sends a head and part of a close-delimited body, waits
/// for the test's word (the client has that part), then resets the
/// connection.
fn resetting_backend(go: mpsc::Receiver<()>) -> Backend {
    let go = Mutex::new(go);
    backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_none() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nfirst part of the body|");
        let _ = go.lock().unwrap().recv();
        let sock = socket2::SockRef::from(&s);
        sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        // Dropped with a zero linger: an RST, not a FIN.
    })
}

/// What a client got for a body cut short: a chunked `200` with `sent`
/// as its data and no last chunk, then the close.
fn assert_cut(got: &[u8], closed: bool, sent: &[u8]) {
    assert!(closed, "still open: {:?}", String::from_utf8_lossy(got));
    let end = find(got, b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&got[..end + 4]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    let (body, _, complete) = dechunk(&got[end + 4..]);
    assert!(!complete, "a cut body ended with the last chunk: {got:?}");
    assert_eq!(body, sent);
}

#[test]
fn a_backend_reset_mid_body_leaves_the_client_without_the_last_chunk() {
    let (tx, rx) = mpsc::channel();
    let be = resetting_backend(rx);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while find(&got, b"first part of the body|").is_none() {
        let n = s.read(&mut tmp).expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    tx.send(()).unwrap();
    let (rest, closed) = read_until_close(&mut s);
    got.extend_from_slice(&rest);
    assert_cut(&got, closed, b"first part of the body|");
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A backend that stalls mid-body past `read_timeout`: the client gets
/// what was sent, without the last chunk, and the connection closes.
#[test]
fn a_backend_stalling_mid_body_leaves_the_client_without_the_last_chunk() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = Mutex::new(done_rx);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_none() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nsome of it|");
        // Holds the connection open, silent, until the test is over.
        let _ = done_rx.lock().unwrap().recv();
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], "read_timeout = \"300ms\""));
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (got, closed) = read_until_close(&mut s);
    drop(done_tx);
    assert_cut(&got, closed, b"some of it|");
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A close-delimited event stream (an HTTP/1.0-style SSE endpoint): each
/// event goes out only after the client has the previous one, so a proxy
/// that held chunks back until more data came would stall it.
#[test]
fn close_delimited_events_reach_the_client_one_by_one() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_none() {
            return;
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        let rx = rx.lock().unwrap();
        for i in 0..5 {
            let _ = s.write_all(format!("data: event {i}\n\n").as_bytes());
            if rx.recv().is_err() {
                return;
            }
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    for i in 0..5 {
        let event = format!("data: event {i}\n\n");
        while find(&got, event.as_bytes()).is_none() {
            let n = s.read(&mut tmp).unwrap_or_else(|e| {
                panic!(
                    "event {i} held back ({e}); got {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
            assert!(n > 0, "closed before event {i}");
            got.extend_from_slice(&tmp[..n]);
        }
        tx.send(()).unwrap();
    }
    // The stream ends with the backend's close: the last chunk, and the
    // client connection carries on.
    let mut buf = got;
    let (head, body) = read_chunked(&mut s, &mut buf);
    assert_eq!(
        header(&head, "transfer-encoding"),
        Some("chunked"),
        "{head}"
    );
    let events: String = (0..5).map(|i| format!("data: event {i}\n\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), events);
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The second stream is let run at once.
    for _ in 0..5 {
        tx.send(()).unwrap();
    }
    let (head, body) = read_chunked(&mut s, &mut buf);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert_eq!(String::from_utf8_lossy(&body), events);
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// Python's `http.server` (HTTP/1.0, close-delimited bodies), behind ringlb.
struct Http10Server {
    addr: SocketAddr,
    proc: Proc,
    _dir: tempdir::Dir,
}

impl Http10Server {
    fn start() -> Http10Server {
        let dir = tempdir::Dir::new("http10");
        let port = free_port();
        let mut c = Command::new(python());
        c.arg(peers_dir().join("close_delimited.py"))
            .arg(port.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut proc = Proc::spawn(c, &dir.0.join("server.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut proc, "close_delimited.py");
        Http10Server {
            addr,
            proc,
            _dir: dir,
        }
    }

    /// How many times it answered `GET path` (from its request log).
    fn served(&self, path: &str) -> usize {
        let want = format!("\"GET {path} HTTP/1.1\" 200");
        self.proc.log_text().matches(&want).count()
    }
}

const ACCEPTED: &str = "ringlb_connections_accepted_total";

/// ringlb (one shard) in front of `server`, its admin address, and its
/// count of accepted client connections once every connection made so far
/// (the start-up probes) is counted: a request answered on a connection of
/// our own means the shard accepted everything queued before it.
fn ringlb_with_admin(server: SocketAddr) -> (Ringlb, SocketAddr, u64) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = simple_config(&[server], "") + &format!("\n[admin]\nlisten = \"{admin}\"\n");
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, admin);
    let r = roundtrip_close(
        rl.addr,
        b"GET /7 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let accepted = metric(admin, ACCEPTED);
    (rl, admin, accepted)
}

#[test]
fn curl_reuses_one_connection_for_an_http10_servers_bodies() {
    let server = Http10Server::start();
    let (rl, admin, before) = ringlb_with_admin(server.addr);
    let sizes = [10, 250_000, 0, 4096];
    let urls: Vec<String> = sizes
        .iter()
        .map(|n| format!("http://{}/{n}", rl.addr))
        .collect();
    let mut args = vec!["--fail", "-w", "[%{num_connects}]"];
    args.extend(urls.iter().map(String::as_str));
    let (ok, out, err) = curl(&args);
    assert!(ok, "curl: {err}");
    let mut want = Vec::new();
    for n in sizes {
        want.extend(app_pattern(n));
        want.extend_from_slice(format!("[{}]", u32::from(n == 10)).as_bytes());
    }
    // Each body whole, and a new connection only for the first transfer.
    assert_eq!(out.len(), want.len());
    assert!(
        out == want,
        "curl got other bytes (or made more connections)"
    );
    assert_eq!(metric(admin, ACCEPTED) - before, 1, "client connections");
    for n in sizes {
        assert_eq!(server.served(&format!("/{n}")), 1, "/{n}");
    }
}

fn python_clients_reuse_one_connection(lib: &str) {
    let server = Http10Server::start();
    let (rl, admin, before) = ringlb_with_admin(server.addr);
    let sizes = [1, 70_000, 3000, 0, 1_000_000];
    let steps: Vec<Value> = sizes
        .iter()
        .map(|n| json!({"id": format!("{lib}-{n}"), "method": "GET", "path": format!("/{n}")}))
        .collect();
    let results = py_client(&json!({
        "lib": lib,
        "base": format!("http://{}", rl.addr),
        "steps": steps,
    }));
    assert_eq!(results.len(), sizes.len(), "{results:?}");
    for (r, n) in results.iter().zip(sizes) {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["len"], n, "{r}");
        assert_eq!(r["sha"], sha256_hex(&app_pattern(n)), "{r}");
        assert_eq!(r["headers"]["transfer-encoding"], "chunked", "{r}");
        assert_eq!(server.served(&format!("/{n}")), 1, "/{n}");
    }
    assert_eq!(
        metric(admin, ACCEPTED) - before,
        1,
        "{lib} opened more than one connection"
    );
}

#[test]
fn requests_reuses_one_connection_for_an_http10_servers_bodies() {
    python_clients_reuse_one_connection("requests");
}

#[test]
fn httpx_reuses_one_connection_for_an_http10_servers_bodies() {
    python_clients_reuse_one_connection("httpx");
}

#[test]
fn aiohttp_reuses_one_connection_for_an_http10_servers_bodies() {
    python_clients_reuse_one_connection("aiohttp");
}
