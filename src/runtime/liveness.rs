//! The data plane's liveness as VRRP tracks it: are the shards making
//! progress?
//!
//! Every shard bumps its heartbeat every tick (10 ms). A master whose
//! shards stopped ticking cannot serve, so it must not hold the VIP: VRRP
//! calls [`liveness`]'s function before every advert and goes to FAULT when
//! it says no.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::link::ShardLink;

/// A shard whose heartbeat has not moved for this long is stalled; VRRP then
/// gives the VIP away (the data plane's own liveness, no polling script).
pub const STALL_LIMIT: Duration = Duration::from_millis(40);

/// How long a shard may take to tick for the first time.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// The data plane's liveness: every shard's heartbeat moved within
/// [`STALL_LIMIT`] and no shard has exited.
pub fn liveness(shards: Vec<Arc<ShardLink>>) -> impl Fn() -> bool + Send + Sync {
    let created = Instant::now();
    let seen = std::sync::Mutex::new(vec![(0u64, created); shards.len()]);
    move || {
        let now = Instant::now();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut alive = true;
        for (link, (beat, at)) in shards.iter().zip(seen.iter_mut()) {
            let b = link.heartbeat();
            if b != *beat {
                *beat = b;
                *at = now;
            }
            // A shard that has not ticked yet is still starting (runtime and
            // listeners being built): that is not a stall.
            let starting = b == 0 && now.duration_since(created) < STARTUP_GRACE;
            if link.has_exited() || (!starting && now.duration_since(*at) > STALL_LIMIT) {
                alive = false;
            }
        }
        alive
    }
}
