//! `[upstream.NAME]` sections: balancing, timeouts, servers, health checks;
//! and the name → index table other sections resolve references against.
//!
//! Upstream indices follow the order in which names first appear in the file
//! (the order of the `[upstream]` table), so the same file always yields the
//! same indices. An upstream that fails validation still gets its index, so a
//! broken upstream does not also produce "unknown upstream" errors at every
//! listener that names it.

use super::super::defaults as def;
use super::super::{
    Balance, HashKey, HealthCheckConfig, HealthCheckKind, ServerConfig, UpstreamConfig,
};
use super::addr::resolve_server;
use super::fields::{suggest, Field, Table, U32};
use super::one_of;
use super::span::Diags;
use crate::proto::proxy_protocol::Version;

const UPSTREAM_KEYS: &[&str] = &[
    "balance",
    "hash_key",
    "keepalive",
    "keepalive_timeout",
    "connect_timeout",
    "read_timeout",
    "send_timeout",
    "retries",
    "server",
    "health_check",
    "send_proxy_protocol",
];

const SERVER_KEYS: &[&str] = &[
    "address",
    "weight",
    "max_fails",
    "fail_timeout",
    "backup",
    "down",
    "max_conns",
    "slow_start",
];

const HEALTH_KEYS: &[&str] = &[
    "kind",
    "path",
    "interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
];

const BALANCES: &[&str] = &["round_robin", "least_conn", "random_two", "hash"];

/// All upstreams, plus what is needed to resolve and audit references.
pub(crate) struct Upstreams {
    list: Vec<UpstreamConfig>,
    /// Where each upstream's name is written.
    at: Vec<usize>,
    /// Whether a listener or route sends traffic to it.
    used: Vec<bool>,
    /// Some reference could not be read (wrong type), so "unused" would be
    /// a guess: the unused check is skipped rather than cascade.
    refs_unreadable: bool,
}

impl Upstreams {
    /// Index of the upstream named by `f` (a string) for a reference that
    /// routes traffic to it (listener, route); reports an unknown name.
    pub(crate) fn resolve(&mut self, d: &mut Diags, f: &Field) -> Option<usize> {
        if f.str(d).is_none() {
            self.refs_unreadable = true;
            return None;
        }
        let i = self.lookup(d, f)?;
        self.used[i] = true;
        Some(i)
    }

    /// Like [`resolve`](Self::resolve), for references that only watch an
    /// upstream (VRRP tracking): they do not count as a use.
    pub(crate) fn lookup(&self, d: &mut Diags, f: &Field) -> Option<usize> {
        let name = f.str(d)?;
        if let Some(i) = self.list.iter().position(|u| u.name == name) {
            return Some(i);
        }
        let names = || self.list.iter().map(|u| u.name.as_str());
        let hint = match suggest(name, names()) {
            _ if self.list.is_empty() => "; no [upstream.NAME] sections are defined".to_string(),
            Some(s) => format!(" (did you mean {s:?}?)"),
            None => {
                let quoted: Vec<String> = names().map(|n| format!("{n:?}")).collect();
                format!("; defined upstreams: {}", quoted.join(", "))
            }
        };
        d.error(f.at, format!("unknown upstream {name:?}{hint}"));
        None
    }

    /// A section holding references had the wrong shape (already reported).
    pub(crate) fn refs_unreadable(&mut self) {
        self.refs_unreadable = true;
    }

    pub(crate) fn report_unused(&self, d: &mut Diags) {
        if self.refs_unreadable {
            return;
        }
        for (i, u) in self.list.iter().enumerate() {
            if !self.used[i] {
                d.error(
                    self.at[i],
                    format!("upstream {:?} is not used by any listener or route", u.name),
                );
            }
        }
    }

    pub(crate) fn into_list(self) -> Vec<UpstreamConfig> {
        self.list
    }
}

pub(crate) fn read_all(root: &Table, d: &mut Diags) -> Upstreams {
    let mut ups = Upstreams {
        list: Vec::new(),
        at: Vec::new(),
        used: Vec::new(),
        refs_unreadable: false,
    };
    let Some(section) = root.table(d, "upstream", "[upstream]") else {
        return ups;
    };
    for f in section.fields() {
        let header = format!("[upstream.{}]", f.name);
        let mut u = placeholder(f.name);
        if let Some(t) = f.table(d, &header) {
            read_upstream(&t, &mut u, d);
        }
        ups.list.push(u);
        ups.at.push(f.key_at);
        ups.used.push(false);
    }
    ups
}

fn placeholder(name: &str) -> UpstreamConfig {
    UpstreamConfig {
        name: name.to_string(),
        balance: def::BALANCE,
        hash_key: def::HASH_KEY,
        keepalive: def::KEEPALIVE,
        keepalive_timeout: def::UPSTREAM_KEEPALIVE_TIMEOUT,
        connect_timeout: def::CONNECT_TIMEOUT,
        read_timeout: def::READ_TIMEOUT,
        send_timeout: def::SEND_TIMEOUT,
        retries: def::RETRIES,
        servers: Vec::new(),
        health_check: None,
        send_proxy_protocol: None,
        tls: None,
    }
}

fn read_upstream(t: &Table, u: &mut UpstreamConfig, d: &mut Diags) {
    let known = [UPSTREAM_KEYS, &super::tls::UPSTREAM_TLS_KEYS].concat();
    t.check_keys(d, &known);
    let mut balance_ok = true;
    if let Some(f) = t.field("balance") {
        match f.str(d) {
            Some("round_robin") => u.balance = Balance::RoundRobin,
            Some("least_conn") => u.balance = Balance::LeastConn,
            Some("random_two") => u.balance = Balance::RandomTwo,
            Some("hash") => u.balance = Balance::Hash,
            Some(other) => {
                d.error(f.at, one_of("balance", other, BALANCES));
                balance_ok = false;
            }
            None => balance_ok = false,
        }
    }
    if let Some(f) = t.field("hash_key") {
        if balance_ok && u.balance != Balance::Hash {
            d.error(f.key_at, "`hash_key` only applies with balance = \"hash\"");
        }
        if let Some(s) = f.str(d) {
            match parse_hash_key(s) {
                Ok(k) => u.hash_key = k,
                Err(e) => d.error(f.at, e),
            }
        }
    }
    if let Some(v) = t.int(d, "keepalive", 0..=U32) {
        u.keepalive = v;
    }
    // 0 is allowed: no idle upstream connection is kept.
    if let Some(v) = t.duration(d, "keepalive_timeout") {
        u.keepalive_timeout = v;
    }
    if let Some(v) = t.positive_duration(d, "connect_timeout") {
        u.connect_timeout = v;
    }
    if let Some(v) = t.positive_duration(d, "read_timeout") {
        u.read_timeout = v;
    }
    if let Some(v) = t.positive_duration(d, "send_timeout") {
        u.send_timeout = v;
    }
    if let Some(v) = t.int(d, "retries", 0..=U32) {
        u.retries = v;
    }
    u.send_proxy_protocol = send_proxy_protocol(t, d);

    let header = format!("[[upstream.{}.server]]", u.name);
    let servers = t.tables(d, "server", &header);
    for s in servers.iter().flatten() {
        u.servers.extend(read_server(s, d));
    }
    // A wrongly typed `server` was reported already; absent or empty was not.
    if servers.is_some_and(|s| s.is_empty()) || t.field("server").is_none() {
        d.error(
            t.at,
            format!(
                "upstream {:?} has no servers; add at least one {header} with an `address`",
                u.name
            ),
        );
    }
    let hc_name = format!("[upstream.{}.health_check]", u.name);
    u.health_check = t
        .table(d, "health_check", &hc_name)
        .map(|hc| read_health(&hc, d));
    u.tls = super::tls::read_upstream(t, &u.servers, d);
}

/// `send_proxy_protocol = "v1" | "v2"`.
fn send_proxy_protocol(t: &Table, d: &mut Diags) -> Option<Version> {
    let f = t.field("send_proxy_protocol")?;
    match f.str(d)? {
        "v1" => Some(Version::V1),
        "v2" => Some(Version::V2),
        other => {
            d.error(f.at, one_of("send_proxy_protocol", other, &["v1", "v2"]));
            None
        }
    }
}

/// `client_ip`, `uri` or `header:NAME` (name lower-cased).
fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    match s {
        "client_ip" => Ok(HashKey::ClientIp),
        "uri" => Ok(HashKey::Uri),
        _ => match s.strip_prefix("header:") {
            Some(name) if is_token(name) => Ok(HashKey::Header(name.to_ascii_lowercase())),
            Some(_) => Err(format!(
                "invalid `hash_key` {s:?}: `header:` must be followed by a header name"
            )),
            None => Err(format!(
                "invalid `hash_key` {s:?}: expected \"client_ip\", \"uri\" or \"header:NAME\""
            )),
        },
    }
}

/// An HTTP token (RFC 9110 §5.6.2), the syntax of a header field name.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// One `[[upstream.X.server]]`; a host name may expand to several servers.
fn read_server(t: &Table, d: &mut Diags) -> Vec<ServerConfig> {
    t.check_keys(d, SERVER_KEYS);
    let weight = t.int(d, "weight", 1..=U32).unwrap_or(def::WEIGHT);
    let max_fails = t.int(d, "max_fails", 0..=U32).unwrap_or(def::MAX_FAILS);
    let fail_timeout = t
        .positive_duration(d, "fail_timeout")
        .unwrap_or(def::FAIL_TIMEOUT);
    let backup = t.bool(d, "backup").unwrap_or(false);
    let down = t.bool(d, "down").unwrap_or(false);
    let max_conns = t.int(d, "max_conns", 0..=U32).unwrap_or(def::MAX_CONNS);
    let slow_start = t.duration(d, "slow_start").unwrap_or(def::SLOW_START);

    let Some(f) = t.required(d, "address") else {
        return Vec::new();
    };
    let Some(spec) = f.str(d) else {
        return Vec::new();
    };
    let addrs = resolve_server(spec).unwrap_or_else(|e| {
        d.error(f.at, e);
        Vec::new()
    });
    addrs
        .into_iter()
        .map(|addr| ServerConfig {
            spec: spec.to_string(),
            addr,
            weight,
            max_fails,
            fail_timeout,
            backup,
            down,
            max_conns,
            slow_start,
        })
        .collect()
}

fn read_health(t: &Table, d: &mut Diags) -> HealthCheckConfig {
    t.check_keys(d, HEALTH_KEYS);
    let mut hc = HealthCheckConfig {
        kind: def::HC_KIND,
        path: def::HC_PATH.to_string(),
        expect_status: def::HC_EXPECT,
        interval: def::HC_INTERVAL,
        timeout: def::HC_TIMEOUT,
        rise: def::HC_RISE,
        fall: def::HC_FALL,
    };
    if let Some(f) = t.field("kind") {
        match f.str(d) {
            Some("http") => hc.kind = HealthCheckKind::Http,
            Some("tcp") => hc.kind = HealthCheckKind::Tcp,
            Some(other) => d.error(f.at, one_of("kind", other, &["http", "tcp"])),
            None => {}
        }
    }
    if let Some(f) = t.field("path") {
        match f.str(d) {
            Some(p) if p.starts_with('/') && !p.bytes().any(|b| b <= b' ' || b == 0x7f) => {
                hc.path = p.to_string()
            }
            Some(p) => d.error(
                f.at,
                format!(
                    "health check `path` must start with '/' and contain no spaces, found {p:?}"
                ),
            ),
            None => {}
        }
    }
    if let Some(v) = t.positive_duration(d, "interval") {
        hc.interval = v;
    }
    if let Some(v) = t.positive_duration(d, "timeout") {
        hc.timeout = v;
    }
    if let Some(v) = t.int(d, "rise", 1..=U32) {
        hc.rise = v;
    }
    if let Some(v) = t.int(d, "fall", 1..=U32) {
        hc.fall = v;
    }
    if let Some(f) = t.field("expect_status") {
        if let Some(range) = read_expect(&f, d) {
            hc.expect_status = range;
        }
    }
    hc
}

/// `200`, `"200"` or `"200-399"`; statuses 100..=599, low ≤ high.
fn read_expect(f: &Field, d: &mut Diags) -> Option<(u16, u16)> {
    let bad = |d: &mut Diags, what: String| {
        d.error(
            f.at,
            format!("invalid `expect_status` {what}: expected a status like 200 or a range like \"200-399\" (100 to 599)"),
        );
        None
    };
    let status = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    if let Some(n) = f.as_integer() {
        return match u16::try_from(n).ok().filter(|c| (100..=599).contains(c)) {
            Some(c) => Some((c, c)),
            None => bad(d, n.to_string()),
        };
    }
    let s = f.str(d)?;
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    match (status(lo), status(hi)) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => bad(d, format!("{s:?}")),
    }
}
