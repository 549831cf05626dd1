//! Power of two choices: draw two candidates at random, keep the less loaded.
//!
//! Candidates are drawn with probability proportional to their effective
//! weight, and "less loaded" means fewer in-flight requests per weight; on a
//! tie the first draw wins. So an idle upstream is shared in proportion to
//! weight, and a loaded one has its imbalance bounded (the classic result: the
//! gap to the average shrinks from ~log n / log log n for one random choice to
//! ~log log n for two). Unlike least_conn it does not stampede every shard to
//! the same "least loaded" server after a counter reset, because each shard
//! draws from its own RNG.
//!
//! The RNG is xorshift64* kept in [`crate::lb::ShardState`]: one multiply,
//! three shifts, no syscalls, no sharing between shards.

/// xorshift64* generator. Not cryptographic; only for spreading load.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds (shard 0, 1, 2…) diverge;
        // the state must never be 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), by multiply-high (no modulo bias worth
    /// caring about for n far below 2^64, and no division).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The eligible member (other than `skip`) whose cumulative weight range
/// contains `target`.
fn nth_by_weight<E>(
    members: &[u32],
    eligible: &mut E,
    mut target: u64,
    skip: Option<usize>,
) -> Option<usize>
where
    E: FnMut(usize) -> Option<u64>,
{
    let mut last = None;
    for &m in members {
        let i = m as usize;
        if Some(i) == skip {
            continue;
        }
        let Some(w) = eligible(i) else { continue };
        if target < w {
            return Some(i);
        }
        target -= w;
        last = Some(i);
    }
    // Only reachable if `eligible` changed its answers mid-pick.
    last
}

pub(crate) fn pick<E>(
    members: &[u32],
    in_flight: &[super::InFlight],
    rng: &mut Rng,
    eligible: &mut E,
) -> Option<usize>
where
    E: FnMut(usize) -> Option<u64>,
{
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut only = 0usize;
    for &m in members {
        let i = m as usize;
        if let Some(w) = eligible(i) {
            total += w;
            count += 1;
            only = i;
        }
    }
    match count {
        0 => return None,
        1 => return Some(only),
        _ => {}
    }
    let a = nth_by_weight(members, eligible, rng.below(total), None)?;
    let wa = eligible(a).unwrap_or(1);
    // The second candidate is drawn without replacement, so the two differ.
    let rest = total.saturating_sub(wa).max(1);
    let b = nth_by_weight(members, eligible, rng.below(rest), Some(a))?;
    let wb = eligible(b).unwrap_or(1);
    // b wins only if strictly less loaded per weight.
    let b_less = u128::from(in_flight[b].get()) * u128::from(wa)
        < u128::from(in_flight[a].get()) * u128::from(wb);
    Some(if b_less { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use crate::config::Balance;
    use crate::lb::tests::specs;
    use crate::lb::{Selector, ShardState};

    #[test]
    fn rng_seeds_diverge_and_below_is_in_range() {
        let mut a = Rng::new(0);
        let mut b = Rng::new(1);
        assert_ne!(a.next_u64(), b.next_u64());
        for n in [1u64, 2, 3, 1000] {
            for _ in 0..1000 {
                assert!(a.below(n) < n);
            }
        }
    }

    #[test]
    fn idle_distribution_follows_weight() {
        let weights = [1u32, 2, 5];
        let sel = Selector::build(Balance::RandomTwo, &specs(&weights));
        let mut st = ShardState::new(&sel, 42);
        let n = 80_000;
        let mut hits = [0u32; 3];
        for _ in 0..n {
            hits[sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap()] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let share = f64::from(hits[i]) / f64::from(n);
            let want = f64::from(w) / 8.0;
            assert!((share - want).abs() < 0.02, "server {i}: {share} vs {want}");
        }
    }

    #[test]
    fn imbalance_is_bounded_when_requests_pile_up() {
        // 10 equal servers, 5000 requests that never finish. One random
        // choice would leave a gap of dozens; two choices keep it tiny.
        let sel = Selector::build(Balance::RandomTwo, &specs(&[1; 10]));
        let mut st = ShardState::new(&sel, 7);
        for _ in 0..5000 {
            let i = sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap();
            st.on_start(i);
        }
        let loads: Vec<u32> = (0..10).map(|i| st.in_flight(i)).collect();
        let max = *loads.iter().max().unwrap();
        let min = *loads.iter().min().unwrap();
        assert_eq!(loads.iter().sum::<u32>(), 5000);
        assert!(max - min <= 6, "loads {loads:?}");
    }

    #[test]
    fn prefers_less_loaded_of_two() {
        // Two servers: with one heavily loaded, the other wins every time
        // both are drawn (which, with two servers, is every pick).
        let sel = Selector::build(Balance::RandomTwo, &specs(&[1, 1]));
        let mut st = ShardState::new(&sel, 1);
        for _ in 0..10 {
            st.on_start(0);
        }
        for _ in 0..100 {
            assert_eq!(sel.pick(&mut st, 0, |_| false, |_| 1000), Ok(1));
        }
    }
}
