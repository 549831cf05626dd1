//! A differential matrix: the same client bytes through ringlb and through
//! nginx (as a reverse proxy with the equivalent config: HTTP/1.1 upstream
//! keep-alive), in front of one scripted raw-socket backend that
//! misbehaves on request (a body on a 204, a head split by a bare CR, a
//! close mid-body, an extra 1xx…). For every case the test checks what
//! the client got (parsed strictly: statuses, bodies, no stray bytes,
//! whether the connection closed) and what the backend received (how many
//! requests, which bytes). ringlb must pass every check; nginx's outcome
//! is printed next to it as the reference (`--nocapture` shows the table).
//!
//! One backend, one ringlb and one nginx serve the whole file; cases run
//! one after another on fresh client connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::peers::{nginx_with, parse, Proc, Resp};
use common::*;

/// What the scripted backend answers for a request target (the path as it
/// arrived), and whether it closes afterwards.
fn script(method: &str, target: &str, raw: &[u8]) -> (Vec<u8>, bool) {
    let path = target.split('?').next().unwrap_or("");
    let fixed = |s: &str| (s.as_bytes().to_vec(), false);
    match path {
        "/head" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec();
            if method != "HEAD" {
                r.extend_from_slice(b"0123456789");
            }
            (r, false)
        }
        // A 204 that (wrongly) carries a body: not part of the response.
        "/204body" => (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nEVIL!".to_vec(),
            false,
        ),
        "/304" => fixed("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n"),
        "/eof" => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-the-close".to_vec(),
            true,
        ),
        "/eof10" => (
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nten-style-close".to_vec(),
            true,
        ),
        "/trailers" => fixed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
             5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
        ),
        "/bighead" => {
            let v = "v".repeat(3000);
            (
                format!("HTTP/1.1 200 OK\r\nX-Big: {v}\r\nContent-Length: 2\r\n\r\nok")
                    .into_bytes(),
                false,
            )
        }
        "/103" => fixed(
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ),
        "/102" => fixed(
            "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ),
        "/midbody" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'x'; 400]);
            (r, true)
        }
        "/midchunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            true,
        ),
        "/split-cr" => {
            fixed("HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok")
        }
        "/split-lf" => {
            fixed("HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok")
        }
        "/split-nul" => fixed("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok"),
        "/nocolon" => fixed("HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 2\r\n\r\nok"),
        "/dupcl" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"),
        "/badcl" => fixed("HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok"),
        "/clte" => fixed(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n",
        ),
        "/badchunk" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            true,
        ),
        // A correct HEAD answer of a chunked resource: the field, no body.
        "/headte" => {
            if method == "HEAD" {
                fixed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            } else {
                fixed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            }
        }
        // A HEAD answered (wrongly) with a body: it must not reach the client.
        "/headbody" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"),
        // Two responses to one request: the connection is dirty.
        "/double" => fixed(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
        ),
        // Keep-alive refused by the backend.
        "/closehdr" => (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            true,
        ),
        // An upgrade the backend declines with a plain response.
        "/noupgrade" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ndeclined"),
        // A 101 nobody asked for: no tunnel may open (the client's next
        // bytes would reach the backend unparsed, around every route).
        "/bogus101" => fixed(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
        "/badstatus" => fixed("HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"),
        "/garbage" => (b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), true),
        "/empty" => (Vec::new(), true),
        // Default: 200 with the raw request as the body.
        _ => {
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", raw.len()).into_bytes();
            r.extend_from_slice(raw);
            (r, false)
        }
    }
}

type Seen = Arc<Mutex<Vec<String>>>;

fn scripted_backend() -> (Backend, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let text = String::from_utf8_lossy(&req).into_owned();
            s2.lock().unwrap().push(text.clone());
            let mut line = text.split(' ');
            let method = line.next().unwrap_or("").to_string();
            let target = line.next().unwrap_or("").to_string();
            let (resp, close) = script(&method, &target, &req);
            if s.write_all(&resp).is_err() || close {
                return;
            }
        }
    });
    (be, seen)
}

/// What a client saw on one connection.
#[derive(Debug)]
struct Seen1 {
    /// Final responses (1xx skipped and counted).
    resps: Vec<Resp>,
    informational: usize,
    /// Bytes after the last complete response (must be none).
    stray: Vec<u8>,
    /// The proxy closed the connection (within the read timeout).
    closed: bool,
    /// What the backend received during the case.
    backend: Vec<String>,
}

struct Rig {
    be: Backend,
    seen: Seen,
    rl: Ringlb,
    nginx: SocketAddr,
    _nginx: (Proc, tempdir::Dir),
}

fn rig() -> Rig {
    let (be, seen) = scripted_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], "keepalive = 8\n"));
    let nginx: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ng = nginx_with(&[nginx], |d| {
        format!(
            "access_log off;\nupstream app {{ server {}; keepalive 8; }}\n\
             server {{\n listen {nginx};\n client_max_body_size 64m;\n\
             location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $http_host;\n\
             proxy_read_timeout 5s; }}\n}}\n# {d}\n",
            be.addr
        )
    });
    Rig {
        be,
        seen,
        rl,
        nginx,
        _nginx: ng,
    }
}

impl Rig {
    /// Sends `raw` on a fresh connection to `proxy`, reads until the proxy
    /// closes or 3 s of silence, and parses the answers to `methods`.
    fn run(&self, proxy: SocketAddr, raw: &[u8], methods: &[&str]) -> Seen1 {
        self.seen.lock().unwrap().clear();
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(raw);
        let mut got = Vec::new();
        let mut closed = false;
        let start = Instant::now();
        let mut tmp = [0u8; 65536];
        while start.elapsed() < Duration::from_secs(15) {
            match s.read(&mut tmp) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // Give anything smuggled time to reach the backend.
        if methods == ["X"] {
            thread::sleep(Duration::from_millis(150));
        }
        let (resps, informational, stray) = parse(&got, methods, closed);
        Seen1 {
            resps,
            informational,
            stray,
            closed,
            backend: self.seen.lock().unwrap().drain(..).collect(),
        }
    }
}

/// A case: a name, the client's bytes, the methods (one per request sent),
/// and the check of what was seen.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    methods: Vec<&'static str>,
    check: fn(&Seen1) -> Result<(), String>,
}

fn case(
    name: &'static str,
    raw: impl AsRef<[u8]>,
    methods: &[&'static str],
    check: fn(&Seen1) -> Result<(), String>,
) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        methods: methods.to_vec(),
        check,
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// Common: no stray bytes after the parsed responses.
fn no_stray(s: &Seen1) -> Result<(), String> {
    ensure(s.stray.is_empty(), || {
        format!("stray bytes: {:?}", String::from_utf8_lossy(&s.stray))
    })
}

fn statuses(s: &Seen1) -> Vec<u16> {
    s.resps.iter().map(|r| r.status).collect()
}

/// `n` complete responses with `want` statuses, nothing else.
fn exactly(s: &Seen1, want: &[u16]) -> Result<(), String> {
    no_stray(s)?;
    ensure(statuses(s) == want, || {
        format!("statuses {:?}", statuses(s))
    })?;
    ensure(s.resps.iter().all(|r| r.complete), || {
        "an incomplete response".into()
    })
}

/// The proxy's own 502 for a bad upstream response (one response, no
/// backend bytes leaked to the client).
fn bad_gateway(s: &Seen1) -> Result<(), String> {
    exactly(s, &[502])?;
    ensure(s.backend.len() == 1, || {
        format!("backend saw {} requests", s.backend.len())
    })?;
    let b = String::from_utf8_lossy(&s.resps[0].body).into_owned();
    ensure(
        !s.resps[0].head.to_ascii_lowercase().contains("evil") && !b.contains("ok"),
        || format!("leaked upstream bytes: {}{b}", s.resps[0].head),
    )
}

/// A refused request: 400, closed, the backend saw nothing.
fn refused(s: &Seen1) -> Result<(), String> {
    refused_as(s, 400)
}

/// A coding other than chunked before the final chunked: well framed, not
/// implemented (RFC 9112 §6.1), refused like a malformed request.
fn not_implemented(s: &Seen1) -> Result<(), String> {
    refused_as(s, 501)
}

fn refused_as(s: &Seen1, status: u16) -> Result<(), String> {
    ensure(statuses(s) == [status], || {
        format!("statuses {:?}", statuses(s))
    })?;
    no_stray(s)?;
    ensure(s.closed, || "connection left open".into())?;
    ensure(s.backend.is_empty(), || {
        format!("backend saw {:?}", s.backend)
    })
}

const CLOSE: &str = "Connection: close\r\n";

fn cases() -> Vec<Case> {
    let get = |p: &str, last: bool| {
        format!(
            "GET {p} HTTP/1.1\r\nHost: m.test\r\n{}\r\n",
            if last { CLOSE } else { "" }
        )
    };
    let big = "h".repeat(7000);
    let mut v = vec![
        case(
            "HEAD then GET on one connection",
            format!(
                "HEAD /head HTTP/1.1\r\nHost: m.test\r\n\r\n{}",
                get("/head", true)
            ),
            &["HEAD", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.resps[1].body == b"0123456789", || "second body".into())
            },
        ),
        case(
            "204 with a stray body, then GET",
            format!("{}{}", get("/204body", false), get("/x", true)),
            &["GET", "GET"],
            |s| {
                no_stray(s)?;
                ensure(statuses(s)[0] == 204, || format!("{:?}", statuses(s)))?;
                // The second request is answered correctly (on this
                // connection or refused cleanly), never with "EVIL!".
                ensure(s.resps.iter().all(|r| !r.head.contains("EVIL")), || {
                    "body leaked into the next response".into()
                })?;
                ensure(
                    s.resps.len() == 1 || (s.resps[1].status == 200 && s.resps[1].complete),
                    || format!("{:?}", statuses(s)),
                )
            },
        ),
        case(
            "304 with Content-Length, then GET",
            format!("{}{}", get("/304", false), get("/head", true)),
            &["GET", "GET"],
            |s| {
                exactly(s, &[304, 200])?;
                ensure(s.resps[1].body == b"0123456789", || "second body".into())
            },
        ),
        case(
            "close-delimited response (1.1)",
            get("/eof", false),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.resps[0].body == b"until-the-close", || {
                    format!("{:?}", String::from_utf8_lossy(&s.resps[0].body))
                })
            },
        ),
        case(
            "close-delimited response (1.0 backend)",
            get("/eof10", false),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.resps[0].body == b"ten-style-close", || "body".into())
            },
        ),
        case(
            "chunked response with trailers, then GET",
            format!("{}{}", get("/trailers", false), get("/head", true)),
            &["GET", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.resps[0].body == b"hello world", || {
                    format!("{:?}", String::from_utf8_lossy(&s.resps[0].body))
                })
            },
        ),
        case(
            "3000-byte response field",
            get("/bighead", true),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.resps[0].head.contains(&"v".repeat(3000)), || {
                    "field cut".into()
                })
            },
        ),
        case(
            "7000-byte request field",
            format!("GET /big HTTP/1.1\r\nHost: m.test\r\nX-Big: {big}\r\n{CLOSE}\r\n"),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(
                    s.backend.len() == 1 && s.backend[0].contains(&"h".repeat(7000)),
                    || "field not forwarded intact".into(),
                )
            },
        ),
        case(
            "103 Early Hints then 200",
            get("/103", true),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.resps[0].body == b"final", || "body".into())
            },
        ),
        case("102 and 100 then 200", get("/102", true), &["GET"], |s| {
            exactly(s, &[200])?;
            ensure(s.resps[0].body == b"final", || "body".into())
        }),
        case(
            "backend closes mid-body (Content-Length)",
            get("/midbody", false),
            &["GET"],
            |s| {
                ensure(s.closed, || "client connection not closed".into())?;
                ensure(s.resps.len() == 1 && !s.resps[0].complete, || {
                    format!(
                        "want one truncated response, got {:?} complete={:?}",
                        statuses(s),
                        s.resps.iter().map(|r| r.complete).collect::<Vec<_>>()
                    )
                })
            },
        ),
        case(
            "backend closes mid-body (chunked)",
            get("/midchunk", false),
            &["GET"],
            |s| {
                ensure(s.closed, || "client connection not closed".into())?;
                ensure(s.resps.len() == 1 && !s.resps[0].complete, || {
                    "a complete chunked response was faked".into()
                })
            },
        ),
        case(
            "response field with a bare CR",
            get("/split-cr", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "response field with a bare LF",
            get("/split-lf", true),
            &["GET"],
            |s| {
                // Either refused (502) or read as two fields the way nginx
                // reads it; never a CR passed on.
                no_stray(s)?;
                ensure(
                    s.resps.len() == 1 && !s.resps[0].head.contains("a\nSet"),
                    || format!("{:?}", s.resps.first().map(|r| &r.head)),
                )
            },
        ),
        case(
            "response field with NUL",
            get("/split-nul", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "response field without a colon",
            get("/nocolon", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "two different response lengths",
            get("/dupcl", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "negative response length",
            get("/badcl", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "response with a bad status code",
            get("/badstatus", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "response that is not HTTP",
            get("/garbage", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "backend closes without a response",
            get("/empty", true),
            &["GET"],
            bad_gateway,
        ),
        case(
            "response with Content-Length and chunked",
            format!("{}{}", get("/clte", false), get("/head", true)),
            &["GET", "GET"],
            |s| {
                // Refused (502), or chunked wins (RFC 9112 §6.3); never the length.
                no_stray(s)?;
                match statuses(s).as_slice() {
                    [502, ..] => Ok(()),
                    [200, 200] => ensure(s.resps[0].body == b"hello", || "body".into()),
                    other => Err(format!("{other:?}")),
                }
            },
        ),
        case(
            "bad chunk size from the backend",
            get("/badchunk", false),
            &["GET"],
            |s| {
                ensure(s.closed, || "not closed".into())?;
                ensure(
                    s.resps.iter().all(|r| r.status == 502 || !r.complete),
                    || "bad chunking relayed as complete".into(),
                )
            },
        ),
        case(
            "three pipelined GETs",
            format!(
                "{}{}{}",
                get("/p1", false),
                get("/p2", false),
                get("/p3", true)
            ),
            &["GET", "GET", "GET"],
            |s| {
                exactly(s, &[200, 200, 200])?;
                ensure(s.backend.len() == 3, || format!("{:?}", s.backend))?;
                for (i, r) in s.resps.iter().enumerate() {
                    let want = format!("GET /p{} ", i + 1);
                    ensure(r.body.starts_with(want.as_bytes()), || format!("order {i}"))?;
                }
                Ok(())
            },
        ),
        case(
            "pipelined POST then GET",
            format!(
                "POST /post HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\n\r\nhello{}",
                get("/after", true)
            ),
            &["POST", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(
                    s.backend.len() == 2 && s.backend[0].ends_with("\r\n\r\nhello"),
                    || format!("{:?}", s.backend),
                )
            },
        ),
        case(
            "HTTP/1.0 client without Host",
            "GET /ten HTTP/1.0\r\n\r\n",
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.closed, || "1.0 connection kept open".into())?;
                ensure(s.backend.len() == 1, || "backend count".into())
            },
        ),
        case(
            "HTTP/1.0 keep-alive client",
            "GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n",
            &["GET", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.closed, || "not closed after the last 1.0 request".into())?;
                ensure(
                    s.resps[0]
                        .head
                        .to_ascii_lowercase()
                        .contains("connection: keep-alive"),
                    || format!("first response: {}", s.resps[0].head),
                )
            },
        ),
        case(
            "HEAD of a chunked resource, then GET",
            format!(
                "HEAD /headte HTTP/1.1\r\nHost: m.test\r\n\r\n{}",
                get("/headte", true)
            ),
            &["HEAD", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.resps[1].body == b"abc", || "second body".into())
            },
        ),
        case(
            "HEAD answered with a body, then GET",
            format!(
                "HEAD /headbody HTTP/1.1\r\nHost: m.test\r\n\r\n{}",
                get("/head", true)
            ),
            &["HEAD", "GET"],
            |s| {
                no_stray(s)?;
                ensure(statuses(s).first() == Some(&200), || format!("{:?}", statuses(s)))?;
                ensure(
                    s.resps.iter().all(|r| !r.head.contains("EVIL") && r.body != b"EVIL!"),
                    || "HEAD body leaked".into(),
                )?;
                ensure(
                    s.resps.len() == 1 || s.resps[1].body == b"0123456789",
                    || "second body".into(),
                )
            },
        ),
        case(
            "backend sends two responses to one request",
            format!("{}{}", get("/double", false), get("/after-double", true)),
            &["GET", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.resps[0].body == b"ok", || "first body".into())?;
                ensure(s.resps[1].body.starts_with(b"GET /after-double "), || {
                    format!(
                        "stale response served: {:?}",
                        String::from_utf8_lossy(&s.resps[1].body)
                    )
                })
            },
        ),
        case(
            "backend says Connection: close, client keeps alive",
            format!("{}{}", get("/closehdr", false), get("/after-close", true)),
            &["GET", "GET"],
            |s| {
                exactly(s, &[200, 200])?;
                ensure(s.resps[1].body.starts_with(b"GET /after-close "), || "second".into())
            },
        ),
        case(
            "chunked response to an HTTP/1.0 client",
            "GET /trailers HTTP/1.0\r\n\r\n",
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.closed, || "not closed".into())?;
                let h = s.resps[0].head.to_ascii_lowercase();
                ensure(!h.contains("transfer-encoding"), || {
                    format!("chunked sent to a 1.0 client: {h}")
                })?;
                ensure(s.resps[0].body == b"hello world", || {
                    format!("{:?}", String::from_utf8_lossy(&s.resps[0].body))
                })
            },
        ),
        case(
            "upgrade declined by the backend, then GET",
            format!(
                "GET /noupgrade HTTP/1.1\r\nHost: m.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n{}",
                get("/head", true)
            ),
            &["GET", "GET"],
            |s| {
                no_stray(s)?;
                ensure(statuses(s).first() == Some(&200), || format!("{:?}", statuses(s)))?;
                ensure(s.resps[0].body == b"declined", || "first body".into())?;
                ensure(
                    s.resps.len() == 1 || s.resps[1].body == b"0123456789",
                    || "second body".into(),
                )
            },
        ),
        case(
            "101 to a request that asked for no upgrade",
            format!("{}{}", get("/bogus101", false), get("/tunnelled", true)),
            &["GET", "GET"],
            |s| {
                no_stray(s)?;
                ensure(!statuses(s).contains(&101), || "a tunnel opened".into())?;
                ensure(statuses(s).first() == Some(&502), || format!("{:?}", statuses(s)))?;
                // The next request is parsed and routed, or refused; never
                // passed through raw.
                ensure(
                    s.resps.len() == 1 || s.resps[1].body.starts_with(b"GET /tunnelled HTTP/1.1\r\n"),
                    || format!("{:?}", s.backend),
                )
            },
        ),
        case(
            "GET after a 502 on the same connection",
            format!("{}{}", get("/split-nul", false), get("/after-502", true)),
            &["GET", "GET"],
            |s| {
                no_stray(s)?;
                ensure(statuses(s).first() == Some(&502), || format!("{:?}", statuses(s)))?;
                ensure(
                    s.resps.len() == 1 || s.resps[1].body.starts_with(b"GET /after-502 "),
                    || "second".into(),
                )
            },
        ),
        case(
            "absolute-form, Host differs only in case",
            format!("GET http://ABS.Test/c HTTP/1.1\r\nHost: abs.test\r\n{CLOSE}\r\n"),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.backend.len() == 1 && s.backend[0].starts_with("GET /c HTTP/1.1\r\n"), || {
                    format!("{:?}", s.backend)
                })
            },
        ),
        case(
            "OPTIONS *",
            format!("OPTIONS * HTTP/1.1\r\nHost: m.test\r\n{CLOSE}\r\n"),
            &["OPTIONS"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.backend.len() == 1 && s.backend[0].starts_with("OPTIONS * HTTP/1.1\r\n"), || {
                    format!("{:?}", s.backend)
                })
            },
        ),
        case(
            "99 extra request fields",
            format!(
                "GET /many HTTP/1.1\r\nHost: m.test\r\n{}\r\n",
                (0..98).map(|i| format!("X-F{i}: {i}\r\n")).collect::<String>() + CLOSE
            ),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.backend.len() == 1 && s.backend[0].contains("X-F97: 97\r\n"), || {
                    "fields lost".into()
                })
            },
        ),
        case(
            "Expect: 100-continue from an HTTP/1.0 client",
            "POST /e10 HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
            &["POST"],
            |s| {
                exactly(s, &[200])?;
                ensure(s.informational == 0, || "a 100 sent to a 1.0 client".into())?;
                ensure(s.backend.len() == 1 && s.backend[0].ends_with("\r\n\r\nabc"), || {
                    format!("{:?}", s.backend)
                })
            },
        ),
        case(
            "identical Content-Length list",
            "POST /cl HTTP/1.1\r\nHost: m\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\nabc",
            &["POST"],
            |s| {
                // RFC 9110 §8.6: refuse, or forward one length.
                match statuses(s).as_slice() {
                    [400] => refused(s),
                    [200] => ensure(
                        s.backend.len() == 1
                            && s.backend[0].matches("Content-Length").count() == 1
                            && s.backend[0].contains("Content-Length: 3\r\n")
                            && s.backend[0].ends_with("\r\n\r\nabc"),
                        || format!("{:?}", s.backend),
                    ),
                    other => Err(format!("{other:?}")),
                }
            },
        ),
        case(
            "percent-encoding and query forwarded as sent",
            get("/a%20b/%2F?x=%2F&y=1&&z&w=%zz", true),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(
                    s.backend.len() == 1
                        && s.backend[0].starts_with("GET /a%20b/%2F?x=%2F&y=1&&z&w=%zz HTTP/1.1\r\n"),
                    || format!("{:?}", s.backend),
                )
            },
        ),
        // Not a path (RFC 3986 §2.1); nginx answers 400 too.
        case(
            "invalid percent-escape in the path",
            get("/a/%zz", true),
            &["GET"],
            refused,
        ),
        case(
            "absolute-form target",
            format!("GET http://abs.test/abs?q=1 HTTP/1.1\r\nHost: abs.test\r\n{CLOSE}\r\n"),
            &["GET"],
            |s| {
                exactly(s, &[200])?;
                ensure(
                    s.backend.len() == 1 && s.backend[0].starts_with("GET /abs?q=1 HTTP/1.1\r\n"),
                    || format!("{:?}", s.backend),
                )
            },
        ),
    ];
    // Smuggling and malformed requests: 400, closed, nothing forwarded.
    let smuggle: &[(&'static str, &[u8])] = &[
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: m\r\n\r\n"),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1e\r\nGET /s HTTP/1.1\r\nHost: m\r\n\r\n\r\n0\r\n\r\n"),
        ("TE obs-fold", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE identity, chunked + CL", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE with vertical tab", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n"),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n"),
        ("chunk size with 0x", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk line with bare LF", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"),
        ("chunk data too long", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"),
        ("chunk ext with bare CR", b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ("CL twice differing", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"),
        ("CL list differing", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3, 4\r\n\r\nabcd"),
        ("GET with asterisk target", b"GET * HTTP/1.1\r\nHost: m\r\n\r\n"),
        ("Host with a trailing space inside", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("CL negative", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: -1\r\n\r\n"),
        ("CL overflow", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ("space before colon", b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length : 3\r\n\r\nabc"),
        ("NUL in a field value", b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\x00b\r\n\r\n"),
        ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\nHost: m\r\n\r\n"),
        ("bare CR in a field", b"GET / HTTP/1.1\r\nHost: m\r\nX-A: a\rb\r\n\r\n"),
        ("field name with a space", b"GET / HTTP/1.1\r\nHost: m\r\nX A: b\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("no Host (1.1)", b"GET / HTTP/1.1\r\nX: y\r\n\r\n"),
        ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("bad version", b"GET / HTTP/1.x\r\nHost: m\r\n\r\n"),
        ("lower-case version", b"GET / http/1.1\r\nHost: m\r\n\r\n"),
        ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: m\r\n\r\n"),
        ("tab in the request line", b"GET\t/ HTTP/1.1\r\nHost: m\r\n\r\n"),
        // A fragment is no part of a request target (RFC 9112 §3.2); routed
        // on one side of the `#` and served on the other, it is a bypass.
        ("fragment in the target", b"GET /static#/../admin HTTP/1.1\r\nHost: m\r\n\r\n"),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ];
    for (name, raw) in smuggle {
        v.push(Case {
            name,
            raw: raw.to_vec(),
            methods: vec!["X"],
            check: refused,
        });
    }
    v.push(Case {
        name: "TE gzip, chunked",
        raw: b"POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
            .to_vec(),
        methods: vec!["X"],
        check: not_implemented,
    });
    v
}

#[test]
fn the_same_bytes_through_ringlb_and_nginx() {
    let rig = rig();
    let mut failures = Vec::new();
    println!("{:<46} | {:<34} | nginx", "case", "ringlb");
    for c in cases() {
        let r = rig.run(rig.rl.addr, &c.raw, &c.methods);
        let n = rig.run(rig.nginx, &c.raw, &c.methods);
        let show = |s: &Seen1, res: &Result<(), String>| match res {
            Ok(()) => format!(
                "ok {:?}{}",
                statuses(s),
                if s.closed { " closed" } else { "" }
            ),
            Err(e) => format!("FAIL {e}"),
        };
        let rr = (c.check)(&r);
        let nr = (c.check)(&n);
        println!("{:<46} | {:<34} | {}", c.name, show(&r, &rr), show(&n, &nr));
        if let Err(e) = rr {
            failures.push(format!(
                "{}: {e}\n  client got {:?} (closed {}, {} informational), stray {:?}\n  backend saw {:?}",
                c.name,
                r.resps
                    .iter()
                    .map(|x| (x.status, String::from_utf8_lossy(&x.body).into_owned()))
                    .collect::<Vec<_>>(),
                r.closed,
                r.informational,
                String::from_utf8_lossy(&r.stray),
                r.backend
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed through ringlb:\n{}\nringlb log:\n{}",
        failures.len(),
        failures.join("\n"),
        rig.rl.log_text()
    );
    // The backend is still healthy for a plain request.
    let r = rig.run(
        rig.rl.addr,
        b"GET /final HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        &["GET"],
    );
    assert_eq!(statuses(&r), [200]);
    let _ = rig.be.conns.load(std::sync::atomic::Ordering::Relaxed);
}

/// Routing by host and path through ringlb and nginx with the same rules
/// (`api.test` → api, path `/admin` → admin, the rest → web): each
/// request's spelling must reach the backend nginx sends it to, so a
/// route that guards something cannot be walked around by writing the
/// host or path differently (upper case, a port, a trailing dot, percent
/// escapes, dot segments, doubled slashes). The target itself is
/// forwarded as the client wrote it.
#[test]
fn host_and_path_spellings_route_like_nginx() {
    let (web, web_seen) = recording_backend();
    let (api, api_seen) = recording_backend();
    let (admin, admin_seen) = recording_backend();
    let rl = Ringlb::start(&format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"web\"\n\
         [[listener.route]]\nhost = \"api.test\"\nupstream = \"api\"\n\
         [[listener.route]]\npath_prefix = \"/admin\"\nupstream = \"admin\"\n\n\
         [upstream.web]\n[[upstream.web.server]]\naddress = \"{}\"\n\
         [upstream.api]\n[[upstream.api.server]]\naddress = \"{}\"\n\
         [upstream.admin]\n[[upstream.admin.server]]\naddress = \"{}\"\n",
        web.addr, api.addr, admin.addr
    ));
    let ng: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _ng = nginx_with(&[ng], |_| {
        let loc = |up: SocketAddr| {
            format!(
                "proxy_pass http://{up}; proxy_http_version 1.1; proxy_set_header Host $http_host;"
            )
        };
        format!(
            "access_log off;\n\
             server {{ listen {ng} default_server; server_name _;\n\
               location / {{ {} }}\n location /admin {{ {} }} }}\n\
             server {{ listen {ng}; server_name api.test; location / {{ {} }} }}\n",
            loc(web.addr),
            loc(admin.addr),
            loc(api.addr)
        )
    });
    let sets = [
        ("web", &web_seen),
        ("api", &api_seen),
        ("admin", &admin_seen),
    ];
    let which = |proxy: SocketAddr, host: &str, target: &str| -> (u16, String, String) {
        for (_, s) in &sets {
            s.lock().unwrap().clear();
        }
        let r = roundtrip_close(
            proxy,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let mut hit = String::from("-");
        let mut line = String::new();
        for (name, s) in &sets {
            if let Some(req) = s.lock().unwrap().first() {
                hit = name.to_string();
                line = req.lines().next().unwrap_or("").to_string();
            }
        }
        (status_of(&r), hit, line)
    };
    let table = [
        ("api.test", "/x", "api"),
        ("API.Test:8080", "/x", "api"),
        ("api.test.", "/x", "api"),
        ("API.TEST.:80", "/x", "api"),
        ("www.test", "/x", "web"),
        ("www.test", "/admin/x", "admin"),
        ("www.test", "/admin", "admin"),
        ("www.test", "/admin?x=1", "admin"),
        ("www.test", "/%61dmin/x", "admin"),
        ("www.test", "/%61%64%6D%69%6E/x", "admin"),
        ("www.test", "//admin/x", "admin"),
        ("www.test", "/./admin/x", "admin"),
        ("www.test", "/x/../admin/y", "admin"),
        ("www.test", "/x/%2E%2E/admin/y", "admin"),
        ("www.test", "/x/./y", "web"),
        ("www.test", "/admin/", "admin"),
        ("www.test", "/%2E%2E/admin", "-"),
        ("www.test", "/x/../../admin", "-"),
    ];
    let mut bad = Vec::new();
    println!("{:<14} {:<24} | {:<34} | nginx", "host", "target", "ringlb");
    for (host, target, want) in table {
        let r = which(rl.addr, host, target);
        let n = which(ng, host, target);
        println!(
            "{host:<14} {target:<24} | {:<34} | {} {} {}",
            format!("{} {} {}", r.0, r.1, r.2),
            n.0,
            n.1,
            n.2
        );
        // nginx's own answer is the reference; the table says what it is.
        if n.1 != want {
            bad.push(format!(
                "reference moved: nginx sent {host} {target} to {} (want {want})",
                n.1
            ));
        }
        if r.1 != n.1 || (r.0 == 400) != (n.0 == 400) {
            bad.push(format!(
                "{host} {target}: ringlb → {} ({}), nginx → {}",
                r.1, r.0, n.1
            ));
        } else if r.0 == 200 && r.2 != format!("GET {target} HTTP/1.1") {
            bad.push(format!("{host} {target}: forwarded as {:?}", r.2));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
