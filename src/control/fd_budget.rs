//! File descriptors: what the configuration needs against `RLIMIT_NOFILE`.
//!
//! Every proxied connection holds two descriptors (client and upstream),
//! every shard keeps idle upstream connections (`keepalive` per server) and
//! one socket per listener. When the shards are allowed more than the
//! process can open, the first thing to fail under load is not a request
//! but the control plane: a health check that cannot connect marks servers
//! down, a VRRP netlink request fails, and the VIP moves for no reason.
//!
//! So at start (and on every reload) the soft limit is raised to the hard
//! one, and if `max_connections` × shards still does not fit with
//! [`CONTROL_RESERVE`] descriptors left for the control plane, the
//! per-shard `max_connections` is lowered to what fits, with a warning that
//! says how to raise the limit. [`plan`] is the arithmetic, pure and
//! table-tested; [`apply`] reads and raises the limit.

use crate::config::Config;

/// Descriptors kept for the control plane: admin clients, health checks,
/// VRRP and netlink sockets, notify and track scripts, log files.
pub const CONTROL_RESERVE: u64 = 256;

/// Descriptors one shard needs besides its connections.
pub fn per_shard_fixed(config: &Config) -> u64 {
    let pools: u64 = config
        .upstreams
        .iter()
        .map(|u| (u.keepalive as u64).saturating_mul(u.servers.len() as u64))
        .sum();
    pools + config.listeners.len() as u64
}

/// What fits under `limit` descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Everything fits.
    Fits { need: u64 },
    /// Lower `max_connections` per shard to this (at least 1).
    Lower { need: u64, max_connections: u64 },
}

/// `max_connections` per shard × `shards`, two descriptors each, plus
/// `fixed` per shard and the control reserve, against `limit`.
pub fn plan(max_connections: u64, shards: u64, fixed: u64, limit: u64) -> Plan {
    let shards = shards.max(1);
    let need = shards
        .saturating_mul(max_connections.saturating_mul(2).saturating_add(fixed))
        .saturating_add(CONTROL_RESERVE);
    if need <= limit {
        return Plan::Fits { need };
    }
    let for_shards = limit.saturating_sub(CONTROL_RESERVE) / shards;
    let max_connections = (for_shards.saturating_sub(fixed) / 2).max(1);
    Plan::Lower {
        need,
        max_connections,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Fits `config` to the descriptor limit (see the module docs); `shards` is
/// the number of shards actually running.
pub fn apply(config: &mut Config, shards: usize) {
    let limit = raise_nofile();
    let max = config.http.max_connections as u64;
    match plan(max, shards as u64, per_shard_fixed(config), limit) {
        Plan::Fits { .. } => {}
        Plan::Lower {
            need,
            max_connections,
        } => {
            crate::warn!(
                "max_connections = {max} on {shards} shard(s) needs ~{need} file descriptors but \
                 RLIMIT_NOFILE is {limit}: serving at most {max_connections} connections per shard \
                 (keeping {CONTROL_RESERVE} for the control plane); raise the limit \
                 (LimitNOFILE=, ulimit -n) to serve more"
            );
            config.http.max_connections = max_connections as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        // (max_connections, shards, fixed, limit) -> plan
        let cases = [
            (
                (1000, 2, 10, 1 << 20),
                Plan::Fits {
                    need: 2 * 2010 + 256,
                },
            ),
            ((1000, 2, 10, 4276), Plan::Fits { need: 4276 }),
            (
                (1000, 2, 10, 4275),
                Plan::Lower {
                    need: 4276,
                    max_connections: 999,
                },
            ),
            (
                // This machine's default: 16384 per shard, 2 shards, 20000 fds.
                (16384, 2, 65, 20000),
                Plan::Lower {
                    need: 2 * (32768 + 65) + 256,
                    max_connections: (20000 - 256) / 2 / 2 - 33,
                },
            ),
            // Nothing fits: still one connection per shard, never zero.
            (
                (100, 4, 1000, 300),
                Plan::Lower {
                    need: 4 * 1200 + 256,
                    max_connections: 1,
                },
            ),
            // Zero shards is treated as one.
            ((10, 0, 0, 1 << 20), Plan::Fits { need: 276 }),
        ];
        for ((m, s, f, l), want) in cases {
            assert_eq!(plan(m, s, f, l), want, "{m} {s} {f} {l}");
        }
    }

    #[test]
    fn raising_never_lowers() {
        let before = {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            lim.rlim_cur
        };
        assert!(raise_nofile() >= before);
    }
}
