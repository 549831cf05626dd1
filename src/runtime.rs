//! Thread and ring construction: pinning, io_uring flags, fallbacks.
//!
//! Every shard builds its own monoio runtime by hand (not with a macro) on
//! its own thread, so it can be pinned first and the ring can be set up with
//! the flags measured to matter here (DESIGN.md §5: COOP_TASKRUN +
//! TASKRUN_FLAG + SINGLE_ISSUER, about +35% requests/s). The project promises
//! Linux 5.10+, so a kernel that rejects a flag gets a ring without it, and a
//! kernel without io_uring gets the epoll driver; each fallback is logged.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};

/// Ring entries per shard.
pub const RING_ENTRIES: u32 = 4096;

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

    pub fn driver_name(&self) -> &'static str {
        match self {
            ShardRuntime::Uring(_) => "io_uring",
            ShardRuntime::Epoll(_) => "epoll",
        }
    }
}

static EPOLL_WARNED: AtomicBool = AtomicBool::new(false);
static FLAGS_WARNED: AtomicBool = AtomicBool::new(false);

/// The ring flag sets tried in order, best first.
const FLAG_SETS: [(&str, bool, bool); 3] = [
    ("COOP_TASKRUN+TASKRUN_FLAG+SINGLE_ISSUER", true, true),
    ("COOP_TASKRUN+TASKRUN_FLAG", true, false),
    ("none", false, false),
];

/// Builds the runtime for the calling thread. `RINGLB_DRIVER=epoll` forces
/// the fallback (for testing it).
pub fn build() -> std::io::Result<ShardRuntime> {
    let force_epoll = std::env::var("RINGLB_DRIVER").is_ok_and(|v| v == "epoll");
    if force_epoll && !EPOLL_WARNED.swap(true, Ordering::Relaxed) {
        crate::warn!("RINGLB_DRIVER=epoll: using the epoll driver instead of io_uring");
    }
    if !force_epoll {
        let mut last_err = None;
        for (i, (name, coop, single)) in FLAG_SETS.iter().enumerate() {
            let mut urb = io_uring::IoUring::builder();
            if *coop {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            if *single {
                urb.setup_single_issuer();
            }
            match RuntimeBuilder::<IoUringDriver>::new()
                .enable_timer()
                .with_entries(RING_ENTRIES)
                .uring_builder(urb)
                .build()
            {
                Ok(rt) => {
                    if i > 0 && !FLAGS_WARNED.swap(true, Ordering::Relaxed) {
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
    let rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok(ShardRuntime::Epoll(rt))
}

/// Pins the calling thread to `cpu`; logs when the kernel refuses.
///
/// `core_affinity::set_for_current` only accepts cores of the caller's
/// current mask, and threads inherit the mask of the (already pinned)
/// control thread, so this goes to `sched_setaffinity` directly.
pub fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for cpu < CPU_SETSIZE, checked first.
    let ok = cpu < libc::CPU_SETSIZE as usize
        && unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        };
    if !ok {
        crate::warn!("could not pin thread to CPU {cpu}");
    }
    ok
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len().max(1))
}

/// CPU ids for the shards and the control thread: explicit lists win;
/// `auto` uses every core but the control core (at least one shard).
pub fn plan_cpus(
    workers: crate::config::Workers,
    control_cpu: Option<usize>,
    worker_cpus: Option<&[usize]>,
) -> (Vec<Option<usize>>, Option<usize>) {
    let all: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let control = control_cpu.or_else(|| all.first().copied());
    let count = match workers {
        crate::config::Workers::Count(n) => n.max(1),
        crate::config::Workers::Auto => all.len().saturating_sub(1).max(1),
    };
    let pool: Vec<usize> = match worker_cpus {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => {
            let others: Vec<usize> = all
                .iter()
                .copied()
                .filter(|c| Some(*c) != control)
                .collect();
            if others.is_empty() {
                all.clone()
            } else {
                others
            }
        }
    };
    let shards = (0..count)
        .map(|i| (!pool.is_empty()).then(|| pool[i % pool.len()]))
        .collect();
    (shards, control)
}

/// Sleeps the calling (non-runtime) thread in small steps until `done()`
/// or `limit` passes. Returns whether `done()` became true.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}
