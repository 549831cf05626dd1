//! Request-body buffering (`[http] request_buffering`, on by default):
//! a body is read before an upstream is chosen, so a slow client holds no
//! backend worker, a buffered idempotent request can be replayed, and a
//! body larger than `request_buffer_size` is streamed from the cap on.
//! Each test asserts what the client got and what the backend received
//! (bytes, framing, how many times).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::peers::{body_for, AppServer};
use common::*;

/// Sends a POST head with `Content-Length` and the first `first` bytes of
/// `body`; the caller sends the rest.
fn start_upload(addr: SocketAddr, id: &str, body: &[u8], first: usize) -> std::net::TcpStream {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nX-Test-Id: {id}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..first]).unwrap();
    s
}

/// sha256 of `b` in hex, as the recording app computes it (Python's hashlib).
fn sha_hex(b: &[u8]) -> String {
    let mut p = std::process::Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    p.stdin.take().unwrap().write_all(b).unwrap();
    let out = p.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Polls `cond` until it holds (a generous bound, not a timing assertion).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// gunicorn with ONE sync worker serves one request at a time: a client
/// that trickles its body would hold it, and every other client would
/// wait. With buffering, GETs from another client complete while the slow
/// body is still incomplete, and the backend gets the POST once, whole.
#[test]
fn slow_upload_does_not_hold_a_sync_worker() {
    let app = AppServer::gunicorn("sync", &["--workers", "1", "--timeout", "120"]);
    let rl = Ringlb::start(&simple_config(&[app.addr], ""));
    let body = body_for("slow", 30_000);
    let mut slow = start_upload(rl.addr, "slow", &body, 10_000);
    thread::sleep(Duration::from_millis(200));
    // While the body is incomplete, another client's GETs complete.
    let mut g = connect(rl.addr);
    g.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        g.write_all(
            format!("GET /get/{i} HTTP/1.1\r\nHost: a\r\nX-Test-Id: get{i}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut g, &mut buf, false)
            .unwrap_or_else(|| panic!("GET {i} got no answer while a body was trickling"));
        assert_eq!(status_of(&r), 200, "GET {i}: {r}");
    }
    assert!(
        app.records_of("slow").is_empty(),
        "the backend saw the POST before its body was complete: {:?}",
        app.records()
    );
    // The rest of the body, still in pieces.
    for piece in body[10_000..].chunks(5_000) {
        slow.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    let r = read_response(&mut slow, &mut Vec::new(), false).expect("POST answer");
    assert_eq!(status_of(&r), 200, "{r}");
    let sha = sha_hex(&body);
    assert!(body_of(&r).contains(&sha), "{r}");
    let posts = app.records_of("slow");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["len"], 30_000);
    assert_eq!(posts[0]["sha"], sha);
    // Arrival order at the backend: the five GETs, then the POST.
    let order: Vec<String> = app
        .records()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["get0", "get1", "get2", "get3", "get4", "slow"]);
}

/// What a scripted backend received: one raw request per entry.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A backend that records every raw request and answers 200 with its
/// length (`answer` false: close without answering instead).
fn raw_backend(answer: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> (Backend, Seen) {
    let seen: Seen = Arc::default();
    let rec = Arc::clone(&seen);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            rec.lock().unwrap().push(req.clone());
            if !answer(&req) {
                return;
            }
            let body = format!("{:09}", req.len());
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    (be, seen)
}

fn split_head(req: &[u8]) -> (String, &[u8]) {
    let end = find(req, b"\r\n\r\n").expect("head") + 4;
    (
        String::from_utf8_lossy(&req[..end]).to_ascii_lowercase(),
        &req[end..],
    )
}

/// A chunked upload sent in pieces is buffered whole, then forwarded with
/// a `Content-Length` (as nginx does; WSGI applications read the body by
/// `CONTENT_LENGTH`): the backend sees nothing until the last chunk, then
/// one request with the same data and no `Transfer-Encoding`.
#[test]
fn chunked_upload_is_buffered_then_forwarded() {
    let (be, seen) = raw_backend(|_| true);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    thread::sleep(Duration::from_millis(300));
    s.write_all(b"5\r\n worl\r\n").unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        be.conns.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the backend was connected before the body was complete"
    );
    s.write_all(b"1\r\nd\r\n0\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).expect("answer");
    assert_eq!(status_of(&r), 200, "{r}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (head, body) = split_head(&seen[0]);
    assert!(head.starts_with("post /chunked http/1.1\r\n"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), None, "{head}");
    assert_eq!(header(&head, "content-length"), Some("11"), "{head}");
    assert_eq!(body, b"hello world");
}

/// A body larger than `request_buffer_size` is streamed from the cap on:
/// the backend gets the request while the client is still sending, and
/// the whole body arrives intact, once.
#[test]
fn body_over_the_cap_is_streamed_intact() {
    let (be, seen) = raw_backend(|_| true);
    let rl = Ringlb::start(&format!(
        "[http]\nrequest_buffer_size = \"16k\"\n{}",
        simple_config(&[be.addr], "")
    ));
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = start_upload(rl.addr, "big", &body, 20_000);
    // Past the cap: the backend is connected before the body is complete.
    eventually("the backend gets connected mid-upload", || {
        be.conns.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    assert!(seen.lock().unwrap().is_empty());
    s.write_all(&body[20_000..]).unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).expect("answer");
    assert_eq!(status_of(&r), 200, "{r}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (head, got) = split_head(&seen[0]);
    assert_eq!(header(&head, "content-length"), Some("1000000"), "{head}");
    assert!(got == body.as_slice(), "the body changed on the way");
    assert_eq!(
        body_of(&r).trim_start_matches('0'),
        seen[0].len().to_string()
    );
}

/// Two servers: the first reads a request and closes without answering,
/// the second answers. A buffered PUT (its body arrived in pieces, after
/// the head) is replayed on the second server; a buffered POST never is.
#[test]
fn buffered_put_is_retried_and_post_is_not() {
    let (bad, bad_seen) = raw_backend(|_| false);
    let (good, good_seen) = raw_backend(|_| true);
    let cfg = simple_config(&[bad.addr, good.addr], "retries = 1\n");
    for method in ["PUT", "POST"] {
        let rl = Ringlb::start(&cfg);
        let mut outcomes = Vec::new();
        for i in 0..4 {
            let id = format!("{method}-{i}");
            let body = body_for(&id, 40_000);
            let mut s = connect(rl.addr);
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(
                format!(
                    "{method} /{id} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
            for piece in body.chunks(10_000) {
                thread::sleep(Duration::from_millis(30));
                s.write_all(piece).unwrap();
            }
            let r = read_response(&mut s, &mut Vec::new(), false).unwrap_or_default();
            outcomes.push((id, body, status_of(&r)));
        }
        let count = |seen: &Seen, id: &str, body: &[u8]| {
            let line = format!("{method} /{id} HTTP/1.1");
            let reqs = seen.lock().unwrap().clone();
            reqs.iter()
                .filter(|r| r.starts_with(line.as_bytes()))
                .inspect(|r| assert!(r.ends_with(body), "{id}: body changed"))
                .count()
        };
        let mut hit_bad = 0;
        for (id, body, status) in &outcomes {
            let (b, g) = (count(&bad_seen, id, body), count(&good_seen, id, body));
            hit_bad += b;
            assert!(b <= 1 && g <= 1, "{id}: bad {b}, good {g}");
            if method == "PUT" {
                // Every PUT is answered by the good server, exactly once.
                assert_eq!((*status, g), (200, 1), "{id}: bad saw it {b} times");
            } else {
                // A POST that reached the bad server is never replayed.
                assert_eq!(b + g, 1, "{id}: bad {b}, good {g}");
                assert_eq!(*status, if g == 1 { 200 } else { 502 }, "{id}");
            }
        }
        assert!(
            hit_bad >= 1,
            "{method}: no request went to the failing server, nothing was tested"
        );
    }
}

/// `Expect: 100-continue` with buffering: the proxy answers 100 when it
/// starts reading the body, then forwards the whole request without
/// `Expect`.
#[test]
fn expect_continue_is_answered_before_buffering() {
    let (be, seen) = raw_backend(|_| true);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, true).expect("100 Continue");
    assert_eq!(status_of(&r), 100, "{r}");
    assert!(seen.lock().unwrap().is_empty());
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut s, &mut buf, false).expect("answer");
    assert_eq!(status_of(&r), 200, "{r}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (head, body) = split_head(&seen[0]);
    assert_eq!(header(&head, "expect"), None, "{head}");
    assert_eq!(body, b"hello");
}
