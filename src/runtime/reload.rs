//! What SIGHUP does: re-read the configuration and apply it, or change nothing.
//!
//! 1. Read and validate the file (`config::load`). Any error → log every
//!    problem, keep running the old configuration, done.
//! 2. Bind the listeners the new file adds, once per shard. One fails (port
//!    in use, bad address) → log it, keep the old configuration, done.
//! 3. Apply the `[[vrrp.instance]]` list (`control::vrrp::plan`): an
//!    instance whose identity (name, interface, VRID, version, family) is
//!    unchanged keeps its state and VIPs and takes every other setting live
//!    (a new priority is in the next advert, added VIPs are added and
//!    announced, removed ones dropped); added instances start, removed ones
//!    resign with a priority-0 advert. An identity change, or a socket a new
//!    instance needs that cannot be opened → log it (`FILE:LINE:COL`), keep
//!    the old configuration entirely (the listeners bound in step 2 are
//!    closed again), done.
//! 4. Publish the new snapshot (generation + 1) with the new routes,
//!    upstreams, selectors and settings. Server health carries over for every
//!    (upstream, address) pair that still exists; the health thread picks up
//!    new or changed checks on its next tick. Requests in flight finish on
//!    the snapshot they started with; the next request on any connection
//!    uses the new one.
//! 5. Hand the added sockets to the shards and tell them which listeners to
//!    close; each shard applies that on its next tick (≤ 10 ms). Connections
//!    accepted on a removed listener are not cut, but wound down as a
//!    draining shard winds down its own (`data::deadline::listener_removed`):
//!    the exchange in flight finishes and is answered with `Connection:
//!    close`, idle connections are closed. A next request on one could not
//!    be routed: its listener is not in the new snapshot. (An answer sent
//!    between the publication and that tick still keeps its connection.)
//! 6. Ask the access-log writer to reopen its file (log rotation).
//!
//! Not applied by a reload (they take a restart): `[runtime]` shard count and
//! CPUs (`shutdown_timeout` is read at stop, so it does apply), `[admin]`,
//! `[log]` (access-log path and format, latency histograms), the `backlog` of
//! a listener that stays.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::listeners::{self, Source};
use super::start::Running;
use crate::data::link::ListenerCmd;

impl Running {
    /// Re-reads `path` and applies it (see the module docs). Returns whether
    /// the new configuration is now running.
    pub fn reload(&mut self, path: &Path) -> bool {
        let mut new = match crate::config::load(path) {
            Ok(c) => c,
            Err(e) => {
                crate::error!("reload failed, keeping the running configuration:\n{e}");
                return false;
            }
        };
        crate::control::fd_budget::apply(&mut new, self.shards.len());
        for w in &new.warnings {
            crate::warn!("reload: {w}");
        }
        let old: HashSet<SocketAddr> = self.config.listeners.iter().map(|l| l.listen).collect();
        let new_set: HashSet<SocketAddr> = new.listeners.iter().map(|l| l.listen).collect();
        // Bind new listeners first: if one fails, nothing changes.
        let mut added = Vec::new();
        for l in new.listeners.iter().filter(|l| !old.contains(&l.listen)) {
            match listeners::open_group(Source::Bind(l.listen), l.backlog, self.shards.len()) {
                Ok(group) => added.push((l.listen, group)),
                Err(e) => {
                    crate::error!(
                        "reload failed, keeping the running configuration: listen {}: {e}",
                        l.listen
                    );
                    return false;
                }
            }
        }
        // VRRP next: the last step that can refuse; dropping `added` closes
        // the listeners just bound.
        if let Some(vrrp) = &mut self.vrrp {
            let file = path.display().to_string();
            match vrrp.reload(&new.vrrp, &file) {
                Ok(lines) => {
                    for l in lines {
                        crate::info!("reload: {l}");
                    }
                }
                Err(e) => {
                    crate::error!("reload failed, keeping the running configuration:\n{e}");
                    return false;
                }
            }
        }
        let new = Arc::new(new);
        // Publish first so requests on new listeners find their routes.
        let generation = self.publisher.reload(Arc::clone(&new));
        for (addr, group) in added {
            for ((link, _), sock) in self.shards.iter().zip(group) {
                link.send_listener(ListenerCmd::Add(addr, sock));
            }
            crate::info!("reload: listening on {addr}");
        }
        for addr in old.iter().filter(|a| !new_set.contains(a)) {
            for (link, _) in &self.shards {
                link.send_listener(ListenerCmd::Remove(*addr));
            }
            crate::info!("reload: closed listener {addr}");
        }
        self.config = new;
        self.reopen_logs();
        crate::info!("reload: configuration generation {generation} published");
        true
    }

    /// Asks the access-log writer to reopen its file (log rotation: on
    /// SIGHUP and SIGUSR1).
    pub fn reopen_logs(&self) {
        if let Some(tx) = &self.access_log {
            // An empty buffer asks the writer to reopen.
            let _ = tx.try_send(Vec::new());
        }
    }
}
