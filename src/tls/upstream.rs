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
//! - **Pooled like plain connections**, keyed by address and [`UpstreamTls::pool_key`]
//!   (a digest of name and trust settings), so connections verified for
//!   one name are never reused for another.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ClientSessionMemoryCache;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
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
    let mut cfg = match (&verify, roots) {
        (Verify::Off, _) | (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        (_, Some(roots)) => builder
            .with_root_certificates(Arc::new(roots))
            .with_no_client_auth(),
    };
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

/// `tls_verify = false`: signatures are still checked (the handshake
/// must be sound), the certificate and its name are not.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
}
