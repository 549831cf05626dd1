//! TLS to upstream servers, end to end: the real binary proxying plain
//! HTTP clients to nginx serving HTTPS with certificates of a test CA.
//! What the client got and what nginx saw (`$ssl_server_name` = the SNI
//! ringlb sent, `$connection`/`$connection_requests` = reuse) are both
//! asserted, and the counters in `/stats`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::peers::{nginx_with, Proc};
use common::pki::Pki;
use common::{admin_get, body_of, connect, free_port, read_response, status_of, tempdir, Ringlb};

/// nginx on HTTPS with two names: `a.test` (default, certificate `a`) and
/// `b.test` (certificate `b`); every response tells the SNI it got and
/// which connection and request it was.
struct TlsNginx {
    addr: SocketAddr,
    /// Access log: `$ssl_server_name $uri $status` per request.
    access: std::path::PathBuf,
    _proc: Proc,
    _dir: tempdir::Dir,
}

fn tls_nginx(pki: &Pki) -> TlsNginx {
    let port = free_port();
    let server = |name: &str, default: &str| {
        format!(
            r#"    server {{
        listen 127.0.0.1:{port} ssl{default};
        server_name {name};
        ssl_certificate {pem};
        ssl_certificate_key {key};
        location / {{ return 200 "$ssl_server_name $connection $connection_requests\n"; }}
    }}
"#,
            pem = pki.path(&format!("{}.pem", &name[..1])).display(),
            key = pki.path(&format!("{}.key", &name[..1])).display(),
        )
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (proc, dir) = nginx_with(&[addr], |d| {
        format!(
            "log_format sni '$ssl_server_name $uri $status';\naccess_log {d}/access.log sni;\n\
             keepalive_timeout 60s;\nkeepalive_requests 1000;\n{}{}",
            server("a.test", " default_server"),
            server("b.test", "")
        )
    });
    TlsNginx {
        addr,
        access: dir.0.join("access.log"),
        _proc: proc,
        _dir: dir,
    }
}

/// One GET on `s` (keep-alive); returns (status, body).
fn get(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> (u16, String) {
    s.write_all(b"GET /x HTTP/1.1\r\nHost: front\r\n\r\n")
        .unwrap();
    let r = read_response(s, buf, false).expect("a response");
    (status_of(&r), body_of(&r).to_string())
}

fn upstream_tls(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = admin_get(admin, "/stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["tls"]["upstream"].clone()
}

#[test]
fn upstream_tls_verifies_sends_the_name_and_reuses_connections() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    pki.leaf("b", &["b.test"], 30);
    let other = Pki::named("some other CA");
    let ng = tls_nginx(&pki);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (p2, p3) = (free_port(), free_port());
    let ca = pki.path("ca.pem").display().to_string();
    let other_ca = other.path("ca.pem").display().to_string();
    let cfg = format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"good\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{p2}\"\nupstream = \"wrong_ca\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{p3}\"\nupstream = \"wrong_name\"\n\
         [upstream.good]\ntls = true\ntls_server_name = \"b.test\"\ntls_ca = \"{ca}\"\nretries = 0\n\
         [[upstream.good.server]]\naddress = \"{be}\"\n\
         [upstream.wrong_ca]\ntls = true\ntls_server_name = \"a.test\"\ntls_ca = \"{other_ca}\"\nretries = 0\n\
         [[upstream.wrong_ca.server]]\naddress = \"{be}\"\n\
         [upstream.wrong_name]\ntls = true\ntls_server_name = \"c.test\"\ntls_ca = \"{ca}\"\nretries = 0\n\
         [[upstream.wrong_name.server]]\naddress = \"{be}\"\n",
        be = ng.addr
    );
    let rl = Ringlb::start(&cfg);
    common::wait_admin(&rl, admin);

    // Five requests from one client: nginx got SNI b.test (its b.test
    // certificate verified against the test CA), all on one connection.
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    let mut conns = Vec::new();
    for want in 1..=5 {
        let (status, body) = get(&mut s, &mut buf);
        assert_eq!(status, 200, "{body}\n{}", rl.log_text());
        let f: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{body}");
        assert_eq!(f[0], "b.test", "SNI nginx saw");
        assert_eq!(
            f[2],
            want.to_string(),
            "request number on nginx's connection"
        );
        conns.push(f[1].to_string());
    }
    conns.dedup();
    assert_eq!(conns.len(), 1, "not one upstream connection: {conns:?}");
    // Separate clients reuse the pooled connection as well.
    for _ in 0..3 {
        let mut s = connect(rl.addr);
        let mut buf = Vec::new();
        let (status, body) = get(&mut s, &mut buf);
        assert_eq!(status, 200);
        assert_eq!(
            body.split_whitespace().nth(1),
            Some(conns[0].as_str()),
            "{body}"
        );
    }
    // A client that asks to close gets the whole answer, then a clean
    // close (its last segment carries the FIN); nginx served it as the 9th
    // request on the same pooled connection.
    let mut s = connect(rl.addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("a clean close");
    let text = String::from_utf8_lossy(&all);
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(
        text.ends_with(&format!("\r\n\r\nb.test {} 9\n", conns[0])),
        "{text}"
    );
    let up = upstream_tls(admin);
    assert_eq!(up["handshakes"], 1, "{up}");
    assert_eq!(up["failures"], 0, "{up}");

    // A certificate of a CA not in tls_ca, and a name the certificate
    // does not carry: 502, counted, the client connection still answered.
    for (port, n) in [(p2, 1), (p3, 2)] {
        let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut s = connect(a);
        let mut buf = Vec::new();
        let (status, body) = get(&mut s, &mut buf);
        assert_eq!(status, 502, "{body}");
        let start = Instant::now();
        while upstream_tls(admin)["failures"] != n && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(upstream_tls(admin)["failures"], n);
    }
    let log = rl.log_text();
    assert!(log.contains("TLS handshake failed"), "{log}");
    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.contains("ringlb_upstream_tls_handshake_failures_total 2"),
        "{metrics}"
    );
}

#[test]
fn http_health_checks_run_over_tls_and_fail_on_a_bad_certificate() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    pki.leaf("b", &["b.test"], 30);
    let ng = tls_nginx(&pki);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ca = pki.path("ca.pem").display().to_string();
    let hc = "kind = \"http\"\npath = \"/hc\"\ninterval = \"100ms\"\ntimeout = \"2s\"\nrise = 1\nfall = 1\n";
    let cfg = format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"good\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{p2}\"\nupstream = \"bad\"\n\
         [upstream.good]\ntls = true\ntls_server_name = \"a.test\"\ntls_ca = \"{ca}\"\n\
         [upstream.good.health_check]\n{hc}\
         [[upstream.good.server]]\naddress = \"{be}\"\n\
         [upstream.bad]\ntls = true\ntls_server_name = \"nope.test\"\ntls_ca = \"{ca}\"\n\
         [upstream.bad.health_check]\n{hc}\
         [[upstream.bad.server]]\naddress = \"{be}\"\n",
        p2 = free_port(),
        be = ng.addr
    );
    let rl = Ringlb::start(&cfg);
    common::wait_admin(&rl, admin);
    let healthy = |up: &str| -> Option<bool> {
        let (_, body) = admin_get(admin, "/stats");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let mut all = v["servers"].as_array()?.clone();
        all.extend(v["unused_servers"].as_array().cloned().unwrap_or_default());
        all.iter()
            .find(|s| s["upstream"] == up)
            .and_then(|s| s["health"].as_str())
            .map(|h| h == "up")
    };
    // nginx serves only TLS on that port: probes it logged with SNI a.test
    // came over TLS, verified.
    let probes = || {
        std::fs::read_to_string(&ng.access)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "a.test /hc 200")
            .count()
    };
    let start = Instant::now();
    while !(probes() >= 3 && healthy("bad") == Some(false))
        && start.elapsed() < Duration::from_secs(15)
    {
        thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = admin_get(admin, "/stats");
    assert_eq!(healthy("bad"), Some(false), "{body}\n{}", rl.log_text());
    assert!(
        probes() >= 3,
        "{}",
        std::fs::read_to_string(&ng.access).unwrap_or_default()
    );
    // `good` was never taken out (fall = 1: one failed probe would have).
    assert_ne!(healthy("good"), Some(false), "{body}\n{}", rl.log_text());
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    let (status, body) = get(&mut s, &mut buf);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("a.test "), "{body}");
}

/// Backends' own certificates, verified as nginx (`proxy_ssl_verify`) and
/// curl verify them: a self-signed certificate given as its own `tls_ca`
/// (made with `openssl req -x509`, so marked a CA), and a CA-issued one
/// whose only name is its common name. Each is accepted for its name only;
/// another name, or another key under the same subject, is a 502 that
/// never reaches nginx.
#[test]
fn self_signed_and_common_name_only_backends_verify_as_nginx_does() {
    let pki = Pki::new();
    pki.self_signed("ss", "backend.internal", Some("DNS:backend.internal"));
    pki.self_signed("ss_cn", "cn-only.internal", None);
    pki.cn_leaf("cn", "cn.test");
    pki.v1_leaf("v1", "v1.test");
    // Same subject as `ss`, another key: must not pass for it.
    let impostor = Pki::new();
    impostor.self_signed("ss", "backend.internal", Some("DNS:backend.internal"));
    // One nginx port per certificate; each response names its port.
    let certs = ["ss", "ss_cn", "cn", "v1"];
    let ports: Vec<u16> = certs.iter().map(|_| free_port()).collect();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    let servers: String = certs
        .iter()
        .zip(&ports)
        .map(|(c, p)| {
            format!(
                "server {{ listen 127.0.0.1:{p} ssl; ssl_certificate {}; ssl_certificate_key {}; \
                 location / {{ return 200 \"{c} $ssl_server_name\\n\"; }} }}\n",
                pki.path(&format!("{c}.pem")).display(),
                pki.path(&format!("{c}.key")).display()
            )
        })
        .collect();
    let (_ng, ng_dir) = common::peers::nginx_with(&addrs, |d| {
        format!(
            "log_format who '$server_port $ssl_server_name $status';\n\
             access_log {d}/access.log who;\n{servers}"
        )
    });
    // (upstream, nginx port, tls_server_name, tls_ca, want status)
    let f = |n: &str| pki.file(n);
    let cases = [
        ("ss_ok", ports[0], "backend.internal", f("ss.pem"), 200),
        (
            "ss_other_name",
            ports[0],
            "other.internal",
            f("ss.pem"),
            502,
        ),
        (
            "ss_other_key",
            ports[0],
            "backend.internal",
            impostor.file("ss.pem"),
            502,
        ),
        (
            "ss_cn_ok",
            ports[1],
            "cn-only.internal",
            f("ss_cn.pem"),
            200,
        ),
        ("cn_ok", ports[2], "cn.test", f("ca.pem"), 200),
        ("cn_other_name", ports[2], "other.test", f("ca.pem"), 502),
        // A CA-issued certificate is not its own root.
        ("cn_not_a_root", ports[2], "cn.test", f("ss.pem"), 502),
        // X.509 v1 is beyond webpki: refused, with the fix in the log.
        ("v1", ports[3], "v1.test", f("ca.pem"), 502),
    ];
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen: Vec<u16> = cases.iter().map(|_| free_port()).collect();
    let mut cfg = format!("[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n");
    for ((name, port, sni, ca, _), l) in cases.iter().zip(&listen) {
        cfg += &format!(
            "[[listener]]\nlisten = \"127.0.0.1:{l}\"\nupstream = \"{name}\"\n\
             [upstream.{name}]\ntls = true\ntls_server_name = \"{sni}\"\ntls_ca = \"{ca}\"\nretries = 0\n\
             [[upstream.{name}.server]]\naddress = \"127.0.0.1:{port}\"\n"
        );
    }
    // Ringlb::start needs one `{port}` listener: a spare one, unused.
    cfg += "[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"ss_ok\"\n";
    let rl = Ringlb::start(&cfg);
    common::wait_admin(&rl, admin);
    let mut failures = 0;
    for ((name, port, sni, _, want), l) in cases.iter().zip(&listen) {
        let mut s = connect(format!("127.0.0.1:{l}").parse().unwrap());
        let mut buf = Vec::new();
        let (status, body) = get(&mut s, &mut buf);
        assert_eq!(status, *want, "{name}: {body}\n{}", rl.log_text());
        if *want == 200 {
            let cert = certs[ports.iter().position(|p| p == port).unwrap()];
            assert_eq!(body, format!("{cert} {sni}\n"), "{name}");
        } else {
            failures += 1;
            let start = Instant::now();
            while upstream_tls(admin)["failures"] != failures
                && start.elapsed() < Duration::from_secs(10)
            {
                thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(upstream_tls(admin)["failures"], failures, "{name}");
        }
    }
    // nginx logged exactly the accepted requests, each once, with the SNI
    // ringlb sent; the refused handshakes carried no request.
    let mut logged: Vec<String> = std::fs::read_to_string(ng_dir.0.join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    logged.sort();
    let mut want: Vec<String> = cases
        .iter()
        .filter(|c| c.4 == 200)
        .map(|(_, port, sni, _, _)| format!("{port} {sni} 200"))
        .collect();
    want.sort();
    assert_eq!(logged, want);
    let log = rl.log_text();
    assert_eq!(
        log.matches("TLS handshake failed: invalid peer certificate")
            .count(),
        5,
        "{log}"
    );
    assert!(log.contains("X.509 v1 certificate"), "{log}");
    // The name is what the self-signed certificate was refused for.
    let other_name = log
        .lines()
        .find(|l| l.contains("upstream ss_other_name "))
        .unwrap();
    assert!(other_name.contains("not valid for name"), "{other_name}");
}

/// A `tls = true` server that accepts TCP and never answers the
/// ClientHello: the handshake stalls until `connect_timeout`. The client
/// gets `504`, as nginx answers a `proxy_connect_timeout` that expires in
/// the SSL handshake; the log says the TLS handshake timed out (not a bare
/// connect timeout); `/stats` and `/metrics` count an upstream TLS
/// handshake failure that was a timeout; and the server is blamed exactly
/// as for a connect timeout (`failures.connect`, out after `max_fails`).
#[test]
fn a_stalled_upstream_tls_handshake_is_counted_as_a_handshake_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = silent.local_addr().unwrap();
    let (tx, held) = std::sync::mpsc::channel();
    thread::spawn(move || {
        // Accept, read nothing, answer nothing; keep the socket open.
        if let Ok((s, _)) = silent.accept() {
            let _ = tx.send(s);
        }
    });
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"{admin}\"\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         [upstream.app]\ntls = true\ntls_verify = false\nconnect_timeout = \"300ms\"\nretries = 0\n\
         [[upstream.app.server]]\naddress = \"{backend}\"\nmax_fails = 1\nfail_timeout = \"60s\"\n"
    );
    let rl = Ringlb::start(&cfg);
    common::wait_admin(&rl, admin);
    let mut s = connect(rl.addr);
    let mut buf = Vec::new();
    let (status, body) = get(&mut s, &mut buf);
    assert_eq!(status, 504, "{body}\n{}", rl.log_text());
    let _held = held
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend accepted ringlb's connection");
    let start = Instant::now();
    while upstream_tls(admin)["failures"] != 1 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    let up = upstream_tls(admin);
    assert_eq!(up["failures"], 1, "{up}");
    assert_eq!(up["timeouts"], 1, "{up}");
    assert_eq!(up["handshakes"], 0, "{up}");
    assert_eq!(
        common::metric(admin, "ringlb_upstream_tls_handshake_failures_total"),
        1
    );
    assert_eq!(
        common::metric(admin, "ringlb_upstream_tls_handshake_timeouts_total"),
        1
    );
    // Passive health: a connect failure of the server, which max_fails = 1
    // takes out.
    let server = |v: &serde_json::Value| v["servers"][0].clone();
    let stats =
        || -> serde_json::Value { serde_json::from_str(&admin_get(admin, "/stats").1).unwrap() };
    let start = Instant::now();
    while server(&stats())["health"] != "down" && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
    }
    let srv = server(&stats());
    assert_eq!(srv["failures"]["connect"], 1, "{srv}");
    assert_eq!(srv["failures"]["timeout"], 0, "{srv}");
    assert_eq!(srv["health"], "down", "{srv}");
    let log = rl.log_text();
    assert!(
        log.contains(&format!(
            "upstream app server {backend}: TLS handshake timed out"
        )),
        "{log}"
    );
    assert!(!log.contains("ConnectTimeout"), "{log}");
}
