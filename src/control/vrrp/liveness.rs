//! Data-plane liveness as a VRRP tracked object: a dead data plane gives
//! the VIP away within a few advert intervals, a busy or hiccuping host
//! does not.
//!
//! Every shard bumps a heartbeat counter each tick (10 ms) from a task
//! that does nothing but sleep on the shard's io_uring timer and bump it, so
//! the heartbeat proves the shard's event loop turns. A heartbeat that stops
//! moving has causes of two kinds, and treating them alike is what empties a
//! cluster or moves a VIP for nothing. So the detector asks the kernel
//! (`/proc/self/task/<tid>/{stat,schedstat,syscall}`) what the shard did
//! at each check since its last progress:
//!
//! - **starved**: runnable (state `R`) at at least half of those checks but
//!   on a CPU for less than half of the time (`schedstat` run time), or its
//!   booked run-queue wait grew by at least half of it. The host is busy
//!   (busy loops or a real-time process on the shards' core); on such a
//!   host every node's shards stall together. (The run-queue wait alone is
//!   not enough: the kernel books it only when the waiting thread runs.)
//! - **late wake-up**: *parked in its event loop* — asleep in
//!   `io_uring_enter` waiting for completions, its tick timer armed — at at
//!   least half of the checks (counted together with runnable ones), and on
//!   a CPU for less than half of the time. The shard has handed control to
//!   the kernel and asked to be woken within a tick; if it is not, the
//!   latency is the host's: a CPU held with interrupts off (a process
//!   writing to a serial `/dev/console` — glibc's `syslog` does that for
//!   every line when no syslog daemon runs — holds one ~1.5 ms a line),
//!   an SMI, a hypervisor not running the vCPU. Every process on that CPU is
//!   frozen alike; keepalived would not give its VIP away for it, and
//!   neither may ringlb.
//! - **stalled**: anything else — blocked in any other call (a blocking
//!   read, a futex deadlock, a sleep), or spinning on its CPU in user code
//!   (runnable *and* running). That is the shard's own fault.
//!
//! Starved and late shards are tolerated for `starved_after` (300 ms);
//! stalled ones for `stall_after` (30 ms) only. The rule is sound because
//! each tolerated case is one where the shard's own code is not what runs
//! (or blocks): it is either waiting for a CPU or waiting for the kernel to
//! deliver a timer it already armed, and a real fault of the shard — the
//! event loop wedged in a call or a loop — is never parked in its ring nor
//! waiting on a run queue. Both are still bounded: past `starved_after` the
//! data plane counts as degraded, so a host that hiccups for longer than
//! that still moves the VIP.
//!
//! The observer's own lateness is not held against the shard either: the
//! checks run every [`CHECK_INTERVAL`] on the VRRP thread, and when one
//! comes late (the whole VM paused, the control thread's own CPU held),
//! the time past the interval is the host's, not the shard's, so it is
//! subtracted from the shard's time without progress.
//!
//! Any of these makes the data plane *degraded*, which, after `fall` checks
//! in a row, adds the tracker's (negative) `weight` to the priority like any
//! keepalived tracked object, until `rise` good checks in a row. Because
//! the penalty is the same on every node, of two degraded nodes the better
//! one keeps the VIP instead of both giving it up. Only no progress at all
//! for `fault_after` (default 1 s) while stalled, or a shard thread gone,
//! is FAULT. A starved or late shard never faults the node, however long:
//! if every node's host is that busy, a FAULT on each would leave nobody
//! holding the VIP, while the weight keeps the least starved one master.
//!
//! [`Detector`] is the decision, pure and driven with `now` (fake-clock
//! tests below); [`SchedStats`] is the small I/O part that reads the
//! scheduler's view, keeping three open descriptors per shard (no churn).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::config::DataPlaneTrack;
use crate::proto::health::Hysteresis;

/// What the data plane publishes for one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSample {
    /// Bumped by the shard on every tick.
    pub heartbeat: u64,
    /// The shard thread has exited.
    pub exited: bool,
}

/// Fills the vector with one sample per shard (the data plane's side of the
/// link; see `SpawnArgs::data_plane`).
pub type SampleFn = dyn Fn(&mut Vec<ShardSample>) + Send + Sync;

/// Shards are threads named `shard-<index>`; their scheduler state is read
/// from the thread of that name.
pub const SHARD_THREAD_PREFIX: &str = "shard-";

/// How often the VRRP thread checks the data plane (its tracking tick).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// A shard that has not ticked yet is starting (runtime and listeners being
/// built) for at most this long.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// The data plane's state after one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Degraded after hysteresis: apply the weight.
    pub degraded: bool,
    /// FAULT, with the reason.
    pub dead: Option<String>,
    /// This check's finding (before hysteresis), for logs.
    pub finding: Finding,
}

/// What one check saw, worst shard first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Healthy,
    /// No progress for `for_` while waiting for a CPU.
    Starved {
        shard: usize,
        for_: Duration,
    },
    /// No progress for `for_` while parked in its event loop: the kernel
    /// woke it late.
    Late {
        shard: usize,
        for_: Duration,
    },
    /// No progress for `for_` while not waiting for a CPU.
    Stalled {
        shard: usize,
        for_: Duration,
    },
}

impl Finding {
    pub fn describe(&self) -> String {
        match *self {
            Finding::Healthy => "healthy".to_string(),
            Finding::Starved { shard, for_ } => {
                format!("shard {shard} starved of CPU, no progress for {for_:?}")
            }
            Finding::Late { shard, for_ } => format!(
                "shard {shard} parked in its event loop, woken late by the host, \
                 no progress for {for_:?}"
            ),
            Finding::Stalled { shard, for_ } => {
                format!("shard {shard} made no progress for {for_:?} (not waiting for a CPU)")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    beat: u64,
    at: Instant,
    /// The scheduler's view when progress was last seen.
    sched_at: Option<Sched>,
    /// Checks since then and what they saw.
    seen: Seen,
    /// The observer's own lateness since then (not the shard's time).
    lost: Duration,
}

/// What the checks since a shard's last progress saw it doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub checks: u32,
    /// Runnable (waiting for a CPU or on one).
    pub runnable: u32,
    /// Parked in its event loop (asleep in `io_uring_enter`).
    pub parked: u32,
}

impl Seen {
    fn record(&mut self, sched: Option<Sched>) {
        self.checks += 1;
        self.runnable += u32::from(sched.is_some_and(|s| s.runnable));
        self.parked += u32::from(sched.is_some_and(|s| s.parked));
    }
}

/// Whose fault a shard's missing progress is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Its own: blocked elsewhere, or spinning.
    Shard,
    /// Waiting for a CPU.
    Cpu,
    /// Parked in its event loop, the wake-up late.
    Wakeup,
}

/// A thread as the scheduler sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sched {
    /// State `R`: running or waiting for a CPU (and not seen parked).
    pub runnable: bool,
    /// Asleep in `io_uring_enter`: parked in its event loop, waiting for
    /// the kernel to complete something (at worst its tick timer).
    pub parked: bool,
    /// Cumulative time on a CPU, ns.
    pub run_ns: u64,
    /// Cumulative time waiting on a run queue, ns (booked when it runs).
    pub wait_ns: u64,
}

/// Pure liveness decision for one tracker (see the module docs).
#[derive(Debug, Clone)]
pub struct Detector {
    created: Instant,
    last_check: Option<Instant>,
    shards: Vec<Progress>,
    healthy: Hysteresis,
}

/// Whose fault no progress for `since` is, from the scheduler's view when
/// progress was last seen (`at`) and now, and what the checks in between
/// `seen`. Waiting for the host — runnable or parked at at least half of
/// the checks while on a CPU for less than half of `since` — or a booked
/// run-queue wait of at least half of `since` is not the shard's fault;
/// of the two, whichever the checks saw more often is named. Unknown
/// either side: the shard's (the stricter rule applies).
pub fn blame(at: Option<Sched>, now: Option<Sched>, since: Duration, seen: Seen) -> Blame {
    let (Some(a), Some(b)) = (at, now) else {
        return Blame::Shard;
    };
    let half = since.as_nanos() / 2;
    let ran = u128::from(b.run_ns.saturating_sub(a.run_ns));
    let waited = u128::from(b.wait_ns.saturating_sub(a.wait_ns));
    let waiting = seen.runnable + seen.parked;
    if seen.checks > 0 && waiting * 2 >= seen.checks && ran < half {
        if seen.parked > seen.runnable {
            Blame::Wakeup
        } else {
            Blame::Cpu
        }
    } else if waited >= half {
        Blame::Cpu
    } else {
        Blame::Shard
    }
}

/// The observer's own lateness: how much of the `gap` between two checks
/// lies past the check interval `every`.
pub fn observer_lost(gap: Duration, every: Duration) -> Duration {
    gap.saturating_sub(every)
}

impl Detector {
    pub fn new(cfg: &DataPlaneTrack, now: Instant) -> Detector {
        Detector {
            created: now,
            last_check: None,
            shards: Vec::new(),
            healthy: Hysteresis::new(cfg.rise.max(1), cfg.fall.max(1), true),
        }
    }

    /// One check: `samples[i]` and `scheds[i]` (the scheduler's view, if
    /// known) of every shard at `now`.
    pub fn check(
        &mut self,
        cfg: &DataPlaneTrack,
        now: Instant,
        samples: &[ShardSample],
        scheds: &[Option<Sched>],
    ) -> Verdict {
        let mut dead = None;
        let mut finding = Finding::Healthy;
        let mut worst = Duration::ZERO;
        let lost = self.last_check.map_or(Duration::ZERO, |t| {
            observer_lost(now.saturating_duration_since(t), CHECK_INTERVAL)
        });
        self.last_check = Some(now);
        for (i, s) in samples.iter().enumerate() {
            let sched = scheds.get(i).copied().flatten();
            if self.shards.len() <= i {
                self.shards.push(Progress {
                    beat: s.heartbeat,
                    at: now,
                    sched_at: sched,
                    seen: Seen::default(),
                    lost: Duration::ZERO,
                });
            }
            let p = &mut self.shards[i];
            if s.exited {
                dead.get_or_insert_with(|| format!("shard {i} exited"));
                continue;
            }
            if s.heartbeat != p.beat {
                *p = Progress {
                    beat: s.heartbeat,
                    at: now,
                    sched_at: sched,
                    seen: Seen::default(),
                    lost: Duration::ZERO,
                };
                continue;
            }
            if s.heartbeat == 0 && now.saturating_duration_since(self.created) < STARTUP_GRACE {
                continue;
            }
            p.lost += lost;
            let since = now.saturating_duration_since(p.at).saturating_sub(p.lost);
            p.seen.record(sched);
            let blame = blame(p.sched_at, sched, since, p.seen);
            if since >= cfg.fault_after && blame == Blame::Shard {
                dead.get_or_insert_with(|| {
                    format!(
                        "shard {i} made no progress for {since:?} (fault_after {:?})",
                        cfg.fault_after
                    )
                });
            }
            let (shard, for_) = (i, since);
            let (limit, f) = match blame {
                Blame::Shard => (cfg.stall_after, Finding::Stalled { shard, for_ }),
                Blame::Cpu => (cfg.starved_after, Finding::Starved { shard, for_ }),
                Blame::Wakeup => (cfg.starved_after, Finding::Late { shard, for_ }),
            };
            if since > limit && since > worst {
                worst = since;
                finding = f;
            }
        }
        self.healthy.record(finding == Finding::Healthy);
        Verdict {
            degraded: !self.healthy.is_up(),
            dead,
            finding,
        }
    }
}

/// One shard thread's `/proc/self/task/<tid>/` files.
struct TaskFiles {
    stat: File,
    schedstat: File,
    /// `syscall` (may be unreadable: then a shard never counts as parked).
    syscall: Option<File>,
}

/// Reads each shard thread's scheduler state: `/proc/self/task/<tid>/stat`
/// (state), `schedstat` ("run_ns wait_ns slices") and, for a sleeping
/// thread, `syscall` (the call it sleeps in), descriptors kept open and
/// re-read with `pread`.
#[derive(Default)]
pub struct SchedStats {
    files: Vec<Option<TaskFiles>>,
    next_scan: Option<Instant>,
    first_scan: Option<Instant>,
    warned: bool,
}

/// How often to look again for shard threads not found yet, once the
/// startup grace is over.
const RESCAN: Duration = Duration::from_secs(1);

/// When to look for missing shard threads again, `since_first` the first
/// look. The VRRP thread starts before the shards, so its first look
/// usually finds none; until a shard's files are open its scheduler view is
/// unknown, and an unknown view blames the shard (the strict rule). Waiting
/// a whole [`RESCAN`] there would judge a shard's first second by the
/// 30 ms rule even when the host, not the shard, held it up (seen: a
/// neighbour's console logging woke an idle shard 40 ms late, and the VIP
/// moved). So look at every check during the startup grace; later a
/// missing thread is rare (it exited, which is FAULT anyway) and once a
/// second is enough.
fn rescan_after(since_first: Duration) -> Duration {
    if since_first < STARTUP_GRACE {
        Duration::ZERO
    } else {
        RESCAN
    }
}

impl SchedStats {
    /// The scheduler's view of shards `0..n` into `out`.
    pub fn read(&mut self, n: usize, now: Instant, out: &mut Vec<Option<Sched>>) {
        out.clear();
        if self.files.len() < n {
            self.files.resize_with(n, || None);
        }
        if self.files[..n].iter().any(Option::is_none) && self.next_scan.is_none_or(|t| now >= t) {
            let since_first = now.saturating_duration_since(*self.first_scan.get_or_insert(now));
            self.next_scan = Some(now + rescan_after(since_first));
            self.scan(n, now);
        }
        let mut buf = [0u8; 512];
        for f in &mut self.files[..n] {
            let v = f.as_ref().and_then(|f| {
                // `syscall` first: a thread woken between the two reads
                // counts as parked (where it was), not as running.
                let parked = f.syscall.as_ref().is_some_and(|file| {
                    file.read_at(&mut buf, 0)
                        .is_ok_and(|len| parked_in_ring(&buf[..len]))
                });
                let len = f.stat.read_at(&mut buf, 0).ok()?;
                let runnable = !parked && parse_state(&buf[..len])? == b'R';
                let len = f.schedstat.read_at(&mut buf, 0).ok()?;
                let (run_ns, wait_ns) = parse_schedstat(&buf[..len])?;
                Some(Sched {
                    runnable,
                    parked,
                    run_ns,
                    wait_ns,
                })
            });
            if v.is_none() {
                // The thread is gone (or never was): look it up again later.
                *f = None;
            }
            out.push(v);
        }
    }

    fn scan(&mut self, n: usize, now: Instant) {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for e in dir.flatten() {
            let path = e.path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue;
            };
            let Some(i) = comm
                .trim_end()
                .strip_prefix(SHARD_THREAD_PREFIX)
                .and_then(|s| s.parse::<usize>().ok())
            else {
                continue;
            };
            if i < n && self.files[i].is_none() {
                let open = |f: &str| File::open(path.join(f)).ok();
                self.files[i] = open("stat")
                    .zip(open("schedstat"))
                    .map(|(stat, schedstat)| TaskFiles {
                        stat,
                        schedstat,
                        syscall: open("syscall"),
                    });
            }
        }
        // Warn once if shards have had time to start but cannot be found.
        let since = now.saturating_duration_since(*self.first_scan.get_or_insert(now));
        if since >= STARTUP_GRACE && !self.warned && self.files[..n].iter().any(Option::is_none) {
            self.warned = true;
            crate::warn!(
                "vrrp: no scheduler statistics for some shard threads ({SHARD_THREAD_PREFIX}N); \
                 a starved shard will count as stalled"
            );
        }
    }
}

/// The state letter of a `/proc/<pid>/task/<tid>/stat` line ("tid (comm) S ...").
fn parse_state(line: &[u8]) -> Option<u8> {
    let close = line.iter().rposition(|&b| b == b')')?;
    line.get(close + 2).copied()
}

/// Whether a `/proc/<pid>/task/<tid>/syscall` line ("nr arg1 ... sp pc",
/// "running", or "-1 sp pc" outside a call) shows the thread asleep in
/// `io_uring_enter`: a shard parked in its event loop.
fn parked_in_ring(line: &[u8]) -> bool {
    let nr = line
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or(b"");
    std::str::from_utf8(nr)
        .ok()
        .and_then(|n| n.parse::<libc::c_long>().ok())
        == Some(libc::SYS_io_uring_enter)
}

/// Run and wait time (ns) of a schedstat line.
fn parse_schedstat(line: &[u8]) -> Option<(u64, u64)> {
    let mut it = std::str::from_utf8(line).ok()?.split_ascii_whitespace();
    let run = it.next()?.parse().ok()?;
    let wait = it.next()?.parse().ok()?;
    Some((run, wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults::DATA_PLANE;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(beat: u64) -> ShardSample {
        ShardSample {
            heartbeat: beat,
            exited: false,
        }
    }

    fn sched(runnable: bool, run_ms: u64, wait_ms: u64) -> Option<Sched> {
        Some(Sched {
            runnable,
            parked: false,
            run_ns: run_ms * 1_000_000,
            wait_ns: wait_ms * 1_000_000,
        })
    }

    /// Asleep in `io_uring_enter` (parked in its event loop).
    fn parked(run_ms: u64, wait_ms: u64) -> Option<Sched> {
        sched(false, run_ms, wait_ms).map(|s| Sched { parked: true, ..s })
    }

    /// Sleeping between ticks, 1 ms of work per 10 ms tick, no waiting.
    fn idle(k: u64) -> Option<Sched> {
        sched(false, k, 0)
    }

    /// Runs a detector over `steps` checks 10 ms apart; `beat(k)` and
    /// `wait(k)` give shard 0's heartbeat and scheduler view at check k.
    fn run(
        cfg: &DataPlaneTrack,
        steps: u64,
        beat: impl Fn(u64) -> u64,
        wait: impl Fn(u64) -> Option<Sched>,
    ) -> Vec<Verdict> {
        let t0 = crate::testutil::epoch();
        let mut d = Detector::new(cfg, t0);
        (0..steps)
            .map(|k| d.check(cfg, t0 + ms(10 * k), &[sample(beat(k))], &[wait(k)]))
            .collect()
    }

    fn first_degraded(v: &[Verdict]) -> Option<u64> {
        v.iter().position(|v| v.degraded).map(|k| k as u64 * 10)
    }

    #[test]
    fn blame_rule() {
        use Blame::*;
        let base = sched(false, 100, 100);
        let seen = |checks, runnable, parked| Seen {
            checks,
            runnable,
            parked,
        };
        // (at, now, what the checks saw) -> blame, over 40 ms
        let cases = [
            // Runnable at every check and hardly ran: waiting for a CPU.
            (base, sched(true, 105, 100), seen(4, 4, 0), Cpu),
            // Runnable at half the checks: still starved.
            (base, sched(false, 105, 100), seen(4, 2, 0), Cpu),
            // Runnable at one check in four (a sleep loop caught awake): stalled.
            (base, sched(true, 105, 100), seen(4, 1, 0), Shard),
            // Runnable and ran most of the time: spinning, not starved.
            (base, sched(true, 125, 100), seen(4, 4, 0), Shard),
            // Sleeping (blocked), little run, little booked wait: stalled.
            (base, sched(false, 101, 110), seen(4, 0, 0), Shard),
            // Booked wait of at least half the time: starved (ran in between).
            (base, sched(false, 102, 120), seen(4, 0, 0), Cpu),
            // Parked in its ring at every check, not running: its timer is
            // late, the host's doing.
            (base, parked(100, 100), seen(4, 0, 4), Wakeup),
            // Parked or runnable at half the checks: the host's.
            (base, parked(101, 100), seen(4, 1, 1), Cpu),
            (base, parked(101, 100), seen(4, 0, 2), Wakeup),
            // Parked at one check in four, blocked elsewhere at the rest: stalled.
            (base, parked(101, 100), seen(4, 0, 1), Shard),
            // Parked whenever looked at yet on a CPU most of the time: its own.
            (base, parked(130, 100), seen(4, 0, 4), Shard),
            // Unknown either side: the shard's (the stricter rule applies).
            (None, sched(true, 0, 0), seen(4, 4, 0), Shard),
            (base, None, seen(4, 0, 4), Shard),
            // Counters that went backwards (new thread), never runnable.
            (base, sched(false, 10, 10), seen(4, 0, 0), Shard),
            // No checks yet.
            (base, sched(false, 100, 100), seen(0, 0, 0), Shard),
        ];
        for (i, (at, now, seen, want)) in cases.into_iter().enumerate() {
            assert_eq!(blame(at, now, ms(40), seen), want, "case {i}");
        }
    }

    #[test]
    fn observer_lateness_rule() {
        // (gap between two checks) -> the observer's own lateness
        let cases = [(10, 0), (9, 0), (11, 1), (60, 50), (0, 0)];
        for (gap, lost) in cases {
            assert_eq!(
                observer_lost(ms(gap), CHECK_INTERVAL),
                ms(lost),
                "gap {gap} ms"
            );
        }
    }

    #[test]
    fn a_late_wakeup_is_the_hosts_not_the_shards() {
        // Seen on a VM: a neighbour writing to the serial console holds the
        // shard's CPU with interrupts off; the shard, parked in its ring,
        // is woken 70 ms late, then ticks again. Nothing happens.
        let stuck = |k: u64| (100..107).contains(&k);
        let v = run(
            &DATA_PLANE,
            300,
            |k| if stuck(k) { 100 } else { k + 1 },
            |k| parked(k.min(100) + k.saturating_sub(107), 0),
        );
        assert!(v.iter().all(|v| !v.degraded && v.dead.is_none()));
        // Woken late for longer than starved_after: degraded then (a
        // hiccup that long still moves the VIP), never dead.
        let v = run(
            &DATA_PLANE,
            300,
            |k| k.min(100) + 1,
            |k| parked(k.min(100), 0),
        );
        assert_eq!(first_degraded(&v), Some(1310));
        assert!(matches!(v[131].finding, Finding::Late { shard: 0, .. }));
        assert!(v[131].finding.describe().contains("woken late"));
        assert!(v[299].degraded && v.iter().all(|v| v.dead.is_none()));
        // The same stop blocked in any other call (a sleep, a futex): stalled
        // after stall_after, dead after fault_after.
        let v = run(&DATA_PLANE, 250, |k| k.min(100) + 1, |k| idle(k.min(100)));
        assert_eq!(first_degraded(&v), Some(1040));
        assert!(v[200].dead.is_some());
    }

    #[test]
    fn the_observers_own_lateness_is_not_the_shards() {
        let t0 = crate::testutil::epoch();
        let cfg = DATA_PLANE;
        let mut d = Detector::new(&cfg, t0);
        let blocked = idle(100);
        let check = |d: &mut Detector, at: u64, beat: u64| {
            d.check(&cfg, t0 + ms(at), &[sample(beat)], &[blocked])
        };
        for k in 0..=100 {
            assert!(!check(&mut d, 10 * k, k + 1).degraded);
        }
        // The shard stops at 1000 ms; the observer itself is frozen 50 ms
        // past its interval (next check at 1060 ms): only 10 ms count.
        assert!(!check(&mut d, 1060, 101).degraded);
        assert!(!check(&mut d, 1070, 101).degraded);
        assert!(!check(&mut d, 1080, 101).degraded);
        // 40 ms of the observer's own time without progress: stalled.
        let v = check(&mut d, 1090, 101);
        assert!(v.degraded, "{v:?}");
        assert!(
            matches!(v.finding, Finding::Stalled { for_, .. } if for_ == ms(40)),
            "{v:?}"
        );
    }

    #[test]
    fn healthy_ticks_stay_healthy() {
        let v = run(&DATA_PLANE, 500, |k| k + 1, idle);
        assert!(v.iter().all(|v| !v.degraded && v.dead.is_none()));
    }

    #[test]
    fn ticks_every_20ms_are_healthy() {
        // A shard observed every other check (20 ms between observations).
        let v = run(&DATA_PLANE, 500, |k| k / 2 + 1, idle);
        assert!(
            v.iter().all(|v| !v.degraded),
            "{:?}",
            v.iter().find(|v| v.degraded)
        );
    }

    #[test]
    fn a_blocked_shard_degrades_fast_then_faults() {
        // Ticks until check 100, then blocked (not waiting for a CPU).
        let v = run(&DATA_PLANE, 250, |k| k.min(100) + 1, |k| idle(k.min(100)));
        let at = first_degraded(&v).unwrap();
        // Last progress seen at 1000 ms; stall_after 30 ms, fall 1: degraded at the
        // first check past 1030 ms.
        assert_eq!(at, 1040);
        assert!(matches!(v[104].finding, Finding::Stalled { shard: 0, .. }));
        assert!(v[104].dead.is_none());
        let dead = v.iter().position(|v| v.dead.is_some()).unwrap() as u64 * 10;
        assert_eq!(dead, 2000, "fault_after 1 s after the last progress");
        assert!(v[200].dead.as_ref().unwrap().contains("no progress"));
    }

    #[test]
    fn a_starved_shard_is_tolerated_for_starved_after() {
        // Blocked from check 100 on, but waiting for a CPU the whole time.
        // Runnable, not running (the kernel books no wait until it runs).
        let wait = |k: u64| sched(k >= 100, k.min(100), 0);
        let v = run(&DATA_PLANE, 300, |k| k.min(100) + 1, wait);
        let at = first_degraded(&v).unwrap();
        assert_eq!(
            at, 1310,
            "starved_after 300 ms after the last progress at 1000 ms"
        );
        assert!(matches!(v[131].finding, Finding::Starved { .. }));
        // Starved for well over fault_after: degraded, never dead.
        assert!(v[299].degraded);
        assert!(
            v.iter().all(|v| v.dead.is_none()),
            "a starved shard is not dead"
        );
        // An 80 ms burst of a real-time process on the shard's core: nothing.
        let v = run(
            &DATA_PLANE,
            300,
            |k| if (100..108).contains(&k) { 100 } else { k + 1 },
            |k| {
                let burst = (100..108).contains(&k);
                sched(
                    burst,
                    k.min(100) + k.saturating_sub(108),
                    k.clamp(100, 108) - 100,
                )
            },
        );
        assert!(v.iter().all(|v| !v.degraded && v.dead.is_none()));
        // A shard spinning on its CPU without ticking is stalled, not starved.
        let v = run(
            &DATA_PLANE,
            200,
            |k| k.min(100) + 1,
            |k| sched(k >= 100, k.min(100) + 10 * k.saturating_sub(100), 0),
        );
        assert_eq!(first_degraded(&v), Some(1040));
        assert!(matches!(v[104].finding, Finding::Stalled { .. }));
    }

    #[test]
    fn hysteresis_fall_and_rise() {
        let cfg = DataPlaneTrack {
            fall: 3,
            rise: 5,
            ..DATA_PLANE
        };
        // Stalled between checks 100 and 110 (100 ms), then healthy.
        let v = run(
            &cfg,
            200,
            |k| if (100..110).contains(&k) { 100 } else { k + 1 },
            idle,
        );
        // Last progress at check 99; bad from 103 (> 30 ms); fall 3 → degraded at 105.
        assert_eq!(first_degraded(&v), Some(1050));
        assert!(!v[104].degraded);
        // Good again from check 110; rise 5 → healthy at 114.
        assert!(v[113].degraded);
        assert!(!v[114].degraded);
        assert!(v.iter().all(|v| v.dead.is_none()));
    }

    #[test]
    fn exited_shard_is_dead_at_once_and_startup_has_grace() {
        let t0 = crate::testutil::epoch();
        let cfg = DATA_PLANE;
        let mut d = Detector::new(&cfg, t0);
        // Not ticked yet for 1.5 s: starting, not stalled.
        for k in 0..=150 {
            let v = d.check(
                &cfg,
                t0 + ms(10 * k),
                &[sample(0), sample(k)],
                &[None, None],
            );
            assert!(!v.degraded && v.dead.is_none(), "{v:?}");
        }
        // Past the grace: stalled.
        let mut v = None;
        for k in 151..=210 {
            v = Some(d.check(
                &cfg,
                t0 + ms(10 * k),
                &[sample(0), sample(k)],
                &[None, None],
            ));
        }
        assert!(v.unwrap().degraded);
        let v = d.check(
            &cfg,
            t0 + ms(2110),
            &[
                sample(8),
                ShardSample {
                    heartbeat: 7,
                    exited: true,
                },
            ],
            &[None, None],
        );
        assert_eq!(v.dead.as_deref(), Some("shard 1 exited"));
    }

    #[test]
    fn schedstat_of_this_thread_is_readable() {
        assert_eq!(
            parse_schedstat(b"40859500 168221891 31\n"),
            Some((40859500, 168221891))
        );
        assert_eq!(parse_schedstat(b"garbage"), None);
        assert_eq!(parse_state(b"123 (shard-0) S 1 2 3"), Some(b'S'));
        assert_eq!(parse_state(b"123 (a) b) R 1"), Some(b'R'));
        let ring = format!(
            "{} 0x5 0x0 0x1 0x1 0x0 0x8 0x7ffd 0x7f00\n",
            libc::SYS_io_uring_enter
        );
        assert!(parked_in_ring(ring.as_bytes()));
        assert!(!parked_in_ring(
            b"230 0x1 0x0 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f00\n"
        ));
        assert!(!parked_in_ring(b"running\n"));
        assert!(!parked_in_ring(b"-1 0x7ffd 0x7f00\n"));
        assert!(!parked_in_ring(b""));
        let name = std::thread::current().name().map(str::to_string);
        // The test harness names threads after the test; spawn a "shard-0".
        let h = std::thread::Builder::new()
            .name(format!("{SHARD_THREAD_PREFIX}0"))
            .spawn(|| std::thread::sleep(ms(300)))
            .unwrap();
        std::thread::sleep(ms(50));
        let mut s = SchedStats::default();
        let mut out = Vec::new();
        s.read(1, Instant::now(), &mut out);
        assert!(out[0].is_some(), "no schedstat for shard-0 ({name:?})");
        // Asleep in nanosleep: not runnable, and not parked in a ring.
        let s = out[0].unwrap();
        assert!(!s.runnable && !s.parked, "{s:?}");
        h.join().unwrap();
    }

    #[test]
    fn missing_shards_are_looked_for_at_every_check_during_startup_only() {
        assert_eq!(rescan_after(ms(0)), Duration::ZERO);
        assert_eq!(rescan_after(STARTUP_GRACE - ms(10)), Duration::ZERO);
        assert_eq!(rescan_after(STARTUP_GRACE), RESCAN);
        assert_eq!(rescan_after(ms(60_000)), RESCAN);
    }

    #[test]
    fn a_shard_thread_started_after_the_first_look_is_found_at_the_next_check() {
        // A prefix index no other test uses, so their "shard-0" threads
        // cannot answer for this one.
        const N: usize = 7;
        let mut s = SchedStats::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        s.read(N + 1, t0, &mut out);
        assert!(out[N].is_none(), "shard-{N} found before it exists");
        let (started, wait) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name(format!("{SHARD_THREAD_PREFIX}{N}"))
            .spawn(move || {
                started.send(()).unwrap();
                let _ = stopped.recv();
            })
            .unwrap();
        wait.recv().unwrap();
        s.read(N + 1, t0 + CHECK_INTERVAL, &mut out);
        assert!(out[N].is_some(), "shard-{N} not found at the next check");
        stop.send(()).unwrap();
        h.join().unwrap();
    }
}
