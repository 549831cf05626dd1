//! HTTP/1 framing and limits through the real binary: request-target forms
//! (an absolute-form authority wins over `Host`, so `Host` routing cannot be
//! bypassed), `max_uri_bytes` → 414, `client_max_body_size` → 413, `Host`
//! rules, trailer fields that must not cross, duplicate `Content-Length` in
//! responses, and `Date` on every response. Each test checks what the client
//! got and exactly what the backend received (and how many times).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// What a scripted backend saw: every complete request, and every byte
/// received on any connection (in arrival order, for cut-short bodies).
#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    raw: Vec<u8>,
    /// Connections that ended (EOF or error) with bytes of an incomplete
    /// request still unread.
    cut_short: usize,
}

type Shared = Arc<Mutex<Seen>>;

/// A backend that records what it receives and answers each request with
/// `respond(request)`.
fn recorder<F>(respond: F) -> (Backend, Shared)
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    let seen: Shared = Arc::default();
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        loop {
            match read_req(&mut s, &mut buf, &s2) {
                Some(req) => {
                    let text = String::from_utf8_lossy(&req).into_owned();
                    let resp = respond(&text);
                    s2.lock().unwrap().requests.push(text);
                    if s.write_all(&resp).is_err() {
                        return;
                    }
                }
                None => {
                    if !buf.is_empty() {
                        s2.lock().unwrap().cut_short += 1;
                    }
                    return;
                }
            }
        }
    });
    (be, seen)
}

fn ok_response(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

/// Reads one request: head, then a Content-Length body or a chunked body
/// up to the end of its trailer section. Every byte read is also appended
/// to `seen.raw`.
fn read_req(s: &mut TcpStream, buf: &mut Vec<u8>, seen: &Shared) -> Option<Vec<u8>> {
    let mut fill = |buf: &mut Vec<u8>| -> bool {
        let mut tmp = [0u8; 16384];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                seen.lock().unwrap().raw.extend_from_slice(&tmp[..n]);
                true
            }
        }
    };
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
            let body_at = end + 4;
            let total = if let Some(cl) = header(&head, "content-length") {
                body_at + cl.parse::<usize>().unwrap()
            } else if header(&head, "transfer-encoding").is_some() {
                loop {
                    if let Some(t) = chunked_end(&buf[end + 2..]) {
                        break end + 2 + t;
                    }
                    if !fill(buf) {
                        return None;
                    }
                }
            } else {
                body_at
            };
            while buf.len() < total {
                if !fill(buf) {
                    return None;
                }
            }
            return Some(buf.drain(..total).collect());
        }
        if !fill(buf) {
            return None;
        }
    }
}

/// Where a chunked body (starting with the CRLF that ends its head) ends,
/// trailers included. Test data never holds `\r\n0\r\n` inside a chunk.
fn chunked_end(b: &[u8]) -> Option<usize> {
    let last = find(b, b"\r\n0\r\n")?;
    let from = last + 2;
    find(&b[from..], b"\r\n\r\n").map(|q| from + q + 4)
}

/// Sends `raw`, half-closes, and reads until ringlb closes.
fn send(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = connect(addr);
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn requests(seen: &Shared) -> Vec<String> {
    seen.lock().unwrap().requests.clone()
}

/// Waits (bounded) until `cond` holds on what the backend saw.
fn eventually(seen: &Shared, what: &str, cond: impl Fn(&Seen) -> bool) {
    let start = Instant::now();
    while !cond(&seen.lock().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backend never saw {what}; raw: {:?}",
            String::from_utf8_lossy(&seen.lock().unwrap().raw)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn routed_config(be: SocketAddr, http: &str, listener: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\n\n[http]\n{http}\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\n{listener}\n\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{be}\"\n"
    )
}

// ---------------------------------------------------------------------------
// Request-target forms and Host

#[test]
fn absolute_form_authority_wins_over_host_and_is_forwarded_in_origin_form() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&routed_config(
        be.addr,
        "",
        "[[listener.route]]\nhost = \"public.test\"\nupstream = \"app\"",
    ));
    // The bypass: routed by Host, but the target names another vhost.
    let r = send(
        rl.addr,
        b"GET http://admin.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
    );
    assert_eq!(status(&r), 400, "{r}");
    // Same host in both: the authority routes, and admin.test has no route.
    let r = send(
        rl.addr,
        b"GET http://admin.test/x HTTP/1.1\r\nHost: admin.test\r\n\r\n",
    );
    assert_eq!(status(&r), 404, "{r}");
    assert!(requests(&seen).is_empty(), "{:?}", requests(&seen));

    // A legitimate absolute-form request reaches the backend in origin-form.
    let r = send(
        rl.addr,
        b"GET http://Public.Test/x?q=1 HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    // HTTP/1.0 without Host: the authority is the host.
    let r = send(rl.addr, b"GET http://public.test HTTP/1.0\r\n\r\n");
    assert_eq!(status(&r), 200, "{r}");
    // The same authority spelled another way (the scheme's default port,
    // case) is the same host: routed by the target, forwarded once with
    // the target's spelling as Host (RFC 9112 §3.2.2). A port that is not
    // the default is another authority, as in haproxy.
    for (raw, want) in [
        (
            &b"GET http://public.test:80/p80 HTTP/1.1\r\nHost: public.test\r\n\r\n"[..],
            200,
        ),
        (
            b"GET https://PUBLIC.test:443/p443 HTTP/1.1\r\nHost: public.test:\r\n\r\n",
            200,
        ),
        (
            b"GET http://public.test:8080/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
            400,
        ),
        (
            b"GET http://public.test:443/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
            400,
        ),
        (
            b"GET http://public.test/x HTTP/1.1\r\nHost: public.test:8080\r\n\r\n",
            400,
        ),
    ] {
        let r = send(rl.addr, raw);
        let what = String::from_utf8_lossy(raw);
        assert_eq!(status(&r), want, "{what:?} → {r}");
    }
    let got = requests(&seen);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got[2].starts_with("GET /p80 HTTP/1.1\r\nHost: public.test:80\r\n"),
        "{got:?}"
    );
    assert!(
        got[3].starts_with("GET /p443 HTTP/1.1\r\nHost: PUBLIC.test:443\r\n"),
        "{got:?}"
    );
    assert!(
        got[0].starts_with("GET /x?q=1 HTTP/1.1\r\nHost: Public.Test\r\n"),
        "{got:?}"
    );
    assert!(got[1].starts_with("GET / HTTP/1.1\r\n"), "{got:?}");
    assert!(got[1].contains("\r\nHost: public.test\r\n"), "{got:?}");
    for g in &got {
        assert_eq!(
            g.to_ascii_lowercase().matches("\r\nhost:").count(),
            1,
            "{g}"
        );
        assert!(!g.contains("http://"), "{g}");
    }
}

#[test]
fn refused_target_forms_never_reach_the_backend() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let cases: &[(&[u8], u16)] = &[
        (b"GET ftp://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        (b"GET http:///x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        (
            b"GET http://user@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            400,
        ),
        (b"GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        (
            b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            405,
        ),
        // Host rules (RFC 9112 §3.2).
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
            400,
        ),
        (b"GET http://a.test/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", 400),
    ];
    for (raw, want) in cases {
        let r = send(rl.addr, raw);
        assert_eq!(
            status(&r),
            *want,
            "{:?} → {r}",
            String::from_utf8_lossy(raw)
        );
        assert!(r.contains("Connection: close\r\n"), "{r}");
    }
    // OPTIONS * is the one asterisk-form request, and is forwarded.
    let r = send(
        rl.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    let got = requests(&seen);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("OPTIONS * HTTP/1.1\r\n"), "{got:?}");
}

/// nginx as the backend with two name-based virtual hosts: a client that
/// may only reach `public.test` cannot reach `admin.test` through an
/// absolute-form target, with raw requests or with curl as a proxy client.
#[test]
fn nginx_admin_vhost_is_not_reachable_through_absolute_form() {
    let dir = tempdir::Dir::new("nginx-vhosts");
    let port = free_port();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n server {{ listen 127.0.0.1:{port} default_server; server_name public.test; location / {{ return 200 \"public vhost $request_uri\\n\"; }} }}\n server {{ listen 127.0.0.1:{port}; server_name admin.test; location / {{ return 200 \"ADMIN vhost $request_uri\\n\"; }} }}\n}}\n",
            d = dir.0.display()
        ),
    )
    .unwrap();
    let mut nginx = std::process::Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir.0)
        .spawn()
        .expect("nginx must be installed (tests/run.sh installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    let rl = Ringlb::start(&routed_config(
        addr,
        "",
        "[[listener.route]]\nhost = \"public.test\"\nupstream = \"app\"",
    ));
    let bypass = send(
        rl.addr,
        b"GET http://admin.test/secret HTTP/1.1\r\nHost: public.test\r\n\r\n",
    );
    let public = send(
        rl.addr,
        b"GET http://public.test/page HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    );
    // curl as a proxy client sends absolute-form with a matching Host.
    let curl = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "5", "-x"])
            .arg(format!("http://{}", rl.addr))
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let curl_admin = curl("http://admin.test/secret");
    let curl_public = curl("http://public.test/page");
    unsafe { libc::kill(nginx.id() as i32, libc::SIGTERM) };
    let _ = nginx.wait();

    assert_eq!(status(&bypass), 400, "{bypass}");
    assert!(!bypass.contains("ADMIN"), "{bypass}");
    assert_eq!(status(&curl_admin), 404, "{curl_admin}");
    assert!(!curl_admin.contains("ADMIN"), "{curl_admin}");
    // What nginx received is in its answer: origin-form `/page`, public vhost.
    assert_eq!(status(&public), 200, "{public}");
    assert!(public.ends_with("public vhost /page\n"), "{public}");
    assert!(
        curl_public.ends_with("public vhost /page\n"),
        "{curl_public}"
    );
}

// ---------------------------------------------------------------------------
// Limits

#[test]
fn long_request_target_is_414() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // The default limit is 8192 bytes, like nginx's 8k header buffers.
    let at = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "a".repeat(8191)
    );
    assert_eq!(status(&send(rl.addr, at.as_bytes())), 200);
    let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8192));
    let r = send(rl.addr, over.as_bytes());
    assert_eq!(status(&r), 414, "{}", &r[..r.len().min(200)]);
    // Refused while the request line is still arriving.
    let mut s = connect(rl.addr);
    s.write_all(format!("GET /{}", "b".repeat(9000)).as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(status(&String::from_utf8_lossy(&out)), 414);
    let got = requests(&seen);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with(&format!("GET /{} HTTP/1.1\r\n", "a".repeat(8191))));

    // Configurable.
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&routed_config(
        be.addr,
        "max_uri_bytes = 64",
        "upstream = \"app\"",
    ));
    let r = send(
        rl.addr,
        format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "c".repeat(64)).as_bytes(),
    );
    assert_eq!(status(&r), 414, "{r}");
    assert!(requests(&seen).is_empty());
}

const LIMITS: &str = "client_max_body_size = \"1k\"";
const LISTENER_LIMITS: &str = "upstream = \"app\"\nclient_max_body_size = 2000\n[[listener.route]]\npath_prefix = \"/big\"\nupstream = \"app\"\nclient_max_body_size = \"4k\"\n[[listener.route]]\npath_prefix = \"/any\"\nupstream = \"app\"\nclient_max_body_size = 0\n[[listener.route]]\npath_prefix = \"/small\"\nupstream = \"app\"\nclient_max_body_size = 10";

fn post(path: &str, len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', len));
    r
}

#[test]
fn content_length_over_client_max_body_size_is_413_without_reading_the_body() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&routed_config(be.addr, LIMITS, LISTENER_LIMITS));
    // Listener 2000 overrides [http] 1k; routes override the listener.
    let cases = [
        ("/", 2000, 200),
        ("/", 2001, 413),
        ("/big/x", 4096, 200),
        ("/big/x", 4097, 413),
        ("/any", 100_000, 200),
        ("/small", 10, 200),
        ("/small", 11, 413),
    ];
    let mut forwarded = 0;
    for (path, len, want) in cases {
        // Only the head is sent for a refused request: the answer must not
        // wait for (or need) the body.
        let raw = post(path, len);
        let r = if want == 413 {
            let head_len = find(&raw, b"\r\n\r\n").unwrap() + 4;
            let mut s = connect(rl.addr);
            s.write_all(&raw[..head_len]).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        } else {
            forwarded += 1;
            send(rl.addr, &raw)
        };
        assert_eq!(status(&r), want, "{path} {len}: {r}");
        if want == 413 {
            assert!(r.contains("Connection: close\r\n"), "{r}");
        }
    }
    let got = requests(&seen);
    assert_eq!(got.len(), forwarded, "{} requests", got.len());
    // `Expect: 100-continue` over the limit: 413, never a 100.
    let mut s = connect(rl.addr);
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    assert!(!r.contains("100 Continue"), "{r}");
    assert_eq!(requests(&seen).len(), forwarded);
}

/// A real client uploading more than the limit gets the 413 (not a reset).
#[test]
fn curl_upload_over_the_limit_gets_413() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&routed_config(be.addr, LIMITS, "upstream = \"app\""));
    let dir = tempdir::Dir::new("upload");
    let file = dir.0.join("body");
    std::fs::write(&file, vec![b'u'; 64 * 1024]).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}/upload", rl.addr))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "413",
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(requests(&seen).is_empty());
    assert!(seen.lock().unwrap().raw.is_empty());
}

/// A request refused before its body was read closes with a lingering
/// close, whatever refused it: a bad request line, a `Content-Length` over
/// the limit, or chunked framing that is bad in the bytes that came with
/// the head. A client that writes its whole body before reading (as most
/// do) then has every byte accepted and reads the answer, instead of
/// meeting a reset mid-upload (a broken pipe, and no answer at all).
#[test]
fn a_refused_request_lingers_so_a_client_still_sending_reads_the_answer() {
    let (be, seen) = recorder(ok_response);
    let rl = Ringlb::start(&routed_config(be.addr, LIMITS, "upstream = \"app\""));
    let cases: &[(&str, &[u8], u16)] = &[
        (
            "bad chunk size right after the head",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "bad chunk line ending right after the head",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
            400,
        ),
        (
            "chunk sizes over client_max_body_size",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1000000\r\n",
            413,
        ),
        (
            "bad request line",
            b"POST /\x01 HTTP/1.1\r\nHost: a\r\nContent-Length: 16777216\r\n\r\n",
            400,
        ),
        (
            "Content-Length over client_max_body_size",
            b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 16777216\r\n\r\n",
            413,
        ),
    ];
    // 16 MiB: more than loopback socket buffers hold, so all of it is
    // accepted only if ringlb keeps reading after its answer.
    let chunk = vec![b'j'; 64 * 1024];
    for (what, head, want) in cases {
        let mut s = connect(rl.addr);
        s.write_all(head).unwrap();
        for i in 0..256 {
            if let Err(e) = s.write_all(&chunk) {
                panic!("{what}: write {i} of 256 failed ({e}): closed without lingering");
            }
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        let r = String::from_utf8_lossy(&out);
        assert!(read.is_ok(), "{what}: {read:?} after {r}");
        assert_eq!(status(&r), *want, "{what}: {r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{what}: {r}");
        assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "{what}: {r}");
    }
    assert!(requests(&seen).is_empty(), "{:?}", requests(&seen));
    assert!(seen.lock().unwrap().raw.is_empty());
}

fn chunked_head(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
}

#[test]
fn chunked_body_over_client_max_body_size() {
    let (be, seen) = recorder(ok_response);
    // Streaming (request buffering off): the limit is also enforced on a
    // body that is already flowing upstream.
    let http = format!("{LIMITS}\nrequest_buffering = false");
    let rl = Ringlb::start(&routed_config(be.addr, &http, "upstream = \"app\""));
    // All of it buffered with the head: 413 before anything goes upstream.
    let mut raw = chunked_head("/whole").into_bytes();
    raw.extend_from_slice(format!("400\r\n{}\r\n1\r\nz\r\n0\r\n\r\n", "y".repeat(1024)).as_bytes());
    let r = send(rl.addr, &raw);
    assert_eq!(status(&r), 413, "{r}");
    assert!(seen.lock().unwrap().raw.is_empty());
    // Exactly at the limit is fine, and arrives as sent.
    let mut raw = chunked_head("/exact").into_bytes();
    let body = format!("400\r\n{}\r\n0\r\n\r\n", "y".repeat(1024));
    raw.extend_from_slice(body.as_bytes());
    let r = send(rl.addr, &raw);
    assert_eq!(status(&r), 200, "{r}");
    let got = requests(&seen);
    assert_eq!(got.len(), 1);
    assert!(got[0].ends_with(&body), "{:?}", &got[0][..100]);

    // Streamed: the first chunk goes upstream, the size line that crosses
    // the limit does not; the client gets 413, the upstream connection is
    // dropped with its body cut short, and nothing more is forwarded.
    let mut s = connect(rl.addr);
    s.write_all(chunked_head("/stream").as_bytes()).unwrap();
    s.write_all(b"200\r\n").unwrap();
    s.write_all("s".repeat(512).as_bytes()).unwrap();
    s.write_all(b"\r\n").unwrap();
    eventually(&seen, "the first chunk", |s| {
        find(&s.raw, &[b's'; 512]).is_some()
    });
    s.write_all(format!("201\r\n{}\r\n0\r\n\r\n", "t".repeat(0x201)).as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert_eq!(status(&r), 413, "{r}");
    eventually(&seen, "the upstream connection closed", |s| {
        s.cut_short == 1
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 1, "only /exact completed");
    assert!(find(&seen.raw, b"201\r\n").is_none());
    assert!(find(&seen.raw, b"ttt").is_none());
}

// ---------------------------------------------------------------------------
// Trailers

const TRAILERS: &str = "X-Checksum: abc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: evil.test\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\nAuthorization: Basic x\r\nServer-Timing: db;dur=1\r\n";

fn assert_trailers_filtered(text: &str) {
    let trailer_at = text.rfind("\r\n0\r\n").expect("last chunk") + 5;
    let trailers = &text[trailer_at..];
    assert!(trailers.contains("X-Checksum: abc\r\n"), "{trailers:?}");
    assert!(
        trailers.contains("Server-Timing: db;dur=1\r\n"),
        "{trailers:?}"
    );
    for bad in [
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Connection",
        "X-Forwarded-For",
        "Authorization",
    ] {
        assert!(!trailers.contains(bad), "{bad} crossed: {trailers:?}");
    }
    assert!(trailers.ends_with("\r\n\r\n"), "{trailers:?}");
}

#[test]
fn request_trailers_lose_forbidden_fields() {
    let (be, seen) = recorder(ok_response);
    // Request buffering off, so that the second body is streamed.
    let cfg = simple_config(&[be.addr], "").replacen(
        "[[listener]]",
        "[http]\nrequest_buffering = false\n\n[[listener]]",
        1,
    );
    let rl = Ringlb::start(&cfg);
    // Buffered with the head (the body is forwarded from the first read).
    let raw = format!("{}5\r\nhello\r\n0\r\n{TRAILERS}\r\n", chunked_head("/one"));
    let mut s = connect(rl.addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).expect("response");
    assert_eq!(status(&r), 200, "{r}");
    // Streamed: the trailer section arrives in pieces, split inside names.
    s.write_all(chunked_head("/two").as_bytes()).unwrap();
    s.write_all(b"5\r\nhello\r\n").unwrap();
    eventually(&seen, "the streamed head", |s| {
        find(&s.raw, b"/two").is_some()
    });
    let rest = format!("0\r\n{TRAILERS}\r\n");
    for piece in rest.as_bytes().chunks(7) {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let r = read_response(&mut s, &mut buf, false).expect("response");
    assert_eq!(status(&r), 200, "{r}");
    let got = requests(&seen);
    assert_eq!(got.len(), 2, "{got:?}");
    for g in &got {
        assert!(g.contains("5\r\nhello\r\n0\r\n"), "{g:?}");
        assert_trailers_filtered(g);
    }
}

/// Reads one chunked response from `s` (buffered in `buf`), up to the end
/// of its trailer section.
fn read_chunked_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let start = Instant::now();
    let end = loop {
        if let Some(e) =
            find(buf, b"\r\n\r\n").and_then(|h| chunked_end(&buf[h + 2..]).map(|t| h + 2 + t))
        {
            break e;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).unwrap();
        assert!(
            n > 0 && start.elapsed() < Duration::from_secs(5),
            "closed early: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let resp: Vec<u8> = buf.drain(..end).collect();
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn response_trailers_lose_forbidden_fields() {
    let (be, seen) = recorder(|_| {
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{TRAILERS}\r\n")
            .into_bytes()
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
            .unwrap();
        let text = read_chunked_response(&mut s, &mut buf);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("5\r\nhello\r\n0\r\n"), "{text}");
        assert_trailers_filtered(&text);
    }
    // The connection stayed usable: both requests on one connection.
    assert_eq!(requests(&seen).len(), 2);
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Sends `req` twice on one keep-alive connection and returns each chunked
/// response's head and body; the connection must stay open and clean (no
/// `Connection: close`, nothing after the second response).
fn chunked_twice_on_one_connection(addr: SocketAddr, req: &[u8]) -> Vec<(String, String)> {
    let mut s = connect(addr);
    let mut buf = Vec::new();
    let out = (0..2)
        .map(|_| {
            s.write_all(req).unwrap();
            let text = read_chunked_response(&mut s, &mut buf);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(!head.contains("Connection: close"), "{text}");
            (head.to_string(), body.to_string())
        })
        .collect();
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    out
}

/// The request lines the backend received, in order.
fn request_lines(seen: &Shared) -> Vec<String> {
    requests(seen)
        .iter()
        .map(|r| request_line(r.as_bytes()))
        .collect()
}

/// `Trailer` announces the trailer fields: it reaches an HTTP/1.1 client
/// with them (as nginx passes it), and an HTTP/1.0 client, which gets the
/// body de-chunked and so no trailers, gets neither.
#[test]
fn the_trailer_field_reaches_the_client_with_the_trailers() {
    let (be, seen) = recorder(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, Server-Timing\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=1\r\n\r\n"
            .to_vec()
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let req = b"GET /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n";
    for (head, body) in chunked_twice_on_one_connection(rl.addr, req) {
        assert!(
            head.contains("\r\nTrailer: X-Checksum, Server-Timing\r\n"),
            "{head}"
        );
        assert_eq!(
            body,
            "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=1\r\n\r\n"
        );
    }
    let r = send(rl.addr, b"GET /t10 HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body_of(&r), "hello", "{r}");
    assert!(r.contains("\r\nX-A: 1\r\n"), "{r}");
    for gone in [
        "Trailer",
        "X-Checksum",
        "Server-Timing",
        "Transfer-Encoding",
    ] {
        assert!(!r.contains(gone), "{gone}: {r}");
    }
    assert_eq!(
        request_lines(&seen),
        ["GET /t HTTP/1.1", "GET /t HTTP/1.1", "GET /t10 HTTP/1.1"]
    );
    // `TE: trailers` is hop-by-hop: the backend never sees it.
    assert!(requests(&seen).iter().all(|r| !r.contains("TE:")));
}

/// A backend's chunk framing may end its lines with a bare LF (nginx reads
/// it so): the HTTP/1.1 client gets the body re-framed with CRLF on a
/// connection that stays open, the HTTP/1.0 client the data alone.
#[test]
fn bare_lf_chunk_lines_from_a_backend_reach_the_client_as_crlf() {
    let (be, seen) = recorder(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\nhello\n6\n world\n0\nX-Sum: 11\n\n"
            .to_vec()
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    for (head, body) in
        chunked_twice_on_one_connection(rl.addr, b"GET /lf HTTP/1.1\r\nHost: a\r\n\r\n")
    {
        assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
        assert_eq!(body, "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n");
    }
    let r = send(rl.addr, b"GET /lf10 HTTP/1.0\r\nHost: a\r\n\r\n");
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body_of(&r), "hello world", "{r}");
    assert!(
        !r.contains("Transfer-Encoding") && !r.contains("X-Sum"),
        "{r}"
    );
    assert_eq!(
        request_lines(&seen),
        ["GET /lf HTTP/1.1", "GET /lf HTTP/1.1", "GET /lf10 HTTP/1.1"]
    );
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
}

// ---------------------------------------------------------------------------
// Responses: duplicate Content-Length, Date

#[test]
fn duplicate_content_length_reaches_aiohttp_as_one() {
    let (be, seen) = recorder(|req| {
        if req.starts_with("GET /twice ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello".to_vec()
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let script = r#"
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        for path in ("/twice", "/list", "/twice"):
            async with s.get(sys.argv[1] + path) as r:
                body = await r.read()
                print(r.status, r.headers.getall("Content-Length"), body.decode())
asyncio.run(main())
"#;
    let stdout = python_ok(&["-c", script, &format!("http://{}", rl.addr)]);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for line in stdout.lines() {
        assert_eq!(line, "200 ['5'] hello");
    }
    let got = requests(&seen);
    assert_eq!(got.len(), 3, "{got:?}");
    // And on the wire: one field.
    let r = send(
        rl.addr,
        b"GET /twice HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("Content-Length").count(), 1, "{r}");
    assert!(
        r.contains("\r\nContent-Length: 5\r\n") && r.ends_with("hello"),
        "{r}"
    );
}

fn date_of(resp: &str) -> Vec<&str> {
    resp.split("\r\n\r\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("Date: "))
        .collect()
}

/// The value is an IMF-fixdate within a few seconds of `[before, after]`,
/// as coreutils `date` formats those instants.
fn assert_current_date(value: &str, before: u64, after: u64) {
    let out = std::process::Command::new("date")
        .env("LC_ALL", "C")
        .arg("-u")
        .arg("-f")
        .arg("-")
        .arg("+%a, %d %b %Y %H:%M:%S GMT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let times: String = (before.saturating_sub(5)..=after + 1)
                .map(|t| format!("@{t}\n"))
                .collect();
            c.stdin.take().unwrap().write_all(times.as_bytes())?;
            c.wait_with_output()
        })
        .expect("coreutils date");
    let expected = String::from_utf8_lossy(&out.stdout);
    assert!(
        expected.lines().any(|l| l == value),
        "Date {value:?} is not one of the current instants {expected:?}"
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn date_on_own_and_proxied_responses() {
    let (be, seen) = recorder(|req| {
        if req.starts_with("GET /dated ") {
            b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok"
                .to_vec()
        } else {
            ok_response(req)
        }
    });
    let rl = Ringlb::start(&routed_config(
        be.addr,
        "",
        "[[listener.route]]\nhost = \"a\"\nupstream = \"app\"",
    ));
    let before = unix_now();
    let own_404 = send(rl.addr, b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n");
    let own_400 = send(rl.addr, b"GET / HTTP/1.1\r\n\r\n");
    let undated = send(
        rl.addr,
        b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let dated = send(
        rl.addr,
        b"GET /dated HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let after = unix_now();
    assert_eq!(status(&own_404), 404, "{own_404}");
    assert_eq!(status(&own_400), 400, "{own_400}");
    assert_eq!(status(&undated), 200, "{undated}");
    for r in [&own_404, &own_400, &undated] {
        let d = date_of(r);
        assert_eq!(d.len(), 1, "{r}");
        assert_current_date(d[0], before, after);
    }
    // The backend's own Date is kept, not doubled.
    assert_eq!(
        date_of(&dated),
        ["Sun, 06 Nov 1994 08:49:37 GMT"],
        "{dated}"
    );
    assert_eq!(requests(&seen).len(), 2);
}
