//! Duration strings: `"500us"`, `"20ms"`, `"1s"`, `"1.5s"`, `"2m"`, `"1h"`, `"1m30s"`.
//!
//! Durations in the config are always strings with a unit. A bare number is
//! rejected rather than guessed at: nginx reads `5` as seconds, keepalived's
//! `advert_int 1` is seconds too, but a `connect_timeout = 5` meant as
//! milliseconds would silently become five seconds. Several number+unit pairs
//! may follow each other (`"1m30s"`), like Go's `time.ParseDuration`.
//! Arithmetic is exact: integer nanoseconds, no floating point.
//!
//! This is the one duration parser of the project: command-line durations
//! (`ringlb stats --watch 1s`) use it too, through
//! [`crate::config::parse_duration`], so a duration means the same
//! everywhere.

use std::time::Duration;

/// Units, longest spelling first so `ms` is not read as `m` + `s`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Parses a duration string; the error explains what was wrong in a way that
/// reads well after `invalid duration "…": `.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"500ms\" or \"1s\"".into());
    }
    if s.starts_with('-') {
        return Err("durations cannot be negative".into());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(num_len);
        if number.is_empty() {
            return Err(format!(
                "expected a number at \"{rest}\"; write e.g. \"500ms\" or \"1s\""
            ));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "missing unit after \"{number}\" (use ns, us, ms, s, m or h, e.g. \"{number}s\")"
            ));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
            .ok_or_else(|| format!("unknown unit \"{unit}\" (use ns, us, ms, s, m or h)"))?;
        total = total
            .checked_add(scaled(number, scale)?)
            .ok_or_else(too_long)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

fn too_long() -> String {
    "duration is too long".into()
}

/// `number` (digits with at most one '.') times `scale` nanoseconds.
/// Fractions below one nanosecond are dropped.
fn scaled(number: &str, scale: u128) -> Result<u128, String> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(format!("malformed number \"{number}\""));
    }
    let digits = |d: &str| d.parse::<u128>().map_err(|_| too_long());
    let mut ns = digits(whole)?.checked_mul(scale).ok_or_else(too_long)?;
    if !frac.is_empty() {
        // Keep at most 9 fractional digits: finer than 1ns of an hour is noise.
        let frac = &frac[..frac.len().min(9)];
        let denom = 10u128.pow(frac.len() as u32);
        ns += digits(frac)? * scale / denom;
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_duration(s).expect_err(s)
    }

    #[test]
    fn units() {
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("500us"), Duration::from_micros(500));
        assert_eq!(ok("500µs"), Duration::from_micros(500));
        assert_eq!(ok("20ms"), Duration::from_millis(20));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn fractions_and_compounds() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.01s"), Duration::from_millis(10));
        assert_eq!(ok("2.5ms"), Duration::from_micros(2500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h1m1s1ms"), Duration::from_millis(3_661_001));
        assert_eq!(ok(" 3s "), Duration::from_secs(3));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(err("20").contains("missing unit"), "{}", err("20"));
        assert!(err("").contains("empty"));
        assert!(err("fast").contains("expected a number"));
        assert!(err("5 seconds").contains("unknown unit \" seconds\""));
        assert!(err("5d").contains("unknown unit \"d\""));
        assert!(err("-1s").contains("negative"));
        assert!(err("1.2.3s").contains("malformed"));
        assert!(err(".5s").contains("malformed"));
        assert!(err("5.s").contains("malformed"));
        assert!(err("99999999999999999999999999h").contains("too long"));
    }
}
