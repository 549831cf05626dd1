//! The upstream exchange end to end: pooled connections that went stale or
//! dirty, requests that must (or must not) be replayed, early responses,
//! lone servers, tunnels and local connect errors. Each test asserts what
//! the client received and what the backend received.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The first line of a raw request.
fn request_line(req: &[u8]) -> String {
    let end = find(req, b"\r\n").unwrap_or(req.len());
    String::from_utf8_lossy(&req[..end]).into_owned()
}

/// One request on a fresh client connection; the response (empty when the
/// connection closed without one).
fn one(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    read_response(&mut s, &mut Vec::new(), false).unwrap_or_default()
}

/// A uvicorn process serving a small ASGI app that logs every request it
/// receives (`METHOD PATH BODY_LEN`) to a file; killed by PID on drop.
struct Uvicorn {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempdir::Dir,
}

const ASGI_APP: &str = r#"
import asyncio, os
LOG = os.environ["RINGLB_TEST_LOG"]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    with open(LOG, "a") as f:
        f.write(f"{scope['method']} {scope['path']} {len(body)}\n")
    if scope["path"].startswith("/slow"):
        await asyncio.sleep(0.3)
    out = f"{scope['method']} {scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
"#;

impl Uvicorn {
    fn start(keep_alive_secs: u32) -> Uvicorn {
        let dir = tempdir::Dir::new("uvicorn");
        std::fs::write(dir.0.join("app.py"), ASGI_APP).unwrap();
        let log = dir.0.join("requests.log");
        std::fs::write(&log, "").unwrap();
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--timeout-keep-alive", &keep_alive_secs.to_string()])
            .args(["--log-level", "warning", "--app-dir"])
            .arg(&dir.0)
            .env("RINGLB_TEST_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn uvicorn");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let u = Uvicorn {
            child,
            addr,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(u.addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "uvicorn did not start"
            );
            thread::sleep(Duration::from_millis(50));
        }
        u
    }

    fn seen(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Item 1: a backend that closes idle keep-alive connections (uvicorn,
/// 1 s) must not cost clients a 502, nor mark the server down.
#[test]
fn backend_idle_close_never_gives_502() {
    let be = Uvicorn::start(1);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // Eight concurrent requests leave eight pooled upstream connections.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let addr = rl.addr;
            thread::spawn(move || {
                one(
                    addr,
                    format!("GET /slow/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
                )
            })
        })
        .collect();
    for w in warm {
        let r = w.join().unwrap();
        assert_eq!(status_of(&r), 200, "{r}");
    }
    // uvicorn closes them all after 1 s.
    thread::sleep(Duration::from_secs(2));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    for i in 0..11 {
        s.write_all(format!("GET /after/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).expect("response");
        assert_eq!(status_of(&r), 200, "GET {i}: {r}");
        assert_eq!(body_of(&r), format!("GET /after/{i} 0"));
    }
    thread::sleep(Duration::from_secs(2));
    let body = vec![b'p'; 300 * 1024];
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    s.write_all(&req).unwrap();
    let r = read_response(&mut s, &mut buf, false).expect("response");
    assert_eq!(status_of(&r), 200, "POST: {r}");
    assert_eq!(body_of(&r), format!("POST /upload {}", body.len()));

    let seen = be.seen();
    for i in 0..11 {
        let line = format!("GET /after/{i} 0");
        assert_eq!(
            seen.iter().filter(|l| **l == line).count(),
            1,
            "{line} in {seen:?}"
        );
    }
    let post = format!("POST /upload {}", body.len());
    assert_eq!(seen.iter().filter(|l| **l == post).count(), 1, "{seen:?}");
    assert!(
        !rl.log_text().contains("marked unavailable"),
        "{}",
        rl.log_text()
    );
}

/// A backend that records the request line of every request it reads and
/// lets `answer` reply (`false`: close the connection instead).
fn recording_backend<F>(answer: F) -> (Backend, Arc<Mutex<Vec<String>>>)
where
    F: Fn(&mut TcpStream, &str) -> bool + Send + Sync + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&seen);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line = request_line(&req);
            rec.lock().unwrap().push(line.clone());
            if !answer(&mut s, &line) {
                return;
            }
        }
    });
    (be, seen)
}

/// A backend that answers GETs and, for a POST, reads it whole and closes
/// without answering.
fn post_swallowing_backend() -> (Backend, Arc<Mutex<Vec<String>>>) {
    recording_backend(|s, line| {
        !line.starts_with("POST")
            && s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_ok()
    })
}

/// Item 2: a POST that reached the backend is never sent again.
#[test]
fn sent_post_is_never_replayed() {
    let (be, seen) = post_swallowing_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], "retries = 2\n"));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    s.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert_eq!(status_of(&r), 200, "{r}");
    // The POST goes on the pooled connection; the backend reads it and closes.
    s.write_all(b"POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).unwrap_or_default();
    assert_eq!(status_of(&r), 502, "{r}");
    thread::sleep(Duration::from_millis(300));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("POST /pay")).count(),
        1,
        "the POST was replayed: {seen:?}"
    );
}

/// The same failure for an idempotent request: it is retried on a fresh
/// connection and the client gets the answer.
#[test]
fn idempotent_request_is_retried_after_a_silent_close() {
    let served = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&served);
    // Each connection answers one request, then reads the next and closes.
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_some() {
            n.fetch_add(1, Ordering::SeqCst);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
        let _ = read_request(&mut s, &mut buf);
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    for i in 0..4 {
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap_or_default();
        assert_eq!(status_of(&r), 200, "GET {i}: {r}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 4);
}

/// Item 3: a streamed POST on a reused connection whose backend reads it
/// and closes: no panic, a clean 502, and `max_conns` slots released.
#[test]
fn streamed_post_failure_releases_its_slot() {
    let (be, seen) = post_swallowing_backend();
    let cfg = format!(
        "[runtime]\nworkers = 1\n[http]\nrequest_buffering = false\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\nmax_conns = 2\n",
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    let body = vec![b'x'; 64 * 1024];
    for i in 0..4 {
        let mut s = connect(rl.addr);
        let mut buf = Vec::new();
        s.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(status_of(&r), 200, "try {i}: {r}");
        s.write_all(
            format!(
                "POST /stream/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        // The body follows later: it is streamed (buffering is off).
        thread::sleep(Duration::from_millis(100));
        // The proxy may stop reading the body once the backend is gone.
        let _ = s.write_all(&body);
        let r = read_response(&mut s, &mut buf, false).unwrap_or_default();
        assert_eq!(status_of(&r), 502, "try {i}: {r:?}");
    }
    for i in 0..4 {
        let r = one(
            rl.addr,
            format!("GET /after/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&r), 200, "after {i}: {r}");
    }
    let seen = seen.lock().unwrap().clone();
    for i in 0..4 {
        let line = format!("POST /stream/{i} HTTP/1.1");
        assert_eq!(
            seen.iter().filter(|l| **l == line).count(),
            1,
            "{line}: {seen:?}"
        );
    }
    let log = rl.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Item 5: one reset from the only server does not make every following
/// request a 502 for `fail_timeout`. (A POST: a GET would be sent again,
/// see `tests/handover.rs`.)
#[test]
fn lone_server_is_tried_after_a_failure() {
    let conns = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&conns);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        while read_request(&mut s, &mut buf).is_some() {
            if first {
                // Reset: close with SO_LINGER 0.
                let sock = socket2::SockRef::from(&s);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                return;
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let r = one(
        rl.addr,
        b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(status_of(&r), 502, "{r}");
    assert_eq!(conns.load(Ordering::SeqCst), 1, "the POST was sent again");
    // Give the control thread time to take the failure into account.
    thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        let r = one(
            rl.addr,
            format!("GET /next/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&r), 200, "request {i}: {r}");
        assert_eq!(body_of(&r), "ok");
    }
}

/// A backend that reads a request head only, answers `413` and closes
/// (unread body bytes make its kernel send a reset). Counts heads.
fn refusing_backend() -> (Backend, Arc<AtomicUsize>) {
    let heads = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&heads);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        while find(&buf, b"\r\n\r\n").is_none() {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        h.fetch_add(1, Ordering::SeqCst);
        let _ = s.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
        );
    });
    (be, heads)
}

/// Sends `head` and a body of `mib` MiB (from another thread, errors
/// ignored) and reads one response (empty if the connection ended first).
fn upload(addr: SocketAddr, head: &[u8], mib: usize, wait_for_continue: bool) -> String {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head).unwrap();
    let mut got = Vec::new();
    if wait_for_continue {
        // Like curl: wait for 100 (or a final answer) before the body.
        let mut tmp = [0u8; 4096];
        while find(&got, b"\r\n\r\n").is_none() {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
            }
        }
        if !got.starts_with(b"HTTP/1.1 100 ") {
            return String::from_utf8_lossy(&got).into_owned();
        }
        // The final answer may have come in the same read as the 100.
        let end = find(&got, b"\r\n\r\n").unwrap() + 4;
        got.drain(..end);
    }
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..16 * mib {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let r = read_response(&mut s, &mut got, false).unwrap_or_default();
    // Unblocks the writer if the proxy stopped reading.
    let _ = s.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    r
}

/// Sends `tries` uploads with `head` to a refusing backend; each must get
/// the backend's 413 (not a 502, not a reset), and the backend must have
/// seen each head once.
fn refused_every_time(mib: usize, expect: bool, tries: usize) {
    let len = mib * 1024 * 1024;
    let head = if expect {
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n")
    } else {
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n")
    };
    let (be, heads) = refusing_backend();
    // No local limit: the backend is the one refusing.
    let cfg = simple_config(&[be.addr], "").replace(
        "[[listener]]",
        "[http]\nclient_max_body_size = 0\n\n[[listener]]",
    );
    let rl = Ringlb::start(&cfg);
    for i in 0..tries {
        let r = upload(rl.addr, head.as_bytes(), mib, expect);
        assert_eq!(status_of(&r), 413, "try {i}: {r:?}");
        assert!(r.ends_with("\r\n\r\ntoo large"), "try {i}: {r:?}");
        if mib >= 16 {
            // Answered before the body was read: the connection ends.
            assert!(r.contains("\r\nConnection: close\r\n"), "try {i}: {r:?}");
        }
    }
    assert_eq!(heads.load(Ordering::SeqCst), tries);
}

/// Item 6: a backend that refuses an upload before reading it; the client
/// gets that answer every time.
#[test]
fn early_response_reaches_the_client() {
    // 1 MiB (may fit in the socket buffers, then the request is complete
    // when the answer comes) and 16 MiB (cannot: the answer is early).
    refused_every_time(1, false, 20);
    refused_every_time(16, false, 10);
}

/// The same with `Expect: 100-continue` (answered by the proxy, see the
/// README): the refusal still reaches the client.
#[test]
fn early_response_after_100_continue() {
    refused_every_time(1, true, 10);
    refused_every_time(16, true, 10);
}

/// Code reading: bytes a backend sends after a complete response (more
/// than Content-Length, or a body after HEAD, in a later segment) never
/// become the answer to the next request.
#[test]
fn extra_response_bytes_never_reach_the_next_exchange() {
    let (be, seen) = recording_backend(|s, line| {
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        if line.starts_with("HEAD") {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                .unwrap();
            thread::sleep(Duration::from_millis(50));
            s.write_all(b"EVIL!").unwrap();
        } else if path == "/extra" {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            thread::sleep(Duration::from_millis(50));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
                .unwrap();
        } else {
            let body = format!("for {path}");
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all((head + &body).as_bytes()).unwrap();
        }
        true
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    for (first, bodiless) in [
        ("GET /extra HTTP/1.1\r\nHost: a\r\n\r\n", false),
        ("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n", true),
    ] {
        let mut s = connect(rl.addr);
        let mut buf = Vec::new();
        s.write_all(first.as_bytes()).unwrap();
        let r = read_response(&mut s, &mut buf, bodiless).unwrap();
        assert_eq!(status_of(&r), 200, "{r}");
        // Let the extra bytes arrive at the proxy.
        thread::sleep(Duration::from_millis(200));
        for i in 0..3 {
            let r = one(
                rl.addr,
                format!("GET /next{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
            );
            assert_eq!(body_of(&r), format!("for /next{i}"), "after {first:?}: {r}");
        }
    }
    let seen = seen.lock().unwrap().clone();
    for i in 0..3 {
        let line = format!("GET /next{i} HTTP/1.1");
        assert_eq!(seen.iter().filter(|l| **l == line).count(), 2, "{seen:?}");
    }
}

/// Code reading: an upgraded connection left idle is closed after
/// `tunnel_timeout`, on both sides.
#[test]
fn idle_tunnel_is_closed_after_tunnel_timeout() {
    let closed = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&closed);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).unwrap();
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        let mut b = [0u8; 1024];
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        loop {
            match s.read(&mut b) {
                Ok(0) => {
                    c.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Err(_) => return,
                Ok(n) => s.write_all(&b[..n]).unwrap(),
            }
        }
    });
    let cfg = simple_config(&[be.addr], "").replace(
        "[[listener]]",
        "[http]\ntunnel_timeout = \"1s\"\n\n[[listener]]",
    );
    let rl = Ringlb::start(&cfg);
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, &mut Vec::new(), true).unwrap();
    assert_eq!(status_of(&r), 101, "{r}");
    // Traffic keeps it open...
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(500));
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
    }
    // ...silence closes it.
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest);
    assert!(r.is_ok() && rest.is_empty(), "{r:?} {rest:?}");
    let start = Instant::now();
    while closed.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "backend side not closed");
}

/// Code reading: `keepalive_timeout = "0s"` disables keep-alive; it does
/// not drop a new connection whose first request takes a moment.
#[test]
fn keepalive_timeout_zero_disables_keep_alive() {
    let be = echo_backend();
    let cfg = simple_config(&[be.addr], "").replace(
        "[[listener]]",
        "[http]\nkeepalive_timeout = \"0s\"\n\n[[listener]]",
    );
    let rl = Ringlb::start(&cfg);
    let mut s = connect(rl.addr);
    thread::sleep(Duration::from_millis(200));
    s.write_all(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(body_of(&r).starts_with("GET /late HTTP/1.1\r\n"), "{r}");
}

/// Sets `pid`'s open-file limit so that exactly `free` more descriptors
/// can be opened; returns the previous limit.
fn squeeze_fds(pid: u32, free: usize) -> libc::rlimit {
    let fds = || {
        let mut v: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    };
    // Wait until connections from the start-up probe are closed.
    let mut used = fds();
    let start = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = fds();
        if now == used {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fds never settle"
        );
        used = now;
    }
    let mut limit = 0;
    let mut left = free;
    loop {
        if used.binary_search(&limit).is_err() {
            if left == 0 {
                break;
            }
            left -= 1;
        }
        limit += 1;
    }
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: limit as u64,
        rlim_max: old.rlim_max,
    };
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// Code reading: a local connect error (here EMFILE) fails the request
/// but does not count against the server's `max_fails`.
#[test]
fn local_connect_errors_do_not_mark_the_server_down() {
    let be = echo_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let pid = rl.child.id();
    // A client connection, accepted while one descriptor is left: it takes
    // the last one, so the upstream connect fails with EMFILE.
    let old = squeeze_fds(pid, 1);
    let r = one(rl.addr, b"GET /squeezed HTTP/1.1\r\nHost: a\r\n\r\n");
    let restore =
        unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(restore, 0);
    assert!(
        matches!(status_of(&r), 502 | 503),
        "expected a local failure status: {r:?}"
    );
    assert_eq!(be.conns.load(Ordering::SeqCst), 0);
    thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let r = one(
            rl.addr,
            format!("GET /after/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&r), 200, "after {i}: {r}\n{}", rl.log_text());
    }
    let log = rl.log_text();
    assert!(!log.contains("marked unavailable"), "{log}");
}
