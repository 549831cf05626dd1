//! Upstream health, sans-IO: hysteresis, passive failure windows, active
//! probe scheduling, and judging a probe's HTTP response.
//!
//! # Why it is built this way
//!
//! Health decisions are pure functions of a sequence of observations and
//! times, so they live here with no sockets and no clock: every method takes
//! `now: Instant`, and the I/O side (the control thread's probe tasks, the
//! shards' request outcomes) feeds results in. That makes every rule — "rise
//! successes to come up", "a timeout is a failure", "the passive window
//! expires" — a deterministic unit test on a fake clock, the way quinn-proto
//! tests its timers.
//!
//! - [`Hysteresis`] is the rise/fall counter (as in pingora, HAProxy,
//!   keepalived): a server flips state only after `rise` consecutive
//!   successes or `fall` consecutive failures, and [`Hysteresis::record`]
//!   says *when* it flips, so callers publish a new snapshot only then.
//! - [`PassiveWindow`] is nginx's `max_fails`/`fail_timeout` for failures
//!   seen on real traffic (exact semantic on the type).
//! - [`ActiveChecker`] is the per-server active probe timer machine:
//!   `poll_timeout` says when to wake, `handle_timeout` says "start a probe"
//!   or "the probe timed out", `handle_result` feeds the outcome.
//! - [`judge_http_response`] classifies a probe response head, and
//!   [`probe_request`] builds the request bytes once per server.

use std::time::{Duration, Instant};

use crate::config::HealthCheckConfig;

/// A change of a server's health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub up: bool,
}

// ---------------------------------------------------------------------------
// Hysteresis
// ---------------------------------------------------------------------------

/// Rise/fall counter: `rise` consecutive successes bring a down server up,
/// `fall` consecutive failures bring an up server down. A result that agrees
/// with the current state clears the opposite streak. `rise`/`fall` of 0 are
/// treated as 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results disagreeing with `up`.
    streak: u32,
}

impl Hysteresis {
    pub fn new(rise: u32, fall: u32, initially_up: bool) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: initially_up,
            streak: 0,
        }
    }

    /// Records one observation; returns `Some(new_state)` exactly when the
    /// state flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let need = if self.up { self.fall } else { self.rise };
        if self.streak >= need {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive observations so far that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }
}

// ---------------------------------------------------------------------------
// Passive window (nginx max_fails / fail_timeout)
// ---------------------------------------------------------------------------

/// Passive failure accounting, like nginx's `max_fails` / `fail_timeout`.
///
/// Exact semantic:
/// - `max_fails == 0` disables it: the server is always available and
///   [`PassiveWindow::record_failure`] always returns `false`.
/// - **Counting.** The first failure opens a window `[t0, t0 + fail_timeout)`.
///   Failures inside the window add up; a failure at or after the window's end
///   starts a new window with count 1. When the count reaches `max_fails` the
///   server *trips*: unavailable until `now + fail_timeout`, and
///   `record_failure` returns `true` (it became unavailable).
/// - **Tripped.** Failures while unavailable (late results of requests that
///   were already in flight) push the end out to `now + fail_timeout` and
///   return `false`. Successes while unavailable are ignored.
/// - **Probation.** Once the down period is over the server is available again
///   but stays tripped, like nginx which keeps `fails` at `max_fails`: the
///   first failure re-trips it at once (returns `true`) rather than needing
///   `max_fails` more, so a dead server gets one trial request per
///   `fail_timeout`, not `max_fails`. The first success in probation clears
///   everything (back to counting with no failures).
/// - **Successes while counting** clear the count only once the window has
///   expired (nginx resets `fails` on a success only after `fail_timeout`), so
///   interleaved successes don't hide a burst of failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveWindow {
    max_fails: u32,
    fail_timeout: Duration,
    state: Passive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passive {
    Counting { fails: u32, window_start: Instant },
    Clean,
    Tripped { until: Instant },
}

impl PassiveWindow {
    pub fn new(max_fails: u32, fail_timeout: Duration) -> Self {
        PassiveWindow {
            max_fails,
            fail_timeout,
            state: Passive::Clean,
        }
    }

    /// A reload changed `max_fails` / `fail_timeout`: the new ones govern
    /// from now on, and what was observed carries over. A count already at
    /// or above a lowered `max_fails` trips on the next failure; a tripped
    /// server stays out until the end already set (it has no trip time to
    /// recompute from); `max_fails = 0` disables the window at once.
    pub fn reconfigure(&mut self, max_fails: u32, fail_timeout: Duration) {
        self.max_fails = max_fails;
        self.fail_timeout = fail_timeout;
        if max_fails == 0 {
            self.state = Passive::Clean;
        }
    }

    /// Records a failed request (connect error, timeout, 5xx per policy).
    /// Returns `true` iff this failure made the server unavailable.
    pub fn record_failure(&mut self, now: Instant) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        let until = now + self.fail_timeout;
        match self.state {
            Passive::Tripped { until: old } => {
                let was_available = now >= old;
                self.state = Passive::Tripped {
                    until: until.max(old),
                };
                was_available
            }
            Passive::Counting {
                fails,
                window_start,
            } if now < window_start + self.fail_timeout => {
                if fails + 1 >= self.max_fails {
                    self.state = Passive::Tripped { until };
                    true
                } else {
                    self.state = Passive::Counting {
                        fails: fails + 1,
                        window_start,
                    };
                    false
                }
            }
            Passive::Counting { .. } | Passive::Clean => {
                if self.max_fails <= 1 {
                    self.state = Passive::Tripped { until };
                    true
                } else {
                    self.state = Passive::Counting {
                        fails: 1,
                        window_start: now,
                    };
                    false
                }
            }
        }
    }

    /// Records a successful request.
    pub fn record_success(&mut self, now: Instant) {
        match self.state {
            Passive::Tripped { until } if now >= until => self.state = Passive::Clean,
            Passive::Counting { window_start, .. } if now >= window_start + self.fail_timeout => {
                self.state = Passive::Clean
            }
            _ => {}
        }
    }

    /// Whether the server may be picked at `now`.
    pub fn available(&self, now: Instant) -> bool {
        match self.state {
            Passive::Tripped { until } => now >= until,
            _ => true,
        }
    }

    /// When an unavailable server becomes available again (for scheduling a
    /// snapshot refresh); `None` if it is not currently tripped.
    pub fn unavailable_until(&self) -> Option<Instant> {
        match self.state {
            Passive::Tripped { until } => Some(until),
            _ => None,
        }
    }

    /// Failures counted in the current window (`max_fails` when tripped).
    pub fn fails(&self, now: Instant) -> u32 {
        match self.state {
            Passive::Clean => 0,
            Passive::Counting {
                fails,
                window_start,
            } => {
                if now < window_start + self.fail_timeout {
                    fails
                } else {
                    0
                }
            }
            Passive::Tripped { .. } => self.max_fails,
        }
    }
}

// ---------------------------------------------------------------------------
// Active checker
// ---------------------------------------------------------------------------

/// Timing and thresholds of an active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveConfig {
    /// From the start of one probe to the start of the next.
    pub interval: Duration,
    /// A probe without a result after this long is a failure.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl From<&HealthCheckConfig> for ActiveConfig {
    fn from(c: &HealthCheckConfig) -> Self {
        ActiveConfig {
            interval: c.interval,
            timeout: c.timeout,
            rise: c.rise,
            fall: c.fall,
        }
    }
}

/// Identifies one probe, so a result that arrives after its probe timed out
/// (or after a newer probe started) is not credited to the wrong probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeId(pub u64);

/// What the caller must do after [`ActiveChecker::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAction {
    /// Start a probe now; report its outcome with this id. It must finish
    /// before `deadline`, else it counts as failed.
    Start { id: ProbeId, deadline: Instant },
    /// The probe `id` timed out (counted as a failure); abandon its I/O.
    /// `transition` is set if that failure flipped the state.
    TimedOut {
        id: ProbeId,
        transition: Option<Transition>,
    },
}

/// Active health checking of one server, sans-IO.
///
/// Probes start every `interval` (measured start to start, so the cadence
/// does not drift with probe latency), at most one at a time. The first probe
/// is delayed by a caller-chosen `first_delay` (see [`spread`]) so that many
/// servers configured together do not probe in lockstep.
///
/// Drive it like quinn-proto's connection: sleep until [`poll_timeout`],
/// then call [`handle_timeout`] repeatedly until it returns `None`;
/// report each probe's outcome with [`handle_result`].
///
/// [`poll_timeout`]: ActiveChecker::poll_timeout
/// [`handle_timeout`]: ActiveChecker::handle_timeout
/// [`handle_result`]: ActiveChecker::handle_result
#[derive(Debug, Clone)]
pub struct ActiveChecker {
    cfg: ActiveConfig,
    hyst: Hysteresis,
    next_probe: Instant,
    in_flight: Option<(ProbeId, Instant)>,
    next_id: u64,
}

impl ActiveChecker {
    pub fn new(cfg: ActiveConfig, now: Instant, first_delay: Duration, initially_up: bool) -> Self {
        ActiveChecker {
            cfg,
            hyst: Hysteresis::new(cfg.rise, cfg.fall, initially_up),
            next_probe: now + first_delay,
            in_flight: None,
            next_id: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.hyst.is_up()
    }

    pub fn config(&self) -> &ActiveConfig {
        &self.cfg
    }

    /// The probe currently running, if any.
    pub fn in_flight(&self) -> Option<ProbeId> {
        self.in_flight.map(|(id, _)| id)
    }

    /// The next instant at which [`ActiveChecker::handle_timeout`] has work:
    /// the running probe's deadline, or else the next probe's start. Always
    /// `Some` (a checker always has a next probe); `Option` for symmetry with
    /// the other sans-IO machines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.in_flight {
            Some((_, deadline)) => deadline,
            None => self.next_probe,
        })
    }

    /// Advances timers. Returns at most one action per call; call again until
    /// `None` (a timeout and an overdue next probe can both be due).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ProbeAction> {
        if let Some((id, deadline)) = self.in_flight {
            if now < deadline {
                return None;
            }
            self.in_flight = None;
            let transition = self.hyst.record(false).map(|up| Transition { up });
            return Some(ProbeAction::TimedOut { id, transition });
        }
        if now < self.next_probe {
            return None;
        }
        let id = ProbeId(self.next_id);
        self.next_id += 1;
        let deadline = now + self.cfg.timeout;
        self.in_flight = Some((id, deadline));
        // Keep the cadence (start to start); if we fell a whole interval
        // behind (a stalled control thread), restart it from now rather than
        // bursting to catch up.
        self.next_probe += self.cfg.interval;
        if self.next_probe <= now {
            self.next_probe = now + self.cfg.interval;
        }
        Some(ProbeAction::Start { id, deadline })
    }

    /// Reports the outcome of probe `id`. Results for a probe that is no
    /// longer running (already timed out) are ignored. A result reported at or
    /// after the probe's deadline counts as a failure, whatever `ok` says.
    pub fn handle_result(&mut self, now: Instant, id: ProbeId, ok: bool) -> Option<Transition> {
        match self.in_flight {
            Some((running, deadline)) if running == id => {
                self.in_flight = None;
                let ok = ok && now < deadline;
                self.hyst.record(ok).map(|up| Transition { up })
            }
            _ => None,
        }
    }
}

/// First-probe delay for server `index` of `count`: spreads first probes
/// evenly over one `interval` so a large upstream does not probe in a burst.
pub fn spread(index: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let nanos = interval.as_nanos() * (index % count) as u128 / count as u128;
    Duration::from_nanos(nanos as u64)
}

// ---------------------------------------------------------------------------
// HTTP probe request / response judge
// ---------------------------------------------------------------------------

/// A probe response head larger than this is judged malformed: health
/// endpoints answer with small heads, and the probe must not buffer forever.
pub const MAX_PROBE_HEAD: usize = 8 * 1024;

/// Headers parsed from a probe response; more is fine (we only need the
/// status line) but costs nothing to allow.
const MAX_PROBE_HEADERS: usize = 32;

/// The verdict on the bytes received so far from an HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Need more bytes.
    Partial,
    /// Not an HTTP/1.x response, or the head exceeds [`MAX_PROBE_HEAD`].
    Malformed,
    /// Parsed; `healthy` is whether `code` is in the expected range.
    Status { code: u16, healthy: bool },
}

impl HttpVerdict {
    /// `Some(ok)` once a decision is possible: `Malformed` is unhealthy.
    pub fn outcome(self) -> Option<bool> {
        match self {
            HttpVerdict::Partial => None,
            HttpVerdict::Malformed => Some(false),
            HttpVerdict::Status { healthy, .. } => Some(healthy),
        }
    }
}

/// Judges the raw bytes of a probe response (head, possibly followed by body
/// bytes). `expect` is the inclusive range of healthy statuses.
pub fn judge_http_response(head: &[u8], expect: (u16, u16)) -> HttpVerdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PROBE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let code = match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => resp.code,
        // httparse fills `code` before parsing headers; the status line is
        // all a probe needs.
        Err(httparse::Error::TooManyHeaders) => resp.code,
        Ok(httparse::Status::Partial) if head.len() < MAX_PROBE_HEAD => {
            return HttpVerdict::Partial
        }
        _ => None,
    };
    match code {
        Some(code) => HttpVerdict::Status {
            code,
            healthy: (expect.0..=expect.1).contains(&code),
        },
        None => HttpVerdict::Malformed,
    }
}

/// The request bytes of an HTTP probe. Built once per server per snapshot.
/// `host` is the Host header value (e.g. the server's `host:port`).
pub fn probe_request(path: &str, host: &str) -> Vec<u8> {
    let path = if path.is_empty() { "/" } else { path };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringlb-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // --- Hysteresis -------------------------------------------------------

    #[test]
    fn reconfigure_keeps_what_was_seen_under_the_new_limits() {
        let t0 = crate::testutil::epoch();
        // (max_fails before, failures before, new max_fails, failures after,
        //  available at the end)
        let cases = [
            (1, 0, 3, 2, true),  // raised: two more are not enough
            (1, 0, 3, 3, false), // ... three are
            (3, 2, 3, 1, false), // unchanged: the count carries over
            (5, 2, 2, 1, false), // lowered below the count: next failure trips
            (1, 1, 0, 3, true),  // tripped, then disabled: back at once
            (0, 3, 1, 1, false), // enabled by a reload
        ];
        for (i, (before, n1, after, n2, want)) in cases.into_iter().enumerate() {
            let mut w = PassiveWindow::new(before, ms(10_000));
            for _ in 0..n1 {
                w.record_failure(t0);
            }
            w.reconfigure(after, ms(10_000));
            for _ in 0..n2 {
                w.record_failure(t0 + ms(1));
            }
            assert_eq!(w.available(t0 + ms(2)), want, "case {i}");
        }
        // A tripped window keeps its end; the new timeout applies to the next trip.
        let mut w = PassiveWindow::new(1, ms(10_000));
        w.record_failure(t0);
        w.reconfigure(1, ms(100));
        assert!(!w.available(t0 + ms(9_999)));
        assert!(w.available(t0 + ms(10_000)));
        w.record_failure(t0 + ms(10_000));
        assert!(w.available(t0 + ms(10_100)));
    }

    #[test]
    fn rise_successes_to_come_up() {
        let mut h = Hysteresis::new(2, 3, false);
        assert_eq!(h.record(true), None);
        assert!(!h.is_up());
        assert_eq!(h.record(true), Some(true));
        assert!(h.is_up());
        assert_eq!(h.record(true), None);
    }

    #[test]
    fn fall_failures_to_go_down() {
        let mut h = Hysteresis::new(2, 3, true);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert!(h.is_up());
        assert_eq!(h.record(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(false), None);
    }

    #[test]
    fn streaks_must_be_consecutive() {
        let mut h = Hysteresis::new(2, 3, true);
        h.record(false);
        h.record(false);
        assert_eq!(h.streak(), 2);
        assert_eq!(h.record(true), None); // agreeing result resets
        assert_eq!(h.streak(), 0);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        // Coming back needs 2 in a row, a failure in between resets.
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = Hysteresis::new(0, 0, true);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(true), Some(true));
    }

    // --- PassiveWindow ----------------------------------------------------

    #[test]
    fn passive_trips_at_max_fails_within_window() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(3, ms(1000));
        assert!(!p.record_failure(t0));
        assert!(!p.record_failure(t0 + ms(100)));
        assert!(p.available(t0 + ms(200)));
        assert_eq!(p.fails(t0 + ms(200)), 2);
        assert!(p.record_failure(t0 + ms(900)));
        assert!(!p.available(t0 + ms(900)));
        assert!(!p.available(t0 + ms(1899)));
        assert_eq!(p.unavailable_until(), Some(t0 + ms(1900)));
        assert!(p.available(t0 + ms(1900)));
    }

    #[test]
    fn passive_window_expires() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(2, ms(1000));
        assert!(!p.record_failure(t0));
        assert_eq!(p.fails(t0 + ms(999)), 1);
        assert_eq!(p.fails(t0 + ms(1000)), 0);
        // Second failure after the window: new window, count 1, no trip.
        assert!(!p.record_failure(t0 + ms(1000)));
        assert!(p.available(t0 + ms(1000)));
        assert!(p.record_failure(t0 + ms(1500)));
    }

    #[test]
    fn passive_max_fails_zero_disables() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(0, ms(1000));
        for k in 0..100 {
            assert!(!p.record_failure(t0 + ms(k)));
        }
        assert!(p.available(t0 + ms(100)));
    }

    #[test]
    fn passive_max_fails_one_trips_immediately() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(1, ms(1000));
        assert!(p.record_failure(t0));
        assert!(!p.available(t0 + ms(1)));
    }

    #[test]
    fn passive_success_inside_window_does_not_reset() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(2, ms(1000));
        p.record_failure(t0);
        p.record_success(t0 + ms(10));
        assert!(p.record_failure(t0 + ms(20)));
    }

    #[test]
    fn passive_success_after_window_resets() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(2, ms(1000));
        p.record_failure(t0);
        p.record_success(t0 + ms(1000));
        assert_eq!(p.fails(t0 + ms(1000)), 0);
        assert!(!p.record_failure(t0 + ms(1001)));
    }

    #[test]
    fn passive_late_failures_extend_quarantine() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(1, ms(1000));
        assert!(p.record_failure(t0));
        // In-flight request fails later: not a new transition, but extends.
        assert!(!p.record_failure(t0 + ms(500)));
        assert!(!p.available(t0 + ms(1200)));
        assert!(p.available(t0 + ms(1500)));
        // Successes while quarantined are ignored.
        let mut q = PassiveWindow::new(1, ms(1000));
        q.record_failure(t0);
        q.record_success(t0 + ms(10));
        assert!(!q.available(t0 + ms(20)));
    }

    #[test]
    fn passive_probation_retrips_on_first_failure() {
        let t0 = crate::testutil::epoch();
        let mut p = PassiveWindow::new(3, ms(1000));
        for k in 0..3 {
            p.record_failure(t0 + ms(k));
        }
        let back = t0 + ms(1002);
        assert!(p.available(back));
        // One trial failure is enough to take it out again.
        assert!(p.record_failure(back));
        assert!(!p.available(back + ms(1)));
        assert_eq!(p.unavailable_until(), Some(back + ms(1000)));
        // A trial success clears it fully: three failures needed again.
        let later = back + ms(1000);
        p.record_success(later);
        assert_eq!(p.unavailable_until(), None);
        assert!(!p.record_failure(later));
        assert!(!p.record_failure(later + ms(1)));
        assert!(p.record_failure(later + ms(2)));
    }

    // --- ActiveChecker ----------------------------------------------------

    fn cfg(rise: u32, fall: u32) -> ActiveConfig {
        ActiveConfig {
            interval: ms(1000),
            timeout: ms(300),
            rise,
            fall,
        }
    }

    fn start(c: &mut ActiveChecker, now: Instant) -> ProbeId {
        match c.handle_timeout(now) {
            Some(ProbeAction::Start { id, deadline }) => {
                assert_eq!(deadline, now + c.config().timeout);
                id
            }
            other => panic!("expected Start at {now:?}, got {other:?}"),
        }
    }

    #[test]
    fn first_probe_waits_for_jitter_then_keeps_cadence() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(1, 1), t0, ms(250), true);
        assert_eq!(c.poll_timeout(), Some(t0 + ms(250)));
        assert_eq!(c.handle_timeout(t0 + ms(249)), None);
        let id = start(&mut c, t0 + ms(250));
        // While running, the next wake-up is the probe's deadline.
        assert_eq!(c.poll_timeout(), Some(t0 + ms(550)));
        // No second probe while one is in flight.
        assert_eq!(c.handle_timeout(t0 + ms(400)), None);
        assert_eq!(c.handle_result(t0 + ms(420), id, true), None);
        // Next start is one interval after the previous start.
        assert_eq!(c.poll_timeout(), Some(t0 + ms(1250)));
        assert_eq!(c.handle_timeout(t0 + ms(1249)), None);
        start(&mut c, t0 + ms(1250));
    }

    #[test]
    fn active_rise_successes_to_come_up() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(2, 3), t0, Duration::ZERO, false);
        let id = start(&mut c, t0);
        assert_eq!(c.handle_result(t0 + ms(10), id, true), None);
        assert!(!c.is_up());
        let id = start(&mut c, t0 + ms(1000));
        assert_eq!(
            c.handle_result(t0 + ms(1010), id, true),
            Some(Transition { up: true })
        );
        assert!(c.is_up());
    }

    #[test]
    fn active_fall_failures_to_go_down() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(2, 3), t0, Duration::ZERO, true);
        for k in 0..3u64 {
            let now = t0 + ms(1000 * k);
            let id = start(&mut c, now);
            let t = c.handle_result(now + ms(5), id, false);
            assert_eq!(t, (k == 2).then_some(Transition { up: false }), "probe {k}");
        }
        assert!(!c.is_up());
    }

    #[test]
    fn timeouts_count_as_failures() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(1, 2), t0, Duration::ZERO, true);
        let id0 = start(&mut c, t0);
        assert_eq!(c.handle_timeout(t0 + ms(299)), None);
        assert_eq!(
            c.handle_timeout(t0 + ms(300)),
            Some(ProbeAction::TimedOut {
                id: id0,
                transition: None
            })
        );
        assert_eq!(c.in_flight(), None);
        // A late result for the timed-out probe is ignored.
        assert_eq!(c.handle_result(t0 + ms(350), id0, true), None);
        let id1 = start(&mut c, t0 + ms(1000));
        assert_ne!(id0, id1);
        assert_eq!(
            c.handle_timeout(t0 + ms(1300)),
            Some(ProbeAction::TimedOut {
                id: id1,
                transition: Some(Transition { up: false })
            })
        );
        assert!(!c.is_up());
    }

    #[test]
    fn result_after_deadline_is_a_failure() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(1, 1), t0, Duration::ZERO, true);
        let id = start(&mut c, t0);
        // The caller reports "ok" but only after the deadline passed.
        assert_eq!(
            c.handle_result(t0 + ms(300), id, true),
            Some(Transition { up: false })
        );
    }

    #[test]
    fn timeout_longer_than_interval_yields_timeout_then_start() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(
            ActiveConfig {
                interval: ms(100),
                timeout: ms(250),
                rise: 1,
                fall: 5,
            },
            t0,
            Duration::ZERO,
            true,
        );
        start(&mut c, t0);
        let now = t0 + ms(250);
        assert!(matches!(
            c.handle_timeout(now),
            Some(ProbeAction::TimedOut { .. })
        ));
        // The next probe was due at 100ms: it starts now, no burst.
        start(&mut c, now);
        assert_eq!(c.handle_timeout(now), None);
        assert_eq!(c.poll_timeout(), Some(now + ms(250)));
    }

    #[test]
    fn stalled_caller_does_not_burst() {
        let t0 = crate::testutil::epoch();
        let mut c = ActiveChecker::new(cfg(1, 1), t0, Duration::ZERO, true);
        let id = start(&mut c, t0);
        c.handle_result(t0 + ms(1), id, true);
        // The control thread wakes 10 intervals late: one probe, then cadence.
        let late = t0 + ms(10_000);
        let id = start(&mut c, late);
        c.handle_result(late + ms(1), id, true);
        assert_eq!(c.handle_timeout(late + ms(2)), None);
        assert_eq!(c.poll_timeout(), Some(late + ms(1000)));
    }

    #[test]
    fn spread_distributes_first_probes() {
        let i = ms(1000);
        assert_eq!(spread(0, 4, i), ms(0));
        assert_eq!(spread(1, 4, i), ms(250));
        assert_eq!(spread(3, 4, i), ms(750));
        assert_eq!(spread(0, 0, i), ms(0));
        let t0 = crate::testutil::epoch();
        let wakes: Vec<Instant> = (0..4)
            .map(|k| {
                ActiveChecker::new(cfg(1, 1), t0, spread(k, 4, i), true)
                    .poll_timeout()
                    .unwrap()
            })
            .collect();
        assert!(wakes.windows(2).all(|w| w[0] < w[1]));
    }

    // --- HTTP judge -------------------------------------------------------

    #[test]
    fn judge_complete_heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            judge_http_response(ok, (200, 399)),
            HttpVerdict::Status {
                code: 200,
                healthy: true
            }
        );
        let err = b"HTTP/1.0 503 Service Unavailable\r\n\r\n";
        assert_eq!(
            judge_http_response(err, (200, 399)),
            HttpVerdict::Status {
                code: 503,
                healthy: false
            }
        );
        assert_eq!(
            judge_http_response(b"HTTP/1.1 399 X\r\n\r\n", (200, 399)).outcome(),
            Some(true)
        );
        assert_eq!(
            judge_http_response(b"HTTP/1.1 199 X\r\n\r\n", (200, 399)).outcome(),
            Some(false)
        );
    }

    #[test]
    fn judge_partial_and_malformed() {
        assert_eq!(
            judge_http_response(b"HTTP/1.1 200 OK\r\nConte", (200, 399)),
            HttpVerdict::Partial
        );
        assert_eq!(judge_http_response(b"", (200, 399)), HttpVerdict::Partial);
        assert_eq!(
            judge_http_response(b"SSH-2.0-OpenSSH_9.2\r\n", (200, 399)),
            HttpVerdict::Malformed
        );
        assert_eq!(HttpVerdict::Malformed.outcome(), Some(false));
        assert_eq!(HttpVerdict::Partial.outcome(), None);
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_PROBE_HEAD {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaa\r\n");
        }
        // More headers than we parse: the status line still decides.
        assert_eq!(
            judge_http_response(&big, (200, 399)),
            HttpVerdict::Status {
                code: 200,
                healthy: true
            }
        );
    }

    #[test]
    fn judge_many_headers_uses_status_line() {
        let mut head = b"HTTP/1.1 204 No Content\r\n".to_vec();
        for k in 0..40 {
            head.extend_from_slice(format!("X-H{k}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(
            judge_http_response(&head, (200, 299)),
            HttpVerdict::Status {
                code: 204,
                healthy: true
            }
        );
    }

    #[test]
    fn judge_oversized_partial_status_line_is_malformed() {
        let mut head = b"HTTP/1.1 200 ".to_vec();
        head.resize(MAX_PROBE_HEAD + 1, b'a');
        assert_eq!(
            judge_http_response(&head, (200, 399)),
            HttpVerdict::Malformed
        );
    }

    #[test]
    fn probe_request_is_a_valid_request() {
        let req = probe_request("/health", "10.0.0.1:8080");
        let mut h = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Request::new(&mut h);
        assert_eq!(r.parse(&req), Ok(httparse::Status::Complete(req.len())));
        assert_eq!(r.method, Some("GET"));
        assert_eq!(r.path, Some("/health"));
        assert!(r
            .headers
            .iter()
            .any(|h| h.name == "Host" && h.value == b"10.0.0.1:8080"));
        assert!(probe_request("", "h").starts_with(b"GET / HTTP/1.1\r\n"));
    }
}
