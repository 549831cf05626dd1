//! Smooth weighted round robin, the algorithm nginx uses for `upstream`.
//!
//! Each pick adds every eligible server's effective weight to its *current*
//! weight, takes the server with the largest current weight (first one on a
//! tie, in config order), and subtracts the total from the winner. Over
//! `total` picks every server is chosen exactly `weight` times, and the
//! choices are interleaved rather than bursty (weights 5,1,1 give
//! `a a b a c a a`). It is deterministic, which makes it easy to test and
//! to reason about, and it needs only one `i64` per server of state.
//!
//! Servers that are not eligible for this pick keep their current weight
//! untouched, exactly like nginx; the O(n) scan is fine for upstream sizes
//! people actually configure, and it is the same cost nginx pays.

/// Picks among `members` (server indices). `eligible(i)` returns the
/// effective weight of server `i`, or `None` if it must be skipped.
pub(crate) fn pick<E>(members: &[u32], current: &mut [i64], eligible: &mut E) -> Option<usize>
where
    E: FnMut(usize) -> Option<u64>,
{
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for &m in members {
        let i = m as usize;
        let Some(w) = eligible(i) else { continue };
        let w = w as i64;
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

#[cfg(test)]
mod tests {
    use crate::config::Balance;
    use crate::lb::tests::specs;
    use crate::lb::{Selector, ShardState};

    fn sequence(weights: &[u32], n: usize) -> Vec<usize> {
        let sel = Selector::build(Balance::RoundRobin, &specs(weights));
        let mut st = ShardState::new(&sel, 0);
        (0..n)
            .map(|_| sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap())
            .collect()
    }

    #[test]
    fn nginx_sequence_5_1_1() {
        // a a b a c a a, repeating (the example from nginx's commit message).
        let want = [0, 0, 1, 0, 2, 0, 0];
        let got = sequence(&[5, 1, 1], 21);
        for (k, &i) in got.iter().enumerate() {
            assert_eq!(i, want[k % 7], "pick {k}: {got:?}");
        }
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(sequence(&[1, 1, 1], 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn exact_proportions_over_a_cycle() {
        let weights = [3, 7, 1, 4];
        let total: u32 = weights.iter().sum();
        let got = sequence(&weights, total as usize * 10);
        for (i, &w) in weights.iter().enumerate() {
            let n = got.iter().filter(|&&x| x == i).count();
            assert_eq!(n, w as usize * 10, "server {i}");
        }
    }

    #[test]
    fn skips_unavailable_and_keeps_rotating() {
        let sel = Selector::build(Balance::RoundRobin, &specs(&[1, 1, 1]));
        let mut st = ShardState::new(&sel, 0);
        let got: Vec<usize> = (0..4)
            .map(|_| sel.pick(&mut st, 0, |i| i == 1, |_| 1000).unwrap())
            .collect();
        assert_eq!(got, vec![0, 2, 0, 2]);
    }
}
