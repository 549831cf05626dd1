//! A differential table of client byte streams: for each, what ringlb
//! answers, whether it keeps the connection, and exactly which requests
//! the backend receives. The rows are the odd-but-legal and the hostile
//! requests a front proxy meets (request-line and target spellings,
//! header spellings, body framings, `Expect`, `Upgrade`, pipelining), and
//! were drawn up by sending each one through ringlb and through nginx 1.22
//! (`proxy_http_version 1.1`, upstream keep-alive) in front of the same
//! recording backend. Where ringlb's outcome differs from nginx's, the row
//! says what nginx does and why ringlb's answer is the right one.
//!
//! Every row runs on a fresh connection, sent whole, and (the short ones)
//! again one byte a write: the verdict may not depend on where the bytes
//! were cut. A row ringlb keeps open is then proven open and clean by a
//! last request on the same connection (it must get its own `200 ok` and
//! the close it asks for); a row it closes must end in a clean FIN with
//! nothing after the answers. A canary on a fresh connection then flushes
//! whatever the row made ringlb send upstream, so the backend's record of
//! the row is complete.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::peers::parse;
use common::*;

/// Every framed request the backend got, in arrival order, and whatever a
/// connection left unframed when it closed (prefixed `UNFRAMED:`).
type Log = Arc<Mutex<Vec<Vec<u8>>>>;

/// A backend that records every request and answers each with `200 ok`
/// (no body for a HEAD), keeping its connections.
fn recording_backend() -> (Backend, Log) {
    let log: Log = Arc::default();
    let l2 = Arc::clone(&log);
    let be = backend(move |s: TcpStream| {
        let rest = serve_framed(s, |_| {}, |msg| l2.lock().unwrap().push(msg));
        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
            l2.lock().unwrap().push([b"UNFRAMED:", &rest[..]].concat());
        }
    });
    (be, log)
}

/// What ringlb adds to every forwarded request from a plain-HTTP loopback
/// client, after the client's own fields.
const XFF: &[u8] = b"X-Forwarded-For: 127.0.0.1\r\n";
const TAIL: &[u8] = b"X-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n";

/// The request ringlb forwards: `line`, the client `fields` it keeps (in
/// order), X-Forwarded-For, the normalised `framing` field, the other
/// forwarding fields, `extra` (e.g. `Connection: upgrade`), and `body`.
fn up4(line: &[u8], fields: &[u8], framing: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
    [
        line, b"\r\n", fields, XFF, framing, TAIL, extra, b"\r\n", body,
    ]
    .concat()
}

/// [`up4`] for a request with `Host: a` before `fields`, and no extra.
fn up(line: &[u8], fields: &[u8], framing: &[u8], body: &[u8]) -> Vec<u8> {
    up4(line, &[b"Host: a\r\n", fields].concat(), framing, b"", body)
}

/// A client request: `line`, `Host: a`, `fields`, the empty line, `body`.
fn req(line: &[u8], fields: &[u8], body: &[u8]) -> Vec<u8> {
    [line, b"\r\nHost: a\r\n", fields, b"\r\n", body].concat()
}

/// One client byte stream and what must come of it.
struct Row {
    name: String,
    raw: Vec<u8>,
    /// The method of each request, for response parsing (HEAD: no body).
    methods: Vec<&'static str>,
    /// Final statuses the client gets, in order.
    statuses: Vec<u16>,
    /// Interim (1xx) responses before them; `None`: not decided by the
    /// row (whether ringlb saw the body before deciding on `100 Continue`).
    interim: Option<usize>,
    /// ringlb closes the connection after the last answer.
    closed: bool,
    /// Exactly the requests the backend receives, in order.
    backend: Vec<Vec<u8>>,
    /// nginx's different outcome and why ringlb's is right ("" = the same).
    nginx: &'static str,
}

impl Row {
    fn differs(mut self, why: &'static str) -> Row {
        self.nginx = why;
        self
    }
    fn methods(mut self, m: &[&'static str]) -> Row {
        self.methods = m.to_vec();
        self
    }
    fn interim(mut self, n: Option<usize>) -> Row {
        self.interim = n;
        self
    }
}

/// Forwarded: each request once (as `backend`), each answered 200; the
/// connection stays open.
fn ok(name: impl AsRef<[u8]>, raw: impl AsRef<[u8]>, backend: Vec<Vec<u8>>) -> Row {
    Row {
        name: String::from_utf8_lossy(name.as_ref()).into_owned(),
        raw: raw.as_ref().to_vec(),
        methods: vec!["GET"; backend.len()],
        statuses: vec![200; backend.len()],
        interim: Some(0),
        closed: false,
        backend,
        nginx: "",
    }
}

/// [`ok`], after which ringlb closes (the client asked for it).
fn ok_close(name: impl AsRef<[u8]>, raw: impl AsRef<[u8]>, backend: Vec<Vec<u8>>) -> Row {
    Row {
        closed: true,
        ..ok(name, raw, backend)
    }
}

/// Refused with `status` and closed; the backend sees nothing.
fn no(name: impl AsRef<[u8]>, raw: impl AsRef<[u8]>, status: u16) -> Row {
    Row {
        statuses: vec![status],
        methods: vec!["GET"],
        closed: true,
        ..ok(name, raw, Vec::new())
    }
}

/// [`ok`] for the requests in `backend`, then a 400 for what follows them,
/// and the close.
fn ok_then_400(name: impl AsRef<[u8]>, raw: impl AsRef<[u8]>, backend: Vec<Vec<u8>>) -> Row {
    let n = backend.len();
    let mut row = ok_close(name, raw, backend);
    row.statuses.push(400);
    row.methods = vec!["GET"; n + 1];
    row
}

/// What a client saw on one connection.
struct Seen {
    statuses: Vec<u16>,
    interim: usize,
    closed: bool,
}

const CANARY: &[u8] = b"GET /canary HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// Reads until `done(bytes)` or the peer closes; `Err` on a reset or when
/// nothing more came for 10 s (a hang is a failure, never a pass).
fn read_until(
    s: &mut TcpStream,
    got: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> Result<bool, String> {
    let mut tmp = [0u8; 65536];
    while !done(got) {
        match s.read(&mut tmp) {
            Ok(0) => return Ok(true),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!(
                    "no answer within 10 s; got {:?}",
                    String::from_utf8_lossy(got)
                ))
            }
            Err(e) => return Err(format!("{e} after {:?}", String::from_utf8_lossy(got))),
        }
    }
    Ok(false)
}

/// How a row's bytes are written.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// In one write.
    Whole,
    /// One byte a write (no Nagle delay, a short pause after each): heads
    /// and bodies arrive in pieces, cut almost anywhere.
    Bytes,
}

/// Sends the row, reads its answers, and proves the connection's state.
fn client_side(addr: SocketAddr, row: &Row, delivery: Delivery) -> Result<Seen, String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    // A refused request may be answered and closed before all of it is
    // written: a failed write is part of the outcome, not an error.
    let piece = match delivery {
        Delivery::Whole => row.raw.len().max(1),
        Delivery::Bytes => 1,
    };
    for p in row.raw.chunks(piece) {
        if s.write_all(p).is_err() {
            break;
        }
        if delivery == Delivery::Bytes {
            // Without a pause the bytes pile up before ringlb reads them.
            // Where they are cut does not change what is right, so the
            // pause only makes the cuts likely, never decides a result.
            thread::sleep(Duration::from_micros(200));
        }
    }
    let want = row.statuses.len();
    let mut got = Vec::new();
    let methods = &row.methods;
    let answered = |b: &[u8]| {
        let (r, _, _) = parse(b, methods, false);
        r.len() == want && r.iter().all(|r| r.complete)
    };
    let eof = read_until(&mut s, &mut got, answered)?;
    let (resps, interim, stray) = parse(&got, methods, eof);
    if !stray.is_empty() {
        return Err(format!(
            "bytes after the answers: {:?}",
            String::from_utf8_lossy(&stray)
        ));
    }
    let statuses: Vec<u16> = resps.iter().map(|r| r.status).collect();
    for (r, m) in resps.iter().zip(methods) {
        let body: &[u8] = if *m == "HEAD" { b"" } else { b"ok" };
        if r.status == 200 && r.body != body {
            return Err(format!(
                "a 200 with body {:?}",
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    let closed = if eof {
        true
    } else if row.closed {
        let mut rest = Vec::new();
        read_until(&mut s, &mut rest, |_| false)?;
        if !rest.is_empty() {
            return Err(format!(
                "bytes after the answers: {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        true
    } else {
        // Still open: the next request on it gets its own answer.
        s.write_all(CANARY)
            .map_err(|e| format!("connection unusable: {e}"))?;
        let mut next = Vec::new();
        read_until(&mut s, &mut next, |_| false)?;
        let (r, _, stray) = parse(&next, &["GET"], true);
        if r.len() != 1 || r[0].status != 200 || r[0].body != b"ok" || !stray.is_empty() {
            return Err(format!(
                "the next request on the connection got {:?}",
                String::from_utf8_lossy(&next)
            ));
        }
        false
    };
    Ok(Seen {
        statuses,
        interim,
        closed,
    })
}

const CANARY_UP: &[u8] = b"GET /canary HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 127.0.0.1\r\nX-Real-IP: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n";

/// Runs the rows of each builder against one ringlb, delivered as said;
/// collects every failure, then fails.
fn run(builders: &[fn(&Backend) -> Vec<Row>], delivery: Delivery) {
    let (be, log) = recording_backend();
    let rows: Vec<Row> = builders.iter().flat_map(|b| b(&be)).collect();
    // Byte by byte, long rows would only repeat what short ones show.
    let rows: Vec<Row> = match delivery {
        Delivery::Whole => rows,
        Delivery::Bytes => rows.into_iter().filter(|r| r.raw.len() <= 512).collect(),
    };
    let rl = Ringlb::start(&simple_config(&[be.addr], "keepalive = 8\n"));
    let mut failures = Vec::new();
    for row in &rows {
        log.lock().unwrap().clear();
        let mut problems = Vec::new();
        match client_side(rl.addr, row, delivery) {
            Ok(seen) => {
                if seen.statuses != row.statuses {
                    problems.push(format!(
                        "statuses {:?}, want {:?}",
                        seen.statuses, row.statuses
                    ));
                }
                if row.interim.is_some_and(|n| n != seen.interim) {
                    problems.push(format!("{} interim responses", seen.interim));
                }
                if seen.closed != row.closed {
                    problems.push(format!("closed: {}, want {}", seen.closed, row.closed));
                }
            }
            Err(e) => problems.push(e),
        }
        // Whatever the row made ringlb send upstream arrived before the
        // canary, which is sent only after the row's answers were read.
        let c = roundtrip_close(rl.addr, CANARY);
        assert_eq!(status_of(&c), 200, "canary after {}: {c}", row.name);
        let start = Instant::now();
        let seen: Vec<Vec<u8>> = loop {
            let l = log.lock().unwrap().clone();
            if l.last().is_some_and(|m| m == CANARY_UP) {
                break l.into_iter().filter(|m| m != CANARY_UP).collect();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "canary lost after {}",
                row.name
            );
            thread::sleep(Duration::from_millis(2));
        };
        if seen != row.backend {
            let show = |v: &[Vec<u8>]| {
                v.iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect::<Vec<_>>()
            };
            problems.push(format!(
                "backend got {:?}, want {:?}",
                show(&seen),
                show(&row.backend)
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", row.name, problems.join("; ")));
        }
    }
    let differing = rows.iter().filter(|r| !r.nginx.is_empty()).count();
    println!("{} rows, {differing} where nginx differs", rows.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn request_line_rows(be: &Backend) -> Vec<Row> {
    let get = |t: &[u8]| req(&[b"GET ", t, b" HTTP/1.1"].concat(), b"", b"");
    let fwd = |t: &[u8]| up(&[b"GET ", t, b" HTTP/1.1"].concat(), b"", b"", b"");
    let mut rows = Vec::new();
    // Methods are tokens, case-sensitive, forwarded as written.
    for m in [
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "PROPFIND",
        "MKCOL",
        "BREW",
        "M-SEARCH",
        "X_Y",
        "SEARCH",
        "LINK",
        "QUERY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let line = format!("{m} /m HTTP/1.1");
        rows.push(ok(
            format!("method {m}"),
            req(line.as_bytes(), b"", b""),
            vec![up(line.as_bytes(), b"", b"", b"")],
        ));
    }
    rows.push(
        ok(
            "method HEAD",
            req(b"HEAD /m HTTP/1.1", b"", b""),
            vec![up(b"HEAD /m HTTP/1.1", b"", b"", b"")],
        )
        .methods(&["HEAD"]),
    );
    for m in ["get", "Get", "G.T"] {
        let line = format!("{m} /m HTTP/1.1");
        rows.push(
            ok(format!("method {m}"), req(line.as_bytes(), b"", b""), vec![up(line.as_bytes(), b"", b"", b"")])
                .differs("nginx: 400 (it takes only A-Z and _ in methods); a method is any token, case-sensitive (RFC 9110 §9.1), so this is an extension method, forwarded as written (haproxy does the same)"),
        );
    }
    rows.push(
        ok("method TRACE", req(b"TRACE /m HTTP/1.1", b"", b""), vec![up(b"TRACE /m HTTP/1.1", b"", b"", b"")])
            .differs("nginx: 405 (it never proxies TRACE); TRACE is a standard method (RFC 9110 §9.3.8), the application decides (haproxy forwards it)"),
    );
    rows.push(
        ok(
            "OPTIONS *",
            req(b"OPTIONS * HTTP/1.1", b"", b""),
            vec![up(b"OPTIONS * HTTP/1.1", b"", b"", b"")],
        )
        .differs("nginx: 400; asterisk-form is OPTIONS's own target form (RFC 9112 §3.2.4)"),
    );
    rows.push(
        no("CONNECT", req(b"CONNECT a:443 HTTP/1.1", b"", b""), 405)
            .differs("nginx: 400; CONNECT is well formed, just not tunnelled here"),
    );
    for (name, raw) in [
        (
            "method with slash",
            &b"GE/T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
        ("method NUL", b"GE\x00T / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("method empty", b" / HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("target with tab", b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
        (
            "authority-form GET",
            b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "abs-form empty authority",
            b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ] {
        rows.push(no(name, raw, 400));
    }
    let long_method = vec![b'A'; 5000];
    let line = [long_method.as_slice(), b" / HTTP/1.1"].concat();
    rows.push(ok(
        "5000-byte method",
        req(&line, b"", b""),
        vec![up(&line, b"", b"", b"")],
    ));
    rows.push(ok(
        "OPTIONS abs-form no path",
        req(b"OPTIONS http://a HTTP/1.1", b"", b""),
        vec![up(b"OPTIONS * HTTP/1.1", b"", b"", b"")],
    ));
    rows.push(ok(
        "abs-form default port",
        get(b"http://a:80/x"),
        vec![up4(b"GET /x HTTP/1.1", b"Host: a:80\r\n", b"", b"", b"")],
    ));
    rows.push(ok_close(
        "abs-form HTTP/1.0 without Host",
        b"GET http://a/x HTTP/1.0\r\n\r\n",
        vec![up4(b"GET /x HTTP/1.1", b"", b"Host: a\r\n", b"", b"")],
    ));
    rows.push(ok_close(
        "HTTP/1.0 LF-only",
        b"GET / HTTP/1.0\nHost: a\n\n",
        vec![fwd(b"/")],
    ));
    rows.push(ok(
        "DELETE with body",
        req(b"DELETE / HTTP/1.1", b"Content-Length: 3\r\n", b"abc"),
        vec![up(
            b"DELETE / HTTP/1.1",
            b"",
            b"Content-Length: 3\r\n",
            b"abc",
        )],
    ));
    rows.push(no("GET *", get(b"*"), 400));
    rows.push(no("OPTIONS *x", get(b"*x"), 400));
    // Absolute-form: the authority is the host; origin-form goes upstream.
    rows.push(ok("abs-form", get(b"http://a/x?y=1"), vec![fwd(b"/x?y=1")]));
    rows.push(ok("abs-form https", get(b"https://a/x"), vec![fwd(b"/x")]));
    rows.push(ok("abs-form no path", get(b"http://a"), vec![fwd(b"/")]));
    rows.push(ok(
        "abs-form query only",
        get(b"http://a?q"),
        vec![fwd(b"/?q")],
    ));
    rows.push(ok(
        "abs-form uppercase scheme",
        get(b"HTTP://a/x"),
        vec![fwd(b"/x")],
    ));
    rows.push(no("abs-form other host", get(b"http://b/x"), 400).differs(
        "nginx forwards with Host: a; the target's authority names the host (RFC 9112 §3.2.2) and a Host naming another one is how vhost checks are bypassed",
    ));
    rows.push(
        no("abs-form ftp", get(b"ftp://a/x"), 400)
            .differs("nginx forwards /x; only http and https targets are proxied"),
    );
    rows.push(no("abs-form userinfo", get(b"http://u@a/x"), 400));
    // Origin-form paths: forwarded as written, unless they climb above
    // the root, hold an invalid escape or a fragment.
    for t in [
        &b"//x"[..],
        b"///x",
        b"/a//b",
        b"/a/./b",
        b"/a/../b",
        b"/./",
        b"/a/..",
        b"/a/%2e%2e/b",
        b"/x%2Fy",
        b"/x%2fy",
        b"/x%c0%af",
        b"/x%ff",
        b"/%7Euser",
        b"/x?a=1&b=%00",
        b"/x?q=100%",
        b"/x?",
        b"/x;p=1",
        b"/x?/../y",
        b"/\\x",
        b"/x\"y",
        b"/x<y>",
        b"/x{y}",
        b"/x|y",
        b"/x^y",
        b"/x`y",
        b"/x'y",
        b"/x[y]",
        b"/x@y",
        b"/x:y",
        b"/x!$&'()*+,;=",
        b"/%2e",
        b"/\xc3\xbc",
    ] {
        rows.push(ok([b"target ", t].concat(), get(t), vec![fwd(t)]));
    }
    for t in [
        &b"/.."[..],
        b"/a/b/../../..",
        b"/%2e%2e/x",
        b"/%2E./x",
        b"/.%2e/x",
        b"/x y",
        b"x",
        b"?x",
        b"/x%zz",
        b"/x%",
        b"/x%4",
        b"/x%00",
        b"/a%00/../b",
    ] {
        rows.push(no([b"target ", t].concat(), get(t), 400));
    }
    for t in [&b"/x?a#f"[..], b"/x#", b"/x#f"] {
        rows.push(no([b"target ", t].concat(), get(t), 400).differs(
            "nginx forwards the fragment; a fragment is never part of a request target (RFC 9112 §3.2), and routes would match the part before # while a backend may not",
        ));
    }
    let long = |n: usize| [b"/".as_slice(), &vec![b'a'; n - 1]].concat();
    rows.push(ok("target 8000", get(&long(8000)), vec![fwd(&long(8000))]));
    rows.push(no("target 16000", get(&long(16000)), 414));
    rows.push(no("target 70000", get(&long(70000)), 414));
    // Versions.
    rows.push(
        no("HTTP/0.9", b"GET /\r\n", 400)
            .differs("nginx answers as HTTP/0.9 (a bare body); 0.9 is not spoken here"),
    );
    rows.push(no("HTTP/1.1 no Host", b"GET / HTTP/1.1\r\n\r\n", 400));
    let default_host = format!("Host: {}\r\n", be.addr);
    rows.push(
        ok_close("HTTP/1.0 no Host", b"GET / HTTP/1.0\r\n\r\n", vec![up4(b"GET / HTTP/1.1", b"", default_host.as_bytes(), b"", b"")])
            .differs("nginx sends no Host at all upstream (its $http_host is empty); an HTTP/1.1 request needs one, so ringlb names the server, like nginx's default $proxy_host"),
    );
    rows.push(ok_close(
        "HTTP/1.0",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        vec![fwd(b"/")],
    ));
    rows.push(ok_close(
        "HTTP/1.0 keep-alive then close",
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nHost: a\r\n\r\n",
        vec![fwd(b"/"), fwd(b"/2")],
    ));
    rows.push(ok(
        "HTTP/1.2",
        req(b"GET / HTTP/1.2", b"", b""),
        vec![fwd(b"/")],
    ));
    rows.push(ok(
        "HTTP/1.9",
        req(b"GET / HTTP/1.9", b"", b""),
        vec![fwd(b"/")],
    ));
    rows.push(no("HTTP/1.10", req(b"GET / HTTP/1.10", b"", b""), 400));
    rows.push(no("HTTP/2.0", req(b"GET / HTTP/2.0", b"", b""), 505));
    rows.push(no("HTTP/3.0", req(b"GET / HTTP/3.0", b"", b""), 505));
    rows.push(
        no("PRI preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505).differs(
            "nginx: 400; the line is well formed, the version is not spoken (RFC 9110 §15.6.6)",
        ),
    );
    rows.push(no(
        "lowercase version",
        req(b"GET / http/1.1", b"", b""),
        400,
    ));
    rows.push(ok(
        "leading CRLF",
        [b"\r\n".as_slice(), &get(b"/lc")].concat(),
        vec![fwd(b"/lc")],
    ));
    rows.push(ok(
        "leading 2 CRLF",
        [b"\r\n\r\n".as_slice(), &get(b"/lc")].concat(),
        vec![fwd(b"/lc")],
    ));
    rows.push(ok(
        "leading LF",
        [b"\n".as_slice(), &get(b"/lc")].concat(),
        vec![fwd(b"/lc")],
    ));
    rows
}

fn header_rows(_: &Backend) -> Vec<Row> {
    let get = |f: &[u8]| req(b"GET / HTTP/1.1", f, b"");
    let fwd = |f: &[u8]| up(b"GET / HTTP/1.1", f, b"", b"");
    let same = |name: &str, f: &[u8]| ok(name, get(f), vec![fwd(f)]);
    let host = |h: &[u8]| [b"GET / HTTP/1.1\r\n", h, b"\r\n\r\n"].concat();
    let host_fwd = |h: &[u8]| up4(b"GET / HTTP/1.1", &[h, b"\r\n"].concat(), b"", b"", b"");
    let mut rows = vec![
        // Host: exactly one, valid; forwarded as the client spelled it.
        ok("Host upper-case name", host(b"HOST: A.Example"), vec![host_fwd(b"HOST: A.Example")]),
        ok("Host with port", host(b"Host: a:8080"), vec![host_fwd(b"Host: a:8080")]),
        ok("Host trailing dot", host(b"Host: a."), vec![host_fwd(b"Host: a.")]),
        ok("Host IPv6", host(b"Host: [::1]"), vec![host_fwd(b"Host: [::1]")]),
        ok("Host underscore", host(b"Host: a_b"), vec![host_fwd(b"Host: a_b")]),
        ok("Host sub-delims", host(b"Host: a,b"), vec![host_fwd(b"Host: a,b")]),
        ok("Host empty port", host(b"Host: a:"), vec![host_fwd(b"Host: a:")]),
        ok("Host pct-encoded", host(b"Host: a%41"), vec![host_fwd(b"Host: a%41")]),
        ok("Host tabs", host(b"Host:\ta\t"), vec![host_fwd(b"Host: a")])
            .differs("nginx: 400; tabs around a field value are OWS (RFC 9110 §5.6.3), not part of the host"),
        no("Host twice same", host(b"Host: a\r\nHost: a"), 400),
        no("Host twice different", host(b"Host: a\r\nHost: b"), 400),
        no("Host empty", host(b"Host:"), 400),
        no("Host empty HTTP/1.0", b"GET / HTTP/1.0\r\nHost:\r\n\r\n", 400),
        no("Host with space", host(b"Host: a b"), 400),
        no("Host userinfo", host(b"Host: u@a"), 400),
        no("Host slash", host(b"Host: a/b"), 400),
        no("Host bad port", host(b"Host: a:8x"), 400),
        // Field names and values.
        same("mixed-case name", b"x-LoWeR: V\r\n"),
        same("repeated field", b"X-A: 1\r\nX-A: 2\r\n"),
        same("colon in value", b"X-A: a:b:c\r\n"),
        same("tab in value", b"X-A: a\tb\r\n"),
        same("obs-text value", b"X-A: caf\xe9\r\n"),
        same("UTF-8 value", b"X-A: \xc3\xa9\r\n"),
        same("all tchars name", b"X!#$%&'*+-.^`|~: 1\r\n"),
        same("cookie twice", b"Cookie: a=1\r\nCookie: b=2\r\n"),
        ok("empty value", get(b"X-E:\r\n"), vec![fwd(b"X-E: \r\n")]),
        ok("empty value with space", get(b"X-E: \r\n"), vec![fwd(b"X-E: \r\n")]),
        ok("trailing whitespace", get(b"X-A: 1  \t\r\n"), vec![fwd(b"X-A: 1\r\n")])
            .differs("nginx forwards the trailing whitespace; it is OWS, not part of the value (RFC 9110 §5.5)"),
        ok("dot in name", get(b"X.A: 1\r\n"), vec![fwd(b"X.A: 1\r\n")])
            .differs("nginx drops it (ignore_invalid_headers); '.' is a tchar, the field is valid (RFC 9110 §5.1)"),
        // Like nginx: `_` names are dropped (some backends read `_` as `-`).
        ok("underscore in name", get(b"X_A: 1\r\n"), vec![fwd(b"")]),
        ok("Content_Length", req(b"POST / HTTP/1.1", b"Content_Length: 3\r\n", b""), vec![up(b"POST / HTTP/1.1", b"", b"", b"")]),
        no("slash in name", get(b"X/A: 1\r\n"), 400)
            .differs("nginx drops the field; a name that is not a token makes the head malformed (RFC 9112 §5), answered 400 as for any malformed field"),
        no("@ in name", get(b"X@A: 1\r\n"), 400)
            .differs("nginx drops the field; a name that is not a token makes the head malformed (RFC 9112 §5)"),
        no("space before colon", get(b"X-A : 1\r\n"), 400),
        no("tab before colon", get(b"X-A\t: 1\r\n"), 400),
        no("obs-fold", get(b"X-A: 1\r\n 2\r\n"), 400),
        no("obs-fold tab", get(b"X-A: 1\r\n\t2\r\n"), 400),
        no("leading space first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        no("no colon", get(b"NoColon\r\n"), 400),
        no("empty name", get(b": x\r\n"), 400),
        no("NUL in value", get(b"X-A: a\x00b\r\n"), 400),
        no("bare CR in value", get(b"X-A: a\rb\r\n"), 400),
        no("CR-only line ends", b"GET /cr HTTP/1.1\rHost: a\r\r", 400),
        no("control byte in value", get(b"X-A: a\x01b\r\n"), 400)
            .differs("nginx forwards it; a CTL is not field-vchar (RFC 9110 §5.5) and backends split or truncate on them"),
        no("DEL in value", get(b"X-A: a\x7fb\r\n"), 400)
            .differs("nginx forwards it; DEL is not field-vchar (RFC 9110 §5.5)"),
        // Bare LF line ends are accepted (RFC 9112 §2.2), CRLF upstream.
        ok("LF-only head", b"GET /lf HTTP/1.1\nHost: a\nX-A: 1\n\n", vec![up(b"GET /lf HTTP/1.1", b"X-A: 1\r\n", b"", b"")]),
        ok("mixed LF head", b"GET /lf HTTP/1.1\r\nHost: a\nX-A: 1\r\n\n", vec![up(b"GET /lf HTTP/1.1", b"X-A: 1\r\n", b"", b"")]),
        // Hop-by-hop fields stay on this hop.
        ok_close("Connection: close", get(b"Connection: close\r\n"), vec![fwd(b"")]),
        ok_close("Connection: CLOSE", get(b"Connection: CLOSE\r\n"), vec![fwd(b"")]),
        ok_close("Connection twice", get(b"Connection: keep-alive\r\nConnection: close\r\n"), vec![fwd(b"")]),
        ok("Connection names a field", get(b"Connection: keep-alive, X-Foo\r\nX-Foo: 1\r\n"), vec![fwd(b"")])
            .differs("nginx forwards X-Foo; a proxy MUST remove the fields Connection names (RFC 9110 §7.6.1)"),
        ok("Connection names Host", get(b"Connection: Host\r\n"), vec![fwd(b"")]),
        ok("Keep-Alive, Proxy-Connection", get(b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"), vec![fwd(b"")])
            .differs("nginx forwards Proxy-Connection; it is a hop-by-hop field in practice (RFC 9110 §7.6.1 lists it)"),
        ok("TE trailers", get(b"TE: trailers\r\n"), vec![fwd(b"")]),
        ok("client X-Forwarded-For", get(b"X-Forwarded-For: 1.2.3.4\r\n"), vec![[b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4, 127.0.0.1\r\n".as_slice(), TAIL, b"\r\n"].concat()]),
    ];
    let long_host = [b"Host: ".as_slice(), &vec![b'a'; 5000]].concat();
    rows.extend([
        ok(
            "Host trailing space",
            host(b"Host: a "),
            vec![host_fwd(b"Host: a")],
        ),
        ok(
            "Host IPv6 with port",
            host(b"Host: [::1]:80"),
            vec![host_fwd(b"Host: [::1]:80")],
        ),
        ok(
            "Host IPv4",
            host(b"Host: 127.0.0.1"),
            vec![host_fwd(b"Host: 127.0.0.1")],
        ),
        ok(
            "Host 5000 bytes",
            host(&long_host),
            vec![host_fwd(&long_host)],
        ),
        no("Host control byte", host(b"Host: a\x01b"), 400),
        no(
            "Host twice on HTTP/1.0",
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
    ]);
    for h in [
        &b"Host: [zz]"[..],
        b"Host: \xc3\xa9.com",
        b"Host: a\\b",
        b"Host: a?b",
        b"Host: a#b",
    ] {
        rows.push(no(h, host(h), 400).differs(
            "nginx and haproxy forward it; it is no host (RFC 3986 §3.2.2), and routing on a Host that backends parse differently is how virtual hosts are crossed",
        ));
    }
    // Forwarding fields: X-Real-IP and X-Forwarded-Proto are the proxy's
    // own, X-Forwarded-For is appended to, the others pass.
    rows.extend([
        ok(
            "client X-Real-IP",
            get(b"X-Real-IP: 6.6.6.6\r\n"),
            vec![fwd(b"")],
        ),
        ok(
            "client X-Forwarded-Proto",
            get(b"X-Forwarded-Proto: https\r\n"),
            vec![fwd(b"")],
        ),
        same("client Via", b"Via: 1.1 x\r\n"),
        same("client Forwarded", b"Forwarded: for=1.2.3.4\r\n"),
        same("client X-Forwarded-Host", b"X-Forwarded-Host: evil\r\n"),
        same("Max-Forwards", b"Max-Forwards: 0\r\n"),
    ]);
    let long_name = [vec![b'X'; 10000].as_slice(), b": 1\r\n"].concat();
    rows.push(same("10000-byte field name", &long_name).differs(
        "nginx and haproxy: 400 (one line must fit a buffer); the head is within max_header_bytes",
    ));
    // Sizes: field count and head bytes under their limits.
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
            .into_bytes()
    };
    rows.push(same("99 fields + Host", &many(99)));
    rows.push(no("100 fields + Host", get(&many(100)), 431).differs("nginx has no field count limit; 100 fields is the default max_headers (Apache's LimitRequestFields, haproxy's maxhdr 101)"));
    rows.push(no("300 fields", get(&many(300)), 431).differs("nginx has no field count limit"));
    for n in [4000, 7000] {
        let c = [b"Cookie: ".as_slice(), &vec![b'c'; n], b"\r\n"].concat();
        rows.push(same(&format!("cookie {n}"), &c));
    }
    // Browsers with many cookies: a head over 16k in lines under 8k each,
    // which nginx accepts (large_client_header_buffers 4 8k).
    let cookies: Vec<u8> = (0..3)
        .flat_map(|i| format!("Cookie: c{i}={}\r\n", "c".repeat(7000)).into_bytes())
        .collect();
    rows.push(same("cookies 3 x 7000", &cookies));
    let c = [b"Cookie: ".as_slice(), &vec![b'c'; 12000], b"\r\n"].concat();
    rows.push(same("cookie 12000", &c).differs(
        "nginx: 400 (one line must fit its 8k buffer); the head is within max_header_bytes",
    ));
    let big: Vec<u8> = (0..40)
        .flat_map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1000)).into_bytes())
        .collect();
    rows.push(
        no("head 40k", get(&big), 431).differs("nginx: 400; 431 names the cause (RFC 6585 §5)"),
    );
    rows
}

fn body_rows(_: &Backend) -> Vec<Row> {
    let post = |f: &[u8], body: &[u8]| req(b"POST / HTTP/1.1", f, body);
    let fwd = |framing: &[u8], body: &[u8]| up(b"POST / HTTP/1.1", b"", framing, body);
    let cl3 = fwd(b"Content-Length: 3\r\n", b"abc");
    let te = b"Transfer-Encoding: chunked\r\n".as_slice();
    let chunked = |body: &[u8]| post(te, body);
    let rows = vec![
        ok("CL 0", post(b"Content-Length: 0\r\n", b""), vec![fwd(b"Content-Length: 0\r\n", b"")]),
        ok("no body", post(b"", b""), vec![fwd(b"", b"")]),
        ok("CL leading zeros", post(b"Content-Length: 003\r\n", b"abc"), vec![cl3.clone()]),
        ok("CL same twice", post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), vec![cl3.clone()])
            .differs("nginx: 400; identical repeated lengths are one valid length (RFC 9110 §8.6), forwarded once"),
        ok("CL list of same", post(b"Content-Length: 3, 3\r\n", b"abc"), vec![cl3.clone()])
            .differs("nginx: 400; a list of identical values is one valid length (RFC 9110 §8.6), forwarded once"),
        no("CL plus sign", post(b"Content-Length: +3\r\n", b"abc"), 400),
        no("CL negative", post(b"Content-Length: -1\r\n", b"abc"), 400),
        no("CL hex", post(b"Content-Length: 0x3\r\n", b"abc"), 400),
        no("CL inner space", post(b"Content-Length: 1 2\r\n", b"abc"), 400),
        no("CL empty", post(b"Content-Length:\r\n", b""), 400),
        no("CL overflow", post(b"Content-Length: 99999999999999999999\r\n", b"abc"), 400),
        no("CL different twice", post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"), 400),
        no("CL list different", post(b"Content-Length: 3, 4\r\n", b"abcd"), 400),
        ok("CL on GET", req(b"GET / HTTP/1.1", b"Content-Length: 3\r\n", b"abc"), vec![up(b"GET / HTTP/1.1", b"", b"Content-Length: 3\r\n", b"abc")]),
        ok("CL on HEAD", req(b"HEAD / HTTP/1.1", b"Content-Length: 3\r\n", b"abc"), vec![up(b"HEAD / HTTP/1.1", b"", b"Content-Length: 3\r\n", b"abc")])
            .methods(&["HEAD"]),
        ok(
            "CL body that looks like a request",
            req(b"GET /p1 HTTP/1.1", b"Content-Length: 29\r\n", b"GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"),
            vec![up(b"GET /p1 HTTP/1.1", b"", b"Content-Length: 29\r\n", b"GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")],
        ),
        ok_close("CL on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", vec![cl3.clone()]),
        // A chunked body buffered whole goes upstream with a Content-Length,
        // as nginx sends it: the data only, extensions and trailer fields
        // dropped (one streamed past request_buffer_size stays chunked,
        // canonical: tests/request_buffering.rs).
        ok("chunked", chunked(b"3\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked extensions", chunked(b"3;a=b\r\nabc\r\n0;x\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked quoted extension", chunked(b"3;a=\"b;c\"\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked extension after space", chunked(b"3 ;a=b\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked leading zeros", chunked(b"0003\r\nabc\r\n000\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked upper-case hex", chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), vec![fwd(b"Content-Length: 10\r\n", b"0123456789")]),
        ok("chunked trailer", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), vec![cl3.clone()]),
        ok("chunked two chunks", chunked(b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("TE Chunked case", post(b"Transfer-Encoding: Chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("TE after tab", post(b"Transfer-Encoding:\tchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()])
            .differs("nginx: 501; a tab before the value is OWS (RFC 9110 §5.6.3)"),
        ok("chunked GET", req(b"GET / HTTP/1.1", te, b"0\r\n\r\n"), vec![up(b"GET / HTTP/1.1", b"", b"Content-Length: 0\r\n", b"")]),
        no("chunk size 0x", chunked(b"0x3\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk size negative", chunked(b"-3\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk size empty", chunked(b"\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk size overflow", chunked(b"FFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk size over the body limit", chunked(b"FFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"), 413)
            .differs("nginx: 400; the size line is well formed, the body is over client_max_body_size"),
        no("chunk data too long", chunked(b"3\r\nabcX\r\n0\r\n\r\n"), 400),
        no("chunk lines LF only", chunked(b"3\nabc\n0\n\n"), 400)
            .differs("nginx accepts bare LF in chunk lines; a chunked body is where bare-LF parsing differences smuggle requests, so only CRLF is accepted"),
        no("chunk size line LF", chunked(b"3\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx accepts it; see the row above"),
        no("chunked on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        no("TE and CL", post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400),
        no("CL and TE", post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400),
        no("TE twice", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400),
        no("TE gzip, chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 501),
        // chunked missing or not final: the length is unknowable (RFC 9112
        // §6.3 says 400 and close; nginx says 501 for all of them).
        no("TE identity with CL", post(b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n", b"abc"), 400)
            .differs("nginx: 501; with chunked not final the length is unknowable, RFC 9112 §6.3: 400"),
        no("TE identity", post(b"Transfer-Encoding: identity\r\n", b"abc"), 400)
            .differs("nginx: 501; RFC 9112 §6.3: 400"),
        no("TE chunked, gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx: 501; RFC 9112 §6.3: 400"),
        no("TE chunked, chunked", post(b"Transfer-Encoding: chunked, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx: 501; chunked applied twice is malformed (RFC 9112 §7)"),
        no("TE xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx: 501; RFC 9112 §6.3: 400"),
        no("TE empty", post(b"Transfer-Encoding:\r\n", b""), 400).differs("nginx: 501; RFC 9112 §6.3: 400"),
        no("TE quoted", post(b"Transfer-Encoding: \"chunked\"\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400),
        no("TE empty element", post(b"Transfer-Encoding: chunked,\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx: 501, haproxy forwards it; no client writes it, and the framing field is the one place where a lenient reading is worth nothing"),
        ok("TE name case", post(b"transfer-ENCODING: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), vec![cl3.clone()]),
        ok("CL name case", post(b"content-LENGTH: 3\r\n", b"abc"), vec![cl3.clone()]),
        ok("CL between tabs", post(b"Content-Length:\t3\t\r\n", b"abc"), vec![cl3.clone()])
            .differs("nginx: 400; tabs around a value are OWS (RFC 9110 §5.6.3), haproxy agrees"),
        ok("CL 23 digits", post(b"Content-Length: 00000000000000000000003\r\n", b"abc"), vec![cl3.clone()]),
        no("CL trailing comma", post(b"Content-Length: 3,\r\n", b"abc"), 400),
        no("CL leading comma", post(b"Content-Length: ,3\r\n", b"abc"), 400),
        // Trailer fields that would frame or route are dropped; the rest kept.
        ok("trailer Content-Length", chunked(b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"), vec![cl3.clone()]),
        ok("trailer Transfer-Encoding", chunked(b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), vec![cl3.clone()]),
        ok("trailer Host", chunked(b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n"), vec![cl3.clone()]),
        no("trailer obs-fold", chunked(b"3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), 400)
            .differs("nginx drops trailers, haproxy joins the fold; obs-fold is refused in trailers as in the head (RFC 9112 §5.2)"),
        no("trailer NUL", chunked(b"3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n"), 400)
            .differs("nginx drops trailers, haproxy forwards the NUL; a NUL in a field MUST be refused or replaced (RFC 9110 §5.5)"),
        no("trailer without colon", chunked(b"3\r\nabc\r\n0\r\nXT\r\n\r\n"), 400),
        no("trailer name with space", chunked(b"3\r\nabc\r\n0\r\nX T: 1\r\n\r\n"), 400),
        ok(
            "500 chunks",
            chunked(&[b"1\r\na\r\n".repeat(500).as_slice(), b"0\r\n\r\n"].concat()),
            vec![fwd(b"Content-Length: 500\r\n", &b"a".repeat(500))],
        ),
        no("chunk size trailing space", chunked(b"3 \r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx and haproxy accept it; whitespace is allowed only before a ';' (RFC 9112 §7.1.1)"),
        no("chunk size trailing tab", chunked(b"3\t\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx and haproxy accept it; see the row above"),
        no("chunk size leading space", chunked(b" 3\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk extension bare CR", chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"), 400),
        no("chunk extension NUL", chunked(b"3;a\x00\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx and haproxy skip it; a NUL is not part of any extension (RFC 9112 §7.1.1)"),
        no("chunk extension without name", chunked(b"3;\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx and haproxy skip it; chunk-ext-name is a token (RFC 9112 §7.1.1)"),
        no("chunk extension without value", chunked(b"3;a=\r\nabc\r\n0\r\n\r\n"), 400)
            .differs("nginx and haproxy skip it; after '=' comes a token or a quoted string (RFC 9112 §7.1.1)"),
        no("chunk data then bare CR", chunked(b"3\r\nabc\r0\r\n\r\n"), 400),
        no("last chunk then bare LF", chunked(b"3\r\nabc\r\n0\r\n\n"), 400)
            .differs("nginx and haproxy accept the bare LF; only CRLF ends a chunked body"),
    ];
    rows
}

fn expect_upgrade_pipelining_rows(_: &Backend) -> Vec<Row> {
    let post = |f: &[u8], body: &[u8]| req(b"POST /e HTTP/1.1", f, body);
    let fwd = |framing: &[u8], body: &[u8]| up(b"POST /e HTTP/1.1", b"", framing, body);
    let cl3 = b"Content-Length: 3\r\n".as_slice();
    let get = |t: &str| format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes();
    let gfwd = |t: &str| up(format!("GET {t} HTTP/1.1").as_bytes(), b"", b"", b"");
    let ws =
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n".as_slice();
    let upgrade = b"Connection: upgrade\r\n".as_slice();
    let rows = vec![
        // Expect is this hop's: answered here (100 when the body has not
        // arrived yet), never forwarded. With the body in the same
        // segment a 100 is optional (RFC 9110 §10.1.1).
        ok("Expect 100-continue", post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc"), vec![fwd(cl3, b"abc")]).interim(None),
        ok("Expect 100-Continue", post(b"Expect: 100-Continue\r\nContent-Length: 3\r\n", b"abc"), vec![fwd(cl3, b"abc")]).interim(None),
        ok("Expect twice", post(b"Expect: 100-continue\r\nExpect: 100-continue\r\nContent-Length: 3\r\n", b"abc"), vec![fwd(cl3, b"abc")])
            .interim(None)
            .differs("nginx: 400; a repeated field is one list (RFC 9110 §5.3), and 100-continue twice is still 100-continue"),
        ok("Expect no body", post(b"Expect: 100-continue\r\nContent-Length: 0\r\n", b""), vec![fwd(b"Content-Length: 0\r\n", b"")]).interim(None),
        ok("Expect on GET", req(b"GET /e HTTP/1.1", b"Expect: 100-continue\r\n", b""), vec![up(b"GET /e HTTP/1.1", b"", b"", b"")]).interim(None),
        ok("Expect empty", post(b"Expect:\r\nContent-Length: 3\r\n", b"abc"), vec![fwd(cl3, b"abc")]),
        ok_close("Expect on HTTP/1.0", b"POST /e HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", vec![fwd(cl3, b"abc")]),
        no("Expect unknown", post(b"Expect: foo\r\nContent-Length: 3\r\n", b"abc"), 417)
            .differs("nginx ignores it; an expectation the server cannot meet is a 417 (RFC 9110 §10.1.1)"),
        no("Expect 100-continue and more", post(b"Expect: 100-continue, foo\r\nContent-Length: 3\r\n", b"abc"), 417)
            .differs("nginx ignores it; see the row above"),
        // Upgrade: forwarded only with Connection: upgrade, on HTTP/1.1,
        // and never h2c. (The backend declines with a 200: a plain exchange.)
        ok(
            "Upgrade websocket",
            req(b"GET /ws HTTP/1.1", &[b"Connection: Upgrade\r\nUpgrade: websocket\r\n", ws].concat(), b""),
            vec![up4(b"GET /ws HTTP/1.1", &[b"Host: a\r\nUpgrade: websocket\r\n", ws].concat(), b"", upgrade, b"")],
        )
        .differs("nginx drops Upgrade unless configured to pass it; a websocket upgrade is proxied"),
        ok(
            "Upgrade lower-case",
            req(b"GET /ws HTTP/1.1", b"connection: upgrade\r\nupgrade: WebSocket\r\n", b""),
            vec![up4(b"GET /ws HTTP/1.1", b"Host: a\r\nupgrade: WebSocket\r\n", b"", upgrade, b"")],
        )
        .differs("nginx drops Upgrade unless configured to pass it"),
        ok("Upgrade without Connection", req(b"GET /ws HTTP/1.1", b"Upgrade: websocket\r\n", b""), vec![gfwd("/ws")]),
        ok("Upgrade h2c", req(b"GET / HTTP/1.1", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", b""), vec![gfwd("/")]),
        ok_close("Upgrade on HTTP/1.0", b"GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", vec![gfwd("/ws")]),
        // Pipelining: each request answered in order, each forwarded once.
        ok("pipeline 2", [get("/p1"), get("/p2")].concat(), vec![gfwd("/p1"), gfwd("/p2")]),
        ok_close(
            "pipeline 3, body, close",
            [get("/p1").as_slice(), b"POST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"].concat(),
            vec![gfwd("/p1"), up(b"POST /p2 HTTP/1.1", b"", cl3, b"abc"), gfwd("/p3")],
        ),
        ok(
            "pipeline after chunked",
            [b"POST /p1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".as_slice(), &get("/p2")].concat(),
            vec![up(b"POST /p1 HTTP/1.1", b"", cl3, b"abc"), gfwd("/p2")],
        ),
        ok(
            "pipeline after HEAD",
            [b"HEAD /p1 HTTP/1.1\r\nHost: a\r\n\r\n".as_slice(), &get("/p2")].concat(),
            vec![up(b"HEAD /p1 HTTP/1.1", b"", b"", b""), gfwd("/p2")],
        )
        .methods(&["HEAD", "GET"]),
        ok_then_400("pipeline then malformed", [get("/p1").as_slice(), b"GET /p2 HTTP/1.1\r\nHost: a\r\nX: a\x00\r\n\r\n"].concat(), vec![gfwd("/p1")]),
        ok_then_400("pipeline then garbage", [get("/p1").as_slice(), b"garbage\r\n\r\n"].concat(), vec![gfwd("/p1")]),
        ok_then_400("pipeline then smuggling shape", [get("/p1").as_slice(), b"POST /p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"].concat(), vec![gfwd("/p1")]),
        ok_close("bytes after Connection: close", [b"GET /p1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".as_slice(), &get("/p2")].concat(), vec![gfwd("/p1")]),
        ok("CRLF after a request", [get("/p1").as_slice(), b"\r\n"].concat(), vec![gfwd("/p1")]),
    ];
    rows
}

#[test]
fn request_lines_and_targets() {
    run(&[request_line_rows], Delivery::Whole);
}

#[test]
fn header_spellings() {
    run(&[header_rows], Delivery::Whole);
}

#[test]
fn bodies_and_framing() {
    run(&[body_rows], Delivery::Whole);
}

#[test]
fn expect_upgrade_and_pipelining() {
    run(&[expect_upgrade_pipelining_rows], Delivery::Whole);
}

/// The same rows, every byte in its own write: a verdict may not depend
/// on where the bytes were cut (a head, a size line, a version split
/// anywhere).
#[test]
fn byte_at_a_time() {
    run(
        &[
            request_line_rows,
            header_rows,
            body_rows,
            expect_upgrade_pipelining_rows,
        ],
        Delivery::Bytes,
    );
}

/// A client that waits for `100 Continue` before its body (curl, requests
/// with a large upload): ringlb answers the interim itself, then forwards
/// the request once, with the body and without `Expect`.
#[test]
fn expect_100_continue_waits_for_the_interim() {
    let (be, log) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], "keepalive = 8\n"));
    let cl3 = &b"Content-Length: 3\r\n"[..];
    for (framing, body) in [
        (cl3, &b"abc"[..]),
        (b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
    ] {
        log.lock().unwrap().clear();
        let mut s = connect(rl.addr);
        s.write_all(&req(
            b"POST /e HTTP/1.1",
            &[b"Expect: 100-continue\r\n", framing].concat(),
            b"",
        ))
        .unwrap();
        let mut got = Vec::new();
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        read_until(&mut s, &mut got, |b| b.len() >= interim.len()).unwrap();
        assert_eq!(got, interim, "{}", String::from_utf8_lossy(&got));
        s.write_all(body).unwrap();
        s.write_all(CANARY).unwrap();
        let mut rest = Vec::new();
        assert!(
            read_until(&mut s, &mut rest, |_| false).unwrap(),
            "not closed"
        );
        let (r, info, stray) = parse(&rest, &["POST", "GET"], true);
        let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
        assert_eq!(
            (statuses, info),
            (vec![200, 200], 0),
            "{}",
            String::from_utf8_lossy(&rest)
        );
        assert!(stray.is_empty() && r.iter().all(|r| r.body == b"ok"));
        let seen = log.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                // Either way the body is buffered whole: sent with a length.
                up(b"POST /e HTTP/1.1", b"", cl3, b"abc"),
                CANARY_UP.to_vec()
            ],
            "{}",
            String::from_utf8_lossy(&seen.concat())
        );
    }
}
