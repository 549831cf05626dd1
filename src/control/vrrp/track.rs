//! Tracking: what turns a healthy router into a lower-priority or faulted one.
//!
//! keepalived's semantics, because ringlb replaces it and users carry their
//! configs over:
//!
//! - every tracked object has a weight; a failing object with weight 0 puts
//!   the instance into FAULT;
//! - a negative weight is added to the priority while the object *fails*, a
//!   positive one while it *succeeds*;
//! - the result is clamped to 1..=254; an address owner (255) stays 255.
//!
//! Tracked objects: the instance's own interface and every `track_interface`
//! (weight 0: link down = FAULT), `track_script` (run every `interval`, killed
//! after `interval` and then counted as a failure, rise/fall hysteresis),
//! `track_upstream` (the data plane says every server of the upstream is
//! down) and `track_data_plane` (the shards' progress, see [`super::liveness`]:
//! a slow data plane costs `weight`, a dead one is FAULT, so a master that
//! cannot serve gives the VIP away while a merely busy host keeps it).
//!
//! Scripts are spawned and polled with `try_wait`, never waited for, so a
//! hanging script cannot delay an advert.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::liveness::{Detector, Finding, Sched, ShardSample};
use crate::config::{DataPlaneTrack, TrackScript, TrackUpstream, VrrpInstanceConfig};
use crate::proto::health::Hysteresis;

/// Data-plane callback: are all servers of the upstream named so down (in
/// the current snapshot)? An upstream the snapshot does not have is not down.
pub type UpstreamDownFn = dyn Fn(&str) -> bool + Send + Sync;
/// The data plane as one check sees it: every shard's sample and its
/// cumulative run-queue wait in ns (`None` when unknown).
#[derive(Debug, Clone, Copy)]
pub struct DataPlaneView<'a> {
    pub samples: &'a [ShardSample],
    pub scheds: &'a [Option<Sched>],
}

/// The priority after tracking, or `None` for FAULT. `objects` yields
/// `(weight, failing)` for every tracked object.
pub fn effective_priority(base: u8, objects: impl IntoIterator<Item = (i32, bool)>) -> Option<u8> {
    let mut sum: i32 = 0;
    for (weight, failing) in objects {
        match weight {
            0 if failing => return None,
            w if w < 0 && failing => sum += w,
            w if w > 0 && !failing => sum += w,
            _ => {}
        }
    }
    if base == 255 {
        return Some(255);
    }
    Some((i32::from(base) + sum).clamp(1, 254) as u8)
}

/// One `track_script`.
struct ScriptCheck {
    cfg: TrackScript,
    state: Hysteresis,
    running: Option<(Child, Instant)>,
    next_run: Instant,
}

impl ScriptCheck {
    fn poll(&mut self, now: Instant) {
        if let Some((child, deadline)) = &mut self.running {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.record(status.success());
                    self.running = None;
                }
                Ok(None) if now >= *deadline => {
                    crate::warn!("vrrp track_script {:?} timed out; killed", self.cfg.script);
                    let _ = child.kill();
                    let _ = child.wait();
                    self.record(false);
                    self.running = None;
                }
                Ok(None) => {}
                Err(_) => {
                    self.record(false);
                    self.running = None;
                }
            }
        }
        if self.running.is_none() && now >= self.next_run {
            self.next_run = now + self.cfg.interval;
            let mut parts = self.cfg.script.split_whitespace();
            let Some(program) = parts.next() else {
                self.record(false);
                return;
            };
            match Command::new(program)
                .args(parts)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
            {
                Ok(child) => self.running = Some((child, now + self.cfg.interval)),
                Err(e) if !spawn_error_is_a_verdict(&e) => {
                    // Our own process is out of descriptors or processes:
                    // that says nothing about what the script checks, so
                    // it must not move the VIP. Try again next interval.
                    crate::warn!(
                        "vrrp track_script {:?}: cannot start it ({e}); keeping its last result",
                        self.cfg.script
                    );
                }
                Err(e) => {
                    crate::warn!("vrrp track_script {:?}: {e}", self.cfg.script);
                    self.record(false);
                }
            }
        }
    }

    fn record(&mut self, ok: bool) {
        if let Some(up) = self.state.record(ok) {
            crate::info!(
                "vrrp track_script {:?} is now {}",
                self.cfg.script,
                if up { "ok" } else { "failing" }
            );
        }
    }
}

/// Whether a failure to start a track script counts as the script
/// failing. A missing or non-executable script does (the check is broken);
/// running out of descriptors, processes or memory in ringlb itself does not
/// (EMFILE, ENFILE, EAGAIN, ENOMEM): it is this node's momentary state, not
/// the tracked object's, and must not cause a failover.
pub fn spawn_error_is_a_verdict(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

impl Drop for ScriptCheck {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything one instance tracks.
pub struct Tracker {
    interfaces: Vec<String>,
    scripts: Vec<ScriptCheck>,
    upstreams: Vec<TrackUpstream>,
    data_plane: DataPlaneTrack,
    detector: Detector,
    /// Last degraded state logged.
    degraded: bool,
}

/// Why an instance is faulted (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None` = FAULT.
    pub priority: Option<u8>,
    /// First weight-0 object that fails, if any.
    pub fault_reason: Option<String>,
}

impl Tracker {
    pub fn new(inst: &VrrpInstanceConfig, now: Instant) -> Tracker {
        let mut interfaces = vec![inst.interface.clone()];
        for i in &inst.track_interface {
            if !interfaces.contains(i) {
                interfaces.push(i.clone());
            }
        }
        let scripts = inst
            .track_script
            .iter()
            .map(|s| ScriptCheck {
                cfg: s.clone(),
                state: Hysteresis::new(s.rise.max(1), s.fall.max(1), true),
                running: None,
                next_run: now,
            })
            .collect();
        Tracker {
            interfaces,
            scripts,
            upstreams: inst.track_upstream.clone(),
            data_plane: inst.track_data_plane,
            detector: Detector::new(&inst.track_data_plane, now),
            degraded: false,
        }
    }

    /// Advances the scripts and computes the verdict for base priority `base`.
    pub fn evaluate(
        &mut self,
        now: Instant,
        base: u8,
        link_up: &dyn Fn(&str) -> bool,
        upstream_down: Option<&UpstreamDownFn>,
        data_plane: Option<DataPlaneView<'_>>,
    ) -> Verdict {
        for s in &mut self.scripts {
            s.poll(now);
        }
        let mut reason = None;
        let mut objects: Vec<(i32, bool)> = Vec::new();
        for i in &self.interfaces {
            let down = !link_up(i);
            if down && reason.is_none() {
                reason = Some(format!("interface {i} is down"));
            }
            objects.push((0, down));
        }
        for s in &self.scripts {
            let failing = !s.state.is_up();
            if failing && s.cfg.weight == 0 && reason.is_none() {
                reason = Some(format!("track_script {:?} fails", s.cfg.script));
            }
            objects.push((s.cfg.weight, failing));
        }
        if let Some(f) = upstream_down {
            for u in &self.upstreams {
                let failing = f(&u.upstream);
                if failing && u.weight == 0 && reason.is_none() {
                    reason = Some(format!("every server of upstream {:?} is down", u.upstream));
                }
                objects.push((u.weight, failing));
            }
        }
        if let Some(dp) = data_plane {
            let v = self
                .detector
                .check(&self.data_plane, now, dp.samples, dp.scheds);
            if v.degraded != self.degraded {
                self.degraded = v.degraded;
                if v.degraded {
                    crate::warn!(
                        "vrrp: data plane degraded ({}); priority {:+}",
                        v.finding.describe(),
                        self.data_plane.weight
                    );
                } else {
                    crate::info!("vrrp: data plane healthy again");
                }
            }
            if let Some(why) = v.dead {
                reason.get_or_insert(format!("the data plane is dead: {why}"));
                objects.push((0, true));
            }
            if v.degraded && self.data_plane.weight == 0 && reason.is_none() {
                let why = match v.finding {
                    Finding::Healthy => "recovering".to_string(),
                    f => f.describe(),
                };
                reason = Some(format!("the data plane is degraded: {why}"));
            }
            objects.push((self.data_plane.weight, v.degraded));
        }
        let priority = effective_priority(base, objects);
        Verdict {
            priority,
            fault_reason: if priority.is_none() { reason } else { None },
        }
    }

    /// When scripts next need attention (a run is due, or one is running).
    pub fn next_wake(&self, now: Instant, tick: Duration) -> Option<Instant> {
        self.scripts
            .iter()
            .map(|s| {
                if s.running.is_some() {
                    now + tick
                } else {
                    s.next_run
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_weight_rules() {
        assert_eq!(effective_priority(100, []), Some(100));
        // Negative weight counts while failing.
        assert_eq!(effective_priority(100, [(-30, true)]), Some(70));
        assert_eq!(effective_priority(100, [(-30, false)]), Some(100));
        // Positive weight counts while succeeding.
        assert_eq!(effective_priority(100, [(20, false)]), Some(120));
        assert_eq!(effective_priority(100, [(20, true)]), Some(100));
        // Weight 0 failing = FAULT; ok = no effect.
        assert_eq!(effective_priority(100, [(0, true), (-10, true)]), None);
        assert_eq!(effective_priority(100, [(0, false)]), Some(100));
        // Clamped to 1..=254.
        assert_eq!(effective_priority(100, [(-200, true)]), Some(1));
        assert_eq!(effective_priority(250, [(50, false)]), Some(254));
        // The owner stays the owner, but can still fault.
        assert_eq!(effective_priority(255, [(-50, true)]), Some(255));
        assert_eq!(effective_priority(255, [(0, true)]), None);
    }

    fn inst() -> VrrpInstanceConfig {
        VrrpInstanceConfig {
            name: "VI_1".into(),
            interface: "lo".into(),
            virtual_router_id: 51,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            version: 3,
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_ipaddress: vec![("198.18.0.100".parse().unwrap(), 24)],
            unicast_peers: vec![],
            unicast_src: None,
            auth_pass: None,
            track_upstream: vec![],
            positions: vec![],
            track_interface: vec![],
            track_script: vec![],
            track_data_plane: crate::config::defaults::DATA_PLANE,
            notify: None,
            sync_group: None,
            garp_repeat: 5,
            garp_interval: Duration::ZERO,
            garp_refresh: Duration::ZERO,
            garp_master_delay: Duration::ZERO,
        }
    }

    #[test]
    fn resource_exhaustion_is_not_a_script_verdict() {
        use std::io::Error;
        let cases = [
            (Error::from_raw_os_error(libc::EMFILE), false),
            (Error::from_raw_os_error(libc::ENFILE), false),
            (Error::from_raw_os_error(libc::EAGAIN), false),
            (Error::from_raw_os_error(libc::ENOMEM), false),
            (Error::from_raw_os_error(libc::ENOENT), true),
            (Error::from_raw_os_error(libc::EACCES), true),
            (Error::other("no errno"), true),
        ];
        for (e, verdict) in cases {
            assert_eq!(spawn_error_is_a_verdict(&e), verdict, "{e}");
        }
    }

    #[test]
    fn interface_upstream_and_liveness() {
        let now = Instant::now();
        let mut i = inst();
        i.track_interface = vec!["lo".into(), "eth9".into()];
        i.track_upstream = vec![TrackUpstream {
            upstream: "app".into(),
            weight: -40,
        }];
        let mut t = Tracker::new(&i, now);
        let up_all = |_: &str| true;
        let eth9_down = |n: &str| n != "eth9";
        let all_down = |_: &str| true;
        let none_down = |_: &str| false;
        fn view(beat: &[ShardSample]) -> DataPlaneView<'_> {
            DataPlaneView {
                samples: beat,
                scheds: &[None],
            }
        }
        let beat = |n: u64| {
            [ShardSample {
                heartbeat: n,
                exited: false,
            }]
        };
        let ms = Duration::from_millis;
        let v = t.evaluate(now, 100, &up_all, Some(&none_down), Some(view(&beat(1))));
        assert_eq!(v.priority, Some(100));
        let v = t.evaluate(now, 100, &up_all, Some(&all_down), Some(view(&beat(1))));
        assert_eq!(v.priority, Some(60));
        let v = t.evaluate(now, 100, &eth9_down, Some(&none_down), Some(view(&beat(1))));
        assert_eq!(v.priority, None);
        assert_eq!(v.fault_reason.as_deref(), Some("interface eth9 is down"));
        // A stalled data plane (checked every 10 ms) costs the weight
        // (default -128)...
        let mut v = None;
        for k in 1..=5 {
            v = Some(t.evaluate(now + ms(10 * k), 200, &up_all, None, Some(view(&beat(1)))));
        }
        assert_eq!(v.as_ref().unwrap().priority, Some(72));
        // ... and no progress for fault_after is FAULT.
        for k in 6..=110 {
            v = Some(t.evaluate(now + ms(10 * k), 200, &up_all, None, Some(view(&beat(1)))));
        }
        let v = v.unwrap();
        assert_eq!(v.priority, None);
        assert!(v.fault_reason.unwrap().contains("data plane is dead"));
        // A shard gone is FAULT at once.
        let gone = [ShardSample {
            heartbeat: 2,
            exited: true,
        }];
        let v = t.evaluate(now + ms(1110), 200, &up_all, None, Some(view(&gone)));
        assert_eq!(v.priority, None);
    }

    #[test]
    fn script_rise_fall_and_timeout() {
        let t0 = Instant::now();
        let mut i = inst();
        i.track_script = vec![TrackScript {
            script: "false".into(),
            interval: Duration::from_millis(20),
            rise: 1,
            fall: 2,
            weight: -10,
        }];
        let mut t = Tracker::new(&i, t0);
        let up = |_: &str| true;
        let start = Instant::now();
        let mut seen = None;
        // Bounded: the script fails twice (fall = 2), then weight applies.
        while start.elapsed() < Duration::from_secs(10) {
            let v = t.evaluate(Instant::now(), 100, &up, None, None);
            if v.priority == Some(90) {
                seen = v.priority;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(seen, Some(90));

        // A script that outlives its interval is killed and counts as failed.
        i.track_script = vec![TrackScript {
            script: "sleep 5".into(),
            interval: Duration::from_millis(30),
            rise: 1,
            fall: 1,
            weight: 0,
        }];
        let mut t = Tracker::new(&i, Instant::now());
        let start = Instant::now();
        let mut faulted = false;
        while start.elapsed() < Duration::from_secs(4) {
            if t.evaluate(Instant::now(), 100, &up, None, None)
                .priority
                .is_none()
            {
                faulted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(faulted, "a hanging script must time out and fail");
    }
}
