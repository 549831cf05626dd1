//! TOML text → resolved [`Config`]: schema, defaults, cross-references, and
//! every problem reported as `FILE:LINE:COL: message`.
//!
//! Why it is built this way:
//! - The document is parsed with `toml_edit` (the parser behind the `toml`
//!   crate), which keeps a byte span for every key and value. The tree is then
//!   walked by hand through the small typed view in [`fields`], so one pass
//!   can report *all* problems, each at the key or value it concerns; serde
//!   derive would stop at the first. TOML syntax errors stop parsing, so
//!   there is at most one of those, at the parser's position.
//! - Every reader returns a usable value even after reporting a problem
//!   (falling back to the default), so later checks still run and the user
//!   sees every mistake in one `ringlb check`. The [`Config`] is only returned
//!   when no diagnostic was recorded.
//! - Names are resolved here, once: upstream names become indices into
//!   `Config::upstreams` (in order of first appearance in the file), server
//!   host names become socket addresses, durations become [`Duration`]s.
//!   Nothing past this module interprets a string again.
//!
//! One file per concern: [`span`] (offsets → line:col, the collector),
//! [`duration`], [`addr`], [`fields`] (typed access), and one file per
//! section family: [`listener`], [`upstream`], [`vrrp`]; the small
//! `[runtime]`, `[http]`, `[admin]` and `[log]` sections live here.
//!
//! [`Duration`]: std::time::Duration

mod addr;
pub(super) mod duration;
mod fields;
mod listener;
mod size;
mod span;
mod tls;
mod upstream;
mod vrrp;

use super::defaults as def;
use super::{
    AccessLogFormat, AdminConfig, Config, ConfigError, HttpConfig, ListenerConfig, LogConfig,
    RuntimeConfig, Workers,
};
use fields::{suggest, Table, I64, U32};
use span::{Diags, Source};

/// Top-level keys, in the order the design document lists them.
const ROOT_KEYS: &[&str] = &[
    "runtime", "http", "admin", "log", "listener", "upstream", "vrrp",
];

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let src = Source::new(text, file);
    let mut d = Diags::new(&src);
    let config = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => Some(read_config(
            &Table::new(doc.as_table(), 0, "the top level"),
            &mut d,
        )),
        Err(e) => {
            d.error(e.span().map_or(0, |s| s.start), syntax_message(e.message()));
            None
        }
    };
    let warnings = d.take_warnings();
    match config {
        Some(mut config) if d.is_empty() => {
            config.warnings = warnings;
            Ok(config)
        }
        _ => Err(ConfigError {
            diagnostics: d.finish(),
        }),
    }
}

/// toml_edit's messages can span several lines ("invalid table header\n
/// duplicate key …"); diagnostics are one line each.
fn syntax_message(raw: &str) -> String {
    let parts: Vec<&str> = raw
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if parts.is_empty() {
        "TOML syntax error".into()
    } else {
        format!("TOML syntax error: {}", parts.join("; "))
    }
}

fn read_config(root: &Table, d: &mut Diags) -> Config {
    root.check_keys(d, ROOT_KEYS);
    let runtime = root.table(d, "runtime", "[runtime]");
    let http = root.table(d, "http", "[http]");
    let admin = root.table(d, "admin", "[admin]");
    let log = root.table(d, "log", "[log]");

    // Upstreams first, so listeners, routes and VRRP tracking can refer to
    // them by name wherever they appear in the file.
    let http = read_http(http.as_ref(), d);
    let mut upstreams = upstream::read_all(root, d);
    let listeners = listener::read_all(root, d, &mut upstreams, http.client_max_body_size);
    upstreams.report_unused(d);
    let vrrp = vrrp::read_all(root, d, &upstreams);

    Config {
        source: Default::default(),
        warnings: Vec::new(),
        runtime: read_runtime(runtime.as_ref(), d),
        http,
        admin: admin.and_then(|t| read_admin(&t, d, &listeners)),
        log: read_log(log.as_ref(), d),
        listeners,
        upstreams: upstreams
            .into_list()
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
        vrrp,
    }
}

fn read_runtime(t: Option<&Table>, d: &mut Diags) -> RuntimeConfig {
    let mut rt = RuntimeConfig {
        workers: def::WORKERS,
        control_cpu: None,
        worker_cpus: None,
        shutdown_timeout: def::SHUTDOWN_TIMEOUT,
    };
    let Some(t) = t else { return rt };
    t.check_keys(
        d,
        &["workers", "control_cpu", "worker_cpus", "shutdown_timeout"],
    );
    if let Some(f) = t.field("workers") {
        match f.as_integer() {
            Some(_) => {
                if let Some(n) = f.int(d, 1..=I64) {
                    rt.workers = Workers::Count(n);
                }
            }
            None => match f.str(d) {
                Some("auto") => rt.workers = Workers::Auto,
                Some(other) => d.error(
                    f.at,
                    format!("`workers` must be \"auto\" or a positive integer, found {other:?}"),
                ),
                None => {}
            },
        }
    }
    rt.control_cpu = t.int(d, "control_cpu", 0..=I64);
    if let Some(f) = t.field("worker_cpus") {
        let cpus: Vec<Option<usize>> = f
            .array(d)
            .unwrap_or_default()
            .iter()
            .map(|c| c.int(d, 0..=I64))
            .collect();
        rt.worker_cpus = cpus.into_iter().collect();
        if rt.worker_cpus.as_ref().is_some_and(Vec::is_empty) {
            d.error(
                f.at,
                "`worker_cpus` must list at least one CPU (or be left out)",
            );
        }
    }
    if let Some(v) = t.positive_duration(d, "shutdown_timeout") {
        rt.shutdown_timeout = v;
    }
    rt
}

fn read_http(t: Option<&Table>, d: &mut Diags) -> HttpConfig {
    let mut h = HttpConfig {
        max_header_bytes: def::MAX_HEADER_BYTES,
        max_headers: def::MAX_HEADERS,
        max_uri_bytes: def::MAX_URI_BYTES,
        client_max_body_size: def::CLIENT_MAX_BODY_SIZE,
        client_header_timeout: def::CLIENT_HEADER_TIMEOUT,
        client_body_timeout: def::CLIENT_BODY_TIMEOUT,
        keepalive_timeout: def::KEEPALIVE_TIMEOUT,
        max_connections: def::MAX_CONNECTIONS,
        tunnel_timeout: def::TUNNEL_TIMEOUT,
        request_buffering: def::REQUEST_BUFFERING,
        request_buffer_size: def::REQUEST_BUFFER_SIZE,
    };
    let Some(t) = t else { return h };
    t.check_keys(
        d,
        &[
            "max_header_bytes",
            "max_headers",
            "max_uri_bytes",
            "client_max_body_size",
            "client_header_timeout",
            "client_body_timeout",
            "keepalive_timeout",
            "max_connections",
            "tunnel_timeout",
            "request_buffering",
            "request_buffer_size",
        ],
    );
    // A head must at least hold a request line; 64 bytes is a floor that
    // catches unit mistakes (`max_header_bytes = 16` meaning KiB).
    if let Some(v) = t.int(d, "max_header_bytes", 64..=U32) {
        h.max_header_bytes = v;
    }
    if let Some(v) = t.int(d, "max_headers", 1..=U32) {
        h.max_headers = v;
    }
    // The request line is part of the head: a target limit above the head
    // limit could never be reached (431 would come first).
    if let Some(f) = t.field("max_uri_bytes") {
        if let Some(v) = f.int::<usize>(d, 1..=U32) {
            if v > h.max_header_bytes {
                d.error(
                    f.at,
                    format!(
                        "`max_uri_bytes` ({v}) must not exceed `max_header_bytes` ({})",
                        h.max_header_bytes
                    ),
                );
            } else {
                h.max_uri_bytes = v;
            }
        }
    }
    if let Some(v) = size::table_size(t, d, "client_max_body_size") {
        h.client_max_body_size = v;
    }
    if let Some(v) = t.positive_duration(d, "client_header_timeout") {
        h.client_header_timeout = v;
    }
    if let Some(v) = t.positive_duration(d, "client_body_timeout") {
        h.client_body_timeout = v;
    }
    // 0 is allowed here: it turns client keep-alive off, as in nginx.
    if let Some(v) = t.duration(d, "keepalive_timeout") {
        h.keepalive_timeout = v;
    }
    if let Some(v) = t.int(d, "max_connections", 1..=U32) {
        h.max_connections = v;
    }
    if let Some(v) = t.positive_duration(d, "tunnel_timeout") {
        h.tunnel_timeout = v;
    }
    read_request_buffering(t, d, &mut h);
    h
}

/// `request_buffering` and `request_buffer_size` (0 turns buffering off,
/// like `request_buffering = false`).
fn read_request_buffering(t: &Table, d: &mut Diags, h: &mut HttpConfig) {
    if let Some(v) = t.bool(d, "request_buffering") {
        h.request_buffering = v;
    }
    if let Some(v) = size::table_size(t, d, "request_buffer_size") {
        h.request_buffer_size = v.min(u32::MAX as u64) as usize;
    }
}

fn read_admin(t: &Table, d: &mut Diags, listeners: &[ListenerConfig]) -> Option<AdminConfig> {
    t.check_keys(d, &["listen", "token"]);
    let token = match t.field("token") {
        Some(f) => match f.str(d) {
            Some(s) if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                d.error(
                    f.at,
                    "`token` must be non-empty, without spaces or control characters",
                );
                None
            }
            s => s.map(str::to_string),
        },
        None => None,
    };
    let f = t.required(d, "listen")?;
    let s = f.str(d)?;
    match addr::parse_listen(s) {
        Ok(listen) => {
            if let Some(l) = listeners.iter().find(|l| binds_overlap(l.listen, listen)) {
                d.error(
                    f.at,
                    format!(
                        "admin listen {listen} takes the port of the listener on {}",
                        l.listen
                    ),
                );
            }
            Some(AdminConfig { listen, token })
        }
        Err(e) => {
            d.error(f.at, e);
            None
        }
    }
}

/// Whether two sockets could not both bind: the same port (not 0) on the
/// same address, or on one side the wildcard of the same family (the
/// admin socket does not share ports as the listeners' SO_REUSEPORT
/// sockets do among themselves).
fn binds_overlap(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_log(t: Option<&Table>, d: &mut Diags) -> LogConfig {
    let mut log = LogConfig {
        access_log: None,
        access_log_format: def::ACCESS_LOG_FORMAT,
        latency_histograms: true,
    };
    let Some(t) = t else { return log };
    t.check_keys(
        d,
        &["access_log", "access_log_format", "latency_histograms"],
    );
    if let Some(f) = t.field("latency_histograms") {
        if let Some(b) = f.bool(d) {
            log.latency_histograms = b;
        }
    }
    if let Some(f) = t.field("access_log") {
        match f.str(d) {
            Some("") => d.error(
                f.at,
                "`access_log` must be a file path (leave it out to disable)",
            ),
            Some(path) => log.access_log = Some(path.into()),
            None => {}
        }
    }
    if let Some(f) = t.field("access_log_format") {
        match f.str(d) {
            Some("combined") => log.access_log_format = AccessLogFormat::Combined,
            Some("json") => log.access_log_format = AccessLogFormat::Json,
            Some(other) => d.error(
                f.at,
                one_of("access_log_format", other, &["combined", "json"]),
            ),
            None => {}
        }
    }
    log
}

/// "unknown `key` value "x" (did you mean "y"?); expected a, b or c".
fn one_of(key: &str, found: &str, allowed: &[&str]) -> String {
    let hint = suggest(found, allowed.iter().copied())
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default();
    let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "unknown `{key}` value {found:?}{hint}; expected one of {}",
        list.join(", ")
    )
}
