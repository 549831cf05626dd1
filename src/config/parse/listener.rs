//! `[[listener]]` sections and their `[[listener.route]]`s.
//!
//! A listener sends a request to the first route whose host and path prefix
//! match, else to its default `upstream`. Route hosts are normalized here
//! (lower-case, no port) so the data plane compares bytes, nothing more.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::super::defaults as def;
use super::super::{ListenerConfig, RouteConfig};
use super::addr::{normalize_route_host, parse_listen};
use super::fields::{Table, U32};
use super::size::table_size;
use super::span::Diags;
use super::upstream::Upstreams;

const LISTENER_KEYS: &[&str] = &[
    "listen",
    "upstream",
    "backlog",
    "client_max_body_size",
    "route",
    "tls",
    "proxy_protocol",
];
const ROUTE_KEYS: &[&str] = &["host", "path_prefix", "upstream", "client_max_body_size"];

/// `max_body`: `[http] client_max_body_size`, inherited by listeners (and
/// through them by routes) that set none.
pub(crate) fn read_all(
    root: &Table,
    d: &mut Diags,
    ups: &mut Upstreams,
    max_body: u64,
) -> Vec<ListenerConfig> {
    let tables = match root.field("listener") {
        None => {
            d.error(
                0,
                "no listener defined; add a [[listener]] with `listen` and `upstream`",
            );
            Vec::new()
        }
        Some(f) => {
            let tables = f.tables(d, "[[listener]]");
            if tables.is_none() {
                ups.refs_unreadable();
            }
            if tables.as_ref().is_some_and(Vec::is_empty) {
                d.error(f.at, "no listener defined in `listener`");
            }
            tables.unwrap_or_default()
        }
    };
    // Where each address was first used, for the duplicate message.
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut out = Vec::new();
    for t in &tables {
        t.check_keys(d, LISTENER_KEYS);
        let listen = t.required(d, "listen").and_then(|f| {
            let addr = parse_listen(f.str(d)?).map_err(|e| d.error(f.at, e)).ok()?;
            // Port 0 (an ephemeral port per bind) can never collide.
            if addr.port() != 0 {
                if let Some(&first) = seen.get(&addr) {
                    let line = d.line(first);
                    d.error(
                        f.at,
                        format!("duplicate listen address {addr} (already used on line {line})"),
                    );
                } else {
                    seen.insert(addr, f.at);
                }
            }
            Some(addr)
        });
        let upstream = t.field("upstream").and_then(|f| ups.resolve(d, &f));
        let backlog = t.int(d, "backlog", 1..=U32).unwrap_or(def::BACKLOG);
        let max_body = table_size(t, d, "client_max_body_size").unwrap_or(max_body);
        let tls = t
            .table(d, "tls", "[listener.tls]")
            .and_then(|tt| super::tls::read(&tt, d));
        let route_tables = t.tables(d, "route", "[[listener.route]]");
        if route_tables.is_none() && t.field("route").is_some() {
            ups.refs_unreadable();
        }
        let route_tables = route_tables.unwrap_or_default();
        let routes = read_routes(&route_tables, d, ups, max_body);
        if t.field("upstream").is_none() && t.field("route").is_none() {
            d.error(
                t.at,
                "listener needs a default `upstream` or at least one [[listener.route]]",
            );
        }
        if let Some(listen) = listen {
            out.push(ListenerConfig {
                listen,
                upstream,
                routes,
                backlog,
                client_max_body_size: max_body,
                tls,
                proxy_protocol: t.bool(d, "proxy_protocol").unwrap_or(false),
            });
        }
    }
    out
}

fn read_routes(
    tables: &[Table],
    d: &mut Diags,
    ups: &mut Upstreams,
    max_body: u64,
) -> Vec<RouteConfig> {
    let mut seen: HashMap<(Option<String>, Option<String>), usize> = HashMap::new();
    let mut out = Vec::new();
    for t in tables {
        t.check_keys(d, ROUTE_KEYS);
        let host_field = t.field("host");
        let host = host_field.and_then(|f| {
            normalize_route_host(f.str(d)?)
                .map_err(|e| d.error(f.at, e))
                .ok()
        });
        let prefix_field = t.field("path_prefix");
        let path_prefix = prefix_field.and_then(|f| {
            let p = f.str(d)?;
            if p.starts_with('/') && !p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                Some(p.to_string())
            } else {
                d.error(
                    f.at,
                    format!("`path_prefix` must start with '/' and contain no spaces, found {p:?}"),
                );
                None
            }
        });
        if host_field.is_none() && prefix_field.is_none() {
            d.error(
                t.at,
                "a route needs `host`, `path_prefix` or both (use the listener's `upstream` for a catch-all)",
            );
        }
        let upstream = t.required(d, "upstream").and_then(|f| ups.resolve(d, &f));
        let max_body = table_size(t, d, "client_max_body_size").unwrap_or(max_body);
        let key = (host.clone(), path_prefix.clone());
        if host.is_some() || path_prefix.is_some() {
            if let Some(&first) = seen.get(&key) {
                let line = d.line(first);
                d.error(
                    t.at,
                    format!(
                        "duplicate route: same host and path_prefix as the route on line {line}"
                    ),
                );
            } else {
                seen.insert(key, t.at);
            }
        }
        if let Some(upstream) = upstream {
            out.push(RouteConfig {
                host,
                path_prefix,
                upstream,
                client_max_body_size: max_body,
            });
        }
    }
    out
}
