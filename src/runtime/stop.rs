//! What SIGTERM and SIGINT do: a graceful stop.
//!
//! 0. **Wind keep-alive down** (only on a node that is VRRP master of some
//!    instance). Once the VIP moves, the new master answers every packet
//!    of a connection made to this node with a reset, so a keep-alive
//!    client's next request on such a connection fails. So first the
//!    wind-down snapshot goes out: the shards keep accepting, answer every
//!    request with `Connection: close` and close connections that wait for
//!    a next request (`data/shard.rs`). The stop waits until no connection
//!    from before remains, or [`WIND_DOWN_LIMIT`]; by then keep-alive
//!    clients have reconnected, one request per connection, and only the
//!    exchanges in flight at the moment of the move are at risk.
//! 1. **Give the VIP away.** Every VRRP master sends a priority-0
//!    advert (the backup takes over after its Skew_Time instead of after 3 ×
//!    advert interval), and `notify` runs with STOP. It keeps its VIPs, and
//!    this node keeps serving, until the new master's first advert arrives
//!    (or one advert interval plus 200 ms passes with none), so no client
//!    meets a moment when nobody holds the address
//!    (`control/vrrp/handover.rs`). It keeps them a little longer, until
//!    the shards report no exchange in flight (20–300 ms): a reply can
//!    only leave from an address the node still has. Then the VIPs go, and
//!    from here on new clients go to the peer.
//! 2. **Publish the draining snapshot.** Draining is snapshot state; each
//!    shard applies it on its next tick (≤ 10 ms) in one step: it closes its
//!    listening sockets (clients still in the backlog get a reset), then
//!    answers the requests in flight with `Connection: close`, keeps no
//!    connection alive, and shuts idle client connections every tick.
//!    `/healthz` answers 503.
//! 3. **Tell every shard to stop** (its link's stop flag, set after the
//!    publish, so a shard that sees it also sees the draining snapshot): it
//!    drops its idle upstream connections and starts its exit clock.
//! 4. **Wait** until every shard has exited — no connection left — or until
//!    `[runtime] shutdown_timeout` passes; a shard still holding connections
//!    then logs how many and exits anyway.
//! 5. Stop the health thread, join the shard threads; the admin endpoint
//!    and the access-log writer close when the node is dropped.

use std::sync::Arc;
use std::time::Duration;

use super::start::Running;
use crate::data::link::ShardLink;

/// Longest a graceful stop waits for the connections open before its
/// wind-down to close (step 0). A client that is slow to send its next
/// request has its idle connection closed after 100 ms; what is still
/// open after this is an exchange that takes longer (a long download, a
/// WebSocket), which the move would cut at any later moment too.
pub const WIND_DOWN_LIMIT: Duration = Duration::from_secs(1);

/// Whether every shard has applied the wind-down and none holds a
/// connection from before it: `(exited, left)` per shard. A shard that has
/// exited holds none.
pub fn wound_down(shards: impl IntoIterator<Item = (bool, Option<u64>)>) -> bool {
    shards
        .into_iter()
        .all(|(exited, left)| exited || left == Some(0))
}

impl Running {
    /// Graceful stop (see the module docs); returns when the node is down.
    pub fn stop(mut self) {
        let links: Vec<Arc<ShardLink>> = self.shards.iter().map(|(l, _)| Arc::clone(l)).collect();
        if let Some(vrrp) = self.vrrp.take() {
            if vrrp.is_master() {
                self.wind_down(&links);
            }
            vrrp.shutdown_after_exchanges(Box::new(move || {
                links.iter().map(|l| l.busy() as usize).sum()
            }));
        }
        let limit = self.config.runtime.shutdown_timeout + Duration::from_secs(1);
        self.publisher.drain();
        for (link, _) in &self.shards {
            link.request_stop();
        }
        let all_exited = wait_until(limit, || self.shards.iter().all(|(l, _)| l.has_exited()));
        self.health_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.health.take() {
            let _ = h.join();
        }
        if all_exited {
            for (_, h) in self.shards {
                let _ = h.join();
            }
        }
    }

    /// Step 0: publishes the wind-down and waits until no connection from
    /// before it is left on any shard, or [`WIND_DOWN_LIMIT`].
    fn wind_down(&self, links: &[Arc<ShardLink>]) {
        let start = std::time::Instant::now();
        self.publisher.wind_down();
        let done = wait_until(WIND_DOWN_LIMIT, || {
            wound_down(links.iter().map(|l| (l.has_exited(), l.wind_down_left())))
        });
        if done {
            crate::info!(
                "stop: keep-alive wound down in {} ms; handing the VIPs over",
                start.elapsed().as_millis()
            );
        } else {
            let left: u64 = links.iter().filter_map(|l| l.wind_down_left()).sum();
            crate::info!(
                "stop: {left} connections from before the wind-down still open after {} ms; handing the VIPs over",
                WIND_DOWN_LIMIT.as_millis()
            );
        }
    }
}

/// Sleeps the calling (non-runtime) thread in small steps until `done()`
/// or `limit` passes. Returns whether `done()` became true.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[cfg(test)]
mod tests {
    use super::wound_down;

    #[test]
    fn wound_down_once_every_shard_reports_none_left() {
        for (shards, done) in [
            (vec![], true),
            (vec![(false, Some(0)), (false, Some(0))], true),
            // A shard that has not applied the wind-down yet.
            (vec![(false, Some(0)), (false, None)], false),
            (vec![(false, Some(2)), (false, Some(0))], false),
            // An exited shard holds no connection.
            (vec![(true, None), (false, Some(0))], true),
        ] {
            assert_eq!(wound_down(shards.iter().copied()), done, "{shards:?}");
        }
    }
}
