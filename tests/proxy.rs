//! End-to-end proxy behaviour with real sockets: raw-byte clients and
//! scripted backends around the real `ringlb` binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn pipelined_requests_answered_in_order() {
    let be = echo_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    for path in ["/one", "/two", "/three"] {
        let r = read_response(&mut s, &mut buf, false).expect("response");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            body_of(&r).starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{r}"
        );
    }
}

#[test]
fn forwarded_headers_and_hop_by_hop() {
    let be = echo_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(
        b"GET /h HTTP/1.1\r\nHost: example.test:8080\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nX-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    let seen = body_of(&r);
    assert!(seen.contains("Host: example.test:8080\r\n"), "{seen}");
    assert!(
        seen.contains("X-Forwarded-For: 203.0.113.7, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("X-Real-IP: 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("X-Forwarded-Proto: http\r\n"), "{seen}");
    assert!(seen.contains("Accept: */*\r\n"), "{seen}");
    let lower = seen.to_ascii_lowercase();
    for gone in [
        "x-secret",
        "keep-alive",
        "\r\nte:",
        "proxy-connection",
        "upgrade",
        "connection:",
        "6.6.6.6",
        "https",
    ] {
        assert!(!lower.contains(gone), "{gone} leaked upstream: {seen}");
    }
}

#[test]
fn chunked_request_and_response_bodies() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            // Echo the raw request back as a chunked body, with a trailer.
            let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            resp.extend_from_slice(format!("{:x}\r\n", req.len()).as_bytes());
            resp.extend_from_slice(&req);
            resp.extend_from_slice(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
            s.write_all(&resp).unwrap();
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // The echoed body itself contains a last-chunk, so read to the close.
    let r = roundtrip_close(
        rl.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(r.contains("Transfer-Encoding: chunked\r\n"), "{r}");
    // The request body, buffered whole, went with a length (as nginx).
    assert!(
        r.contains("Content-Length: 11\r\nX-Real-IP") && r.contains("\r\n\r\nhello world\r\n0\r\n"),
        "request body not forwarded with its length: {r}"
    );
    assert!(r.ends_with("\r\n0\r\nX-Trailer: t\r\n\r\n"), "{r}");

    // An HTTP/1.0 client gets the body de-chunked and the connection closed.
    let r = roundtrip_close(rl.addr, b"GET /old HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("transfer-encoding"), "{r}");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(body_of(&r).starts_with("GET /old HTTP/1.1\r\n"), "{r}");
    assert!(!body_of(&r).contains("X-Trailer"), "{r}");
}

#[test]
fn head_204_304_carry_no_body() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line =
                String::from_utf8_lossy(&req[..req.iter().position(|&b| b == b'\r').unwrap()])
                    .into_owned();
            let resp: &[u8] = if line.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            } else if line.contains("/204") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else if line.contains("/304") {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"
            };
            s.write_all(resp).unwrap();
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET /end HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains("Content-Length: 1000\r\n"),
        "{r}"
    );
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert!(r.starts_with("HTTP/1.1 204 No Content\r\n"), "{r}");
    let r = read_response(&mut s, &mut buf, true).unwrap();
    assert!(r.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{r}");
    // If any bodiless response had leaked bytes, this one would be garbled.
    let r = read_response(&mut s, &mut buf, false).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nlast"),
        "{r}"
    );
}

#[test]
fn expect_100_continue() {
    let be = echo_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut got = [0u8; 25];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abcde").unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(body_of(&r).ends_with("\r\n\r\nabcde"), "{r}");
    assert!(!body_of(&r).to_ascii_lowercase().contains("expect"), "{r}");
}

#[test]
fn upgrade_becomes_a_tunnel() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        let req = read_request(&mut s, &mut buf).unwrap();
        let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
        assert!(text.contains("upgrade: websocket") && text.contains("connection: upgrade"));
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        // Echo everything, prefixed, until EOF.
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut o = b"echo:".to_vec();
                    o.extend_from_slice(&b[..n]);
                    s.write_all(&o).unwrap();
                }
            }
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let mut s = connect(rl.addr);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, &mut Vec::new(), true).unwrap();
    assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{r}");
    assert!(
        r.contains("Upgrade: websocket\r\n") && r.contains("Connection: upgrade\r\n"),
        "{r}"
    );
    for msg in ["ping", "more bytes"] {
        s.write_all(msg.as_bytes()).unwrap();
        let mut b = vec![0u8; 5 + msg.len()];
        s.read_exact(&mut b).unwrap();
        assert_eq!(String::from_utf8(b).unwrap(), format!("echo:{msg}"));
    }
}

#[test]
fn close_delimited_response() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close")
            .unwrap();
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    // An HTTP/1.1 client gets it chunked (tests/rechunk.rs: the connection
    // stays open); here it asked to close.
    let r = roundtrip_close(
        rl.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(r.contains("Transfer-Encoding: chunked\r\n"), "{r}");
    assert!(
        r.ends_with("\r\n\r\n10\r\nbody until close\r\n0\r\n\r\n"),
        "{r}"
    );
    // An HTTP/1.0 client gets the body as it came, then the close.
    let r = roundtrip_close(rl.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(!r.contains("Transfer-Encoding"), "{r}");
    assert!(r.ends_with("\r\n\r\nbody until close"), "{r}");
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn backend_down_is_502() {
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let rl = Ringlb::start(&simple_config(&[dead], ""));
    let mut s = connect(rl.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert!(r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{r}");
    assert!(body_of(&r).contains("502"), "{r}");
    // The connection stays usable and the shard keeps running.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
}

#[test]
fn silent_backend_is_504() {
    let be = backend(|mut s| {
        let mut buf = Vec::new();
        let _ = read_request(&mut s, &mut buf);
        std::thread::sleep(Duration::from_secs(3));
    });
    let rl = Ringlb::start(&simple_config(
        &[be.addr],
        "read_timeout = \"300ms\"\nretries = 0\n",
    ));
    let mut s = connect(rl.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let r = read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert!(r.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"), "{r}");
}

#[test]
fn bad_heads_are_rejected_and_closed() {
    let be = echo_backend();
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let cases: [(&[u8], &str); 6] = [
        (b"GARBAGE\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad : x\r\n\r\n", "400"),
    ];
    for (req, status) in cases {
        let r = roundtrip_close(rl.addr, req);
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} → {r}",
            String::from_utf8_lossy(req)
        );
        assert!(r.contains("Connection: close\r\n"), "{r}");
    }
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 40_000));
    big.extend_from_slice(b"\r\n\r\n");
    let mut s = connect(rl.addr);
    let _ = s.write_all(&big);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // None of the bad requests reached the backend.
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn http10_keepalive_only_when_asked() {
    let be = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let r = roundtrip_close(rl.addr, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        r.contains("Connection: close\r\n") && r.ends_with("ok"),
        "{r}"
    );
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).unwrap();
        assert!(
            r.contains("Connection: keep-alive\r\n") && r.ends_with("ok"),
            "{r}"
        );
    }
}

#[test]
fn client_connection_close_is_honoured() {
    let be = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let r = roundtrip_close(
        rl.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.contains("Connection: close\r\n") && r.ends_with("ok"),
        "{r}"
    );
}

/// A `Connection: close` response leaves with the connection's FIN (one
/// write and a shutdown, `LastWrites`); when the client's receive window
/// is too small to take it at once, the rest must still arrive, whole and
/// in order, and end in a FIN, not a reset. HTTP/1.0 without keep-alive
/// takes the same path.
#[test]
fn close_responses_reach_a_slow_small_window_reader_whole() {
    const BODY: usize = 30_000;
    let body: Vec<u8> = (0..BODY).map(|i| b'a' + (i % 26) as u8).collect();
    let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    resp.extend_from_slice(&body);
    let resp: &'static [u8] = resp.leak();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            seen_tx.send(req).unwrap();
            if s.write_all(resp).is_err() {
                return;
            }
        }
    });
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    let requests: [&[u8]; 2] = [
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /b HTTP/1.0\r\nHost: a\r\n\r\n",
    ];
    for req in requests {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // Set before connecting, so the window the client offers is small.
        sock.set_recv_buffer_size(2048).unwrap();
        sock.connect(&rl.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req).unwrap();
        // Let the proxy meet the full window before anything is read.
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        assert!(end.is_ok(), "the response did not end in a FIN: {end:?}");
        let split = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no response head")
            + 4;
        let head = String::from_utf8_lossy(&got[..split]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert_eq!(got.len() - split, BODY, "body length; head: {head}");
        assert!(got[split..] == body[..], "the body arrived altered");
        let seen_req = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        let line = String::from_utf8_lossy(&seen_req);
        let target = String::from_utf8_lossy(&req[..6]);
        assert!(line.starts_with(&*target), "backend saw {line}");
    }
    assert!(
        seen.try_recv().is_err(),
        "the backend saw a request more than once"
    );
}

#[test]
fn upstream_connections_are_reused() {
    let be = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    for _ in 0..5 {
        let r = roundtrip_close(
            rl.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(r.ends_with("ok"), "{r}");
    }
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn weighted_round_robin_spreads_requests() {
    let a = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
    let b = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
    let cfg = format!(
        "[runtime]\nworkers = 1\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\nweight = 3\n[[upstream.app.server]]\naddress = \"{}\"\n",
        a.addr, b.addr
    );
    let rl = Ringlb::start(&cfg);
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    let mut seq = String::new();
    for _ in 0..8 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        seq.push_str(body_of(&read_response(&mut s, &mut buf, false).unwrap()));
    }
    // nginx's smooth weighted round robin for weights 3:1.
    assert_eq!(seq, "aabaaaba");
}

#[test]
fn curl_through_ringlb_to_nginx() {
    let dir = tempdir::Dir::new("nginx");
    let port = free_port();
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n fastcgi_temp_path {d};\n uwsgi_temp_path {d};\n scgi_temp_path {d};\n server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"nginx says hi $http_x_forwarded_for\\n\"; }} }}\n}}\n",
            d = dir.0.display()
        ),
    )
    .unwrap();
    let mut nginx = std::process::Command::new("nginx")
        .args(["-c"])
        .arg(&conf)
        .args(["-p"])
        .arg(&dir.0)
        .spawn()
        .expect("nginx must be installed (tests/run.sh installs it)");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        common::wait_child_listening(&mut nginx, addr),
        "nginx did not start on {addr}"
    );
    let rl = Ringlb::start(&simple_config(&[addr], ""));
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5"])
        .arg(format!("http://{}/hello", rl.addr))
        .arg(format!("http://{}/again", rl.addr))
        .output()
        .expect("curl");
    // SIGTERM lets the nginx master stop its worker too.
    unsafe { libc::kill(nginx.id() as i32, libc::SIGTERM) };
    let _ = nginx.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("nginx says hi 127.0.0.1").count(), 2, "{text}");
}

#[test]
fn access_log_lines_match_requests() {
    let be = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let dir = tempdir::Dir::new("alog");
    for (format, n) in [("combined", 25usize), ("json", 7)] {
        let path = dir.0.join(format!("access-{format}.log"));
        let cfg = simple_config(&[be.addr], "")
            + &format!(
                "\n[log]\naccess_log = \"{}\"\naccess_log_format = \"{format}\"\n",
                path.display()
            );
        let rl = Ringlb::start(&cfg);
        let mut s = connect(rl.addr);
        let mut buf = Vec::new();
        for i in 0..n {
            s.write_all(
                format!("GET /item/{i} HTTP/1.1\r\nHost: a\r\nUser-Agent: test-agent\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            read_response(&mut s, &mut buf, false).unwrap();
        }
        // Lines reach the file within a few shard ticks.
        let start = std::time::Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() >= n || start.elapsed() > Duration::from_secs(5) {
                break text;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), n, "{text}");
        for (i, l) in lines.iter().enumerate() {
            if format == "combined" {
                assert!(l.starts_with("127.0.0.1 - - ["), "{l}");
                assert!(
                    l.contains(&format!("\"GET /item/{i} HTTP/1.1\" 200 ")),
                    "{l}"
                );
                assert!(l.ends_with("\"-\" \"test-agent\""), "{l}");
            } else {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["uri"], format!("/item/{i}"));
                assert_eq!(v["status"], 200);
                assert_eq!(v["upstream_addr"], be.addr.to_string());
            }
        }
    }
}

#[test]
fn ipv6_listener_and_server() {
    let l = std::net::TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let be_addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while read_request(&mut s, &mut buf).is_some() {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6");
                }
            });
        }
    });
    let port = free_port();
    let cfg = simple_config(&[be_addr], "").replace("127.0.0.1:{port}", &format!("[::1]:{port}"));
    let dir = tempdir::Dir::new("v6");
    let path = dir.0.join("v6.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert!(
        common::wait_child_listening(&mut child, addr),
        "ringlb did not start on {addr}"
    );
    let r = roundtrip_close(
        addr,
        b"GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("v6"),
        "{r}"
    );
}

#[test]
fn epoll_fallback_serves() {
    let be = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let port = free_port();
    let dir = tempdir::Dir::new("epoll");
    let path = dir.0.join("e.toml");
    std::fs::write(
        &path,
        simple_config(&[be.addr], "").replace("{port}", &port.to_string()),
    )
    .unwrap();
    let log = dir.0.join("e.log");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .env("RINGLB_DRIVER", "epoll")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        common::wait_child_listening(&mut child, addr),
        "ringlb did not start on {addr}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let r = roundtrip_close(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    // The shard's line goes through the asynchronous log writer: wait for
    // it (bounded) before the SIGKILL, which would lose a queued line.
    let logged = |t: &str| {
        t.contains("using the epoll driver instead of io_uring")
            && t.contains("shards use the epoll driver")
    };
    let start = std::time::Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        text = std::fs::read_to_string(&log).unwrap();
        if logged(&text) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(r.ends_with("ok"), "{r}");
    assert!(logged(&text), "{text}");
}

#[test]
fn response_without_reason_phrase() {
    // Found by the http1_response fuzz target: a status line without a
    // reason phrase used to build a span outside the buffer.
    let be = fixed_backend(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok");
    let rl = Ringlb::start(&simple_config(&[be.addr], ""));
    for _ in 0..2 {
        let r = roundtrip_close(
            rl.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(
            r.starts_with("HTTP/1.1 200 \r\n") && r.ends_with("ok"),
            "{r}"
        );
    }
}
