//! Certificate choice by SNI: each certificate answers for the DNS names it
//! carries (subject alternative names, or the common name when it has
//! none), exactly or through a `*.` wildcard; the listener's first
//! certificate is the default when the client sent no name or one that no
//! certificate carries (nginx's `default_server` behaviour).
//!
//! One name may be served by several certificates of different key types
//! (an ECDSA and an RSA certificate for the same site, as nginx allows with
//! two `ssl_certificate` lines): among the certificates that answer for
//! the name, the first whose key can sign with a scheme the client offered
//! is served. rustls hands the resolver only the signature schemes that fit
//! the cipher suites the client offered, so a TLS 1.2 client offering only
//! `ECDHE-RSA-*` suites gets the RSA certificate and an ECDSA-capable one
//! the first configured. The default certificate has such a group too: the
//! certificates carrying exactly its names.
//!
//! The choice is a pure function over lower-cased names and a "can this
//! certificate's key sign for this client" predicate ([`choose`]), so it is
//! table-tested without any TLS. The resolver runs inside rustls during the
//! handshake, on the shard's thread; it only reads immutable data.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The listener's certificates, the default first, each with the names it
/// answers for (lower-case, as written in the certificate: `example.com`,
/// `*.example.com`).
#[derive(Debug)]
pub struct SniResolver {
    pub names: Vec<Vec<String>>,
    pub keys: Vec<Arc<CertifiedKey>>,
}

/// Whether a certificate name (`example.com` or `*.example.com`) covers
/// `host` (lower-case, no trailing dot). A wildcard stands for exactly one
/// left-most label, as in RFC 6125 §6.4.3: `*.example.com` covers
/// `a.example.com`, neither `example.com` nor `a.b.example.com`.
pub fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The certificates that answer for `host` (lower-case, no trailing dot),
/// best first: those carrying it exactly, then those whose wildcard covers
/// it, each in configuration order.
fn answering<'a>(names: &'a [Vec<String>], host: &'a str) -> impl Iterator<Item = usize> + 'a {
    let has = move |i: &usize, wildcard: bool| {
        names[*i]
            .iter()
            .any(|n| n.starts_with("*.") == wildcard && matches(n, host))
    };
    let exact = (0..names.len()).filter(move |i| has(i, false));
    let wildcard = (0..names.len()).filter(move |i| !has(i, false) && has(i, true));
    exact.chain(wildcard)
}

/// Whether two certificates carry the same names (in any order).
fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|n| b.contains(n))
}

/// The index of the certificate served to a client that named `sni`:
/// among those answering for it ([`answering`]) the first `can_sign`
/// accepts; when none answers for it (or no name was sent), the first
/// `can_sign` accepts among the default's group (certificates with the
/// default's names). When no candidate can sign, the first candidate: the
/// handshake then fails for want of a shared cipher, as it must.
pub fn choose(names: &[Vec<String>], sni: Option<&str>, can_sign: impl Fn(usize) -> bool) -> usize {
    if let Some(host) = sni.map(normalise) {
        let mut first = None;
        for i in answering(names, &host) {
            if can_sign(i) {
                return i;
            }
            first.get_or_insert(i);
        }
        if let Some(i) = first {
            return i;
        }
    }
    let Some(default) = names.first() else {
        return 0;
    };
    (0..names.len())
        .filter(|&i| same_names(&names[i], default))
        .find(|&i| can_sign(i))
        .unwrap_or(0)
}

/// A name as sent in SNI, as certificates are matched: lower-case, without
/// a trailing dot.
fn normalise(sni: &str) -> String {
    sni.trim_end_matches('.').to_ascii_lowercase()
}

impl SniResolver {
    /// The first certificate answering for `sni`, whatever its key; `None`
    /// when no certificate carries the name (the default is then served).
    pub fn find(&self, sni: &str) -> Option<usize> {
        answering(&self.names, &normalise(sni)).next()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        let i = choose(&self.names, hello.server_name(), |i| {
            self.keys[i].key.choose_scheme(offered).is_some()
        });
        self.keys.get(i).map(Arc::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_exact_matching() {
        let table = [
            ("example.com", "example.com", true),
            ("example.com", "www.example.com", false),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "wwwexample.com", false),
            ("a.example.com", "b.example.com", false),
        ];
        for (pattern, host, want) in table {
            assert_eq!(matches(pattern, host), want, "{pattern} vs {host}");
        }
    }

    fn names(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|ns| ns.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn exact_beats_wildcard_and_unknown_is_the_default() {
        let names = names(&[
            &["a.example.com"][..],
            &["*.example.com", "b.example.org"],
            &["c.example.com"],
        ]);
        let any = |_| true;
        let table = [
            (Some("a.example.com"), 0),
            (Some("A.Example.COM."), 0),
            (Some("b.example.org"), 1),
            // Exact on a later certificate beats an earlier wildcard.
            (Some("c.example.com"), 2),
            (Some("z.example.com"), 1),
            (Some("example.net"), 0),
            (None, 0),
        ];
        for (sni, want) in table {
            assert_eq!(choose(&names, sni, any), want, "{sni:?}");
        }
        let r = SniResolver {
            names,
            keys: Vec::new(),
        };
        assert_eq!(r.find("A.EXAMPLE.COM"), Some(0));
        assert_eq!(r.find("z.example.com"), Some(1));
        assert_eq!(r.find("example.net"), None);
    }

    #[test]
    fn the_key_type_the_client_can_use_is_chosen_among_equal_names() {
        // 0: ECDSA a.test (default), 1: RSA a.test, 2: ECDSA b.test,
        // 3: RSA *.b.test, 4: ECDSA c.test only.
        let names = names(&[
            &["a.test", "*.a.test"][..],
            &["*.a.test", "a.test"],
            &["b.test", "x.b.test"],
            &["*.b.test"],
            &["c.test"],
        ]);
        // Which certificates the client can use.
        type CanSign<'a> = &'a dyn Fn(usize) -> bool;
        let rsa = [1, 3];
        let rsa_only = |i: usize| rsa.contains(&i);
        let ecdsa_only = |i: usize| !rsa.contains(&i);
        let table: [(Option<&str>, CanSign, usize); 12] = [
            (Some("a.test"), &ecdsa_only, 0),
            (Some("a.test"), &rsa_only, 1),
            (Some("www.a.test"), &rsa_only, 1),
            // Unknown and absent names: the default's group.
            (Some("nope.test"), &rsa_only, 1),
            (None, &rsa_only, 1),
            (None, &ecdsa_only, 0),
            // An exact name the client cannot use: a wildcard it can.
            (Some("x.b.test"), &ecdsa_only, 2),
            (Some("x.b.test"), &rsa_only, 3),
            // Nothing usable: the first candidate (the handshake fails).
            (Some("c.test"), &rsa_only, 4),
            (Some("b.test"), &rsa_only, 2),
            (Some("nope.test"), &|_| false, 0),
            (Some("c.test"), &ecdsa_only, 4),
        ];
        for (sni, can_sign, want) in table {
            assert_eq!(choose(&names, sni, can_sign), want, "{sni:?}");
        }
    }
}
