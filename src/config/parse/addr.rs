//! Addresses as written in the config: listen sockets, upstream servers,
//! virtual IPs with prefix, and route host names.
//!
//! Listen addresses must be literal `IP:PORT`: binding to a name would make the
//! listening socket depend on DNS at boot. Upstream servers may be `HOST:PORT`;
//! like nginx, names are resolved once when the config is loaded (and again
//! on reload), and a name with several addresses becomes several servers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// `IP:PORT`, IPv6 in brackets (`[::1]:80`). Port 0 (ephemeral) is allowed.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "invalid listen address {s:?}: expected IP:PORT, like \"0.0.0.0:80\" or \"[::]:80\""
        )
    })
}

/// `IP:PORT` or `HOST:PORT`, resolved now. Order of the resolver is kept,
/// duplicates dropped.
pub(crate) fn resolve_server(s: &str) -> Result<Vec<SocketAddr>, String> {
    let bad = |why: &str| format!("invalid server address {s:?}: {why}");
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad("port must not be 0"));
        }
        return Ok(vec![addr]);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(bad("expected IP:PORT or HOST:PORT (the port is required)"));
    };
    if host.starts_with('[') || host.contains(':') {
        return Err(bad(
            "expected an IPv6 address in brackets, like \"[::1]:80\"",
        ));
    }
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
        Ok(p) => p,
    };
    if !is_host_name(host) {
        return Err(bad("expected IP:PORT or HOST:PORT"));
    }
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server {host:?}: {e}"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(format!("cannot resolve server {host:?}: no addresses"));
    }
    Ok(addrs)
}

/// `ADDR/PREFIX`, or a bare address meaning /32 (IPv4) or /128 (IPv6).
pub(crate) fn parse_vip(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid virtual IP address {s:?}: expected ADDR or ADDR/PREFIX"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => {
                return Err(format!(
                    "invalid prefix length in {s:?}: must be 0 to {max}"
                ))
            }
        },
    };
    Ok((ip, prefix))
}

pub(crate) fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("invalid IP address {s:?}"))
}

/// A route's host pattern: lower-cased, port stripped. `*.example.com`
/// matches any sub-domain; an IPv6 literal keeps its brackets (`[::1]`),
/// the form it has in a `Host` header.
pub(crate) fn normalize_route_host(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid route host {s:?}: {why}");
    let lower = s.trim().to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(bad("missing `]`"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address"));
        }
        let port_ok = |p: &str| p.parse::<u16>().is_ok();
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return Err(bad("unexpected text after `]`"));
        }
        return Ok(format!("[{ip}]"));
    }
    let host = match lower.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        Some(_) => return Err(bad("invalid port")),
        None => &lower,
    };
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty() || !is_host_name(name) {
        return Err(bad(
            "expected a host name like \"api.example.com\" or \"*.example.com\"",
        ));
    }
    Ok(host.to_string())
}

/// Letters, digits, `-`, `_` and dots between non-empty labels.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_needs_a_literal_ip_and_port() {
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:8080").unwrap().port(), 8080);
        assert!(parse_listen("localhost:80").is_err());
        assert!(parse_listen("0.0.0.0").is_err());
        assert!(parse_listen("::1:80").is_err());
    }

    #[test]
    fn servers_accept_ips_and_names() {
        assert_eq!(
            resolve_server("198.18.0.1:80").unwrap(),
            ["198.18.0.1:80".parse().unwrap()]
        );
        assert_eq!(resolve_server("[::1]:81").unwrap()[0].port(), 81);
        let local = resolve_server("localhost:8080").unwrap();
        assert!(!local.is_empty());
        assert!(local
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
        assert!(resolve_server("198.18.0.1").unwrap_err().contains("port"));
        assert!(resolve_server("198.18.0.1:0").unwrap_err().contains("port"));
        assert!(resolve_server("host:http").unwrap_err().contains("port"));
        assert!(resolve_server("::1:80").unwrap_err().contains("brackets"));
        assert!(resolve_server("bad host:80").is_err());
        assert!(resolve_server("no-such-host.invalid:80")
            .unwrap_err()
            .contains("cannot resolve"));
    }

    #[test]
    fn vips_default_to_host_prefix() {
        assert_eq!(
            parse_vip("198.18.0.100/24").unwrap(),
            ("198.18.0.100".parse().unwrap(), 24)
        );
        assert_eq!(parse_vip("198.18.0.100").unwrap().1, 32);
        assert_eq!(parse_vip("fd00::1").unwrap().1, 128);
        assert!(parse_vip("198.18.0.100/33").is_err());
        assert!(parse_vip("198.18.0/24").is_err());
    }

    #[test]
    fn route_hosts_are_normalized() {
        assert_eq!(
            normalize_route_host("API.Example.com:8080").unwrap(),
            "api.example.com"
        );
        assert_eq!(
            normalize_route_host("*.example.com").unwrap(),
            "*.example.com"
        );
        assert_eq!(normalize_route_host("[::1]:80").unwrap(), "[::1]");
        assert!(normalize_route_host("a.*.com").is_err());
        assert!(normalize_route_host("*").is_err());
        assert!(normalize_route_host("exa mple.com").is_err());
        assert!(normalize_route_host("").is_err());
    }
}
