//! The request's host as a client names it: the `Host` field and the
//! authority of an absolute-form target. Syntax and equality, nothing else.
//!
//! Both must be `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
//! reg-name or IPv4 address (unreserved, `%XX` and sub-delims, no `@`), or
//! an IP literal in brackets; then an optional decimal port no larger than
//! 65535. A server must answer 400 to anything else: `a:80:80`, `a:xyz` or
//! `[::1` mean different hosts to different parsers.
//!
//! When a request carries both (absolute-form and `Host`), they must name
//! the same authority (RFC 9112 §3.2): routing uses the target's, and a
//! `Host` naming another host is how virtual-host checks get bypassed, so
//! it is refused, as haproxy does. "The same" is RFC 3986 §6.2.2–6.2.3
//! normalisation: the host compared case-insensitively, and a port equal
//! to the scheme's default (80 for `http`, 443 for `https`), an empty
//! port and no port all alike. So `GET http://A.test:80/` with
//! `Host: a.test` passes (curl `-x` sends exactly that for an explicit
//! `:80`), and `http://a.test:8080/` with `Host: a.test` does not.

/// Whether `h` is a valid `Host` value or authority (see the module docs).
pub(super) fn valid(h: &[u8]) -> bool {
    let Some((host, port)) = split(h) else {
        return false;
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => number(digits).is_some_and(|n| n <= 65535),
        _ => false,
    };
    port_ok && !host.is_empty() && (host[0] == b'[' || valid_reg_name(host))
}

/// Whether two valid authorities name the same host and port, with
/// `default_port` the port of the target's scheme.
pub(super) fn same(a: &[u8], b: &[u8], default_port: u16) -> bool {
    match (split(a), split(b)) {
        (Some((ha, pa)), Some((hb, pb))) => {
            ha.eq_ignore_ascii_case(hb) && port(pa, default_port) == port(pb, default_port)
        }
        _ => false,
    }
}

/// Splits an authority into host and what follows it (empty, or `:` and
/// the port digits); `None` for an unclosed IP literal or a malformed one.
fn split(h: &[u8]) -> Option<(&[u8], &[u8])> {
    match h.first() {
        Some(b'[') => {
            let close = h.iter().position(|&b| b == b']')?;
            let literal = &h[1..close];
            let ok = literal.len() >= 2
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            ok.then(|| h.split_at(close + 1))
        }
        _ => {
            let end = h.iter().position(|&b| b == b':').unwrap_or(h.len());
            Some(h.split_at(end))
        }
    }
}

/// The port an authority's port part means: none or empty → the default.
fn port(part: &[u8], default_port: u16) -> Option<u32> {
    match part {
        [] | [b':'] => Some(u32::from(default_port)),
        [b':', digits @ ..] => number(digits),
        _ => None,
    }
}

/// A short run of ASCII digits as a number (`None` for anything else or
/// more than 5 digits).
fn number(digits: &[u8]) -> Option<u32> {
    (digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)).then(|| {
        digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
    })
}

/// A reg-name or IPv4 address: unreserved, sub-delims and valid `%XX`.
fn valid_reg_name(h: &[u8]) -> bool {
    let mut i = 0;
    while i < h.len() {
        match h[i] {
            b'%' => {
                let hex = |j: usize| h.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_normalises_case_and_the_default_port() {
        let cases: &[(&str, &str, u16, bool)] = &[
            ("a.test", "a.test", 80, true),
            ("A.Test", "a.test", 80, true),
            ("a.test:80", "a.test", 80, true),
            ("a.test", "a.test:80", 80, true),
            ("a.test:", "a.test", 80, true),
            ("a.test:", "a.test:80", 80, true),
            ("a.test:0080", "a.test", 80, true),
            ("a.test:443", "a.test", 443, true),
            ("[::1]:443", "[::1]", 443, true),
            ("[::A]", "[::a]:80", 80, true),
            ("a.test:8080", "A.TEST:8080", 80, true),
            // A different port, or the other scheme's default.
            ("a.test:8080", "a.test", 80, false),
            ("a.test:443", "a.test", 80, false),
            ("a.test:80", "a.test", 443, false),
            ("a.test:8080", "a.test:8081", 80, false),
            // A different host, however close.
            ("a.test", "b.test", 80, false),
            ("a.test", "a.test.", 80, false),
            ("a-b", "a%2Db", 80, false),
            ("[::1]", "[0::1]", 80, false),
            ("a.test", "a.test.evil", 80, false),
            // Not authorities at all.
            ("[::1", "[::1", 80, false),
        ];
        for &(a, b, default_port, want) in cases {
            assert_eq!(
                same(a.as_bytes(), b.as_bytes(), default_port),
                want,
                "{a:?} vs {b:?} (default {default_port})"
            );
        }
    }
}
