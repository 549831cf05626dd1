//! TLS for listeners: certificates, SNI, resumption state and the rustls
//! server configuration a shard hands each new connection.
//!
//! Why it is built this way:
//! - **Loaded with the config.** `[listener.tls]` files are read and
//!   validated by the config loader ([`certs`]), so `ringlb check`, start
//!   and a SIGHUP reload see exactly the same errors, at the config key
//!   (`FILE:LINE:COL`). A reload whose certificate or key is bad is refused
//!   as a whole: the running certificates stay, and the log says why.
//! - **Immutable after load.** A [`ListenerTls`] (one `Arc<ServerConfig>`
//!   per listener) lives in the config, so it reaches the shards inside the
//!   snapshot; a connection keeps the `Arc` it was accepted with, so a
//!   reload never changes the certificate under an open connection.
//! - **Resumption per authentication context** ([`resumption`]): one
//!   ticket key source and one TLS 1.2 session-ID cache per client-auth
//!   policy, shared by every listener with that policy, every shard and
//!   every reload that keeps it: a client resumes on whichever shard its
//!   next connection lands, and after a reload, but never where the
//!   session would skip a client certificate it was not asked for, or was
//!   verified against a CA since removed. Both take a lock inside rustls
//!   (the rotator a read lock, the session cache a mutex), but only on
//!   the handshake path (issuing or opening a ticket or session ID), never
//!   per record.
//! - **The record layer runs on the shard** ([`crate::data::tls`]): rustls
//!   is sans-IO, the shard's own runtime moves the bytes; no extra thread.
//! - **Crypto provider: chosen in one place** ([`provider`]): ring by
//!   default, aws-lc-rs with the `aws-lc` cargo feature; see README "TLS".

pub mod certs;
pub mod client_auth;
pub mod failure;
pub mod provider;
pub mod resumption;
pub mod sni;
pub mod stream;
pub mod subject;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

pub use failure::Failure;

/// TLS protocol versions a listener may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tls12,
    Tls13,
}

/// `[listener.tls]`, loaded: what a shard needs to terminate TLS.
pub struct ListenerTls {
    pub server: Arc<ServerConfig>,
    pub sni: Arc<sni::SniResolver>,
    pub handshake_timeout: Duration,
    /// The certificate files, in order (default first), for logs.
    pub files: Vec<String>,
    /// Mutual TLS (`client_ca`): the header that carries the verified
    /// client subject to backends (any copy a client sends is removed).
    pub client_subject_header: Option<Box<str>>,
    /// Keeps this listener's resumption state alive while the config is
    /// loaded (the table in [`resumption`] holds it weakly).
    pub resumption: Arc<resumption::Resumption>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certificates", &self.files)
            .field("names", &self.sni.names)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_subject_header", &self.client_subject_header)
            .finish()
    }
}

/// The listener settings besides its certificates.
#[derive(Debug, Clone)]
pub struct Settings {
    pub protocols: Vec<Protocol>,
    pub alpn: Vec<String>,
    pub session_tickets: bool,
    pub handshake_timeout: Duration,
    /// `client_ca`: require and verify a client certificate.
    pub client_auth: Option<client_auth::ClientAuth>,
}

/// The ALPN protocols a listener offers for its configured `alpn`: an
/// HTTP/1.1 server serves HTTP/1.0 too, so `http/1.0` follows `http/1.1`
/// (as nginx offers both). Without it a client that offers only
/// `http/1.0` (`curl --http1.0`) is refused the handshake with
/// `no_application_protocol`.
fn alpn_offered(configured: &[String]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = configured.iter().map(|a| a.as_bytes().to_vec()).collect();
    if configured.iter().any(|a| a == "http/1.1") {
        out.push(b"http/1.0".to_vec());
    }
    out
}

/// Builds a listener's rustls configuration from its loaded certificates.
pub fn build(
    settings: &Settings,
    pairs: Vec<certs::LoadedPair>,
    files: Vec<String>,
) -> Result<ListenerTls, String> {
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    for p in &settings.protocols {
        versions.push(match p {
            Protocol::Tls12 => &rustls::version::TLS12,
            Protocol::Tls13 => &rustls::version::TLS13,
        });
    }
    let resolver = Arc::new(sni::SniResolver {
        names: pairs.iter().map(|p| p.names.clone()).collect(),
        keys: pairs.into_iter().map(|p| p.key).collect(),
    });
    let cfg = ServerConfig::builder_with_provider(provider::provider())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("protocols: {e}"))?;
    let cfg = match &settings.client_auth {
        None => cfg.with_no_client_auth(),
        Some(ca) => cfg.with_client_cert_verifier(ca.verifier()?),
    };
    let mut cfg = cfg
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn rustls::server::ResolvesServerCert>);
    cfg.alpn_protocols = alpn_offered(&settings.alpn);
    let resumption = resumption::for_context(resumption::context(settings.client_auth.as_ref()));
    cfg.session_storage = Arc::clone(&resumption.cache) as _;
    if settings.session_tickets {
        cfg.ticketer = Arc::clone(&resumption.ticketer);
    }
    // Early data is off (rustls' default): a replayable request must not
    // reach a backend.
    Ok(ListenerTls {
        server: Arc::new(cfg),
        sni: resolver,
        handshake_timeout: settings.handshake_timeout,
        files,
        client_subject_header: settings
            .client_auth
            .as_ref()
            .map(|c| c.header.clone().into_boxed_str()),
        resumption,
    })
}

#[cfg(test)]
mod tests {
    use super::alpn_offered;

    #[test]
    fn http_1_1_listeners_offer_http_1_0_too() {
        let v = |l: &[&str]| alpn_offered(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&["http/1.1"]),
            [b"http/1.1".to_vec(), b"http/1.0".to_vec()]
        );
        assert!(v(&[]).is_empty());
    }
}
