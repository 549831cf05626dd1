//! HTTP/1.1 corners that need more than one raw request: a TLS client whose
//! pipelined requests wait inside the TLS stream while a slow response is
//! awaited, and a backend that floods 1xx responses while an upload is
//! streamed to it. Each test checks what the client got and what the
//! backend received (which requests, how many times).

mod common;

use std::io::{Read, Write};
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

/// A backend that answers a streamed upload with more 1xx responses than
/// allowed (while it still reads the body) gets no further: the client
/// gets 502 and a close, the upstream connection is closed before the
/// body is through, the flood is logged, and the next request is served
/// normally on a fresh connection.
#[test]
fn a_1xx_flood_during_a_streamed_upload_is_a_502() {
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let be = backend(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 65536];
        loop {
            let Some(end) = find(&buf, b"\r\n\r\n") else {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
                continue;
            };
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let line = request_line(&head);
            let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let len: usize = header(&lower, "content-length").map_or(0, |v| v.parse().unwrap());
            if line.starts_with("POST ") {
                // The flood, before reading any of the body.
                for _ in 0..300 {
                    if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                        break;
                    }
                }
            }
            let mut got = buf.len().min(len);
            buf.drain(..got);
            while got < len {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => {
                        s2.lock().unwrap().push((line, got));
                        return;
                    }
                    Ok(n) => {
                        let take = n.min(len - got);
                        got += take;
                        buf.extend_from_slice(&tmp[take..n]);
                    }
                }
            }
            s2.lock().unwrap().push((line, got));
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    let cfg = simple_config(&[be.addr], "retries = 0\n").replace(
        "[[listener]]",
        "[http]\nrequest_buffering = false\nclient_max_body_size = 0\n\n[[listener]]",
    );
    let rl = Ringlb::start(&cfg);
    let total = 8 << 20;
    let mut c = connect(rl.addr);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(
        format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    // The body goes on in the background (ringlb drains what it no longer
    // forwards); the answer is read here.
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'u'; 64 * 1024];
        (0..total / chunk.len()).all(|_| w.write_all(&chunk).is_ok())
    });
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let r = String::from_utf8_lossy(&out);
    let _ = writer.join();
    assert!(
        r.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{r}\n{}",
        rl.log_text()
    );
    assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
    assert!(!r.contains("100 Continue"), "{r}");
    assert!(
        rl.log_text()
            .contains("more than 100 informational (1xx) responses → 502"),
        "{}",
        rl.log_text()
    );
    // The backend never got the whole body: its connection was closed.
    let mut waited = 0;
    while seen.lock().unwrap().is_empty() && waited < 500 {
        thread::sleep(Duration::from_millis(20));
        waited += 1;
    }
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "POST /up HTTP/1.1");
    assert!(got[0].1 < total, "the whole body went through: {got:?}");

    let r = roundtrip_close(
        rl.addr,
        b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    assert_eq!(be.conns.load(std::sync::atomic::Ordering::Relaxed), 2);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1], ("GET /next HTTP/1.1".to_string(), 0));
}
