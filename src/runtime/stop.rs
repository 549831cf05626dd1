//! What SIGTERM and SIGINT do: a graceful stop.
//!
//! 1. **Give the VIP away first.** Every VRRP master sends a priority-0
//!    advert (the backup takes over after its Skew_Time instead of after 3 ×
//!    advert interval), and `notify` runs with STOP. It keeps its VIPs, and
//!    this node keeps serving, until the new master's first advert arrives
//!    (or one advert interval plus 200 ms passes with none), so no client
//!    meets a moment when nobody holds the address
//!    (`control/vrrp/handover.rs`). Then the VIPs go, and from here on new
//!    clients go to the peer.
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

use std::time::Duration;

use super::start::Running;

impl Running {
    /// Graceful stop (see the module docs); returns when the node is down.
    pub fn stop(mut self) {
        if let Some(vrrp) = self.vrrp.take() {
            vrrp.shutdown();
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
