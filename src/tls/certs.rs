//! Loading and validating a certificate chain and its private key.
//!
//! What `ringlb check` (and therefore every start and SIGHUP reload, which
//! load the config the same way) verifies for each `certificate`/`key`
//! pair: both files read and parse as PEM; the chain holds at least one
//! certificate and every certificate in it is DER that parses; the key is
//! PKCS#8, SEC1 (EC) or PKCS#1 (RSA) of a type rustls can sign with; the
//! key belongs to the leaf certificate (their public keys are compared);
//! the leaf is valid now (not before its `notBefore`, not after its
//! `notAfter`), with a warning when it expires within [`EXPIRY_WARNING`].
//! The chain is not verified against any root: a server cannot know which
//! roots its clients trust, and nginx does not either.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Warn when the leaf certificate expires sooner than this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A loaded, validated pair.
#[derive(Debug)]
pub struct LoadedPair {
    pub key: Arc<CertifiedKey>,
    /// DNS names the leaf answers for (lower-case), for SNI.
    pub names: Vec<String>,
    /// Set when the leaf expires within [`EXPIRY_WARNING`].
    pub warning: Option<String>,
}

/// Which file of the pair a problem is about (so the message is reported
/// at the right config key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Certificate,
    Key,
}

/// Validity of the leaf at `now` (seconds since the Unix epoch): `Err`
/// when not yet valid or expired, `Ok(Some(warning))` when it expires
/// within [`EXPIRY_WARNING`].
pub fn validity(not_before: i64, not_after: i64, now: i64) -> Result<Option<String>, String> {
    if now < not_before {
        return Err(format!(
            "certificate is not valid yet (valid from {} s after the Unix epoch, {} s from now)",
            not_before,
            not_before - now
        ));
    }
    if now > not_after {
        let days = (now - not_after) / 86_400;
        return Err(format!("certificate expired {days} days ago"));
    }
    let left = not_after - now;
    if left < EXPIRY_WARNING.as_secs() as i64 {
        return Ok(Some(format!(
            "certificate expires in {} days {} hours",
            left / 86_400,
            (left % 86_400) / 3600
        )));
    }
    Ok(None)
}

/// Reads and validates a pair; `now` is seconds since the Unix epoch.
pub fn load_pair(cert: &Path, key: &Path, now: i64) -> Result<LoadedPair, (Which, String)> {
    let c = |m: String| (Which::Certificate, m);
    let k = |m: String| (Which::Key, m);
    let cert_pem =
        std::fs::read(cert).map_err(|e| c(format!("cannot read {}: {e}", cert.display())))?;
    let key_pem =
        std::fs::read(key).map_err(|e| k(format!("cannot read {}: {e}", key.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            c(format!(
                "{}: not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(c(format!(
            "{}: no certificate in it (expected PEM blocks \"BEGIN CERTIFICATE\")",
            cert.display()
        )));
    }
    let mut leaf_info = None;
    // Each certificate's public key (SubjectPublicKeyInfo DER), to find
    // which one the key belongs to.
    let mut spkis: Vec<Vec<u8>> = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, x)) => {
                spkis.push(x.public_key().raw.to_vec());
                if i == 0 {
                    let v = x.validity();
                    leaf_info = Some((
                        v.not_before.timestamp(),
                        v.not_after.timestamp(),
                        dns_names(&x),
                    ));
                }
            }
            Err(e) => {
                return Err(c(format!(
                    "{}: certificate {} of the chain does not parse: {e}",
                    cert.display(),
                    i + 1
                )))
            }
        }
    }
    let (not_before, not_after, names) = leaf_info.expect("chain is not empty");
    if is_encrypted_key(&key_pem) {
        return Err(k(format!(
            "{}: the private key is encrypted (passphrase-protected); ringlb reads keys without \
             a passphrase: decrypt it with `openssl pkey -in {0} -out PLAIN.key` and keep that \
             file readable by root only",
            key.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        k(format!(
            "{}: no private key in it (expected PKCS#8, SEC1 or PKCS#1 PEM): {e}",
            key.display()
        ))
    })?;
    let signer = super::provider::signing_key(&der)
        .map_err(|e| k(format!("{}: unsupported private key: {e}", key.display())))?;
    // Compared by public key, as OpenSSL does for nginx: rustls'
    // `keys_match` parses the certificate as a webpki end-entity, which
    // refuses X.509 v1 certificates that nginx serves.
    let signer_spki = signer.public_key().map(|k| k.as_ref().to_vec());
    let belongs_to = |i: usize| match &signer_spki {
        Some(spki) => *spki == spkis[i],
        None => CertifiedKey::new(vec![chain[i].clone()], Arc::clone(&signer))
            .keys_match()
            .is_ok(),
    };
    if let Some(i) = (1..chain.len()).position(belongs_to) {
        return Err(c(format!(
            "{}: the key {} belongs to certificate {} of the chain, not the first: the \
             server's own certificate must come first, then its intermediates",
            cert.display(),
            key.display(),
            i + 2
        )));
    }
    if !belongs_to(0) {
        return Err(k(format!(
            "{} does not belong to the certificate {} (their public keys differ)",
            key.display(),
            cert.display()
        )));
    }
    let certified = CertifiedKey::new(chain, signer);
    let warning =
        validity(not_before, not_after, now).map_err(|m| c(format!("{}: {m}", cert.display())))?;
    if names.is_empty() {
        return Err(c(format!(
            "{}: the certificate names no DNS name (subjectAltName or common name) to match SNI against",
            cert.display()
        )));
    }
    Ok(LoadedPair {
        key: Arc::new(certified),
        names,
        warning: warning.map(|w| format!("{}: {w}", cert.display())),
    })
}

/// Whether a PEM key file holds an encrypted (passphrase-protected) key:
/// PKCS#8 `ENCRYPTED PRIVATE KEY`, or a traditional key with OpenSSL's
/// `Proc-Type: 4,ENCRYPTED` header. rustls reads neither, and its own
/// error would not say why.
fn is_encrypted_key(pem: &[u8]) -> bool {
    let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// Reads a PEM bundle of CA certificates (`client_ca`, `tls_ca`) into a
/// root store; every certificate must parse as a trust anchor.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der =
            der.map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        roots.add(der).map_err(|e| {
            format!(
                "{}: certificate {} is not a usable CA certificate: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM blocks \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(roots)
}

/// Subject alternative DNS names, or the common name when there are none
/// (what clients fall back to as well), lower-cased.
pub(crate) fn dns_names(x: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = match x.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            x.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_keys_are_told_apart() {
        let table: [(&[u8], bool); 4] = [
            (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n", true),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0F\n",
                true,
            ),
            (b"-----BEGIN PRIVATE KEY-----\nMIGH\n", false),
            (b"-----BEGIN EC PRIVATE KEY-----\nMHcC\n", false),
        ];
        for (pem, want) in table {
            assert_eq!(
                is_encrypted_key(pem),
                want,
                "{}",
                String::from_utf8_lossy(pem)
            );
        }
    }

    #[test]
    fn validity_window() {
        let day = 86_400;
        assert!(validity(100, 100 + 400 * day, 50)
            .unwrap_err()
            .contains("not valid yet"));
        assert!(validity(0, 100, 100 + 3 * day)
            .unwrap_err()
            .contains("expired 3 days ago"));
        assert_eq!(validity(0, 100 * day, day), Ok(None));
        let w = validity(0, 20 * day, 10 * day).unwrap().unwrap();
        assert!(w.contains("expires in 10 days"), "{w}");
        // Exactly at the edges: still valid.
        assert!(validity(0, 100 * day, 0).is_ok());
        assert!(validity(0, 100 * day, 100 * day).unwrap().is_some());
    }
}
