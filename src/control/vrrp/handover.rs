//! A graceful stop hands the VIP over without a gap.
//!
//! RFC 5798 has a stopping master send a priority-0 advert. A backup that
//! hears it takes over after its Skew_Time: (256 − priority) × interval /
//! 256 in VRRPv3, (256 − priority) / 256 s in VRRPv2, whose intervals are
//! whole seconds. Either way that is less than one advert interval. If
//! the stopping master drops its addresses at once, as keepalived does,
//! nobody holds the VIP for that Skew_Time. Clients still send to the old
//! master's MAC, that node drops their SYNs, and each of those clients
//! waits for its 1 s SYN retransmit. That is 6 ms of new connections at
//! 10 ms adverts and priority 100, and 0.6 s of them at the 1 s default.
//!
//! So a stopping ringlb master keeps its addresses, and keeps serving, until
//! it hears the new master's first advert, or until [`limit`] passes (no
//! backup answered). The new master sends that first advert together with
//! its gratuitous ARPs, and the data plane starts draining only after the
//! handover. A client therefore always reaches a node that holds the
//! address, and the only connections at risk are those open at the instant
//! the clients' ARP entries move.
//!
//! In that window the stopping node sends no adverts: its priority-0
//! advert already said it is leaving, so the VIP has one advertising
//! master at every moment.

use std::net::IpAddr;
use std::time::Duration;

/// What a stopping master waits beyond one advert interval for its
/// successor's first advert: scheduling and the path.
pub const MARGIN: Duration = Duration::from_millis(200);

/// How long a stopping master keeps its addresses when no successor is
/// heard: one advert interval (longer than any backup's Skew_Time) plus
/// [`MARGIN`].
pub fn limit(advert_interval: Duration) -> Duration {
    advert_interval + MARGIN
}

/// Whether an advert, already validated for this instance, shows that
/// another router is master now: a priority above 0 from an address that
/// is not `own`. A priority-0 advert is another router leaving too, and
/// `own` adverts can come back on a looped-back multicast.
pub fn successor_heard(own: Option<IpAddr>, from: IpAddr, priority: u8) -> bool {
    priority != 0 && own != Some(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_one_interval_plus_the_margin() {
        for (interval_ms, want_ms) in [(10, 210), (100, 300), (1000, 1200), (3000, 3200)] {
            assert_eq!(
                limit(Duration::from_millis(interval_ms)),
                Duration::from_millis(want_ms),
                "interval {interval_ms} ms"
            );
        }
    }

    #[test]
    fn only_another_router_claiming_mastership_is_a_successor() {
        let me: IpAddr = "198.18.0.1".parse().unwrap();
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        for (own, from, prio, want) in [
            (Some(me), peer, 100, true),
            (Some(me), peer, 255, true),
            (Some(me), peer, 1, true),
            // Another router leaving is not a successor.
            (Some(me), peer, 0, false),
            // Our own advert, looped back.
            (Some(me), me, 200, false),
            (None, peer, 100, true),
        ] {
            assert_eq!(
                successor_heard(own, from, prio),
                want,
                "{own:?} {from} {prio}"
            );
        }
    }
}
