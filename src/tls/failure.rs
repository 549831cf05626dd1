//! Why a TLS handshake failed, as counted in `/stats` and `/metrics`.
//!
//! The classification is a pure function of what rustls reported and what
//! the first byte of the connection was, so it is table-tested without a
//! socket.

use rustls::{AlertDescription, Error};

/// A failed handshake's reason (a metrics label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No cipher suite, group or signature scheme in common with the
    /// client.
    NoSharedCipher,
    /// The client offers only protocol versions this listener does not
    /// (TLS 1.2 where `protocols` has 1.3 only). A TLS 1.1 client shows as
    /// [`NoSharedCipher`](Self::NoSharedCipher): rustls reads its hello
    /// as one offering none of TLS 1.2's suites.
    NoSharedVersion,
    /// The client offers ALPN protocols, none of them this listener's
    /// (an `h2`-only client).
    NoApplicationProtocol,
    /// The client rejected the server's certificate (its alert said so).
    BadCertificate,
    /// The client named a host no certificate carries, then gave up.
    UnknownSni,
    /// `handshake_timeout` passed before the handshake finished.
    Timeout,
    /// The first byte was not a TLS handshake record (plain HTTP on a TLS
    /// port, a port scanner…).
    NotTls,
    /// TLS records, but malformed or oversized (truncated or huge hello).
    Malformed,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// Mutual TLS: the client sent no certificate.
    NoClientCertificate,
    /// Mutual TLS: the client's certificate did not verify against
    /// `client_ca` (unknown issuer, expired, wrong usage…).
    BadClientCertificate,
    /// Anything else rustls refused.
    Other,
}

impl Failure {
    pub const ALL: [Failure; 12] = [
        Failure::NoSharedCipher,
        Failure::NoSharedVersion,
        Failure::NoApplicationProtocol,
        Failure::BadCertificate,
        Failure::UnknownSni,
        Failure::Timeout,
        Failure::NotTls,
        Failure::Malformed,
        Failure::Closed,
        Failure::NoClientCertificate,
        Failure::BadClientCertificate,
        Failure::Other,
    ];

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::NoSharedCipher => "no_shared_cipher",
            Failure::NoSharedVersion => "no_shared_version",
            Failure::NoApplicationProtocol => "no_application_protocol",
            Failure::BadCertificate => "bad_certificate",
            Failure::UnknownSni => "unknown_sni",
            Failure::Timeout => "timeout",
            Failure::NotTls => "not_tls",
            Failure::Malformed => "malformed",
            Failure::Closed => "closed",
            Failure::NoClientCertificate => "no_client_certificate",
            Failure::BadClientCertificate => "bad_client_certificate",
            Failure::Other => "other",
        }
    }

    /// Index into [`Failure::ALL`] (counter arrays).
    pub fn index(self) -> usize {
        Failure::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

/// The first byte of a TLS handshake record (content type 22).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Whether the first bytes of a connection on a TLS listener are a plain
/// HTTP request line rather than a TLS record: a method token (upper-case
/// letters) followed by a space, as far as the bytes go. TLS records start
/// with a content type byte (0x14..=0x17) and SSLv2 hellos with 0x80, never
/// a letter. Such a client is answered with a plaintext `400` (as nginx
/// does) instead of an alert it cannot read.
pub fn is_plain_http(first: &[u8]) -> bool {
    let token = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (1..=16).contains(&token) && first.get(token).is_none_or(|&b| b == b' ')
}

/// Where the head of a plain-HTTP request ends in `buf` (just past the
/// blank line), if it has arrived: read that far before answering, so the
/// close is a FIN and not a reset that could destroy the answer.
pub fn plain_head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| match &buf[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Classifies a rustls error. `first_byte` is the connection's first byte
/// (if any arrived); `sni_unknown` whether the client named a host that no
/// certificate carries (it was served the default certificate).
pub fn classify(e: &Error, first_byte: Option<u8>, sni_unknown: bool) -> Failure {
    if first_byte.is_some_and(|b| b != HANDSHAKE_RECORD) {
        return Failure::NotTls;
    }
    match e {
        Error::PeerIncompatible(p) if is_version_mismatch(p) => Failure::NoSharedVersion,
        Error::PeerIncompatible(_) => Failure::NoSharedCipher,
        Error::NoApplicationProtocol => Failure::NoApplicationProtocol,
        // A server verifies only client certificates.
        Error::NoCertificatesPresented => Failure::NoClientCertificate,
        Error::InvalidCertificate(_) => Failure::BadClientCertificate,
        Error::AlertReceived(a) if is_certificate_alert(*a) => {
            if sni_unknown {
                Failure::UnknownSni
            } else {
                Failure::BadCertificate
            }
        }
        Error::AlertReceived(AlertDescription::UnrecognisedName) => Failure::UnknownSni,
        Error::InvalidMessage(_) | Error::PeerSentOversizedRecord | Error::PeerMisbehaved(_) => {
            Failure::Malformed
        }
        _ => Failure::Other,
    }
}

fn is_version_mismatch(p: &rustls::PeerIncompatible) -> bool {
    use rustls::PeerIncompatible as P;
    matches!(
        p,
        P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerTlsVersionIsDisabledByOurConfig
            | P::ServerDoesNotSupportTls12Or13
    )
}

fn is_certificate_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{InvalidMessage, PeerIncompatible};

    #[test]
    fn plain_http_is_told_from_tls_records() {
        for (bytes, want) in [
            (&b"GET / HTTP/1.1\r\n"[..], true),
            (b"POST", true),
            (b"G", true),
            (b"OPTIONS * HTTP/1.1", true),
            (b"\x16\x03\x01\x02\x00", false),
            (b"\x80\x01\x02", false),
            (b"get / HTTP/1.1", false),
            (b"GET/ HTTP/1.1", false),
            (b"ABCDEFGHIJKLMNOPQ / HTTP/1.1", false),
            (b"", false),
        ] {
            assert_eq!(
                is_plain_http(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            plain_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nX"),
            Some(27)
        );
        assert_eq!(plain_head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(plain_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn classification_table() {
        let incompatible = Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon);
        let bad_cert = Error::AlertReceived(AlertDescription::UnknownCA);
        let malformed = Error::InvalidMessage(InvalidMessage::MessageTooShort);
        let table = [
            (&incompatible, Some(0x16), false, Failure::NoSharedCipher),
            (
                &Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired),
                Some(0x16),
                false,
                Failure::NoSharedVersion,
            ),
            (
                &Error::NoApplicationProtocol,
                Some(0x16),
                false,
                Failure::NoApplicationProtocol,
            ),
            (&bad_cert, Some(0x16), false, Failure::BadCertificate),
            (&bad_cert, Some(0x16), true, Failure::UnknownSni),
            (&malformed, Some(0x16), false, Failure::Malformed),
            // Plain HTTP: whatever rustls says, the first byte decides.
            (&malformed, Some(b'G'), false, Failure::NotTls),
            (&Error::DecryptError, Some(0x16), false, Failure::Other),
            (
                &Error::NoCertificatesPresented,
                Some(0x16),
                false,
                Failure::NoClientCertificate,
            ),
            (
                &Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                Some(0x16),
                false,
                Failure::BadClientCertificate,
            ),
            (
                &Error::AlertReceived(AlertDescription::UnrecognisedName),
                Some(0x16),
                false,
                Failure::UnknownSni,
            ),
        ];
        for (e, first, sni, want) in table {
            assert_eq!(classify(e, first, sni), want, "{e:?} {first:?} {sni}");
        }
    }

    #[test]
    fn labels_are_distinct_and_indexed() {
        for (i, f) in Failure::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        let mut labels: Vec<_> = Failure::ALL.iter().map(|f| f.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Failure::ALL.len());
    }
}
