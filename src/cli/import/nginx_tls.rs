//! nginx's `ssl_*` directives and `listen … ssl` → `[listener.tls]` and
//! `[[listener.tls.sni]]`.
//!
//! nginx inherits `ssl_*` settings http → server and picks a server block
//! by SNI among those on an address; ringlb has one TLS setting per
//! listener and picks a certificate by the names in it. So a listener's
//! `[listener.tls]` comes from its default server block, and the
//! certificates of the other server blocks on the address (and a default
//! server's second certificate, nginx's RSA + ECDSA pair) become `sni`
//! entries. Settings ringlb has once per listener (protocols, tickets,
//! `client_ca`) are taken from the default server; another block that
//! disagrees is a warning. Directives about cipher choice, session caches
//! and OCSP are notes: rustls' defaults and ringlb's always-on resumption
//! cover them.

use std::time::Duration;

use super::emit::{Section, Value};
use super::lexer::{Dialect, Pos};
use super::syntax::Directive;
use super::units::nginx_time;
use super::{covered, Warnings};

const D: Dialect = Dialect::Nginx;

/// The `ssl_*` settings in effect in one block (after inheritance).
#[derive(Debug, Clone, Default)]
pub(super) struct Tls {
    certs: Vec<(String, Pos)>,
    keys: Vec<(String, Pos)>,
    /// Whether this level set its own certificates / keys (the first one
    /// here replaces the inherited list, as in nginx).
    own_certs: bool,
    own_keys: bool,
    protocols: Option<(Vec<String>, String)>,
    tickets_off: Option<String>,
    client_ca: Option<(String, String)>,
    verify_client: Option<(bool, String)>,
    handshake_timeout: Option<(Duration, String)>,
    /// `ssl on;` (before nginx 1.15): every listen of the block is TLS.
    pub ssl_on: bool,
}

impl Tls {
    /// The settings a nested block starts from.
    pub(super) fn inherit(&self) -> Tls {
        Tls {
            own_certs: false,
            own_keys: false,
            ssl_on: false,
            ..self.clone()
        }
    }

    /// Applies `d` if it is an `ssl_*` directive; returns whether it was
    /// (then it is handled: applied, or noted as not imported).
    pub(super) fn apply(
        &mut self,
        d: &Directive,
        w: &mut Warnings,
        notes: &mut Vec<String>,
    ) -> bool {
        if !d.name.starts_with("ssl") {
            return false;
        }
        let from = format!("{} ({})", d.render(D), d.pos.short());
        let path = d.arg(0).unwrap_or("");
        let usable_path = !path.is_empty() && !path.contains('$') && !path.contains(':');
        match d.name.as_str() {
            "ssl_certificate" | "ssl_certificate_key" if !usable_path => w.skip(
                notes,
                d,
                D,
                "only a file path is supported (no variables, `data:` or `engine:`)",
            ),
            "ssl_certificate" => {
                if !self.own_certs {
                    self.certs.clear();
                    self.own_certs = true;
                }
                self.certs.push((path.to_string(), d.pos.clone()));
            }
            "ssl_certificate_key" => {
                if !self.own_keys {
                    self.keys.clear();
                    self.own_keys = true;
                }
                self.keys.push((path.to_string(), d.pos.clone()));
            }
            "ssl_protocols" => {
                let kept: Vec<String> = d
                    .args
                    .iter()
                    .map(|a| a.text.as_str())
                    .filter(|p| matches!(*p, "TLSv1.2" | "TLSv1.3"))
                    .map(str::to_string)
                    .collect();
                if kept.len() < d.args.len() {
                    w.warn(
                        &d.pos,
                        "ssl_protocols: ringlb offers TLSv1.2 and TLSv1.3 only; older versions are left out",
                    );
                }
                if kept.is_empty() {
                    w.skip(notes, d, D, "no protocol ringlb offers (TLSv1.2, TLSv1.3)");
                } else {
                    self.protocols = Some((kept, from));
                }
            }
            "ssl_session_tickets" => {
                self.tickets_off = (d.arg(0) == Some("off")).then_some(from);
            }
            "ssl_client_certificate" if usable_path => {
                self.client_ca = Some((path.to_string(), from));
            }
            "ssl_verify_client" => match d.arg(0) {
                Some("on") => self.verify_client = Some((true, from)),
                Some("off") => self.verify_client = None,
                _ => w.skip(
                    notes,
                    d,
                    D,
                    "only `on` is supported: with client_ca ringlb requires a verified certificate",
                ),
            },
            "ssl_handshake_timeout" => match d.arg(0).and_then(nginx_time) {
                Some(t) if !t.is_zero() => self.handshake_timeout = Some((t, from)),
                _ => w.skip(notes, d, D, "invalid time"),
            },
            "ssl" if d.arg(0) == Some("on") => {
                self.ssl_on = true;
                covered(
                    notes,
                    d,
                    D,
                    "every listen address of this server block is HTTPS",
                );
            }
            "ssl_session_cache" | "ssl_session_timeout" => covered(
                notes,
                d,
                D,
                "not needed: resumption is always on (a session cache and rotating ticket keys)",
            ),
            "ssl_ciphers"
            | "ssl_prefer_server_ciphers"
            | "ssl_ecdh_curve"
            | "ssl_dhparam"
            | "ssl_conf_command"
            | "ssl_buffer_size" => covered(
                notes,
                d,
                D,
                "not needed: rustls' defaults (ECDHE with AEAD suites, server preference)",
            ),
            "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" => covered(
                notes,
                d,
                D,
                "not imported: ringlb does not staple OCSP responses",
            ),
            "ssl_early_data" if d.arg(0) == Some("off") => {
                covered(notes, d, D, "ringlb never accepts 0-RTT early data")
            }
            _ => w.skip(notes, d, D, "not supported by ringlb"),
        }
        true
    }

    /// Certificate + key pairs, in order (nginx pairs them by position).
    fn pairs(&self, w: &mut Warnings, at: &Pos) -> Vec<(String, String)> {
        if self.certs.len() != self.keys.len() {
            w.warn(
                at,
                format!(
                    "{} ssl_certificate but {} ssl_certificate_key: only the first {} pairs are imported",
                    self.certs.len(),
                    self.keys.len(),
                    self.certs.len().min(self.keys.len())
                ),
            );
        }
        self.certs
            .iter()
            .zip(&self.keys)
            .map(|((c, _), (k, _))| (c.clone(), k.clone()))
            .collect()
    }

    /// What ringlb sets once per listener: protocols, tickets off, and the
    /// CA bundle when client certificates are required.
    fn listener_settings(&self) -> (Option<&Vec<String>>, bool, Option<&String>) {
        (
            self.protocols.as_ref().map(|p| &p.0),
            self.tickets_off.is_some(),
            self.verify_client
                .as_ref()
                .and(self.client_ca.as_ref().map(|c| &c.0)),
        )
    }

    /// `client_ca` for `[listener.tls]`: only with `ssl_verify_client on`.
    fn client_ca(&self, w: &mut Warnings, at: &Pos) -> Option<(String, String)> {
        match (&self.verify_client, &self.client_ca) {
            (Some(_), Some((ca, from))) => Some((ca.clone(), from.clone())),
            (Some((_, from)), None) => {
                w.warn(
                    at,
                    format!(
                        "{from}: no ssl_client_certificate; client certificates are not required"
                    ),
                );
                None
            }
            _ => None,
        }
    }
}

/// The TLS sections of a listener: `default` is its default server block's
/// settings (and where it is), `others` the other blocks on the address.
/// `None` when the default server has no certificate (nginx would fail
/// every handshake there): the listener is then written as a comment.
pub(super) fn listener_sections(
    default: (&Tls, &Pos),
    others: &[(&Tls, &Pos)],
    w: &mut Warnings,
) -> Option<Vec<Section>> {
    let (tls, at) = default;
    let pairs = tls.pairs(w, at);
    let Some(((cert, key), extra)) = pairs.split_first() else {
        w.warn(at, "HTTPS listen address without ssl_certificate and ssl_certificate_key; the listener is written as a comment");
        return None;
    };
    let mut s = Section::new("[listener.tls]");
    s.set("certificate", Value::Str(cert.clone()), None);
    s.set("key", Value::Str(key.clone()), None);
    if let Some((p, from)) = &tls.protocols {
        s.set("protocols", Value::StrList(p.clone()), Some(from.clone()));
    }
    if let Some(from) = &tls.tickets_off {
        s.set("session_tickets", Value::Bool(false), Some(from.clone()));
    }
    if let Some((t, from)) = &tls.handshake_timeout {
        s.set("handshake_timeout", Value::Dur(*t), Some(from.clone()));
    }
    let ca = tls.client_ca(w, at);
    if let Some((path, from)) = &ca {
        s.set("client_ca", Value::Str(path.clone()), Some(from.clone()));
    }
    let mut out = vec![s];
    let mut seen: Vec<String> = vec![cert.clone()];
    let mut sni = |pairs: Vec<(String, String)>, from: &Pos| {
        for (c, k) in pairs {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c.clone());
            let mut e = Section::new("[[listener.tls.sni]]");
            e.before.push(format!(
                "from {} (chosen by the names in the certificate)",
                from.short()
            ));
            e.set("certificate", Value::Str(c), None);
            e.set("key", Value::Str(k), None);
            out.push(e);
        }
    };
    sni(extra.to_vec(), at);
    for (o, pos) in others {
        let pairs = o.pairs(w, pos);
        sni(pairs, pos);
        if o.listener_settings() != tls.listener_settings() {
            w.warn(
                pos,
                "ssl_protocols / ssl_session_tickets / client certificates differ from the default server's; ringlb has one setting per listener: the default server's is used",
            );
        }
    }
    Some(out)
}
