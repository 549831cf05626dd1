//! A verified client certificate's subject as an RFC 4514 string, for the
//! header mutual TLS passes to backends (`client_subject_header`).
//!
//! Computed once per connection, right after the handshake (never per
//! request): the value is kept with the connection and copied into each
//! request head. The form is the one nginx's `$ssl_client_s_dn` gives
//! (RFC 2253/4514): last RDN first, `,` between RDNs, `+` inside one,
//! short names (`CN`, `O`, `OU`, `C`, `ST`, `L`, `DC`, `UID`, `STREET`),
//! other attributes by dotted OID. Escaping follows RFC 4514 §2.4, and
//! every byte that is not printable ASCII (controls, DEL, UTF-8) is
//! written `\XX`, so the value can never break the header it travels in.

use std::fmt::Write;

use x509_parser::der_parser::oid::Oid;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The subject of the DER certificate `der` (the leaf the client sent),
/// `None` when it does not parse (rustls verified it, so it does).
pub fn of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(rfc4514(cert.subject()))
}

/// `name` as an RFC 4514 string.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            put_attr(&mut out, attr);
        }
    }
    out
}

fn short_name(oid: &Oid<'_>) -> Option<&'static str> {
    let s = oid.to_id_string();
    Some(match s.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn put_attr(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let oid = attr.attr_type();
    match short_name(oid) {
        Some(n) => out.push_str(n),
        None => out.push_str(&oid.to_id_string()),
    }
    out.push('=');
    match attr.as_str() {
        Ok(v) => escape(out, v.as_bytes()),
        Err(_) => {
            // Not a string type: `#` and the hex of its value's bytes.
            out.push('#');
            for &b in attr.as_slice() {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

/// Escapes an attribute value (RFC 4514 §2.4), hex-escaping every byte
/// that is not printable ASCII.
pub fn escape(out: &mut String, v: &[u8]) {
    let last = v.len().saturating_sub(1);
    for (i, &b) in v.iter().enumerate() {
        let special = matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\')
            || (i == 0 && (b == b'#' || b == b' '))
            || (i == last && b == b' ');
        if !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\{b:02X}");
        } else if special {
            out.push('\\');
            out.push(b as char);
        } else {
            out.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(v: &[u8]) -> String {
        let mut s = String::new();
        escape(&mut s, v);
        s
    }

    #[test]
    fn escaping_table() {
        let table: &[(&[u8], &str)] = &[
            (b"alice", "alice"),
            (b"Acme, Inc.", "Acme\\, Inc."),
            (b"a+b;c<d>e\"f\\g", "a\\+b\\;c\\<d\\>e\\\"f\\\\g"),
            (b"#1", "\\#1"),
            (b" lead and trail ", "\\ lead and trail\\ "),
            (b"mid # ok", "mid # ok"),
            // Header-breaking bytes never pass as they are.
            (b"x\r\nX-Evil: 1", "x\\0D\\0AX-Evil: 1"),
            (b"nul\0", "nul\\00"),
            ("Zoë".as_bytes(), "Zo\\C3\\AB"),
        ];
        for (v, want) in table {
            assert_eq!(esc(v), *want, "{:?}", String::from_utf8_lossy(v));
        }
    }
}
