//! How client connections are accepted and ended with `Connection: close`
//! clients, and a client that connects and stays silent a while. What the
//! clients got, and what the backend got and how many times.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

/// Reads until the peer closes; the text and whether it closed (EOF, not
/// the 5 s read timeout).
fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn close_clients_get_one_answer_each_and_the_backend_one_request_each() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    for i in 0..40 {
        // Now and then an L4 check: connect, close without a byte.
        if i % 10 == 0 {
            drop(TcpStream::connect(rl.addr).unwrap());
        }
        let mut s = connect(rl.addr);
        s.write_all(
            format!("GET /n{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let (resp, closed) = read_to_close(&mut s);
        assert!(
            closed,
            "request {i}: not closed after the response: {resp:?}"
        );
        assert_eq!(status_of(&resp), 200, "request {i}: {resp:?}");
        assert_eq!(body_of(&resp), "ok", "request {i}: {resp:?}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "request {i}: {resp:?}"
        );
    }
    // A real client too.
    for i in 0..5 {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "-H", "Connection: close"])
            .arg(format!("http://{}/curl{i}", rl.addr))
            .output()
            .expect("curl not found (bash tests/run.sh installs it)");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "curl {i}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 45, "{seen:?}");
    for i in 0..40 {
        let n = seen
            .iter()
            .filter(|r| r.starts_with(&format!("GET /n{i} HTTP/1.1\r\n")))
            .count();
        assert_eq!(n, 1, "/n{i} reached the backend {n} times");
    }
    for i in 0..5 {
        let n = seen
            .iter()
            .filter(|r| r.starts_with(&format!("GET /curl{i} HTTP/1.1\r\n")))
            .count();
        assert_eq!(n, 1, "/curl{i} reached the backend {n} times");
    }
}

#[test]
fn a_client_silent_for_a_while_is_served_once() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // Connected and silent for a while (within client_header_timeout):
    // served when it speaks.
    let mut s = connect(rl.addr);
    thread::sleep(Duration::from_millis(2500));
    s.write_all(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let resp = read_response(&mut s, &mut buf, false).expect("a response");
    assert_eq!(status_of(&resp), 200, "{resp:?}");
    // Keep-alive still works after it.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut s, &mut buf, false).expect("a second response");
    assert_eq!(status_of(&resp), 200, "{resp:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("GET /late HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[1].starts_with("GET /again HTTP/1.1\r\n"), "{seen:?}");
}
