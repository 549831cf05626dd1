//! A simulated VRRP network for tests (quinn-proto style).
//!
//! Because the machine is sans-IO, a whole LAN of routers can run in one
//! thread on a fake clock: `step()` jumps the clock to the next wake-up (the
//! earliest `poll_timeout()` of a live router or the next packet delivery),
//! delivers packets, fires timers and puts new adverts on the bus. Adverts
//! travel as real bytes (`Repr::to_bytes` → `Repr::parse`), so the codec is
//! exercised too. The bus has a fixed delay, partitions, and deterministic
//! loss (xorshift RNG) with an optional cap on consecutive losses per link,
//! which is what separates "lossy but fine" from "the master looks dead".
//! Minutes of protocol time run in milliseconds, and timings are exact.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::machine::{master_down_interval, skew_time, Config, Event, Machine, State};
use super::wire::{Auth, Packet, Repr, Version, MULTICAST_V4};

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
const GROUP: IpAddr = IpAddr::V4(MULTICAST_V4);

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn percent(&mut self) -> u32 {
        (self.next() % 100) as u32
    }
}

struct Router {
    machine: Machine,
    ip: IpAddr,
    up: bool,
    group: u8,
    history: Vec<(Instant, Event)>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: IpAddr,
    bytes: Vec<u8>,
}

struct Sim {
    t0: Instant,
    now: Instant,
    routers: Vec<Router>,
    in_flight: Vec<InFlight>,
    seq: u64,
    delay: Duration,
    loss_percent: u32,
    max_consecutive_losses: u32,
    lost_in_row: HashMap<(usize, usize), u32>,
    rng: Rng,
    sent: u64,
    lost: u64,
    rejected: u64,
}

/// Router `i` has primary IP 198.18.0.(i+1).
fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, i as u8 + 1))
}

fn cfg(i: usize, priority: u8) -> Config {
    Config::new(51, priority, Duration::from_secs(1), ip(i), vec![VIP])
}

impl Sim {
    fn new(configs: Vec<Config>) -> Sim {
        let t0 = crate::testutil::epoch();
        let routers = configs
            .into_iter()
            .map(|c| Router {
                ip: c.primary_ip,
                machine: Machine::new(c),
                up: false,
                group: 0,
                history: Vec::new(),
            })
            .collect();
        Sim {
            t0,
            now: t0,
            routers,
            in_flight: Vec::new(),
            seq: 0,
            delay: Duration::from_millis(1),
            loss_percent: 0,
            max_consecutive_losses: u32::MAX,
            lost_in_row: HashMap::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            sent: 0,
            lost: 0,
            rejected: 0,
        }
    }

    /// Routers with the given priorities, all started at t0.
    fn with_priorities(prios: &[u8]) -> Sim {
        let mut s = Sim::new(prios.iter().enumerate().map(|(i, p)| cfg(i, *p)).collect());
        for i in 0..prios.len() {
            s.start(i);
        }
        s
    }

    fn start(&mut self, i: usize) {
        self.routers[i].up = true;
        self.routers[i].machine.handle_startup(self.now);
        self.flush(i);
    }

    /// Graceful stop: the machine's shutdown adverts go out, then it is gone.
    fn shutdown(&mut self, i: usize) {
        self.routers[i].machine.handle_shutdown(self.now);
        self.flush(i);
        self.routers[i].up = false;
    }

    /// Crash: silent from now on, nothing sent, nothing processed.
    fn crash(&mut self, i: usize) {
        self.routers[i].up = false;
    }

    fn partition(&mut self, groups: &[u8]) {
        for (r, g) in self.routers.iter_mut().zip(groups) {
            r.group = *g;
        }
    }

    fn heal(&mut self) {
        for r in &mut self.routers {
            r.group = 0;
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let timers = self
            .routers
            .iter()
            .filter(|r| r.up)
            .filter_map(|r| r.machine.poll_timeout());
        let packets = self.in_flight.iter().map(|p| p.at);
        timers.chain(packets).min()
    }

    /// Advance to the next wake-up and process it. False when nothing is pending.
    fn step(&mut self) -> bool {
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        self.in_flight.sort_by_key(|p| (p.at, p.seq));
        let due = self.in_flight.iter().take_while(|p| p.at <= now).count();
        let deliveries: Vec<InFlight> = self.in_flight.drain(..due).collect();
        for p in deliveries {
            self.deliver(p);
        }
        for i in 0..self.routers.len() {
            let r = &mut self.routers[i];
            if r.up && r.machine.poll_timeout().is_some_and(|t| t <= now) {
                r.machine.handle_timeout(now);
                self.flush(i);
            }
        }
        true
    }

    fn run_until(&mut self, t: Instant) {
        while self.next_wakeup().is_some_and(|n| n <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn deliver(&mut self, p: InFlight) {
        let r = &mut self.routers[p.to];
        if !r.up {
            return;
        }
        let parsed =
            Packet::new_checked(&p.bytes[..]).and_then(|pk| Repr::parse(&pk, p.from, GROUP));
        let repr = parsed.expect("bus carries valid adverts");
        if r.machine.handle_advert(self.now, p.from, &repr).is_err() {
            self.rejected += 1;
        }
        self.flush(p.to);
    }

    /// Put router `i`'s pending adverts on the bus and record its events.
    fn flush(&mut self, i: usize) {
        while let Some(repr) = self.routers[i].machine.poll_transmit() {
            let from = self.routers[i].ip;
            let bytes = repr.to_bytes(from, GROUP);
            for j in 0..self.routers.len() {
                if j == i || !self.routers[j].up || self.routers[j].group != self.routers[i].group {
                    continue;
                }
                self.sent += 1;
                let in_row = self.lost_in_row.entry((i, j)).or_insert(0);
                if *in_row < self.max_consecutive_losses && self.rng.percent() < self.loss_percent {
                    *in_row += 1;
                    self.lost += 1;
                    continue;
                }
                *in_row = 0;
                self.seq += 1;
                self.in_flight.push(InFlight {
                    at: self.now + self.delay,
                    seq: self.seq,
                    to: j,
                    from,
                    bytes: bytes.clone(),
                });
            }
        }
        while let Some(e) = self.routers[i].machine.poll_event() {
            self.routers[i].history.push((self.now, e));
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.routers[i].up && self.routers[i].machine.state() == State::Master)
            .collect()
    }

    /// Events of router `i` at or after `since`.
    fn events_since(&self, i: usize, since: Instant) -> Vec<(Instant, Event)> {
        self.routers[i]
            .history
            .iter()
            .filter(|(t, _)| *t >= since)
            .copied()
            .collect()
    }

    fn became_master(&self, i: usize) -> Vec<Instant> {
        self.routers[i]
            .history
            .iter()
            .filter(|(_, e)| matches!(e, Event::BecameMaster { .. }))
            .map(|(t, _)| *t)
            .collect()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mdi(priority: u8) -> Duration {
    master_down_interval(priority, 100)
}

#[test]
fn three_routers_elect_the_highest() {
    let mut s = Sim::with_priorities(&[100, 200, 150]);
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![1]);
    // Everyone starts as backup; 200 has the shortest Master_Down_Interval.
    assert_eq!(s.became_master(1), vec![s.t0 + mdi(200)]);
    assert!(s.became_master(0).is_empty());
    assert!(s.became_master(2).is_empty());
    for i in [0, 2] {
        assert_eq!(s.routers[i].machine.current_master(), Some(ip(1)));
        assert_eq!(
            s.routers[i].history.len(),
            1,
            "only the startup BecameBackup"
        );
    }
    assert_eq!(s.rejected, 0);
}

#[test]
fn three_routers_elect_the_highest_v2_with_auth() {
    let configs = [100, 200, 150]
        .iter()
        .enumerate()
        .map(|(i, p)| Config {
            version: Version::V2,
            auth: Auth::simple("mypasswd"),
            ..cfg(i, *p)
        })
        .collect();
    let mut s = Sim::new(configs);
    for i in 0..3 {
        s.start(i);
    }
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![1]);
    assert_eq!(s.rejected, 0);
}

#[test]
fn equal_priorities_higher_ip_wins() {
    let mut s = Sim::with_priorities(&[100, 100, 100]);
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![2]);
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![2]);
}

#[test]
fn master_crash_next_highest_takes_over_within_master_down_interval() {
    let mut s = Sim::with_priorities(&[100, 200, 150]);
    s.run_for(secs(10));
    let crash_at = s.now + Duration::from_millis(300);
    s.run_until(crash_at);
    s.crash(1);
    s.run_for(secs(20));
    assert_eq!(s.masters(), vec![2]);
    let took_over = s.became_master(2);
    assert_eq!(took_over.len(), 1);
    let t = took_over[0];
    // The last advert left at most one interval before the crash; the
    // takeover is Master_Down_Interval after it arrived.
    assert!(t > crash_at);
    assert!(
        t <= crash_at + mdi(150) + s.delay,
        "took {:?}",
        t - crash_at
    );
    assert!(t >= crash_at + mdi(150) - secs(1));
    assert!(s.became_master(0).is_empty());
}

#[test]
fn priority_zero_shutdown_takeover_after_skew() {
    let mut s = Sim::with_priorities(&[100, 200, 150]);
    s.run_for(secs(10));
    let stop_at = s.now + Duration::from_millis(450);
    s.run_until(stop_at);
    s.shutdown(1);
    assert_eq!(
        s.routers[1].history.last().unwrap().1,
        Event::Stopped {
            from: State::Master
        }
    );
    s.run_for(secs(20));
    assert_eq!(s.masters(), vec![2]);
    // Exactly Skew_Time(150) after the priority-0 advert arrived.
    assert_eq!(
        s.became_master(2),
        vec![stop_at + s.delay + skew_time(150, 100)]
    );
    assert!(s.became_master(0).is_empty());
}

#[test]
fn partition_then_heal_leaves_exactly_one_master() {
    let mut s = Sim::with_priorities(&[200, 150, 100]);
    s.run_for(secs(10));
    assert_eq!(s.masters(), vec![0]);
    s.partition(&[0, 1, 1]);
    s.run_for(secs(10));
    assert_eq!(s.masters(), vec![0, 1], "each side elects its own");
    let heal_at = s.now;
    s.heal();
    s.run_until(heal_at + mdi(150));
    assert_eq!(s.masters(), vec![0]);
    // And it stays that way.
    s.run_for(secs(60));
    assert_eq!(s.masters(), vec![0]);
    assert_eq!(
        s.events_since(1, heal_at)
            .iter()
            .map(|(_, e)| *e)
            .collect::<Vec<_>>(),
        vec![Event::BecameBackup {
            from: State::Master
        }]
    );
    assert!(s.events_since(0, heal_at).is_empty());
    assert!(s.became_master(2).is_empty());
}

#[test]
fn lossy_links_without_three_losses_in_a_row_do_not_flap() {
    let mut s = Sim::with_priorities(&[100, 200, 150]);
    s.loss_percent = 20;
    s.max_consecutive_losses = 2;
    s.run_for(secs(10));
    assert_eq!(s.masters(), vec![1]);
    let settled = s.now;
    s.run_for(secs(1200));
    assert_eq!(s.masters(), vec![1]);
    for i in 0..3 {
        assert!(s.events_since(i, settled).is_empty(), "router {i} flapped");
    }
    // The loss really happened (~20%).
    assert!(s.lost * 100 >= s.sent * 15, "lost {} of {}", s.lost, s.sent);
}

/// The control for the test above: the same harness does see flapping when
/// losses may run three or more in a row.
#[test]
fn lossy_links_with_long_loss_bursts_do_flap() {
    let mut s = Sim::with_priorities(&[100, 200, 150]);
    s.run_for(secs(10));
    let settled = s.now;
    s.loss_percent = 50;
    s.run_for(secs(300));
    let flaps: usize = (0..3).map(|i| s.events_since(i, settled).len()).sum();
    assert!(flaps > 0);
}

#[test]
fn non_preempting_router_joining_later_waits_for_master_death() {
    let mut s = Sim::new(vec![
        cfg(0, 100),
        Config {
            preempt: false,
            ..cfg(1, 200)
        },
    ]);
    s.start(0);
    s.run_for(secs(10));
    assert_eq!(s.masters(), vec![0]);
    s.start(1);
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![0], "no preemption");
    let crash_at = s.now;
    s.crash(0);
    s.run_for(secs(10));
    assert_eq!(s.masters(), vec![1]);
    assert!(s.became_master(1)[0] <= crash_at + mdi(200) + s.delay);
}

#[test]
fn preempting_router_joining_later_takes_over_once() {
    let mut s = Sim::new(vec![cfg(0, 100), cfg(1, 200)]);
    s.start(0);
    s.run_for(secs(10));
    let join_at = s.now;
    s.start(1);
    s.run_for(secs(30));
    assert_eq!(s.masters(), vec![1]);
    // It discards the lower adverts and fires Master_Down_Interval after joining.
    assert_eq!(s.became_master(1), vec![join_at + mdi(200)]);
    assert_eq!(
        s.events_since(0, join_at)
            .iter()
            .map(|(_, e)| *e)
            .collect::<Vec<_>>(),
        vec![Event::BecameBackup {
            from: State::Master
        }]
    );
}

#[test]
fn fast_adverts_10ms_crash_bound() {
    let configs = [100, 200]
        .iter()
        .enumerate()
        .map(|(i, p)| Config::new(51, *p, Duration::from_millis(10), ip(i), vec![VIP]))
        .collect();
    let mut s = Sim::new(configs);
    s.delay = Duration::from_micros(100);
    s.start(0);
    s.start(1);
    s.run_for(secs(5));
    assert_eq!(s.masters(), vec![1]);
    let crash_at = s.now;
    s.crash(1);
    s.run_for(secs(1));
    assert_eq!(s.masters(), vec![0]);
    // 3 × 10 ms + (156 × 10 ms / 256) ≈ 36.1 ms.
    let took = s.became_master(0)[0] - crash_at;
    assert!(took <= master_down_interval(100, 1) + s.delay, "{took:?}");
}
