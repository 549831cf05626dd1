//! `[listener.tls]` and its `[[listener.tls.sni]]` certificates.
//!
//! The certificate and key files are read and validated here (see
//! [`crate::tls::certs`] for what is checked), so a bad file is reported
//! at the key that names it, by `ringlb check`, at start and on reload
//! alike. Keys of the TLS design that this version does not implement yet
//! are refused with a clear message (never accepted and ignored).

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::super::defaults as def;
use super::fields::Table;
use super::span::Diags;
use crate::tls::certs::{self, Which};
use crate::tls::client_auth;
use crate::tls::upstream::{self, UpstreamTls, Verify};
use crate::tls::{ListenerTls, Protocol, Settings};
use rustls::pki_types::ServerName;

const TLS_KEYS: &[&str] = &[
    "certificate",
    "key",
    "sni",
    "protocols",
    "alpn",
    "session_tickets",
    "handshake_timeout",
    "client_ca",
    "client_subject_header",
];
const SNI_KEYS: &[&str] = &["certificate", "key"];

/// `client_ca` and `client_subject_header` (mutual TLS); false after
/// reporting a problem.
fn read_client_auth(t: &Table, d: &mut Diags, settings: &mut Settings) -> bool {
    let header = t.field("client_subject_header");
    let Some(ca) = t.field("client_ca") else {
        if let Some(h) = header {
            d.error(
                h.at,
                "`client_subject_header` needs `client_ca` (mutual TLS)",
            );
            return false;
        }
        return true;
    };
    let Some(path) = ca.str(d) else {
        return false;
    };
    let roots = match certs::load_roots(Path::new(path)) {
        Ok(r) => r,
        Err(e) => {
            d.error(ca.at, e);
            return false;
        }
    };
    let mut name = client_auth::DEFAULT_HEADER.to_string();
    if let Some(h) = header {
        let Some(v) = h.str(d) else {
            return false;
        };
        if let Err(e) = client_auth::header_name_ok(v) {
            d.error(h.at, e);
            return false;
        }
        name = v.to_string();
    }
    settings.client_auth = Some(client_auth::ClientAuth {
        roots: Arc::new(roots),
        header: name,
    });
    true
}

/// Reads a listener's `tls` table; `None` after reporting any problem.
pub(crate) fn read(t: &Table, d: &mut Diags) -> Option<Arc<ListenerTls>> {
    t.check_keys(d, TLS_KEYS);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() as i64);
    let mut ok = true;
    let mut settings = Settings {
        protocols: vec![Protocol::Tls12, Protocol::Tls13],
        alpn: vec!["http/1.1".into()],
        session_tickets: true,
        handshake_timeout: def::TLS_HANDSHAKE_TIMEOUT,
        client_auth: None,
    };
    ok &= read_client_auth(t, d, &mut settings);
    if let Some(list) = t.strings(d, "protocols") {
        let mut protocols = Vec::new();
        for (p, at) in list {
            match p {
                "TLSv1.2" => protocols.push(Protocol::Tls12),
                "TLSv1.3" => protocols.push(Protocol::Tls13),
                other => {
                    ok = false;
                    d.error(
                        at,
                        format!("unknown TLS protocol {other:?}; expected \"TLSv1.2\" or \"TLSv1.3\" (older versions are not offered)"),
                    );
                }
            }
        }
        if protocols.is_empty() && ok {
            ok = false;
            if let Some(f) = t.field("protocols") {
                d.error(
                    f.at,
                    "`protocols` must list at least one of \"TLSv1.2\", \"TLSv1.3\"",
                );
            }
        }
        protocols.dedup();
        settings.protocols = protocols;
    }
    if let Some(list) = t.strings(d, "alpn") {
        let mut alpn = Vec::new();
        for (p, at) in list {
            if p == "http/1.1" {
                alpn.push(p.to_string());
            } else {
                ok = false;
                d.error(
                    at,
                    format!("unsupported ALPN protocol {p:?}; only \"http/1.1\" is served (h2 is not supported yet)"),
                );
            }
        }
        settings.alpn = alpn;
    }
    if let Some(b) = t.bool(d, "session_tickets") {
        settings.session_tickets = b;
    }
    if let Some(v) = t.positive_duration(d, "handshake_timeout") {
        settings.handshake_timeout = v;
    }
    let mut pairs = Vec::new();
    let mut files = Vec::new();
    let mut tables = vec![(t, "[listener.tls]")];
    let sni = t
        .tables(d, "sni", "[[listener.tls.sni]]")
        .unwrap_or_default();
    for s in &sni {
        s.check_keys(d, SNI_KEYS);
        tables.push((s, "[[listener.tls.sni]]"));
    }
    for (table, _) in tables {
        let cert = table.required(d, "certificate");
        let key = table.required(d, "key");
        let (Some(cert), Some(key)) = (cert, key) else {
            ok = false;
            continue;
        };
        let (Some(cert_path), Some(key_path)) = (cert.str(d), key.str(d)) else {
            ok = false;
            continue;
        };
        match certs::load_pair(Path::new(cert_path), Path::new(key_path), now) {
            Ok(pair) => {
                if let Some(w) = &pair.warning {
                    d.warn(cert.at, w.clone());
                }
                files.push(cert_path.to_string());
                pairs.push(pair);
            }
            Err((which, msg)) => {
                ok = false;
                let at = match which {
                    Which::Certificate => cert.at,
                    Which::Key => key.at,
                };
                d.error(at, msg);
            }
        }
    }
    if !ok {
        return None;
    }
    match crate::tls::build(&settings, pairs, files) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            d.error(t.at, e);
            None
        }
    }
}

/// The `[upstream.X]` keys for TLS to its servers.
pub(crate) const UPSTREAM_TLS_KEYS: [&str; 4] = ["tls", "tls_server_name", "tls_verify", "tls_ca"];

/// `tls`, `tls_server_name`, `tls_verify`, `tls_ca` of an upstream whose
/// servers are read; `None` for a plain upstream or after a reported
/// problem.
pub(crate) fn read_upstream(
    t: &Table,
    servers: &[crate::config::ServerConfig],
    d: &mut Diags,
) -> Option<Arc<UpstreamTls>> {
    let on = t.bool(d, "tls").unwrap_or(false);
    if !on {
        for k in &UPSTREAM_TLS_KEYS[1..] {
            if let Some(f) = t.field(k) {
                d.error(f.key_at, format!("`{k}` needs `tls = true`"));
            }
        }
        return None;
    }
    let mut ok = true;
    let fixed = match t.field("tls_server_name") {
        None => None,
        Some(f) => match f.str(d).map(|n| ServerName::try_from(n.to_string())) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                d.error(f.at, format!("not a valid TLS server name: {e}"));
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        },
    };
    let mut names = Vec::with_capacity(servers.len());
    for s in servers {
        match &fixed {
            Some(n) => names.push(n.clone()),
            None => match upstream::default_name(&s.spec) {
                Ok(n) => names.push(n),
                Err(e) => {
                    ok = false;
                    d.error(
                        t.at,
                        format!("server {}: {e}; set `tls_server_name`", s.spec),
                    );
                }
            },
        }
    }
    let verify_on = t.bool(d, "tls_verify").unwrap_or(true);
    let (verify, roots) = match (verify_on, t.field("tls_ca")) {
        (false, Some(f)) => {
            d.error(f.key_at, "`tls_ca` has no effect with `tls_verify = false`");
            return None;
        }
        (false, None) => (Verify::Off, None),
        (true, Some(f)) => {
            let path = f.str(d)?;
            match certs::load_roots(Path::new(path)) {
                Ok(r) => (Verify::Ca(path.to_string()), Some(r)),
                Err(e) => {
                    d.error(f.at, e);
                    return None;
                }
            }
        }
        (true, None) => match upstream::system_roots() {
            Ok(r) => (Verify::System, Some(r)),
            Err(e) => {
                d.error(t.field("tls").map_or(t.at, |f| f.at), e);
                return None;
            }
        },
    };
    if !ok {
        return None;
    }
    match upstream::build(verify, roots, names) {
        Ok(u) => Some(Arc::new(u)),
        Err(e) => {
            d.error(t.at, e);
            None
        }
    }
}
