//! The orchestrator in process: draining is snapshot state that the shards
//! apply on their own, and a graceful stop finishes what is in flight.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Polls `done` every 10 ms for up to 5 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("not within 5 s: {what}");
}

#[test]
fn a_draining_snapshot_alone_closes_listeners_and_idle_connections_and_finishes_requests() {
    let (be, release, seen) = holding_backend();
    let text = simple_config(&[be.addr], "").replace("{port}", "0");
    let config = ringlb::config::parse_str(&text, "lifecycle.toml").unwrap();
    let running = ringlb::runtime::start(config).unwrap();
    let addr = running.listen_addrs[0];

    // An idle keep-alive connection.
    let mut idle = connect(addr);
    let mut ibuf = Vec::new();
    idle.write_all(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut idle, &mut ibuf, false).expect("response on the idle connection");
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(!r.to_ascii_lowercase().contains("connection: close"), "{r}");

    // A request in flight, held by the backend.
    let mut busy = connect(addr);
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    eventually("the backend got the slow request", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("GET /slow"))
    });

    // Publish the draining snapshot, and nothing else (no stop on the links).
    running.publisher.drain();
    assert!(running.publisher.cell().load_full().draining);

    // The shard stops accepting ...
    eventually("the listener is closed", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    // ... and shuts the idle connection.
    let mut rest = Vec::new();
    let n = idle.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "idle connection got bytes: {:?}", rest);

    // The request in flight is answered, with Connection: close, then closed.
    release.store(true, Ordering::Release);
    let mut bbuf = Vec::new();
    let r = read_response(&mut busy, &mut bbuf, false).expect("response to the request in flight");
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(body_of(&r), "ok");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    let mut rest = Vec::new();
    assert_eq!(busy.read_to_end(&mut rest).unwrap_or(0), 0);

    // The backend saw exactly the two requests, once each.
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /fast HTTP/1.1", "GET /slow HTTP/1.1"]
    );

    running.stop();
}
