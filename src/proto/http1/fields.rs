//! Header-field classification shared by requests and responses.
//!
//! Every field is tagged once while decoding, so that the encoder can rewrite
//! a head with a single pass and no string comparisons: hop-by-hop fields
//! (RFC 9110 §7.6.1) and any field named in `Connection` are dropped, framing
//! fields are checked here for the ambiguities that enable smuggling.

use super::Span;

/// What the proxy knows about a header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Forwarded as is.
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    /// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
    /// `Upgrade` (re-added by the encoder when upgrading) and every field
    /// named in `Connection`: never forwarded.
    HopByHop,
    /// `Trailer`: announces the trailer fields (RFC 9110 §6.6.2). Not
    /// hop-by-hop (RFC 7230 took it off RFC 2616's list), but it goes on
    /// only with the trailer section it announces
    /// (`encode::trailers_cross`).
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    /// `X-Real-IP` and `X-Forwarded-Proto`: replaced by the proxy's own.
    ProxySet,
    /// `Date`: the proxy adds one to a response that has none.
    Date,
}

/// One header field: its name and value spans and its kind.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: Span,
    pub value: Span,
    pub kind: FieldKind,
}

/// Classifies a field name (case-insensitive).
pub fn classify(name: &[u8]) -> FieldKind {
    // Dispatch on length first: almost every name is rejected by one compare.
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if eq("te") => FieldKind::HopByHop,
        4 if eq("host") => FieldKind::Host,
        4 if eq("date") => FieldKind::Date,
        6 if eq("expect") => FieldKind::Expect,
        7 if eq("upgrade") => FieldKind::Upgrade,
        7 if eq("trailer") => FieldKind::Trailer,
        9 if eq("x-real-ip") => FieldKind::ProxySet,
        10 if eq("connection") || eq("keep-alive") => FieldKind::HopByHop,
        14 if eq("content-length") => FieldKind::ContentLength,
        15 if eq("x-forwarded-for") => FieldKind::XForwardedFor,
        16 if eq("proxy-connection") => FieldKind::HopByHop,
        17 if eq("transfer-encoding") => FieldKind::TransferEncoding,
        17 if eq("x-forwarded-proto") => FieldKind::ProxySet,
        _ => FieldKind::Other,
    }
}

/// Whether a field must not cross the proxy in a trailer section.
///
/// RFC 9110 §6.5.1: a sender must not put in trailers what framing, routing,
/// authentication, request modifiers, response control or content handling
/// depend on, and a recipient must not merge such trailers into the header
/// section. Backends and clients that do merge trailers (or simply log them
/// as headers) would otherwise see a `Content-Length`, `Host` or
/// `X-Forwarded-For` the proxy never checked, so these are dropped in both
/// directions; the rest pass unchanged.
pub fn forbidden_in_trailer(name: &[u8]) -> bool {
    if classify(name) != FieldKind::Other || name.contains(&b'_') {
        return true;
    }
    const NAMES: &[&str] = &[
        "age",
        "authorization",
        "cache-control",
        "content-encoding",
        "content-range",
        "content-type",
        "cookie",
        "expires",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "retry-after",
        "set-cookie",
        "vary",
        "www-authenticate",
    ];
    let lower_prefix = |p: &[u8]| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    lower_prefix(b"if-")
        || NAMES
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Iterates the comma-separated tokens of a list-valued field, trimmed of
/// optional whitespace, skipping empty elements (RFC 9110 §5.6.1).
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').filter_map(|t| {
        let t = trim_ows(t);
        (!t.is_empty()).then_some(t)
    })
}

/// Trims spaces and tabs on both ends.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What the `Connection` fields of a head say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOpts {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

/// Errors in framing fields; each maps to 400 (request) or 502 (response),
/// except [`UnsupportedCoding`](FramingError::UnsupportedCoding) (501).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both `Transfer-Encoding` and `Content-Length`.
    BothLengths,
    /// `chunked` missing, not final, or repeated; a malformed list; or any
    /// `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 §6.1, §6.3).
    BadTransferEncoding,
    /// A request whose codings end in `chunked` but also name others
    /// (`gzip, chunked`): well framed, but not something the proxy
    /// implements (RFC 9112 §6.1: 501).
    UnsupportedCoding,
    /// Differing, empty, non-digit or overflowing `Content-Length`.
    BadContentLength,
}

/// Parses every `Content-Length` field: all values must be the same run of
/// digits (a list like `5, 5` counts as one value).
pub fn content_length(buf: &[u8], fields: &[Field]) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for f in fields.iter().filter(|f| f.kind == FieldKind::ContentLength) {
        let v = f.value.get(buf);
        let mut any = false;
        for tok in v.split(|&b| b == b',') {
            let tok = trim_ows(tok);
            let n = parse_decimal(tok).ok_or(FramingError::BadContentLength)?;
            if found.is_some_and(|old| old != n) {
                return Err(FramingError::BadContentLength);
            }
            found = Some(n);
            any = true;
        }
        if !any {
            return Err(FramingError::BadContentLength);
        }
    }
    Ok(found)
}

/// `1*DIGIT` as a number: any count of leading zeros (`0000…03` is 3, as
/// nginx and haproxy read it), `None` for anything else or a value over
/// `u64::MAX`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether the `Transfer-Encoding` fields are present and end in exactly
/// one `chunked`. `Ok(None)`: no such field. `Ok(Some(true))`: chunked is the
/// final (and only chunked) coding. `Ok(Some(false))`: present, but chunked is
/// not final: for a request that is an error, for a response it means
/// close-delimited.
pub fn transfer_encoding(buf: &[u8], fields: &[Field]) -> Result<Option<bool>, FramingError> {
    let mut present = false;
    let mut last_chunked = false;
    let mut chunked_seen = 0;
    for f in fields
        .iter()
        .filter(|f| f.kind == FieldKind::TransferEncoding)
    {
        present = true;
        let v = f.value.get(buf);
        let mut any = false;
        for tok in v.split(|&b| b == b',') {
            let tok = trim_ows(tok);
            if tok.is_empty() || !tok.iter().all(|&b| is_tchar(b)) {
                return Err(FramingError::BadTransferEncoding);
            }
            any = true;
            last_chunked = tok.eq_ignore_ascii_case(b"chunked");
            if last_chunked {
                chunked_seen += 1;
            }
        }
        if !any {
            return Err(FramingError::BadTransferEncoding);
        }
    }
    if !present {
        return Ok(None);
    }
    if chunked_seen > 1 || (chunked_seen == 1 && !last_chunked) {
        return Err(FramingError::BadTransferEncoding);
    }
    Ok(Some(last_chunked))
}

/// Whether a field named in `Connection` may be dropped as hop-by-hop.
/// Framing and `Host` stay: the proxy decides the body's length and the
/// route by them, so the next hop must see the same ones.
pub fn may_unlist(kind: FieldKind) -> bool {
    !matches!(
        kind,
        FieldKind::ContentLength | FieldKind::TransferEncoding | FieldKind::Host
    )
}

/// RFC 9110 token character.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads the `Connection` options, and re-tags every field named in a
/// `Connection` field as hop-by-hop so it is never forwarded, except the
/// fields the message's framing and routing rest on (`Content-Length`,
/// `Transfer-Encoding`, `Host`): `Connection: Content-Length` must not turn
/// a length-delimited message into one the next hop reads to the close
/// (the proxy still frames by them, and re-emits them; see [`may_unlist`]).
pub fn connection_opts(buf: &[u8], fields: &mut [Field]) -> ConnectionOpts {
    let mut opts = ConnectionOpts::default();
    let mut listed_other = false;
    for f in fields.iter() {
        if f.kind != FieldKind::HopByHop || !f.name.get(buf).eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for tok in tokens(f.value.get(buf)) {
            if tok.eq_ignore_ascii_case(b"close") {
                opts.close = true;
            } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                opts.keep_alive = true;
            } else if tok.eq_ignore_ascii_case(b"upgrade") {
                opts.upgrade = true;
            } else {
                listed_other = true;
            }
        }
    }
    if listed_other {
        // Rare path: a second pass marks the listed fields.
        for i in 0..fields.len() {
            let name = fields[i].name.get(buf);
            let listed = fields.iter().any(|c| {
                c.kind == FieldKind::HopByHop
                    && c.name.get(buf).eq_ignore_ascii_case(b"connection")
                    && tokens(c.value.get(buf)).any(|t| t.eq_ignore_ascii_case(name))
            });
            if listed && may_unlist(fields[i].kind) {
                fields[i].kind = FieldKind::HopByHop;
            }
        }
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(buf: &[u8], pairs: &[(&str, &str)]) -> Vec<Field> {
        // Build spans by searching the buffer: tests only.
        let text = std::str::from_utf8(buf).unwrap();
        let mut at = 0;
        pairs
            .iter()
            .map(|(n, v)| {
                let ns = text[at..].find(n).unwrap() + at;
                let vs = text[ns + n.len()..].find(v).unwrap() + ns + n.len();
                at = vs + v.len();
                Field {
                    name: Span {
                        start: ns as u32,
                        end: (ns + n.len()) as u32,
                    },
                    value: Span {
                        start: vs as u32,
                        end: (vs + v.len()) as u32,
                    },
                    kind: classify(n.as_bytes()),
                }
            })
            .collect()
    }

    #[test]
    fn classify_is_case_insensitive() {
        assert_eq!(classify(b"Content-LENGTH"), FieldKind::ContentLength);
        assert_eq!(classify(b"transfer-encoding"), FieldKind::TransferEncoding);
        assert_eq!(classify(b"Keep-Alive"), FieldKind::HopByHop);
        assert_eq!(classify(b"TE"), FieldKind::HopByHop);
        assert_eq!(classify(b"trailer"), FieldKind::Trailer);
        assert_eq!(classify(b"X-Forwarded-Proto"), FieldKind::ProxySet);
        assert_eq!(classify(b"Content-Type"), FieldKind::Other);
        assert_eq!(classify(b"DATE"), FieldKind::Date);
    }

    #[test]
    fn trailer_policy() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Host",
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Upgrade",
            "Expect",
            "X-Forwarded-For",
            "X-Real-IP",
            "Authorization",
            "Set-Cookie",
            "Content-Type",
            "If-None-Match",
            "Date",
            "X_Forwarded_For",
        ] {
            assert!(forbidden_in_trailer(name.as_bytes()), "{name}");
        }
        for name in ["X-Checksum", "Server-Timing", "grpc-status", "Digest", "If"] {
            assert!(!forbidden_in_trailer(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn content_length_rules() {
        let b = b"Content-Length: 5\r\nContent-Length: 5, 5\r\n";
        let f = fields_of(b, &[("Content-Length", "5"), ("Content-Length", "5, 5")]);
        assert_eq!(content_length(b, &f), Ok(Some(5)));
        let b = b"Content-Length: 5\r\nContent-Length: 6\r\n";
        let f = fields_of(b, &[("Content-Length", "5"), ("Content-Length", "6")]);
        assert_eq!(content_length(b, &f), Err(FramingError::BadContentLength));
        for (v, n) in [
            ("00000000000000000000003", 3),
            ("18446744073709551615", u64::MAX),
            ("0", 0),
        ] {
            let s = format!("Content-Length: {v}\r\n");
            let f = fields_of(s.as_bytes(), &[("Content-Length", v)]);
            assert_eq!(content_length(s.as_bytes(), &f), Ok(Some(n)), "{v:?}");
        }
        for bad in [
            "+5",
            "-1",
            "0x10",
            "5 5",
            "",
            "99999999999999999999",
            "18446744073709551616",
            "5,",
            "٣",
        ] {
            let s = format!("Content-Length: {bad}\r\n");
            let f = fields_of(s.as_bytes(), &[("Content-Length", bad)]);
            assert_eq!(
                content_length(s.as_bytes(), &f),
                Err(FramingError::BadContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let ok = |v: &str| {
            let s = format!("Transfer-Encoding: {v}\r\n");
            let f = fields_of(s.as_bytes(), &[("Transfer-Encoding", v)]);
            transfer_encoding(s.as_bytes(), &f)
        };
        assert_eq!(ok("chunked"), Ok(Some(true)));
        assert_eq!(ok("CHUNKED"), Ok(Some(true)));
        assert_eq!(ok("gzip, chunked"), Ok(Some(true)));
        assert_eq!(ok("gzip"), Ok(Some(false)));
        assert_eq!(ok("chunked, gzip"), Err(FramingError::BadTransferEncoding));
        assert_eq!(
            ok("chunked, chunked"),
            Err(FramingError::BadTransferEncoding)
        );
        assert_eq!(ok("chunked;q=1"), Err(FramingError::BadTransferEncoding));
        assert_eq!(ok("\"chunked\""), Err(FramingError::BadTransferEncoding));
        assert_eq!(ok(","), Err(FramingError::BadTransferEncoding));
    }

    #[test]
    fn connection_lists_hop_by_hop_fields() {
        let b = b"Connection: close, X-Secret\r\nX-Secret: 1\r\nX-Other: 2\r\n";
        let mut f = fields_of(
            b,
            &[
                ("Connection", "close, X-Secret"),
                ("X-Secret", "1"),
                ("X-Other", "2"),
            ],
        );
        let o = connection_opts(b, &mut f);
        assert!(o.close && !o.keep_alive && !o.upgrade);
        assert_eq!(f[1].kind, FieldKind::HopByHop);
        assert_eq!(f[2].kind, FieldKind::Other);
    }

    #[test]
    fn connection_never_unlists_framing_or_host() {
        let b = b"Connection: Content-Length, Transfer-Encoding, Host, Date\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\nHost: a\r\nDate: x\r\n";
        let mut f = fields_of(
            b,
            &[
                (
                    "Connection",
                    "Content-Length, Transfer-Encoding, Host, Date",
                ),
                ("Content-Length", "2"),
                ("Transfer-Encoding", "chunked"),
                ("Host", "a"),
                ("Date", "x"),
            ],
        );
        connection_opts(b, &mut f);
        let kinds: Vec<FieldKind> = f.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FieldKind::HopByHop,
                FieldKind::ContentLength,
                FieldKind::TransferEncoding,
                FieldKind::Host,
                FieldKind::HopByHop,
            ]
        );
    }
}
