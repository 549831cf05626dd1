//! Request smuggling and response desync, through the real binary, both
//! ways. Every hostile request is a row of a table: what the client must
//! get (statuses in order, and whether ringlb closes the connection) and
//! the exact bytes a raw-socket backend must receive (nothing, or one
//! normalised request). Every hostile response is a row too: what the
//! client gets for it, and that the next request — on the same client
//! connection when it stays open — gets its own answer and nothing of the
//! hostile one, on a fresh upstream connection when the hostile one left
//! bytes behind.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Client → ringlb → backend

/// A backend that records every byte it receives, on any connection, in
/// arrival order, and answers each request it can frame with `200 ok`.
fn raw_backend() -> (Backend, Arc<Mutex<Vec<u8>>>) {
    let log: Arc<Mutex<Vec<u8>>> = Arc::default();
    let l2 = Arc::clone(&log);
    let be = backend(move |s: TcpStream| {
        serve_framed(
            s,
            |bytes| l2.lock().unwrap().extend_from_slice(bytes),
            |_| {},
        );
    });
    (be, log)
}

/// What ringlb sends upstream for a request whose only field is `Host: a`.
fn up(line: &str, framing: &str, body: &str) -> String {
    format!(
        "{line}\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\n{framing}X-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n{body}"
    )
}

/// What ringlb sends upstream for a chunked request buffered whole: its
/// data with a `Content-Length` (as nginx sends it), framing, extensions
/// and trailers gone.
fn up_len(line: &str, data: &str) -> String {
    up(line, &format!("Content-Length: {}\r\n", data.len()), data)
}

/// One hostile request and what must come of it.
struct Row {
    raw: Vec<u8>,
    /// The statuses the client gets, in order.
    statuses: &'static [u16],
    /// ringlb closes the connection after the last of them.
    closed: bool,
    /// Exactly what the backend receives.
    backend: String,
}

fn refused(raw: &[u8], status: u16) -> Row {
    let statuses: &'static [u16] = match status {
        400 => &[400],
        405 => &[405],
        414 => &[414],
        417 => &[417],
        431 => &[431],
        501 => &[501],
        505 => &[505],
        _ => panic!("no such refusal: {status}"),
    };
    Row {
        raw: raw.to_vec(),
        statuses,
        closed: true,
        backend: String::new(),
    }
}

fn forwarded(raw: &[u8], backend: String) -> Row {
    Row {
        raw: raw.to_vec(),
        statuses: &[200],
        closed: false,
        backend,
    }
}

const CANARY: &[u8] = b"GET /canary HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// Sends `row.raw` on a fresh connection and checks the client's side.
/// Returns what went wrong, if anything.
fn client_side(addr: SocketAddr, row: &Row) -> Result<(), String> {
    let mut s = connect(addr);
    let _ = s.write_all(&row.raw);
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for _ in row.statuses {
        match read_response(&mut s, &mut buf, false) {
            Some(r) => {
                let closing = r.contains("\r\nConnection: close\r\n");
                got.push(status_of(&r));
                if row.closed && got.len() == row.statuses.len() && !closing {
                    return Err(format!("last answer lacks Connection: close: {r:?}"));
                }
            }
            None => break,
        }
    }
    if got != row.statuses {
        return Err(format!("statuses {got:?}, want {:?}", row.statuses));
    }
    if row.closed {
        // ringlb must close (FIN, not a reset) with nothing more to say.
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() && buf.is_empty() => {}
            Ok(_) => {
                return Err(format!(
                    "bytes after the answer: {:?}",
                    [buf, rest].concat()
                ))
            }
            Err(e) => return Err(format!("not closed cleanly: {e}")),
        }
    }
    Ok(())
}

/// Waits (bounded) until the backend log ends with the canary request.
fn wait_canary(log: &Mutex<Vec<u8>>) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let l = log.lock().unwrap().clone();
        if l.ends_with(b"GET /canary HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n") {
            return l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "canary never reached the backend; log: {:?}",
            String::from_utf8_lossy(&l)
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs every row against one ringlb; collects every failure, then fails.
fn run_rows(rows: &[Row]) {
    let (be, log) = raw_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let canary_up = "GET /canary HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n";
    let mut failures = Vec::new();
    for row in rows {
        log.lock().unwrap().clear();
        let what = String::from_utf8_lossy(&row.raw[..row.raw.len().min(200)]).into_owned();
        if let Err(e) = client_side(rl.addr, row) {
            failures.push(format!("{what:?}: client: {e}"));
        }
        // Whatever the row made ringlb send upstream arrived before the
        // canary, which is sent only after the row's answers were read.
        let c = roundtrip_close(rl.addr, CANARY);
        assert_eq!(status_of(&c), 200, "canary: {c}");
        let seen = wait_canary(&log);
        let seen = &seen[..seen.len() - canary_up.len()];
        if seen != row.backend.as_bytes() {
            failures.push(format!(
                "{what:?}: backend got {:?}, want {:?}",
                String::from_utf8_lossy(seen),
                row.backend
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n{body}").into_bytes()
}

const TE: &str = "Transfer-Encoding: chunked\r\n";

#[test]
fn transfer_encoding_and_content_length_obfuscations() {
    let chunked_empty = up_len("POST / HTTP/1.1", "");
    let cl3 = up("POST / HTTP/1.1", "Content-Length: 3\r\n", "abc");
    let rows = vec![
        // CL.TE, TE.CL and both in one request.
        refused(&post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"), 400),
        refused(&post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "8\r\nSMUGGLED\r\n0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", "0\r\n\r\n"), 400),
        // Transfer-Encoding spelled so that some parser reads it differently.
        refused(&post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post(" Transfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\x00\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\r", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chun\u{212a}ed\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding:\n chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("X: 1\r\n\tTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        // Codings: chunked not final → 400 (RFC 9112 §6.3); other codings
        // before a final chunked → 501 (§6.1).
        refused(&post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"), 400),
        refused(&post("Transfer-Encoding: identity\r\n", ""), 400),
        refused(&post("Transfer-Encoding: gzip\r\n", "abc"), 400),
        refused(&post("Transfer-Encoding: \r\n", ""), 400),
        refused(&post("Transfer-Encoding: ,\r\n", ""), 400),
        refused(&post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"), 501),
        refused(&post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501),
        refused(&post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 501),
        // HTTP/1.0 has no chunked coding: its framing is faulty (§6.1).
        refused(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        // Accepted spellings reach the backend as one plain `chunked`.
        forwarded(&post("Transfer-Encoding: CHUNKED\r\n", "0\r\n\r\n"), chunked_empty.clone()),
        forwarded(&post("Transfer-Encoding:\tchunked \r\n", "0\r\n\r\n"), chunked_empty.clone()),
        refused(&post("Transfer-Encoding: chunked, \r\n", "0\r\n\r\n"), 400),
        // An underscore alias is dropped, never read as framing.
        forwarded(&post("Transfer_Encoding: chunked\r\nContent-Length: 3\r\n", "abc"), cl3.clone()),
        // Content-Length forms.
        refused(&post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"), 400),
        refused(&post("Content-Length: 3, 4\r\n", "abcd"), 400),
        refused(&post("Content-Length: +3\r\n", "abc"), 400),
        refused(&post("Content-Length: -1\r\n", "abc"), 400),
        refused(&post("Content-Length: 0x3\r\n", "abc"), 400),
        refused(&post("Content-Length: 3.0\r\n", "abc"), 400),
        refused(&post("Content-Length: 1 2\r\n", "abcdefghijkl"), 400),
        refused(&post("Content-Length: \r\n", ""), 400),
        refused(&post("Content-Length: 3,\r\n", "abc"), 400),
        refused(&post("Content-Length: ,3\r\n", "abc"), 400),
        refused(&post("Content-Length:\x0b3\r\n", "abc"), 400),
        refused(&post("Content-Length : 3\r\n", "abc"), 400),
        refused(&post("Content-Length: 99999999999999999999\r\n", "abc"), 400),
        refused(&post("Content-Length: 18446744073709551619\r\n", "abc"), 400),
        forwarded(&post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"), cl3.clone()),
        forwarded(&post("Content-Length: 3, 3\r\n", "abc"), cl3.clone()),
        forwarded(&post("Content-Length: 003\r\n", "abc"), cl3.clone()),
        forwarded(&post("Content-Length:\t3 \r\n", "abc"), cl3.clone()),
        forwarded(&post("Content_Length: 3\r\n", ""), up("POST / HTTP/1.1", "", "")),
        // Naming a framing field in Connection does not unframe it.
        forwarded(&post("Connection: Content-Length\r\nContent-Length: 3\r\n", "abc"), cl3.clone()),
        forwarded(
            &post("Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
            up_len("POST / HTTP/1.1", "abc"),
        ),
        // A body that looks like a request is the body.
        forwarded(
            &post("Content-Length: 28\r\n", "GET /smuggled HTTP/1.1\r\n\r\n\r\n"),
            up("POST / HTTP/1.1", "Content-Length: 28\r\n", "GET /smuggled HTTP/1.1\r\n\r\n\r\n"),
        ),
        forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            up("GET / HTTP/1.1", "Content-Length: 3\r\n", "abc"),
        ),
    ];
    run_rows(&rows);
}

#[test]
fn chunked_framing_obfuscations() {
    let canonical = up_len("POST / HTTP/1.1", "abc");
    let body = |b: &str| post(TE, b);
    let rows = vec![
        refused(&body("0x3\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body(" 3\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3 \r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3\t\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("-3\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("+3\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("1_0\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("\r\n3\r\nabc\r\n0\r\n\r\n"), 400),
        // Overflow: 17 hex digits, even if they are zeros.
        refused(&body("10000000000000003\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("00000000000000003\r\nabc\r\n0\r\n\r\n"), 400),
        // Extensions: bare LF / CR, NUL, broken grammar.
        refused(&body("3;x\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;x\ry\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;x\x00\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;x=\"a\r\nb\"\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;x=\"a\nb\"\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;a b c\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;a=\r\nabc\r\n0\r\n\r\n"), 400),
        refused(&body("3;a=\"b\r\nabc\r\n0\r\n\r\n"), 400),
        // Line endings and data length.
        refused(&body("3\nabc\n0\n\n"), 400),
        refused(&body("3\r\nabc\n0\r\n\r\n"), 400),
        refused(&body("3\r\nabc\r\n0\r\n\n"), 400),
        refused(&body("3\rabc\r0\r\r"), 400),
        refused(&body("3\r\nabc0\r\n\r\n"), 400),
        refused(&body("3\r\nabcdef\r\n0\r\n\r\n"), 400),
        // Trailers: obs-fold, bad names, bare LF, NUL.
        refused(&body("3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), 400),
        refused(&body("3\r\nabc\r\n0\r\nX-T : 1\r\n\r\n"), 400),
        refused(&body("3\r\nabc\r\n0\r\nX-T: 1\x002\r\n\r\n"), 400),
        refused(&body("3\r\nabc\r\n0\r\nX-T: 1\n\r\n"), 400),
        refused(&body("3\r\nabc\r\n0\r\nNoColon\r\n\r\n"), 400),
        // Valid but unusual framing: the backend gets the data alone.
        forwarded(&body("0003\r\nabc\r\n000\r\n\r\n"), canonical.clone()),
        forwarded(&body("3 ;x=1\r\nabc\r\n0;y\r\n\r\n"), canonical.clone()),
        forwarded(&body("3;x=\"a;b\\\"c\"\r\nabc\r\n0\r\n\r\n"), canonical.clone()),
        forwarded(
            &body("A\r\n0123456789\r\n0\r\n\r\n"),
            up_len("POST / HTTP/1.1", "0123456789"),
        ),
        // Trailers are dropped (those that framing or routing depend on
        // also from a streamed body: tests/http1_limits.rs).
        forwarded(
            &body("3\r\nabc\r\n0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: evil\r\nX-T: 1\r\n\r\n"),
            up_len("POST / HTTP/1.1", "abc"),
        ),
        // A chunk that looks like a request is data.
        forwarded(
            &body("1a\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n0\r\n\r\n"),
            up_len("POST / HTTP/1.1", "GET /smuggled HTTP/1.1\r\n\r\n"),
        ),
        // Chunked on a GET is a body like any other.
        forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            up_len("GET / HTTP/1.1", "abc"),
        ),
    ];
    run_rows(&rows);
}

#[test]
fn request_line_and_field_obfuscations() {
    let get = up("GET / HTTP/1.1", "", "");
    let long_uri = [
        b"GET /".as_slice(),
        &[b'a'; 70000],
        b" HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    .concat();
    let long_field = [
        b"GET / HTTP/1.1\r\nHost: a\r\nX: ".as_slice(),
        &[b'a'; 70000],
        b"\r\n\r\n",
    ]
    .concat();
    let many: String = (0..300).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes();
    let rows = vec![
        // Request line.
        refused(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        refused(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
        refused(b"GET /\r\n\r\n", 400),
        refused(b"GET / \r\nHost: a\r\n\r\n", 400),
        refused(b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/01.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        // A later HTTP/1 minor version is read as HTTP/1.1 (RFC 9110 §2.5).
        forwarded(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", get.clone()),
        refused(b"GET / HTTP/2.1\r\nHost: a\r\n\r\n", 505),
        refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        refused(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        refused(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
        // Targets.
        refused(b"GET /x#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /#/../admin HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x\x00y HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x\x7fy HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x\xffy HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET /x%2 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(&long_uri, 414),
        // One authority for routing: absolute-form must agree with Host.
        refused(b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET http://a:443/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused(b"GET https://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        // The same authority spelled another way (the scheme's default
        // port, case): forwarded once, with the target's spelling as Host.
        forwarded(
            b"GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
            up("GET / HTTP/1.1", "", "").replace("Host: a\r\n", "Host: a:80\r\n"),
        ),
        forwarded(
            b"GET https://A:443/y HTTP/1.1\r\nHost: a\r\n\r\n",
            up("GET /y HTTP/1.1", "", "").replace("Host: a\r\n", "Host: A:443\r\n"),
        ),
        forwarded(b"GET http://A/z HTTP/1.1\r\nHost: a:80\r\n\r\n", up("GET /z HTTP/1.1", "", "").replace("Host: a\r\n", "Host: A\r\n")),
        refused(b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        forwarded(b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", up("GET /x HTTP/1.1", "", "")),
        forwarded(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", up("OPTIONS * HTTP/1.1", "", "")),
        // A NUL in the decoded path: a C backend would end the path there
        // while routes matched all of it; nginx refuses it too.
        refused(b"GET /x%00y HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        forwarded(b"GET /x?y=%00 HTTP/1.1\r\nHost: a\r\n\r\n", up("GET /x?y=%00 HTTP/1.1", "", "")),
        // Fields.
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX(Y): 1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX\xffY: 1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\nContent-Length: 0\r\n\r\n", 417),
        refused(&many, 431),
        refused(&long_field, 431),
        // Host.
        refused(b"GET / HTTP/1.1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a:xyz\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        forwarded(
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n".into(),
        ),
        // Connection cannot strip Host either.
        forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host\r\n\r\n",
            get.clone(),
        ),
        // An h2c upgrade is not proxied: the request goes as plain HTTP/1.1.
        forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            get.clone(),
        ),
    ];
    run_rows(&rows);
}

#[test]
fn pipelining_never_lets_a_request_ride_on_another() {
    let rows = vec![
        // A rejected request: nothing after it is read as a request.
        Row {
            raw: b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            statuses: &[400],
            closed: true,
            backend: String::new(),
        },
        // A good request, then a bad one: the first is served, then 400.
        Row {
            raw: b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx".to_vec(),
            statuses: &[200, 400],
            closed: true,
            backend: up("GET /1 HTTP/1.1", "", ""),
        },
        // Framed bodies end where their framing says; what follows is the
        // next request, forwarded on its own.
        Row {
            raw: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            statuses: &[200, 200],
            closed: true,
            backend: up_len("POST / HTTP/1.1", "abc") + &up("GET /2 HTTP/1.1", "", ""),
        },
        Row {
            raw: b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            statuses: &[200, 200],
            closed: true,
            backend: up("POST / HTTP/1.1", "Content-Length: 0\r\n", "") + &up("GET /2 HTTP/1.1", "", ""),
        },
        // A chunked body whose trailer is bad: the request is refused and
        // the request after it is not served.
        Row {
            raw: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n 2\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            statuses: &[400],
            closed: true,
            backend: String::new(),
        },
    ];
    run_rows(&rows);
}

// ---------------------------------------------------------------------------
// Backend → ringlb → client

const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";

/// One hostile response (to `GET /1`, or to `req` when set) and what the
/// client must see of it.
struct Resp {
    name: &'static str,
    req: &'static [u8],
    /// What the backend sends back, then keeps the connection open.
    resp: Vec<u8>,
    /// The statuses the client gets for the first request.
    statuses: &'static [u16],
    /// The client's first answer, `Date` fields left out.
    first: &'static str,
    /// ringlb closes the client connection after the first answer.
    closed: bool,
    /// The hostile response leaves bytes behind: the next request must go
    /// on a fresh upstream connection.
    dirty: bool,
}

const GET1: &[u8] = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
const BAD_GATEWAY: &str =
    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n502 Bad Gateway\n";

/// An interim response, and what the client gets for 100 of them (the
/// most a backend may send) and then a 200, or for more of them (a flood).
const INTERIM: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";
const INTERIM_THEN_200: [u16; 101] = statuses_after_100_interim(200);
const INTERIM_FLOOD: [u16; 101] = statuses_after_100_interim(502);

const fn statuses_after_100_interim(last: u16) -> [u16; 101] {
    let mut s = [102; 101];
    s[100] = last;
    s
}

fn drop_date(s: &str) -> String {
    s.split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .collect()
}

/// Reads what arrives until `stop` says it is complete, the peer closes,
/// or 5 s pass; returns it and whether the peer closed (cleanly).
fn read_until(s: &mut TcpStream, stop: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut tmp = [0u8; 16384];
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(5) {
        if stop(&out) {
            return (out, false);
        }
        match s.read(&mut tmp) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("client read: {e}"),
        }
    }
    (out, false)
}

/// Whether `b` holds `want` complete answers (framed by Content-Length; a
/// 1xx, 204, 304 or the answer to a HEAD (`head`) has no body).
fn answers_complete(b: &[u8], want: usize, head_req: bool) -> bool {
    let mut at = 0;
    for _ in 0..want {
        let Some(end) = find(&b[at..], b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&b[at..at + end]).to_ascii_lowercase();
        let body = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
        let bodiless = head_req
            || head.starts_with("http/1.1 1")
            || head.starts_with("http/1.1 204")
            || head.starts_with("http/1.1 304");
        at += end + 4 + if bodiless { 0 } else { body };
        if at > b.len() {
            return false;
        }
    }
    true
}

fn check_response_row(row: &Resp) -> Result<(), String> {
    // Which upstream connection each request arrived on, by path.
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let hostile = row.resp.clone();
    let next_conn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let be = backend(move |mut s: TcpStream| {
        let id = next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line = request_line(&req);
            s2.lock().unwrap().push((id, line.clone()));
            let answer: &[u8] = if line.starts_with("GET /2 ") {
                SECOND
            } else {
                &hostile
            };
            if s.write_all(answer).is_err() {
                return;
            }
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], "retries = 0\n"));
    let mut c = connect(rl.addr);
    c.write_all(row.req).unwrap();
    let n = row.statuses.len();
    let head_req = row.req.starts_with(b"HEAD ");
    let (first, mut closed) = read_until(&mut c, |b| answers_complete(b, n, head_req));
    if row.closed && !closed {
        // The answer is complete: now the close (and nothing else).
        let (extra, eof) = read_until(&mut c, |b| !b.is_empty());
        if !extra.is_empty() {
            return Err(format!(
                "bytes after the answer: {:?}",
                String::from_utf8_lossy(&extra)
            ));
        }
        closed = eof;
    }
    let first = drop_date(&String::from_utf8_lossy(&first));
    if first != row.first {
        return Err(format!("first answer {first:?}, want {:?}", row.first));
    }
    let got: Vec<u16> = first
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| first.get(i + 9..i + 12)?.parse().ok())
        .collect();
    if got != row.statuses {
        return Err(format!("statuses {got:?}, want {:?}", row.statuses));
    }
    if closed != row.closed {
        return Err(format!(
            "client connection closed: {closed}, want {}",
            row.closed
        ));
    }
    if closed {
        c = connect(rl.addr);
    }
    c.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (second, _) = read_until(&mut c, |b| answers_complete(b, 1, false));
    let second = drop_date(&String::from_utf8_lossy(&second));
    if second != "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond" {
        return Err(format!("the next request got {second:?}"));
    }
    let seen = seen.lock().unwrap().clone();
    let first_line = String::from_utf8_lossy(row.req)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let firsts: Vec<usize> = seen
        .iter()
        .filter(|(_, l)| *l == first_line)
        .map(|(i, _)| *i)
        .collect();
    let seconds: Vec<usize> = seen
        .iter()
        .filter(|(_, l)| l == "GET /2 HTTP/1.1")
        .map(|(i, _)| *i)
        .collect();
    if firsts.len() != 1 || seconds.len() != 1 || seen.len() != 2 {
        return Err(format!(
            "the backend saw {seen:?}: each request must arrive once"
        ));
    }
    if row.dirty && firsts[0] == seconds[0] {
        return Err(
            "the next request reused the upstream connection the hostile response left bytes on"
                .into(),
        );
    }
    Ok(())
}

fn hostile(
    name: &'static str,
    resp: &[u8],
    statuses: &'static [u16],
    first: &'static str,
    dirty: bool,
) -> Resp {
    Resp {
        name,
        req: GET1,
        resp: resp.to_vec(),
        statuses,
        first,
        closed: false,
        dirty,
    }
}

#[test]
fn hostile_responses_never_reach_another_exchange() {
    let evil = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!";
    let rows = vec![
        // Ambiguous framing: 502, and the connection is not reused.
        hostile("CL+TE", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[502], BAD_GATEWAY, true),
        hostile("TE+CL", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n", &[502], BAD_GATEWAY, true),
        hostile("two CLs", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nokEVIL!!", &[502], BAD_GATEWAY, true),
        hostile("CL list", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 7\r\n\r\nokEVIL!!", &[502], BAD_GATEWAY, true),
        hostile("CL +2", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("CL space colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("TE obs-fold", b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("TE twice", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", &[502], BAD_GATEWAY, true),
        hostile("HTTP/1.0 TE", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n", &[502], BAD_GATEWAY, true),
        // Status lines and fields.
        hostile("status 2OO", b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("status 600", b"HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("status 099", b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("HTTP/2.0", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("ICY", b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("no status line", b"<html>ok</html>", &[502], BAD_GATEWAY, true),
        hostile("NUL in field", b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("CR in field", b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        hostile("field name space", b"HTTP/1.1 200 OK\r\nX Y: 1\r\nContent-Length: 2\r\n\r\nok", &[502], BAD_GATEWAY, true),
        // Bare LF line ends are read (RFC 9112 §2.2) and sent on as CRLF.
        hostile("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", &[200], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        // Framing fields named in Connection still frame the response.
        hostile("Connection: Content-Length", b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok", &[200], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        hostile("Connection: Transfer-Encoding", b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
        // Chunked framing reaches the client canonical.
        hostile("chunk extensions and zeros", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n002;a=\"b\"\r\nok\r\n000\r\n\r\n", &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
        hostile("chunk trailer CL", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length: 99\r\nX-T: 1\r\n\r\n", &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", false),
        // Bare LF line ends in an upstream's chunk framing are read, as
        // nginx reads them (a request's stay a 400, above), and the client
        // gets CRLF framing.
        hostile("chunk lines bare LF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n", &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false),
        hostile("chunk bare LF extension and trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\nok\r\n0\nX-T: 1\nContent-Length: 99\nX-U: 2\r\n\n", &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n", false),
        // Bytes after the body: the client never sees them.
        hostile("extra after CL body", &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice(), evil.as_bytes()].concat(), &[200], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
        hostile("extra after chunked body", &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".as_slice(), evil.as_bytes()].concat(), &[200], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true),
        // Bodiless statuses: a body sent anyway is left behind, and 1xx /
        // 204 lose their framing fields.
        hostile("204 with body", &[b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".as_slice(), b"EVIL!"].concat(), &[204], "HTTP/1.1 204 No Content\r\n\r\n", true),
        hostile("204 chunked", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[204], "HTTP/1.1 204 No Content\r\n\r\n", true),
        hostile("204 then a response", &[b"HTTP/1.1 204 No Content\r\n\r\n".as_slice(), evil.as_bytes()].concat(), &[204], "HTTP/1.1 204 No Content\r\n\r\n", true),
        hostile("304 with body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nEVIL!", &[304], "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", true),
        hostile("1xx with a body", b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &[100, 502], "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n502 Bad Gateway\n", true),
        // 1xx responses are relayed up to a bound; past it the backend is
        // flooding: 502, and that upstream connection is not reused.
        hostile("100 interim then 200", &[INTERIM.repeat(100).as_slice(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"].concat(), &INTERIM_THEN_200, Box::leak(format!("{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 102 Processing\r\n\r\n".repeat(100)).into_boxed_str()), false),
        hostile("1xx flood", &[INTERIM.repeat(1000).as_slice(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"].concat(), &INTERIM_FLOOD, Box::leak(format!("{}{BAD_GATEWAY}", "HTTP/1.1 102 Processing\r\n\r\n".repeat(100)).into_boxed_str()), true),
        hostile("103 then 200", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &[103, 200], "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        // A 101 nobody asked for: 502 and close (the upstream may be
        // speaking another protocol now).
        Resp { closed: true, ..hostile("unsolicited 101", &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".as_slice(), evil.as_bytes()].concat(), &[502], "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n", true) },
        // A 101 must say what it switched to.
        Resp {
            req: b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            ..hostile("101 without Upgrade", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\nxyz", &[502], BAD_GATEWAY, true)
        },
        // HEAD: the body a backend sends anyway is left behind.
        Resp {
            req: b"HEAD /1 HTTP/1.1\r\nHost: a\r\n\r\n",
            ..hostile("HEAD with body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!", &[200], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
        },
    ];
    let mut failures = Vec::new();
    for row in &rows {
        if let Err(e) = check_response_row(row) {
            failures.push(format!("{}: {e}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
