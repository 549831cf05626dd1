//! Heads re-encoded for the other side, and the proxy's own responses.
//!
//! Heads are rebuilt from spans in one pass over the classified fields:
//! hop-by-hop fields never cross, `X-Forwarded-For` is merged and extended,
//! `X-Real-IP`/`X-Forwarded-Proto` are set by the proxy, `Host` is kept.
//! Output is appended to a caller-owned buffer, so a shard reuses one buffer
//! per connection and the encoder allocates nothing of its own.

use super::fields::{Field, FieldKind};
use super::{Framing, RequestHead, ResponseHead, Version};

/// Sent to a client that asked `Expect: 100-continue` before its body is read.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the head to send upstream for `head` (decoded from `buf`).
///
/// `client_ip` is the client's address as text; `default_host` is used when
/// an HTTP/1.0 client sent no `Host`.
pub fn encode_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    client_ip: &[u8],
    default_host: &[u8],
    https: bool,
) {
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    out.extend_from_slice(head.target.get(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff_seen = false;
    for f in fields {
        match f.kind {
            // Framing fields are re-emitted once, normalised, below: a
            // backend never sees `Content-Length: 5, 5` or `chunked ` twice.
            FieldKind::HopByHop
            | FieldKind::ProxySet
            | FieldKind::Expect
            | FieldKind::ContentLength
            | FieldKind::TransferEncoding => continue,
            FieldKind::Upgrade if !head.upgrade => continue,
            FieldKind::XForwardedFor => {
                // Every X-Forwarded-For field is merged into one, in order.
                if !xff_seen {
                    out.extend_from_slice(b"X-Forwarded-For: ");
                    xff_seen = true;
                } else {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(f.value.get(buf));
                // The merged field is finished below, after the last one.
                continue;
            }
            _ => {}
        }
        if xff_seen && !xff_done(out) {
            // A non-XFF field follows an open XFF line: close it with the
            // client address now.
            finish_xff(out, client_ip);
        }
        put_field(out, f.name.get(buf), f.value.get(buf));
    }
    if xff_seen {
        if !xff_done(out) {
            finish_xff(out, client_ip);
        }
    } else {
        put_field(out, b"X-Forwarded-For", client_ip);
    }
    if head.host.is_none() {
        put_field(out, b"Host", default_host);
    }
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::Close => {
            // A `Content-Length: 0` is kept for methods whose servers expect one.
            if head.had_length {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
    }
    put_field(out, b"X-Real-IP", client_ip);
    out.extend_from_slice(if https {
        b"X-Forwarded-Proto: https\r\n"
    } else {
        b"X-Forwarded-Proto: http\r\n"
    });
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether the last line written is complete (ends in CRLF).
fn xff_done(out: &[u8]) -> bool {
    out.ends_with(b"\r\n")
}

fn finish_xff(out: &mut Vec<u8>, client_ip: &[u8]) {
    out.extend_from_slice(b", ");
    out.extend_from_slice(client_ip);
    out.extend_from_slice(b"\r\n");
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the client connection continues after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConn {
    /// Keep the connection; `client` is the client's HTTP version.
    KeepAlive(Version),
    /// Close after this response.
    Close,
    /// `101 Switching Protocols`: the connection becomes a tunnel.
    Upgrade,
}

/// Appends the head to send to the client for the upstream's `head`.
/// `dechunk`: the body will be sent de-chunked and close-delimited (HTTP/1.0
/// client), so `Transfer-Encoding` is dropped.
pub fn encode_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    fields: &[Field],
    conn: ClientConn,
    dechunk: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    for f in fields {
        match f.kind {
            FieldKind::HopByHop => continue,
            FieldKind::Upgrade if conn != ClientConn::Upgrade => continue,
            FieldKind::TransferEncoding if dechunk => continue,
            _ => {}
        }
        put_field(out, f.name.get(buf), f.value.get(buf));
    }
    match conn {
        ClientConn::Upgrade => out.extend_from_slice(b"Connection: upgrade\r\n"),
        ClientConn::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ClientConn::KeepAlive(Version::Http10) => {
            out.extend_from_slice(b"Connection: keep-alive\r\n")
        }
        ClientConn::KeepAlive(Version::Http11) => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
}

macro_rules! canned {
    ($code:literal, $reason:literal, $len:literal) => {
        (
            concat!(
                "HTTP/1.1 ",
                $code,
                " ",
                $reason,
                "\r\n",
                "Content-Type: text/plain\r\n",
                "Content-Length: ",
                $len,
                "\r\n",
                "Connection: close\r\n\r\n",
                $code,
                " ",
                $reason,
                "\n"
            )
            .as_bytes(),
            concat!(
                "HTTP/1.1 ",
                $code,
                " ",
                $reason,
                "\r\n",
                "Content-Type: text/plain\r\n",
                "Content-Length: ",
                $len,
                "\r\n\r\n",
                $code,
                " ",
                $reason,
                "\n"
            )
            .as_bytes(),
        )
    };
}

/// The proxy's own short response for `status`: `(closing, keep-alive)`
/// variants. Unknown statuses map to 500.
pub fn canned_response(status: u16) -> (&'static [u8], &'static [u8]) {
    match status {
        400 => canned!("400", "Bad Request", "16"),
        404 => canned!("404", "Not Found", "14"),
        405 => canned!("405", "Method Not Allowed", "23"),
        408 => canned!("408", "Request Timeout", "20"),
        417 => canned!("417", "Expectation Failed", "23"),
        431 => canned!("431", "Request Header Fields Too Large", "36"),
        501 => canned!("501", "Not Implemented", "20"),
        502 => canned!("502", "Bad Gateway", "16"),
        503 => canned!("503", "Service Unavailable", "24"),
        504 => canned!("504", "Gateway Timeout", "20"),
        505 => canned!("505", "HTTP Version Not Supported", "31"),
        _ => canned!("500", "Internal Server Error", "26"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_request, decode_response, Limits};
    use super::*;

    fn req(raw: &str, ip: &str) -> String {
        let mut f = Vec::new();
        let h = decode_request(raw.as_bytes(), &Limits::default(), &mut f)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        encode_request(
            &mut out,
            raw.as_bytes(),
            &h,
            &f,
            ip.as_bytes(),
            b"10.0.0.1:80",
            false,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_rewrite() {
        let out = req(
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n",
            "1.2.3.4",
        );
        assert_eq!(
            out,
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn xff_appended_and_merged() {
        let out = req(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 9.9.9.9\r\nX-Forwarded-For: 8.8.8.8\r\nAccept: 1\r\n\r\n",
            "1.2.3.4",
        );
        assert!(
            out.contains("X-Forwarded-For: 9.9.9.9, 8.8.8.8, 1.2.3.4\r\nAccept: 1\r\n"),
            "{out}"
        );
        let out = req(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n",
            "::1",
        );
        assert!(out.contains("X-Forwarded-For: 9.9.9.9, ::1\r\n"), "{out}");
    }

    #[test]
    fn framing_fields_are_normalised() {
        let out = req(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
            "1.2.3.4",
        );
        assert_eq!(out.matches("Content-Length").count(), 1, "{out}");
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
        let out = req(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            "1.2.3.4",
        );
        assert!(
            out.contains("Transfer-Encoding: chunked\r\n") && !out.contains("CHUNKED"),
            "{out}"
        );
        let out = req(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "1.2.3.4",
        );
        assert!(out.contains("Content-Length: 0\r\n"), "{out}");
        let out = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "1.2.3.4");
        assert!(!out.contains("Content-Length"), "{out}");
    }

    #[test]
    fn http10_gets_host_and_11() {
        let out = req("GET / HTTP/1.0\r\n\r\n", "1.2.3.4");
        assert!(out.starts_with("GET / HTTP/1.1\r\n"));
        assert!(out.contains("Host: 10.0.0.1:80\r\n"));
    }

    #[test]
    fn upgrade_kept_only_when_upgrading() {
        let out = req(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "1.2.3.4",
        );
        assert!(out.contains("Upgrade: websocket\r\n") && out.contains("Connection: upgrade\r\n"));
        let out = req(
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            "1.2.3.4",
        );
        assert!(!out.contains("Upgrade"));
    }

    #[test]
    fn response_rewrite() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n";
        let mut f = Vec::new();
        let h = decode_response(raw.as_bytes(), 16384, false, &mut f)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        encode_response(
            &mut out,
            raw.as_bytes(),
            &h,
            &f,
            ClientConn::KeepAlive(Version::Http11),
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_response(&mut out, raw.as_bytes(), &h, &f, ClientConn::Close, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn canned_lengths_are_right() {
        for s in [400, 404, 405, 408, 417, 431, 500, 501, 502, 503, 504, 505] {
            for raw in [canned_response(s).0, canned_response(s).1] {
                let mut f = Vec::new();
                let h = decode_response(raw, 16384, false, &mut f).unwrap().unwrap();
                let body = &raw[h.head_len..];
                assert_eq!(
                    h.framing,
                    super::super::Framing::Length(body.len() as u64),
                    "{s}"
                );
                assert_eq!(h.status, if s == 500 { 500 } else { s });
            }
        }
    }
}
