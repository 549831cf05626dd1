//! Mutual TLS on a listener: `client_ca` and `client_subject_header`.
//!
//! The CA bundle is read with the config (so `ringlb check`, start and a
//! SIGHUP reload report the same errors at the key, and a reload picks up
//! a changed bundle for new connections). rustls' `WebPkiClientVerifier`
//! requires a certificate chaining to one of those CAs; a handshake
//! without one, or with one that does not verify, fails and is counted
//! (`no_client_certificate`, `bad_client_certificate`). The verified
//! subject goes to backends in `client_subject_header` (see
//! [`super::subject`]); a copy sent by the client is always removed, so a
//! backend can trust the header.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// The header name used when `client_subject_header` is not set.
pub const DEFAULT_HEADER: &str = "X-Client-Subject";

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub roots: Arc<RootCertStore>,
    /// The header carrying the verified subject to backends.
    pub header: String,
}

impl ClientAuth {
    /// The rustls verifier: a client certificate is required.
    pub fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, String> {
        WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            super::provider::provider(),
        )
        .build()
        .map_err(|e| format!("client_ca: {e}"))
    }
}

/// Whether `name` may be used as `client_subject_header`: an HTTP token
/// that is not a field the proxy already manages (framing, hop-by-hop,
/// `Host`, `X-Forwarded-*`, `X-Real-IP`).
pub fn header_name_ok(name: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!(
            "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    use crate::proto::http1::fields::{classify, FieldKind};
    if classify(name.as_bytes()) != FieldKind::Other {
        return Err(format!(
            "{name:?} is a header the proxy already manages; choose another name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        assert!(header_name_ok("X-Client-Subject").is_ok());
        assert!(header_name_ok("ssl-client-s-dn").is_ok());
        for bad in [
            "",
            "X Client",
            "X:Y",
            "Host",
            "content-length",
            "X-Forwarded-For",
            "Connection",
        ] {
            assert!(header_name_ok(bad).is_err(), "{bad}");
        }
    }
}
