//! The `Date` field value (RFC 9110 §6.6.1), cached per shard thread.
//!
//! Every response the proxy sends carries a `Date`: its own canned ones, and
//! proxied ones whose backend sent none (a recipient with a clock must add
//! one, RFC 9110 §6.6.1). Reading the clock and formatting a date per
//! request would put a syscall-free but still measurable cost on the hot
//! path, so each shard keeps the formatted value in a thread-local and
//! refreshes it from its housekeeping tick (every 10 ms, so the value is at
//! most one tick stale, far below the field's one-second resolution).
//! Requests only copy 29 bytes.
//!
//! [`imf_fixdate`] is the pure formatter (unit-tested against known dates);
//! [`refresh`] and [`current`] are the thread-local cache around it.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const LEN: usize = 29;

thread_local! {
    /// (unix second, formatted). Seeded on first use on each thread.
    static CACHE: Cell<(u64, [u8; LEN])> = Cell::new({
        let s = unix_secs(SystemTime::now());
        (s, imf_fixdate(s))
    });
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Updates this thread's cached date to `now` (formats only when the second
/// changed). Called by the shard tick.
pub fn refresh(now: SystemTime) {
    let s = unix_secs(now);
    CACHE.with(|c| {
        if c.get().0 != s {
            c.set((s, imf_fixdate(s)));
        }
    });
}

/// This thread's cached date, as the value of a `Date` field.
#[inline]
pub fn current() -> [u8; LEN] {
    CACHE.with(|c| c.get().1)
}

/// Formats seconds since the Unix epoch as an IMF-fixdate (RFC 9110 §5.6.7).
pub fn imf_fixdate(unix: u64) -> [u8; LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year.min(9999);
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], secs / 3600);
    two(&mut out[20..22], secs / 60 % 60);
    two(&mut out[23..25], secs % 60);
    out
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, for the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(unix: u64) -> String {
        String::from_utf8(imf_fixdate(unix).to_vec()).unwrap()
    }

    #[test]
    fn known_dates() {
        assert_eq!(fmt(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's own example.
        assert_eq!(fmt(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(fmt(1_709_208_000), "Thu, 29 Feb 2024 12:00:00 GMT");
        assert_eq!(fmt(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 GMT");
        assert_eq!(fmt(1_735_689_600), "Wed, 01 Jan 2025 00:00:00 GMT");
        // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
        assert_eq!(fmt(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(fmt(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(fmt(2_147_483_647), "Tue, 19 Jan 2038 03:14:07 GMT");
    }

    #[test]
    fn every_day_round_trips_through_its_fields() {
        // Walk 400 years day by day: the weekday advances by one, the date
        // by one day, months and leap years roll over correctly.
        let mut prev = civil_from_days(0);
        for d in 1..146_097u64 {
            let cur = civil_from_days(d);
            let leap =
                |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
            let month_len = |y: u64, m: u64| match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if prev.2 < month_len(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn cache_follows_refresh() {
        refresh(UNIX_EPOCH + std::time::Duration::from_secs(784_111_777));
        assert_eq!(&current(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        refresh(UNIX_EPOCH + std::time::Duration::from_secs(784_111_778));
        assert_eq!(&current(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
