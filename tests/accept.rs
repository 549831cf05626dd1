//! How client connections are accepted and ended with `Connection: close`
//! clients, a burst of clients at once (several accepts in flight,
//! `data::shard`), and a client that connects and stays silent a while.
//! What the clients got, and what the backend got and how many times.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

/// Asserts that the backend got `GET path` exactly once.
fn assert_once(seen: &[String], path: &str) {
    let start = format!("GET {path} HTTP/1.1\r\n");
    let n = seen.iter().filter(|r| r.starts_with(&start)).count();
    assert_eq!(n, 1, "{path} reached the backend {n} times");
}

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
        assert_once(&seen, &format!("/n{i}"));
    }
    for i in 0..5 {
        assert_once(&seen, &format!("/curl{i}"));
    }
}

/// Many clients connect at once and each sends its request before reading
/// anything: the shard accepts them several at a time (a multishot accept,
/// or accepts in flight), and every one gets its answer once, in full, and
/// reaches the backend once.
fn burst_is_served_once_each(env: &[(&str, &str)]) -> Ringlb {
    // More than the accepts one turn takes (64), fewer than the test
    // backend's listen backlog (128).
    const N: usize = 100;
    let (be, seen) = recording_backend();
    let rl = Ringlb::start_with_env(&simple_config(&[be.addr], ""), env);
    let mut clients: Vec<TcpStream> = (0..N).map(|_| connect(rl.addr)).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        s.write_all(
            format!("GET /b{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    }
    for (i, s) in clients.iter_mut().enumerate() {
        let (resp, closed) = read_to_close(s);
        assert!(
            closed,
            "client {i}: not closed after the response: {resp:?}"
        );
        assert_eq!(status_of(&resp), 200, "client {i}: {resp:?}");
        assert_eq!(body_of(&resp), "ok", "client {i}: {resp:?}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), N, "the backend got {} requests", seen.len());
    for i in 0..N {
        assert_once(&seen, &format!("/b{i}"));
    }
    rl
}

/// Waits (up to 5 s) for `needle` in ringlb's log, which goes through
/// the asynchronous log writer.
fn logged(rl: &Ringlb, needle: &str) -> bool {
    let start = std::time::Instant::now();
    while !rl.log_text().contains(needle) && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    rl.log_text().contains(needle)
}

/// Whether this kernel has io_uring multishot accept (5.19+).
fn kernel_has_multishot_accept() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap(), nums.next().unwrap());
    (major, minor) >= (5, 19)
}

/// On io_uring: one multishot accept per listener where the kernel has it.
#[test]
fn a_burst_of_new_clients_is_served_once_each() {
    let rl = burst_is_served_once_each(&[]);
    let want = if kernel_has_multishot_accept() {
        "accepts: one multishot accept per listener"
    } else {
        "accepts: 64 in flight per listener"
    };
    assert!(logged(&rl, want), "no {want:?} in: {}", rl.log_text());
}

/// The single-shot accepts on io_uring (what kernels before 5.19 use).
#[test]
fn a_burst_of_new_clients_is_served_once_each_with_single_shot_accepts() {
    let rl = burst_is_served_once_each(&[("RINGLB_ACCEPT", "loops")]);
    let want = "accepts: 64 in flight per listener (RINGLB_ACCEPT=loops)";
    assert!(logged(&rl, want), "no {want:?} in: {}", rl.log_text());
}

/// The same on the epoll fallback, which keeps one accept in flight.
#[test]
fn a_burst_of_new_clients_is_served_once_each_on_the_epoll_driver() {
    let rl = burst_is_served_once_each(&[("RINGLB_DRIVER", "epoll")]);
    assert!(
        logged(&rl, "shards use the epoll driver"),
        "not the epoll driver: {}",
        rl.log_text()
    );
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

/// Connections accepted with their first bytes already in the socket:
/// `max_connections = 1` and a held connection keep them in the kernel
/// backlog while they send. A
/// request gets one answer and reaches the backend once; a request and
/// FIN too; a bare FIN and a silent client (after `client_header_timeout`)
/// are closed without a byte, and reach nothing.
#[test]
fn requests_already_there_at_accept_are_served_once_silent_ones_time_out() {
    let (be, seen) = recording_backend();
    let mut cfg = simple_config(&[be.addr], "");
    cfg.push_str("\n[http]\nmax_connections = 1\nclient_header_timeout = \"1s\"\n");
    let rl = Ringlb::start(&cfg);
    // The one slot: a keep-alive connection that stays open.
    let mut held = connect(rl.addr);
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut held, &mut Vec::new(), false).expect("held: a response");
    assert_eq!(status_of(&resp), 200, "{resp:?}");
    // In the backlog meanwhile: a request; a request then FIN; a FIN alone;
    // a silent client.
    let mut full = connect(rl.addr);
    full.write_all(b"GET /full HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut half = connect(rl.addr);
    half.write_all(b"GET /half HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut fin = connect(rl.addr);
    fin.shutdown(std::net::Shutdown::Write).unwrap();
    let mut silent = connect(rl.addr);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing else accepted yet");
    drop(held);
    for (name, s) in [("full", &mut full), ("half", &mut half)] {
        let (resp, closed) = read_to_close(s);
        assert!(closed, "{name}: not closed after the response: {resp:?}");
        assert_eq!(status_of(&resp), 200, "{name}: {resp:?}");
        assert_eq!(body_of(&resp), "ok", "{name}: {resp:?}");
    }
    let (resp, closed) = read_to_close(&mut fin);
    assert!(
        closed && resp.is_empty(),
        "FIN alone: {resp:?}, closed {closed}"
    );
    let (resp, closed) = read_to_close(&mut silent);
    assert!(
        closed && resp.is_empty(),
        "silent: closed at client_header_timeout without a byte: {resp:?}, closed {closed}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for path in ["/hold", "/full", "/half"] {
        assert_once(&seen, path);
    }
}

/// Python `requests` with `Connection: close`, one connection per request:
/// every response complete, every request at the backend once.
#[test]
fn python_requests_with_connection_close() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let script = format!(
        "import requests\n\
         for i in range(20):\n\
         \x20   r = requests.get('http://{}/py%d' % i, headers={{'Connection': 'close'}}, timeout=10)\n\
         \x20   print(r.status_code, r.text, r.headers.get('Connection'))\n",
        rl.addr
    );
    let text = python_ok(&["-c", &script]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 20, "{text}");
    for l in &lines {
        assert_eq!(*l, "200 ok close", "{text}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20, "{seen:?}");
    for i in 0..20 {
        assert_once(&seen, &format!("/py{i}"));
    }
}
