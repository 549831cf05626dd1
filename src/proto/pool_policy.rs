//! How many idle upstream connections a shard keeps, and for how long.
//!
//! `keepalive = N` keeps nginx's meaning: up to N idle connections per
//! server are cached. Closing every connection above N the moment it goes
//! idle, though, hurts exactly when concurrency is above N: at 1000 clients
//! with `keepalive = 64` the pool closed a connection on one return and
//! opened a new one on the next take a millisecond later, and the backend
//! spent twice the CPU per request on accepting and tearing down
//! connections. So idle connections above the cap (the *surplus*) are not
//! closed at once: they age out once idle for [`SURPLUS_IDLE`], oldest
//! first. Under a steady load above the cap every connection is reused long
//! before that; after a burst the pool is back to the cap within the
//! window. The number of idle connections never exceeds the number that
//! were in use at once within the last window, and connections past the
//! upstream's `keepalive_timeout` go regardless of the cap.
//!
//! The pool (`data::pool`) keeps each server's idle connections oldest
//! first and takes the warmest; it asks [`close_oldest`] whether to close
//! the oldest, and [`may_cache`] whether to keep a returned one at all.
//!
//! A backend closes an idle connection when *its* idle timeout runs out,
//! and a request written just then is lost in flight: the backend's FIN
//! and the request cross, the proxy reads a reset, and cannot tell whether
//! the request was acted on. A GET is then sent again on a fresh
//! connection; a POST, or a body streamed from the client, cannot be (it
//! is never replayed), and the client would get a 502 for a request the
//! backend never saw. Such a request is therefore only given a connection
//! that was busy within the last [`UNREPLAYABLE_IDLE`] ([`reuse_within`]):
//! no backend closes a connection that young (uvicorn's shortest usual
//! setting is 1 s, gunicorn's default 2 s), so it opens a new one instead
//! after a quiet spell. Under load every connection is reused within
//! milliseconds and nothing changes.

use std::time::Duration;

/// How long an idle connection above the `keepalive` cap is kept for the
/// next burst before it is closed.
pub const SURPLUS_IDLE: Duration = Duration::from_secs(1);

/// The longest a pooled connection may have been idle and still carry a
/// request that cannot be sent again (see the module docs).
pub const UNREPLAYABLE_IDLE: Duration = Duration::from_millis(500);

/// How long a pooled connection may have been idle to carry a request:
/// its upstream's `keepalive_timeout` when the request can be sent again
/// should the connection turn out closed (`replayable`: idempotent, body
/// buffered), else at most [`UNREPLAYABLE_IDLE`].
pub fn reuse_within(replayable: bool, keepalive_timeout: Duration) -> Duration {
    if replayable {
        keepalive_timeout
    } else {
        keepalive_timeout.min(UNREPLAYABLE_IDLE)
    }
}

/// May a connection coming back from a complete exchange be cached?
/// `keepalive = 0` or `keepalive_timeout = 0` keep none.
pub fn may_cache(keepalive: usize, keepalive_timeout: Duration) -> bool {
    keepalive > 0 && !keepalive_timeout.is_zero()
}

/// The facts about one server's idle list that decide its oldest member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oldest {
    /// Idle connections to this server, the oldest included.
    pub idle: usize,
    /// The upstream's `keepalive`.
    pub keepalive: usize,
    /// How long the oldest has been idle.
    pub idle_for: Duration,
    /// The `keepalive_timeout` it was pooled with.
    pub timeout: Duration,
}

/// Should the oldest idle connection be closed now? When past its
/// `keepalive_timeout`, or when it is surplus (more idle than the cap) and
/// has been idle for [`SURPLUS_IDLE`].
pub fn close_oldest(o: Oldest) -> bool {
    if o.idle == 0 {
        return false;
    }
    o.idle_for >= o.timeout || (o.idle > o.keepalive && o.idle_for >= SURPLUS_IDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn reuse_within_table() {
        for (replayable, timeout, want, why) in [
            (
                true,
                MS(4_000),
                MS(4_000),
                "a GET takes any live connection",
            ),
            (false, MS(4_000), MS(500), "a POST only a recently busy one"),
            (false, MS(200), MS(200), "never beyond keepalive_timeout"),
            (true, MS(0), MS(0), "no keep-alive at all"),
        ] {
            assert_eq!(reuse_within(replayable, timeout), want, "{why}");
        }
    }

    #[test]
    fn may_cache_table() {
        for (keepalive, timeout, want) in [
            (64, MS(60_000), true),
            (1, MS(1), true),
            (0, MS(60_000), false),
            (64, MS(0), false),
            (0, MS(0), false),
        ] {
            assert_eq!(
                may_cache(keepalive, timeout),
                want,
                "{keepalive} {timeout:?}"
            );
        }
    }

    #[test]
    fn close_oldest_table() {
        let t = MS(60_000);
        for (idle, keepalive, idle_for, timeout, want, why) in [
            (0, 64, MS(0), t, false, "empty list"),
            (10, 64, MS(5), t, false, "below the cap, fresh"),
            (
                64,
                64,
                MS(59_000),
                t,
                false,
                "at the cap: only the timeout closes",
            ),
            (
                64,
                64,
                MS(60_000),
                t,
                true,
                "at the cap, past keepalive_timeout",
            ),
            (
                65,
                64,
                MS(0),
                t,
                false,
                "surplus, just returned: kept for the next burst",
            ),
            (900, 64, MS(999), t, false, "surplus within the window"),
            (
                900,
                64,
                MS(1000),
                t,
                true,
                "surplus idle for the whole window",
            ),
            (65, 64, MS(5_000), t, true, "surplus long idle"),
            (
                2,
                1,
                MS(300),
                MS(200),
                true,
                "surplus past a short keepalive_timeout",
            ),
            (
                1,
                1,
                MS(300),
                MS(200),
                true,
                "within the cap past keepalive_timeout",
            ),
            (
                1,
                1,
                MS(100),
                MS(200),
                false,
                "within the cap and the timeout",
            ),
        ] {
            let o = Oldest {
                idle,
                keepalive,
                idle_for,
                timeout,
            };
            assert_eq!(close_oldest(o), want, "{why}: {o:?}");
        }
    }
}
