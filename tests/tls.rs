//! TLS termination end to end: the real binary, certificates made by the
//! test with the openssl CLI (a test CA and ECDSA P-256 leaves), real
//! clients (curl, Python's ssl module, a rustls client for byte-level
//! control), and a recording backend that shows what was forwarded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::pki::{openssl, Pki};
use common::{backend, free_port, python, read_request, recording_backend, Backend, Ringlb, BIN};

// ---------------------------------------------------------------- setup

struct Setup {
    rl: Ringlb,
    admin: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    pki: Pki,
    _be: Backend,
}

/// ringlb with one TLS listener: `a` (a.test, *.a.test) as the default
/// certificate and `b` (b.test) by SNI; `tls_extra` goes into
/// `[listener.tls]`.
fn start(tls_extra: &str) -> Setup {
    start_with(tls_extra, |_| {})
}

/// [`start`], with `prepare` run on the PKI first; `{dir}` in `tls_extra`
/// is the PKI's directory.
fn start_with(tls_extra: &str, prepare: impl FnOnce(&Pki)) -> Setup {
    start_behind(tls_extra, prepare, recording_backend())
}

/// [`start_with`], in front of `be` (`seen`: what it records).
fn start_behind(
    tls_extra: &str,
    prepare: impl FnOnce(&Pki),
    (be, seen): (Backend, Arc<Mutex<Vec<String>>>),
) -> Setup {
    let pki = Pki::new();
    pki.leaf("a", &["a.test", "*.a.test"], 30);
    pki.leaf("b", &["b.test"], 30);
    prepare(&pki);
    let tls_extra = tls_extra.replace("{dir}", &pki.dir.0.display().to_string());
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[runtime]\nworkers = 2\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [log]\naccess_log = \"{}/access.log\"\naccess_log_format = \"json\"\n\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         [listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n{tls_extra}\n\
         [[listener.tls.sni]]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.dir.0.display(),
        pki.path("a.pem").display(),
        pki.path("a.key").display(),
        pki.path("b.pem").display(),
        pki.path("b.key").display(),
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    Setup {
        rl,
        admin,
        seen,
        pki,
        _be: be,
    }
}

fn stats(admin: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").expect("a response").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn tls_counter(admin: SocketAddr, path: &[&str]) -> u64 {
    let mut v = stats(admin)["tls"].clone();
    for p in path {
        v = v[*p].clone();
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("no tls counter {path:?}"))
}

/// Waits (bounded) until a TLS counter reaches `want`; returns its value.
fn wait_counter(admin: SocketAddr, path: &[&str], want: u64) -> u64 {
    let start = Instant::now();
    loop {
        let v = tls_counter(admin, path);
        if v >= want || start.elapsed() > Duration::from_secs(20) {
            return v;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is needed for these tests (apt-get install curl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl to `https://a.test:PORT{path}` verifying against the test CA;
/// asserts it got the backend's `ok`.
#[track_caller]
fn curl_ok(ca: &Path, port: u16, path: &str) {
    curl_ok_with(ca, port, path, &[]);
}

/// [`curl_ok`] with more curl arguments (TLS versions, cipher suites).
#[track_caller]
fn curl_ok_with(ca: &Path, port: u16, path: &str, extra: &[&str]) {
    let mut args = extra.to_vec();
    let resolve = format!("a.test:{port}:127.0.0.1");
    let url = format!("https://a.test:{port}{path}");
    args.extend_from_slice(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    let (ok, body, err) = curl(&args);
    assert!(ok && body == "ok", "{path} {extra:?}: {err}");
}

/// What the Python ssl clients below start with: `read_all`, everything a
/// TLS socket delivers until the server closes (close_notify or FIN).
const PY_READ_ALL: &str = r#"
import json, socket, ssl, sys
def read_all(s):
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not d:
            break
        data += d
    return data
"#;

/// Runs `PY_READ_ALL` + `script` with `args`; its stdout parsed as JSON.
fn py_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .args(["-c", &format!("{PY_READ_ALL}{script}")])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: python said {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Python ssl client: two connections (the second offering the first's
/// session), each sending one request; prints JSON.
const PY_CLIENT: &str = r#"
port, sni, ca, ver, mode = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
if mode == "verify":
    ctx.load_verify_locations(ca)
else:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
if ver in ("1.2", "1.3"):
    v = ssl.TLSVersion.TLSv1_2 if ver == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = v
    ctx.maximum_version = v
if len(sys.argv) > 6:
    ctx.set_ciphers(sys.argv[6])
def once(session=None):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, session=session) as s:
            s.sendall(b"GET /py HTTP/1.1\r\nHost: " + sni.encode() + b"\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n")
            head, _, body = read_all(s).partition(b"\r\n\r\n")
            return dict(version=s.version(), reused=s.session_reused, alpn=s.selected_alpn_protocol(),
                        cert=s.getpeercert(binary_form=True).hex(),
                        status=head.split(b" ")[1].decode(), body=body.decode()), s.session
try:
    first, sess = once()
    second, _ = once(sess)
    print(json.dumps(dict(ok=True, first=first, second=second)))
except (ssl.SSLError, OSError) as e:
    print(json.dumps(dict(ok=False, error=str(e))))
"#;

fn py_client(port: u16, sni: &str, ca: &Path, ver: &str, verify: bool) -> serde_json::Value {
    let port = port.to_string();
    let mode = if verify { "verify" } else { "none" };
    py_json(PY_CLIENT, &[&port, sni, ca.to_str().unwrap(), ver, mode])
}

/// [`py_client`] on TLS 1.2 offering only the cipher suites `ciphers`
/// (OpenSSL names).
fn py_client_ciphers(
    port: u16,
    sni: &str,
    ca: &Path,
    verify: bool,
    ciphers: &str,
) -> serde_json::Value {
    let port = port.to_string();
    let mode = if verify { "verify" } else { "none" };
    py_json(
        PY_CLIENT,
        &[&port, sni, ca.to_str().unwrap(), "1.2", mode, ciphers],
    )
}

/// Every request the backend saw carried exactly one `X-Forwarded-Proto`,
/// `https` (the client's own `http` one was replaced).
fn assert_forwarded_https(seen: &[String]) {
    assert!(!seen.is_empty(), "the backend saw no request");
    for req in seen {
        let lower = req.to_ascii_lowercase();
        let n = lower.matches("x-forwarded-proto:").count();
        assert_eq!(n, 1, "X-Forwarded-Proto not exactly once:\n{req}");
        assert!(
            lower.contains("x-forwarded-proto: https\r\n"),
            "not https:\n{req}"
        );
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn curl_and_python_verify_the_chain_and_sni_picks_each_certificate() {
    let s = start("");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    for host in ["a.test", "www.a.test", "b.test"] {
        let (ok, body, err) = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "-H",
            "X-Forwarded-Proto: http",
            &format!("https://{host}:{port}/curl"),
        ]);
        assert!(ok, "curl to {host} failed: {err}\n{}", s.rl.log_text());
        assert_eq!(body, "ok");
    }
    // Python reports which certificate it got: each name its own.
    let a = s.pki.der_hex("a");
    let b = s.pki.der_hex("b");
    for (host, want) in [("a.test", &a), ("x.a.test", &a), ("b.test", &b)] {
        let r = py_client(port, host, &ca, "any", true);
        assert_eq!(r["ok"], true, "{host}: {r}");
        assert_eq!(
            r["first"]["cert"].as_str().unwrap(),
            want.as_str(),
            "{host}"
        );
        assert_eq!(r["first"]["status"], "200");
        assert_eq!(r["first"]["body"], "ok");
        assert_eq!(r["first"]["alpn"], serde_json::Value::Null);
    }
    // 3 curl + 3 × 2 Python requests, each forwarded once.
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 9, "{seen:#?}");
    assert_forwarded_https(&seen);
    assert!(tls_counter(s.admin, &["handshakes"]) >= 9);
}

#[test]
fn tls12_and_tls13_each_negotiate_and_resume() {
    let s = start("");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    for (ver, name) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let r = py_client(port, "a.test", &ca, ver, true);
        assert_eq!(r["ok"], true, "{ver}: {r}");
        assert_eq!(r["first"]["version"], name);
        assert_eq!(r["second"]["version"], name);
        assert_eq!(r["first"]["reused"], false);
        // TLS 1.2: session ID from the shared cache; 1.3: a ticket. The two
        // connections may land on different shards (workers = 2).
        assert_eq!(r["second"]["reused"], true, "{ver} not resumed: {r}");
        assert_eq!(r["second"]["status"], "200");
    }
    assert_eq!(wait_counter(s.admin, &["resumed"], 2), 2);
    // curl limited to each version works too.
    for flags in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        curl_ok_with(&ca, port, "/v", &flags);
    }
    assert_forwarded_https(&s.seen.lock().unwrap());
}

/// Python ssl client: a TLS 1.3 handshake and nothing else (as
/// `openssl s_client -sess_out f < /dev/null` and resumption checkers do),
/// then a second connection offering that session with one request.
const PY_HANDSHAKE_ONLY: &str = r#"
port, sni, ca = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
with socket.create_connection(("127.0.0.1", int(port)), timeout=15) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        # No request: whatever arrives now is post-handshake (tickets).
        s.settimeout(2)
        try:
            s.recv(1)
        except (TimeoutError, socket.timeout):
            pass
        sess = s.session
with socket.create_connection(("127.0.0.1", int(port)), timeout=15) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni, session=sess) as s:
        s.sendall(b"GET /again HTTP/1.1\r\nHost: " + sni.encode() + b"\r\nConnection: close\r\n\r\n")
        data = read_all(s)
        print(json.dumps(dict(ticket=sess.has_ticket, reused=s.session_reused,
                              status=data.split(b" ")[1].decode())))
"#;

#[test]
fn a_handshake_only_client_gets_a_ticket_and_resumes() {
    let s = start("");
    let ca = s.pki.path("ca.pem");
    let port = s.rl.addr.port().to_string();
    let r = py_json(PY_HANDSHAKE_ONLY, &[&port, "a.test", ca.to_str().unwrap()]);
    assert_eq!(r["ticket"], true, "no ticket after the handshake: {r}");
    assert_eq!(r["reused"], true, "{r}");
    assert_eq!(r["status"], "200", "{r}");
    // Only the second connection sent a request, and it reached the backend once.
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].starts_with("GET /again HTTP/1.1\r\n"), "{seen:#?}");
}

#[test]
fn session_tickets_off_and_tls13_only_are_honoured() {
    let s = start("protocols = [\"TLSv1.3\"]\nsession_tickets = false\n");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let r = py_client(port, "a.test", &ca, "1.2", true);
    assert_eq!(r["ok"], false, "TLS 1.2 must be refused: {r}");
    assert_eq!(
        wait_counter(s.admin, &["failures", "no_shared_version"], 1),
        1
    );
    assert_eq!(tls_counter(s.admin, &["failures", "no_shared_cipher"]), 0);
    // TLS 1.3 still resumes, from the server-side session cache.
    let r = py_client(port, "a.test", &ca, "1.3", true);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["second"]["reused"], true, "{r}");
}

#[test]
fn unknown_sni_gets_the_default_certificate_and_is_counted_when_refused() {
    let s = start("");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    // A verifying client refuses the default certificate for another name.
    let r = py_client(port, "nope.example", &ca, "any", true);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("certificate verify failed"),
        "{r}"
    );
    assert_eq!(wait_counter(s.admin, &["failures", "unknown_sni"], 1), 1);
    // A client that does not verify is served the default (first) one.
    let r = py_client(port, "nope.example", &ca, "any", false);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["first"]["cert"].as_str().unwrap(), s.pki.der_hex("a"));
    // No SNI at all (an IP address): the default as well.
    let r = py_client(port, "127.0.0.1", &ca, "any", false);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["first"]["cert"].as_str().unwrap(), s.pki.der_hex("a"));
}

/// An RSA and an ECDSA certificate for the same names (as nginx takes two
/// `ssl_certificate` lines): each client gets the one its cipher suites
/// can use, also without SNI; TLS 1.3 clients the first configured.
#[test]
fn rsa_and_ecdsa_certificates_for_one_name_each_serve_their_clients() {
    let s = start_with(
        "[[listener.tls.sni]]\ncertificate = \"{dir}/a_rsa.pem\"\nkey = \"{dir}/a_rsa.key\"\n",
        |pki| pki.rsa_leaf("a_rsa", &["a.test", "*.a.test"]),
    );
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let (ec, rsa) = (s.pki.der_hex("a"), s.pki.der_hex("a_rsa"));
    let rsa_suites = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305";
    let ec_suites = "ECDHE-ECDSA-AES128-GCM-SHA256";
    for (sni, verify, ciphers, want) in [
        ("a.test", true, rsa_suites, &rsa),
        ("www.a.test", true, rsa_suites, &rsa),
        ("a.test", true, ec_suites, &ec),
        // No SNI (an IP-literal client, which cannot verify the name): the
        // default certificate's group.
        ("127.0.0.1", false, rsa_suites, &rsa),
        ("127.0.0.1", false, ec_suites, &ec),
    ] {
        let r = py_client_ciphers(port, sni, &ca, verify, ciphers);
        assert_eq!(r["ok"], true, "{sni} {ciphers}: {r}\n{}", s.rl.log_text());
        assert_eq!(r["first"]["version"], "TLSv1.2");
        let got = r["first"]["cert"].as_str();
        assert_eq!(got, Some(want.as_str()), "{sni} {ciphers}");
        assert_eq!(r["first"]["status"], "200");
        // Resumed, with the session of the same certificate.
        assert_eq!(r["second"]["reused"], true, "{r}");
    }
    let r = py_client(port, "a.test", &ca, "1.3", true);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["first"]["cert"].as_str(), Some(ec.as_str()));
    // curl limited to ECDHE-RSA on TLS 1.2 verifies the RSA chain.
    let rsa_only = [
        "--tls-max",
        "1.2",
        "--ciphers",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ];
    curl_ok_with(&ca, port, "/rsa", &rsa_only);
    // Every request reached the backend once: 6 clients × 2 requests + curl.
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 13, "{seen:#?}");
    assert_eq!(
        seen.iter().filter(|r| r.starts_with("GET /rsa ")).count(),
        1
    );
    assert_forwarded_https(&seen);
}

/// A rustls client config trusting the test CA.
fn rustls_client(ca: &Path, sni: &str) -> rustls::ClientConnection {
    rustls::ClientConnection::new(rustls_config(ca), sni.to_string().try_into().unwrap()).unwrap()
}

/// A rustls client configuration trusting `ca` (with rustls' in-memory
/// session store: connections made from one configuration resume).
fn rustls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}

/// Sends one keep-alive request over an established client and reads the
/// `200 ok` answer.
fn rustls_get(conn: &mut rustls::ClientConnection, sock: &mut TcpStream) -> String {
    let mut st = rustls::Stream::new(conn, sock);
    st.write_all(b"GET /rustls HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = st.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn client_hello(ca: &Path) -> (rustls::ClientConnection, Vec<u8>) {
    let mut c = rustls_client(ca, "a.test");
    let mut hello = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut hello).unwrap();
    }
    (c, hello)
}

/// Reads until the server closes; true if it did within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an alert
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return true, // reset
        }
    }
    false
}

/// The client's Finished and its first request in one segment, as a busy
/// client's often arrive: the server holds its TLS 1.3 session tickets
/// back to send them with the response. The client still gets them (a
/// second connection resumes), the keep-alive response is whole, and the
/// `Connection: close` response after it ends with close_notify.
#[test]
fn tickets_held_for_the_first_response_still_arrive_and_resume() {
    let s = start("");
    let cfg = rustls_config(&s.pki.path("ca.pem"));
    let mut c =
        rustls::ClientConnection::new(Arc::clone(&cfg), "a.test".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(s.rl.addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Hello out, the server's flight in: the client's Finished stays queued.
    while c.wants_write() {
        c.write_tls(&mut sock).unwrap();
    }
    while c.is_handshaking() {
        assert!(
            c.read_tls(&mut sock).unwrap() > 0,
            "closed in the handshake"
        );
        c.process_new_packets().unwrap();
    }
    c.writer()
        .write_all(b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let mut flight = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut flight).unwrap();
    }
    sock.write_all(&flight).unwrap();
    let first = rustls_read(&mut c, &mut sock, Some(b"\r\n\r\nok"));
    assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
    c.writer()
        .write_all(b"GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    c.complete_io(&mut sock).unwrap();
    let last = rustls_read(&mut c, &mut sock, None);
    assert!(last.starts_with("HTTP/1.1 200 "), "{last}");
    assert!(last.ends_with("\r\n\r\nok"), "{last}");
    // A second connection offers a ticket from the first and resumes.
    let mut c2 = rustls::ClientConnection::new(cfg, "a.test".try_into().unwrap()).unwrap();
    let mut sock2 = TcpStream::connect(s.rl.addr).unwrap();
    while c2.is_handshaking() {
        c2.complete_io(&mut sock2).unwrap();
    }
    assert_eq!(c2.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].starts_with("GET /first HTTP/1.1\r\n"), "{seen:#?}");
    assert!(seen[1].starts_with("GET /last HTTP/1.1\r\n"), "{seen:#?}");
}

/// A backend that records each request line and answers `GET /size/N`
/// with an N-byte body (a byte pattern), head and body in one write, so
/// that the proxy has the whole response before it writes to the client.
fn sized_backend() -> (Backend, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line = common::request_line(&req);
            let n: usize = line
                .split(' ')
                .nth(1)
                .and_then(|p| p.strip_prefix("/size/"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            s2.lock().unwrap().push(line);
            let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
            resp.extend(pattern(n));
            if s.write_all(&resp).is_err() {
                return;
            }
        }
    });
    (be, seen)
}

fn pattern(n: usize) -> impl Iterator<Item = u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8)
}

/// A closing HTTPS response is written with its close_notify and the FIN
/// as one last write (`TlsLastWrites`): from one byte to several TLS
/// records, the client gets every byte, then a close_notify (not a bare
/// end of stream), and the backend got each request once.
#[test]
fn closing_https_responses_arrive_whole_and_end_with_close_notify() {
    let s = start_behind("", |_| {}, sized_backend());
    let cfg = rustls_config(&s.pki.path("ca.pem"));
    let sizes = [1, 16 * 1024 - 100, 16 * 1024 + 1, 30_000];
    for n in sizes {
        let mut c =
            rustls::ClientConnection::new(Arc::clone(&cfg), "a.test".try_into().unwrap()).unwrap();
        let mut sock = TcpStream::connect(s.rl.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        c.writer()
            .write_all(
                format!("GET /size/{n} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        while c.is_handshaking() || c.wants_write() {
            c.complete_io(&mut sock).unwrap();
        }
        let got = rustls_read(&mut c, &mut sock, None);
        let (head, body) = got.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert!(
            body.bytes().eq(pattern(n)),
            "size {n}: got {} bytes",
            body.len()
        );
    }
    let seen = s.seen.lock().unwrap().clone();
    let want: Vec<String> = sizes
        .iter()
        .map(|n| format!("GET /size/{n} HTTP/1.1"))
        .collect();
    assert_eq!(seen, want);
}

/// Reads plaintext from a rustls client until it ends with `until`, or
/// (`None`) until the server closes, which must be a close_notify.
fn rustls_read(
    c: &mut rustls::ClientConnection,
    sock: &mut TcpStream,
    until: Option<&[u8]>,
) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.reader().read(&mut buf) {
            Ok(0) => {
                assert!(
                    until.is_none(),
                    "closed early: {:?}",
                    String::from_utf8_lossy(&got)
                );
                break;
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if until.is_some_and(|u| got.ends_with(u)) {
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!(
                "{e} (no close_notify?) after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
        c.read_tls(sock).unwrap();
        c.process_new_packets().unwrap();
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn client_hello_byte_by_byte_completes() {
    let s = start("");
    let ca = s.pki.path("ca.pem");
    let (mut c, hello) = client_hello(&ca);
    let mut sock = TcpStream::connect(s.rl.addr).unwrap();
    sock.set_nodelay(true).unwrap();
    for b in &hello {
        sock.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    while c.is_handshaking() {
        c.complete_io(&mut sock).unwrap();
    }
    let resp = rustls_get(&mut c, &mut sock);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Keep-alive: a second request on the same TLS connection.
    let resp = rustls_get(&mut c, &mut sock);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(s.seen.lock().unwrap().len(), 2);
    assert_forwarded_https(&s.seen.lock().unwrap());
}

#[test]
fn bad_input_ends_each_handshake_with_a_reason_and_spares_others() {
    let s = start("handshake_timeout = \"1s\"\n");
    let ca = s.pki.path("ca.pem");
    let port = s.rl.addr.port();
    let (_, hello) = client_hello(&ca);

    // A client that stops mid-hello and waits: closed by handshake_timeout.
    let mut stalled = TcpStream::connect(s.rl.addr).unwrap();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    // Meanwhile another client is served normally.
    curl_ok(&ca, port, "/during");
    assert!(closed_within(&mut stalled, Duration::from_secs(20)));
    assert_eq!(wait_counter(s.admin, &["failures", "timeout"], 1), 1);

    // A client that connects and sends nothing: the same.
    let mut silent = TcpStream::connect(s.rl.addr).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(20)));
    assert_eq!(wait_counter(s.admin, &["failures", "timeout"], 2), 2);

    // A connection closed before any byte (an L4 health check) is not a
    // failed handshake; a truncated hello, then a close, is.
    drop(TcpStream::connect(s.rl.addr).unwrap());
    let mut trunc = TcpStream::connect(s.rl.addr).unwrap();
    trunc.write_all(&hello[..10]).unwrap();
    drop(trunc);
    assert_eq!(wait_counter(s.admin, &["failures", "closed"], 1), 1);

    // Plain HTTP on the TLS port: nginx's plaintext 400 and a close
    // (counted as not TLS), never forwarded.
    let mut plain = TcpStream::connect(s.rl.addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got:?}");
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\n400 The plain HTTP request was sent to HTTPS port\n"),
        "{got}"
    );
    assert_eq!(wait_counter(s.admin, &["failures", "not_tls"], 1), 1);

    // An h2-only client (ALPN without http/1.1): refused, counted as such
    // (not as a cipher mismatch).
    let (out, exited) = s_client(port, &ca, &["-alpn", "h2"], b"");
    assert!(exited, "s_client still waiting:\n{out}");
    assert_eq!(
        wait_counter(s.admin, &["failures", "no_application_protocol"], 1),
        1,
        "{out}"
    );
    assert_eq!(tls_counter(s.admin, &["failures", "no_shared_cipher"]), 0);

    // A huge hello: a handshake message claiming 16 MiB, sent as full
    // records until the server gives up.
    let mut huge = TcpStream::connect(s.rl.addr).unwrap();
    let mut rec = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
    rec.resize(5 + 0x4000, 0x41);
    let mut sent = 0;
    for _ in 0..64 {
        if huge.write_all(&rec).is_err() {
            break;
        }
        sent += 1;
        // Continuation records carry only payload.
        rec[5..9].copy_from_slice(&[0x41; 4]);
    }
    assert!(
        closed_within(&mut huge, Duration::from_secs(20)),
        "sent {sent} records"
    );
    assert_eq!(wait_counter(s.admin, &["failures", "malformed"], 1), 1);

    // Garbage that is not TLS at all (random binary).
    let mut junk = TcpStream::connect(s.rl.addr).unwrap();
    let _ = junk.write_all(&[0x80, 0x01, 0x02, 0x03, 0xff, 0xfe]);
    assert!(closed_within(&mut junk, Duration::from_secs(20)));
    assert_eq!(wait_counter(s.admin, &["failures", "not_tls"], 2), 2);

    // The backend saw only the good client's request; nothing panicked;
    // and the server still serves.
    curl_ok(&ca, port, "/after");
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[0].starts_with("GET /during ") && seen[1].starts_with("GET /after "));
    let log = s.rl.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // The same counts in Prometheus form.
    let (status, metrics) = common::admin_get(s.admin, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "ringlb_tls_handshake_failures_total{reason=\"not_tls\"} 2",
        "ringlb_tls_handshake_failures_total{reason=\"timeout\"} 2",
        "ringlb_tls_handshake_failures_total{reason=\"closed\"} 1",
        "ringlb_tls_handshake_failures_total{reason=\"malformed\"} 1",
        "ringlb_tls_handshakes_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    let start = Instant::now();
    let mut st = stats(s.admin);
    while st["connections"]["active"] != 0 && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(50));
        st = stats(s.admin);
    }
    assert_eq!(st["connections"]["active"], 0, "{st}");
}

#[test]
fn sighup_reloads_certificates_and_keeps_them_when_a_file_is_bad() {
    let s = start("");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let old = s.pki.der_hex("a");
    assert_eq!(
        py_client(port, "a.test", &ca, "any", true)["first"]["cert"],
        old.as_str()
    );
    // A keep-alive connection opened before the reload.
    let mut c = rustls_client(&ca, "a.test");
    let mut sock = TcpStream::connect(s.rl.addr).unwrap();
    assert!(rustls_get(&mut c, &mut sock).starts_with("HTTP/1.1 200"));

    // New certificate and key for the same name, written over the old files.
    s.pki.leaf("a2", &["a.test", "*.a.test"], 30);
    std::fs::copy(s.pki.path("a2.pem"), s.pki.path("a.pem")).unwrap();
    std::fs::copy(s.pki.path("a2.key"), s.pki.path("a.key")).unwrap();
    let new = s.pki.der_hex("a2");
    assert_ne!(old, new);
    s.rl.signal(libc::SIGHUP);
    let start = Instant::now();
    let mut got = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        let r = py_client(port, "a.test", &ca, "any", true);
        got = r["first"]["cert"].as_str().unwrap_or_default().to_string();
        if got == new {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, new, "new certificate not served:\n{}", s.rl.log_text());
    // The old connection keeps working on its session.
    assert!(rustls_get(&mut c, &mut sock).starts_with("HTTP/1.1 200"));

    // A broken certificate file: the reload is refused, the log says why,
    // and the running certificate stays.
    std::fs::write(s.pki.path("a.pem"), "not a certificate\n").unwrap();
    s.rl.signal(libc::SIGHUP);
    let start = Instant::now();
    while !s.rl.log_text().contains("reload failed") && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(50));
    }
    let log = s.rl.log_text();
    assert!(log.contains("reload failed"), "{log}");
    assert!(log.contains("a.pem: no certificate in it"), "{log}");
    let r = py_client(port, "a.test", &ca, "any", true);
    assert_eq!(r["first"]["cert"].as_str().unwrap(), new);
    assert!(rustls_get(&mut c, &mut sock).starts_with("HTTP/1.1 200"));
}

// ---------------------------------------------------------------- mutual TLS

/// curl over TLS to `a.test` with extra arguments (client certificate…).
fn curl_a(ca: &Path, port: u16, extra: &[&str], paths: &[&str]) -> (bool, String, String) {
    let resolve = format!("a.test:{port}:127.0.0.1");
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    args.extend_from_slice(extra);
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("https://a.test:{port}{p}"))
        .collect();
    args.extend(urls.iter().map(String::as_str));
    curl(&args)
}

/// The values of field `name` (lower-case) in a recorded request head.
fn field_values<'a>(req: &'a str, name: &str) -> Vec<&'a str> {
    req.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn mutual_tls_passes_the_verified_subject_and_strips_spoofed_copies() {
    let s = start_with(
        "client_ca = \"{dir}/ca.pem\"\nclient_subject_header = \"X-Client-DN\"\n",
        |pki| pki.client("alice", "/C=US/O=Acme, Inc./CN=alice"),
    );
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let cert = s.pki.path("alice.pem");
    let key = s.pki.path("alice.key");
    // Two requests on one connection, each with spoofed copies of the field.
    let (ok, body, err) = curl_a(
        &ca,
        port,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            "X-Client-DN: CN=admin",
            "-H",
            "x-client-dn: CN=root",
        ],
        &["/one", "/two"],
    );
    assert!(ok, "{err}\n{}", s.rl.log_text());
    assert_eq!(body, "okok");
    {
        let seen = s.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for req in seen.iter() {
            assert_eq!(
                field_values(req, "x-client-dn"),
                ["CN=alice,O=Acme\\, Inc.,C=US"],
                "{req}"
            );
            assert!(!req.contains("admin") && !req.contains("root"), "{req}");
        }
    }
    assert_forwarded_https(&s.seen.lock().unwrap());

    // No client certificate: the handshake fails, counted; nothing forwarded.
    let (ok, _, err) = curl_a(&ca, port, &["-H", "X-Client-DN: CN=admin"], &["/none"]);
    assert!(!ok, "a request without a client certificate succeeded");
    assert_eq!(
        wait_counter(s.admin, &["failures", "no_client_certificate"], 1),
        1,
        "{err}"
    );
    // A certificate from another CA: refused, counted; nothing forwarded.
    let other = Pki::named("another CA");
    other.client("mallory", "/CN=mallory");
    let (ok, _, err) = curl_a(
        &ca,
        port,
        &[
            "--cert",
            other.path("mallory.pem").to_str().unwrap(),
            "--key",
            other.path("mallory.key").to_str().unwrap(),
        ],
        &["/mallory"],
    );
    assert!(!ok, "a certificate of an unknown CA was accepted");
    assert_eq!(
        wait_counter(s.admin, &["failures", "bad_client_certificate"], 1),
        1,
        "{err}"
    );
    assert_eq!(
        s.seen.lock().unwrap().len(),
        2,
        "a refused client reached the backend"
    );
    // The handshake-time histogram counts the successful handshake (it
    // is published with the shard's periodic metrics: wait, bounded).
    let start = Instant::now();
    let mut hs = stats(s.admin)["tls"]["handshake_time"].clone();
    while hs["count"] != 1 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
        hs = stats(s.admin)["tls"]["handshake_time"].clone();
    }
    assert_eq!(hs["count"], 1, "{hs}");
    // The access log has the TLS version and cipher of each request.
    let log = s.pki.path("access.log");
    let start = Instant::now();
    let mut lines: Vec<serde_json::Value> = Vec::new();
    while lines.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(50));
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert_eq!(l["ssl_protocol"], "TLSv1.3", "{l}");
        assert!(
            l["ssl_cipher"].as_str().unwrap().starts_with("TLS13_"),
            "{l}"
        );
    }
    // The counters are in /metrics too.
    let (_, metrics) = common::admin_get(s.admin, "/metrics");
    assert!(
        metrics.contains("ringlb_tls_handshake_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ringlb_tls_handshake_failures_total{reason=\"no_client_certificate\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sighup_reloads_the_client_ca() {
    let s = start_with("client_ca = \"{dir}/clients.pem\"\n", |pki| {
        std::fs::copy(pki.path("ca.pem"), pki.path("clients.pem")).unwrap();
        pki.client("alice", "/CN=alice");
    });
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let other = Pki::named("second client CA");
    other.client("bob", "/CN=bob");
    let with = |pki: &Pki, who: &str| {
        let cert = pki.path(&format!("{who}.pem"));
        let key = pki.path(&format!("{who}.key"));
        curl_a(
            &ca,
            port,
            &[
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            &["/"],
        )
        .0
    };
    assert!(with(&s.pki, "alice"));
    assert!(!with(&other, "bob"));
    // The bundle now names the second CA only.
    std::fs::copy(other.path("ca.pem"), s.pki.path("clients.pem")).unwrap();
    s.rl.signal(libc::SIGHUP);
    let start = Instant::now();
    while !with(&other, "bob") && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        with(&other, "bob"),
        "reloaded CA not used:\n{}",
        s.rl.log_text()
    );
    assert!(!with(&s.pki, "alice"));
    let seen = s.seen.lock().unwrap();
    assert!(seen
        .iter()
        .all(|r| field_values(r, "x-client-subject").len() == 1));
    assert!(seen
        .iter()
        .any(|r| field_values(r, "x-client-subject") == ["CN=bob"]));
}

/// `openssl s_client` on `port` (SNI a.test) with `args` (a protocol
/// version, `-sess_out`/`-sess_in` FILE, a client certificate), sending
/// one `Connection: close` request for `path` with a spoofed
/// `X-Client-Subject`; returns (resumed, answered 200, output).
fn s_client_session(port: u16, ca: &Path, args: &[&str], path: &str) -> (bool, bool, String) {
    let req: &'static [u8] = Box::leak(
        format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nX-Client-Subject: CN=admin\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (out, exited) = s_client(port, ca, args, req);
    assert!(exited, "s_client still waiting after 30 s:\n{out}");
    (
        out.contains("\nReused, "),
        out.contains("HTTP/1.1 200"),
        out,
    )
}

/// A session resumes only where its first handshake's client-auth policy
/// still holds: one made on a listener without `client_ca` does not
/// resume on a mutual-TLS listener of the same process (nothing reaches
/// the backend, and no client-written `X-Client-Subject` with it), for
/// TLS 1.3 tickets, TLS 1.2 tickets and TLS 1.2 session IDs; on its own
/// listener it does resume.
#[test]
fn a_session_from_a_listener_without_client_ca_does_not_resume_on_one_with_it() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    let (be, seen) = recording_backend();
    let mtls_port = free_port();
    let tls = |extra: &str| {
        format!(
            "[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n{extra}",
            pki.path("a.pem").display(),
            pki.path("a.key").display()
        )
    };
    let cfg = format!(
        "[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n{}\n\
         [[listener]]\nlisten = \"127.0.0.1:{mtls_port}\"\nupstream = \"app\"\n{}\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        tls(""),
        tls(&format!(
            "client_ca = \"{}\"\n",
            pki.path("ca.pem").display()
        )),
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    let public = rl.addr.port();
    let ca = pki.path("ca.pem");
    for (i, version) in [
        &["-tls1_3"][..],
        &["-tls1_2"][..],
        &["-tls1_2", "-no_ticket"][..],
    ]
    .iter()
    .enumerate()
    {
        let sess = pki.path(&format!("public-{i}.sess"));
        let sess = sess.to_str().unwrap();
        let with = |flag: &'static str| [version, &[flag, sess][..]].concat();
        let (_, ok, out) = s_client_session(public, &ca, &with("-sess_out"), "/first");
        assert!(ok, "{version:?} first connection:\n{out}");
        let (resumed, ok, out) = s_client_session(public, &ca, &with("-sess_in"), "/again");
        assert!(
            resumed && ok,
            "{version:?}: the session did not resume on its own listener:\n{out}"
        );
        let (resumed, ok, out) = s_client_session(mtls_port, &ca, &with("-sess_in"), "/spoof");
        assert!(
            !resumed && !ok,
            "{version:?}: a session without a client certificate resumed on the client_ca listener:\n{out}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|r| !r.contains("/spoof")),
        "a request reached the backend through the client_ca listener: {seen:?}"
    );
}

/// A reload that changes `client_ca` revokes what the old bundle
/// allowed: a session made with a certificate of the removed CA does not
/// resume afterwards (before the reload it does).
#[test]
fn a_session_verified_by_a_removed_client_ca_does_not_resume_after_the_reload() {
    let s = start_with("client_ca = \"{dir}/clients.pem\"\n", |pki| {
        std::fs::copy(pki.path("ca.pem"), pki.path("clients.pem")).unwrap();
        pki.client("alice", "/CN=alice");
    });
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let cert = s.pki.path("alice.pem");
    let key = s.pki.path("alice.key");
    let versions = [
        &["-tls1_3"][..],
        &["-tls1_2"][..],
        &["-tls1_2", "-no_ticket"][..],
    ];
    let mut sessions = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let sess = s.pki.path(&format!("alice-{i}.sess"));
        let sess = sess.to_str().unwrap().to_string();
        let args = [
            version,
            &[
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-sess_out",
                &sess,
            ][..],
        ]
        .concat();
        let (_, ok, out) = s_client_session(port, &ca, &args, "/alice");
        assert!(ok, "{version:?} alice with her certificate:\n{out}");
        let (resumed, ok, out) = s_client_session(
            port,
            &ca,
            &[version, &["-sess_in", &sess][..]].concat(),
            "/resumed",
        );
        assert!(
            resumed && ok,
            "{version:?} did not resume before the reload:\n{out}"
        );
        sessions.push(sess);
    }
    let other = Pki::named("second client CA");
    other.client("bob", "/CN=bob");
    std::fs::copy(other.path("ca.pem"), s.pki.path("clients.pem")).unwrap();
    s.rl.signal(libc::SIGHUP);
    let (bob_cert, bob_key) = (other.path("bob.pem"), other.path("bob.key"));
    let bob = [
        "-tls1_3",
        "-cert",
        bob_cert.to_str().unwrap(),
        "-key",
        bob_key.to_str().unwrap(),
    ];
    let start = Instant::now();
    while !s_client_session(port, &ca, &bob, "/bob").1 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the reloaded client_ca was not used:\n{}",
            s.rl.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    for (version, sess) in versions.iter().zip(&sessions) {
        let (resumed, ok, out) = s_client_session(
            port,
            &ca,
            &[version, &["-sess_in", sess][..]].concat(),
            "/revoked",
        );
        assert!(
            !resumed && !ok,
            "{version:?}: alice's session resumed after her CA was removed:\n{out}"
        );
    }
    let seen = s.seen.lock().unwrap();
    assert!(seen.iter().all(|r| !r.contains("/revoked")), "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| !field_values(r, "x-client-subject").contains(&"CN=admin")),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------- check

/// Runs `ringlb check` on `text`; returns (success, stderr).
fn check(dir: &Path, text: &str) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "F");
    (out.status.success(), err)
}

fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    // Line 5: certificate, line 6: key (value at column 15 / 7).
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:8443\"\nupstream = \"app\"\n[listener.tls]\n\
         certificate = \"{}\"\nkey = \"{}\"\n{extra}\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n",
        cert.display(),
        key.display()
    )
}

/// An X.509 v1 certificate (no extensions: what `openssl x509 -req`
/// without an extension file makes) is accepted and served, as nginx
/// serves it; its key is matched by public key, and a wrong key is still
/// refused.
#[test]
fn an_x509_v1_certificate_is_accepted_and_served() {
    let pki = Pki::new();
    pki.v1_leaf("v1", "v1.test");
    pki.leaf("other", &["other.test"], 30);
    let (ok, err) = check(
        &pki.dir.0,
        &tls_config(&pki.path("v1.pem"), &pki.path("other.key"), ""),
    );
    assert!(
        !ok && err.contains("does not belong to the certificate"),
        "{err}"
    );
    let (be, seen) = recording_backend();
    let rl = Ringlb::start(&format!(
        "[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n[listener.tls]\n\
         certificate = \"{}\"\nkey = \"{}\"\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.path("v1.pem").display(),
        pki.path("v1.key").display(),
        be.addr
    ));
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &rl.addr.to_string()])
        .args(["-servername", "v1.test", "-CAfile"])
        .arg(pki.path("ca.pem"))
        .args(["-verify_return_error", "-ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"GET /v1 HTTP/1.1\r\nHost: v1.test\r\nConnection: close\r\n\r\n")?;
            c.wait_with_output()
        })
        .expect("the openssl CLI is needed for these tests");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn check_validates_each_pair_at_its_config_key() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    pki.leaf("b", &["b.test"], 30);
    pki.leaf("soon", &["soon.test"], 5);
    pki.leaf("old", &["old.test"], -1);
    let d = &pki.dir.0;
    let p = |n: &str| pki.path(n);

    let (ok, err) = check(d, &tls_config(&p("a.pem"), &p("a.key"), ""));
    assert!(ok, "{err}");
    assert_eq!(err, "");

    // Key of another certificate: at `key`.
    let (ok, err) = check(d, &tls_config(&p("a.pem"), &p("b.key"), ""));
    assert!(!ok);
    assert!(err.starts_with("F:6:7: "), "{err}");
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // Expired: at `certificate`.
    let (ok, err) = check(d, &tls_config(&p("old.pem"), &p("old.key"), ""));
    assert!(!ok);
    assert!(err.starts_with("F:5:15: "), "{err}");
    assert!(err.contains("certificate expired"), "{err}");

    // Expiring within 14 days: valid, with a warning at `certificate`.
    let (ok, err) = check(d, &tls_config(&p("soon.pem"), &p("soon.key"), ""));
    assert!(ok, "{err}");
    assert!(err.starts_with("F:5:15: warning: "), "{err}");
    assert!(
        err.contains("expires in 4 days") || err.contains("expires in 5 days"),
        "{err}"
    );

    // Missing file, and a key file with no key in it.
    let (ok, err) = check(d, &tls_config(&p("missing.pem"), &p("a.key"), ""));
    assert!(!ok && err.starts_with("F:5:15: cannot read "), "{err}");
    let (ok, err) = check(d, &tls_config(&p("a.pem"), &p("a.pem"), ""));
    assert!(
        !ok && err.starts_with("F:6:7: ") && err.contains("no private key"),
        "{err}"
    );

    // A chain (leaf + CA) parses; SEC1 and PKCS#1 keys are accepted.
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(p("a.pem")).unwrap(),
        std::fs::read_to_string(p("ca.pem")).unwrap()
    );
    std::fs::write(p("chain.pem"), chain).unwrap();
    openssl(d, &["ec", "-in", "a.key", "-out", "a.sec1.key"]);
    assert!(std::fs::read_to_string(p("a.sec1.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let (ok, err) = check(d, &tls_config(&p("chain.pem"), &p("a.sec1.key"), ""));
    assert!(ok, "{err}");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa.key",
            "-out",
            "rsa.pem",
            "-subj",
            "/CN=rsa.test",
            "-days",
            "30",
        ],
    );
    openssl(
        d,
        &["rsa", "-in", "rsa.key", "-traditional", "-out", "rsa1.key"],
    );
    assert!(std::fs::read_to_string(p("rsa1.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let (ok, err) = check(d, &tls_config(&p("rsa.pem"), &p("rsa1.key"), ""));
    assert!(ok, "{err}");

    // The chain in the wrong order (CA first): at `certificate`, saying
    // which certificate the key belongs to.
    let reversed = format!(
        "{}{}",
        std::fs::read_to_string(p("ca.pem")).unwrap(),
        std::fs::read_to_string(p("a.pem")).unwrap()
    );
    std::fs::write(p("reversed.pem"), reversed).unwrap();
    let (ok, err) = check(d, &tls_config(&p("reversed.pem"), &p("a.key"), ""));
    assert!(!ok && err.starts_with("F:5:15: "), "{err}");
    assert!(
        err.contains("belongs to certificate 2 of the chain"),
        "{err}"
    );
    // Passphrase-protected keys (PKCS#8 and traditional): at `key`, said so.
    openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "a.key",
            "-out",
            "a.enc.key",
            "-passout",
            "pass:x",
        ],
    );
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "rsa.key",
            "-traditional",
            "-aes128",
            "-passout",
            "pass:x",
            "-out",
            "rsa.enc.key",
        ],
    );
    for (pem, key) in [("a.pem", "a.enc.key"), ("rsa.pem", "rsa.enc.key")] {
        let (ok, err) = check(d, &tls_config(&p(pem), &p(key), ""));
        assert!(!ok && err.starts_with("F:6:7: "), "{err}");
        assert!(err.contains("the private key is encrypted"), "{err}");
    }

    // An SNI entry is checked the same way, at its own keys (lines 8, 9).
    let (ok, err) = check(
        d,
        &tls_config(
            &p("a.pem"),
            &p("a.key"),
            &format!(
                "[[listener.tls.sni]]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                p("b.pem").display(),
                p("a.key").display()
            ),
        ),
    );
    assert!(!ok);
    assert!(
        err.starts_with("F:9:7: ") && err.contains("does not belong"),
        "{err}"
    );

    // Bad option values, at the value.
    let (ok, err) = check(
        d,
        &tls_config(&p("a.pem"), &p("a.key"), "protocols = [\"TLSv1.1\"]\n"),
    );
    assert!(
        !ok && err.starts_with("F:7:14: unknown TLS protocol \"TLSv1.1\""),
        "{err}"
    );
    let (ok, err) = check(
        d,
        &tls_config(&p("a.pem"), &p("a.key"), "alpn = [\"h2\"]\n"),
    );
    assert!(
        !ok && err.starts_with("F:7:9: unsupported ALPN protocol \"h2\""),
        "{err}"
    );
}

#[test]
fn check_validates_upstream_and_client_tls_files_at_their_keys() {
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    let d = &pki.dir.0;
    let base = "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"app\"\n\
                [upstream.app]\n";
    let server = "[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n";
    for (lines, want) in [
        (
            "tls = true\ntls_ca = \"/nonexistent.pem\"",
            "F:6:10: cannot read /nonexistent.pem",
        ),
        (
            "tls_verify = false",
            "F:5:1: `tls_verify` needs `tls = true`",
        ),
        (
            "tls = true\ntls_server_name = \"bad name!\"",
            "F:6:19: not a valid TLS server name",
        ),
    ] {
        let (ok, err) = check(d, &format!("{base}{lines}\n{server}"));
        assert!(!ok, "{lines} accepted");
        assert!(err.starts_with(want), "{lines}: {err}");
    }
    let (ok, err) = check(
        d,
        &format!(
            "{base}tls = true\ntls_ca = \"{}\"\n{server}",
            pki.path("ca.pem").display()
        ),
    );
    assert!(ok, "{err}");
    let (ok, err) = check(
        d,
        &tls_config(
            &pki.path("a.pem"),
            &pki.path("a.key"),
            "client_ca = \"/x.pem\"\n",
        ),
    );
    assert!(!ok);
    assert!(err.starts_with("F:7:13: cannot read /x.pem"), "{err}");
}

#[test]
fn large_bodies_both_ways_and_an_upgraded_tunnel_cross_tls() {
    // A backend that answers a POST with its body length and a 1 MiB body,
    // and an upgrade with 101 then echoes the new protocol's bytes.
    let be = backend(|mut s: TcpStream| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
            if text.contains("upgrade: echo") {
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
                )
                .unwrap();
                s.write_all(&buf).unwrap();
                let mut b = [0u8; 4096];
                loop {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => s.write_all(&b[..n]).unwrap(),
                    }
                }
            }
            let body_len = req.len() - common::find(&req, b"\r\n\r\n").unwrap() - 4;
            let body = vec![b'x'; 1 << 20];
            let head = format!(
                "HTTP/1.1 200 OK\r\nX-Got: {body_len}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if s.write_all(head.as_bytes()).is_err() || s.write_all(&body).is_err() {
                return;
            }
        }
    });
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         client_max_body_size = \"8m\"\n[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.path("a.pem").display(),
        pki.path("a.key").display(),
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    let port = rl.addr.port();
    let ca = pki.path("ca.pem");
    // 3 MiB up (streamed: bigger than any buffer), 1 MiB down.
    let upload = pki.path("upload.bin");
    std::fs::write(&upload, vec![b'u'; 3 << 20]).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
        .args(["-D", "-", "--data-binary"])
        .arg(format!("@{}", upload.display()))
        .arg(format!("https://a.test:{port}/up"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.to_ascii_lowercase().contains("x-got: 3145728\r\n"),
        "{}",
        &text[..text.len().min(300)]
    );
    // After curl's `100 Continue` block, the final response.
    let fin = &text[text.find("HTTP/1.1 200").unwrap()..];
    let body = fin.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body.len(), 1 << 20);
    assert!(body.bytes().all(|b| b == b'x'));

    // Upgrade, then bytes both ways through the split TLS stream.
    let mut c = rustls_client(&ca, "a.test");
    let mut sock = TcpStream::connect(rl.addr).unwrap();
    let mut st = rustls::Stream::new(&mut c, &mut sock);
    st.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while common::find(&got, b"\r\n\r\n").is_none() {
        let n = st.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let mut echoed = got.split_off(common::find(&got, b"\r\n\r\n").unwrap() + 4);
    for i in 0..20 {
        let msg = format!("message {i} {}", "y".repeat(i * 1000));
        st.write_all(msg.as_bytes()).unwrap();
        while echoed.len() < msg.len() {
            let n = st.read(&mut b).unwrap();
            assert!(n > 0, "tunnel closed");
            echoed.extend_from_slice(&b[..n]);
        }
        assert_eq!(echoed, msg.as_bytes());
        echoed.clear();
    }
}

/// `curl http://` against the TLS port gets what nginx answers: a
/// plaintext `400 The plain HTTP request was sent to HTTPS port`, curl
/// reads it as a normal response, and the backend sees nothing.
#[test]
fn curl_plain_http_to_the_tls_port_gets_nginx_s_400() {
    let s = start("");
    let url = format!("http://a.test:{}/plain", s.rl.addr.port());
    let resolve = format!("a.test:{}:127.0.0.1", s.rl.addr.port());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--resolve",
            &resolve,
            &url,
        ])
        .output()
        .expect("curl is needed for these tests (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout, "400 The plain HTTP request was sent to HTTPS port\n\n400",
        "{stdout}"
    );
    assert_eq!(wait_counter(s.admin, &["failures", "not_tls"], 1), 1);
    // The listener still speaks TLS to the next client, and to one that
    // offers only `http/1.0` by ALPN (nginx serves it too).
    curl_ok(&s.pki.path("ca.pem"), s.rl.addr.port(), "/tls");
    let (ok, body, err) = curl_a(
        &s.pki.path("ca.pem"),
        s.rl.addr.port(),
        &["--http1.0"],
        &["/ten"],
    );
    assert!(ok, "curl --http1.0 over TLS: {err}");
    assert!(body.contains("ok"), "{body}");
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("GET /tls "), "{seen:?}");
    assert!(seen[1].starts_with("GET /ten HTTP/1."), "{seen:?}");
}

/// Python ssl client: `count` POSTs of `size` bytes, each on its own
/// connection, sent whole whatever the server answers (as `requests` does),
/// then the answer read; a close without close_notify is an error
/// (`suppress_ragged_eofs=False`). Prints one JSON line per upload.
const PY_BIG_POST: &str = r#"
port, sni, ca, size, path, count = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
out = []
for _ in range(int(count)):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni, suppress_ragged_eofs=False) as s:
            head = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %s\r\n\r\n" % (path, sni, size)
            try:
                s.sendall(head.encode() + b"u" * int(size))
                sent = "all"
            except (ssl.SSLError, OSError) as e:
                sent = repr(e)
            try:
                head, _, body = read_all(s).partition(b"\r\n\r\n")
                out.append(dict(sent=sent, status=head[9:12].decode(), body=body.decode(), clean=True))
            except (ssl.SSLError, OSError) as e:
                out.append(dict(sent=sent, error=repr(e), clean=False))
print(json.dumps(out))
"#;

/// A TLS client still sending a body the server refused gets the answer
/// and a clean close: the refusal is read to the end of the upload (a
/// lingering close) and the close carries close_notify. Before, the proxy
/// closed with the body unread, and the client's next write met a reset
/// (`requests`: "EOF occurred in violation of protocol", no response).
#[test]
fn refused_uploads_over_tls_get_their_answer_and_a_clean_close() {
    // Over the listener's client_max_body_size (1m by default): ringlb's
    // own 413, nothing forwarded.
    let s = start("");
    let port = s.rl.addr.port().to_string();
    let ca = s.pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let r = py_json(PY_BIG_POST, &[&port, "a.test", ca, "3000000", "/big", "2"]);
    for u in r.as_array().unwrap() {
        assert_eq!(u["sent"], "all", "{r}\n{}", s.rl.log_text());
        assert_eq!(u["clean"], true, "{r}");
        assert_eq!(u["status"], "413", "{r}");
    }
    assert!(s.seen.lock().unwrap().is_empty());
    // requests as users call it.
    let script = format!(
        "import requests, warnings; warnings.simplefilter('ignore')\n\
         r = requests.post('https://127.0.0.1:{port}/req', data=b'z' * 3000000, verify=False)\n\
         print(r.status_code)"
    );
    assert_eq!(common::python_ok(&["-c", &script]).trim(), "413");
    assert!(s.seen.lock().unwrap().is_empty());

    // A backend that answers 413 after the head and reads no body: relayed
    // while the upload streams, then the same lingering close. Several
    // uploads, since where the upload is cut varies.
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h2 = Arc::clone(&heads);
    let be = backend(move |mut s: TcpStream| {
        let mut head = Vec::new();
        let mut b = [0u8; 4096];
        while common::find(&head, b"\r\n\r\n").is_none() {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        let end = common::find(&head, b"\r\n\r\n").unwrap();
        h2.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head[..end]).into_owned());
        let _ = s.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\nrefused!\n",
        );
        let _ = s.shutdown(std::net::Shutdown::Write);
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    });
    let pki = Pki::new();
    pki.leaf("a", &["a.test"], 30);
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         client_max_body_size = 0\n[listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.path("a.pem").display(),
        pki.path("a.key").display(),
        be.addr
    );
    let rl = Ringlb::start(&cfg);
    let port = rl.addr.port().to_string();
    let ca = pki.path("ca.pem");
    let r = py_json(
        PY_BIG_POST,
        &[
            &port,
            "a.test",
            ca.to_str().unwrap(),
            "8000000",
            "/early",
            "6",
        ],
    );
    for u in r.as_array().unwrap() {
        assert_eq!(u["sent"], "all", "{r}\n{}", rl.log_text());
        assert_eq!(u["clean"], true, "{r}");
        assert_eq!(u["status"], "413", "{r}");
        assert_eq!(u["body"], "refused!\n", "{r}");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 6, "{heads:#?}");
    assert!(heads
        .iter()
        .all(|h| h.starts_with("POST /early HTTP/1.1\r\n")));
}

/// Runs `openssl s_client` against `port` with `stdin` as what the user
/// types (`R`: renegotiate, `K`: key update, then request lines); waits
/// for it to exit, at most 30 s (then kills it: a hang). Returns its
/// output (stdout + stderr) and whether it exited by itself.
fn s_client(port: u16, ca: &Path, args: &[&str], stdin: &'static [u8]) -> (String, bool) {
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "a.test", "-CAfile", ca.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is needed for these tests");
    let mut input = child.stdin.take().unwrap();
    // Typed lines apart, as a user does: s_client reads them one by one.
    let feeder = thread::spawn(move || {
        for line in stdin.split_inclusive(|b| *b == b'\n') {
            if input.write_all(line).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
        // Keep stdin open: s_client exits on EOF of stdin otherwise.
        thread::sleep(Duration::from_secs(30));
    });
    let start = Instant::now();
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break false;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    drop(feeder);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, exited)
}

/// A TLS 1.2 client asking to renegotiate is told no at once (the
/// `no_renegotiation` alert rustls queues is sent, as nginx and haproxy
/// answer), instead of waiting with its handshake half done until a
/// timeout; a TLS 1.3 key update is answered and the request served.
#[test]
fn renegotiation_is_refused_at_once_and_key_updates_work() {
    let s = start("");
    let port = s.rl.addr.port();
    let ca = s.pki.path("ca.pem");
    let (out, exited) = s_client(
        port,
        &ca,
        &["-tls1_2"],
        b"R\nGET /after-reneg HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(out.contains("RENEGOTIATING"), "{out}");
    assert!(exited, "s_client still waiting after 30 s:\n{out}");
    assert!(out.contains("no renegotiation"), "{out}");
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    let (out, exited) = s_client(
        port,
        &ca,
        &["-tls1_3"],
        b"K\nGET /after-update HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert!(exited, "{out}");
    assert!(out.contains("KEYUPDATE"), "{out}");
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    // Only the key-update connection's request reached the backend, once.
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen[0].starts_with("GET /after-update "), "{seen:#?}");
    curl_ok(&ca, port, "/still-serving");
}
