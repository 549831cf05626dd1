//! Large bodies through the proxy, byte for byte, in both directions: the
//! spliced path for large plain `Content-Length` responses (`data/splice.rs`)
//! and the copying relay for uploads. Each test checks what the client got
//! against what the backend sent, and what the backend got against what the
//! client sent, including backends that lie about `Content-Length` (more
//! bytes than announced, or fewer and a close), a slow reader, a stalled
//! backend (the read deadline), and the access log's byte counts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// `n` deterministic pseudo-random bytes (different per `seed`), so a
/// shifted, repeated or dropped range cannot go unnoticed.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads one response with a `Content-Length` body from `s` (bytes already
/// in `buf` first); returns (head, body) and leaves what follows in `buf`.
fn read_sized(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = vec![0u8; 256 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = header(&head.to_ascii_lowercase(), "content-length")?
        .parse()
        .ok()?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((head, body))
}

/// Reads until the peer closes (or 20 s pass); returns everything.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Waits (up to 10 s: a writer thread writes the log) for `needle` in
/// ringlb's log.
fn wait_log(rl: &Ringlb, needle: &str) {
    let start = Instant::now();
    while !rl.log_text().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {needle:?} in the log:\n{}",
            rl.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pipes ringlb holds open (its splice pipes are pooled after use).
fn pipes_of(rl: &Ringlb) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", rl.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// A backend answering `GET /N` with an N-byte body (pattern seed N) and
/// everything else with the request it received; it records each request.
fn sized_backend() -> (Backend, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            s2.lock().unwrap().push(req.clone());
            let line = String::from_utf8_lossy(&req[..find(&req, b"\r\n").unwrap()]).into_owned();
            let body = match line.strip_prefix("GET /").and_then(|r| r.split(' ').next()) {
                Some(n) if n.parse::<usize>().is_ok() => {
                    let n: usize = n.parse().unwrap();
                    pattern(n, n as u64)
                }
                _ => req,
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            if s.write_all(head.as_bytes()).is_err() || s.write_all(&body).is_err() {
                return;
            }
        }
    });
    (be, seen)
}

#[test]
fn large_responses_arrive_byte_exact_over_keep_alive_and_are_spliced() {
    let (be, seen) = sized_backend();
    let dir = tempdir::Dir::new("alog");
    let alog = dir.0.join("access.log");
    let cfg = format!(
        "{}\n[log]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n",
        simple_config(&[be.addr], ""),
        alog.display()
    );
    let rl = Ringlb::start(&cfg);
    let pipes_before = pipes_of(&rl);
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    // Around the splice threshold, odd sizes, several MiB, and a small
    // one between them (the copying path) on the same connections.
    let sizes = [
        1 << 20,
        (1 << 20) + 7,
        300_001,
        100,
        5 << 20,
        262_143,
        262_145,
    ];
    let mut sent_total = Vec::new();
    for &n in &sizes {
        s.write_all(format!("GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = read_sized(&mut s, &mut buf)
            .unwrap_or_else(|| panic!("no response for {n}; log:\n{}", rl.log_text()));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body.len(), n, "length for {n}");
        assert!(body == pattern(n, n as u64), "bytes differ for {n}");
        sent_total.push(head.len() + body.len());
    }
    assert!(
        buf.is_empty(),
        "bytes after the last response: {}",
        buf.len()
    );
    // The backend saw each request exactly once, in order.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), sizes.len());
        for (req, n) in seen.iter().zip(sizes) {
            assert!(req.starts_with(format!("GET /{n} HTTP/1.1\r\n").as_bytes()));
        }
    }
    // The splice path ran: its pipe is pooled in the shard now.
    assert!(
        pipes_of(&rl) >= pipes_before + 2,
        "no splice pipe: {} pipes before, {} after",
        pipes_before,
        pipes_of(&rl)
    );
    // A real client, too.
    let out = dir.0.join("curl.out");
    let st = std::process::Command::new("curl")
        .args(["-fsS", "-o"])
        .arg(&out)
        .arg(format!("http://{}/3000000", rl.addr))
        .status()
        .expect("curl must be installed (tests/run.sh installs it)");
    assert!(st.success());
    let got = std::fs::read(&out).unwrap();
    let want = pattern(3_000_000, 3_000_000);
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "curl got {} bytes, first difference at {first_diff:?}",
        got.len()
    );
    // The access log counts every byte sent (head + body) per request.
    let start = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&alog).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() > sizes.len() || start.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), sizes.len() + 1, "{lines:?}");
    for (line, total) in lines.iter().zip(&sent_total) {
        assert!(
            line.contains(&format!("\"bytes_sent\":{total},")),
            "want {total}: {line}"
        );
    }
}

#[test]
fn large_uploads_and_echoes_arrive_byte_exact() {
    // The echo backend answers with the raw request it received: the
    // client sees what the backend got, both directions large.
    let be = echo_backend();
    let cfg = format!(
        "{}\n[http]\nclient_max_body_size = 0\n",
        simple_config(&[be.addr], "")
    );
    let rl = Ringlb::start(&cfg);
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    for (i, n) in [2 << 20, (1 << 20) + 3, 400_000].into_iter().enumerate() {
        let body = pattern(n, 77 + i as u64);
        let head = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n");
        // The writer runs beside the reader: the response may start early.
        let mut w = s.try_clone().unwrap();
        let (h2, b2) = (head.clone(), body.clone());
        let writer = thread::spawn(move || {
            w.write_all(h2.as_bytes()).unwrap();
            w.write_all(&b2).unwrap();
        });
        let (rhead, echoed) = read_sized(&mut s, &mut buf).expect("response");
        writer.join().unwrap();
        assert!(rhead.starts_with("HTTP/1.1 200 OK\r\n"), "{rhead}");
        let at = find(&echoed, b"\r\n\r\n").expect("echoed head") + 4;
        let got_head = String::from_utf8_lossy(&echoed[..at]).to_ascii_lowercase();
        assert_eq!(
            header(&got_head, "content-length"),
            Some(n.to_string().as_str())
        );
        assert_eq!(echoed.len() - at, n, "upload length");
        assert!(echoed[at..] == body[..], "upload bytes differ ({n})");
    }
}

#[test]
fn a_backend_sending_more_than_content_length_leaks_nothing() {
    // Each connection's first response announces 1 MiB and sends 1 MiB plus
    // a whole smuggled response in the same final segment; a request that
    // arrives on such a connection afterwards is a leak (recorded).
    let reused_dirty = Arc::new(AtomicUsize::new(0));
    let r2 = Arc::clone(&reused_dirty);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        let mut first = true;
        while let Some(_req) = read_request(&mut s, &mut buf) {
            if !first {
                r2.fetch_add(1, Ordering::Relaxed);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nREUSED");
                continue;
            }
            first = false;
            let body = pattern(1 << 20, 5);
            let split = body.len() - 100;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
            let _ = s.write_all(&body[..split]);
            let mut tail = body[split..].to_vec();
            tail.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG");
            let _ = s.write_all(&tail);
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], "keepalive = 4\n"));
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    for round in 0..4 {
        s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let (head, body) = read_sized(&mut s, &mut buf).expect("response");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "round {round}: {head}"
        );
        assert!(body == pattern(1 << 20, 5), "round {round}: bytes differ");
    }
    assert!(buf.is_empty(), "extra bytes reached the client");
    assert_eq!(
        reused_dirty.load(Ordering::Relaxed),
        0,
        "a dirty connection was reused"
    );
    assert_eq!(
        be.conns.load(Ordering::Relaxed),
        4,
        "one upstream connection per response"
    );
}

#[test]
fn a_backend_closing_early_cuts_the_response_and_nothing_else() {
    // Announces 2 MiB, sends 1 MiB, closes. The client gets exactly the
    // bytes that were sent and then a close; the next connection works.
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        if let Some(req) = read_request(&mut s, &mut buf) {
            if req.starts_with(b"GET /short") {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n");
                let _ = s.write_all(&pattern(1 << 20, 9));
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /short HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut s);
    let at = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got[at..] == pattern(1 << 20, 9)[..],
        "got {} body bytes",
        got.len() - at
    );
    wait_log(&rl, "response body cut short");
    let r = roundtrip_close(
        rl.addr,
        b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok"),
        "{r}"
    );
}

#[test]
fn a_stalled_backend_hits_the_read_timeout_mid_body() {
    // Sends 600 KiB of a 2 MiB body and then nothing, keeping the socket
    // open: `read_timeout` ends the exchange and the client's connection.
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n");
            let _ = s.write_all(&pattern(600 << 10, 3));
            thread::sleep(Duration::from_secs(30));
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], "read_timeout = \"1s\"\n"));
    let mut s = connect(rl.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let got = read_to_close(&mut s);
    let at = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert!(
        got[at..] == pattern(600 << 10, 3)[..],
        "got {} body bytes",
        got.len() - at
    );
    wait_log(&rl, "response body cut short");
}

#[test]
fn a_slow_reader_gets_every_byte() {
    // The client reads 8 MiB in small pieces with pauses: the relay fills
    // the client's socket and waits for it to drain, many times.
    let (be, _) = sized_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let n = 8 << 20;
    s.write_all(format!("GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut piece = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let mut reads = 0u32;
    while start.elapsed() < Duration::from_secs(60) {
        let k = s.read(&mut piece).unwrap();
        assert!(k > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&piece[..k]);
        reads += 1;
        if reads.is_multiple_of(8) {
            thread::sleep(Duration::from_millis(5));
        }
        if let Some(i) = find(&got, b"\r\n\r\n") {
            if got.len() >= i + 4 + n {
                break;
            }
        }
    }
    let at = find(&got, b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - at, n);
    assert!(got[at..] == pattern(n, n as u64)[..], "bytes differ");
    // The connection is still good for the next request.
    let mut buf = Vec::new();
    s.write_all(b"GET /5 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (_, body) = read_sized(&mut s, &mut buf).expect("next response");
    assert_eq!(body, pattern(5, 5));
}
