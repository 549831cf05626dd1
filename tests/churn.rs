//! Connection churn: what the backend sees when the load is above the
//! upstream `keepalive` cap, and how a `Connection: close` client's
//! connection ends (full response, then FIN, never a reset before the
//! response was read) with real clients (curl, python requests).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const BURST: usize = 20;
const KEEPALIVE: usize = 4;

/// Sends `BURST` concurrent `Connection: close` requests and checks every
/// answer.
fn burst(addr: SocketAddr) {
    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            thread::spawn(move || {
                roundtrip_close(
                    addr,
                    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    }
}

#[test]
fn a_burst_above_keepalive_reuses_the_previous_bursts_connections() {
    // The backend holds each request until the whole burst it belongs to
    // has arrived, so every burst really has BURST requests in flight.
    let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
    let open = Arc::new(AtomicUsize::new(0));
    let (g, o) = (Arc::clone(&gate), Arc::clone(&open));
    let be = backend(move |mut s: TcpStream| {
        o.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            let (m, cv) = &*g;
            let mut n = m.lock().unwrap();
            *n += 1;
            let until = n.div_ceil(BURST) * BURST;
            cv.notify_all();
            let deadline = Instant::now() + Duration::from_secs(10);
            while *n < until && Instant::now() < deadline {
                n = cv.wait_timeout(n, Duration::from_millis(100)).unwrap().0;
            }
            drop(n);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                break;
            }
        }
        o.fetch_sub(1, Ordering::SeqCst);
    });
    let rl = Ringlb::start(&simple_config(
        &[be.addr],
        &format!("keepalive = {KEEPALIVE}"),
    ));

    burst(rl.addr);
    assert_eq!(
        be.conns.load(Ordering::SeqCst),
        BURST,
        "one connection per request in flight"
    );
    burst(rl.addr);
    assert_eq!(
        be.conns.load(Ordering::SeqCst),
        BURST,
        "the second burst reused the first one's connections (closing those above \
         keepalive = {KEEPALIVE} at once would have made {} new ones)",
        BURST - KEEPALIVE
    );

    // Once the load is gone, the surplus ages out down to the cap.
    let deadline = Instant::now() + Duration::from_secs(20);
    while open.load(Ordering::SeqCst) > KEEPALIVE && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        KEEPALIVE,
        "idle connections kept after the burst"
    );
    assert_eq!(be.conns.load(Ordering::SeqCst), BURST);
}

/// A backend answering every request with `len` bytes of a known pattern.
fn big_backend(len: usize) -> (Backend, Vec<u8>) {
    let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let b2 = body.clone();
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b2.len());
            if s.write_all(head.as_bytes()).is_err() || s.write_all(&b2).is_err() {
                break;
            }
        }
    });
    (be, body)
}

#[test]
fn connection_close_client_gets_the_whole_response_then_fin() {
    const LEN: usize = 1 << 20;
    let (be, body) = big_backend(LEN);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));

    // Raw socket: read slowly to the end; the end must be a FIN (read → 0),
    // not a reset, and every byte must have arrived.
    for _ in 0..3 {
        let mut s = connect(rl.addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("after {} bytes: {e} (a reset instead of a FIN?)", got.len()),
            }
        }
        let at = find(&got, b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&got[..at]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(
            got[at..] == body[..],
            "body: {} of {LEN} bytes, or different",
            got.len() - at
        );
    }

    // curl: exit status 0 (56 would be a reset), the whole body.
    let url = format!("http://{}/", rl.addr);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-H",
            "Connection: close",
            "-o",
            "-",
            &url,
        ])
        .output()
        .expect("curl not found (bash tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == body,
        "curl got {} of {LEN} bytes",
        out.stdout.len()
    );

    // python requests, a fresh session per request, Connection: close.
    let script = r#"
import sys, requests
url, n = sys.argv[1], int(sys.argv[2])
for i in range(5):
    r = requests.get(url, headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200, r.status_code
    assert r.headers.get("Connection", "").lower() == "close", r.headers
    assert len(r.content) == n, (i, len(r.content))
    expect = bytes(ord("a") + k % 26 for k in range(n))
    assert r.content == expect, i
print("ok")
"#;
    let out = python_ok(&["-c", script, &url, &LEN.to_string()]);
    assert_eq!(out.trim(), "ok", "python requests: {out}");
    assert_eq!(
        be.conns.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused"
    );
}
