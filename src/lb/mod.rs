//! Load-balancing selection: which upstream server gets the next request.
//!
//! # Why it is split this way
//!
//! Shards never share mutable state on the request path (see "Rules" in
//! ARCHITECTURE.md), so selection is split in two:
//!
//! - [`Selector`] is built **once per snapshot** by the control thread from the
//!   resolved server list. It is immutable, `Send + Sync`, and shared by every
//!   shard through the snapshot. Everything expensive (tier lists, the Maglev
//!   lookup table for `hash`) is precomputed here, like
//!   pingora-load-balancing's "build once, select many".
//! - [`ShardState`] is the small mutable part each shard owns for each
//!   upstream: smooth-weighted-round-robin current weights, per-shard
//!   in-flight counters, and an xorshift RNG state. No atomics, no locks: a
//!   shard's `max_conns` and `least_conn` view is its own share of the load,
//!   which is what nginx does per worker too.
//!
//! Dynamic facts that change between snapshots without a rebuild (a server
//! marked down by passive health, a server already tried for this request,
//! the slow-start ramp) are passed to [`Selector::pick`] as closures, so the
//! selector itself never needs to be rebuilt or locked for them.
//!
//! # Rules common to every method
//!
//! - Servers are split into a *primary* tier and a *backup* tier. The backup
//!   tier is consulted only when no primary can be picked — because every
//!   primary is unavailable **or** full (the nginx rule: a primary at
//!   `max_conns` overflows to the backups).
//! - A server is skipped when `unavailable(i)` is true, or when `max_conns > 0`
//!   and this shard already has `max_conns` requests in flight to it.
//! - The result is `Err(NoServer::AllFull)` if at least one server was
//!   available but full, otherwise `Err(NoServer::AllDown)`.
//! - The effective weight of server `i` is `weight * permille / 1000` where
//!   `permille = weight_permille(i)` clamped to `1..=1000`. A permille of 0 is
//!   treated as 1 so that a lone server that has just come back still serves
//!   (its share is tiny only when others are up). Weights are computed in
//!   milli-units, so ramps stay smooth even for weight 1.
//! - Picking never allocates. Every method is O(servers in the tier) except
//!   `hash`, which is O(1) when the first choice is usable.
//!
//! # Methods
//!
//! - [`round_robin`]: nginx's smooth weighted round robin.
//! - [`least_conn`]: fewest in-flight per weight, ties by smooth round robin.
//! - [`random_two`]: power of two (weighted random) choices on in-flight per weight.
//! - [`hash`]: weighted Maglev consistent hashing with deterministic fallbacks.
//! - [`keyhash`]: [`hash_bytes`], the stable hash used for hash keys.
//!
//! Beside them, [`route`]: which upstream a request goes to (host and path
//! routing per listener), compiled once per snapshot like the selectors.

pub mod hash;
pub mod keyhash;
pub mod least_conn;
pub mod random_two;
pub mod round_robin;
pub mod route;

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Balance, ServerConfig};

pub use keyhash::hash_bytes;

/// What the selector needs to know about one server; index `i` in the slice
/// given to [`Selector::build`] is the server's identity in every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSpec {
    /// Relative weight; 0 is treated as 1.
    pub weight: u32,
    /// Used only when no primary server can be picked.
    pub backup: bool,
    /// Per-shard cap on in-flight requests; 0 = unlimited.
    pub max_conns: u32,
    /// Stable identity for consistent hashing (e.g. `hash_bytes` of the
    /// address). Two snapshots that contain the same server must give it the
    /// same `id`, so that `hash` keeps keys on it across rebuilds.
    pub id: u64,
}

impl ServerSpec {
    /// Spec for a resolved config server. `id` hashes the resolved address,
    /// so a host name resolving to several addresses yields distinct ids.
    pub fn from_config(s: &ServerConfig) -> ServerSpec {
        ServerSpec {
            weight: s.weight,
            backup: s.backup,
            max_conns: s.max_conns,
            id: hash_bytes(s.addr.to_string().as_bytes()),
        }
    }
}

/// Why no server could be picked. Cheap, `Copy`: it is on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// Every server is unavailable (down, unhealthy, or already tried).
    AllDown,
    /// Some server is available, but every available one is at `max_conns`.
    AllFull,
}

impl fmt::Display for NoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoServer::AllDown => "no live upstream server",
            NoServer::AllFull => "all upstream servers at max_conns",
        })
    }
}

impl std::error::Error for NoServer {}

/// Immutable selection structure for one upstream, built once per snapshot.
#[derive(Debug, Clone)]
pub struct Selector {
    balance: Balance,
    servers: Box<[ServerSpec]>,
    /// Indices of primary servers, in config order.
    primaries: Box<[u32]>,
    /// Indices of backup servers, in config order.
    backups: Box<[u32]>,
    /// Maglev tables, only for `Balance::Hash` and non-empty tiers.
    hash_primary: Option<hash::Maglev>,
    hash_backup: Option<hash::Maglev>,
}

impl Selector {
    /// Builds the selector. For `Balance::Hash` this fills a Maglev table of
    /// [`hash::TABLE_SIZE`] entries per tier (a few ms; snapshots are rare).
    pub fn build(balance: Balance, servers: &[ServerSpec]) -> Selector {
        Self::build_with_table_size(balance, servers, hash::TABLE_SIZE)
    }

    /// Like [`Selector::build`] with an explicit Maglev table size, which must
    /// be a prime larger than the number of servers (tests use small ones).
    pub fn build_with_table_size(
        balance: Balance,
        servers: &[ServerSpec],
        table_size: usize,
    ) -> Selector {
        assert!(
            servers.len() < u32::MAX as usize,
            "too many servers for one upstream"
        );
        let servers: Box<[ServerSpec]> = servers
            .iter()
            .map(|s| ServerSpec {
                weight: s.weight.max(1),
                ..*s
            })
            .collect();
        let primaries: Box<[u32]> = (0..servers.len() as u32)
            .filter(|&i| !servers[i as usize].backup)
            .collect();
        let backups: Box<[u32]> = (0..servers.len() as u32)
            .filter(|&i| servers[i as usize].backup)
            .collect();
        let table = |tier: &[u32]| {
            (balance == Balance::Hash && !tier.is_empty())
                .then(|| hash::Maglev::build(tier, &servers, table_size))
        };
        let hash_primary = table(&primaries);
        let hash_backup = table(&backups);
        Selector {
            balance,
            servers,
            primaries,
            backups,
            hash_primary,
            hash_backup,
        }
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn servers(&self) -> &[ServerSpec] {
        &self.servers
    }

    /// Picks a server index.
    ///
    /// - `key`: hash of the request's hash key (see [`hash_bytes`]); only the
    ///   `hash` method uses it.
    /// - `unavailable(i)`: server `i` is down, unhealthy, or already tried for
    ///   this request. Must be consistent during one call.
    /// - `weight_permille(i)`: slow-start ramp, `0..=1000` (1000 = full weight;
    ///   see [`slow_start_permille`]). Ignored by `hash`.
    ///
    /// The caller must call [`ShardState::on_start`] with the result when it
    /// actually sends the request, and [`ShardState::on_finish`] when done.
    pub fn pick(
        &self,
        st: &mut ShardState,
        key: u64,
        unavailable: impl Fn(usize) -> bool,
        weight_permille: impl Fn(usize) -> u32,
    ) -> Result<usize, NoServer> {
        debug_assert_eq!(
            st.in_flight.len(),
            self.servers.len(),
            "ShardState built for another Selector"
        );
        let ShardState {
            current,
            in_flight,
            rng,
        } = st;
        let mut saw_full = false;
        let tiers = [
            (&*self.primaries, self.hash_primary.as_ref()),
            (&*self.backups, self.hash_backup.as_ref()),
        ];
        for (tier, table) in tiers {
            if tier.is_empty() {
                continue;
            }
            let servers = &self.servers;
            let in_flight_ro: &[InFlight] = &in_flight[..];
            let mut eligible = |i: usize| -> Option<u64> {
                if unavailable(i) {
                    return None;
                }
                let s = &servers[i];
                if s.max_conns != 0 && in_flight_ro[i].get() >= s.max_conns {
                    saw_full = true;
                    return None;
                }
                let permille = weight_permille(i).clamp(1, 1000);
                Some(u64::from(s.weight) * u64::from(permille))
            };
            let got = match self.balance {
                Balance::RoundRobin => round_robin::pick(tier, current, &mut eligible),
                Balance::LeastConn => least_conn::pick(tier, current, in_flight_ro, &mut eligible),
                Balance::RandomTwo => random_two::pick(tier, in_flight_ro, rng, &mut eligible),
                Balance::Hash => table.and_then(|t| t.pick(key, tier, &mut eligible)),
            };
            if let Some(i) = got {
                return Ok(i);
            }
        }
        Err(if saw_full {
            NoServer::AllFull
        } else {
            NoServer::AllDown
        })
    }
}

/// Requests one shard has in flight to one server: shared by the
/// [`ShardState`]s of successive snapshots that keep the server (see
/// [`ShardState::follow`]).
pub type InFlight = Rc<Cell<u32>>;

/// Per-shard, per-upstream mutable selection state. `!Send`: each shard
/// thread owns its own and nobody else touches it.
///
/// A new snapshot with a new [`Selector`] needs a new `ShardState`; keep the
/// old one alive (with the old selector) until requests picked from it have
/// called [`ShardState::on_finish`]. Build it with [`ShardState::follow`]
/// from the previous one: the in-flight counts of the servers both keep are
/// the same counters, so a request started before a new snapshot (a
/// reload, a health or VRRP change) still counts toward `max_conns` and
/// `least_conn` after it, and its finish is seen by both.
#[derive(Debug)]
pub struct ShardState {
    /// Smooth weighted round robin current weights (round_robin, least_conn ties).
    current: Vec<i64>,
    /// Requests this shard has in flight to each server.
    in_flight: Vec<InFlight>,
    /// xorshift64* state for random_two; never 0.
    rng: random_two::Rng,
}

impl ShardState {
    /// `seed` should differ per shard (e.g. shard index mixed with the
    /// generation) so shards don't make identical random choices.
    pub fn new(sel: &Selector, seed: u64) -> Self {
        Self::follow(sel, seed, None, |_| None)
    }

    /// The state for `sel` that takes over `prev`'s in-flight counters:
    /// server `i` shares `prev`'s counter `same(i)` (the same server in the
    /// previous snapshot, [`same_servers`]), or starts at 0.
    pub fn follow(
        sel: &Selector,
        seed: u64,
        prev: Option<&ShardState>,
        same: impl Fn(usize) -> Option<usize>,
    ) -> Self {
        let n = sel.len();
        let in_flight = (0..n)
            .map(|i| match (prev, same(i)) {
                (Some(p), Some(j)) => Rc::clone(&p.in_flight[j]),
                _ => InFlight::default(),
            })
            .collect();
        ShardState {
            current: vec![0; n],
            in_flight,
            rng: random_two::Rng::new(seed),
        }
    }

    /// A request to server `i` started (after a successful pick).
    pub fn on_start(&mut self, i: usize) {
        let c = &self.in_flight[i];
        c.set(c.get().saturating_add(1));
    }

    /// A request to server `i` finished (success or failure).
    pub fn on_finish(&mut self, i: usize) {
        let c = &self.in_flight[i];
        c.set(c.get().saturating_sub(1));
    }

    /// Requests this shard has in flight to server `i`.
    pub fn in_flight(&self, i: usize) -> u32 {
        self.in_flight[i].get()
    }
}

/// Which server of the previous snapshot each server of the new one is:
/// `out[i]` is the index in `old` of the same key as `new[i]` (the n-th
/// occurrence of a key matched to its n-th occurrence), or `None` for a
/// server the new snapshot adds.
pub fn same_servers<K: PartialEq>(old: &[K], new: &[K]) -> Vec<Option<usize>> {
    new.iter()
        .enumerate()
        .map(|(i, k)| {
            let nth = new[..i].iter().filter(|x| *x == k).count();
            old.iter()
                .enumerate()
                .filter(|(_, o)| *o == k)
                .nth(nth)
                .map(|(j, _)| j)
        })
        .collect()
}

/// Slow-start ramp like nginx's `slow_start`: the weight share, in permille,
/// of a server that became available at `since`. Linear from 0 to 1000 over
/// `slow_start`; a zero `slow_start` means full weight at once.
pub fn slow_start_permille(since: Instant, now: Instant, slow_start: Duration) -> u32 {
    if slow_start.is_zero() {
        return 1000;
    }
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= slow_start {
        return 1000;
    }
    (elapsed.as_nanos() * 1000 / slow_start.as_nanos()) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(weight: u32) -> ServerSpec {
        ServerSpec {
            weight,
            backup: false,
            max_conns: 0,
            id: 0,
        }
    }

    pub(crate) fn specs(weights: &[u32]) -> Vec<ServerSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ServerSpec {
                id: hash_bytes(format!("10.0.0.{i}:80").as_bytes()),
                ..spec(w)
            })
            .collect()
    }

    const ALL: [Balance; 4] = [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::RandomTwo,
        Balance::Hash,
    ];

    fn build(b: Balance, s: &[ServerSpec]) -> Selector {
        Selector::build_with_table_size(b, s, 1009)
    }

    /// The selector goes into the snapshot every shard reads; a
    /// `ShardState` stays on its shard's thread (its counters are `Rc`).
    #[test]
    fn selector_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Selector>();
    }

    #[test]
    fn backups_only_when_primaries_unusable() {
        let mut s = specs(&[1, 1, 1]);
        s[2].backup = true;
        for b in ALL {
            let sel = build(b, &s);
            let mut st = ShardState::new(&sel, 7);
            for k in 0..200u64 {
                let i = sel.pick(&mut st, k, |_| false, |_| 1000).unwrap();
                assert_ne!(i, 2, "{b:?} used the backup while primaries are up");
            }
            // One primary down: still no backup.
            for k in 0..200u64 {
                let i = sel.pick(&mut st, k, |i| i == 0, |_| 1000).unwrap();
                assert_eq!(i, 1, "{b:?}");
            }
            // All primaries down: the backup.
            for k in 0..50u64 {
                let i = sel.pick(&mut st, k, |i| i < 2, |_| 1000).unwrap();
                assert_eq!(i, 2, "{b:?}");
            }
            // Everything down.
            assert_eq!(
                sel.pick(&mut st, 1, |_| true, |_| 1000),
                Err(NoServer::AllDown),
                "{b:?}"
            );
        }
    }

    #[test]
    fn primaries_full_overflow_to_backup() {
        let mut s = specs(&[1, 1]);
        s[0].max_conns = 1;
        s[1].backup = true;
        for b in ALL {
            let sel = build(b, &s);
            let mut st = ShardState::new(&sel, 1);
            assert_eq!(sel.pick(&mut st, 3, |_| false, |_| 1000), Ok(0), "{b:?}");
            st.on_start(0);
            assert_eq!(sel.pick(&mut st, 3, |_| false, |_| 1000), Ok(1), "{b:?}");
        }
    }

    #[test]
    fn max_conns_skips_full_server() {
        let mut s = specs(&[1, 1, 1]);
        s[1].max_conns = 2;
        for b in ALL {
            let sel = build(b, &s);
            let mut st = ShardState::new(&sel, 99);
            st.on_start(1);
            st.on_start(1);
            for k in 0..300u64 {
                let i = sel.pick(&mut st, k, |_| false, |_| 1000).unwrap();
                assert_ne!(i, 1, "{b:?} picked a server at max_conns");
            }
            // Freeing one slot makes it pickable again (others down, so the
            // answer does not depend on the method's preference).
            st.on_finish(1);
            assert_eq!(sel.pick(&mut st, 0, |i| i != 1, |_| 1000), Ok(1), "{b:?}");
            st.on_start(1);
            assert_eq!(
                sel.pick(&mut st, 0, |i| i != 1, |_| 1000),
                Err(NoServer::AllFull),
                "{b:?}"
            );
        }
    }

    #[test]
    fn all_full_vs_all_down() {
        let mut s = specs(&[1, 1, 1]);
        for x in &mut s {
            x.max_conns = 1;
        }
        s[2].backup = true;
        for b in ALL {
            let sel = build(b, &s);
            let mut st = ShardState::new(&sel, 5);
            for i in 0..3 {
                st.on_start(i);
            }
            assert_eq!(
                sel.pick(&mut st, 0, |_| false, |_| 1000),
                Err(NoServer::AllFull),
                "{b:?}"
            );
            // Full ones plus down ones: still AllFull (someone could serve later).
            assert_eq!(
                sel.pick(&mut st, 0, |i| i == 0, |_| 1000),
                Err(NoServer::AllFull),
                "{b:?}"
            );
            // The only full ones are down: AllDown.
            assert_eq!(
                sel.pick(&mut st, 0, |_| true, |_| 1000),
                Err(NoServer::AllDown),
                "{b:?}"
            );
            st.on_finish(2);
            assert_eq!(sel.pick(&mut st, 0, |_| false, |_| 1000), Ok(2), "{b:?}");
        }
    }

    #[test]
    fn empty_selector_is_all_down() {
        for b in ALL {
            let sel = build(b, &[]);
            let mut st = ShardState::new(&sel, 0);
            assert_eq!(
                sel.pick(&mut st, 0, |_| false, |_| 1000),
                Err(NoServer::AllDown)
            );
        }
    }

    #[test]
    fn slow_start_lowers_share() {
        // Server 1 at 100 permille of equal weight gets ~1/11 of requests.
        for b in [Balance::RoundRobin, Balance::LeastConn, Balance::RandomTwo] {
            let sel = build(b, &specs(&[1, 1]));
            let mut st = ShardState::new(&sel, 3);
            let mut hits = [0u32; 2];
            for _ in 0..11_000 {
                let i = sel
                    .pick(&mut st, 0, |_| false, |i| if i == 1 { 100 } else { 1000 })
                    .unwrap();
                hits[i] += 1;
            }
            let share = f64::from(hits[1]) / 11_000.0;
            assert!((0.07..0.11).contains(&share), "{b:?}: share {share}");
        }
    }

    #[test]
    fn slow_start_zero_permille_still_serves_alone() {
        for b in ALL {
            let sel = build(b, &specs(&[1, 1]));
            let mut st = ShardState::new(&sel, 3);
            assert_eq!(sel.pick(&mut st, 0, |i| i == 0, |_| 0), Ok(1), "{b:?}");
        }
    }

    #[test]
    fn slow_start_ramp() {
        let t0 = crate::testutil::epoch();
        let ss = Duration::from_secs(10);
        assert_eq!(slow_start_permille(t0, t0, ss), 0);
        assert_eq!(
            slow_start_permille(t0, t0 + Duration::from_secs(5), ss),
            500
        );
        assert_eq!(
            slow_start_permille(t0, t0 + Duration::from_secs(10), ss),
            1000
        );
        assert_eq!(
            slow_start_permille(t0, t0 + Duration::from_secs(99), ss),
            1000
        );
        assert_eq!(slow_start_permille(t0, t0, Duration::ZERO), 1000);
        // A clock that appears to go backwards is treated as "just started".
        assert_eq!(slow_start_permille(t0 + ss, t0, ss), 0);
    }

    #[test]
    fn in_flight_counts_saturate() {
        let sel = build(Balance::RoundRobin, &specs(&[1]));
        let mut st = ShardState::new(&sel, 0);
        st.on_finish(0);
        assert_eq!(st.in_flight(0), 0);
        st.on_start(0);
        st.on_start(0);
        st.on_finish(0);
        assert_eq!(st.in_flight(0), 1);
    }

    /// (old keys, new keys, the old index of each new one).
    type SameCase = (&'static [u8], &'static [u8], &'static [Option<usize>]);

    #[test]
    fn servers_are_matched_by_key_and_occurrence() {
        let cases: [SameCase; 6] = [
            (b"ab", b"ab", &[Some(0), Some(1)]),
            (b"ab", b"ba", &[Some(1), Some(0)]),
            (b"ab", b"acb", &[Some(0), None, Some(1)]),
            (b"abc", b"c", &[Some(2)]),
            (b"aab", b"aaa", &[Some(0), Some(1), None]),
            (b"", b"a", &[None]),
        ];
        for (old, new, want) in cases {
            assert_eq!(same_servers(old, new), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_following_state_shares_the_kept_servers_counts() {
        let old_sel = build(Balance::RoundRobin, &specs(&[1, 1]));
        let mut old = ShardState::new(&old_sel, 0);
        old.on_start(0);
        old.on_start(1);
        old.on_start(1);
        // The new snapshot drops server 0, keeps 1 (now at index 0), adds one.
        let new_sel = build(Balance::RoundRobin, &specs(&[1, 1]));
        let mut new = ShardState::follow(&new_sel, 0, Some(&old), |i| [Some(1), None][i]);
        assert_eq!((new.in_flight(0), new.in_flight(1)), (2, 0));
        // A request started on the old state finishes: both see it.
        old.on_finish(1);
        assert_eq!(new.in_flight(0), 1);
        new.on_start(0);
        assert_eq!(old.in_flight(1), 2);
    }

    #[test]
    fn max_conns_holds_across_a_following_state() {
        let mut s = specs(&[1]);
        s[0].max_conns = 1;
        let sel = build(Balance::RoundRobin, &s);
        let mut old = ShardState::new(&sel, 0);
        assert_eq!(sel.pick(&mut old, 0, |_| false, |_| 1000), Ok(0));
        old.on_start(0);
        let mut new = ShardState::follow(&sel, 1, Some(&old), Some);
        assert_eq!(
            sel.pick(&mut new, 0, |_| false, |_| 1000),
            Err(NoServer::AllFull)
        );
        old.on_finish(0);
        assert_eq!(sel.pick(&mut new, 0, |_| false, |_| 1000), Ok(0));
    }
}
