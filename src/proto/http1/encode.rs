//! Heads re-encoded for the other side, and the proxy's own responses.
//!
//! Heads are rebuilt from spans in one pass over the classified fields:
//! hop-by-hop fields never cross, `Trailer` crosses only with the trailer
//! section it announces ([`trailers_cross`]), `X-Forwarded-For` is merged and extended,
//! `X-Real-IP`/`X-Forwarded-Proto` are set by the proxy, `Host` is kept
//! (or set from an absolute-form target's authority, which is forwarded in
//! origin-form), framing fields are re-emitted once, normalised, and a
//! response without `Date` gets the caller's (RFC 9110 §6.6.1).
//! Output is appended to a caller-owned buffer, so a shard reuses one buffer
//! per connection and the encoder allocates nothing of its own.

use super::fields::{Field, FieldKind};
use super::{Framing, RequestHead, ResponseHead, TargetForm, Version};

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
    let fwd = Forwarded {
        client_ip,
        https,
        set: None,
    };
    encode_request_set(out, buf, head, fields, default_host, &fwd);
}

/// The text of a client address as `X-Forwarded-For`, `X-Real-IP` and
/// the access log carry it (what `Display` writes), put in `out`; returns
/// its length. IPv4 is written digit by digit, once per connection: through
/// `fmt` it was ~2% of the user-space time of a `Connection: close`
/// request. IPv6 (zero runs compressed, mapped IPv4 forms) goes through
/// `fmt`.
pub fn client_ip_text(ip: std::net::IpAddr, out: &mut [u8; 48]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    out[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    out[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                out[n] = b'0' + o % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let mut w = &mut out[..];
            // 45 bytes at most (`ffff:…:255.255.255.255`): it fits.
            let _ = write!(w, "{v6}");
            48 - w.len()
        }
    }
}

/// What the proxy adds about the client: `X-Forwarded-For`/`X-Real-IP`
/// (`client_ip`), `X-Forwarded-Proto` (`https`) and an optional field of
/// its own ([`SetField`]).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub client_ip: &'a [u8],
    pub https: bool,
    pub set: Option<SetField<'a>>,
}

/// A field the proxy sets itself on every request of a connection (the
/// verified mutual-TLS client subject): any copy the client sent is
/// dropped (compared case-insensitively), so a backend can trust it.
/// Without a value (no verified certificate on the connection) the
/// client's copies are still dropped and nothing is set.
#[derive(Debug, Clone, Copy)]
pub struct SetField<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// [`encode_request`] with what [`Forwarded`] carries.
pub fn encode_request_set(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    default_host: &[u8],
    fwd: &Forwarded<'_>,
) {
    let Forwarded {
        client_ip,
        https,
        set,
    } = *fwd;
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    let target = head.target.get(buf);
    if head.form == TargetForm::Absolute && !target.starts_with(b"/") {
        // `http://a` → `/`; `http://a?q` → `/?q`; `OPTIONS http://a` → `*`
        // (RFC 9112 §3.2.4).
        if head.method == super::Method::Options && target.is_empty() {
            out.push(b'*');
        } else {
            out.push(b'/');
        }
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff_seen = false;
    let mut host_seen = false;
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
            FieldKind::Trailer if !trailers_cross(head.framing, false) => continue,
            FieldKind::Other
                if set.is_some_and(|s| f.name.get(buf).eq_ignore_ascii_case(s.name)) =>
            {
                continue
            }
            FieldKind::Host => host_seen = true,
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
        // The request's host (an absolute-form authority wins over Host).
        let value = match f.kind {
            FieldKind::Host => head.host.unwrap_or(f.value),
            _ => f.value,
        };
        put_field(out, f.name.get(buf), value.get(buf));
    }
    if xff_seen {
        if !xff_done(out) {
            finish_xff(out, client_ip);
        }
    } else {
        put_field(out, b"X-Forwarded-For", client_ip);
    }
    if !host_seen {
        let host = head.host.map_or(default_host, |h| h.get(buf));
        put_field(out, b"Host", host);
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
    if let Some(SetField {
        name,
        value: Some(value),
    }) = set
    {
        put_field(out, name, value);
    }
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

/// Whether a message's trailer section reaches the next hop, and with it
/// the `Trailer` field that announces it: only when its body goes on
/// chunked as it came (`framing` is how the next hop gets it; `reframed`:
/// the body is re-framed, de-chunked for an HTTP/1.0 client or a
/// close-delimited one chunked). A chunked request body buffered whole and
/// sent with a `Content-Length`, or a response de-chunked, loses its
/// trailers, and a field announcing fields that never come would have a
/// recipient wait for or look up nothing, so it is dropped with them.
pub fn trailers_cross(framing: Framing, reframed: bool) -> bool {
    framing == Framing::Chunked && !reframed
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

/// How a response body crosses to the client (decided by
/// `proto::exchange::body_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// Framed as the upstream framed it (a length, chunked, or no body).
    AsIs,
    /// A chunked body sent as bare data, delimited by the close (an
    /// HTTP/1.0 client cannot read chunked): `Transfer-Encoding` is dropped.
    Dechunk,
    /// A close-delimited body sent chunked, a chunk per read, ending with
    /// the last chunk when the upstream closes: the client connection can
    /// stay, and a body cut short shows as a missing last chunk.
    /// `Transfer-Encoding: chunked` is added.
    Rechunk,
    /// A close-delimited body sent as it came; the client connection closes
    /// after it.
    UntilClose,
}

impl BodyOut {
    /// Whether the client learns where the body ends only from the close.
    pub fn close_delimited(self) -> bool {
        matches!(self, BodyOut::Dechunk | BodyOut::UntilClose)
    }
}

/// The chunk that ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk (`SIZE-IN-HEX CRLF data CRLF`); nothing for
/// empty data, which would be the last chunk.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
    }
    out.reserve(hex.len() - i + data.len() + 4);
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the head to send to the client for the upstream's `head`.
/// `body`: how its body crosses ([`BodyOut`]). `date`: the value of the
/// `Date` field added when the upstream sent none (empty: add none).
pub fn encode_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    fields: &[Field],
    conn: ClientConn,
    body: BodyOut,
    date: &[u8],
) {
    let reframed = matches!(body, BodyOut::Dechunk | BodyOut::Rechunk);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let mut length_sent = false;
    let mut date_seen = false;
    // RFC 9110 §8.6, RFC 9112 §6.1: no `Content-Length` or
    // `Transfer-Encoding` in a 1xx or 204. A client that believed one would
    // wait for a body that never comes, or read the next response as it.
    let framing_fields = !(head.is_informational() || head.status == 204);
    for f in fields {
        match f.kind {
            FieldKind::HopByHop => continue,
            // A bodiless response (HEAD, 1xx, 204, 304) has no framing.
            FieldKind::Trailer if !trailers_cross(head.framing, reframed) => continue,
            FieldKind::Upgrade if conn != ClientConn::Upgrade => continue,
            FieldKind::TransferEncoding if reframed || !framing_fields => continue,
            FieldKind::ContentLength if !framing_fields => continue,
            FieldKind::Date => date_seen = true,
            // `Content-Length: 5` twice or `5, 5` was accepted as one value
            // (differing ones are a 502): the client gets it once.
            FieldKind::ContentLength => {
                if let (false, Some(n)) = (length_sent, head.content_length) {
                    length_sent = true;
                    out.extend_from_slice(f.name.get(buf));
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                continue;
            }
            _ => {}
        }
        put_field(out, f.name.get(buf), f.value.get(buf));
    }
    if !date_seen && !date.is_empty() {
        put_field(out, b"Date", date);
    }
    if body == BodyOut::Rechunk && framing_fields {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
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

/// The reason phrase the proxy uses for its own responses (unknown → 500's).
fn reason(status: u16) -> (u16, &'static str) {
    match status {
        400 => (400, "Bad Request"),
        404 => (404, "Not Found"),
        405 => (405, "Method Not Allowed"),
        408 => (408, "Request Timeout"),
        413 => (413, "Content Too Large"),
        414 => (414, "URI Too Long"),
        417 => (417, "Expectation Failed"),
        431 => (431, "Request Header Fields Too Large"),
        501 => (501, "Not Implemented"),
        502 => (502, "Bad Gateway"),
        503 => (503, "Service Unavailable"),
        504 => (504, "Gateway Timeout"),
        505 => (505, "HTTP Version Not Supported"),
        _ => (500, "Internal Server Error"),
    }
}

/// The methods a listener forwards (all but `CONNECT`), for a 405's `Allow`.
const ALLOW: &[u8] = b"Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE\r\n";

/// Appends the proxy's own short response for `status` (unknown statuses
/// become 500): a plain-text body naming the status, `Date: date`, and
/// `Connection: close` unless `keep_alive`.
pub fn encode_canned(out: &mut Vec<u8>, status: u16, keep_alive: bool, date: &[u8]) {
    let (status, reason) = reason(status);
    let line = |out: &mut Vec<u8>| {
        push_status(out, status);
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    line(out);
    out.extend_from_slice(b"\r\n");
    put_field(out, b"Date", date);
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    // "NNN " + reason + "\n"
    let len = 4 + reason.len() + 1;
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status == 405 {
        // RFC 9110 §15.5.6: a 405 names the methods that are served. The
        // proxy's only 405 is for CONNECT; every other method is forwarded.
        out.extend_from_slice(ALLOW);
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    line(out);
    out.push(b'\n');
}

/// The body of the answer to a plain-HTTP request on a TLS listener
/// (nginx's wording, so clients and people see the same hint).
pub const PLAIN_HTTP_ON_TLS: &[u8] = b"400 The plain HTTP request was sent to HTTPS port\n";

/// Appends the plaintext `400` a TLS listener answers a plain-HTTP
/// request with (nginx does the same), then the connection closes.
pub fn encode_plain_http_on_tls(out: &mut Vec<u8>, date: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n");
    put_field(out, b"Date", date);
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(PLAIN_HTTP_ON_TLS.len())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(PLAIN_HTTP_ON_TLS);
}

#[cfg(test)]
mod tests {
    use super::super::{decode_request, decode_response, Limits};
    use super::*;
    use proptest::prelude::*;

    fn ip_text(ip: &str) -> String {
        let mut out = [0u8; 48];
        let n = client_ip_text(ip.parse().unwrap(), &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn client_ip_text_writes_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "198.18.0.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert_eq!(ip_text(ip), ip);
        }
    }

    proptest! {
        #[test]
        fn client_ip_text_matches_display_for_any_address(a: [u8; 4], b: [u16; 8]) {
            for ip in [std::net::IpAddr::from(a), std::net::IpAddr::from(b)] {
                let mut out = [0u8; 48];
                let n = client_ip_text(ip, &mut out);
                let want = ip.to_string();
                prop_assert_eq!(&out[..n], want.as_bytes());
            }
        }
    }

    /// `raw` forwarded over HTTPS with the proxy-set field `name: value`.
    fn with_set_field(raw: &str, name: &[u8], value: Option<&[u8]>) -> String {
        let mut f = Vec::new();
        let h = decode_request(raw.as_bytes(), &Limits::default(), &mut f)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let fwd = Forwarded {
            client_ip: b"192.0.2.7",
            https: true,
            set: Some(SetField { name, value }),
        };
        encode_request_set(&mut out, raw.as_bytes(), &h, &f, b"d", &fwd);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn set_field_replaces_every_client_copy() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nx-client-subject: CN=evil\r\nAccept: */*\r\nX-CLIENT-SUBJECT: CN=evil2\r\n\r\n";
        let out = with_set_field(raw, b"X-Client-Subject", Some(b"CN=alice,O=Acme"));
        assert!(!out.contains("evil"), "{out}");
        assert_eq!(
            out.matches("X-Client-Subject: CN=alice,O=Acme\r\n").count(),
            1,
            "{out}"
        );
        assert!(out.contains("Accept: */*\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    }

    #[test]
    fn set_field_without_a_value_only_drops_the_client_copies() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Client-Subject: CN=admin\r\nAccept: */*\r\n\r\n";
        let out = with_set_field(raw, b"x-client-subject", None);
        assert!(
            !out.to_ascii_lowercase().contains("x-client-subject"),
            "{out}"
        );
        assert!(out.contains("Accept: */*\r\n"), "{out}");
    }

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
    fn connection_cannot_strip_framing_from_a_request() {
        let out = req(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host\r\nContent-Length: 3\r\n\r\n",
            "1.2.3.4",
        );
        assert_eq!(
            out,
            "POST / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 3\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
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
            BodyOut::AsIs,
            b"",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_response(
            &mut out,
            raw.as_bytes(),
            &h,
            &f,
            ClientConn::Close,
            BodyOut::Dechunk,
            DATE,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n"
        );
    }

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn resp(raw: &str) -> String {
        let mut f = Vec::new();
        let h = decode_response(raw.as_bytes(), 16384, false, &mut f)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let conn = ClientConn::KeepAlive(Version::Http11);
        encode_response(&mut out, raw.as_bytes(), &h, &f, conn, BodyOut::AsIs, DATE);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn duplicate_content_length_is_sent_once() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nContent-Length: 5\r\nDate: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX-A: 1\r\nDate: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5 , 5\r\nX-A: 1\r\nContent-Length:5\r\nDate: x\r\n\r\n",
        ] {
            assert_eq!(
                resp(raw),
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nDate: x\r\n\r\n",
                "{raw:?}"
            );
        }
    }

    #[test]
    fn framing_fields_by_status() {
        let cases = [
            // 1xx and 204 never carry framing fields to the client.
            (
                "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n",
                "HTTP/1.1 100 Continue\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX: 1\r\nDate: x\r\n\r\n",
                "HTTP/1.1 204 No Content\r\nX: 1\r\nDate: x\r\n\r\n",
            ),
            // A 304's length is the representation's (RFC 9110 §8.6): kept.
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nDate: x\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nDate: x\r\n\r\n",
            ),
            // Naming a framing field in Connection does not unframe the message.
            (
                "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\nDate: x\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: x\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(resp(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn date_is_added_only_when_missing() {
        let out = resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        let out = resp("HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n");
        assert_eq!(out.matches("ate:").count(), 1, "{out}");
        assert!(
            out.contains("date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"),
            "{out}"
        );
    }

    #[test]
    fn absolute_form_is_forwarded_in_origin_form() {
        let out = req(
            "GET http://Admin.Test/x?y HTTP/1.1\r\nhost: admin.test\r\nAccept: 1\r\n\r\n",
            "1.2.3.4",
        );
        assert!(
            out.starts_with("GET /x?y HTTP/1.1\r\nhost: Admin.Test\r\nAccept: 1\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("ost:").count(), 1, "{out}");
        let out = req("GET http://a.test HTTP/1.0\r\n\r\n", "1.2.3.4");
        assert!(out.starts_with("GET / HTTP/1.1\r\n"), "{out}");
        assert!(out.contains("Host: a.test\r\n"), "{out}");
        let out = req(
            "GET http://a.test?q HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "::1",
        );
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
        let out = req(
            "OPTIONS http://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "::1",
        );
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
        let out = req("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", "::1");
        assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
    }

    #[test]
    fn canned_responses_are_well_framed_and_dated() {
        for s in [
            400, 404, 405, 408, 413, 414, 417, 431, 500, 501, 502, 503, 504, 505, 299,
        ] {
            for keep in [false, true] {
                let mut raw = Vec::new();
                encode_canned(&mut raw, s, keep, DATE);
                let mut f = Vec::new();
                let h = decode_response(&raw, 16384, false, &mut f)
                    .unwrap()
                    .unwrap();
                let body = &raw[h.head_len..];
                assert_eq!(
                    h.framing,
                    super::super::Framing::Length(body.len() as u64),
                    "{s}"
                );
                let want = if s == 299 { 500 } else { s };
                assert_eq!(h.status, want);
                assert!(body.starts_with(want.to_string().as_bytes()));
                assert_eq!(h.keep_alive(), keep, "{s}");
                let text = String::from_utf8(raw.clone()).unwrap();
                assert!(
                    text.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
                    "{text}"
                );
                assert_eq!(
                    text.contains("\r\nAllow: GET, HEAD,"),
                    want == 405,
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn plain_http_on_tls_answer_is_a_framed_closing_400() {
        let mut raw = Vec::new();
        encode_plain_http_on_tls(&mut raw, DATE);
        let mut f = Vec::new();
        let h = decode_response(&raw, 16384, false, &mut f)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 400);
        assert!(!h.keep_alive());
        assert_eq!(&raw[h.head_len..], PLAIN_HTTP_ON_TLS);
        assert_eq!(
            h.framing,
            super::super::Framing::Length(PLAIN_HTTP_ON_TLS.len() as u64)
        );
    }

    fn resp_as(raw: &str, client: Version, body: BodyOut) -> String {
        let mut f = Vec::new();
        let h = decode_response(raw.as_bytes(), 16384, false, &mut f)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        let conn = ClientConn::KeepAlive(client);
        encode_response(&mut out, raw.as_bytes(), &h, &f, conn, body, DATE);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reframed_bodies_get_the_framing_field_they_are_sent_with() {
        let cases = [
            // A close-delimited body sent chunked to an HTTP/1.1 client.
            (
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::Rechunk,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            // A chunked body sent bare to an HTTP/1.0 client: no framing field.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
                Version::Http10,
                BodyOut::Dechunk,
                "HTTP/1.1 200 OK\r\nDate: x\r\nConnection: keep-alive\r\n\r\n",
            ),
            // Close-delimited, sent as it came: fields as they came.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::UntilClose,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nDate: x\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::AsIs,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
            ),
        ];
        for (raw, client, body, want) in cases {
            assert_eq!(resp_as(raw, client, body), want, "{raw:?} {body:?}");
        }
    }

    #[test]
    fn trailers_cross_only_on_a_body_that_stays_chunked() {
        use super::super::Framing::*;
        for (framing, reframed, cross) in [
            (Chunked, false, true),
            // de-chunked for an HTTP/1.0 client
            (Chunked, true, false),
            // a close-delimited body chunked by the proxy has no trailers
            (Close, true, false),
            (Close, false, false),
            (Length(5), false, false),
            // a bodiless response, or a buffered chunked request body sent
            // with a length
            (None, false, false),
        ] {
            assert_eq!(
                trailers_cross(framing, reframed),
                cross,
                "{framing:?} reframed {reframed}"
            );
        }
    }

    #[test]
    fn the_trailer_field_goes_with_the_trailers() {
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nDate: x\r\n\r\n";
        let cases = [
            (
                chunked,
                Version::Http11,
                BodyOut::AsIs,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nDate: x\r\n\r\n",
            ),
            (
                chunked,
                Version::Http10,
                BodyOut::Dechunk,
                "HTTP/1.1 200 OK\r\nDate: x\r\nConnection: keep-alive\r\n\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X-Sum\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::AsIs,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: x\r\n\r\n",
            ),
            (
                "HTTP/1.0 200 OK\r\nTrailer: X-Sum\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::Rechunk,
                "HTTP/1.1 200 OK\r\nDate: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            // Named in Connection: hop-by-hop after all.
            (
                "HTTP/1.1 200 OK\r\nConnection: Trailer\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nDate: x\r\n\r\n",
                Version::Http11,
                BodyOut::AsIs,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n",
            ),
        ];
        for (raw, client, body, want) in cases {
            assert_eq!(resp_as(raw, client, body), want, "{raw:?} {body:?}");
        }
        // A request: kept while its body goes on chunked, dropped when the
        // whole body is sent with a length (its trailers are dropped then).
        let raw =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
        let out = req(raw, "1.2.3.4");
        assert!(out.contains("\r\nTrailer: X-Sum\r\n"), "{out}");
        let mut f = Vec::new();
        let h = decode_request(raw.as_bytes(), &Limits::default(), &mut f)
            .unwrap()
            .unwrap();
        let whole = RequestHead {
            framing: super::super::Framing::Length(3),
            ..h
        };
        let mut out = Vec::new();
        encode_request(
            &mut out,
            raw.as_bytes(),
            &whole,
            &f,
            b"1.2.3.4",
            b"d",
            false,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("Trailer"), "{out}");
        assert!(out.contains("\r\nContent-Length: 3\r\n"), "{out}");
    }

    #[test]
    fn chunks_are_sized_in_hex() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"", b""),
            (b"a", b"1\r\na\r\n"),
            (&[b'x'; 16], b"10\r\nxxxxxxxxxxxxxxxx\r\n"),
            (&[b'y'; 255], b"ff\r\n"),
        ];
        for (data, want) in cases {
            let mut out = b"prefix".to_vec();
            push_chunk(&mut out, data);
            assert!(
                out[6..].starts_with(want),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            let framing = if data.is_empty() { 0 } else { 4 };
            let size_digits = want.iter().position(|&b| b == b'\r').unwrap_or(0);
            assert_eq!(out.len(), 6 + size_digits + data.len() + framing);
        }
        // What the proxy's own chunked scanner reads back, data and end.
        let mut body = Vec::new();
        for part in [&b"hello "[..], &[b'z'; 4097][..], b"!"] {
            push_chunk(&mut body, part);
        }
        body.extend_from_slice(LAST_CHUNK);
        let mut dec = super::super::ChunkedDecoder::response();
        let (mut at, mut data) = (0, Vec::new());
        while !dec.is_done() {
            let (n, piece) = dec.next(&body[at..]).unwrap();
            assert!(n > 0, "stuck at {at}");
            if piece == super::super::Piece::Data {
                data.extend_from_slice(&body[at..at + n]);
            }
            at += n;
        }
        assert_eq!(at, body.len());
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&[b'z'; 4097]);
        want.push(b'!');
        assert_eq!(data, want);
    }
}
