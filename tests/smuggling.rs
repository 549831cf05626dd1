//! Request-smuggling shapes: every ambiguous request is refused with 400
//! and closed before a byte reaches the backend, and every accepted one
//! reaches it as exactly one request with unambiguous framing.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

fn send(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn ambiguous_requests_never_reach_the_backend() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let corpus: &[&[u8]] = &[
        // CL.TE and TE.CL
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        // TE obfuscations
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\n chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // CL obfuscations
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 5\r\n\r\nhello",
        // Bad chunk framing
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        // Heads
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: 1\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n",
    ];
    for raw in corpus {
        let r = send(rl.addr, raw);
        assert!(
            r.starts_with("HTTP/1.1 400 "),
            "{:?} → {r:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(r.contains("Connection: close\r\n"), "{r}");
        assert_eq!(
            r.matches("HTTP/1.1").count(),
            1,
            "exactly one response: {r}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        seen.lock().unwrap().is_empty(),
        "reached the backend: {:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn accepted_requests_reach_the_backend_as_sent() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // A chunked body followed by a pipelined request: two requests, two responses.
    let r = send(
        rl.addr,
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    // Duplicate identical lengths and an underscore field: one length forwarded, no alias.
    let r = send(
        rl.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nTransfer_Encoding: chunked\r\nConnection: close\r\n\r\nxyz",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0].starts_with("POST /a HTTP/1.1\r\n") && seen[0].ends_with("3\r\nabc\r\n0\r\n\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[1].starts_with("GET /b HTTP/1.1\r\n"), "{}", seen[1]);
    assert_eq!(seen[2].matches("Content-Length").count(), 1, "{}", seen[2]);
    assert!(!seen[2].contains("Transfer_Encoding"), "{}", seen[2]);
    assert!(seen[2].ends_with("\r\n\r\nxyz"), "{}", seen[2]);
}
