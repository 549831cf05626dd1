//! The canonical form of a request path: what an application server (and
//! nginx, matching its `location`s) reads from the bytes a client sent.
//!
//! The proxy forwards the target as written, but decides on its canonical
//! form: routes match it (`lb::route`), so `/%61dmin`, `//admin` or
//! `/x/../admin` cannot reach a backend as `/admin` around the `/admin`
//! route; and a path that climbs above the root (`/../x`) is refused with
//! a 400, as nginx refuses it. A canonical path (no `%`, `//` or `/.`, the
//! common case) is returned as is, without allocating.

/// `path` (no query) in canonical form: itself when it is already
/// canonical, else decoded and resolved into `out` — `%XX` escapes decoded
/// (an invalid escape stays as written), empty and `.` segments dropped,
/// `..` removing the segment before it, a trailing `/` kept. `None`: a
/// `..` would climb above the root.
pub fn canonical_path<'a>(path: &'a [u8], out: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let needs = path.contains(&b'%') || path.windows(2).any(|w| w == b"//" || w == b"/.");
    if !needs {
        return Some(path);
    }
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16)).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match (path[i], hex(path.get(i + 1)), hex(path.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                decoded.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    out.clear();
    let mut last: &[u8] = b"";
    for seg in decoded.split(|&b| b == b'/') {
        last = seg;
        match seg {
            b"" | b"." => {}
            b".." => {
                let up = out.iter().rposition(|&b| b == b'/')?;
                out.truncate(up);
            }
            seg => {
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() || matches!(last, b"" | b"." | b"..") {
        out.push(b'/');
    }
    Some(out)
}

/// Whether every `%` in `path` starts a valid escape (`%` and two hex
/// digits, RFC 3986 §2.1) that does not decode to NUL. A path with `%zz`
/// or a trailing `%` is not a request target at all (400, as nginx
/// answers): routes match the escape as written while a backend may decode
/// it some other way. `%00` is refused too, as nginx refuses it: a backend
/// written in C (or a file system) ends the decoded path at the NUL, so
/// `/public%00/../admin` would be one path to the routes and another to it.
pub fn valid_escapes(path: &[u8]) -> bool {
    path.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || path
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit) && h != b"00")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        for (path, valid) in [
            (&b"/a/b"[..], true),
            (b"/%41%2f%2F%01", true),
            (b"/%41%00", false),
            (b"/a%00b", false),
            (b"/%100", true),
            (b"/x%", false),
            (b"/x%4", false),
            (b"/x%zz", false),
            (b"/x%4g", false),
            (b"/%%41", false),
            (b"/100%25", true),
            (b"", true),
        ] {
            assert_eq!(
                valid_escapes(path),
                valid,
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn canonical_paths() {
        let mut out = Vec::new();
        for (raw, want) in [
            (&b"/a/b"[..], Some(&b"/a/b"[..])),
            (b"/a//b/", Some(b"/a/b/")),
            (b"/a/./b/.", Some(b"/a/b/")),
            (b"/a/b/..", Some(b"/a/")),
            (b"/a/..", Some(b"/")),
            (b"/%2e%2E/%41", None),
            (b"/x/%2e%2E/%41", Some(b"/A")),
            (b"/x%2F..%2F..%2Fy", None),
            (b"/..", None),
            (b"/../a", None),
            (b"/%", Some(b"/%")),
            (b"/%4", Some(b"/%4")),
            (b"/%zz", Some(b"/%zz")),
            (b"//", Some(b"/")),
            (b"/.well-known/x", Some(b"/.well-known/x")),
        ] {
            assert_eq!(
                canonical_path(raw, &mut out).map(<[u8]>::to_vec),
                want.map(<[u8]>::to_vec),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Canonical input is borrowed, not copied.
        let raw = b"/plain/path";
        assert!(std::ptr::eq(
            canonical_path(raw, &mut out).unwrap(),
            &raw[..]
        ));
    }
}
