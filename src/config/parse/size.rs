//! Byte sizes: an integer number of bytes, or a string with nginx's
//! suffixes, `"512k"`, `"1m"`, `"2g"` (powers of 1024; a bare `"100"` is
//! bytes). Used by `client_max_body_size`, where nginx configs say `1m`.

use super::fields::{Field, Table};
use super::span::Diags;

/// Parses `"8k"`, `"1m"`, `"1g"`, `"1024"`; the error reads well after
/// `invalid size "…": `.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let (num, scale) = match s.as_bytes().last() {
        None => return Err("empty size; write e.g. \"1m\" or \"512k\"".into()),
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        Some(_) => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            "expected a whole number with an optional k, m or g suffix, e.g. \"1m\"".into(),
        );
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "too large".into())
}

/// A size field: a non-negative integer (bytes) or a size string.
pub(crate) fn size(f: &Field, d: &mut Diags) -> Option<u64> {
    if let Some(v) = f.as_integer() {
        if v < 0 {
            d.error(f.at, format!("`{}` must be at least 0, found {v}", f.name));
            return None;
        }
        return Some(v as u64);
    }
    let s = f.str(d)?;
    parse_size(s)
        .map_err(|why| d.error(f.at, format!("invalid size {s:?} for `{}`: {why}", f.name)))
        .ok()
}

/// `key` of `t` as a size, if present.
pub(crate) fn table_size(t: &Table, d: &mut Diags, key: &str) -> Option<u64> {
    size(&t.field(key)?, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        for bad in [
            "",
            "m",
            "1.5m",
            "-1",
            "1 m",
            "1mb",
            "1t",
            "99999999999999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
