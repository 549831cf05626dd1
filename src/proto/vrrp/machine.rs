//! The RFC 5798 §6.4 state machine of one virtual router, sans-IO.
//!
//! Shaped like quinn-proto's `Connection` so the control thread can drive it
//! without this code knowing about sockets or clocks:
//!
//! - inputs are `handle_*(now, ..)` calls: [`Machine::handle_startup`],
//!   [`Machine::handle_shutdown`], [`Machine::handle_advert`],
//!   [`Machine::handle_timeout`], plus [`Machine::set_priority`] (tracking)
//!   and [`Machine::set_fault`] (interface down, failed checks);
//! - outputs are pulled: [`Machine::poll_transmit`] (adverts to send),
//!   [`Machine::poll_event`] (state changes: add/remove VIPs, GARP, notify),
//!   [`Machine::poll_timeout`] (when to call `handle_timeout` next, the min of
//!   a three-entry [`TimerTable`]).
//!
//! Rules, as RFC 5798 §6.4 states them (section numbers in comments):
//!
//! - `Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256` and
//!   `Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time`, computed
//!   in microseconds like keepalived (centisecond truncation would make
//!   routers with close priorities tie). For v2 the same formula is used
//!   (RFC 3768 fixes the skew to `(256 - Priority) / 256` s, which equals it at
//!   the usual 1 s interval; keepalived uses the formula for both).
//! - A v3 backup learns `Master_Adver_Interval` from the adverts it accepts; a
//!   v2 router drops adverts whose interval differs from its own (RFC 3768
//!   §7.1, and keepalived does the same), so v2 intervals are whole seconds.
//! - Priority 255 (address owner) goes straight to Master on startup and
//!   always preempts.
//! - A priority-0 advert makes a backup fire after `Skew_Time` only — when
//!   it comes from the master the backup follows (or no master is known
//!   yet); one from any other source is discarded, so a spoofed
//!   "resignation" cannot make backups seize the VIP from a live master.
//! - `preempt = false`: a backup accepts adverts of a lower-priority master
//!   (never preempts it) but still takes over when the master goes silent.
//! - A master steps down on a higher priority advert, or an equal one from a
//!   higher primary IP; a lower one is discarded (§6.4.3) and *not* answered:
//!   keepalived answers each one with an advert, which lets anyone on the
//!   link make the master transmit at the rate they spoof. A real
//!   lower-priority master hears our next scheduled advert and steps down.
//! - A priority-0 advert is answered with an advert (§6.4.3), but at most
//!   once per half advert interval, for the same reason.
//! - `preempt_delay` (keepalived's): after entering Backup, and after each
//!   advert from a higher-priority router, a lower-priority master is
//!   tolerated for that long before this router preempts it.
//! - Fault (an input, like keepalived's FAULT): a master leaving for Fault
//!   sends a priority-0 advert so the backups take over after `Skew_Time`.
//!
//! Validation that needs the configuration (version, VRID, v2 auth and
//! interval, address list, own adverts looped back) happens in
//! `handle_advert` and is reported as a cheap [`Reject`] per reason.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::timer::{Timer, TimerTable};
use super::wire::{self, Auth, Kind, Repr, Version};
use crate::config::VrrpInstanceConfig;

/// Static configuration of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority: 1..=254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds (v2: a multiple of 100).
    pub advert_interval: u16,
    /// Preempt_Mode.
    pub preempt: bool,
    /// How long a lower-priority master is tolerated before preempting it.
    pub preempt_delay: Duration,
    /// Accept_Mode: whether a non-owner master accepts packets to the VIPs.
    /// ringlb always does (it serves them; `[[vrrp.instance]] accept_mode`
    /// accepts only `true`), so `from_instance` sets it; informational.
    pub accept_mode: bool,
    /// This router's address on the interface: the IP source of its adverts
    /// and the tie-breaker between equal priorities.
    pub primary_ip: IpAddr,
    /// The virtual addresses carried in adverts (one family, that of `primary_ip`).
    pub addresses: Vec<IpAddr>,
    /// v2 authentication; `Auth::None` for v3.
    pub auth: Auth,
    /// Drop non-owner adverts whose address list differs from ours
    /// (RFC 5798 §7.1 MAY; keepalived does it).
    pub check_addresses: bool,
}

impl Config {
    /// A v3 config with RFC defaults (preempt on, no delay, accept off, no auth).
    pub fn new(
        vrid: u8,
        priority: u8,
        advert_interval: Duration,
        primary_ip: IpAddr,
        addresses: Vec<IpAddr>,
    ) -> Config {
        Config {
            version: Version::V3,
            vrid,
            priority,
            advert_interval: interval_to_cs(Version::V3, advert_interval),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: false,
            primary_ip,
            addresses,
            auth: Auth::None,
            check_addresses: true,
        }
    }

    /// From a resolved `[[vrrp.instance]]`. `primary_ip` is the interface
    /// address the driver found (or `unicast_src`); only VIPs of its family
    /// are advertised. `auth_pass` is used for v2 only (first 8 bytes).
    pub fn from_instance(inst: &VrrpInstanceConfig, primary_ip: IpAddr) -> Config {
        let version = if inst.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let addresses = inst
            .virtual_ipaddress
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| a.is_ipv4() == primary_ip.is_ipv4())
            .collect();
        let auth = match (version, &inst.auth_pass) {
            (Version::V2, Some(p)) => Auth::simple(p),
            _ => Auth::None,
        };
        Config {
            version,
            vrid: inst.virtual_router_id,
            priority: inst.priority.max(1),
            advert_interval: interval_to_cs(version, inst.advert_interval),
            preempt: inst.preempt,
            preempt_delay: inst.preempt_delay,
            accept_mode: true,
            primary_ip,
            addresses,
            auth,
            check_addresses: true,
        }
    }
}

/// A `Duration` as an advert interval in centiseconds for `version`:
/// v3 truncates to centiseconds within 1..=4095; v2 rounds to whole seconds
/// within 1..=255 (keepalived v2 speaks whole seconds).
pub fn interval_to_cs(version: Version, d: Duration) -> u16 {
    match version {
        Version::V3 => (d.as_millis() / 10).clamp(1, u128::from(wire::V3_MAX_INTERVAL_CS)) as u16,
        Version::V2 => ((d.as_millis() + 500) / 1000).clamp(1, 255) as u16 * 100,
    }
}

/// Centiseconds as a `Duration`.
pub fn cs_to_duration(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time = ((256 - priority) * Master_Adver_Interval) / 256, in µs.
pub fn skew_time(priority: u8, master_adver_interval_cs: u16) -> Duration {
    let us = (256 - u64::from(priority)) * u64::from(master_adver_interval_cs) * 10_000 / 256;
    Duration::from_micros(us)
}

/// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
pub fn master_down_interval(priority: u8, master_adver_interval_cs: u16) -> Duration {
    3 * cs_to_duration(master_adver_interval_cs) + skew_time(priority, master_adver_interval_cs)
}

/// RFC 5798 states, plus Fault. The one VRRP role type: the machine's
/// state, the published role table ([`Role`]), snapshots and metrics all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum State {
    /// Not started, or shut down.
    #[default]
    Initialize,
    Backup,
    Master,
    /// Held down by [`Machine::set_fault`]; neither sends nor listens.
    Fault,
}

impl State {
    /// Every state, in [`State::index`] order.
    pub const ALL: [State; 4] = [
        State::Initialize,
        State::Backup,
        State::Master,
        State::Fault,
    ];

    /// Dense index in `0..4` (e.g. for per-state counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// keepalived-style name, e.g. for notify scripts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// One instance's published role: what the `vrrp` thread reports after
/// every change and what snapshots carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Instance name (`[[vrrp.instance]] name`).
    pub name: String,
    pub state: State,
    /// Effective priority (after tracking).
    pub priority: u8,
}

/// A state change the driver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Add the VIPs, send gratuitous ARP / unsolicited NA, run notify.
    BecameMaster { from: State },
    /// Remove the VIPs if `from` was Master; run notify.
    BecameBackup { from: State },
    /// Remove the VIPs if `from` was Master; run notify.
    BecameFault { from: State },
    /// Shut down (entered Initialize); remove the VIPs if `from` was Master.
    Stopped { from: State },
}

impl Event {
    /// The state left.
    pub fn from(&self) -> State {
        match *self {
            Event::BecameMaster { from }
            | Event::BecameBackup { from }
            | Event::BecameFault { from }
            | Event::Stopped { from } => from,
        }
    }

    /// The state entered.
    pub fn to(&self) -> State {
        match self {
            Event::BecameMaster { .. } => State::Master,
            Event::BecameBackup { .. } => State::Backup,
            Event::BecameFault { .. } => State::Fault,
            Event::Stopped { .. } => State::Initialize,
        }
    }
}

/// Why `handle_advert` ignored a well-formed advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Version differs from ours.
    WrongVersion,
    /// VRID differs from ours (the driver should demultiplex by VRID first).
    WrongVrid,
    /// Source is our own primary IP (multicast loopback).
    OwnAdvert,
    /// v2: Auth Type or password differs.
    AuthMismatch,
    /// v2: Adver Int differs from ours.
    IntervalMismatch,
    /// Address list differs and the sender is not the owner (priority 255).
    AddressMismatch,
    /// We are in Initialize or Fault and do not listen.
    Inactive,
    /// Lower priority than ours while we are master, or than ours while we
    /// are a preempting backup (§6.4.2, §6.4.3: discard).
    LowerPriority,
    /// A priority-0 advert arriving within half an advert interval of our
    /// last advert: not answered again (flood protection).
    ReplyLimited,
    /// A priority-0 advert to a backup from someone other than its master.
    NotMaster,
}

impl Reject {
    /// Every variant, in [`Reject::index`] order.
    pub const ALL: [Reject; 10] = [
        Reject::WrongVersion,
        Reject::WrongVrid,
        Reject::OwnAdvert,
        Reject::AuthMismatch,
        Reject::IntervalMismatch,
        Reject::AddressMismatch,
        Reject::Inactive,
        Reject::LowerPriority,
        Reject::ReplyLimited,
        Reject::NotMaster,
    ];
    /// Number of variants.
    pub const COUNT: usize = Reject::ALL.len();

    /// Dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::WrongVersion => "wrong_version",
            Reject::WrongVrid => "wrong_vrid",
            Reject::OwnAdvert => "own_advert",
            Reject::AuthMismatch => "auth_mismatch",
            Reject::IntervalMismatch => "interval_mismatch",
            Reject::AddressMismatch => "address_mismatch",
            Reject::Inactive => "inactive",
            Reject::LowerPriority => "lower_priority",
            Reject::ReplyLimited => "reply_limited",
            Reject::NotMaster => "not_master",
        }
    }
}

/// At most this many adverts wait for `poll_transmit`; older ones are dropped.
const MAX_QUEUED_TRANSMITS: usize = 8;

/// One virtual router.
#[derive(Debug, Clone)]
pub struct Machine {
    config: Config,
    /// Effective priority (configured, adjusted by tracking).
    priority: u8,
    state: State,
    fault: bool,
    /// Master_Adver_Interval, centiseconds.
    master_adver_interval: u16,
    timers: TimerTable,
    /// Address of the current master, as far as we know.
    master: Option<IpAddr>,
    /// Priority of that master's last accepted advert.
    master_priority: u8,
    /// Held in Backup by its sync group (see [`Machine::set_group_backup`]).
    held: bool,
    /// Priorities of adverts waiting to be sent.
    transmits: VecDeque<u8>,
    /// When we last queued an advert at our own priority.
    last_advert: Option<Instant>,
    events: VecDeque<Event>,
}

impl Machine {
    /// A machine in Initialize; call [`Machine::handle_startup`] to run it.
    pub fn new(config: Config) -> Machine {
        let priority = config.priority.max(1);
        let master_adver_interval = config.advert_interval.max(1);
        Machine {
            config,
            priority,
            state: State::Initialize,
            fault: false,
            master_adver_interval,
            timers: TimerTable::default(),
            master: None,
            master_priority: 0,
            held: false,
            transmits: VecDeque::new(),
            last_advert: None,
            events: VecDeque::new(),
        }
    }

    // ----- getters -------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_master(&self) -> bool {
        self.state == State::Master
    }

    /// Effective priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Whether a fault is being held (see [`Machine::set_fault`]).
    pub fn is_faulted(&self) -> bool {
        self.fault
    }

    /// Advertisement_Interval (ours).
    pub fn advert_interval(&self) -> Duration {
        cs_to_duration(self.config.advert_interval)
    }

    /// Master_Adver_Interval (learned from the master in v3).
    pub fn master_adver_interval(&self) -> Duration {
        cs_to_duration(self.master_adver_interval)
    }

    /// Skew_Time for our effective priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(self.priority, self.master_adver_interval)
    }

    /// Master_Down_Interval for our effective priority and Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority, self.master_adver_interval)
    }

    /// The current master: ourselves when Master, the source of the last
    /// accepted advert when Backup, else none.
    pub fn current_master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.config.primary_ip),
            State::Backup => self.master,
            _ => None,
        }
    }

    /// Backup because the master it follows outranks it (higher priority, or
    /// equal from a higher address): what drags a sync group to Backup.
    pub fn outranked(&self) -> bool {
        self.state == State::Backup
            && self.master.is_some_and(|ip| {
                self.master_priority > self.priority
                    || (self.master_priority == self.priority && ip > self.config.primary_ip)
            })
    }

    /// Deadline of one timer (for tests, stats and debugging).
    pub fn timer(&self, timer: Timer) -> Option<Instant> {
        self.timers.get(timer)
    }

    // ----- outputs -------------------------------------------------------

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Next advert to send, addressed from `config().primary_ip` to the VRRP
    /// multicast group (or each unicast peer). Emit with
    /// [`Repr::to_bytes`] / [`Repr::emit`].
    pub fn poll_transmit(&mut self) -> Option<Repr> {
        let priority = self.transmits.pop_front()?;
        Some(self.advert(priority))
    }

    /// Next state change.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- inputs --------------------------------------------------------

    /// Startup event (§6.4.1). No-op unless in Initialize.
    pub fn handle_startup(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        self.start(now, State::Initialize);
    }

    /// Shutdown event (§6.4.2, §6.4.3): a master sends a priority-0 advert.
    /// Ends in Initialize from any state.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        let from = self.state;
        if from == State::Initialize {
            return;
        }
        if from == State::Master {
            self.queue_transmit(0);
        }
        self.timers.stop_all();
        self.master = None;
        self.state = State::Initialize;
        self.events.push_back(Event::Stopped { from });
    }

    /// A received, parsed advert from IP source `src` (§6.4.2, §6.4.3, §7.1).
    pub fn handle_advert(&mut self, now: Instant, src: IpAddr, adv: &Repr) -> Result<(), Reject> {
        self.validate(src, adv)?;
        match self.state {
            State::Initialize | State::Fault => Err(Reject::Inactive),
            State::Backup => self.backup_rx(now, src, adv),
            State::Master => self.master_rx(now, src, adv),
        }
    }

    /// Fire every timer due at `now`. Safe to call early or late: a late
    /// call sends one advert and reschedules from `now` (no burst).
    pub fn handle_timeout(&mut self, now: Instant) {
        // keepalived's preempt_delay: once over, lower-priority adverts are discarded.
        self.timers.take_expired(Timer::PreemptDelay, now);
        if self.timers.take_expired(Timer::MasterDown, now) && self.state == State::Backup {
            // §6.4.2: Master_Down_Timer fires.
            self.become_master(now, State::Backup);
        }
        if self.timers.take_expired(Timer::Advert, now) && self.state == State::Master {
            // §6.4.3: Adver_Timer fires.
            self.advertise(now);
        }
    }

    /// Change the effective priority (tracking). 0 is raised to 1. A master
    /// advertises the new priority at once so backups can preempt it.
    pub fn set_priority(&mut self, now: Instant, priority: u8) {
        let priority = priority.max(1);
        if priority == self.priority {
            return;
        }
        self.priority = priority;
        if self.state == State::Master {
            self.advertise(now);
        }
    }

    /// A reload changed this router's settings without changing its
    /// identity (VRID, version: those stay). State, timers and the known
    /// master are kept — no re-election. A master advertises at once when
    /// anything it advertises changed (addresses, interval), so peers see
    /// the new settings with the next advert; a backup applies them from
    /// the next advert it receives (a new Advertisement_Interval of its own
    /// rearms the Master_Down_Timer, so a slower interval cannot make it
    /// declare a live master dead). The priority is set separately
    /// ([`Machine::set_priority`]: tracking owns the effective value).
    pub fn reconfigure(&mut self, now: Instant, config: Config) {
        debug_assert_eq!(
            (config.vrid, config.version),
            (self.config.vrid, self.config.version)
        );
        let advertised_changed = config.advert_interval != self.config.advert_interval
            || !same_set(&config.addresses, &self.config.addresses)
            || config.auth != self.config.auth
            || config.primary_ip != self.config.primary_ip;
        let interval_changed = config.advert_interval != self.config.advert_interval;
        self.config = config;
        match self.state {
            State::Master if advertised_changed => self.advertise(now),
            State::Backup if interval_changed => {
                if self.config.version == Version::V2 || self.master.is_none() {
                    self.master_adver_interval = self.config.advert_interval.max(1);
                }
                self.timers
                    .set(Timer::MasterDown, now + self.master_down_interval());
            }
            _ => {}
        }
        if self.config.preempt_delay.is_zero() {
            self.timers.stop(Timer::PreemptDelay);
        }
    }

    /// Sync group: another member is [`Machine::outranked`] (`true`), or
    /// none is any more (`false`). While held, this router does not preempt
    /// (it follows a lower-priority master like `preempt = false`), and a
    /// master steps down once, with a priority-0 advert so the peer takes
    /// over after its Skew_Time: the group's addresses move together. A
    /// silent master is still replaced (Master_Down_Timer), so a group whose
    /// peer died comes up whole.
    pub fn set_group_backup(&mut self, now: Instant, held: bool) {
        if held == self.held {
            return;
        }
        self.held = held;
        if held && self.state == State::Master && self.priority != 255 {
            self.queue_transmit(0);
            self.become_backup(now, State::Master);
        }
    }

    /// Whether a sync group holds this router in Backup.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Enter (`true`) or leave (`false`) Fault. A master entering Fault sends
    /// a priority-0 advert. Leaving Fault runs the startup rules. Before
    /// startup the flag is only remembered (startup then goes to Fault).
    pub fn set_fault(&mut self, now: Instant, fault: bool) {
        if fault == self.fault {
            return;
        }
        self.fault = fault;
        match (fault, self.state) {
            (true, State::Backup | State::Master) => {
                let from = self.state;
                if from == State::Master {
                    self.queue_transmit(0);
                }
                self.timers.stop_all();
                self.master = None;
                self.state = State::Fault;
                self.events.push_back(Event::BecameFault { from });
            }
            (false, State::Fault) => self.start(now, State::Fault),
            _ => {}
        }
    }

    // ----- internals -----------------------------------------------------

    fn validate(&self, src: IpAddr, adv: &Repr) -> Result<(), Reject> {
        let c = &self.config;
        if adv.version != c.version {
            return Err(Reject::WrongVersion);
        }
        if adv.vrid != c.vrid {
            return Err(Reject::WrongVrid);
        }
        if src == c.primary_ip {
            return Err(Reject::OwnAdvert);
        }
        if c.version == Version::V2 {
            if adv.auth != c.auth {
                return Err(Reject::AuthMismatch);
            }
            if adv.advert_interval != c.advert_interval {
                return Err(Reject::IntervalMismatch);
            }
        }
        if c.check_addresses && adv.priority != 255 && !same_set(&adv.addresses, &c.addresses) {
            return Err(Reject::AddressMismatch);
        }
        Ok(())
    }

    /// §6.4.1 startup, also used when leaving Fault.
    fn start(&mut self, now: Instant, from: State) {
        if self.fault {
            self.state = State::Fault;
            self.events.push_back(Event::BecameFault { from });
        } else if self.priority == 255 {
            self.become_master(now, from);
        } else {
            self.master_adver_interval = self.config.advert_interval.max(1);
            self.become_backup(now, from);
        }
    }

    fn become_master(&mut self, now: Instant, from: State) {
        self.timers.stop_all();
        self.state = State::Master;
        self.master = None;
        self.advertise(now);
        self.events.push_back(Event::BecameMaster { from });
    }

    fn become_backup(&mut self, now: Instant, from: State) {
        self.timers.stop_all();
        self.state = State::Backup;
        self.timers
            .set(Timer::MasterDown, now + self.master_down_interval());
        self.arm_preempt_delay(now);
        self.events.push_back(Event::BecameBackup { from });
    }

    /// Queue an advert at our priority and restart the Adver_Timer.
    fn advertise(&mut self, now: Instant) {
        self.queue_transmit(self.priority);
        self.last_advert = Some(now);
        self.arm_advert(now);
    }

    fn arm_advert(&mut self, now: Instant) {
        self.timers.set(
            Timer::Advert,
            now + cs_to_duration(self.config.advert_interval),
        );
    }

    fn arm_preempt_delay(&mut self, now: Instant) {
        if !self.config.preempt_delay.is_zero() {
            self.timers
                .set(Timer::PreemptDelay, now + self.config.preempt_delay);
        }
    }

    /// Preemption allowed by configuration and sync group (the owner always preempts).
    fn preempts(&self) -> bool {
        (self.config.preempt && !self.held) || self.priority == 255
    }

    /// §6.4.2 Backup receives an ADVERTISEMENT.
    fn backup_rx(&mut self, now: Instant, src: IpAddr, adv: &Repr) -> Result<(), Reject> {
        if adv.priority == 0 {
            if self.master.is_some_and(|m| m != src) {
                return Err(Reject::NotMaster);
            }
            // The master is leaving: take over after Skew_Time only.
            self.master = None;
            self.timers.set(Timer::MasterDown, now + self.skew_time());
            return Ok(());
        }
        let higher_or_equal = adv.priority >= self.priority;
        let delaying = !self.timers.is_expired(Timer::PreemptDelay, now)
            && self.timers.get(Timer::PreemptDelay).is_some();
        if !self.preempts() || higher_or_equal || delaying {
            if self.config.version == Version::V3 {
                self.master_adver_interval = adv.advert_interval.max(1);
            }
            if adv.priority > self.priority {
                self.arm_preempt_delay(now);
            }
            self.master = Some(src);
            self.master_priority = adv.priority;
            self.timers
                .set(Timer::MasterDown, now + self.master_down_interval());
            Ok(())
        } else if self.master == Some(src) {
            // Our master now advertises a priority below ours (its tracking
            // lowered it): it is resigning in all but name. Preempt after
            // Skew_Time, as for priority 0, instead of waiting out the
            // Master_Down_Timer armed by its last higher advert; the outcome
            // is the same, the VIP just moves sooner.
            self.master = None;
            let at = now + self.skew_time();
            if self.timers.get(Timer::MasterDown).is_none_or(|t| t > at) {
                self.timers.set(Timer::MasterDown, at);
            }
            Ok(())
        } else {
            // Discard; Master_Down_Timer will fire and we preempt.
            Err(Reject::LowerPriority)
        }
    }

    /// §6.4.3 Master receives an ADVERTISEMENT.
    fn master_rx(&mut self, now: Instant, src: IpAddr, adv: &Repr) -> Result<(), Reject> {
        if adv.priority == 0 {
            // Another master is leaving: assert ourselves at once, unless
            // we just did (a flood of spoofed priority-0 adverts must not
            // set our transmit rate).
            let half = cs_to_duration(self.config.advert_interval) / 2;
            if self.last_advert.is_some_and(|t| now < t + half) {
                return Err(Reject::ReplyLimited);
            }
            self.advertise(now);
            Ok(())
        } else if adv.priority > self.priority
            || (adv.priority == self.priority && src > self.config.primary_ip)
        {
            if self.config.version == Version::V3 {
                self.master_adver_interval = adv.advert_interval.max(1);
            }
            self.become_backup(now, State::Master);
            self.master = Some(src);
            self.master_priority = adv.priority;
            Ok(())
        } else {
            // §6.4.3: lower priority (or lower IP): discard, no reply.
            Err(Reject::LowerPriority)
        }
    }

    fn queue_transmit(&mut self, priority: u8) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
        }
        self.transmits.push_back(priority);
    }

    fn advert(&self, priority: u8) -> Repr {
        let c = &self.config;
        Repr {
            version: c.version,
            kind: Kind::Advertisement,
            vrid: c.vrid,
            priority,
            auth: match c.version {
                Version::V2 => c.auth,
                Version::V3 => Auth::None,
            },
            advert_interval: c.advert_interval,
            addresses: c.addresses.clone(),
        }
    }
}

/// Whether two address lists hold the same set (order and duplicates ignored).
fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5));
    const LOWER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const HIGHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn cfg(priority: u8) -> Config {
        Config::new(51, priority, Duration::from_secs(1), ME, vec![VIP])
    }

    fn cfg_v2(priority: u8) -> Config {
        Config {
            version: Version::V2,
            auth: Auth::simple("mypasswd"),
            ..cfg(priority)
        }
    }

    fn adv(m: &Machine, priority: u8) -> Repr {
        Repr {
            priority,
            ..m.advert(1)
        }
    }

    fn transmits(m: &mut Machine) -> Vec<u8> {
        std::iter::from_fn(|| m.poll_transmit())
            .map(|r| r.priority)
            .collect()
    }

    fn events(m: &mut Machine) -> Vec<Event> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    /// A started backup with drained outputs.
    fn backup(config: Config, t0: Instant) -> Machine {
        let mut m = Machine::new(config);
        m.handle_startup(t0);
        assert_eq!(m.state(), State::Backup);
        events(&mut m);
        m
    }

    /// A machine that became master by its Master_Down_Timer, outputs drained.
    fn master(config: Config, t0: Instant) -> (Machine, Instant) {
        let mut m = backup(config, t0);
        let t = m.poll_timeout().unwrap();
        m.handle_timeout(t);
        assert_eq!(m.state(), State::Master);
        transmits(&mut m);
        events(&mut m);
        (m, t)
    }

    #[test]
    fn reconfigure_keeps_state_and_advertises_what_changed() {
        let t0 = crate::testutil::epoch();
        let vip2 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));
        // Master: a new address list goes out at once, no state change.
        let (mut m, t) = master(cfg(200), t0);
        let t1 = t + ms(100);
        m.reconfigure(
            t1,
            Config::new(51, 200, Duration::from_secs(1), ME, vec![VIP, vip2]),
        );
        assert_eq!(m.state(), State::Master);
        assert!(events(&mut m).is_empty(), "no transition");
        let sent: Vec<Repr> = std::iter::from_fn(|| m.poll_transmit()).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].addresses, vec![VIP, vip2]);
        assert_eq!(m.poll_timeout(), Some(t1 + ms(1000)));
        // Nothing advertised changed (preempt only): nothing sent.
        m.reconfigure(
            t1,
            Config {
                preempt: false,
                ..Config::new(51, 200, Duration::from_secs(1), ME, vec![VIP, vip2])
            },
        );
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.state(), State::Master);
        // A lower priority afterwards: still master, advertised at once.
        m.set_priority(t1, 50);
        assert_eq!((m.state(), transmits(&mut m)), (State::Master, vec![50]));

        // Backup following a master: stays backup, master remembered; a new
        // (slower) interval rearms Master_Down from now, never shortens it.
        let mut b = backup(cfg(100), t0);
        b.handle_advert(t0 + ms(10), LOWER_IP, &adv(&b, 200))
            .unwrap();
        let before = b.timer(Timer::MasterDown).unwrap();
        b.reconfigure(
            t0 + ms(20),
            Config::new(51, 100, Duration::from_secs(1), ME, vec![VIP, vip2]),
        );
        assert_eq!(b.state(), State::Backup);
        assert_eq!(b.current_master(), Some(LOWER_IP));
        assert_eq!(
            b.timer(Timer::MasterDown),
            Some(before),
            "same interval: untouched"
        );
        assert!(events(&mut b).is_empty() && transmits(&mut b).is_empty());
        // Raising the backup's priority above the master's with preempt:
        // the master's next (now lower) advert makes it take over after
        // Skew_Time, by the protocol's own rule.
        b.set_priority(t0 + ms(30), 250);
        let mut a = adv(&b, 200);
        a.addresses = vec![VIP, vip2];
        b.handle_advert(t0 + ms(40), LOWER_IP, &a).unwrap();
        let at = b.poll_timeout().unwrap();
        assert!(at <= t0 + ms(40) + b.skew_time());
        b.handle_timeout(at);
        assert_eq!(b.state(), State::Master);
    }

    #[test]
    fn skew_and_master_down_formula() {
        // (256-100)*1s/256 = 609.375 ms; MDI = 3 s + skew.
        assert_eq!(skew_time(100, 100), us(609_375));
        assert_eq!(master_down_interval(100, 100), us(3_609_375));
        // 10 ms interval, priority 200: 56*10ms/256 = 2.1875 ms.
        assert_eq!(skew_time(200, 1), us(2_187));
        assert_eq!(master_down_interval(200, 1), us(32_187));
        assert_eq!(skew_time(255, 100), us(3_906));
        let m = Machine::new(cfg(100));
        assert_eq!(m.skew_time(), us(609_375));
        assert_eq!(m.master_down_interval(), us(3_609_375));
    }

    #[test]
    fn interval_conversion() {
        assert_eq!(interval_to_cs(Version::V3, ms(10)), 1);
        assert_eq!(interval_to_cs(Version::V3, ms(1)), 1);
        assert_eq!(interval_to_cs(Version::V3, ms(1234)), 123);
        assert_eq!(interval_to_cs(Version::V3, Duration::from_secs(100)), 4095);
        assert_eq!(interval_to_cs(Version::V2, ms(1000)), 100);
        assert_eq!(interval_to_cs(Version::V2, ms(100)), 100);
        assert_eq!(interval_to_cs(Version::V2, ms(2600)), 300);
        assert_eq!(interval_to_cs(Version::V2, Duration::from_secs(999)), 25500);
    }

    #[test]
    fn startup_non_owner_goes_backup_with_master_down_timer() {
        let t0 = crate::testutil::epoch();
        let mut m = Machine::new(cfg(100));
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(m.poll_timeout(), None);
        m.handle_startup(t0);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameBackup {
                from: State::Initialize
            }]
        );
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(t0 + us(3_609_375)));
        assert_eq!(m.timer(Timer::MasterDown), Some(t0 + us(3_609_375)));
        // A second startup is a no-op.
        m.handle_startup(t0 + ms(1));
        assert!(events(&mut m).is_empty());
    }

    #[test]
    fn startup_owner_goes_straight_to_master() {
        let t0 = crate::testutil::epoch();
        let mut m = Machine::new(cfg(255));
        m.handle_startup(t0);
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameMaster {
                from: State::Initialize
            }]
        );
        assert_eq!(transmits(&mut m), vec![255]);
        assert_eq!(m.poll_timeout(), Some(t0 + ms(1000)));
        assert_eq!(m.current_master(), Some(ME));
    }

    #[test]
    fn master_down_timer_fires_exactly_at_interval() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let due = t0 + us(3_609_375);
        m.handle_timeout(due - us(1));
        assert_eq!(m.state(), State::Backup);
        assert!(transmits(&mut m).is_empty());
        m.handle_timeout(due);
        assert_eq!(m.state(), State::Master);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameMaster {
                from: State::Backup
            }]
        );
        assert_eq!(transmits(&mut m), vec![100]);
        assert_eq!(m.timer(Timer::MasterDown), None);
        assert_eq!(m.poll_timeout(), Some(due + ms(1000)));
    }

    #[test]
    fn master_advertises_every_interval() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        let mut now = t;
        for i in 1..=5u32 {
            let next = m.poll_timeout().unwrap();
            assert_eq!(next, now + ms(1000), "advert {i}");
            now = next;
            m.handle_timeout(now);
            let sent: Vec<Repr> = std::iter::from_fn(|| m.poll_transmit()).collect();
            assert_eq!(sent.len(), 1);
            let r = &sent[0];
            assert_eq!((r.vrid, r.priority, r.advert_interval), (51, 100, 100));
            assert_eq!(r.version, Version::V3);
            assert_eq!(r.addresses, vec![VIP]);
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn late_timeout_does_not_burst() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        let late = t + ms(5500);
        m.handle_timeout(late);
        assert_eq!(transmits(&mut m), vec![100]);
        assert_eq!(m.poll_timeout(), Some(late + ms(1000)));
    }

    #[test]
    fn backup_accepts_higher_or_equal_and_resets_master_down() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let t1 = t0 + ms(2000);
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 150)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t1 + us(3_609_375)));
        assert_eq!(m.current_master(), Some(HIGHER_IP));
        let t2 = t1 + ms(3000);
        m.handle_advert(t2, LOWER_IP, &adv(&m, 100)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t2 + us(3_609_375)));
        assert_eq!(m.state(), State::Backup);
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn v3_backup_learns_master_adver_interval() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let mut a = adv(&m, 200);
        a.advert_interval = 200; // 2 s
        let t1 = t0 + ms(500);
        m.handle_advert(t1, HIGHER_IP, &a).unwrap();
        assert_eq!(m.master_adver_interval(), ms(2000));
        // 3*2 s + 156*2s/256 = 6 s + 1.21875 s
        assert_eq!(m.master_down_interval(), us(7_218_750));
        assert_eq!(m.timer(Timer::MasterDown), Some(t1 + us(7_218_750)));
        // Own adverts still use our own interval once master.
        m.handle_timeout(t1 + us(7_218_750));
        assert_eq!(m.state(), State::Master);
        let r = m.poll_transmit().unwrap();
        assert_eq!(r.advert_interval, 100);
    }

    #[test]
    fn v2_does_not_learn_and_drops_mismatched_interval() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg_v2(100), t0);
        let mut a = adv(&m, 200);
        a.advert_interval = 300;
        let before = m.timer(Timer::MasterDown);
        assert_eq!(
            m.handle_advert(t0 + ms(10), HIGHER_IP, &a),
            Err(Reject::IntervalMismatch)
        );
        assert_eq!(m.timer(Timer::MasterDown), before);
        assert_eq!(m.master_adver_interval(), ms(1000));
    }

    #[test]
    fn v2_auth_must_match() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg_v2(100), t0);
        let mut a = adv(&m, 200);
        assert_eq!(a.auth, Auth::simple("mypasswd"));
        a.auth = Auth::simple("other");
        assert_eq!(
            m.handle_advert(t0, HIGHER_IP, &a),
            Err(Reject::AuthMismatch)
        );
        a.auth = Auth::None;
        assert_eq!(
            m.handle_advert(t0, HIGHER_IP, &a),
            Err(Reject::AuthMismatch)
        );
        a.auth = Auth::simple("mypasswd");
        assert_eq!(m.handle_advert(t0, HIGHER_IP, &a), Ok(()));
    }

    #[test]
    fn config_level_rejects() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let good = adv(&m, 200);
        let mut a = good.clone();
        a.vrid = 52;
        assert_eq!(m.handle_advert(t0, HIGHER_IP, &a), Err(Reject::WrongVrid));
        let mut a = good.clone();
        a.version = Version::V2;
        assert_eq!(
            m.handle_advert(t0, HIGHER_IP, &a),
            Err(Reject::WrongVersion)
        );
        assert_eq!(m.handle_advert(t0, ME, &good), Err(Reject::OwnAdvert));
        let mut a = good.clone();
        a.addresses = vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 200))];
        assert_eq!(
            m.handle_advert(t0, HIGHER_IP, &a),
            Err(Reject::AddressMismatch)
        );
        // The owner's advert is accepted despite a different list (§7.1).
        a.priority = 255;
        assert_eq!(m.handle_advert(t0, HIGHER_IP, &a), Ok(()));
        // Order does not matter.
        let mut m2 = backup(
            Config {
                addresses: vec![VIP, LOWER_IP],
                ..cfg(100)
            },
            t0,
        );
        let mut a = adv(&m2, 200);
        a.addresses = vec![LOWER_IP, VIP];
        assert_eq!(m2.handle_advert(t0, HIGHER_IP, &a), Ok(()));
        // Without the check, a mismatch is fine.
        let mut m3 = backup(
            Config {
                check_addresses: false,
                ..cfg(100)
            },
            t0,
        );
        let mut a = adv(&m3, 200);
        a.addresses = vec![LOWER_IP];
        assert_eq!(m3.handle_advert(t0, HIGHER_IP, &a), Ok(()));
        // Nothing is listened to before startup.
        let mut m4 = Machine::new(cfg(100));
        assert_eq!(
            m4.handle_advert(t0, HIGHER_IP, &good),
            Err(Reject::Inactive)
        );
    }

    #[test]
    fn priority_zero_advert_makes_backup_fire_after_skew() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        m.handle_advert(t0 + ms(100), HIGHER_IP, &adv(&m, 200))
            .unwrap();
        let t1 = t0 + ms(900);
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 0)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t1 + us(609_375)));
        assert_eq!(m.current_master(), None);
        m.handle_timeout(t1 + us(609_375));
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn preempt_backup_discards_lower_priority_and_takes_over() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(200), t0);
        let mdi = m.master_down_interval();
        // A lower-priority master keeps advertising: all discarded.
        let mut t = t0;
        for _ in 0..3 {
            t += ms(1000);
            assert_eq!(
                m.handle_advert(t, LOWER_IP, &adv(&m, 100)),
                Err(Reject::LowerPriority)
            );
            assert_eq!(m.timer(Timer::MasterDown), Some(t0 + mdi));
        }
        m.handle_timeout(t0 + mdi);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn no_preempt_backup_tolerates_lower_master_until_it_dies() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(
            Config {
                preempt: false,
                ..cfg(200)
            },
            t0,
        );
        let mdi = m.master_down_interval();
        let mut t = t0;
        for _ in 0..10 {
            t += ms(1000);
            m.handle_advert(t, LOWER_IP, &adv(&m, 100)).unwrap();
            assert_eq!(m.timer(Timer::MasterDown), Some(t + mdi));
            m.handle_timeout(t);
            assert_eq!(m.state(), State::Backup);
        }
        assert_eq!(m.current_master(), Some(LOWER_IP));
        // The lower master goes silent: take over after Master_Down_Interval.
        m.handle_timeout(t + mdi);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn owner_preempts_even_without_preempt_mode() {
        let t0 = crate::testutil::epoch();
        let mut m = Machine::new(Config {
            preempt: false,
            ..cfg(200)
        });
        m.handle_startup(t0);
        // Not the owner: a lower master is accepted (timer reset).
        let t1 = t0 + ms(500);
        m.handle_advert(t1, LOWER_IP, &adv(&m, 100)).unwrap();
        let before = m.timer(Timer::MasterDown);
        assert_eq!(before, Some(t1 + m.master_down_interval()));
        m.set_priority(t1, 255); // now the owner
        m.handle_advert(t1 + ms(500), LOWER_IP, &adv(&m, 100))
            .unwrap();
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + ms(500) + m.skew_time()),
            "the owner preempts the lower master it followed after Skew_Time"
        );
        assert!(m.timer(Timer::MasterDown) < before);
    }

    #[test]
    fn master_steps_down_for_higher_priority() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        let mut a = adv(&m, 150);
        a.advert_interval = 50;
        let t1 = t + ms(300);
        m.handle_advert(t1, LOWER_IP, &a).unwrap();
        assert_eq!(m.state(), State::Backup);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameBackup {
                from: State::Master
            }]
        );
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.timer(Timer::Advert), None);
        assert_eq!(m.master_adver_interval(), ms(500));
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + m.master_down_interval())
        );
        assert_eq!(m.current_master(), Some(LOWER_IP));
    }

    #[test]
    fn master_equal_priority_tie_break_by_primary_ip() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        // Equal priority from a lower IP: we stay, and do not answer.
        assert_eq!(
            m.handle_advert(t + ms(10), LOWER_IP, &adv(&m, 100)),
            Err(Reject::LowerPriority)
        );
        assert_eq!(m.state(), State::Master);
        assert!(transmits(&mut m).is_empty());
        // Equal priority from a higher IP: step down.
        m.handle_advert(t + ms(20), HIGHER_IP, &adv(&m, 100))
            .unwrap();
        assert_eq!(m.state(), State::Backup);
        assert!(transmits(&mut m).is_empty());
    }

    #[test]
    fn master_discards_lower_priority_without_reply() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(150), t0);
        let timer = m.timer(Timer::Advert);
        // A flood of spoofed lower-priority adverts (and equal priority from
        // a lower IP): each one dropped, no advert sent, timer untouched.
        for i in 0..1000 {
            let (src, prio) = if i % 2 == 0 {
                (HIGHER_IP, 100)
            } else {
                (LOWER_IP, 150)
            };
            let r = m.handle_advert(t + us(100 * i), src, &adv(&m, prio));
            assert_eq!(r, Err(Reject::LowerPriority));
        }
        assert_eq!(m.state(), State::Master);
        assert!(events(&mut m).is_empty());
        assert!(transmits(&mut m).is_empty(), "no advert in reply");
        assert_eq!(m.timer(Timer::Advert), timer);
        // The schedule is unchanged: exactly one advert per interval.
        m.handle_timeout(timer.unwrap());
        assert_eq!(transmits(&mut m), vec![150]);
    }

    #[test]
    fn sync_group_hold_steps_a_master_down_and_follows_a_lower_master() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(200), t0);
        assert!(!m.outranked());
        // Another member is outranked: step down with a priority-0 advert.
        m.set_group_backup(t, true);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(transmits(&mut m), vec![0]);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameBackup {
                from: State::Master
            }]
        );
        // The peer (priority 100) takes over: followed, not preempted.
        let t1 = t + ms(100);
        m.handle_advert(t1, LOWER_IP, &adv(&m, 100)).unwrap();
        assert_eq!(m.current_master(), Some(LOWER_IP));
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + m.master_down_interval())
        );
        assert!(
            !m.outranked(),
            "following a lower master is not being outranked"
        );
        m.handle_timeout(t1 + ms(500));
        assert_eq!(m.state(), State::Backup);
        // Released: the next advert of the lower master is preempted after Skew_Time.
        m.set_group_backup(t1 + ms(600), false);
        let t2 = t1 + ms(700);
        m.handle_advert(t2, LOWER_IP, &adv(&m, 100)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t2 + m.skew_time()));
        m.handle_timeout(t2 + m.skew_time());
        assert_eq!(m.state(), State::Master);
        // A silent master is replaced even while held.
        let mut b = backup(cfg(150), t0);
        b.set_group_backup(t0, true);
        b.handle_timeout(t0 + b.master_down_interval());
        assert_eq!(b.state(), State::Master);
        // Outranked: following a higher (or equal, higher-IP) master.
        let mut o = backup(cfg(100), t0);
        o.handle_advert(t0 + ms(1), HIGHER_IP, &adv(&o, 100))
            .unwrap();
        assert!(o.outranked());
        o.handle_advert(t0 + ms(2), HIGHER_IP, &adv(&o, 150))
            .unwrap();
        assert!(o.outranked());
    }

    #[test]
    fn spoofed_priority_zero_from_another_source_is_discarded() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let t1 = t0 + ms(100);
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 200)).unwrap();
        let down = m.timer(Timer::MasterDown);
        assert_eq!(
            m.handle_advert(t1 + ms(1), LOWER_IP, &adv(&m, 0)),
            Err(Reject::NotMaster)
        );
        assert_eq!(m.timer(Timer::MasterDown), down);
        // From the master itself it is a resignation.
        m.handle_advert(t1 + ms(2), HIGHER_IP, &adv(&m, 0)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t1 + ms(2) + m.skew_time()));
    }

    #[test]
    fn backup_preempts_after_skew_when_its_master_lowers_its_priority() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        let t1 = t0 + ms(100);
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 200)).unwrap();
        assert_eq!(m.current_master(), Some(HIGHER_IP));
        // Someone else's lower-priority advert changes nothing.
        let t2 = t1 + ms(500);
        assert_eq!(
            m.handle_advert(t2, LOWER_IP, &adv(&m, 50)),
            Err(Reject::LowerPriority)
        );
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + m.master_down_interval())
        );
        // The master itself drops below us: take over after Skew_Time only.
        m.handle_advert(t2, HIGHER_IP, &adv(&m, 50)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t2 + m.skew_time()));
        m.handle_timeout(t2 + m.skew_time());
        assert_eq!(m.state(), State::Master);
        // Without preemption the lower master is followed, as before.
        let mut n = backup(
            Config {
                preempt: false,
                ..cfg(100)
            },
            t0,
        );
        n.handle_advert(t1, HIGHER_IP, &adv(&n, 200)).unwrap();
        n.handle_advert(t2, HIGHER_IP, &adv(&n, 50)).unwrap();
        assert_eq!(
            n.timer(Timer::MasterDown),
            Some(t2 + n.master_down_interval())
        );
    }

    #[test]
    fn master_answers_priority_zero_with_advert_at_most_once_per_half_interval() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(150), t0);
        let t1 = t + ms(600);
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 0)).unwrap();
        assert_eq!(m.state(), State::Master);
        assert_eq!(transmits(&mut m), vec![150]);
        assert_eq!(m.timer(Timer::Advert), Some(t1 + ms(1000)));
        // A flood of priority-0 adverts within the next half interval: no reply.
        for i in 1..500 {
            assert_eq!(
                m.handle_advert(t1 + ms(i), HIGHER_IP, &adv(&m, 0)),
                Err(Reject::ReplyLimited)
            );
        }
        assert!(transmits(&mut m).is_empty());
        assert_eq!(m.timer(Timer::Advert), Some(t1 + ms(1000)));
        // Half an interval later a priority-0 advert is answered again.
        m.handle_advert(t1 + ms(500), HIGHER_IP, &adv(&m, 0))
            .unwrap();
        assert_eq!(transmits(&mut m), vec![150]);
    }

    #[test]
    fn shutdown_master_sends_priority_zero() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        m.handle_shutdown(t + ms(1));
        assert_eq!(m.state(), State::Initialize);
        assert_eq!(transmits(&mut m), vec![0]);
        assert_eq!(
            events(&mut m),
            vec![Event::Stopped {
                from: State::Master
            }]
        );
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(
            m.handle_advert(t, HIGHER_IP, &adv(&m, 200)),
            Err(Reject::Inactive)
        );
        // Can be started again.
        m.handle_startup(t + ms(5));
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn shutdown_backup_sends_nothing() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(cfg(100), t0);
        m.handle_shutdown(t0 + ms(1));
        assert_eq!(m.state(), State::Initialize);
        assert!(transmits(&mut m).is_empty());
        assert_eq!(
            events(&mut m),
            vec![Event::Stopped {
                from: State::Backup
            }]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn set_priority_master_advertises_at_once_backup_changes_skew() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(200), t0);
        m.set_priority(t + ms(100), 90);
        assert_eq!(m.priority(), 90);
        assert_eq!(transmits(&mut m), vec![90]);
        assert_eq!(m.timer(Timer::Advert), Some(t + ms(1100)));
        // Same priority again: nothing.
        m.set_priority(t + ms(200), 90);
        assert!(transmits(&mut m).is_empty());
        // 0 is raised to 1.
        m.set_priority(t + ms(300), 0);
        assert_eq!(m.priority(), 1);

        let mut b = backup(cfg(100), t0);
        b.set_priority(t0, 228);
        assert_eq!(b.skew_time(), us(109_375)); // 28*1s/256
        let t1 = t0 + ms(10);
        b.handle_advert(t1, HIGHER_IP, &adv(&b, 250)).unwrap();
        assert_eq!(b.timer(Timer::MasterDown), Some(t1 + us(3_109_375)));
    }

    #[test]
    fn tracking_drop_lets_preempting_backup_take_over() {
        let t0 = crate::testutil::epoch();
        let (mut a, ta) = master(cfg(200), t0);
        let mut b = backup(cfg(150), ta);
        let good = a.advert(200);
        b.handle_advert(ta + ms(500), HIGHER_IP, &good).unwrap();
        a.set_priority(ta + ms(600), 100);
        let r = a.poll_transmit().unwrap();
        assert_eq!(r.priority, 100);
        // Its master now advertises below it: B takes over after Skew_Time
        // (not a whole Master_Down_Interval after the last good advert).
        b.handle_advert(ta + ms(600), HIGHER_IP, &r).unwrap();
        let due = ta + ms(600) + b.skew_time();
        assert_eq!(b.timer(Timer::MasterDown), Some(due));
        b.handle_timeout(due);
        assert_eq!(b.state(), State::Master);
    }

    #[test]
    fn fault_from_master_sends_priority_zero_and_recovers_to_backup() {
        let t0 = crate::testutil::epoch();
        let (mut m, t) = master(cfg(100), t0);
        m.set_fault(t, true);
        assert_eq!(m.state(), State::Fault);
        assert_eq!(transmits(&mut m), vec![0]);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameFault {
                from: State::Master
            }]
        );
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(
            m.handle_advert(t, HIGHER_IP, &adv(&m, 50)),
            Err(Reject::Inactive)
        );
        let t1 = t + ms(5000);
        m.set_fault(t1, false);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(
            events(&mut m),
            vec![Event::BecameBackup { from: State::Fault }]
        );
        assert_eq!(m.timer(Timer::MasterDown), Some(t1 + us(3_609_375)));
    }

    #[test]
    fn fault_before_startup_is_remembered() {
        let t0 = crate::testutil::epoch();
        let mut m = Machine::new(cfg(255));
        m.set_fault(t0, true);
        assert_eq!(m.state(), State::Initialize);
        m.handle_startup(t0);
        assert_eq!(m.state(), State::Fault);
        assert!(transmits(&mut m).is_empty());
        m.set_fault(t0 + ms(1), false);
        assert_eq!(m.state(), State::Master); // owner
        assert_eq!(transmits(&mut m), vec![255]);
        // Fault from Backup sends nothing.
        let mut b = backup(cfg(100), t0);
        b.set_fault(t0, true);
        assert_eq!(b.state(), State::Fault);
        assert!(transmits(&mut b).is_empty());
    }

    #[test]
    fn preempt_delay_tolerates_lower_master_then_preempts() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(
            Config {
                preempt_delay: Duration::from_secs(10),
                ..cfg(200)
            },
            t0,
        );
        let mdi = m.master_down_interval();
        assert_eq!(m.timer(Timer::PreemptDelay), Some(t0 + ms(10_000)));
        // Lower adverts are accepted while the delay runs.
        let mut t = t0;
        for _ in 0..9 {
            t += ms(1000);
            m.handle_advert(t, LOWER_IP, &adv(&m, 100)).unwrap();
            assert_eq!(m.timer(Timer::MasterDown), Some(t + mdi));
            m.handle_timeout(t);
            assert_eq!(m.state(), State::Backup);
        }
        // t0+10 s: the delay is over; later lower adverts are discarded.
        assert_eq!(m.poll_timeout(), Some(t0 + ms(10_000)));
        m.handle_timeout(t0 + ms(10_000));
        assert_eq!(m.timer(Timer::PreemptDelay), None);
        // The next advert of that lower master: preempt after Skew_Time.
        t += ms(1000);
        m.handle_advert(t, LOWER_IP, &adv(&m, 100)).unwrap();
        assert_eq!(m.timer(Timer::MasterDown), Some(t + m.skew_time()));
        // Further ones (no longer from the master we follow) are discarded.
        assert_eq!(
            m.handle_advert(t + ms(1), LOWER_IP, &adv(&m, 100)),
            Err(Reject::LowerPriority)
        );
        m.handle_timeout(t + m.skew_time());
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn preempt_delay_rearmed_by_higher_priority_adverts() {
        let t0 = crate::testutil::epoch();
        let mut m = backup(
            Config {
                preempt_delay: Duration::from_secs(5),
                ..cfg(150)
            },
            t0,
        );
        let t1 = t0 + ms(20_000);
        // (MasterDown would have fired; feed adverts without calling handle_timeout.)
        m.handle_advert(t1, HIGHER_IP, &adv(&m, 200)).unwrap();
        assert_eq!(m.timer(Timer::PreemptDelay), Some(t1 + ms(5000)));
        // The higher master is replaced by a lower one: tolerated until t1+5 s.
        m.handle_advert(t1 + ms(4000), LOWER_IP, &adv(&m, 100))
            .unwrap();
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + ms(4000) + m.master_down_interval())
        );
        m.handle_advert(t1 + ms(5000), LOWER_IP, &adv(&m, 100))
            .unwrap();
        assert_eq!(
            m.timer(Timer::MasterDown),
            Some(t1 + ms(5000) + m.skew_time()),
            "delay over at t1+5s: preempt the lower master after Skew_Time"
        );
    }

    #[test]
    fn event_from_to() {
        let e = Event::BecameFault {
            from: State::Master,
        };
        assert_eq!((e.from(), e.to()), (State::Master, State::Fault));
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn from_instance_config() {
        let inst = VrrpInstanceConfig {
            name: "VI_1".into(),
            interface: "eth0".into(),
            virtual_router_id: 51,
            priority: 100,
            advert_interval: ms(1000),
            version: 2,
            preempt: false,
            preempt_delay: ms(3000),
            virtual_ipaddress: vec![(VIP, 24), (IpAddr::V6("2001:db8::1".parse().unwrap()), 64)],
            unicast_peers: vec![],
            unicast_src: None,
            auth_pass: Some("mypasswd-long".into()),
            track_upstream: vec![],
            positions: vec![],
            track_interface: vec![],
            track_script: vec![],
            track_data_plane: crate::config::defaults::DATA_PLANE,
            notify: None,
            sync_group: None,
            garp_repeat: 5,
            garp_interval: ms(0),
            garp_refresh: ms(0),
            garp_master_delay: ms(0),
        };
        let c = Config::from_instance(&inst, ME);
        assert_eq!(c.version, Version::V2);
        assert_eq!((c.vrid, c.priority, c.advert_interval), (51, 100, 100));
        assert!(!c.preempt && c.accept_mode);
        assert_eq!(c.preempt_delay, ms(3000));
        assert_eq!(c.addresses, vec![VIP]);
        assert_eq!(c.auth, Auth::simple("mypasswd"));
        let c3 = Config::from_instance(&VrrpInstanceConfig { version: 3, ..inst }, ME);
        assert_eq!(c3.auth, Auth::None);
    }
}
