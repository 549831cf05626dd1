//! Ring construction: io_uring flags and fallbacks.
//!
//! Every shard builds its own monoio runtime by hand (not with a macro) on
//! its own thread, so it can be pinned first and the ring can be set up with
//! the flags measured to matter here: COOP_TASKRUN + TASKRUN_FLAG +
//! SINGLE_ISSUER gave about 35% more requests/s than monoio's default ring
//! on the 2-core benchmark host (see "Measured" in ARCHITECTURE.md). The
//! health thread and the built-in test backend build theirs the same way.
//! The project promises
//! Linux 5.10+, so a kernel that rejects a flag gets a ring without it, and a
//! kernel without io_uring gets the epoll driver; each fallback is logged.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};

/// Ring entries per shard.
pub const RING_ENTRIES: u32 = 4096;

/// Ring entries: [`RING_ENTRIES`], or `RINGLB_RING_ENTRIES` to measure
/// another size (a power of two, 8..=32768; anything else is ignored).
/// monoio submits when the submission queue is full, so the size bounds how
/// many operations one `io_uring_enter` hands the kernel at once: at 1000
/// clients 256 entries left ~0.5 µs per request less loopback work to
/// `ksoftirqd` and about as much more to the backend: no net gain
/// (bench/RESULTS.md, 2026-12-01 15:02), so the default stays.
fn ring_entries() -> u32 {
    entries_from(std::env::var("RINGLB_RING_ENTRIES").ok().as_deref())
}

/// The ring size a `RINGLB_RING_ENTRIES` value asks for.
fn entries_from(var: Option<&str>) -> u32 {
    var.and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| n.is_power_of_two() && (8..=32768).contains(n))
        .unwrap_or(RING_ENTRIES)
}

/// A shard runtime on whichever driver this kernel supports.
pub enum ShardRuntime {
    Uring(Runtime<TimeDriver<IoUringDriver>>),
    Epoll(Runtime<TimeDriver<LegacyDriver>>),
}

impl ShardRuntime {
    pub fn block_on<F: Future>(&mut self, f: F) -> F::Output {
        match self {
            ShardRuntime::Uring(rt) => rt.block_on(f),
            ShardRuntime::Epoll(rt) => rt.block_on(f),
        }
    }

    /// Whether this runtime runs on io_uring (not the epoll fallback).
    pub fn is_uring(&self) -> bool {
        matches!(self, ShardRuntime::Uring(_))
    }

    pub fn driver_name(&self) -> &'static str {
        match self {
            ShardRuntime::Uring(_) => "io_uring",
            ShardRuntime::Epoll(_) => "epoll",
        }
    }
}

static EPOLL_WARNED: AtomicBool = AtomicBool::new(false);
static FLAGS_WARNED: AtomicBool = AtomicBool::new(false);

/// One set of ring setup flags.
struct Flags {
    name: &'static str,
    defer: bool,
    coop: bool,
    single: bool,
}

/// The ring flag sets tried in order, best first; the first (DEFER_TASKRUN,
/// 6.1+) only with `RINGLB_DRIVER=uring-defer`. It needs SINGLE_ISSUER and
/// a ring used only by the thread that made it, which is how every ring
/// here is used, and monoio waits with `IORING_ENTER_GETEVENTS`, which is
/// when deferred completions run; it works, but on the 2-core benchmark
/// host it did not measure better than COOP_TASKRUN (proxy and backend CPU
/// per request within noise in every shape, bench/RESULTS.md), so it is
/// not the default.
const FLAG_SETS: [Flags; 4] = [
    Flags {
        name: "DEFER_TASKRUN+SINGLE_ISSUER+TASKRUN_FLAG",
        defer: true,
        coop: false,
        single: true,
    },
    Flags {
        name: "COOP_TASKRUN+TASKRUN_FLAG+SINGLE_ISSUER",
        defer: false,
        coop: true,
        single: true,
    },
    Flags {
        name: "COOP_TASKRUN+TASKRUN_FLAG",
        defer: false,
        coop: true,
        single: false,
    },
    Flags {
        name: "none",
        defer: false,
        coop: false,
        single: false,
    },
];

/// Builds the runtime for the calling thread. `RINGLB_DRIVER=epoll` forces
/// the fallback (for testing it); `RINGLB_DRIVER=uring-defer` tries
/// DEFER_TASKRUN first (to measure it).
pub fn build() -> std::io::Result<ShardRuntime> {
    let driver = std::env::var("RINGLB_DRIVER").unwrap_or_default();
    let force_epoll = driver == "epoll";
    if force_epoll && !EPOLL_WARNED.swap(true, Ordering::Relaxed) {
        crate::warn!("RINGLB_DRIVER=epoll: using the epoll driver instead of io_uring");
    }
    if !force_epoll {
        let mut last_err = None;
        let skip = usize::from(driver != "uring-defer");
        for (i, f) in FLAG_SETS.iter().enumerate().skip(skip) {
            let name = f.name;
            let mut urb = io_uring::IoUring::builder();
            if f.defer {
                urb.setup_defer_taskrun().setup_taskrun_flag();
            }
            if f.coop {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            if f.single {
                urb.setup_single_issuer();
            }
            match RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .with_entries(ring_entries())
                .uring_builder(urb)
                .build()
            {
                Ok(rt) => {
                    if i > skip && !FLAGS_WARNED.swap(true, Ordering::Relaxed) {
                        crate::warn!("io_uring rejected the preferred ring flags; running with flags: {name}");
                    }
                    return Ok(ShardRuntime::Uring(rt));
                }
                Err(e) => last_err = Some(e),
            }
        }
        if !EPOLL_WARNED.swap(true, Ordering::Relaxed) {
            crate::warn!(
                "io_uring unavailable ({}); falling back to the epoll driver",
                last_err.map(|e| e.to_string()).unwrap_or_default()
            );
        }
    }
    build_epoll()
}

/// A runtime on the epoll driver (the fallback; tests use it directly).
pub fn build_epoll() -> std::io::Result<ShardRuntime> {
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok(ShardRuntime::Epoll(rt))
}

#[cfg(test)]
mod tests {
    use super::{entries_from, RING_ENTRIES};

    #[test]
    fn ring_size_from_the_environment() {
        for (var, want) in [
            (None, RING_ENTRIES),
            (Some("256"), 256),
            (Some(" 1024 "), 1024),
            (Some("8"), 8),
            (Some("32768"), 32768),
            // not a power of two, out of range, not a number: the default
            (Some("300"), RING_ENTRIES),
            (Some("4"), RING_ENTRIES),
            (Some("65536"), RING_ENTRIES),
            (Some("big"), RING_ENTRIES),
            (Some(""), RING_ENTRIES),
        ] {
            assert_eq!(entries_from(var), want, "{var:?}");
        }
    }
}
