//! Request-head decoding with the client-side rules of RFC 9112.
//!
//! [`decode_request`] is called on whatever bytes have arrived; it answers
//! "need more" (`Ok(None)`), a decoded [`RequestHead`] of spans, or a
//! [`RequestError`] that names the status to answer before closing. The
//! framing decision (no body, `Content-Length`, chunked) is made here and
//! only here.
//!
//! The request target is checked by form (RFC 9112 §3.2): origin-form
//! (`/path`) for every method, asterisk-form (`*`) for `OPTIONS` only,
//! absolute-form (`http://authority/path`) with an `http`/`https` scheme and
//! a non-empty authority without userinfo. Authority-form is `CONNECT`'s,
//! which the proxy does not tunnel (405); for any other method it is a 400.
//! For absolute-form the authority is the request's host (§3.2.2): routing
//! uses it, the upstream gets origin-form with `Host` set from it, and a
//! `Host` field that names another host is a 400 (a client must send the
//! same value, §3.2; a mismatch is how vhost checks get bypassed). The
//! same host spelled differently (case, the scheme's default port) is not
//! another host (`host::same`).

use std::mem::MaybeUninit;

use super::fields::{self, classify, ConnectionOpts, Field, FieldKind, FramingError};
use super::host;
use super::{Framing, Limits, Span, Version, MAX_HEADERS_CAP};

/// Request methods the proxy treats specially; the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2: safe to send again to another server.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// How the request target was written (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `http://authority/path?query`; [`RequestHead::target`] is the part
    /// after the authority (possibly empty, or starting with `?`).
    Absolute,
    /// `*` (`OPTIONS` only).
    Asterisk,
}

/// A decoded request head; spans point into the buffer it was decoded from.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    /// Bytes taken by the head, including the final empty line.
    pub head_len: usize,
    pub method: Method,
    pub method_span: Span,
    /// The target as it is forwarded: for absolute-form, the path and query
    /// after the authority (see [`TargetForm::Absolute`]).
    pub target: Span,
    pub form: TargetForm,
    pub version: Version,
    pub framing: Framing,
    pub conn: ConnectionOpts,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The request asks for a protocol upgrade (`Connection: upgrade` plus
    /// an `Upgrade` field).
    pub upgrade: bool,
    /// The request's host: the authority of an absolute-form target, else
    /// the `Host` field.
    pub host: Option<Span>,
    /// A `Content-Length` field was present (even if 0).
    pub had_length: bool,
}

impl RequestHead {
    /// Whether the declared `Content-Length` is over `max_body`
    /// (`client_max_body_size`; 0 = unlimited): then the answer is 413
    /// before any of the body is read. A chunked body is checked as its
    /// size lines arrive ([`ChunkedDecoder::request`]).
    ///
    /// [`ChunkedDecoder::request`]: super::ChunkedDecoder::request
    pub fn body_too_large(&self, max_body: u64) -> bool {
        matches!(self.framing, Framing::Length(n) if max_body != 0 && n > max_body)
    }

    /// Whether the client wants the connection kept after this exchange.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.conn.close,
            Version::Http10 => self.conn.keep_alive && !self.conn.close,
        }
    }
}

/// Why a request head was refused. Each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Syntax error in the request line or a field (400).
    Malformed,
    /// Head larger than the limit (431).
    HeadTooLarge,
    /// More fields than the limit (431).
    TooManyHeaders,
    /// Framing fields that disagree or can't be trusted (400).
    Framing(FramingError),
    /// HTTP/1.1 without exactly one `Host`, an invalid one, or one that
    /// differs from the absolute-form authority (400).
    BadHost,
    /// Request target longer than `max_uri_bytes` (414).
    UriTooLong,
    /// `Expect` with something other than `100-continue` (417).
    BadExpect,
    /// Not HTTP/1.x (505); a later HTTP/1 minor version is read as HTTP/1.1.
    Version,
    /// `CONNECT` is not proxied (405).
    Connect,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::Framing(FramingError::UnsupportedCoding) => 501,
            RequestError::Malformed | RequestError::Framing(_) | RequestError::BadHost => 400,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::UriTooLong => 414,
            RequestError::BadExpect => 417,
            RequestError::Version => 505,
            RequestError::Connect => 405,
        }
    }
}

/// Decodes a request head from the start of `buf`.
///
/// `fields` is cleared and filled with the head's fields (reuse it across
/// requests: no allocation once it has grown).
pub fn decode_request(
    buf: &[u8],
    limits: &Limits,
    fields: &mut Vec<Field>,
) -> Result<Option<RequestHead>, RequestError> {
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut storage: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut storage[..max_headers]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return match as_http11(buf) {
                Some(copy) => decode_request(&copy, limits, fields),
                None => Err(version_error(buf)),
            }
        }
        Err(_) => return Err(RequestError::Malformed),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() > limits.max_uri_bytes && partial_target_too_long(buf, limits) {
                return Err(RequestError::UriTooLong);
            }
            return if buf.len() >= limits.max_head_bytes {
                Err(RequestError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(RequestError::HeadTooLarge);
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(RequestError::Malformed);
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let method_span = Span::of(buf, method.as_bytes());
    let method = Method::from_bytes(method.as_bytes());
    if method == Method::Connect {
        return Err(RequestError::Connect);
    }
    if path.len() > limits.max_uri_bytes {
        return Err(RequestError::UriTooLong);
    }
    // A fragment is never part of a request target (RFC 9112 §3.2): the
    // proxy would route on the part before `#` while a backend may not.
    if path.contains('#') {
        return Err(RequestError::Malformed);
    }
    let Some(split) = split_target(path.as_bytes(), method) else {
        return Err(RequestError::Malformed);
    };
    if climbs_above_root(split.rest) || !super::target::valid_escapes(path_of(split.rest)) {
        return Err(RequestError::Malformed);
    }
    let (form, target) = (split.form, Span::of(buf, split.rest));
    let authority = split.authority.map(|a| Span::of(buf, a));

    fields.clear();
    let mut host = None;
    let mut hosts = 0;
    let mut expect_continue = false;
    let mut has_upgrade = false;
    for h in req.headers.iter() {
        if h.name.is_empty() {
            return Err(RequestError::Malformed);
        }
        // Like nginx (`underscores_in_headers off`): a field named with `_`
        // is dropped, because some backends fold `_` into `-` and would
        // read `Transfer_Encoding` or `Content_Length` as framing.
        let kind = if h.name.as_bytes().contains(&b'_') {
            FieldKind::HopByHop
        } else {
            classify(h.name.as_bytes())
        };
        let value = Span::of(buf, h.value);
        if h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(RequestError::Malformed);
        }
        match kind {
            FieldKind::Host => {
                hosts += 1;
                host = Some(value);
            }
            FieldKind::Expect => expect_continue |= expectation(h.value)?,
            // h2c upgrades are not proxied: a tunnelled HTTP/2 connection
            // would bypass the proxy's view of every later request.
            FieldKind::Upgrade => {
                has_upgrade |= !fields::tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"h2c"))
            }
            _ => {}
        }
        fields.push(Field {
            name: Span::of(buf, h.name.as_bytes()),
            value,
            kind,
        });
    }
    if hosts > 1 || (version == Version::Http11 && hosts == 0) {
        return Err(RequestError::BadHost);
    }
    if let Some(h) = host {
        if !host::valid(h.get(buf)) {
            return Err(RequestError::BadHost);
        }
    }
    if let Some(a) = authority {
        if !host::valid(a.get(buf)) {
            return Err(RequestError::Malformed);
        }
        if host.is_some_and(|h| !host::same(h.get(buf), a.get(buf), split.default_port)) {
            return Err(RequestError::BadHost);
        }
        host = Some(a);
    }

    let te = fields::transfer_encoding(buf, fields).map_err(RequestError::Framing)?;
    let cl = fields::content_length(buf, fields).map_err(RequestError::Framing)?;
    let framing = match (te, cl) {
        (Some(_), Some(_)) => return Err(RequestError::Framing(FramingError::BothLengths)),
        // A request's only trustworthy coding list is a lone `chunked`, and
        // HTTP/1.0 has no chunked coding at all (RFC 9112 §6.1).
        (Some(true), None) if version == Version::Http11 && single_coding(buf, fields) => {
            Framing::Chunked
        }
        (Some(true), None) if version == Version::Http11 => {
            return Err(RequestError::Framing(FramingError::UnsupportedCoding))
        }
        (Some(_), None) => return Err(RequestError::Framing(FramingError::BadTransferEncoding)),
        (None, Some(0)) | (None, None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    let conn = fields::connection_opts(buf, fields);
    // 100-continue means nothing to an HTTP/1.0 client (RFC 9110 §10.1.1).
    let expect_continue = expect_continue && version == Version::Http11;
    Ok(Some(RequestHead {
        head_len,
        method,
        method_span,
        target,
        form,
        version,
        framing,
        conn,
        expect_continue,
        // An Upgrade in an HTTP/1.0 request MUST be ignored (RFC 9110 §7.8):
        // it is not forwarded, and no tunnel can open for it.
        upgrade: conn.upgrade && has_upgrade && version == Version::Http11,
        host,
        had_length: cl.is_some(),
    }))
}

/// The `Expect` field's value: whether it asks for `100-continue`, or a
/// 417 for any other expectation. Empty list elements are ignored (RFC 9110
/// §5.6.1), so `Expect:` with nothing in it expects nothing.
fn expectation(value: &[u8]) -> Result<bool, RequestError> {
    let mut any = false;
    for t in fields::tokens(value) {
        if !t.eq_ignore_ascii_case(b"100-continue") {
            return Err(RequestError::BadExpect);
        }
        any = true;
    }
    Ok(any)
}

/// A request line of a later HTTP/1 minor version (`HTTP/1.2` … `HTTP/1.9`)
/// is processed as HTTP/1.1, the highest minor version this proxy speaks
/// (RFC 9110 §2.5; nginx and haproxy do the same): `buf` copied with the
/// version rewritten, or `None` for any other line. Only the version digit
/// changes, so every offset into the copy is an offset into `buf`.
fn as_http11(buf: &[u8]) -> Option<Vec<u8>> {
    // The line may still be arriving: then it ends where `buf` does.
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    let minor = line_end.checked_sub(1)?;
    let later = line.len() > 9
        && line[line_end - 9..minor] == *b" HTTP/1."
        && matches!(line[minor], b'2'..=b'9');
    later.then(|| {
        let mut copy = buf.to_vec();
        copy[minor] = b'1';
        copy
    })
}

/// The path of a target (what comes before a `?`).
fn path_of(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    &target[..end]
}

fn version_error(buf: &[u8]) -> RequestError {
    // httparse reports any non-1.x version the same way; only a well-formed
    // request line `method SP target SP HTTP/d.d` deserves 505, anything
    // else (`GET /  HTTP/1.1`, garbage) is a plain 400. httparse fails at
    // the first byte it cannot take, so the line may be incomplete: then
    // its version so far must start like `HTTP/d.d` (the same line sent
    // whole or in pieces gets the same answer).
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n');
    let mut parts = buf[..line_end.unwrap_or(buf.len())].split(|&b| b == b' ');
    let (Some(method), Some(target), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return RequestError::Malformed;
    };
    if !method.is_empty() && !target.is_empty() && version_shaped(v, line_end.is_some()) {
        RequestError::Version
    } else {
        RequestError::Malformed
    }
}

/// Whether `v` is `HTTP/d.d` (`complete`), or a beginning of that shape.
fn version_shaped(v: &[u8], complete: bool) -> bool {
    const SHAPE: &[u8] = b"HTTP/0.0";
    (v.len() == SHAPE.len() || (!complete && v.len() < SHAPE.len()))
        && v.iter().zip(SHAPE).all(|(&b, &s)| match s {
            b'0' => b.is_ascii_digit(),
            s => b == s,
        })
}

fn single_coding(buf: &[u8], fields: &[Field]) -> bool {
    fields
        .iter()
        .filter(|f| f.kind == FieldKind::TransferEncoding)
        .flat_map(|f| fields::tokens(f.value.get(buf)))
        .count()
        == 1
}

/// A request target split by form.
struct SplitTarget<'a> {
    form: TargetForm,
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
    /// The port its scheme implies (80 for `http`, 443 for `https`).
    default_port: u16,
    /// What is forwarded (after the authority, for absolute-form).
    rest: &'a [u8],
}

/// Splits a request target by form, or `None` for a target this proxy
/// refuses (400).
fn split_target(t: &[u8], method: Method) -> Option<SplitTarget<'_>> {
    let whole = |form| SplitTarget {
        form,
        authority: None,
        default_port: 80,
        rest: t,
    };
    match t.first()? {
        b'/' => Some(whole(TargetForm::Origin)),
        b'*' if t.len() == 1 && method == Method::Options => Some(whole(TargetForm::Asterisk)),
        b'*' => None,
        _ => {
            let (rest, default_port) = match strip_prefix_ci(t, b"http://") {
                Some(rest) => (rest, 80),
                None => (strip_prefix_ci(t, b"https://")?, 443),
            };
            let end = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            // An empty authority is refused by the caller's host check.
            Some(SplitTarget {
                form: TargetForm::Absolute,
                authority: Some(&rest[..end]),
                default_port,
                rest: &rest[end..],
            })
        }
    }
}

/// Whether the path of `target` climbs above the root (`/../x`,
/// `/%2e%2e/x`): nginx answers 400, and forwarding it would hand the
/// backend a path outside any route (see `target::canonical_path`).
fn climbs_above_root(target: &[u8]) -> bool {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    super::target::canonical_path(&target[..end], &mut Vec::new()).is_none()
}

fn strip_prefix_ci<'a>(t: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (t.len() >= prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &t[prefix.len()..])
}

/// For a head still arriving: whether its request line already holds a
/// target longer than `max_uri_bytes` (so a 414 need not wait for the rest).
fn partial_target_too_long(buf: &[u8], limits: &Limits) -> bool {
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(_) => return false, // the line is complete: httparse judged it
        None => buf,
    };
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let target = &line[sp + 1..];
    let len = target
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(target.len());
    len > limits.max_uri_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Option<RequestHead>, RequestError> {
        let mut f = Vec::new();
        decode_request(s.as_bytes(), &Limits::default(), &mut f)
    }

    fn ok(s: &str) -> RequestHead {
        dec(s).expect("valid").expect("complete")
    }

    #[test]
    fn simple_get() {
        let h = ok("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest");
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive());
        assert_eq!(h.head_len, "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n".len());
    }

    #[test]
    fn partial_then_too_large() {
        assert!(dec("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "a".repeat(40000));
        assert_eq!(dec(&big).unwrap_err(), RequestError::HeadTooLarge);
        assert_eq!(dec(&big).unwrap_err().status(), 431);
    }

    #[test]
    fn too_many_headers() {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..200 {
            s.push_str(&format!("X-{i}: y\r\n"));
        }
        s.push_str("\r\n");
        assert_eq!(dec(&s).unwrap_err(), RequestError::TooManyHeaders);
    }

    #[test]
    fn http10_keepalive_only_when_asked() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
    }

    #[test]
    fn framing() {
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n").framing,
            Framing::Length(10)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
    }

    #[test]
    fn smuggling_shapes_are_400() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\x00: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET nothing HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        ];
        for b in bad {
            let e = dec(b).expect_err(b);
            assert_eq!(e.status(), 400, "{b:?} → {e:?}");
        }
    }

    #[test]
    fn host_syntax() {
        let host = |h: &str| dec(&format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n"));
        for good in [
            "a",
            "a.example:8080",
            "a:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::7]:65535",
            "xn--nxasmq6b.example",
            "a%2Db",
            "a,b",
        ] {
            assert!(host(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a:xyz", "a:80:80", "a:99999", "a:123456", "[::1", "[]", "[::1]x", "[::g]", "u@a",
            "a/b", "a\\b", "a%zz", "a%2", ":80", "a b",
        ] {
            assert_eq!(host(bad).unwrap_err(), RequestError::BadHost, "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_501_or_400() {
        let te = |v: &str| {
            dec(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n"
            ))
            .map(|h| h.unwrap().framing)
            .map_err(RequestError::status)
        };
        let cases: &[(&str, Result<Framing, u16>)] = &[
            ("chunked", Ok(Framing::Chunked)),
            ("Chunked", Ok(Framing::Chunked)),
            // chunked is final but other codings come first: not supported.
            ("gzip, chunked", Err(501)),
            ("identity, chunked", Err(501)),
            ("xchunked, chunked", Err(501)),
            // chunked missing or not final: the length is unknowable (MUST 400).
            ("xchunked", Err(400)),
            ("identity", Err(400)),
            ("gzip", Err(400)),
            ("chunked, identity", Err(400)),
            ("chunked, chunked", Err(400)),
            ("\"chunked\"", Err(400)),
            ("chunked;x=1", Err(400)),
        ];
        for (v, want) in cases {
            assert_eq!(te(v), *want, "{v:?}");
        }
    }

    #[test]
    fn request_line_shapes() {
        let cases: &[(&str, u16)] = &[
            ("GET /  HTTP/1.1", 400),
            ("GET / HTTP/1.1 ", 400),
            ("GET / HTTP/2.1", 505),
            ("GET / HTTP/0.9", 505),
            ("GET / HTTP/3.0", 505),
            ("PRI * HTTP/2.0", 505),
            ("GET / HTTP/1.10", 400),
            ("GET / http/1.1", 400),
            ("GET /x#frag HTTP/1.1", 400),
            ("GET /#/../admin HTTP/1.1", 400),
            ("GET /x?y#z HTTP/1.1", 400),
            ("GET http://a/x#f HTTP/1.1", 400),
        ];
        for (line, status) in cases {
            let e = dec(&format!("{line}\r\nHost: a\r\n\r\n")).expect_err(line);
            assert_eq!(e.status(), *status, "{line:?} → {e:?}");
        }
    }

    #[test]
    fn other_statuses() {
        assert_eq!(
            dec("GET / HTTP/2.0\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status(),
            505
        );
        assert_eq!(
            dec("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            dec("POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n")
                .unwrap_err()
                .status(),
            417
        );
    }

    #[test]
    fn expect_and_upgrade() {
        let h =
            ok("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        let h =
            ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.upgrade);
        let h = ok("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.upgrade);
    }

    #[test]
    fn later_minor_versions_are_http11() {
        for v in ["1.2", "1.9"] {
            let raw = format!("GET /x HTTP/{v}\r\nHost: a\r\n\r\nbody");
            let h = ok(&raw);
            assert_eq!(h.version, Version::Http11, "{v}");
            assert_eq!(h.target.get(raw.as_bytes()), b"/x");
            assert_eq!(h.host.unwrap().get(raw.as_bytes()), b"a");
            assert_eq!(h.head_len, raw.len() - 4);
        }
        // Still a 1.1 request: Host is required, the line must be well formed.
        assert_eq!(dec("GET / HTTP/1.2\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            dec("GET  / HTTP/1.2\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert!(dec("GET / HTTP/1.2\r\nHost: a\r\n").unwrap().is_none());
        // The line may arrive in pieces: no verdict before its end.
        for part in ["GET / HTTP/1.2", "GET / HTTP/1.2\r"] {
            assert!(dec(part).unwrap().is_none(), "{part:?}");
        }
        for (line, want) in [
            ("GET / HTTP/1.2", Some("GET / HTTP/1.1")),
            ("GET / HTTP/1.0", None),
            ("GET / HTTP/2.2", None),
            ("GET / HTTP/1.x", None),
            ("HTTP/1.2", None),
            ("GET / HTTP/1.2x", None),
        ] {
            let got = as_http11(format!("{line}\r\n").as_bytes());
            let want = want.map(|w| format!("{w}\r\n").into_bytes());
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn invalid_escapes_in_the_path_are_400() {
        for t in [
            "/x%zz",
            "/x%",
            "/x%4",
            "/a%2/b?q=1",
            "/x%00",
            "/a%00/../b?q",
        ] {
            let e = dec(&format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n")).expect_err(t);
            assert_eq!(e.status(), 400, "{t}");
        }
        // The query is the application's: forwarded as written.
        for t in ["/x%41%2F%01?a=%00", "/x?q=100%", "/x?%zz", "http://a/x%20y"] {
            ok(&format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n"));
        }
    }

    #[test]
    fn version_shapes() {
        for (v, complete, want) in [
            ("HTTP/3.0", true, true),
            ("HTTP/3.", true, false),
            ("HTTP/3.", false, true),
            ("HTTP/3", false, true),
            ("HTTP/30", false, false),
            ("HTTP/3.0x", false, false),
            ("http/3", false, false),
        ] {
            assert_eq!(
                version_shaped(v.as_bytes(), complete),
                want,
                "{v} {complete}"
            );
        }
        // The same line, whole or still arriving, gets the same answer.
        for line in ["GET / HTTP/3.0", "GET / HTTP/2.0", "PRI * HTTP/2.0"] {
            let whole = dec(&format!("{line}\r\nHost: a\r\n\r\n")).unwrap_err();
            for cut in 10..=line.len() {
                match dec(&line[..cut]) {
                    Err(e) => assert_eq!(e, whole, "{:?}", &line[..cut]),
                    Ok(r) => assert!(r.is_none(), "{:?}", &line[..cut]),
                }
            }
        }
    }

    #[test]
    fn expectations() {
        for (v, want) in [
            ("100-continue", Ok(true)),
            ("100-Continue", Ok(true)),
            ("100-continue, ", Ok(true)),
            ("", Ok(false)),
            (" , ", Ok(false)),
            ("foo", Err(417)),
            ("100-continue, foo", Err(417)),
        ] {
            assert_eq!(
                expectation(v.as_bytes()).map_err(RequestError::status),
                want,
                "{v:?}"
            );
        }
    }

    #[test]
    fn http10_upgrade_is_ignored() {
        let h = ok("GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.upgrade);
    }

    #[test]
    fn underscore_fields_are_dropped_and_h2c_not_upgraded() {
        let mut f = Vec::new();
        let raw =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\n";
        let h = decode_request(raw.as_bytes(), &Limits::default(), &mut f)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(f[1].kind, FieldKind::HopByHop);
        let h = ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n");
        assert!(!h.upgrade);
    }

    fn with_limits(s: &str, limits: Limits) -> Result<Option<RequestHead>, RequestError> {
        decode_request(s.as_bytes(), &limits, &mut Vec::new())
    }

    #[test]
    fn absolute_form_uses_the_authority() {
        let raw = "GET http://Admin.Test:8080/x?q=1 HTTP/1.1\r\nHost: admin.test:8080\r\n\r\n";
        let h = ok(raw);
        assert_eq!(h.form, TargetForm::Absolute);
        assert_eq!(h.target.get(raw.as_bytes()), b"/x?q=1");
        assert_eq!(h.host.unwrap().get(raw.as_bytes()), b"Admin.Test:8080");
        // HTTP/1.0 needs no Host: the authority is the host.
        let raw = "GET https://a.test HTTP/1.0\r\n\r\n";
        let h = ok(raw);
        assert_eq!(h.target.get(raw.as_bytes()), b"");
        assert_eq!(h.host.unwrap().get(raw.as_bytes()), b"a.test");
        // The same authority spelled another way (host case, the scheme's
        // default port): routed and forwarded by the target's spelling.
        for (raw, host) in [
            (
                "GET http://a.test:80/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
                "a.test:80",
            ),
            (
                "GET http://A.test/ HTTP/1.1\r\nHost: a.test:80\r\n\r\n",
                "A.test",
            ),
            (
                "GET https://a.test:443/ HTTP/1.1\r\nHost: A.TEST\r\n\r\n",
                "a.test:443",
            ),
        ] {
            assert_eq!(ok(raw).host.unwrap().get(raw.as_bytes()), host.as_bytes());
        }
        let raw = "GET http://a.test?x HTTP/1.1\r\nHost: a.test\r\n\r\n";
        assert_eq!(ok(raw).target.get(raw.as_bytes()), b"?x");
        let raw = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(raw).form, TargetForm::Asterisk);
        assert_eq!(
            ok("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").form,
            TargetForm::Origin
        );
    }

    #[test]
    fn target_form_errors() {
        let cases: &[(&str, u16)] = &[
            // The Host bypass: authority and Host disagree.
            (
                "GET http://admin.test/x HTTP/1.1\r\nHost: public.test\r\n\r\n",
                400,
            ),
            (
                "GET http://admin.test/x HTTP/1.1\r\nHost: admin.test:8080\r\n\r\n",
                400,
            ),
            (
                "GET http://admin.test:443/x HTTP/1.1\r\nHost: admin.test\r\n\r\n",
                400,
            ),
            // Absolute-form still needs exactly one Host in HTTP/1.1.
            ("GET http://a.test/x HTTP/1.1\r\n\r\n", 400),
            (
                "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
                400,
            ),
            ("GET ftp://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("GET http:///x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("GET http:// HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            (
                "GET http://user@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
                400,
            ),
            ("GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            // Paths above the root (nginx: 400), however spelled.
            ("GET /../etc HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("GET /a/%2e%2E/../b?x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("GET http://a.test/.. HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            ("OPTIONS *x HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
            (
                "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
                405,
            ),
        ];
        for (raw, status) in cases {
            let e = dec(raw).expect_err(raw);
            assert_eq!(e.status(), *status, "{raw:?} → {e:?}");
        }
    }

    #[test]
    fn uri_length_limit_is_414() {
        let limits = Limits {
            max_uri_bytes: 16,
            ..Limits::default()
        };
        let at = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(15));
        assert!(with_limits(&at, limits).unwrap().is_some());
        let over = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(16));
        assert_eq!(
            with_limits(&over, limits).unwrap_err(),
            RequestError::UriTooLong
        );
        assert_eq!(RequestError::UriTooLong.status(), 414);
        // Still arriving: refused once the target alone is over the limit.
        let partial = format!("GET /{}", "a".repeat(16));
        assert_eq!(
            with_limits(&partial, limits).unwrap_err(),
            RequestError::UriTooLong
        );
        assert!(with_limits("GET /aaaaaaaaaaaaa", limits).unwrap().is_none());
        // A long header value is not a long URI.
        let hdr = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "b".repeat(40));
        assert!(with_limits(&hdr, limits).unwrap().is_none());
    }

    #[test]
    fn declared_body_limit() {
        let post = |cl: &str| ok(&format!("POST / HTTP/1.1\r\nHost: a\r\n{cl}\r\n"));
        let cases = [
            ("Content-Length: 10\r\n", 10, false),
            ("Content-Length: 11\r\n", 10, true),
            ("Content-Length: 11\r\n", 0, false),
            ("Content-Length: 0\r\n", 1, false),
            ("", 1, false),
            ("Transfer-Encoding: chunked\r\n", 1, false),
        ];
        for (cl, limit, want) in cases {
            assert_eq!(post(cl).body_too_large(limit), want, "{cl:?} {limit}");
        }
    }

    #[test]
    fn idempotency() {
        assert!(Method::Get.is_idempotent());
        assert!(Method::Put.is_idempotent());
        assert!(!Method::Post.is_idempotent());
        assert!(!Method::Patch.is_idempotent());
    }
}
