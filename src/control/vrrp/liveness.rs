//! Data-plane liveness as a VRRP tracked object: a dead data plane gives
//! the VIP away within a few advert intervals, a busy host does not.
//!
//! Every shard bumps a heartbeat counter each tick (10 ms). A heartbeat that
//! stops moving has two very different causes, and treating them alike is
//! what empties a cluster: on a loaded host (busy loops or a real-time
//! process on the shards' core) every node's shards stall together, every
//! node faults, and nobody holds the VIP. So the detector asks the kernel
//! which one it is. A shard without progress that was runnable at most of
//! the checks since (`/proc/self/task/<tid>/stat` state `R`) but ran for
//! less than half of that time (`schedstat` run time), or whose booked
//! run-queue wait grew by at least half of it, is **starved**: the host is busy; tolerated for
//! `starved_after`. One that was not — blocked in a call, or spinning on the
//! CPU — is **stalled**: its own fault; tolerated for `stall_after` only.
//! (The run-queue wait alone is not enough: the kernel books it only when
//! the waiting thread finally runs.)
//!
//! Either makes the data plane *degraded*, which, after `fall` checks in a
//! row, adds the tracker's (negative) `weight` to the priority like any
//! keepalived tracked object, until `rise` good checks in a row. Because
//! the penalty is the same on every node, of two degraded nodes the better
//! one keeps the VIP instead of both giving it up. Only no progress at all
//! for `fault_after` (default 1 s) while not starved, or a shard thread
//! gone, is FAULT. A starved shard never faults the node, however long: if
//! every node's host is that busy, a FAULT on each would leave nobody
//! holding the VIP, while the weight keeps the least starved one master.
//!
//! [`Detector`] is the decision, pure and driven with `now` (fake-clock
//! tests below); [`SchedStats`] is the small I/O part that reads the
//! scheduler's view, keeping two open descriptors per shard (no churn).

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
    /// Checks since then, and how many of them saw the thread runnable.
    checks: u32,
    runnable: u32,
}

/// A thread as the scheduler sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sched {
    /// State `R`: running or waiting for a CPU.
    pub runnable: bool,
    /// Cumulative time on a CPU, ns.
    pub run_ns: u64,
    /// Cumulative time waiting on a run queue, ns (booked when it runs).
    pub wait_ns: u64,
}

/// Pure liveness decision for one tracker (see the module docs).
#[derive(Debug, Clone)]
pub struct Detector {
    created: Instant,
    shards: Vec<Progress>,
    healthy: Hysteresis,
}

/// Whether a shard without progress for `since` is starved of CPU rather
/// than stalled: runnable at `runnable` of the `checks` since (at least
/// half) and on a CPU for less than half of `since`, or its booked
/// run-queue wait grew by at least half of `since`.
pub fn starved(
    at: Option<Sched>,
    now: Option<Sched>,
    since: Duration,
    runnable: u32,
    checks: u32,
) -> bool {
    let (Some(a), Some(b)) = (at, now) else {
        return false;
    };
    let half = since.as_nanos() / 2;
    let ran = u128::from(b.run_ns.saturating_sub(a.run_ns));
    let waited = u128::from(b.wait_ns.saturating_sub(a.wait_ns));
    (checks > 0 && runnable * 2 >= checks && ran < half) || waited >= half
}

impl Detector {
    pub fn new(cfg: &DataPlaneTrack, now: Instant) -> Detector {
        Detector {
            created: now,
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
        for (i, s) in samples.iter().enumerate() {
            let sched = scheds.get(i).copied().flatten();
            if self.shards.len() <= i {
                self.shards.push(Progress {
                    beat: s.heartbeat,
                    at: now,
                    sched_at: sched,
                    checks: 0,
                    runnable: 0,
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
                    checks: 0,
                    runnable: 0,
                };
                continue;
            }
            if s.heartbeat == 0 && now.saturating_duration_since(self.created) < STARTUP_GRACE {
                continue;
            }
            let since = now.saturating_duration_since(p.at);
            p.checks += 1;
            p.runnable += u32::from(sched.is_some_and(|s| s.runnable));
            let starving = starved(p.sched_at, sched, since, p.runnable, p.checks);
            if since >= cfg.fault_after && !starving {
                dead.get_or_insert_with(|| {
                    format!(
                        "shard {i} made no progress for {since:?} (fault_after {:?})",
                        cfg.fault_after
                    )
                });
            }
            let (limit, f) = if starving {
                (
                    cfg.starved_after,
                    Finding::Starved {
                        shard: i,
                        for_: since,
                    },
                )
            } else {
                (
                    cfg.stall_after,
                    Finding::Stalled {
                        shard: i,
                        for_: since,
                    },
                )
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

/// Reads each shard thread's scheduler state: `/proc/self/task/<tid>/stat`
/// (state) and `schedstat` ("run_ns wait_ns slices"), descriptors kept open
/// and re-read with `pread`.
#[derive(Default)]
pub struct SchedStats {
    files: Vec<Option<(File, File)>>,
    next_scan: Option<Instant>,
    first_scan: Option<Instant>,
    warned: bool,
}

/// How often to look again for shard threads not found yet.
const RESCAN: Duration = Duration::from_secs(1);

impl SchedStats {
    /// The scheduler's view of shards `0..n` into `out`.
    pub fn read(&mut self, n: usize, now: Instant, out: &mut Vec<Option<Sched>>) {
        out.clear();
        if self.files.len() < n {
            self.files.resize_with(n, || None);
        }
        if self.files[..n].iter().any(Option::is_none) && self.next_scan.is_none_or(|t| now >= t) {
            self.next_scan = Some(now + RESCAN);
            self.scan(n, now);
        }
        let mut buf = [0u8; 512];
        for f in &mut self.files[..n] {
            let v = f.as_ref().and_then(|(stat, schedstat)| {
                let len = stat.read_at(&mut buf, 0).ok()?;
                let runnable = parse_state(&buf[..len])? == b'R';
                let len = schedstat.read_at(&mut buf, 0).ok()?;
                let (run_ns, wait_ns) = parse_schedstat(&buf[..len])?;
                Some(Sched {
                    runnable,
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
                self.files[i] = open("stat").zip(open("schedstat"));
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
            run_ns: run_ms * 1_000_000,
            wait_ns: wait_ms * 1_000_000,
        })
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
    fn starved_rule() {
        let base = sched(false, 100, 100);
        // (at, now, since, runnable checks, checks) -> starved
        let cases = [
            // Runnable at every check and hardly ran: waiting for a CPU.
            (base, sched(true, 105, 100), 4, 4, true),
            // Runnable at half the checks: still starved.
            (base, sched(false, 105, 100), 2, 4, true),
            // Runnable at one check in four (a sleep loop caught awake): stalled.
            (base, sched(true, 105, 100), 1, 4, false),
            // Runnable and ran most of the time: spinning, not starved.
            (base, sched(true, 125, 100), 4, 4, false),
            // Sleeping (blocked), little run, little booked wait: stalled.
            (base, sched(false, 101, 110), 0, 4, false),
            // Booked wait of at least half the time: starved (ran in between).
            (base, sched(false, 102, 120), 0, 4, true),
            // Unknown either side: not starved (the stricter rule applies).
            (None, sched(true, 0, 0), 4, 4, false),
            (base, None, 4, 4, false),
            // Counters that went backwards (new thread), never runnable.
            (base, sched(false, 10, 10), 0, 4, false),
            // No checks yet.
            (base, sched(false, 100, 100), 0, 0, false),
        ];
        for (i, (at, now, r, c, want)) in cases.into_iter().enumerate() {
            assert_eq!(starved(at, now, ms(40), r, c), want, "case {i}");
        }
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
        let v = d.check(&cfg, t0 + ms(1500), &[sample(0), sample(0)], &[None, None]);
        assert!(!v.degraded && v.dead.is_none(), "{v:?}");
        // Past the grace: stalled.
        let v = d.check(&cfg, t0 + ms(2100), &[sample(0), sample(7)], &[None, None]);
        assert!(v.degraded);
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
        h.join().unwrap();
    }
}
