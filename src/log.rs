//! Minimal stderr logging: one line per event, rate-limited per thread,
//! never blocking the thread that logs.
//!
//! The data plane must never stall on logging, and a dead backend under load
//! can produce an error per request. Each thread may write at most
//! [`LINES_PER_SECOND`] lines a second; the rest are counted and reported in
//! one "suppressed" line.
//!
//! A write to stderr blocks when stderr is a pipe nobody reads fast enough
//! (a stuck journald, a paused `docker logs`), and a blocked shard or VRRP
//! thread is an outage. So every thread but `main` hands its formatted
//! line to one `ringlb-log` writer thread through a bounded queue
//! ([`QUEUE_LINES`]) with a non-blocking `try_send`; when the queue is full
//! the line is dropped and counted, and the writer reports the count with
//! its next line. The `main` thread (start-up errors, the last words of a
//! stop) writes directly so nothing it says is lost; at exit the queue is
//! drained for up to [`EXIT_DRAIN`].

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const LINES_PER_SECOND: u32 = 20;
/// Lines that may wait for the writer thread.
pub const QUEUE_LINES: usize = 4096;
/// How long exit waits for queued lines to be written.
pub const EXIT_DRAIN: Duration = Duration::from_millis(500);

thread_local! {
    static WINDOW: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

/// Lines dropped because the writer's queue was full (since start).
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUED: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static WRITER: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();

/// Lines dropped so far because the log writer could not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
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
    if name == "main" {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    } else {
        hand_off(line.into_bytes());
    }
}

/// Queue a line for the writer thread; never blocks.
fn hand_off(line: Vec<u8>) {
    let Some(tx) = WRITER.get_or_init(start_writer) else {
        // No writer thread could be started: write directly.
        let _ = std::io::stderr().lock().write_all(&line);
        return;
    };
    match tx.try_send(line) {
        Ok(()) => {
            QUEUED.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn start_writer() -> Option<SyncSender<Vec<u8>>> {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("ringlb-log".into())
        .spawn(move || {
            let mut reported = 0u64;
            for line in rx {
                let mut err = std::io::stderr().lock();
                let dropped = DROPPED.load(Ordering::Relaxed);
                if dropped > reported {
                    let _ = writeln!(
                        err,
                        "  ({} log lines dropped: stderr too slow)",
                        dropped - reported
                    );
                    reported = dropped;
                }
                let _ = err.write_all(&line);
                WRITTEN.fetch_add(1, Ordering::Release);
            }
        });
    if spawned.is_err() {
        return None;
    }
    // SAFETY: registering a plain `extern "C" fn()` with atexit(3).
    unsafe { libc::atexit(drain_at_exit) };
    Some(tx)
}

/// At exit, give the writer a moment to write what is queued.
extern "C" fn drain_at_exit() {
    let deadline = Instant::now() + EXIT_DRAIN;
    while WRITTEN.load(Ordering::Acquire) < QUEUED.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
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
    /// Logging from many threads never blocks them, whatever stderr does,
    /// and every line is either queued or counted as dropped.
    #[test]
    fn logging_threads_never_block_and_drops_are_counted() {
        let before_q = super::QUEUED.load(super::Ordering::Relaxed);
        let before_d = super::dropped();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("logtest-{i}"))
                    .spawn(|| {
                        for k in 0..super::LINES_PER_SECOND {
                            crate::info!("log test line {k}");
                        }
                    })
                    .unwrap()
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let queued = super::QUEUED.load(super::Ordering::Relaxed) - before_q;
        let dropped = super::dropped() - before_d;
        // Other tests may log concurrently: at least ours are accounted for.
        assert!(queued + dropped >= 8 * u64::from(super::LINES_PER_SECOND));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(super::civil(1_795_000_000), (2026, 11, 18, 11, 6, 40));
        assert_eq!(super::civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
