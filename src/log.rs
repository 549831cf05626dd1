//! Minimal stderr logging: one line per event, rate-limited per thread.
//!
//! The data plane must never stall on logging, and a dead backend under load
//! can produce an error per request. Each thread may write at most
//! [`LINES_PER_SECOND`] lines a second; the rest are counted and reported in
//! one "suppressed" line. Lines are written with a single `write` call.

use std::cell::Cell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub const LINES_PER_SECOND: u32 = 20;

thread_local! {
    static WINDOW: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Writes one log line (use the `info!`/`warn!`/`error!` macros).
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let sec = now.as_secs();
    let suppressed = WINDOW.with(|w| {
        let (win, n, dropped) = w.get();
        if win != sec {
            w.set((sec, 1, 0));
            Some(dropped)
        } else if n < LINES_PER_SECOND {
            w.set((win, n + 1, dropped));
            Some(0)
        } else {
            w.set((win, n, dropped + 1));
            None
        }
    });
    let Some(dropped) = suppressed else { return };
    let (y, mo, d, h, mi, s) = civil(sec);
    let lvl = match level {
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("main");
    let mut line = format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z {lvl} [{name}] {args}\n",
        now.subsec_millis()
    );
    if dropped > 0 {
        line.push_str(&format!(
            "  ({dropped} log lines suppressed in the previous second)\n"
        ));
    }
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Days since the epoch → (year, month, day, hour, min, sec), UTC.
pub fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) };
}
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::civil(1_795_000_000), (2026, 11, 18, 11, 6, 40));
        assert_eq!(super::civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
