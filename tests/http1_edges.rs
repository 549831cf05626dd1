//! HTTP/1.1 corners that need more than one raw request: a TLS client whose
//! pipelined requests wait inside the TLS stream while a slow response is
//! awaited. Each test checks what the client got and what the
//! backend received (which requests, how many times).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::pki::Pki;
use common::*;

/// A backend that answers each request with its request line as the body,
/// after `delay` for a path starting with `/slow`; records the lines.
fn line_backend(delay: Duration) -> (Backend, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        while let Some(req) = read_request(&mut s, &mut buf) {
            let line = request_line(&req);
            s2.lock().unwrap().push(line.clone());
            if line.starts_with("GET /slow") {
                thread::sleep(delay);
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}",
                line.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    (be, seen)
}

/// Sends one request padded to exactly `size` bytes (a slow one), a second
/// one right behind it in the same write, half-closes (`SHUT_WR`, no
/// close_notify) and prints everything it reads until the server closes.
const PY_PIPELINE: &str = r#"
import socket, ssl, sys
port, tls, size, ca = int(sys.argv[1]), sys.argv[2] == "tls", int(sys.argv[3]), sys.argv[4]
raw = socket.create_connection(("127.0.0.1", port))
if tls:
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(raw, server_hostname="a.test")
else:
    s = raw
s.settimeout(20)
base = b"GET /slow HTTP/1.1\r\nHost: a.test\r\nX-Pad: \r\n\r\n"
first = base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(base)))
assert len(first) == size
s.sendall(first + b"GET /second HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
socket.socket.shutdown(s, socket.SHUT_WR)
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
except (OSError, ssl.SSLError) as e:
    out += b"<<" + repr(e).encode() + b">>"
sys.stdout.write(out.decode("latin-1"))
"#;

/// A client that pipelines a request behind a slow one and then
/// half-closes is owed both answers (its FIN is not an abort while
/// requests it sent are buffered). Over TLS, when the first request fills
/// the connection's receive buffer exactly (4096 bytes), the second one
/// waits inside the TLS stream (decrypted by rustls, or still ciphertext),
/// not in the socket: it must count as pipelined all the same. Before,
/// the client-gone check saw only the FIN and abandoned both requests.
#[test]
fn pipelined_requests_held_in_the_tls_stream_are_owed_answers() {
    // Longer than the first client-gone look (1 s into the wait).
    let (be, seen) = line_backend(Duration::from_millis(2500));
    let pki = Pki::server("a.test");
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"app\"\n\
         [listener.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n\n\
         [upstream.app]\n[[upstream.app.server]]\naddress = \"{}\"\n",
        pki.file("server.pem"),
        pki.file("server.key"),
        be.addr
    );
    let tls = Ringlb::start(&cfg);
    let plain = Ringlb::start(&simple_config(&[be.addr], ""));
    let ca = pki.file("ca.pem");
    let mut runs = 0;
    for (rl, mode) in [(&tls, "tls"), (&plain, "plain")] {
        for size in ["4096", "4000"] {
            let port = rl.addr.port().to_string();
            let out = python_ok(&["-c", PY_PIPELINE, &port, mode, size, &ca]);
            let what = format!("{mode}, first request {size} bytes");
            let slow = "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n";
            let second = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n";
            let (a, b) = (out.find(slow), out.find(second));
            assert!(
                a.is_some() && b.is_some() && a < b,
                "{what}: both answers, in order: {out:?}\n{}",
                rl.log_text()
            );
            assert!(out.ends_with("GET /second HTTP/1.1"), "{what}: {out:?}");
            assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{what}: {out:?}");
            runs += 1;
            let lines = seen.lock().unwrap().clone();
            assert_eq!(
                lines.len(),
                2 * runs,
                "{what}: each request reaches the backend once: {lines:?}"
            );
            assert_eq!(
                lines[lines.len() - 2..],
                ["GET /slow HTTP/1.1", "GET /second HTTP/1.1"],
                "{what}"
            );
        }
    }
}
