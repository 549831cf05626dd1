//! nginx directive tree → `[http]`, `[log]`, `[[listener]]`, `[upstream.*]`.
//!
//! The mapping works in two passes because nginx lets `proxy_pass` name an
//! upstream defined further down: pass one collects `upstream` blocks, pass
//! two walks `server` blocks. Then server blocks are grouped by listen
//! address, because nginx picks a server block per connection by address and
//! then by `Host`, while ringlb has one listener per address with host and
//! path routes:
//!
//! - the default server of an address (`default_server`, else the first)
//!   gives the listener's default `upstream` (its `location /`) and
//!   host-less path routes (its other prefix locations);
//! - every other server block gives one route per (server name, location).
//!
//! ringlb sets proxy timeouts and retries per upstream, nginx per location;
//! the first location that proxies to an upstream decides, and a later one
//! that disagrees is a warning. Directives that do not map are kept as
//! comments (see [`super`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::emit::{key, Section, Value};
use super::lexer::{Dialect, Pos};
use super::nginx_tls::{self, Tls};
use super::syntax::Directive;
use super::units::{nginx_size, nginx_time};
use super::{covered, Warnings};

const D: Dialect = Dialect::Nginx;

/// What the nginx side contributes to the output.
pub(crate) struct Out {
    /// `[http]`, `[log]`, notes, listeners and their routes, upstreams.
    pub sections: Vec<Section>,
    /// Upstreams that are emitted (not commented out), for VRRP hints.
    pub upstream_names: Vec<String>,
    /// nginx's `worker_processes`, as a comment for `workers = "auto"`.
    pub workers_note: Option<String>,
}

/// proxy_* settings, inherited http → server → location.
#[derive(Debug, Clone, Default, PartialEq)]
struct Proxy {
    connect: Option<Duration>,
    read: Option<Duration>,
    send: Option<Duration>,
    tries: Option<u32>,
    next_upstream_off: bool,
    /// `proxy_ssl_verify` (nginx's default: off).
    ssl_verify: Option<bool>,
    /// `proxy_ssl_trusted_certificate`.
    ssl_ca: Option<String>,
    /// `proxy_ssl_name` (a literal name).
    ssl_name: Option<String>,
    /// Where each set value came from, for comments.
    from: Vec<(&'static str, String)>,
}

impl Proxy {
    fn same_settings(&self, o: &Proxy) -> bool {
        (
            self.connect,
            self.read,
            self.send,
            self.tries,
            self.next_upstream_off,
            self.ssl_verify,
            &self.ssl_ca,
            &self.ssl_name,
        ) == (
            o.connect,
            o.read,
            o.send,
            o.tries,
            o.next_upstream_off,
            o.ssl_verify,
            &o.ssl_ca,
            &o.ssl_name,
        )
    }

    fn origin(&self, key: &str) -> Option<String> {
        self.from
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
    }
}

#[derive(Debug)]
struct Server {
    address: String,
    params: Vec<(&'static str, Value)>,
}

#[derive(Debug)]
struct Upstream {
    name: String,
    pos: Pos,
    /// (balance, hash_key, comment)
    balance: Option<(&'static str, Option<String>, String)>,
    keepalive: Option<(u64, String)>,
    servers: Vec<Server>,
    notes: Vec<String>,
    /// From the first location that proxies here.
    proxy: Option<(Proxy, Pos)>,
    used: bool,
    /// Made for a `proxy_pass http://ADDR` with a literal address.
    generated_for: Option<String>,
    /// `proxy_pass https://…` (where first seen).
    tls: Option<(bool, Pos)>,
}

#[derive(Debug)]
struct Listen {
    addr: SocketAddr,
    default: bool,
    backlog: Option<u64>,
    /// `listen … proxy_protocol`.
    proxy_protocol: bool,
    /// `listen … ssl` (or the block's `ssl on;`).
    ssl: bool,
}

#[derive(Debug)]
struct Loc {
    prefix: String,
    upstream: usize,
    pos: Pos,
}

#[derive(Debug)]
struct ServerBlock {
    pos: Pos,
    listens: Vec<Listen>,
    names: Vec<String>,
    locs: Vec<Loc>,
    notes: Vec<String>,
    tls: Tls,
}

struct Mapper<'w> {
    w: &'w mut Warnings,
    notes: Vec<String>,
    http: Section,
    log: Section,
    upstreams: Vec<Upstream>,
    servers: Vec<ServerBlock>,
    workers_note: Option<String>,
    /// `ssl_*` settings at the http level, inherited by server blocks.
    tls: Tls,
}

pub(crate) fn map(tree: &[Directive], w: &mut Warnings) -> Out {
    let mut m = Mapper {
        w,
        notes: Vec::new(),
        http: Section::new("[http]"),
        log: Section::new("[log]"),
        upstreams: Vec::new(),
        servers: Vec::new(),
        workers_note: None,
        tls: Tls::default(),
    };
    // A file with no `http` block is taken as the inside of one (a
    // conf.d snippet: `upstream …` and `server …` at the top level).
    let has_http = tree.iter().any(|d| d.name == "http");
    let mut http_blocks: Vec<&[Directive]> = Vec::new();
    for d in tree {
        match d.name.as_str() {
            "http" if d.block.is_some() => http_blocks.push(d.children()),
            _ if !has_http => {}
            _ => m.main_directive(d),
        }
    }
    if !has_http {
        http_blocks.push(tree);
    }
    for b in &http_blocks {
        for d in b
            .iter()
            .filter(|d| d.name == "upstream" && d.block.is_some())
        {
            m.upstream(d);
        }
    }
    let base = Proxy::default();
    let mut proxy = base.clone();
    for b in &http_blocks {
        for d in b.iter() {
            m.proxy_setting(d, &mut proxy);
        }
    }
    // http-level ssl_* apply to every server block, wherever they are.
    let mut tls = Tls::default();
    for b in &http_blocks {
        for d in b.iter() {
            tls.apply(d, m.w, &mut m.notes);
        }
    }
    m.tls = tls;
    for b in &http_blocks {
        for d in b.iter() {
            m.http_directive(d, &proxy);
        }
    }
    m.finish()
}

impl Mapper<'_> {
    /// Main (outside `http`) context.
    fn main_directive(&mut self, d: &Directive) {
        match d.name.as_str() {
            "worker_processes" => {
                self.workers_note = Some(format!(
                    "nginx: worker_processes {} ({})",
                    d.arg(0).unwrap_or(""),
                    d.pos.short()
                ));
            }
            "user" | "pid" | "worker_rlimit_nofile" | "load_module" | "pcre_jit" => covered(
                &mut self.notes,
                d,
                D,
                "not needed by ringlb (run it as the user and with the limits you choose)",
            ),
            "error_log" => covered(&mut self.notes, d, D, "ringlb logs errors to stderr"),
            "events" => {
                for c in d.children() {
                    match c.name.as_str() {
                        "worker_connections" => self.notes.push(format!(
                            "{} ({}): ringlb's per-shard client limit is [http] max_connections (default 16384)",
                            c.render(D),
                            c.pos.short()
                        )),
                        "use" | "multi_accept" | "accept_mutex" => covered(
                            &mut self.notes,
                            c,
                            D,
                            "not needed: every ringlb shard accepts on its own SO_REUSEPORT socket with io_uring",
                        ),
                        _ => self.w.skip(&mut self.notes, c, D, "unknown `events` directive"),
                    }
                }
            }
            "include" => self.missing_include(d),
            "stream" => self.w.skip(
                &mut self.notes,
                d,
                D,
                "TCP/UDP (stream) proxying is not supported",
            ),
            "mail" => self
                .w
                .skip(&mut self.notes, d, D, "mail proxying is not supported"),
            _ => self
                .w
                .skip(&mut self.notes, d, D, "not supported by ringlb"),
        }
    }

    fn missing_include(&mut self, d: &Directive) {
        let what = d.arg(0).unwrap_or("");
        if what.contains("mime.types") {
            covered(
                &mut self.notes,
                d,
                D,
                "file not found; not needed: ringlb serves no files",
            );
        } else {
            self.w.skip(
                &mut self.notes,
                d,
                D,
                "the included file was not found; import it separately or fix the path",
            );
        }
    }

    /// `http` context (or the top level of a snippet).
    fn http_directive(&mut self, d: &Directive, proxy: &Proxy) {
        if is_proxy_setting(&d.name) || d.name.starts_with("ssl") {
            return; // already applied (inherited by every server block)
        }
        match d.name.as_str() {
            "upstream" => {}
            "server" if d.block.is_some() => self.server(d, proxy),
            "include" => self.missing_include(d),
            _ => {
                let mut notes = std::mem::take(&mut self.notes);
                self.common(d, &mut notes);
                self.notes = notes;
            }
        }
    }

    /// `proxy_request_buffering on|off` → `[http] request_buffering` (the
    /// first value wins: ringlb has one setting). `client_body_buffer_size`
    /// is a note: nginx keeps that much of a body in memory and the rest in
    /// a temp file, buffering it whole either way; ringlb buffers in memory
    /// up to `request_buffer_size` (default 1 MiB, `client_max_body_size`'s
    /// default), so mapping the small nginx value there would stream
    /// bodies nginx buffered.
    fn request_buffering(&mut self, d: &Directive, notes: &mut Vec<String>) {
        if d.name == "client_body_buffer_size" {
            return covered(
                notes,
                d,
                D,
                "not needed: ringlb buffers a body whole in memory up to request_buffer_size (default 1m), where nginx used this buffer plus a temp file",
            );
        }
        let value = match d.arg(0) {
            Some(a @ ("on" | "off")) => Value::Bool(a == "on"),
            _ => return self.w.skip(notes, d, D, "expected `on` or `off`"),
        };
        if self
            .http
            .entries
            .iter()
            .any(|e| e.key == "request_buffering")
        {
            return self.w.skip(
                notes,
                d,
                D,
                "already set by an earlier directive; ringlb has one global setting",
            );
        }
        let note = format!("{} ({})", d.render(D), d.pos.short());
        self.http.set("request_buffering", value, Some(note));
    }

    /// Directives valid in http, server (and some in location) context
    /// that map to global settings or are known not to matter.
    fn common(&mut self, d: &Directive, notes: &mut Vec<String>) {
        let dur = |d: &Directive| d.arg(0).and_then(nginx_time);
        match d.name.as_str() {
            "keepalive_timeout" => match dur(d) {
                Some(v) => self.global_duration(d, notes, "keepalive_timeout", v),
                None => self.w.skip(notes, d, D, "invalid time"),
            },
            "client_header_timeout" | "client_body_timeout" => match dur(d) {
                Some(v) if !v.is_zero() => {
                    let key = if d.name == "client_header_timeout" {
                        "client_header_timeout"
                    } else {
                        "client_body_timeout"
                    };
                    self.global_duration(d, notes, key, v)
                }
                _ => self
                    .w
                    .skip(notes, d, D, "invalid time (ringlb needs a positive value)"),
            },
            "large_client_header_buffers" => {
                let n = d.arg(0).and_then(|s| s.parse::<u64>().ok());
                let size = d.arg(1).and_then(nginx_size);
                match (n, size) {
                    (Some(n), Some(size))
                        if self
                            .http
                            .entries
                            .iter()
                            .all(|e| e.key != "max_header_bytes") =>
                    {
                        let total = (n * size).clamp(64, u64::from(u32::MAX));
                        self.http.set(
                            "max_header_bytes",
                            Value::Int(total as i64),
                            Some(format!(
                                "{} ({}): whole head limit = {n} × {size} bytes",
                                d.render(D),
                                d.pos.short()
                            )),
                        );
                    }
                    (Some(_), Some(_)) => self.w.skip(
                        notes,
                        d,
                        D,
                        "already set by an earlier directive; ringlb has one global limit",
                    ),
                    _ => self.w.skip(
                        notes,
                        d,
                        D,
                        "expected `large_client_header_buffers NUMBER SIZE`",
                    ),
                }
            }
            "client_max_body_size" => match d.arg(0).and_then(nginx_size) {
                Some(v)
                    if self
                        .http
                        .entries
                        .iter()
                        .all(|e| e.key != "client_max_body_size") =>
                {
                    self.http.set(
                        "client_max_body_size",
                        Value::Int(v.min(i64::MAX as u64) as i64),
                        Some(format!(
                            "{} ({}): applied to every listener; a per-server or per-location \
                             limit goes on the [[listener]] or [[listener.route]]",
                            d.render(D),
                            d.pos.short()
                        )),
                    );
                }
                Some(_) => self.w.skip(
                    notes,
                    d,
                    D,
                    "already set by an earlier directive; set it per [[listener]] or \
                     [[listener.route]] instead",
                ),
                None => self.w.skip(notes, d, D, "invalid size"),
            },
            "proxy_request_buffering" | "client_body_buffer_size" => {
                self.request_buffering(d, notes)
            }
            "access_log" => self.access_log(d, notes),
            "real_ip_header" if d.arg(0) == Some("proxy_protocol") => covered(
                notes,
                d,
                D,
                "on a `proxy_protocol = true` listener the PROXY header's address is the client's",
            ),
            "set_real_ip_from" => self.w.skip(
                notes,
                d,
                D,
                "ringlb takes the PROXY header of every connection to a `proxy_protocol = true` \
                 listener: let only the balancer reach it (firewall)",
            ),
            "proxy_http_version" if d.arg(0) == Some("1.1") => {
                covered(notes, d, D, "ringlb always speaks HTTP/1.1 to upstreams")
            }
            "proxy_set_header" => self.set_header(d, notes),
            "sendfile"
            | "tcp_nopush"
            | "tcp_nodelay"
            | "types"
            | "default_type"
            | "types_hash_max_size"
            | "server_names_hash_bucket_size"
            | "server_names_hash_max_size"
            | "index" => covered(
                notes,
                d,
                D,
                "not needed: ringlb serves no files and sets TCP_NODELAY itself",
            ),
            "error_log" => covered(notes, d, D, "ringlb logs errors to stderr"),
            "server_tokens" => covered(
                notes,
                d,
                D,
                "not needed: ringlb adds no Server header to proxied responses",
            ),
            n if n.starts_with("ssl") => self.w.skip(
                notes,
                d,
                D,
                "ssl_* settings are imported from http and server blocks only",
            ),
            "gzip" if d.arg(0) == Some("off") => covered(notes, d, D, "ringlb does not compress"),
            n if n.starts_with("gzip") => {
                self.w
                    .skip(notes, d, D, "ringlb does not compress responses")
            }
            "log_format" => self.w.skip(
                notes,
                d,
                D,
                "custom log formats are not supported; ringlb writes `combined` or `json`",
            ),
            _ => self.w.skip(notes, d, D, "not supported by ringlb"),
        }
    }

    fn global_duration(
        &mut self,
        d: &Directive,
        notes: &mut Vec<String>,
        key: &'static str,
        v: Duration,
    ) {
        if let Some(e) = self.http.entries.iter().find(|e| e.key == key) {
            let same = matches!(e.value, Value::Dur(x) if x == v);
            if !same {
                self.w.skip(
                    notes,
                    d,
                    D,
                    &format!("ringlb has one global `{key}`; the first value seen is kept"),
                );
            }
            return;
        }
        let extra = match (key, d.arg(1)) {
            ("keepalive_timeout", Some(_)) => {
                "; the second value (Keep-Alive: timeout header) is not sent"
            }
            _ => "",
        };
        self.http.set(
            key,
            Value::Dur(v),
            Some(format!("{} ({}){extra}", d.render(D), d.pos.short())),
        );
    }

    fn access_log(&mut self, d: &Directive, notes: &mut Vec<String>) {
        let path = d.arg(0).unwrap_or("off");
        if path == "off" {
            covered(
                notes,
                d,
                D,
                "ringlb's access log is off unless [log] access_log is set",
            );
            return;
        }
        if self.log.entries.iter().any(|e| e.key == "access_log") {
            self.w.skip(
                notes,
                d,
                D,
                "ringlb writes one access log; the first `access_log` is kept",
            );
            return;
        }
        let mut comment = format!("{} ({})", d.render(D), d.pos.short());
        if let Some(fmt) = d.arg(1).filter(|f| *f != "combined") {
            self.w.warn(
                &d.args[1].pos,
                format!("access_log format `{fmt}` is not supported; ringlb writes the `combined` format"),
            );
            comment.push_str(&format!("; format `{fmt}` becomes `combined`"));
        }
        if d.args.len() > 2 {
            comment.push_str("; buffer/flush/gzip/if options are not imported");
        }
        self.log
            .set("access_log", Value::Str(path.to_string()), Some(comment));
    }

    fn set_header(&mut self, d: &Directive, notes: &mut Vec<String>) {
        let name = d.arg(0).unwrap_or("").to_ascii_lowercase();
        let value = d.arg(1).unwrap_or("");
        let same = match name.as_str() {
            "host" => matches!(value, "$host" | "$http_host"),
            "x-real-ip" => value == "$remote_addr",
            "x-forwarded-for" => matches!(value, "$proxy_add_x_forwarded_for" | "$remote_addr"),
            "x-forwarded-proto" => value == "$scheme",
            "connection" => matches!(value, "" | "upgrade" | "$connection_upgrade" | "close"),
            "upgrade" => value == "$http_upgrade",
            _ => false,
        };
        if same {
            covered(
                notes,
                d,
                D,
                "ringlb does this itself (Host kept, X-Forwarded-For appended, X-Real-IP and X-Forwarded-Proto set, Upgrade tunnelled, upstream keep-alive managed)",
            );
        } else {
            self.w
                .skip(notes, d, D, "setting request headers is not supported");
        }
    }

    /// Applies a proxy_* directive to `p`; false when `d` is not one.
    fn proxy_setting(&mut self, d: &Directive, p: &mut Proxy) -> bool {
        if !is_proxy_setting(&d.name) {
            return false;
        }
        let origin = format!("{} ({})", d.render(D), d.pos.short());
        match d.name.as_str() {
            "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout" => {
                match d.arg(0).and_then(nginx_time).filter(|v| !v.is_zero()) {
                    Some(v) => {
                        let (slot, key) = match d.name.as_str() {
                            "proxy_connect_timeout" => (&mut p.connect, "connect_timeout"),
                            "proxy_read_timeout" => (&mut p.read, "read_timeout"),
                            _ => (&mut p.send, "send_timeout"),
                        };
                        *slot = Some(v);
                        p.from.push((key, origin));
                    }
                    None => self
                        .w
                        .warn(&d.pos, format!("`{}`: invalid time, ignored", d.name)),
                }
            }
            "proxy_ssl_verify" => {
                p.ssl_verify = Some(d.arg(0) == Some("on"));
                p.from.push(("tls_verify", origin));
            }
            "proxy_ssl_trusted_certificate" => match d.arg(0) {
                Some(path) if !path.contains('$') => {
                    p.ssl_ca = Some(path.to_string());
                    p.from.push(("tls_ca", origin));
                }
                _ => self.w.warn(&d.pos, "`proxy_ssl_trusted_certificate`: a file path is needed, ignored"),
            },
            "proxy_ssl_name" => match d.arg(0) {
                Some(name) if is_host(name) => {
                    p.ssl_name = Some(name.to_string());
                    p.from.push(("tls_server_name", origin));
                }
                _ => self.w.warn(
                    &d.pos,
                    "`proxy_ssl_name`: only a literal host name is imported (ringlb sends each server's host name by default)",
                ),
            },
            // ringlb sends SNI for host names and resumes sessions always.
            "proxy_ssl_server_name" | "proxy_ssl_session_reuse" => {}
            "proxy_next_upstream_tries" => match d.arg(0).and_then(|s| s.parse().ok()) {
                Some(n) => {
                    p.tries = Some(n);
                    p.from.push(("retries", origin));
                }
                None => self.w.warn(
                    &d.pos,
                    "`proxy_next_upstream_tries`: invalid number, ignored",
                ),
            },
            _ => {
                // proxy_next_upstream
                p.next_upstream_off = d.arg(0) == Some("off");
                let conds: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
                let plain = conds
                    .iter()
                    .all(|c| matches!(*c, "error" | "timeout" | "off"));
                if !plain {
                    self.w.warn(
                        &d.pos,
                        format!(
                            "`proxy_next_upstream {}`: ringlb retries on connect errors, and on resets/timeouts before the first response byte for idempotent requests only; status-code conditions are not imported",
                            conds.join(" ")
                        ),
                    );
                }
                p.from.push(("retries", origin));
            }
        }
        true
    }

    fn upstream(&mut self, d: &Directive) {
        let Some(name) = d.arg(0).map(str::to_string) else {
            self.w
                .skip(&mut self.notes, d, D, "`upstream` needs a name");
            return;
        };
        if self.upstreams.iter().any(|u| u.name == name) {
            self.w.skip(
                &mut self.notes,
                d,
                D,
                "duplicate upstream name (nginx rejects this too)",
            );
            return;
        }
        let mut u = Upstream {
            name,
            pos: d.pos.clone(),
            balance: None,
            keepalive: None,
            servers: Vec::new(),
            notes: Vec::new(),
            proxy: None,
            used: false,
            generated_for: None,
            tls: None,
        };
        for c in d.children() {
            let src = format!("{} ({})", c.render(D), c.pos.short());
            let args: Vec<&str> = c.args.iter().map(|a| a.text.as_str()).collect();
            match c.name.as_str() {
                "server" => {
                    if let Some(s) = self.upstream_server(c, &mut u.notes) {
                        u.servers.push(s);
                    }
                }
                "least_conn" => set_balance(self.w, &mut u, c, ("least_conn", None, src)),
                "ip_hash" => set_balance(
                    self.w,
                    &mut u,
                    c,
                    (
                        "hash",
                        Some("client_ip".into()),
                        format!("{src}: ringlb hashes the whole client address (nginx: the first three IPv4 octets)"),
                    ),
                ),
                "hash" => {
                    let consistent = args.get(1) == Some(&"consistent");
                    let how = if consistent {
                        "ringlb's hash is consistent (Maglev)"
                    } else {
                        "ringlb's hash is consistent (Maglev), nginx's was modulo: keys map differently"
                    };
                    match args.first().and_then(|k| hash_key(k)) {
                        Some(k) => set_balance(self.w, &mut u, c, ("hash", Some(k), format!("{src}: {how}"))),
                        None => self.w.skip(
                            &mut u.notes,
                            c,
                            D,
                            "ringlb hashes only $remote_addr, $request_uri or $http_NAME; round_robin is used",
                        ),
                    }
                }
                "random" => {
                    let note = if args.first() == Some(&"two") {
                        if args.len() > 1 && args[1] != "least_conn" {
                            self.w.warn(&c.pos, "`random two`: ringlb picks the less loaded of two (least_conn)");
                        }
                        src
                    } else {
                        self.w.warn(&c.pos, "plain `random` is imported as random_two (power of two choices)");
                        format!("{src}: plain random becomes random_two")
                    };
                    set_balance(self.w, &mut u, c, ("random_two", None, note));
                }
                "keepalive" => match args.first().and_then(|s| s.parse::<u64>().ok()) {
                    Some(n) => u.keepalive = Some((n, src)),
                    None => self.w.skip(&mut u.notes, c, D, "expected `keepalive NUMBER`"),
                },
                "zone" => covered(&mut u.notes, c, D, "not needed: each ringlb shard keeps its own upstream state"),
                "keepalive_timeout" | "keepalive_requests" | "keepalive_time" => self.w.skip(
                    &mut u.notes,
                    c,
                    D,
                    "ringlb keeps idle upstream connections until the server closes them",
                ),
                _ => self.w.skip(&mut u.notes, c, D, "not supported in ringlb upstreams"),
            }
        }
        self.upstreams.push(u);
    }

    fn upstream_server(&mut self, c: &Directive, notes: &mut Vec<String>) -> Option<Server> {
        let Some(addr) = c.arg(0) else {
            self.w.skip(notes, c, D, "`server` needs an address");
            return None;
        };
        let address = match server_address(addr) {
            Ok(a) => a,
            Err(e) => {
                self.w.skip(notes, c, D, &e);
                return None;
            }
        };
        let mut params: Vec<(&'static str, Value)> = Vec::new();
        for a in &c.args[1..] {
            let (k, v) = a.text.split_once('=').unwrap_or((a.text.as_str(), ""));
            let int = || v.parse::<i64>().ok().filter(|n| *n >= 0);
            let time = || nginx_time(v);
            let param = match k {
                "weight" => int().filter(|n| *n >= 1).map(|n| ("weight", Value::Int(n))),
                "max_fails" => int().map(|n| ("max_fails", Value::Int(n))),
                "max_conns" => int().map(|n| ("max_conns", Value::Int(n))),
                "fail_timeout" => time()
                    .filter(|t| !t.is_zero())
                    .map(|t| ("fail_timeout", Value::Dur(t))),
                "slow_start" => time().map(|t| ("slow_start", Value::Dur(t))),
                "backup" if v.is_empty() => Some(("backup", Value::Bool(true))),
                "down" if v.is_empty() => Some(("down", Value::Bool(true))),
                _ => {
                    self.w.warn(
                        &a.pos,
                        format!("server parameter `{}` is not supported, ignored", a.text),
                    );
                    notes.push(format!(
                        "not imported: server {addr} parameter `{}` ({})",
                        a.text,
                        a.pos.short()
                    ));
                    continue;
                }
            };
            match param {
                Some(p) => params.push(p),
                None => {
                    self.w.warn(
                        &a.pos,
                        format!("invalid server parameter `{}`, ignored", a.text),
                    );
                    notes.push(format!(
                        "not imported: server {addr} parameter `{}` ({})",
                        a.text,
                        a.pos.short()
                    ));
                }
            }
        }
        Some(Server { address, params })
    }

    fn server(&mut self, d: &Directive, inherited: &Proxy) {
        let mut s = ServerBlock {
            pos: d.pos.clone(),
            listens: Vec::new(),
            names: Vec::new(),
            locs: Vec::new(),
            notes: Vec::new(),
            tls: self.tls.inherit(),
        };
        let mut proxy = inherited.clone();
        for c in d.children() {
            self.proxy_setting(c, &mut proxy);
        }
        let mut saw_listen = false;
        for c in d.children() {
            if is_proxy_setting(&c.name) {
                continue;
            }
            match c.name.as_str() {
                "listen" => {
                    saw_listen = true;
                    self.listen(c, &mut s);
                }
                "server_name" => self.server_names(c, &mut s),
                "location" => self.location(c, &proxy, &mut s),
                n if n.starts_with("ssl") => {
                    s.tls.apply(c, self.w, &mut s.notes);
                }
                _ => {
                    let mut notes = std::mem::take(&mut s.notes);
                    self.common(c, &mut notes);
                    s.notes = notes;
                }
            }
        }
        if !saw_listen {
            // nginx's default when running as root.
            s.listens.push(Listen {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80),
                default: false,
                backlog: None,
                proxy_protocol: false,
                ssl: false,
            });
            s.notes
                .push("no `listen`: nginx's default *:80 is used".into());
        }
        if s.tls.ssl_on {
            for l in &mut s.listens {
                l.ssl = true;
            }
        }
        self.servers.push(s);
    }

    fn listen(&mut self, c: &Directive, s: &mut ServerBlock) {
        let Some(a) = c.arg(0) else {
            self.w.skip(&mut s.notes, c, D, "`listen` needs an address");
            return;
        };
        let addr = match listen_address(a) {
            Ok(x) => x,
            Err(e) => {
                self.w.skip(&mut s.notes, c, D, &e);
                return;
            }
        };
        let mut l = Listen {
            addr,
            default: false,
            backlog: None,
            proxy_protocol: false,
            ssl: false,
        };
        for p in &c.args[1..] {
            let (k, v) = p.text.split_once('=').unwrap_or((p.text.as_str(), ""));
            match k {
                "default_server" | "default" => l.default = true,
                "ssl" => l.ssl = true,
                "proxy_protocol" => l.proxy_protocol = true,
                "backlog" => match v.parse::<u64>() {
                    Ok(n) if n >= 1 => l.backlog = Some(n),
                    _ => self.w.warn(&p.pos, "invalid backlog, ignored"),
                },
                "reuseport" => {}
                "http2" | "quic" | "spdy" => {
                    self.w
                        .warn(&p.pos, format!("`{k}`: ringlb speaks HTTP/1.1 only"));
                    s.notes.push(format!(
                        "not imported: listen option `{k}` ({})",
                        p.pos.short()
                    ));
                }
                _ => {
                    self.w.warn(
                        &p.pos,
                        format!("listen option `{}` is not supported, ignored", p.text),
                    );
                    s.notes.push(format!(
                        "not imported: listen option `{}` ({})",
                        p.text,
                        p.pos.short()
                    ));
                }
            }
        }
        s.listens.push(l);
    }

    fn server_names(&mut self, c: &Directive, s: &mut ServerBlock) {
        for a in &c.args {
            let n = a.text.to_ascii_lowercase();
            let bad = |w: &mut Warnings, s: &mut ServerBlock, why: &str| {
                w.warn(&a.pos, format!("server_name `{}`: {why}", a.text));
                s.notes.push(format!(
                    "not imported: server_name {} ({}): {why}",
                    a.text,
                    a.pos.short()
                ));
            };
            if n.is_empty() || n == "_" {
                continue; // the catch-all non-name
            } else if n.starts_with('~') {
                bad(
                    self.w,
                    s,
                    "regular expression server names are not supported",
                );
            } else if n.contains('$') {
                bad(self.w, s, "variables are not supported");
            } else if let Some(rest) = n.strip_prefix('.') {
                // `.example.com` = example.com and *.example.com
                if is_host(rest) {
                    s.names.push(rest.to_string());
                    s.names.push(format!("*.{rest}"));
                } else {
                    bad(self.w, s, "not a host name");
                }
            } else if n.ends_with(".*") {
                bad(
                    self.w,
                    s,
                    "trailing wildcards are not supported (only `*.example.com`)",
                );
            } else if is_host(n.strip_prefix("*.").unwrap_or(&n)) {
                s.names.push(n);
            } else {
                bad(self.w, s, "not a host name");
            }
        }
    }

    fn location(&mut self, d: &Directive, inherited: &Proxy, s: &mut ServerBlock) {
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let prefix = match args.as_slice() {
            [p] if p.starts_with('/') => Some(p.to_string()),
            ["^~", p] if p.starts_with('/') => {
                covered(
                    &mut s.notes,
                    d,
                    D,
                    "`^~` only orders prefixes before regexes; ringlb has no regex locations",
                );
                Some(p.to_string())
            }
            _ => None,
        };
        let Some(prefix) = prefix else {
            let why = match args.first() {
                Some(&"~") | Some(&"~*") => {
                    "regular expression locations are not supported (only path prefixes)"
                }
                Some(&"=") => "exact-match locations are not supported (only path prefixes)",
                Some(p) if p.starts_with('@') => "named locations are not supported",
                _ => "unsupported location form (only `location /prefix`)",
            };
            self.w.skip(&mut s.notes, d, D, why);
            return;
        };
        let mut proxy = inherited.clone();
        for c in d.children() {
            self.proxy_setting(c, &mut proxy);
        }
        let pass = d.children().iter().find(|c| c.name == "proxy_pass");
        let has_nested = d.children().iter().any(|c| c.name == "location");
        if pass.is_none() && !has_nested {
            self.w.skip(
                &mut s.notes,
                d,
                D,
                "no proxy_pass in this location: ringlb only proxies (no files, returns or rewrites)",
            );
            return;
        }
        for c in d.children() {
            if is_proxy_setting(&c.name) {
                continue;
            }
            match c.name.as_str() {
                "proxy_pass" => self.proxy_pass(c, &prefix, &proxy, s),
                "location" => self.location(c, &proxy, s),
                _ => {
                    let mut notes = std::mem::take(&mut s.notes);
                    self.common(c, &mut notes);
                    s.notes = notes;
                }
            }
        }
    }

    fn proxy_pass(&mut self, c: &Directive, prefix: &str, proxy: &Proxy, s: &mut ServerBlock) {
        let url = c.arg(0).unwrap_or("");
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => {
                self.w.skip(
                    &mut s.notes,
                    c,
                    D,
                    "expected `proxy_pass http://UPSTREAM` or `https://`; this location is left out",
                );
                return;
            }
        };
        if rest.contains('$') {
            self.w.skip(
                &mut s.notes,
                c,
                D,
                "variables in proxy_pass are not supported; this location is left out",
            );
            return;
        }
        let (host, uri) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if !uri.is_empty() && uri != prefix {
            self.w.warn(
                &c.pos,
                format!(
                    "proxy_pass URI part `{uri}` is not supported: ringlb passes the request path unchanged (nginx would replace `{prefix}` with `{uri}`)"
                ),
            );
            s.notes.push(format!(
                "not imported: URI part `{uri}` of {} ({}): requests keep their original path",
                c.render(D),
                c.pos.short()
            ));
        }
        let index = match self
            .upstreams
            .iter()
            .position(|u| u.name == host && u.generated_for.is_none())
        {
            Some(i) => i,
            None => match server_address_on(host, if tls { 443 } else { 80 }) {
                Ok(address) => self.generated_upstream(host, address, &c.pos),
                Err(e) => {
                    self.w.skip(&mut s.notes, c, D, &e);
                    return;
                }
            },
        };
        let u = &mut self.upstreams[index];
        match &u.tls {
            None => u.tls = Some((tls, c.pos.clone())),
            Some((t, first)) if *t != tls => {
                let line = first.short();
                self.w.warn(
                    &c.pos,
                    format!(
                        "`{}` is proxied to over {} here and over {} at {line}; ringlb has one setting per upstream, the first is kept",
                        u.name,
                        if tls { "https" } else { "http" },
                        if *t { "https" } else { "http" },
                    ),
                );
            }
            Some(_) => {}
        }
        match &u.proxy {
            None => u.proxy = Some((proxy.clone(), c.pos.clone())),
            Some((p, first)) if !p.same_settings(proxy) => {
                let line = first.short();
                self.w.warn(
                    &c.pos,
                    format!(
                        "proxy timeouts/retries here differ from those of the first location proxying to `{}` ({line}); ringlb sets them per upstream, the first are kept",
                        u.name
                    ),
                );
            }
            Some(_) => {}
        }
        s.locs.push(Loc {
            prefix: prefix.to_string(),
            upstream: index,
            pos: c.pos.clone(),
        });
    }

    fn generated_upstream(&mut self, host: &str, address: String, pos: &Pos) -> usize {
        if let Some(i) = self
            .upstreams
            .iter()
            .position(|u| u.generated_for.as_deref() == Some(host))
        {
            return i;
        }
        let mut name: String = address
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        name = format!("direct_{}", name.trim_matches('_'));
        while self.upstreams.iter().any(|u| u.name == name) {
            name.push('_');
        }
        self.upstreams.push(Upstream {
            name,
            pos: pos.clone(),
            balance: None,
            keepalive: None,
            servers: vec![Server {
                address,
                params: Vec::new(),
            }],
            notes: Vec::new(),
            proxy: None,
            used: false,
            generated_for: Some(host.to_string()),
            tls: None,
        });
        self.upstreams.len() - 1
    }

    fn finish(mut self) -> Out {
        let mut sections = Vec::new();
        if !self.notes.is_empty() {
            sections.push(Section {
                before: std::mem::take(&mut self.notes),
                ..Section::default()
            });
        }
        if !self.http.entries.is_empty() {
            sections.push(std::mem::replace(&mut self.http, Section::new("")));
        }
        if !self.log.entries.is_empty() {
            sections.push(std::mem::replace(&mut self.log, Section::new("")));
        }
        sections.extend(self.listeners());
        let mut names = Vec::new();
        for u in &self.upstreams {
            let (secs, ok) = upstream_sections(u, self.w);
            if ok {
                names.push(u.name.clone());
            }
            sections.extend(secs);
        }
        Out {
            sections,
            upstream_names: names,
            workers_note: self.workers_note.take(),
        }
    }

    /// Groups server blocks by listen address into listeners and routes.
    fn listeners(&mut self) -> Vec<Section> {
        let mut order: Vec<SocketAddr> = Vec::new();
        let mut by_addr: HashMap<SocketAddr, Vec<(usize, bool, Option<u64>)>> = HashMap::new();
        for (i, s) in self.servers.iter().enumerate() {
            for l in &s.listens {
                let e = by_addr.entry(l.addr).or_default();
                if e.is_empty() {
                    order.push(l.addr);
                }
                if !e.iter().any(|(j, _, _)| *j == i) {
                    e.push((i, l.default, l.backlog));
                }
            }
        }
        let mut notes_placed = vec![false; self.servers.len()];
        let mut out = Vec::new();
        for addr in order {
            let members = &by_addr[&addr];
            let defaults: Vec<usize> = members.iter().filter(|m| m.1).map(|m| m.0).collect();
            if defaults.len() > 1 {
                let p = &self.servers[defaults[1]].pos;
                self.w.warn(p, format!("a second default_server for {addr} (nginx rejects this); the first is used"));
            }
            let default = defaults.first().copied().unwrap_or(members[0].0);
            let mut l = Section::new("[[listener]]");
            let describe = |s: &ServerBlock| {
                let names = if s.names.is_empty() {
                    "(no server_name)".to_string()
                } else {
                    s.names.join(" ")
                };
                format!("server {{ {names} }} ({})", s.pos.short())
            };
            l.before
                .push(format!("nginx: {}", describe(&self.servers[default])));
            for m in members.iter().filter(|m| m.0 != default) {
                l.before.push(format!(
                    "  and {}: host routes below",
                    describe(&self.servers[m.0])
                ));
            }
            l.set("listen", Value::Str(addr.to_string()), None);
            let mut routes: Vec<(Option<String>, Option<String>, usize, String)> = Vec::new();
            let mut listener_upstream = None;
            let mut seen: HashMap<(Option<String>, Option<String>), String> = HashMap::new();
            let mut push = |w: &mut Warnings,
                            host: Option<String>,
                            prefix: Option<String>,
                            up: usize,
                            pos: &Pos| {
                let key = (host.clone(), prefix.clone());
                if let Some(first) = seen.get(&key) {
                    w.warn(
                        pos,
                        format!(
                            "route host={} path={} is already defined at {first}; this one is ignored (nginx: conflicting server name / duplicate location)",
                            host.as_deref().unwrap_or("*"),
                            prefix.as_deref().unwrap_or("/")
                        ),
                    );
                    return false;
                }
                seen.insert(key, pos.short());
                routes.push((host, prefix, up, pos.short()));
                true
            };
            let d = &self.servers[default];
            for loc in &d.locs {
                if loc.prefix == "/" {
                    if listener_upstream.is_none() {
                        listener_upstream = Some((loc.upstream, loc.pos.short()));
                    }
                } else {
                    push(
                        self.w,
                        None,
                        Some(loc.prefix.clone()),
                        loc.upstream,
                        &loc.pos,
                    );
                }
            }
            for m in members.iter().filter(|m| m.0 != default) {
                let s = &self.servers[m.0];
                if s.names.is_empty() && !s.locs.is_empty() {
                    self.w.warn(
                        &s.pos,
                        format!("server block has no server_name and is not the default server for {addr}; nginx never selects it, so it is left out"),
                    );
                    continue;
                }
                for name in &s.names {
                    for loc in &s.locs {
                        let prefix = (loc.prefix != "/").then(|| loc.prefix.clone());
                        push(self.w, Some(name.clone()), prefix, loc.upstream, &loc.pos);
                    }
                }
            }
            if let Some((up, from)) = &listener_upstream {
                l.set(
                    "upstream",
                    Value::Str(self.upstreams[*up].name.clone()),
                    Some(format!("location / ({from})")),
                );
            }
            if let Some(b) = members.iter().find_map(|m| m.2) {
                l.set(
                    "backlog",
                    Value::Int(b.min(u64::from(u32::MAX)) as i64),
                    None,
                );
            }
            let pp = |s: &ServerBlock| s.listens.iter().any(|x| x.addr == addr && x.proxy_protocol);
            if members.iter().any(|m| pp(&self.servers[m.0])) {
                l.set(
                    "proxy_protocol",
                    Value::Bool(true),
                    Some("listen … proxy_protocol".into()),
                );
            }
            for m in members {
                if !notes_placed[m.0] {
                    notes_placed[m.0] = true;
                    l.after.append(&mut self.servers[m.0].notes);
                }
            }
            let ssl = members.iter().any(|m| {
                self.servers[m.0]
                    .listens
                    .iter()
                    .any(|x| x.addr == addr && x.ssl)
            });
            let mut tls_sections = Vec::new();
            if ssl {
                let others: Vec<(&Tls, &Pos)> = members
                    .iter()
                    .filter(|m| m.0 != default)
                    .map(|m| (&self.servers[m.0].tls, &self.servers[m.0].pos))
                    .collect();
                let d = &self.servers[default];
                match nginx_tls::listener_sections((&d.tls, &d.pos), &others, self.w) {
                    Some(v) => tls_sections = v,
                    None => {
                        l.commented = true;
                        l.before.push(
                            "not imported: HTTPS without ssl_certificate / ssl_certificate_key"
                                .into(),
                        );
                        out.push(l);
                        continue;
                    }
                }
            }
            let usable = listener_upstream.is_some() || !routes.is_empty();
            if !usable {
                self.w.warn(
                    &self.servers[default].pos,
                    format!("no location proxies anything for {addr}; the listener is written as a comment"),
                );
                l.commented = true;
                l.before
                    .push("not imported: no location with proxy_pass for this address".into());
                out.push(l);
                continue;
            }
            if let Some((up, _)) = listener_upstream {
                self.upstreams[up].used = true;
            }
            out.push(l);
            out.append(&mut tls_sections);
            for (host, prefix, up, from) in routes {
                self.upstreams[up].used = true;
                let mut r = Section::new("[[listener.route]]");
                if let Some(h) = host {
                    r.set("host", Value::Str(h), None);
                }
                if let Some(p) = prefix {
                    let note = (!p.ends_with('/')).then(|| {
                        format!("{from}; ringlb matches whole path segments: {p} matches {p}/x, not {p}x")
                    });
                    r.set(
                        "path_prefix",
                        Value::Str(p),
                        note.or_else(|| Some(from.clone())),
                    );
                } else {
                    r.before.push(format!("location / ({from})"));
                }
                r.set(
                    "upstream",
                    Value::Str(self.upstreams[up].name.clone()),
                    None,
                );
                out.push(r);
            }
        }
        // Notes of server blocks that gave no listener at all.
        for (i, s) in self.servers.iter_mut().enumerate() {
            if !notes_placed[i] && !s.notes.is_empty() {
                let mut sec = Section::default();
                sec.before.push(format!(
                    "nginx server block ({}) without an imported listen address:",
                    s.pos.short()
                ));
                sec.before.append(&mut s.notes);
                out.push(sec);
            }
        }
        out
    }
}

fn set_balance(
    w: &mut Warnings,
    u: &mut Upstream,
    c: &Directive,
    b: (&'static str, Option<String>, String),
) {
    if let Some((prev, _, _)) = &u.balance {
        w.warn(
            &c.pos,
            format!(
                "a second balancing method in upstream `{}` (was {prev}); the last one is used",
                u.name
            ),
        );
    }
    u.balance = Some(b);
}

fn is_proxy_setting(name: &str) -> bool {
    matches!(
        name,
        "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_send_timeout"
            | "proxy_next_upstream_tries"
            | "proxy_next_upstream"
            | "proxy_ssl_verify"
            | "proxy_ssl_trusted_certificate"
            | "proxy_ssl_name"
            | "proxy_ssl_server_name"
            | "proxy_ssl_session_reuse"
    )
}

/// nginx hash keys ringlb can hash on.
fn hash_key(k: &str) -> Option<String> {
    match k {
        "$remote_addr" | "$binary_remote_addr" => Some("client_ip".into()),
        "$request_uri" | "$uri" => Some("uri".into()),
        _ => {
            let h = k.strip_prefix("$http_")?;
            (!h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .then(|| format!("header:{}", h.replace('_', "-")))
        }
    }
}

/// An upstream server address with its port (`:80` when none is written).
fn server_address(a: &str) -> Result<String, String> {
    server_address_on(a, 80)
}

/// [`server_address`] with `default_port` for an address without one
/// (443 for `proxy_pass https://HOST`).
fn server_address_on(a: &str, default_port: u16) -> Result<String, String> {
    if a.starts_with("unix:") {
        return Err("unix-domain socket upstreams are not supported".into());
    }
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Ok(sa.to_string());
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    if let Some(v6) = a.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, default_port).to_string())
            .map_err(|_| format!("invalid address `{a}`"));
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port in `{a}`"))?,
        ),
        None => (a, default_port),
    };
    if !is_host(host) {
        return Err(format!("invalid address `{a}`"));
    }
    Ok(format!("{host}:{port}"))
}

/// nginx `listen` address forms → a socket address.
fn listen_address(a: &str) -> Result<SocketAddr, String> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if a.starts_with("unix:") {
        return Err("unix-domain listen sockets are not supported".into());
    }
    if let Ok(port) = a.parse::<u16>() {
        return Ok(SocketAddr::new(any, port));
    }
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 80));
    }
    if let Some(v6) = a.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Ok(ip) = v6.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, 80));
        }
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in `{a}`"))?,
        ),
        None => (a, 80),
    };
    match host {
        "*" => Ok(SocketAddr::new(any, port)),
        "localhost" => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => Err(format!(
            "listen address `{a}`: ringlb listens on IP addresses only (no name resolution for listeners)"
        )),
    }
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `[upstream.NAME]` section and its servers; the flag says whether it
/// is emitted live (used by a listener or route) rather than as a comment.
fn upstream_sections(u: &Upstream, w: &mut Warnings) -> (Vec<Section>, bool) {
    let mut head = Section::new(format!("[upstream.{}]", key(&u.name)));
    match &u.generated_for {
        Some(host) => head.before.push(format!(
            "generated for `proxy_pass {}://{host}` ({})",
            if matches!(u.tls, Some((true, _))) {
                "https"
            } else {
                "http"
            },
            u.pos.short()
        )),
        None => head
            .before
            .push(format!("nginx: upstream {} ({})", u.name, u.pos.short())),
    }
    let mut ok = u.used;
    if !u.used {
        w.warn(
            &u.pos,
            format!(
                "upstream `{}` is not used by any imported proxy_pass; it is written as a comment",
                u.name
            ),
        );
        head.before
            .push("not imported: no imported location proxies to this upstream".into());
    }
    if u.servers.is_empty() {
        if u.used {
            w.warn(
                &u.pos,
                format!("upstream `{}` has no server ringlb can use", u.name),
            );
        }
        head.before.push("not imported: no usable server".into());
        ok = false;
    }
    if let Some((balance, hash, note)) = &u.balance {
        head.set("balance", Value::Str((*balance).into()), Some(note.clone()));
        if let Some(h) = hash {
            head.set("hash_key", Value::Str(h.clone()), None);
        }
    }
    match &u.keepalive {
        Some((n, src)) => head.set("keepalive", Value::Int(*n as i64), Some(src.clone())),
        None => head.after.push(
            "nginx had no `keepalive` here (a new upstream connection per request); ringlb keeps up to 64 idle per shard".into(),
        ),
    }
    let proxy = u.proxy.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
    for (slot, key) in [
        (proxy.connect, "connect_timeout"),
        (proxy.read, "read_timeout"),
        (proxy.send, "send_timeout"),
    ] {
        if let Some(v) = slot {
            head.set(key, Value::Dur(v), proxy.origin(key));
        }
    }
    if proxy.connect.is_none() {
        head.after
            .push("connect_timeout: ringlb's default 1s is kept (nginx's default was 60s)".into());
    }
    if let Some((true, pos)) = &u.tls {
        head.set(
            "tls",
            Value::Bool(true),
            Some(format!("proxy_pass https:// ({})", pos.short())),
        );
        let verify = proxy.ssl_verify.unwrap_or(false);
        head.set(
            "tls_verify",
            Value::Bool(verify),
            Some(proxy.origin("tls_verify").unwrap_or_else(|| {
                "nginx's default proxy_ssl_verify off; ringlb's is true: turn it on once the CA is set".into()
            })),
        );
        if let Some(ca) = &proxy.ssl_ca {
            head.set("tls_ca", Value::Str(ca.clone()), proxy.origin("tls_ca"));
        }
        if let Some(name) = &proxy.ssl_name {
            head.set(
                "tls_server_name",
                Value::Str(name.clone()),
                proxy.origin("tls_server_name"),
            );
        }
    }
    let n = u.servers.len() as u32;
    let (retries, why) = if proxy.next_upstream_off {
        (0, proxy.origin("retries").unwrap_or_default())
    } else {
        match proxy.tries {
            Some(0) | None => (
                n.saturating_sub(1),
                format!(
                    "{}: nginx tries every server",
                    proxy
                        .origin("retries")
                        .unwrap_or_else(|| "nginx default proxy_next_upstream_tries 0".into())
                ),
            ),
            Some(t) => (t - 1, proxy.origin("retries").unwrap_or_default()),
        }
    };
    head.set("retries", Value::Int(i64::from(retries)), Some(why));
    head.after.extend(u.notes.iter().cloned());
    head.commented = !ok;
    let mut out = vec![head];
    for s in &u.servers {
        let mut sec = Section::new(format!("[[upstream.{}.server]]", key(&u.name)));
        sec.set("address", Value::Str(s.address.clone()), None);
        for (k, v) in &s.params {
            sec.set(k, v.clone(), None);
        }
        sec.commented = !ok;
        out.push(sec);
    }
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listen_address("80").unwrap(), sa("0.0.0.0:80"));
        assert_eq!(listen_address("*:8080").unwrap(), sa("0.0.0.0:8080"));
        assert_eq!(listen_address("127.0.0.1").unwrap(), sa("127.0.0.1:80"));
        assert_eq!(listen_address("10.0.0.1:81").unwrap(), sa("10.0.0.1:81"));
        assert_eq!(listen_address("[::]:80").unwrap(), sa("[::]:80"));
        assert_eq!(listen_address("[::1]").unwrap(), sa("[::1]:80"));
        assert_eq!(listen_address("localhost:81").unwrap(), sa("127.0.0.1:81"));
        assert!(listen_address("example.com:80").is_err());
        assert!(listen_address("unix:/run/x.sock").is_err());
    }

    #[test]
    fn server_address_forms() {
        assert_eq!(server_address("10.0.0.1").unwrap(), "10.0.0.1:80");
        assert_eq!(server_address("10.0.0.1:8080").unwrap(), "10.0.0.1:8080");
        assert_eq!(server_address("[::1]").unwrap(), "[::1]:80");
        assert_eq!(server_address("app.internal").unwrap(), "app.internal:80");
        assert_eq!(server_address("app:9000").unwrap(), "app:9000");
        assert!(server_address("unix:/tmp/s").is_err());
        assert!(server_address("a:0").is_err());
    }

    #[test]
    fn hash_keys() {
        assert_eq!(hash_key("$remote_addr").as_deref(), Some("client_ip"));
        assert_eq!(hash_key("$request_uri").as_deref(), Some("uri"));
        assert_eq!(
            hash_key("$http_x_user_id").as_deref(),
            Some("header:x-user-id")
        );
        assert_eq!(hash_key("$cookie_sid"), None);
    }
}
