//! TLS to upstream servers: `[upstream.X] tls`, `tls_server_name`,
//! `tls_verify`, `tls_ca`.
//!
//! Why it is built this way:
//! - **One rustls `ClientConfig` per upstream, built with the config.**
//!   It holds the roots and the client session cache, so every shard's
//!   new connection to that upstream can resume a session (TLS 1.3
//!   tickets, TLS 1.2 session IDs) instead of a full handshake; the cache
//!   has a mutex inside rustls, taken only on a new connection's handshake.
//! - **Names decided at load.** Each server's `ServerName` (SNI and the
//!   name the certificate is verified against) is computed once:
//!   `tls_server_name`, else the host of the server's `address`; an
//!   address written as an IP sends no SNI and is verified against the
//!   certificate's IP addresses (rustls' rule for `ServerName::IpAddress`).
//! - **Roots: the system's** (`rustls-native-certs`: the distribution's
//!   CA bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), read once per
//!   config load, so an OS CA update or a locally added CA applies like it
//!   does for curl; or `tls_ca` (a PEM bundle: the private CA most
//!   backends use). `tls_verify = false` accepts any certificate (nginx's
//!   default, kept off here).
//! - **Verified as OpenSSL verifies** (nginx's `proxy_ssl_verify`, curl),
//!   not stricter ([`Verifier`]): webpki's chain, name and validity checks,
//!   plus the two cases where webpki alone refuses what they accept, both
//!   common with a backend's own certificate: the server's certificate is
//!   itself one of the roots (a self-signed certificate given as `tls_ca`;
//!   `openssl req -x509` marks it a CA, which webpki refuses as a server
//!   certificate), and a certificate without DNS subject alternative names
//!   whose common name is the server name.
//! - **Pooled like plain connections**, keyed by address and [`UpstreamTls::pool_key`]
//!   (a digest of name and trust settings), so connections verified for
//!   one name are never reused for another.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    verify_server_cert_signed_by_trust_anchor, verify_server_name, ClientSessionMemoryCache,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Upstream sessions remembered for resumption, per upstream.
pub const SESSION_CACHE_SIZE: usize = 256;

/// How the server certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// The system's roots (`tls_verify = true`, the default).
    System,
    /// The roots in `tls_ca` (a PEM file path).
    Ca(String),
    /// `tls_verify = false`: any certificate.
    Off,
}

/// `[upstream.X]` TLS, loaded.
pub struct UpstreamTls {
    pub client: Arc<ClientConfig>,
    /// Per server of the upstream (the config's order): SNI and the name
    /// the certificate must carry.
    pub names: Vec<ServerName<'static>>,
    /// The rest of the pool key (see the module docs); never 0 (0 is a
    /// plain connection).
    pub pool_key: Vec<u64>,
    pub verify: Verify,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("names", &self.names)
            .field("verify", &self.verify)
            .finish()
    }
}

/// The name a server is verified against when `tls_server_name` is not
/// set: the host of its `address` (`host:port`, `[v6]:port`, `ip:port`).
pub fn default_name(spec: &str) -> Result<ServerName<'static>, String> {
    let host = if let Some(rest) = spec.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        spec.rsplit_once(':').map_or(spec, |(h, _)| h)
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))
}

/// The system's trust anchors.
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        return Err(format!(
            "no system CA certificates could be loaded ({why}); install ca-certificates or set `tls_ca`"
        ));
    }
    Ok(roots)
}

/// Builds an upstream's client configuration; `names` per server.
pub fn build(
    verify: Verify,
    roots: Option<RootCertStore>,
    names: Vec<ServerName<'static>>,
) -> Result<UpstreamTls, String> {
    let provider = super::provider::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let roots = if verify == Verify::Off { None } else { roots };
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { roots, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::store(Arc::new(ClientSessionMemoryCache::new(
        SESSION_CACHE_SIZE,
    )));
    let pool_key = names
        .iter()
        .map(|n| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            n.to_str().hash(&mut h);
            verify.hash(&mut h);
            h.finish() | 1
        })
        .collect();
    Ok(UpstreamTls {
        client: Arc::new(cfg),
        names,
        pool_key,
        verify,
    })
}

/// The server certificate check. With `roots` (`tls_verify = true`, see
/// the module docs): the chain to `roots` or the certificate itself among
/// them, still valid; the name in a DNS or IP address subject alternative
/// name, or in the common name when there is no DNS subject alternative
/// name. Without (`tls_verify = false`): any certificate. The handshake's
/// signatures are checked either way (it must be sound).
#[derive(Debug)]
struct Verifier {
    roots: Option<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

/// Whether the certificate is one of `roots` itself (same subject and
/// public key: whoever completes the handshake holds that key).
fn is_root(roots: &RootCertStore, end_entity: &CertificateDer<'_>) -> bool {
    let mut one = RootCertStore::empty();
    one.add(end_entity.clone().into_owned()).is_ok() && roots.roots.contains(&one.roots[0])
}

/// Whether `server` is a DNS name that `names` (a certificate's DNS subject
/// alternative names, or its common name when it has none, as
/// [`super::certs::dns_names`] reads them) cover, `*.` wildcards included.
fn covered_by(names: &[String], server: &ServerName<'_>) -> bool {
    let ServerName::DnsName(dns) = server else {
        return false;
    };
    let host = dns.as_ref().trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| super::sni::matches(n, &host))
}

/// The certificate's DNS names (see [`covered_by`]) and whether it is
/// valid at `now`; `None` when it does not parse.
fn names_and_validity(der: &CertificateDer<'_>, now: UnixTime) -> Option<(Vec<String>, bool)> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = x.validity();
    let now = now.as_secs() as i64;
    let valid =
        super::certs::validity(v.not_before.timestamp(), v.not_after.timestamp(), now).is_ok();
    Some((super::certs::dns_names(&x), valid))
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms.all;
        let chain =
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algs);
        let name = verify_server_name(&cert, server_name);
        if chain.is_ok() && name.is_ok() {
            return Ok(ServerCertVerified::assertion());
        }
        // The two cases OpenSSL accepts besides (see the module docs).
        let parsed = names_and_validity(end_entity, now);
        let chain_ok = chain.is_ok()
            || parsed
                .as_ref()
                .is_some_and(|(_, valid)| *valid && is_root(roots, end_entity));
        let name_ok = name.is_ok()
            || parsed
                .as_ref()
                .is_some_and(|(names, _)| covered_by(names, server_name));
        match (chain, name) {
            (Err(e), _) if !chain_ok => Err(e),
            (_, Err(e)) if !name_ok => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A refused upstream handshake as the log says it: rustls' words, and
/// what to do where they do not say it (certificates nginx or curl take,
/// or a fix that is not obvious).
pub fn explain(e: &rustls::Error) -> String {
    let text = e.to_string();
    match hint(&text) {
        Some(h) => format!("{text} ({h})"),
        None => text,
    }
}

/// The advice for a rustls error text, by the webpki error it names.
fn hint(text: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 3] = [
        (
            "UnknownIssuer",
            "not issued by a CA in `tls_ca`, or in the system's roots without it: \
             set `tls_ca` to the CA that issued it, or to the certificate itself if it is self-signed",
        ),
        (
            "UnsupportedCertVersion",
            "an X.509 v1 certificate, signed without extensions (`openssl x509 -req` \
             without `-extfile`): reissue it with a subjectAltName, or set `tls_verify = false`",
        ),
        (
            "CaUsedAsEndEntity",
            "a CA certificate presented as the server's own: if it is the backend's \
             self-signed certificate, set `tls_ca` to it",
        ),
    ];
    HINTS
        .iter()
        .find(|(name, _)| text.contains(name))
        .map(|(_, h)| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let dns = |s: &str| default_name(s).unwrap().to_str().into_owned();
        assert_eq!(dns("backend.internal:443"), "backend.internal");
        assert_eq!(dns("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(dns("[::1]:443"), "::1");
        assert!(matches!(
            default_name("10.0.0.2:443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            default_name("a.test:443").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(default_name("bad_name!:443").is_err());
    }

    #[test]
    fn refusals_carry_advice_where_rustls_gives_none() {
        use rustls::{CertificateError, Error, OtherError};
        #[derive(Debug)]
        struct Webpki(&'static str);
        impl std::fmt::Display for Webpki {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Webpki {}
        let other = |name| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Webpki(name)))))
        };
        let table = [
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Some("`tls_ca`"),
            ),
            (other("UnsupportedCertVersion"), Some("X.509 v1")),
            (other("CaUsedAsEndEntity"), Some("self-signed")),
            (Error::InvalidCertificate(CertificateError::Expired), None),
            (Error::DecryptError, None),
        ];
        for (e, want) in table {
            let text = explain(&e);
            assert!(text.starts_with(&e.to_string()), "{text}");
            match want {
                Some(w) => assert!(text.contains(w), "{e:?}: {text}"),
                None => assert_eq!(text, e.to_string()),
            }
        }
    }

    #[test]
    fn names_a_certificate_covers() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dns = |s: &str| ServerName::try_from(s.to_string()).unwrap();
        let table = [
            (names(&["backend.internal"]), "backend.internal", true),
            (names(&["backend.internal"]), "Backend.Internal.", true),
            (names(&["*.internal"]), "backend.internal", true),
            (names(&["*.internal"]), "a.backend.internal", false),
            (names(&["other.internal"]), "backend.internal", false),
            (names(&[]), "backend.internal", false),
            // An IP address is never matched by name.
            (names(&["127.0.0.1"]), "127.0.0.1", false),
        ];
        for (ns, server, want) in table {
            assert_eq!(covered_by(&ns, &dns(server)), want, "{ns:?} {server}");
        }
    }
}
