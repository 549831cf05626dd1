//! Consistent hashing with a weighted Maglev lookup table.
//!
//! Why Maglev (Google's L4 balancer) rather than a ketama ring: lookup is
//! one array index (`table[key mod M]`) instead of a binary search over
//! `160 × Σweights` points, the table is exactly balanced (shares differ by
//! at most a few entries of M = 65537), and removing one of N servers
//! remaps only about 1/N of the keys — the property `hash` exists for.
//!
//! Build: every server gets a permutation of `0..M` from two hashes of its
//! stable [`ServerSpec::id`] (offset, skip; M prime so every skip is a
//! generator). Servers take turns claiming their next free slot; weights are
//! honoured with credits: each round a server earns `weight` credits and
//! claims one slot per `max_weight` credits, so shares are proportional to
//! weight. Because permutations depend on ids, not positions, a server keeps
//! (nearly) the same slots when others come and go.
//!
//! Fallback: when the server at `key`'s slot cannot be used (down, tried, or
//! full), we walk forward through the table. Consecutive slots belong to
//! effectively random servers, so a dead server's keys spread evenly over
//! the rest, while keys of live servers never move. The walk is bounded; if
//! it finds nobody (most servers unusable) a linear scan from `key mod n`
//! finishes the job, so a pick is deterministic for a given key and set of
//! unusable servers, and always terminates.
//!
//! Weights are static here: slow-start ramps do not apply to `hash` (nginx
//! does not support that combination either).

use super::keyhash::mix64;
use super::ServerSpec;

/// Default table size: a prime, large enough for hundreds of servers with
/// ~1% share error, small enough (256 KiB) to build in milliseconds.
pub const TABLE_SIZE: usize = 65_537;

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct Maglev {
    /// Slot → server index (global index into the selector's servers).
    table: Box<[u32]>,
    /// How many slots the fallback walk inspects before the linear scan.
    walk_limit: usize,
}

impl Maglev {
    /// `members`: server indices of one tier (non-empty). `size` must be a
    /// prime greater than `members.len()`.
    pub(crate) fn build(members: &[u32], servers: &[ServerSpec], size: usize) -> Maglev {
        assert!(!members.is_empty());
        assert!(
            size > members.len() && is_prime(size),
            "maglev size must be a prime > servers"
        );
        let m = size as u64;
        let n = members.len();
        let mut offset = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        let mut next = vec![0u64; n];
        let mut credit = vec![0u64; n];
        let weight: Vec<u64> = members
            .iter()
            .map(|&i| u64::from(servers[i as usize].weight.max(1)))
            .collect();
        let max_w = *weight.iter().max().expect("non-empty");
        for &i in members {
            let id = servers[i as usize].id;
            offset.push(mix64(id ^ 0x5151_5151_0000_0001) % m);
            skip.push(mix64(id ^ 0xa3a3_a3a3_0000_0002) % (m - 1) + 1);
        }
        let mut table = vec![EMPTY; size].into_boxed_slice();
        let mut filled = 0usize;
        'fill: loop {
            for j in 0..n {
                credit[j] += weight[j];
                while credit[j] >= max_w {
                    credit[j] -= max_w;
                    // Claim the next free slot of j's permutation. Because
                    // M is prime the permutation visits every slot, so this
                    // terminates while any slot is empty.
                    loop {
                        let c = ((offset[j] + next[j] * skip[j]) % m) as usize;
                        next[j] += 1;
                        if table[c] == EMPTY {
                            table[c] = members[j];
                            filled += 1;
                            break;
                        }
                    }
                    if filled == size {
                        break 'fill;
                    }
                }
            }
        }
        Maglev {
            table,
            walk_limit: size.min(8 * n + 32),
        }
    }

    /// The first usable server for `key`, walking forward on fallback.
    pub(crate) fn pick<E>(&self, key: u64, members: &[u32], eligible: &mut E) -> Option<usize>
    where
        E: FnMut(usize) -> Option<u64>,
    {
        let m = self.table.len();
        let pos = ((u128::from(mix64(key)) * m as u128) >> 64) as usize;
        for s in 0..self.walk_limit {
            let mut c = pos + s;
            if c >= m {
                c -= m;
            }
            let i = self.table[c] as usize;
            if eligible(i).is_some() {
                return Some(i);
            }
        }
        let n = members.len();
        let start = (key % n as u64) as usize;
        (0..n)
            .map(|k| members[(start + k) % n] as usize)
            .find(|&i| eligible(i).is_some())
    }

    #[cfg(test)]
    pub(crate) fn slots_of(&self, i: u32) -> usize {
        self.table.iter().filter(|&&x| x == i).count()
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Balance;
    use crate::lb::tests::specs;
    use crate::lb::{Selector, ShardState};

    const KEYS: u64 = 100_000;

    fn mapping(sel: &Selector, unavailable: impl Fn(usize) -> bool + Copy) -> Vec<u64> {
        // Map to server ids so different server lists can be compared.
        let mut st = ShardState::new(sel, 0);
        (0..KEYS)
            .map(|k| {
                let i = sel.pick(&mut st, k, unavailable, |_| 1000).unwrap();
                sel.servers()[i].id
            })
            .collect()
    }

    fn moved(a: &[u64], b: &[u64]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    }

    #[test]
    fn table_shares_follow_weight() {
        let s = specs(&[1, 1, 2, 4]);
        let members: Vec<u32> = (0..4).collect();
        let t = Maglev::build(&members, &s, TABLE_SIZE);
        let total = TABLE_SIZE as f64;
        for (i, w) in [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0)] {
            let share = t.slots_of(i) as f64 / total;
            assert!((share - w / 8.0).abs() < 0.005, "server {i}: {share}");
        }
    }

    #[test]
    fn key_distribution_follows_weight() {
        let sel = Selector::build(Balance::Hash, &specs(&[1, 3]));
        let ids = mapping(&sel, |_| false);
        let on1 = ids.iter().filter(|&&id| id == sel.servers()[1].id).count();
        let share = on1 as f64 / KEYS as f64;
        assert!((share - 0.75).abs() < 0.01, "{share}");
    }

    #[test]
    fn same_key_same_server() {
        let sel = Selector::build(Balance::Hash, &specs(&[1; 5]));
        let mut st = ShardState::new(&sel, 0);
        for k in [0u64, 1, 42, u64::MAX] {
            let a = sel.pick(&mut st, k, |_| false, |_| 1000);
            let b = sel.pick(&mut st, k, |_| false, |_| 1000);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn adding_one_of_ten_remaps_about_a_tenth() {
        let s10 = specs(&[1; 10]);
        let s11 = specs(&[1; 11]);
        let a = mapping(&Selector::build(Balance::Hash, &s10), |_| false);
        let b = mapping(&Selector::build(Balance::Hash, &s11), |_| false);
        let f = moved(&a, &b);
        assert!((0.05..0.2).contains(&f), "moved {f}");
    }

    #[test]
    fn removing_one_of_ten_remaps_about_a_tenth() {
        let s10 = specs(&[1; 10]);
        let mut s9 = s10.clone();
        s9.remove(4);
        let a = mapping(&Selector::build(Balance::Hash, &s10), |_| false);
        let b = mapping(&Selector::build(Balance::Hash, &s9), |_| false);
        let f = moved(&a, &b);
        assert!((0.05..0.2).contains(&f), "moved {f}");
        // Keys that were on the removed server all moved; that's ~1/10.
        let gone = s10[4].id;
        assert!(b.iter().all(|&id| id != gone));
    }

    #[test]
    fn fallback_moves_only_the_dead_servers_keys_and_spreads_them() {
        let s = specs(&[1; 10]);
        let sel = Selector::build(Balance::Hash, &s);
        let a = mapping(&sel, |_| false);
        let b = mapping(&sel, |i| i == 3);
        let dead = s[3].id;
        let mut to = std::collections::HashMap::new();
        for (x, y) in a.iter().zip(&b) {
            if *x == dead {
                assert_ne!(*y, dead);
                *to.entry(*y).or_insert(0u32) += 1;
            } else {
                assert_eq!(x, y, "a live server's key moved");
            }
        }
        // The ~10k orphaned keys spread over all 9 survivors.
        assert_eq!(to.len(), 9);
        let total: u32 = to.values().sum();
        for &c in to.values() {
            let share = f64::from(c) / f64::from(total);
            assert!((0.06..0.17).contains(&share), "{to:?}");
        }
    }

    #[test]
    fn fallback_is_deterministic_and_reaches_last_survivor() {
        let s = specs(&[1; 6]);
        let sel = Selector::build_with_table_size(Balance::Hash, &s, 1009);
        let mut st = ShardState::new(&sel, 0);
        for k in 0..500u64 {
            // Only server 5 is usable: every key must find it.
            assert_eq!(sel.pick(&mut st, k, |i| i != 5, |_| 1000), Ok(5));
            // "Already tried" first choice: the next pick is stable per key.
            let first = sel.pick(&mut st, k, |_| false, |_| 1000).unwrap();
            let second = sel.pick(&mut st, k, |i| i == first, |_| 1000).unwrap();
            let again = sel.pick(&mut st, k, |i| i == first, |_| 1000).unwrap();
            assert_ne!(first, second);
            assert_eq!(second, again);
        }
    }

    #[test]
    fn heavy_weight_skew_still_terminates() {
        let s = specs(&[1, 1_000_000, 1]);
        let sel = Selector::build_with_table_size(Balance::Hash, &s, 1009);
        let mut st = ShardState::new(&sel, 0);
        // The light servers may own no slot at all; the scan still finds them.
        assert_eq!(sel.pick(&mut st, 9, |i| i != 2, |_| 1000), Ok(2));
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(1009));
        assert!(!is_prime(65_535));
        assert!(!is_prime(1));
    }
}
