//! The VRRP timer table.
//!
//! RFC 5798 needs only three timers per virtual router, so (like quinn-proto)
//! they are a fixed array of optional deadlines indexed by an enum: no heap,
//! no timer wheel, and the next wake-up is simply the minimum. The driver
//! sleeps until [`TimerTable::next_timeout`] and the machine asks which timers
//! have expired at `now`.

use std::time::Instant;

/// The timers of one virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Master: time to send the next advert (Adver_Timer).
    Advert = 0,
    /// Backup: the master is presumed dead when this fires (Master_Down_Timer).
    MasterDown = 1,
    /// Backup: until this fires, a lower-priority master is tolerated
    /// (keepalived's `preempt_delay`).
    PreemptDelay = 2,
}

impl Timer {
    /// All timers, in the order expired ones are handled.
    pub const VALUES: [Timer; 3] = [Timer::PreemptDelay, Timer::MasterDown, Timer::Advert];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerTable {
    data: [Option<Instant>; 3],
}

impl TimerTable {
    /// Arm (or re-arm) `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer as usize] = Some(at);
    }

    /// Disarm `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    /// Disarm every timer.
    pub fn stop_all(&mut self) {
        self.data = [None; 3];
    }

    /// Deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    /// Whether `timer` is armed and its deadline has passed at `now`.
    pub fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// If `timer` has expired at `now`, disarm it and return true.
    pub fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        let expired = self.is_expired(timer, now);
        if expired {
            self.stop(timer);
        }
        expired
    }

    /// The earliest armed deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_timeout_is_min_of_armed() {
        let t0 = crate::testutil::epoch();
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::MasterDown, t0 + Duration::from_secs(3));
        t.set(Timer::PreemptDelay, t0 + Duration::from_secs(5));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(3)));
        t.set(Timer::Advert, t0 + Duration::from_secs(1));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(1)));
        t.stop(Timer::Advert);
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(3)));
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn take_expired_disarms_only_when_due() {
        let t0 = crate::testutil::epoch();
        let mut t = TimerTable::default();
        t.set(Timer::Advert, t0 + Duration::from_millis(10));
        assert!(!t.take_expired(Timer::Advert, t0));
        assert_eq!(t.get(Timer::Advert), Some(t0 + Duration::from_millis(10)));
        assert!(t.take_expired(Timer::Advert, t0 + Duration::from_millis(10)));
        assert_eq!(t.get(Timer::Advert), None);
        assert!(!t.take_expired(Timer::Advert, t0 + Duration::from_secs(1)));
    }
}
