//! Idle keep-alive connections hold no receive buffer, and still work.
//!
//! The real binary, real sockets: N clients each send one request and stay
//! idle; `/stats` (`connections.buffers_in_use`, the shard pools' count of
//! receive buffers held by connections) must reach 0 while all N wait,
//! and be non-zero while a connection holds a partial head (so the figure
//! is not a constant). Then every idle connection sends a second request
//! and gets it answered, the backend seeing each request exactly once;
//! pipelined requests are answered in order; the same over TLS (Python's
//! ssl client, certificate from the openssl CLI).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const N: usize = 200;

struct Setup {
    rl: Ringlb,
    admin: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _be: Backend,
}

fn start(listener_extra: &str) -> Setup {
    start_with("", listener_extra)
}

/// `http`: lines of an `[http]` section.
fn start_with(http: &str, listener_extra: &str) -> Setup {
    let (be, seen) = recording_backend();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n[admin]\nlisten = \"{admin}\"\n\n[http]\n{http}\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n{listener_extra}\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, admin);
    Setup {
        rl,
        admin,
        seen,
        _be: be,
    }
}

fn conn_stats(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = admin_get(admin, "/stats");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"].clone()
}

/// Polls `/stats` (bounded: 20 s) until `want` holds; returns the last
/// `connections` object either way.
fn wait_stats(admin: SocketAddr, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let c = conn_stats(admin);
        if want(&c) || start.elapsed() > Duration::from_secs(20) {
            return c;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: idle.test\r\n\r\n").into_bytes()
}

#[test]
fn idle_connections_hold_no_receive_buffer_and_still_answer() {
    let s = start("");
    let mut conns = Vec::new();
    let mut bufs = Vec::new();
    for i in 0..N {
        let mut c = connect(s.rl.addr);
        c.write_all(&get(&format!("/first/{i}"))).unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut c, &mut buf, false).expect("first response");
        assert_eq!(status_of(&r), 200, "{r}");
        conns.push(c);
        bufs.push(buf);
    }
    let c = wait_stats(s.admin, |c| {
        c["waiting"] == N as u64 && c["buffers_in_use"] == 0 && c["parked"] == N as u64
    });
    assert_eq!(c["waiting"], N as u64, "all idle: {c}");
    // Plain-text idle connections wait outside any task (data/idle.rs).
    assert_eq!(c["parked"], N as u64, "all parked: {c}");
    assert_eq!(
        c["buffers_in_use"], 0,
        "{N} idle connections hold buffers: {c}"
    );

    // The figure is not constant: a connection with half a head holds its
    // receive buffer.
    let mut partial = connect(s.rl.addr);
    partial
        .write_all(b"GET /partial HTTP/1.1\r\nHost: idle")
        .unwrap();
    let c = wait_stats(s.admin, |c| c["buffers_in_use"].as_u64() >= Some(1));
    assert!(
        c["buffers_in_use"].as_u64() >= Some(1),
        "a half-read head holds a buffer: {c}"
    );
    partial.write_all(b".test\r\n\r\n").unwrap();
    let mut pbuf = Vec::new();
    let r = read_response(&mut partial, &mut pbuf, false).expect("partial completed");
    assert_eq!(status_of(&r), 200, "{r}");

    // After the idle period every connection still answers.
    for (i, (c, buf)) in conns.iter_mut().zip(bufs.iter_mut()).enumerate() {
        c.write_all(&get(&format!("/second/{i}"))).unwrap();
        let r = read_response(c, buf, false).expect("second response after idle");
        assert_eq!(status_of(&r), 200, "{r}");
        assert_eq!(body_of(&r), "ok");
    }
    let seen = s.seen.lock().unwrap().clone();
    for i in 0..N {
        for phase in ["first", "second"] {
            let line = format!("GET /{phase}/{i} HTTP/1.1\r\n");
            let n = seen.iter().filter(|r| r.starts_with(&line)).count();
            assert_eq!(n, 1, "backend saw /{phase}/{i} {n} times");
        }
    }
    assert_eq!(seen.len(), 2 * N + 1, "backend requests");
    drop(conns);
    drop(partial);
    // `buffers_in_use` is published by the shard's tick, `active` at once.
    let c = wait_stats(s.admin, |c| {
        c["active"] == 0 && c["buffers_in_use"] == 0 && c["parked"] == 0
    });
    assert_eq!(c["active"], 0, "{c}");
    assert_eq!(c["parked"], 0, "{c}");
    assert_eq!(c["waiting"], 0, "{c}");
    assert_eq!(
        c["buffers_in_use"], 0,
        "closed connections hold nothing: {c}"
    );
}

#[test]
fn pipelined_requests_after_idle_are_answered_in_order() {
    let s = start("");
    let mut c = connect(s.rl.addr);
    let mut buf = Vec::new();
    c.write_all(&get("/warm")).unwrap();
    assert_eq!(
        status_of(&read_response(&mut c, &mut buf, false).unwrap()),
        200
    );
    let st = wait_stats(s.admin, |c| c["waiting"] == 1 && c["buffers_in_use"] == 0);
    assert_eq!(st["buffers_in_use"], 0, "{st}");
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(&get(&format!("/pipe/{i}")));
    }
    c.write_all(&batch).unwrap();
    for _ in 0..5 {
        let r = read_response(&mut c, &mut buf, false).expect("pipelined response");
        assert_eq!(status_of(&r), 200, "{r}");
    }
    let seen = s.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.split(' ').nth(1))
        .filter(|p| p.starts_with("/pipe/"))
        .collect();
    assert_eq!(
        paths,
        ["/pipe/0", "/pipe/1", "/pipe/2", "/pipe/3", "/pipe/4"]
    );
}

/// Python's ssl client: N connections, one GET each, then idle until told
/// on stdin; then a second GET on each. Prints a line per phase.
/// Python's ssl client: `get(sock, path)` → "STATUS:BODY" or "closed".
const TLS_GET: &str = r#"
import socket, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def get(s, path):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: idle.test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b" ")[1].decode() + ":" + body.decode()
"#;

/// `n` TLS connections: one request each, then (after a line on stdin)
/// a second one each.
const TLS_CLIENT: &str = r#"
conns = []
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    conns.append(s)
print(" ".join(get(s, f"/tls1/{i}") for i, s in enumerate(conns)), flush=True)
sys.stdin.readline()
print(" ".join(get(s, f"/tls2/{i}") for i, s in enumerate(conns)), flush=True)
"#;

#[test]
fn tls_idle_connections_hold_no_receive_buffer_and_still_answer() {
    let pki = pki::Pki::server("idle.test");
    let s = start(&tls_listener(&pki));
    let n = 20;
    let (mut py, mut out) = tls_first_round(&s, n, TLS_CLIENT);
    let c = wait_stats(s.admin, |c| {
        c["waiting"] == n as u64 && c["buffers_in_use"] == 0 && c["parked"] == n as u64
    });
    assert_eq!(c["waiting"], n as u64, "{c}");
    assert_eq!(
        c["buffers_in_use"], 0,
        "{n} idle TLS connections hold buffers: {c}"
    );
    // Idle TLS connections wait outside their task too.
    assert_eq!(c["parked"], n as u64, "{c}");
    py.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line2 = String::new();
    out.read_line(&mut line2).unwrap();
    let second: Vec<&str> = line2.split_whitespace().collect();
    assert_eq!(second.len(), n, "second round: {line2}");
    assert!(
        second.iter().all(|r| *r == "200:ok"),
        "second round: {line2}"
    );
    let _ = py.wait();
    let seen = s.seen.lock().unwrap().clone();
    for i in 0..n {
        for phase in ["tls1", "tls2"] {
            let l = format!("GET /{phase}/{i} HTTP/1.1\r\n");
            assert_eq!(
                seen.iter().filter(|r| r.starts_with(&l)).count(),
                1,
                "/{phase}/{i}"
            );
        }
    }
}

/// Starts `script` (after [`TLS_GET`]) with `n` TLS connections to `s`
/// and checks its first round: `n` answers `200:ok`.
fn tls_first_round(
    s: &Setup,
    n: usize,
    script: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut py = Command::new(python())
        .args([
            "-c",
            &format!("{TLS_GET}{script}"),
            &s.rl.addr.port().to_string(),
            &n.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let first: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(first.len(), n, "first round: {line}");
    assert!(first.iter().all(|r| *r == "200:ok"), "first round: {line}");
    (py, out)
}

/// Reads until the proxy closes the connection; `true` if it did (EOF or
/// reset) within 20 s, with nothing sent.
fn closed_by_proxy(c: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 64];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes from an idle connection: {:?}", &b[..n]),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Opens `n` connections that each do one GET and go idle.
fn idle_clients(s: &Setup, n: usize, tag: &str) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|i| {
            let mut c = connect(s.rl.addr);
            let mut buf = Vec::new();
            c.write_all(&get(&format!("/{tag}/{i}"))).unwrap();
            let r = read_response(&mut c, &mut buf, false).expect("first response");
            assert_eq!(status_of(&r), 200, "{r}");
            c
        })
        .collect()
}

#[test]
fn parked_connections_close_when_the_client_closes_or_keepalive_times_out() {
    let s = start_with("keepalive_timeout = \"2s\"\n", "");
    let n = 10;
    let mut conns = idle_clients(&s, n, "kt");
    let c = wait_stats(s.admin, |c| c["parked"] == n as u64);
    assert_eq!(c["parked"], n as u64, "{c}");
    // Three clients close while parked: closed and counted, nothing leaks.
    conns.truncate(n - 3);
    // `parked` is published by the shard's tick, `active` at once.
    let c = wait_stats(s.admin, |c| {
        c["active"] == (n - 3) as u64 && c["parked"] == (n - 3) as u64
    });
    assert_eq!(c["active"], (n - 3) as u64, "client closes: {c}");
    assert_eq!(c["parked"], (n - 3) as u64, "{c}");
    assert_eq!(c["waiting"], (n - 3) as u64, "{c}");
    // The rest are closed by the proxy at keepalive_timeout.
    for c in &mut conns {
        assert!(
            closed_by_proxy(c),
            "parked connection not closed at keepalive_timeout"
        );
    }
    let c = wait_stats(s.admin, |c| c["active"] == 0 && c["parked"] == 0);
    assert_eq!(c["active"], 0, "{c}");
    assert_eq!(c["parked"], 0, "{c}");
    assert_eq!(c["waiting"], 0, "{c}");
    assert_eq!(s.seen.lock().unwrap().len(), n, "backend requests");
}

#[test]
fn stopping_closes_parked_connections_and_loses_no_request() {
    let mut s = start("");
    let n = 10;
    let mut conns = idle_clients(&s, n, "drain");
    let c = wait_stats(s.admin, |c| c["parked"] == n as u64);
    assert_eq!(c["parked"], n as u64, "{c}");
    s.rl.signal(libc::SIGTERM);
    for c in &mut conns {
        assert!(closed_by_proxy(c), "parked connection not closed on stop");
    }
    let st = s.rl.wait_exit(Duration::from_secs(20));
    assert!(st.is_some_and(|st| st.success()), "exit: {st:?}");
    assert_eq!(s.seen.lock().unwrap().len(), n, "backend requests");
}

/// A `requests` keep-alive session with pauses: every request is answered
/// on the same connection, resumed from the parked set each time.
const SESSION_CLIENT: &str = r#"
import requests, sys, time
port = int(sys.argv[1])
s = requests.Session()
out = []
for i in range(4):
    r = s.get(f"http://127.0.0.1:{port}/session/{i}", timeout=10)
    out.append(f"{r.status_code}:{r.text}")
    time.sleep(0.3)
print(" ".join(out), flush=True)
"#;

#[test]
fn a_keepalive_session_with_pauses_is_resumed_on_one_connection() {
    let s = start("");
    // The start-up probe's connection (common::Ringlb::start) is gone first.
    let before = wait_stats(s.admin, |c| c["active"] == 0 && c["accepted"] == 1)["accepted"]
        .as_u64()
        .unwrap();
    let text = python_ok(&["-c", SESSION_CLIENT, &s.rl.addr.port().to_string()]);
    assert_eq!(text.trim(), "200:ok 200:ok 200:ok 200:ok");
    assert_one_session(&s, before);
}

/// The 4 requests of a session client came on one new connection (the
/// `accepted` count was `before`) and reached the backend once each.
fn assert_one_session(s: &Setup, before: u64) {
    let c = conn_stats(s.admin);
    assert_eq!(
        c["accepted"].as_u64(),
        Some(before + 1),
        "one connection for the session: {c}"
    );
    assert_eq!(c["requests"], 4, "{c}");
    let seen = s.seen.lock().unwrap().clone();
    for i in 0..4 {
        let l = format!("GET /session/{i} HTTP/1.1\r\n");
        assert_eq!(
            seen.iter().filter(|r| r.starts_with(&l)).count(),
            1,
            "/session/{i}"
        );
    }
    assert_eq!(seen.len(), 4);
}

fn tls_listener(pki: &pki::Pki) -> String {
    format!(
        "[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        pki.file("server.pem"),
        pki.file("server.key")
    )
}

/// `n` TLS connections: one request each; then, after a line on stdin,
/// waits for each to be closed by the proxy and says how: "notify" (a
/// close_notify, then the end), "no-notify" (the end without one),
/// "data", "reset" or "timeout".
const TLS_CLOSE_CLIENT: &str = r#"
conns = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                         suppress_ragged_eofs=False) for _ in range(n)]
print(" ".join(get(s, f"/close/{i}") for i, s in enumerate(conns)), flush=True)
sys.stdin.readline()
out = []
for s in conns:
    try:
        out.append("notify" if s.recv(64) == b"" else "data")
    except ssl.SSLEOFError:
        out.append("no-notify")
    except ConnectionResetError:
        out.append("reset")
    except socket.timeout:
        out.append("timeout")
print(" ".join(out), flush=True)
"#;

/// Runs [`TLS_CLOSE_CLIENT`] against `s` with `n` connections: checks the
/// first round, waits until all `n` are parked, calls `then`, and returns
/// how each connection was closed.
fn tls_closes(s: &mut Setup, n: usize, then: impl FnOnce(&mut Setup)) -> Vec<String> {
    let (mut py, mut out) = tls_first_round(s, n, TLS_CLOSE_CLIENT);
    let c = wait_stats(s.admin, |c| c["parked"] == n as u64);
    assert_eq!(c["parked"], n as u64, "{c}");
    then(s);
    py.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line2 = String::new();
    out.read_line(&mut line2).unwrap();
    let _ = py.wait();
    line2.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn parked_tls_connections_get_close_notify_at_keepalive_timeout() {
    let pki = pki::Pki::server("idle.test");
    let mut s = start_with("keepalive_timeout = \"4s\"\n", &tls_listener(&pki));
    let n = 10;
    let how = tls_closes(&mut s, n, |_| {});
    assert_eq!(how, vec!["notify"; n], "how the proxy closed");
    let c = wait_stats(s.admin, |c| c["active"] == 0 && c["parked"] == 0);
    assert_eq!(c["active"], 0, "{c}");
    assert_eq!(c["parked"], 0, "{c}");
    assert_eq!(s.seen.lock().unwrap().len(), n, "backend requests");
}

#[test]
fn stopping_closes_parked_tls_connections_with_close_notify() {
    let pki = pki::Pki::server("idle.test");
    let mut s = start(&tls_listener(&pki));
    let n = 10;
    let how = tls_closes(&mut s, n, |s| s.rl.signal(libc::SIGTERM));
    assert_eq!(how, vec!["notify"; n], "how the proxy closed");
    let st = s.rl.wait_exit(Duration::from_secs(20));
    assert!(st.is_some_and(|st| st.success()), "exit: {st:?}");
    let seen = s.seen.lock().unwrap().clone();
    for i in 0..n {
        let l = format!("GET /close/{i} HTTP/1.1\r\n");
        assert_eq!(
            seen.iter().filter(|r| r.starts_with(&l)).count(),
            1,
            "/close/{i}"
        );
    }
    assert_eq!(seen.len(), n, "backend requests");
}

/// A `requests` HTTPS keep-alive session with pauses: before each request
/// after the first, the connection is seen parked (`/stats`), so every
/// request is served by a connection resumed from the parked set.
const TLS_SESSION_CLIENT: &str = r#"
import json, requests, sys, time, urllib.request
port, admin, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def parked():
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=10) as r:
        return json.load(r)["connections"]["parked"]
s = requests.Session()
out = []
for i in range(4):
    if i > 0:
        deadline = time.monotonic() + 20
        while parked() != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        out.append(f"parked={parked()}")
    r = s.get(f"https://127.0.0.1:{port}/session/{i}", timeout=10, verify=ca)
    out.append(f"{r.status_code}:{r.text}")
    time.sleep(0.3)
print(" ".join(out), flush=True)
"#;

#[test]
fn a_tls_keepalive_session_with_pauses_is_resumed_on_one_connection() {
    let pki = pki::Pki::new();
    pki.ip_leaf("server", &["127.0.0.1"]);
    let s = start(&tls_listener(&pki));
    let before = wait_stats(s.admin, |c| c["active"] == 0 && c["accepted"] == 1)["accepted"]
        .as_u64()
        .unwrap();
    let text = python_ok(&[
        "-c",
        TLS_SESSION_CLIENT,
        &s.rl.addr.port().to_string(),
        &s.admin.to_string(),
        &pki.file("ca.pem"),
    ]);
    assert_eq!(
        text.trim(),
        "200:ok parked=1 200:ok parked=1 200:ok parked=1 200:ok"
    );
    assert_one_session(&s, before);
}
