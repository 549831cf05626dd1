//! Host and path routing, compiled once per snapshot.
//!
//! A listener's `[[listener.route]]` entries become a [`Router`]: exact hosts
//! and `*.suffix` wildcards (case-insensitive, port and a trailing dot
//! ignored) and path prefixes matched on segment boundaries, longest prefix
//! first. Matching walks pre-sorted slices and compares bytes; it allocates
//! nothing for a canonical path, so it can run on every request. Pure code:
//! no I/O.
//!
//! A path is matched in its canonical form
//! (`proto::http1::target::canonical_path`: percent escapes decoded, empty
//! and dot segments resolved, as nginx matches `location`s and as
//! application servers read it), while the target is forwarded as written:
//! otherwise `/%61dmin`, `//admin` or `/x/../admin` would reach the
//! backend as `/admin` without going through the `/admin` route.

use crate::config::RouteConfig;
use crate::proto::http1::target::canonical_path;

#[derive(Debug, Clone)]
struct Route {
    host: HostMatch,
    path_prefix: Option<Box<[u8]>>,
    upstream: usize,
    max_body: u64,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Any,
    Exact(Box<[u8]>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<[u8]>),
}

/// What [`Router::find`] matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub upstream: Option<usize>,
    /// The matching route's body limit; `None` for the listener's default.
    pub max_body: Option<u64>,
}

/// The compiled routes of one listener.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Sorted by specificity: exact host before wildcard before any; within
    /// each, longer path prefix first. The first match wins.
    routes: Vec<Route>,
    default: Option<usize>,
}

impl Router {
    pub fn build(routes: &[RouteConfig], default: Option<usize>) -> Router {
        let mut compiled: Vec<Route> = routes
            .iter()
            .map(|r| Route {
                host: match r.host.as_deref() {
                    None => HostMatch::Any,
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => {
                            HostMatch::Suffix(suffix.to_ascii_lowercase().into_bytes().into())
                        }
                        None => HostMatch::Exact(h.to_ascii_lowercase().into_bytes().into()),
                    },
                },
                path_prefix: r.path_prefix.as_ref().map(|p| p.as_bytes().into()),
                upstream: r.upstream,
                max_body: r.client_max_body_size,
            })
            .collect();
        compiled.sort_by_key(|r| {
            let host_rank = match &r.host {
                HostMatch::Exact(_) => 0,
                HostMatch::Suffix(s) => 1_000_000 - s.len(),
                HostMatch::Any => 2_000_000,
            };
            (
                host_rank,
                usize::MAX - r.path_prefix.as_ref().map_or(0, |p| p.len()),
            )
        });
        Router {
            routes: compiled,
            default,
        }
    }

    /// The upstream for a request, or `None` (404). `host` is the raw Host
    /// field value (may carry a port), `target` the request target.
    pub fn route(&self, host: Option<&[u8]>, target: &[u8]) -> Option<usize> {
        self.find(host, target).upstream
    }

    /// Like [`route`](Self::route), with the matching route's own
    /// `client_max_body_size` (`None`: no route matched, the listener's
    /// applies).
    pub fn find(&self, host: Option<&[u8]>, target: &[u8]) -> Hit {
        let miss = Hit {
            upstream: self.default,
            max_body: None,
        };
        if self.routes.is_empty() {
            return miss;
        }
        let host = host.map(strip_port).map_or(&b""[..], strip_dot);
        let mut scratch = Vec::new();
        // A path above the root was refused with the request (400).
        let path = canonical_path(path_of(target), &mut scratch).unwrap_or(b"/");
        self.routes
            .iter()
            .find(|r| {
                host_matches(&r.host, host)
                    && r.path_prefix
                        .as_deref()
                        .is_none_or(|p| prefix_matches(p, path))
            })
            .map_or(miss, |r| Hit {
                upstream: Some(r.upstream),
                max_body: Some(r.max_body),
            })
    }
}

fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        // IPv6 literal: `[::1]:80`.
        return match h.iter().position(|&b| b == b']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.iter().rposition(|&b| b == b':') {
        Some(i) => &h[..i],
        None => h,
    }
}

/// `a.test.` names the same host as `a.test` (the root's empty label).
fn strip_dot(h: &[u8]) -> &[u8] {
    h.strip_suffix(b".").unwrap_or(h)
}

/// The path of an origin-form or absolute-form target, without the query.
fn path_of(target: &[u8]) -> &[u8] {
    let mut t = target;
    if t.first() != Some(&b'/') {
        // absolute-form: skip `scheme://authority`.
        if let Some(i) = t.windows(3).position(|w| w == b"://") {
            t = &t[i + 3..];
            t = match t.iter().position(|&b| b == b'/') {
                Some(i) => &t[i..],
                None => b"/",
            };
        }
    }
    match t.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) => &t[..i],
        None => t,
    }
}

fn host_matches(m: &HostMatch, host: &[u8]) -> bool {
    match m {
        HostMatch::Any => true,
        HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
        HostMatch::Suffix(s) => {
            host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
    }
}

/// `/v1` matches `/v1`, `/v1/x` and `/v1;param` (a path parameter, which
/// servlet containers strip), not `/v10`; a prefix ending in `/` matches
/// anything under it.
fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with(b"/")
            || path.len() == prefix.len()
            || matches!(path[prefix.len()], b'/' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, path: Option<&str>, up: usize) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_string),
            path_prefix: path.map(str::to_string),
            upstream: up,
            client_max_body_size: 100 + up as u64,
        }
    }

    #[test]
    fn find_reports_the_route_body_limit() {
        let router = Router::build(&[r(Some("a.test"), None, 1)], Some(0));
        let hit = router.find(Some(b"a.test"), b"/");
        assert_eq!((hit.upstream, hit.max_body), (Some(1), Some(101)));
        let miss = router.find(Some(b"b.test"), b"/");
        assert_eq!((miss.upstream, miss.max_body), (Some(0), None));
    }

    #[test]
    fn host_and_path_rules() {
        let router = Router::build(
            &[
                r(Some("api.example.com"), None, 1),
                r(Some("*.example.com"), None, 2),
                r(None, Some("/v1"), 3),
                r(None, Some("/v1/admin"), 4),
                r(Some("api.example.com"), Some("/v2"), 5),
            ],
            Some(0),
        );
        assert_eq!(router.route(Some(b"API.example.com:8080"), b"/x"), Some(1));
        assert_eq!(router.route(Some(b"api.example.com"), b"/v2/y"), Some(5));
        assert_eq!(router.route(Some(b"www.example.com"), b"/"), Some(2));
        assert_eq!(router.route(Some(b"example.com"), b"/"), Some(0));
        assert_eq!(router.route(Some(b"other"), b"/v1"), Some(3));
        assert_eq!(router.route(Some(b"other"), b"/v1/admin/z?q=1"), Some(4));
        assert_eq!(router.route(Some(b"other"), b"/v10"), Some(0));
        assert_eq!(router.route(None, b"http://h/v1/x"), Some(3));
        assert_eq!(router.route(Some(b"[::1]:80"), b"/"), Some(0));
    }

    #[test]
    fn no_default_is_none() {
        let router = Router::build(&[r(None, Some("/a"), 1)], None);
        assert_eq!(router.route(Some(b"h"), b"/b"), None);
        assert_eq!(router.route(Some(b"h"), b"/a/"), Some(1));
        assert_eq!(Router::build(&[], Some(7)).route(None, b"/"), Some(7));
    }

    #[test]
    fn spellings_of_a_host_and_path_route_as_their_canonical_form() {
        let router = Router::build(
            &[r(Some("api.test"), None, 1), r(None, Some("/admin"), 2)],
            Some(0),
        );
        for (host, target, want) in [
            (&b"api.test."[..], &b"/x"[..], 1),
            (b"API.TEST.:80", b"/x", 1),
            (b"www.test", b"/%61dmin/x", 2),
            (b"www.test", b"/%61%64%6D%69%6E", 2),
            (b"www.test", b"//admin/x", 2),
            (b"www.test", b"/./admin/x", 2),
            (b"www.test", b"/x/../admin/y", 2),
            (b"www.test", b"/x/%2E%2E/admin/y", 2),
            (b"www.test", b"/x%2F..%2Fadmin", 2),
            (b"www.test", b"/admin;jsessionid=1", 2),
            (b"www.test", b"/admin/..", 0),
            (b"www.test", b"/admin/../x", 0),
            (b"www.test", b"/administrator", 0),
            (b"www.test", b"/x/./y", 0),
            (b"www.test", b"/%zz/admin", 0),
            (b"www.test", b"/adm%in", 0),
        ] {
            assert_eq!(
                router.route(Some(host), target),
                Some(want),
                "{} {}",
                String::from_utf8_lossy(host),
                String::from_utf8_lossy(target)
            );
        }
    }
}
