//! The data plane's liveness as VRRP tracks it: every shard's heartbeat
//! and whether its thread is still there.
//!
//! Every shard bumps its heartbeat every tick (10 ms). VRRP's
//! `track_data_plane` (`control::vrrp::liveness`) reads these samples on
//! every tracking tick and decides: a slow data plane lowers the priority,
//! a dead one (no progress for `fault_after`, or a shard gone) is FAULT.

use std::sync::Arc;

use crate::control::vrrp::ShardSample;
use crate::data::link::ShardLink;

/// The shards' heartbeats, as VRRP's `SampleFn`.
pub fn liveness(shards: Vec<Arc<ShardLink>>) -> impl Fn(&mut Vec<ShardSample>) + Send + Sync {
    move |out| {
        out.clear();
        out.extend(shards.iter().map(|link| ShardSample {
            heartbeat: link.heartbeat(),
            exited: link.has_exited(),
        }));
    }
}
