//! The one place that chooses the rustls crypto provider.
//!
//! ring is the default: it builds with a C compiler only, and on this
//! proxy's HTTPS shapes it measured within noise of aws-lc-rs (README
//! "TLS", bench/RESULTS.md "TLS crypto provider"). The `aws-lc` cargo
//! feature switches every TLS use (listeners, client certificate
//! verification, upstream TLS, ticket keys, private keys) to aws-lc-rs;
//! it needs cmake to build.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::ProducesTickets;
use rustls::sign::SigningKey;

#[cfg(feature = "aws-lc")]
use rustls::crypto::aws_lc_rs as chosen;
#[cfg(not(feature = "aws-lc"))]
use rustls::crypto::ring as chosen;

/// The crypto provider every rustls configuration is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(chosen::default_provider())
}

/// A new TLS 1.3 ticket key source (rotating) from the chosen provider.
pub fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    chosen::Ticketer::new()
}

/// Loads a private key (any type the provider supports) for signing.
pub fn signing_key(der: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    chosen::sign::any_supported_type(der)
}
