//! Certificate choice by SNI: each certificate answers for the DNS names it
//! carries (subject alternative names, or the common name when it has
//! none), exactly or through a `*.` wildcard; the listener's first
//! certificate is the default when the client sent no name or one that no
//! certificate carries (nginx's `default_server` behaviour).
//!
//! Matching is a pure function over lower-cased names ([`matches`]), so it
//! is table-tested without any TLS. The resolver runs inside rustls during
//! the handshake, on the shard's thread; it only reads immutable data.

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

/// The index of the certificate chosen for `sni` among certificates named
/// `names`: an exact name wins over a wildcard, an earlier certificate over
/// a later one; `None` when no certificate names it (the default is then
/// served).
pub fn choose(names: &[Vec<String>], sni: &str) -> Option<usize> {
    let host = sni.trim_end_matches('.').to_ascii_lowercase();
    names
        .iter()
        .position(|ns| ns.iter().any(|n| !n.starts_with("*.") && *n == host))
        .or_else(|| {
            names
                .iter()
                .position(|ns| ns.iter().any(|n| matches(n, &host)))
        })
}

impl SniResolver {
    /// See [`choose`].
    pub fn find(&self, sni: &str) -> Option<usize> {
        choose(&self.names, sni)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello.server_name().and_then(|n| self.find(n)).unwrap_or(0);
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

    #[test]
    fn exact_beats_wildcard_and_unknown_is_none() {
        let names: Vec<Vec<String>> = [
            &["a.example.com"][..],
            &["*.example.com", "b.example.org"],
            &["c.example.com"],
        ]
        .iter()
        .map(|ns| ns.iter().map(|s| s.to_string()).collect())
        .collect();
        let r = |sni| choose(&names, sni);
        assert_eq!(r("a.example.com"), Some(0));
        assert_eq!(r("A.Example.COM."), Some(0));
        assert_eq!(r("b.example.org"), Some(1));
        // Exact on a later certificate beats an earlier wildcard.
        assert_eq!(r("c.example.com"), Some(2));
        assert_eq!(r("z.example.com"), Some(1));
        assert_eq!(r("example.net"), None);
    }
}
