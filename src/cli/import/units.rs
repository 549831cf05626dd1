//! Time and size values as nginx and keepalived write them.
//!
//! nginx: `10s`, `1m30s`, `500ms`, a bare number is seconds; units ms s m h
//! d w M y (nginx's `ngx_parse_time`); sizes `8k`, `1m`, bare = bytes.
//! keepalived: seconds, possibly fractional (`advert_int 0.1`). Conversions
//! are exact integer arithmetic, like ringlb's own duration parser.

use std::time::Duration;

/// nginx time: `10`, `10s`, `1m30s`, `500ms`, `1h`, `1d`.
pub(crate) fn nginx_time(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    let mut ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: u64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (scale, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let scale = match rest.chars().next() {
                Some('s') => 1_000,
                Some('m') => 60_000,
                Some('h') => 3_600_000,
                Some('d') => 86_400_000,
                Some('w') => 7 * 86_400_000,
                Some('M') => 30 * 86_400_000,
                Some('y') => 365 * 86_400_000,
                _ => return None,
            };
            (scale, 1)
        };
        ms = ms.checked_add(value.checked_mul(scale)?)?;
        rest = &rest[len..];
    }
    Some(Duration::from_millis(ms))
}

/// nginx size: `1024`, `8k`, `1m`, `1g`.
pub(crate) fn nginx_size(s: &str) -> Option<u64> {
    let (num, scale) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1024),
        'm' | 'M' => (&s[..s.len() - 1], 1024 * 1024),
        'g' | 'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(scale)
}

/// keepalived seconds: `1`, `0.1`, `2.5` (down to microseconds).
pub(crate) fn seconds(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) || frac.len() > 6 {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    Some(Duration::from_secs(secs) + Duration::from_micros(micros.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_times() {
        assert_eq!(nginx_time("10"), Some(Duration::from_secs(10)));
        assert_eq!(nginx_time("10s"), Some(Duration::from_secs(10)));
        assert_eq!(nginx_time("1m"), Some(Duration::from_secs(60)));
        assert_eq!(nginx_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(nginx_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(nginx_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(nginx_time("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(nginx_time("0"), Some(Duration::ZERO));
        assert_eq!(nginx_time("1.5s"), None);
        assert_eq!(nginx_time("s"), None);
        assert_eq!(nginx_time("10x"), None);
    }

    #[test]
    fn nginx_sizes() {
        assert_eq!(nginx_size("8k"), Some(8192));
        assert_eq!(nginx_size("1m"), Some(1 << 20));
        assert_eq!(nginx_size("100"), Some(100));
        assert_eq!(nginx_size("x"), None);
    }

    #[test]
    fn keepalived_seconds() {
        assert_eq!(seconds("1"), Some(Duration::from_secs(1)));
        assert_eq!(seconds("0.1"), Some(Duration::from_millis(100)));
        assert_eq!(seconds(".02"), Some(Duration::from_millis(20)));
        assert_eq!(seconds("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(seconds("-1"), None);
        assert_eq!(seconds("1s"), None);
        assert_eq!(seconds(""), None);
    }
}
