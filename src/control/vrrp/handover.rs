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
//!
//! # Lingering after the successor is heard
//!
//! Removing an address kills every reply this node would still send from
//! it: the kernel cannot route a segment whose source is no longer local,
//! so a request the node received just before the move would never be
//! answered (the client times out; measured: a `requests` client waited
//! its full 2 s read timeout). So the stopping node keeps its addresses a
//! little longer, until its data plane has no exchange in flight
//! ([`linger_done`]: at least [`LINGER_MIN`], at most [`LINGER_MAX`]).
//! Clients no longer send to it by then (their ARP entries moved with the
//! new master's gratuitous ARPs); only its answers still leave from the
//! address. For that short time both nodes would answer an ARP request for
//! the VIP; a host that first asks in exactly that window may pick the
//! stopping node, which still serves it until the addresses go.

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

/// The least a stopping master keeps its addresses after its handover:
/// two shard ticks, so the in-flight count it reads was taken after the
/// move.
pub const LINGER_MIN: Duration = Duration::from_millis(20);

/// The most it keeps them: an exchange still in flight by then (a slow
/// backend, a long download, a WebSocket) is cut either way.
pub const LINGER_MAX: Duration = Duration::from_millis(300);

/// Whether a stopping master that handed over `elapsed` ago, with
/// `in_flight` client exchanges still running, may drop its addresses now.
pub fn linger_done(elapsed: Duration, in_flight: usize) -> bool {
    elapsed >= LINGER_MAX || (elapsed >= LINGER_MIN && in_flight == 0)
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
    fn the_addresses_linger_while_exchanges_are_in_flight() {
        let ms = Duration::from_millis;
        for (elapsed, in_flight, done) in [
            (ms(0), 0, false),
            (LINGER_MIN - ms(1), 0, false),
            (LINGER_MIN, 0, true),
            (LINGER_MIN, 3, false),
            (LINGER_MAX - ms(1), 1, false),
            (LINGER_MAX, 1, true),
            (LINGER_MAX, 0, true),
        ] {
            assert_eq!(
                linger_done(elapsed, in_flight),
                done,
                "{elapsed:?} with {in_flight} in flight"
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
