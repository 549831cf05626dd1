//! The PROXY protocol end to end, with real peers: HAProxy (`send-proxy`,
//! `send-proxy-v2`) and curl (`--haproxy-protocol`) in front of a
//! `proxy_protocol = true` listener, plain and TLS; hand-written headers
//! for the bad cases (missing, malformed, cut off, split over segments);
//! and, the other way, `send_proxy_protocol` to nginx
//! (`listen … proxy_protocol`, answering `$proxy_protocol_addr`) and to a
//! scripted backend that records each upstream connection's header and the
//! requests that followed it.
//!
//! Clients use source addresses other than 127.0.0.1 (127.0.0.2/3, all of
//! 127/8 is loopback) so that the address a header carries differs from
//! the socket peer ringlb sees (HAProxy connects from 127.0.0.1).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::peers::{curl, nginx_with, wait_listening, Proc};
use common::pki::Pki;
use common::{
    admin_get, backend, free_port, metric, read_request, read_response, recording_backend, tempdir,
    Ringlb,
};

// ---------------------------------------------------------------- helpers

/// A config: `[admin]` on `admin`, one listener on `{port}` with
/// `listener_extra`, upstream `app` with `upstream_extra` and `servers`.
fn config(
    admin: u16,
    listener_extra: &str,
    upstream_extra: &str,
    servers: &[SocketAddr],
) -> String {
    let mut s = format!(
        "[runtime]\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n{listener_extra}\n\n\
         [upstream.app]\n{upstream_extra}\n"
    );
    for a in servers {
        s.push_str(&format!("[[upstream.app.server]]\naddress = \"{a}\"\n"));
    }
    s
}

fn pp_errors(admin: SocketAddr, reason: &str) -> u64 {
    metric(
        admin,
        &format!("ringlb_proxy_protocol_errors_total{{reason=\"{reason}\"}}"),
    )
}

/// Connects from source address `src_ip` (a loopback address).
fn connect_from(src_ip: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{src_ip}:0").parse().unwrap();
    s.bind(&from.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Writes each chunk with a pause between them (separate segments), then
/// reads until the peer closes; returns what came back.
fn send_chunks(to: SocketAddr, chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = common::connect(to);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for c in chunks {
        // A write may fail once ringlb has closed on an earlier chunk.
        if s.write_all(c).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(30));
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn v2_inet(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v
}

fn field<'a>(req: &'a str, name: &str) -> Option<&'a str> {
    req.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const GET_CLOSE: &[u8] = b"GET /pp HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// HAProxy in TCP mode: one frontend per `(port, server line options)`,
/// each forwarding to `to` with those options (`send-proxy`, …).
fn haproxy(to: SocketAddr, fronts: &[(u16, &str)]) -> (Proc, tempdir::Dir) {
    let dir = tempdir::Dir::new("haproxy");
    let mut conf = String::from(
        "global\n    maxconn 200\ndefaults\n    mode tcp\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n",
    );
    for (i, (port, opts)) in fronts.iter().enumerate() {
        conf.push_str(&format!(
            "frontend f{i}\n    bind 127.0.0.1:{port}\n    default_backend b{i}\n\
             backend b{i}\n    server s{i} {to} {opts}\n"
        ));
    }
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let bin = std::path::Path::new("/usr/sbin/haproxy");
    assert!(
        bin.exists(),
        "haproxy not found: install it (tests/run.sh does); this test is not skipped"
    );
    let mut c = Command::new(bin);
    c.arg("-db").arg("-f").arg(&path);
    let mut p = Proc::spawn(c, &dir.0.join("haproxy.log"));
    for (port, _) in fronts {
        let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(a, &mut p, "haproxy");
    }
    (p, dir)
}

// ---------------------------------------------------------------- accepting

#[test]
fn haproxy_send_proxy_v1_and_v2_carry_the_client_address() {
    let (be, seen) = recording_backend();
    let admin = free_port();
    let rl = Ringlb::start(&config(admin, "proxy_protocol = true", "", &[be.addr]));
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    common::wait_admin(&rl, admin);
    let (p1, p2) = (free_port(), free_port());
    let (_hap, _d) = haproxy(rl.addr, &[(p1, "send-proxy"), (p2, "send-proxy-v2")]);
    // The readiness probes (of ringlb, of HAProxy) count too: compare deltas.
    thread::sleep(Duration::from_millis(200));
    let headers = metric(admin, "ringlb_proxy_protocol_headers_total");
    let bad = ["missing", "malformed", "too_long"].map(|r| pp_errors(admin, r));
    for (port, n) in [(p1, 1), (p2, 2)] {
        let url = format!("http://127.0.0.1:{port}/v{n}");
        let (ok, body, err) = curl(&["--interface", "127.0.0.2", "-H", "X-Real-IP: 6.6.6.6", &url]);
        assert!(ok, "curl via haproxy v{n}: {err}\n{}", rl.log_text());
        assert_eq!(body, b"ok");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (req, n) in seen.iter().zip([1, 2]) {
        assert!(req.starts_with(&format!("GET /v{n} ")), "{req}");
        // HAProxy connected from 127.0.0.1; the header said 127.0.0.2.
        assert_eq!(field(req, "x-forwarded-for"), Some("127.0.0.2"), "{req}");
        assert_eq!(field(req, "x-real-ip"), Some("127.0.0.2"), "{req}");
        assert!(!req.contains("PROXY") && !req.contains("QUIT"), "{req}");
    }
    assert!(metric(admin, "ringlb_proxy_protocol_headers_total") >= headers + 2);
    assert_eq!(
        ["missing", "malformed", "too_long"].map(|r| pp_errors(admin, r)),
        bad
    );
}

#[test]
fn curl_haproxy_protocol_and_a_header_in_the_same_segment_as_the_request() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&config(
        free_port(),
        "proxy_protocol = true",
        "",
        &[be.addr],
    ));
    let url = format!("http://{}/curl", rl.addr);
    let (ok, body, err) = curl(&["--interface", "127.0.0.3", "--haproxy-protocol", &url]);
    assert!(ok && body == b"ok", "{err}");
    // Header and request in one write: not a byte of the request is lost.
    let mut one = b"PROXY TCP4 203.0.113.9 198.18.0.1 40000 80\r\n".to_vec();
    one.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&one])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // IPv6 in v1, and v2 with a TLV, each in one segment with the request.
    let mut six = b"PROXY TCP6 2001:db8::5 ::1 5 80\r\n".to_vec();
    six.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&six])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let mut v2 = v2_inet([192, 0, 2, 44], 1234, [198, 18, 0, 1], 80);
    v2[15] += 5;
    v2.extend_from_slice(&[0x04, 0, 2, b'x', b'y']); // PP2_TYPE_NOOP
    v2.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&v2])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // LOCAL (a balancer's own health check): the socket's address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&local])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = seen.lock().unwrap().clone();
    let xff: Vec<_> = seen
        .iter()
        .map(|r| field(r, "x-forwarded-for").unwrap())
        .collect();
    assert_eq!(
        xff,
        [
            "127.0.0.3",
            "203.0.113.9",
            "2001:db8::5",
            "192.0.2.44",
            "127.0.0.1"
        ],
        "{seen:?}"
    );
}

#[test]
fn a_header_split_over_many_segments_is_reassembled() {
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&config(
        free_port(),
        "proxy_protocol = true",
        "",
        &[be.addr],
    ));
    let v1 = b"PROXY TCP4 203.0.113.10 198.18.0.1 40001 80\r\n";
    // v1 byte by byte, the request in the same segment as the last byte.
    let mut chunks: Vec<Vec<u8>> = v1[..v1.len() - 1].iter().map(|b| vec![*b]).collect();
    let mut last = vec![b'\n'];
    last.extend_from_slice(GET_CLOSE);
    chunks.push(last);
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let resp = String::from_utf8(send_chunks(rl.addr, &refs)).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{resp}\n{}",
        rl.log_text()
    );
    // v2 in three pieces: inside the signature, inside the addresses, and
    // the rest glued to the request.
    let mut v2 = v2_inet([203, 0, 113, 11], 40002, [198, 18, 0, 1], 80);
    v2.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&v2[..5], &v2[5..20], &v2[20..]])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(field(&seen[0], "x-forwarded-for"), Some("203.0.113.10"));
    assert_eq!(field(&seen[1], "x-forwarded-for"), Some("203.0.113.11"));
    for r in &seen {
        assert!(r.starts_with("GET /pp HTTP/1.1\r\n"), "{r}");
    }
}

#[test]
fn missing_malformed_and_cut_off_headers_close_and_are_counted() {
    let (be, seen) = recording_backend();
    let admin = free_port();
    let rl = Ringlb::start(
        &config(admin, "proxy_protocol = true", "", &[be.addr]).replace(
            "[runtime]",
            "[http]\nclient_header_timeout = \"1s\"\n\n[runtime]",
        ),
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    common::wait_admin(&rl, admin);
    let cases: &[(&str, &[&[u8]])] = &[
        ("missing", &[GET_CLOSE]),
        ("missing", &[b"\x16\x03\x01\x00\x05hello"]),
        (
            "malformed",
            &[b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", GET_CLOSE],
        ),
        (
            "malformed",
            &[b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n", GET_CLOSE],
        ),
        ("malformed", &[b"\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x0c"]),
        ("too_long", &[b"PROXY ", &[b'U'; 120]]),
        ("closed", &[b"PROXY TCP4 1.2.3.4"]),
        ("timeout", &[b"PROXY TCP4 1.2.3.4"]),
    ];
    for (reason, chunks) in cases {
        let before = pp_errors(admin, reason);
        let got = if *reason == "closed" {
            // The client gives up: shut its side and go.
            let mut s = common::connect(rl.addr);
            s.write_all(chunks[0]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out
        } else {
            // The timeout case keeps the connection open and silent: ringlb
            // must close it (client_header_timeout 1s; read timeout 10s).
            let started = Instant::now();
            let out = send_chunks(rl.addr, chunks);
            assert!(
                started.elapsed() < Duration::from_secs(9),
                "{reason}: not closed"
            );
            out
        };
        assert!(
            got.is_empty(),
            "{reason}: got {:?}",
            String::from_utf8_lossy(&got)
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while pp_errors(admin, reason) != before + 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(pp_errors(admin, reason), before + 1, "{reason}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "the backend saw {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(metric(admin, "ringlb_proxy_protocol_headers_total"), 0);
    // /stats carries the same numbers.
    let (_, stats) = admin_get(admin, "/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["proxy_protocol"]["errors"]["missing"], 2, "{stats}");
    assert_eq!(v["proxy_protocol"]["errors"]["malformed"], 3, "{stats}");
    // Other connections are unaffected.
    let mut ok = b"PROXY TCP4 203.0.113.12 198.18.0.1 1 80\r\n".to_vec();
    ok.extend_from_slice(GET_CLOSE);
    let resp = String::from_utf8(send_chunks(rl.addr, &[&ok])).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn carried_address_feeds_hash_key_and_the_access_log() {
    let (a, seen_a) = recording_backend();
    let (b, seen_b) = recording_backend();
    let dir = tempdir::Dir::new("pp-log");
    let log = dir.0.join("access.log");
    let text = config(
        free_port(),
        "proxy_protocol = true",
        "balance = \"hash\"\nhash_key = \"client_ip\"",
        &[a.addr, b.addr],
    )
    .replace(
        "[runtime]",
        &format!("[log]\naccess_log = \"{}\"\n\n[runtime]", log.display()),
    );
    let rl = Ringlb::start(&text);
    // 16 carried addresses, 3 connections each (from the same real peer).
    for i in 0..16u8 {
        for _ in 0..3 {
            let mut req = format!(
                "PROXY TCP4 203.0.113.{i} 198.18.0.1 {} 80\r\n",
                1000 + i as u16
            )
            .into_bytes();
            req.extend_from_slice(GET_CLOSE);
            let resp = String::from_utf8(send_chunks(rl.addr, &[&req])).unwrap();
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        }
    }
    let ips = |seen: &Arc<Mutex<Vec<String>>>| -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|r| field(r, "x-forwarded-for").unwrap().to_string())
            .collect()
    };
    let (ia, ib) = (ips(&seen_a), ips(&seen_b));
    assert_eq!(ia.len() + ib.len(), 48);
    // Each carried address always on one server; both servers used.
    for ip in &ia {
        assert!(!ib.contains(ip), "{ip} on both servers");
        assert_eq!(ia.iter().filter(|x| *x == ip).count(), 3);
    }
    assert!(!ia.is_empty() && !ib.is_empty(), "a: {ia:?} b: {ib:?}");
    // The access log names the carried client, never the socket's.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while lines.len() < 48 && Instant::now() < deadline {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lines.len(), 48);
    for l in &lines {
        assert!(l.starts_with("203.0.113."), "{l}");
    }
}

#[test]
fn tls_listener_behind_proxy_v2_and_curl_v1() {
    let pki = Pki::server("localhost");
    let (cert, key) = (pki.file("server.pem"), pki.file("server.key"));
    let (be, seen) = recording_backend();
    let admin = free_port();
    let rl = Ringlb::start(&config(
        admin,
        &format!(
            "proxy_protocol = true\n[listener.tls]\ncertificate = \"{cert}\"\nkey = \"{key}\""
        ),
        "",
        &[be.addr],
    ));
    let hp = free_port();
    let (_hap, _d) = haproxy(rl.addr, &[(hp, "send-proxy-v2")]);
    let via_haproxy = format!("https://localhost:{hp}/tls-v2");
    let resolve = format!("localhost:{hp}:127.0.0.1");
    let (ok, body, err) = curl(&[
        "--cacert",
        &pki.file("ca.pem"),
        "--resolve",
        &resolve,
        "--interface",
        "127.0.0.2",
        &via_haproxy,
    ]);
    assert!(ok && body == b"ok", "{err}\n{}", rl.log_text());
    let direct = format!("https://localhost:{}/tls-v1", rl.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", rl.addr.port());
    let (ok, body, err) = curl(&[
        "--cacert",
        &pki.file("ca.pem"),
        "--resolve",
        &resolve,
        "--interface",
        "127.0.0.3",
        "--haproxy-protocol",
        &direct,
    ]);
    assert!(ok && body == b"ok", "{err}\n{}", rl.log_text());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].starts_with("GET /tls-v2 "));
    assert_eq!(field(&seen[0], "x-forwarded-for"), Some("127.0.0.2"));
    assert_eq!(field(&seen[0], "x-forwarded-proto"), Some("https"));
    assert_eq!(field(&seen[1], "x-forwarded-for"), Some("127.0.0.3"));
    // A TLS client without the header: closed before any handshake byte.
    let got = send_chunks(rl.addr, &[b"\x16\x03\x01\x00\x05hello"]);
    assert!(got.is_empty());
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    assert_eq!(pp_errors(admin, "missing"), 1);
}

// ---------------------------------------------------------------- sending

/// nginx listening with `proxy_protocol`, answering with what the header said.
fn nginx_pp() -> (Proc, SocketAddr, tempdir::Dir) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // nginx expects a header on every connection; a bare connect is fine.
    let (proc, dir) = nginx_with(&[addr], |_| {
        format!(
            r#"access_log off;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{
            return 200 "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port $connection $connection_requests";
        }}
    }}"#
        )
    });
    (proc, addr, dir)
}

#[test]
fn send_proxy_protocol_v1_and_v2_to_nginx() {
    let (_ng, ng, _d) = nginx_pp();
    for v in ["v1", "v2"] {
        // A plain listener: the header names the client socket and the
        // listener address it connected to.
        let rl = Ringlb::start(&config(
            free_port(),
            "",
            &format!("send_proxy_protocol = \"{v}\""),
            &[ng],
        ));
        let mut s = connect_from("127.0.0.2", rl.addr);
        let client = s.local_addr().unwrap();
        let mut buf = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..3 {
            s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let r = read_response(&mut s, &mut buf, false).expect("response");
            assert!(r.starts_with("HTTP/1.1 200"), "{v}: {r}");
            answers.push(common::body_of(&r).to_string());
        }
        let f: Vec<Vec<&str>> = answers.iter().map(|a| a.split(' ').collect()).collect();
        for x in &f {
            assert_eq!(
                &x[..4],
                &[
                    "127.0.0.2",
                    &client.port().to_string(),
                    "127.0.0.1",
                    &rl.addr.port().to_string()
                ],
                "{v}: {answers:?}"
            );
        }
        // One upstream connection (same nginx $connection), requests 1..3:
        // the header arrived once, and the connection was reused by this
        // client's own next requests.
        assert!(f.iter().all(|x| x[4] == f[0][4]), "{v}: {answers:?}");
        assert_eq!(
            f.iter().map(|x| x[5]).collect::<Vec<_>>(),
            ["1", "2", "3"],
            "{v}"
        );
        // Behind a PROXY header in front: the carried addresses go on.
        let rl = Ringlb::start(&config(
            free_port(),
            "proxy_protocol = true",
            &format!("send_proxy_protocol = \"{v}\""),
            &[ng],
        ));
        let mut req = b"PROXY TCP4 203.0.113.7 198.18.0.9 4242 8080\r\n".to_vec();
        req.extend_from_slice(GET_CLOSE);
        let resp = String::from_utf8(send_chunks(rl.addr, &[&req])).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{v}: {resp}");
        let body: Vec<&str> = common::body_of(&resp).split(' ').collect();
        assert_eq!(
            &body[..4],
            &["203.0.113.7", "4242", "198.18.0.9", "8080"],
            "{v}"
        );
    }
}

/// What a scripted backend saw on one upstream connection.
#[derive(Debug, Clone)]
struct UpConn {
    /// The PROXY header's source, as text ("ip:port").
    src: String,
    dst: String,
    /// `X-Forwarded-For` of each request that followed.
    xff: Vec<String>,
}

/// A backend that reads one PROXY header (v1 or v2, parsed here, not with
/// ringlb's parser) at the start of each connection, then requests.
/// Every upstream connection a `pp_backend` accepted, in order.
type UpConns = Arc<Mutex<Vec<Arc<Mutex<UpConn>>>>>;

fn pp_backend() -> (common::Backend, UpConns) {
    let conns: UpConns = Arc::default();
    let c2 = Arc::clone(&conns);
    let be = backend(move |mut s: TcpStream| {
        let mut first = [0u8; 16];
        if s.read_exact(&mut first[..1]).is_err() {
            return;
        }
        let (src, dst) = if first[0] == b'P' {
            let mut line = vec![b'P'];
            while !line.ends_with(b"\r\n") {
                let mut b = [0u8];
                s.read_exact(&mut b).unwrap();
                line.push(b[0]);
            }
            let l = String::from_utf8(line).unwrap();
            let f: Vec<&str> = l.trim_end().split(' ').collect();
            assert_eq!(f.len(), 6, "{l}");
            (format!("{}:{}", f[2], f[4]), format!("{}:{}", f[3], f[5]))
        } else {
            s.read_exact(&mut first[1..]).unwrap();
            assert_eq!(&first[..12], b"\r\n\r\n\0\r\nQUIT\n");
            assert_eq!(first[12], 0x21);
            assert_eq!(first[13], 0x11, "AF_INET, STREAM");
            let len = u16::from_be_bytes([first[14], first[15]]) as usize;
            let mut a = vec![0u8; len];
            s.read_exact(&mut a).unwrap();
            let ip = |o: usize| format!("{}.{}.{}.{}", a[o], a[o + 1], a[o + 2], a[o + 3]);
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (
                format!("{}:{}", ip(0), port(8)),
                format!("{}:{}", ip(4), port(10)),
            )
        };
        let me = Arc::new(Mutex::new(UpConn {
            src,
            dst,
            xff: Vec::new(),
        }));
        c2.lock().unwrap().push(Arc::clone(&me));
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let req = String::from_utf8_lossy(&req).into_owned();
            assert!(req.starts_with("GET /"), "{req}");
            let xff = field(&req, "x-forwarded-for").unwrap_or("").to_string();
            me.lock().unwrap().xff.push(xff.clone());
            let body = format!("{}|{}", me.lock().unwrap().src, xff);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    (be, conns)
}

#[test]
fn a_proxy_tagged_upstream_connection_serves_one_client_only() {
    for v in ["v1", "v2"] {
        let (be, conns) = pp_backend();
        let rl = Ringlb::start(&config(
            free_port(),
            "proxy_protocol = true",
            &format!("send_proxy_protocol = \"{v}\"\nkeepalive = 8"),
            &[be.addr],
        ));
        let open = |ip: &str, port: u16| {
            let mut s = common::connect(rl.addr);
            s.write_all(format!("PROXY TCP4 {ip} 198.18.0.1 {port} 80\r\n").as_bytes())
                .unwrap();
            (s, Vec::new())
        };
        let ask = |c: &mut (TcpStream, Vec<u8>)| -> String {
            c.0.write_all(b"GET /k HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let r = read_response(&mut c.0, &mut c.1, false).expect("response");
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            common::body_of(&r).to_string()
        };
        let mut a = open("203.0.113.1", 1111);
        let mut b = open("203.0.113.2", 2222);
        // Interleaved keep-alive requests of two clients.
        for _ in 0..3 {
            assert_eq!(ask(&mut a), "203.0.113.1:1111|203.0.113.1", "{v}");
            assert_eq!(ask(&mut b), "203.0.113.2:2222|203.0.113.2", "{v}");
        }
        // A leaves; C arrives: C never gets A's (or B's) connection.
        drop(a);
        thread::sleep(Duration::from_millis(100));
        let mut c = open("203.0.113.3", 3333);
        for _ in 0..2 {
            assert_eq!(ask(&mut c), "203.0.113.3:3333|203.0.113.3", "{v}");
        }
        assert_eq!(ask(&mut b), "203.0.113.2:2222|203.0.113.2", "{v}");
        drop((b, c));
        let conns: Vec<UpConn> = conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect();
        // One upstream connection per client, one header each, every
        // request on it from the client the header names.
        assert_eq!(conns.len(), 3, "{v}: {conns:?}");
        let mut per: Vec<(String, usize)> = conns
            .iter()
            .map(|c| {
                let ip = c.src.split(':').next().unwrap().to_string();
                assert!(c.xff.iter().all(|x| *x == ip), "{v}: {c:?}");
                assert_eq!(c.dst, "198.18.0.1:80", "{v}");
                (c.src.clone(), c.xff.len())
            })
            .collect();
        per.sort();
        assert_eq!(
            per,
            [
                ("203.0.113.1:1111".to_string(), 3),
                ("203.0.113.2:2222".to_string(), 4),
                ("203.0.113.3:3333".to_string(), 2)
            ],
            "{v}"
        );
        assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}

#[test]
fn check_validates_the_keys() {
    let dir = tempdir::Dir::new("pp-check");
    let run = |text: &str| {
        let p = dir.0.join("c.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(common::BIN)
            .arg("check")
            .arg("-c")
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let base = |l: &str, u: &str| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"app\"\n{l}\n\
             [upstream.app]\n{u}\n[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n"
        )
    };
    assert!(
        run(&base(
            "proxy_protocol = true",
            "send_proxy_protocol = \"v1\""
        ))
        .0
    );
    assert!(
        run(&base(
            "proxy_protocol = false",
            "send_proxy_protocol = \"v2\""
        ))
        .0
    );
    let (ok, err) = run(&base("proxy_protocol = \"yes\"", ""));
    assert!(
        !ok && err.contains(":4:") && err.contains("true or false"),
        "{err}"
    );
    let (ok, err) = run(&base("", "send_proxy_protocol = \"v3\""));
    assert!(
        !ok && err.contains(":6:") && err.contains("send_proxy_protocol") && err.contains("\"v2\""),
        "{err}"
    );
}

#[test]
fn import_maps_listen_proxy_protocol() {
    let dir = tempdir::Dir::new("pp-import");
    let conf = dir.0.join("nginx.conf");
    std::fs::write(
        &conf,
        "http {\n  upstream app { server 127.0.0.1:9000; }\n  server {\n    \
         listen 127.0.0.1:8080 proxy_protocol;\n    set_real_ip_from 10.0.0.0/8;\n    \
         real_ip_header proxy_protocol;\n    location / { proxy_pass http://app; }\n  }\n}\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .arg("import")
        .arg("--nginx")
        .arg(&conf)
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(toml.contains("listen = \"127.0.0.1:8080\""), "{toml}");
    assert!(toml.contains("proxy_protocol = true"), "{toml}");
    // The trust list is not enforced: said as a warning, at its line.
    assert!(
        err.contains(":5:") && err.contains("set_real_ip_from"),
        "{err}"
    );
    assert!(
        !err.contains(":6:"),
        "real_ip_header proxy_protocol is covered: {err}"
    );
    // And the result passes `check`.
    let t = dir.0.join("out.toml");
    std::fs::write(&t, toml.as_bytes()).unwrap();
    let st = Command::new(common::BIN)
        .arg("check")
        .arg("-c")
        .arg(&t)
        .status()
        .unwrap();
    assert!(st.success());
}

/// nginx with two `proxy_protocol` listeners, one plain and one TLS
/// (self-signed `localhost`), both answering with the header's address
/// and logging every request with it (`$proxy_protocol_addr`, `-` when the
/// header named no client) to `access.log`.
fn nginx_pp_plain_and_tls() -> (Proc, SocketAddr, SocketAddr, tempdir::Dir, Pki) {
    let pki = Pki::server("localhost");
    let (cert, key) = (pki.file("server.pem"), pki.file("server.key"));
    let (plain, tls) = (free_port(), free_port());
    let at = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let (proc, dir) = nginx_with(&[at(plain), at(tls)], |d| {
        format!(
            r#"log_format pp "[$proxy_protocol_addr] $request";
    access_log {d}/access.log pp;
    server {{
        listen 127.0.0.1:{plain} proxy_protocol;
        listen 127.0.0.1:{tls} ssl proxy_protocol;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            return 200 "$proxy_protocol_addr $scheme";
        }}
    }}"#
        )
    });
    (proc, at(plain), at(tls), dir, pki)
}

#[test]
fn health_checks_and_tls_upstreams_send_the_header_first() {
    let (_ng, plain, tls, dir, _pki) = nginx_pp_plain_and_tls();
    let log = |name: &str| std::fs::read_to_string(dir.0.join(name)).unwrap_or_default();
    for v in ["v1", "v2"] {
        // Health checks of an upstream that sends the header: a header
        // naming no client (v1 UNKNOWN, v2 LOCAL), then the GET. Without
        // it nginx answers nothing ("broken header") and fall = 2 marks
        // the only server down.
        let admin = free_port();
        let rl = Ringlb::start(&config(
            admin,
            "",
            &format!(
                "send_proxy_protocol = \"{v}\"\n\
                 [upstream.app.health_check]\nkind = \"http\"\npath = \"/health-{v}\"\n\
                 interval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 2\n"
            ),
            &[plain],
        ));
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
        let want = format!("[-] GET /health-{v} HTTP/1.1");
        let deadline = Instant::now() + Duration::from_secs(20);
        while log("access.log").matches(&want).count() < 5 {
            assert!(
                Instant::now() < deadline,
                "{v}: probes: {}",
                log("access.log")
            );
            thread::sleep(Duration::from_millis(50));
        }
        // /stats lists a server's health once the checker changed it: the
        // probes nginx logged kept it up, so it never went down.
        let (st, stats) = admin_get(admin, "/stats");
        assert_eq!(st, 200);
        let j: serde_json::Value = serde_json::from_str(&stats).unwrap();
        let srv = &j["servers"][0];
        assert!(srv["health"] != "down", "{v}: {srv}");
        let mut s = connect_from("127.0.0.2", rl.addr);
        s.write_all(GET_CLOSE).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{v}: {resp}");
        assert_eq!(common::body_of(&resp), "127.0.0.2 http", "{v}");
        drop(rl);

        // A TLS upstream: the header goes on the TCP connection before
        // the ClientHello, not inside the TLS stream.
        let rl = Ringlb::start(&config(
            free_port(),
            "",
            &format!(
                "send_proxy_protocol = \"{v}\"\ntls = true\ntls_verify = false\n\
                 tls_server_name = \"localhost\""
            ),
            &[tls],
        ));
        let mut s = connect_from("127.0.0.3", rl.addr);
        s.write_all(GET_CLOSE).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{v}: {resp}");
        assert_eq!(common::body_of(&resp), "127.0.0.3 https", "{v}");
    }
    // (`broken header: ""` lines are the bare connects that waited for
    // nginx to listen.)
    let errors = log("error.log");
    assert!(
        !errors
            .lines()
            .any(|l| l.contains("broken header") && !l.contains("broken header: \"\"")),
        "{errors}"
    );
}
