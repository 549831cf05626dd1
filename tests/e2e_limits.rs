//! Timeouts, limits and balancing methods end to end, through the real
//! binary, with scripted backends that count what they received.
//!
//! Timeouts are configured short (300 ms); tests assert outcomes (status,
//! which server, what the backend saw), never elapsed times. Waits are only
//! generous bounds for "it eventually happens".

mod common;

use common::{backend, connect, read_request, read_response, Backend, Ringlb};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn one_upstream(http: &str, upstream: &str, servers: &[SocketAddr], per_server: &str) -> String {
    let mut s = format!(
        "[runtime]\nworkers = 1\n\n[http]\n{http}\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\n[upstream.app]\n{upstream}\n"
    );
    for a in servers {
        s.push_str(&format!(
            "[[upstream.app.server]]\naddress = \"{a}\"\n{per_server}\n"
        ));
    }
    s
}

/// Reads whatever arrives until EOF, reset, or `limit`; returns the bytes
/// and whether the peer closed (EOF or reset) within `limit`.
fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut tmp = [0u8; 65536];
    while start.elapsed() < limit {
        match s.read(&mut tmp) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// A backend that records every complete request it read, and counts
/// connections that ended without one.
struct Recorder {
    b: Backend,
    complete: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn recorder(respond: &'static [u8]) -> Recorder {
    let complete = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&complete);
    let b = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            c.lock().unwrap().push(req);
            if s.write_all(respond).is_err() {
                return;
            }
        }
    });
    Recorder { b, complete }
}

// ---- client-side timeouts ------------------------------------------------

#[test]
fn slow_head_gets_408_and_never_reaches_the_backend() {
    let r = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&one_upstream(
        "client_header_timeout = \"300ms\"",
        "",
        &[r.b.addr],
        "",
    ));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Partial: ")
        .unwrap();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out);
    assert!(closed, "connection still open after 20 s; got {text:?}");
    assert_eq!(status_of(&text), 408, "{text:?}");
    assert_eq!(
        r.b.conns.load(Ordering::SeqCst),
        0,
        "the backend was contacted"
    );
    // A whole head trickled in quickly still works.
    let mut s = connect(rl.addr);
    for part in [&b"GET /ok HTTP/1.1\r\n"[..], b"Host: a\r\n", b"\r\n"] {
        s.write_all(part).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    let resp = read_response(&mut s, &mut Vec::new(), false).expect("a response");
    assert_eq!(status_of(&resp), 200, "{resp}");
}

#[test]
fn stalled_request_body_is_cut_by_client_body_timeout() {
    let r = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&one_upstream(
        "client_body_timeout = \"300ms\"",
        "",
        &[r.b.addr],
        "",
    ));
    let mut s = connect(rl.addr);
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n0123456789")
        .unwrap();
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out);
    assert!(closed, "connection still open after 20 s; got {text:?}");
    // No 2xx for a request whose body never arrived (408 or nothing).
    assert!(out.is_empty() || status_of(&text) == 408, "{text:?}");
    // The backend never got a complete request.
    thread::sleep(Duration::from_millis(200));
    assert!(
        r.complete.lock().unwrap().is_empty(),
        "backend got a complete request"
    );
}

#[test]
fn client_not_reading_the_response_is_cut_and_the_upstream_released() {
    // The backend streams 256 MB and notes when its write fails.
    let write_failed = Arc::new(AtomicBool::new(false));
    let wf = Arc::clone(&write_failed);
    let b = backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_none() {
            return;
        }
        let total: usize = 256 << 20;
        if s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes())
            .is_err()
        {
            wf.store(true, Ordering::SeqCst);
            return;
        }
        let chunk = vec![b'x'; 65536];
        for _ in 0..total / chunk.len() {
            if s.write_all(&chunk).is_err() {
                wf.store(true, Ordering::SeqCst);
                return;
            }
        }
    });
    let rl = Ringlb::start(&one_upstream(
        "client_body_timeout = \"300ms\"",
        "",
        &[b.addr],
        "",
    ));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&rl.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // Read a little, then stop reading.
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    while !write_failed.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        write_failed.load(Ordering::SeqCst),
        "ringlb kept the upstream connection of a client that stopped reading"
    );
    // The client's connection was closed before the whole body.
    let (rest, closed) = read_until_close(&mut s, Duration::from_secs(20));
    assert!(closed, "client connection still open");
    assert!(
        (n + rest.len()) < (256 << 20),
        "the whole body arrived anyway"
    );
    // ringlb still serves.
    let mut s = connect(rl.addr);
    s.write_all(b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let head = read_response(&mut s, &mut buf, true).expect("a response");
    assert_eq!(status_of(&head), 200, "{head}");
}

// ---- upstream-side timeouts ----------------------------------------------

/// Fills the accept queue of a listener with backlog 1 so further SYNs are
/// dropped: a connect to it hangs (a local blackhole).
struct Blackhole {
    addr: SocketAddr,
    _l: socket2::Socket,
    _fill: Vec<TcpStream>,
}

fn blackhole() -> Blackhole {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(1).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..64 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fill.push(s),
            Err(_) => {
                return Blackhole {
                    addr,
                    _l: l,
                    _fill: fill,
                }
            }
        }
    }
    panic!("the accept queue never filled: cannot make a blackhole");
}

#[test]
fn connect_timeout_gives_504() {
    let bh = blackhole();
    let rl = Ringlb::start(&one_upstream(
        "",
        "connect_timeout = \"300ms\"\nretries = 0",
        &[bh.addr],
        "max_fails = 0",
    ));
    for _ in 0..2 {
        let mut s = connect(rl.addr);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let resp = read_response(&mut s, &mut Vec::new(), false).expect("a response");
        assert_eq!(status_of(&resp), 504, "{resp}");
    }
}

#[test]
fn read_timeout_gives_504_and_the_post_is_sent_once() {
    // Reads requests, never answers (holds the connection 30 s).
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&seen);
    let b = backend(move |mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_some() {
            s2.fetch_add(1, Ordering::SeqCst);
        }
        thread::sleep(Duration::from_secs(30));
    });
    let rl = Ringlb::start(&one_upstream(
        "",
        "read_timeout = \"300ms\"",
        &[b.addr],
        "max_fails = 0",
    ));
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /once HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let resp = read_response(&mut s, &mut Vec::new(), false).expect("a response");
    assert_eq!(status_of(&resp), 504, "{resp}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the POST reached the backend {} times",
        seen.load(Ordering::SeqCst)
    );
}

#[test]
fn upstream_not_reading_the_body_is_cut_by_send_timeout() {
    // Reads the head only, then neither reads nor answers.
    let b = backend(move |mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        thread::sleep(Duration::from_secs(30));
    });
    let rl = Ringlb::start(&one_upstream(
        "client_max_body_size = 0",
        "send_timeout = \"300ms\"\nread_timeout = \"60s\"",
        &[b.addr],
        "max_fails = 0",
    ));
    let mut s = connect(rl.addr);
    let total: usize = 64 << 20;
    s.write_all(
        format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'y'; 65536];
        for _ in 0..total / chunk.len() {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (out, closed) = read_until_close(&mut s, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out);
    assert!(
        closed || !out.is_empty(),
        "no answer and still open after 30 s"
    );
    assert_eq!(status_of(&text), 504, "client got {text:?}");
    let _ = s.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
}

// ---- max_connections -----------------------------------------------------

#[test]
fn max_connections_pauses_accept_then_resumes() {
    let b = common::fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&one_upstream(
        "max_connections = 4\nkeepalive_timeout = \"60s\"",
        "",
        &[b.addr],
        "",
    ));
    let get = |s: &mut TcpStream| -> Option<String> {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").ok()?;
        read_response(s, &mut Vec::new(), false)
    };
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(rl.addr);
            assert_eq!(get(&mut s).map(|r| status_of(&r)), Some(200));
            s
        })
        .collect();
    // The 5th connects (kernel backlog) but is not served while 4 are open.
    let mut fifth = connect(rl.addr);
    fifth
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    fifth
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut tmp = [0u8; 256];
    match fifth.read(&mut tmp) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("5th connection served at max_connections = 4: {other:?}"),
    }
    // Closing one lets it in.
    drop(held.pop());
    fifth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let resp = read_response(&mut fifth, &mut Vec::new(), false).expect("served after a close");
    assert_eq!(status_of(&resp), 200, "{resp}");
    // The held ones still work.
    for s in &mut held {
        assert_eq!(get(s).map(|r| status_of(&r)), Some(200));
    }
}

// ---- balancing methods ---------------------------------------------------

/// A backend answering its name; `/slow` waits until `release` is set.
fn named(name: &'static str, release: Arc<AtomicBool>) -> Backend {
    backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            if req.starts_with(b"GET /slow") {
                let start = Instant::now();
                while !release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn get_from(rl: SocketAddr, path: &str, headers: &str, src: Option<&str>) -> String {
    let mut s = match src {
        None => connect(rl),
        Some(ip) => {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&format!("{ip}:0").parse::<SocketAddr>().unwrap().into())
                .unwrap();
            sock.connect(&rl.into()).unwrap();
            let s: TcpStream = sock.into();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s
        }
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let resp = read_response(&mut s, &mut Vec::new(), false).expect("a response");
    assert_eq!(status_of(&resp), 200, "{resp}");
    resp.rsplit("\r\n\r\n").next().unwrap().to_string()
}

fn three(release: &Arc<AtomicBool>) -> Vec<Backend> {
    ["a", "b", "c"]
        .iter()
        .map(|n| named(n, Arc::clone(release)))
        .collect()
}

fn addrs(bs: &[Backend]) -> Vec<SocketAddr> {
    bs.iter().map(|b| b.addr).collect()
}

/// Starts a `/slow` request and waits until a backend holds it; returns the
/// client thread and the name of the busy server.
fn hold_one(
    rl: SocketAddr,
    bs: &[Backend],
    names: &[&str],
) -> (thread::JoinHandle<String>, String) {
    let before: Vec<usize> = bs.iter().map(|b| b.conns.load(Ordering::SeqCst)).collect();
    let h = thread::spawn(move || get_from(rl, "/slow", "", None));
    let start = Instant::now();
    loop {
        for (i, b) in bs.iter().enumerate() {
            if b.conns.load(Ordering::SeqCst) > before[i] {
                return (h, names[i].to_string());
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the slow request reached no backend"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn least_conn_avoids_the_busy_server() {
    let release = Arc::new(AtomicBool::new(false));
    let bs: Vec<Backend> = ["a", "b"]
        .iter()
        .map(|n| named(n, Arc::clone(&release)))
        .collect();
    let rl = Ringlb::start(&one_upstream(
        "",
        "balance = \"least_conn\"",
        &addrs(&bs),
        "",
    ));
    let (h, busy) = hold_one(rl.addr, &bs, &["a", "b"]);
    let hits: Vec<String> = (0..20)
        .map(|_| get_from(rl.addr, "/fast", "", None))
        .collect();
    release.store(true, Ordering::SeqCst);
    assert_eq!(h.join().unwrap(), busy);
    assert!(
        hits.iter().all(|h| *h != busy),
        "least_conn sent requests to the busy server {busy}: {hits:?}"
    );
}

#[test]
fn random_two_mostly_avoids_the_busy_server_and_spreads_the_rest() {
    let release = Arc::new(AtomicBool::new(false));
    let bs = three(&release);
    let rl = Ringlb::start(&one_upstream(
        "",
        "balance = \"random_two\"",
        &addrs(&bs),
        "",
    ));
    let (h, busy) = hold_one(rl.addr, &bs, &["a", "b", "c"]);
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        *count
            .entry(get_from(rl.addr, "/fast", "", None))
            .or_default() += 1;
    }
    release.store(true, Ordering::SeqCst);
    h.join().unwrap();
    // Busy is picked only when both draws hit it (~1/9): far below 1/3.
    let on_busy = count.get(&busy).copied().unwrap_or(0);
    assert!(
        on_busy < 20,
        "busy server {busy} got {on_busy}/60: {count:?}"
    );
    for n in ["a", "b", "c"] {
        if n != busy {
            assert!(
                count.get(n).copied().unwrap_or(0) >= 10,
                "idle server {n} starved: {count:?}"
            );
        }
    }
}

fn assert_sticky(tag: &str, keys: &[String], pick: impl Fn(&str) -> String) {
    let mut placed: HashMap<&str, String> = HashMap::new();
    for round in 0..4 {
        for k in keys {
            let s = pick(k);
            let first = placed.entry(k).or_insert_with(|| s.clone());
            assert_eq!(
                *first, s,
                "{tag}: key {k} moved from {first} to {s} in round {round}"
            );
        }
    }
    let used: std::collections::HashSet<&String> = placed.values().collect();
    assert!(
        used.len() >= 2,
        "{tag}: every key on one server: {placed:?}"
    );
}

#[test]
fn hash_keeps_each_key_on_one_server() {
    let release = Arc::new(AtomicBool::new(true));
    let bs = three(&release);
    for (key, kind) in [
        ("client_ip", "ip"),
        ("uri", "uri"),
        ("header:X-User", "header"),
    ] {
        let rl = Ringlb::start(&one_upstream(
            "",
            &format!("balance = \"hash\"\nhash_key = \"{key}\""),
            &addrs(&bs),
            "",
        ));
        let keys: Vec<String> = match kind {
            "ip" => (1..=12).map(|i| format!("127.0.0.{i}")).collect(),
            _ => (0..24).map(|i| format!("key{i}")).collect(),
        };
        assert_sticky(key, &keys, |k| match kind {
            "ip" => get_from(rl.addr, "/same", "", Some(k)),
            "uri" => get_from(rl.addr, &format!("/{k}"), "", None),
            _ => get_from(rl.addr, "/same", &format!("X-User: {k}\r\n"), None),
        });
    }
}

/// A backend answering its name, whose `/health` fails while `healthy` is
/// false; counts health checks answered 200.
fn checked(name: &'static str, healthy: Arc<AtomicBool>, ok_checks: Arc<AtomicUsize>) -> Backend {
    backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let resp = if req.starts_with(b"GET /health ") {
                if healthy.load(Ordering::SeqCst) {
                    ok_checks.fetch_add(1, Ordering::SeqCst);
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n".to_string()
                }
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                    name.len()
                )
            };
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn slow_start_ramps_a_returning_server_up() {
    let up = Arc::new(AtomicBool::new(true));
    let (a_checks, b_checks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = checked("a", Arc::clone(&up), a_checks);
    let b_healthy = Arc::new(AtomicBool::new(true));
    let b = checked("b", Arc::clone(&b_healthy), Arc::clone(&b_checks));
    let check = "[upstream.app.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n";
    let rl = Ringlb::start(&one_upstream(
        "",
        &format!("balance = \"round_robin\"\n{check}"),
        &[a.addr, b.addr],
        "slow_start = \"10s\"",
    ));
    let share_b = |n: usize| {
        (0..n)
            .filter(|_| get_from(rl.addr, "/", "", None) == "b")
            .count()
    };
    // Take b out by its health check, until it gets no traffic.
    b_healthy.store(false, Ordering::SeqCst);
    let start = Instant::now();
    while share_b(10) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "b never taken out"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // b comes back: its first passing check marks it up (rise = 1).
    let before = b_checks.load(Ordering::SeqCst);
    b_healthy.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while b_checks.load(Ordering::SeqCst) == before {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no health check reached b"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let back = Instant::now();
    // Early in the 10 s ramp b gets a small share (round robin alone: half).
    let early_b = share_b(30);
    // After the ramp: half.
    thread::sleep(Duration::from_secs(11).saturating_sub(back.elapsed()));
    let late_b = share_b(30);
    assert!(
        early_b < 9,
        "b got {early_b}/30 right after coming back (slow_start 10 s); ringlb log:\n{}",
        rl.log_text()
    );
    assert!(
        (10..=20).contains(&late_b),
        "b got {late_b}/30 after the ramp"
    );
}
