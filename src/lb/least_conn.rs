//! Least connections, weighted, as nginx's `least_conn`.
//!
//! The server with the fewest in-flight requests *relative to its weight*
//! wins (`in_flight / weight`, compared by cross-multiplication so no
//! division or float is needed). Several servers often tie — most of all
//! when the shard is idle and everyone has 0 in flight — and then the tie is
//! broken by smooth weighted round robin among the tied servers only, so
//! equal servers alternate and weights still shape an idle upstream. This is
//! the same two-pass structure nginx uses.
//!
//! In-flight counts are per shard: each shard balances its own share, which
//! needs no cross-thread communication and converges to the same global
//! picture when the kernel spreads connections evenly over shards.

/// `a_conns / a_weight < b_conns / b_weight`, exactly.
#[inline]
fn less(a_conns: u32, a_weight: u64, b_conns: u32, b_weight: u64) -> bool {
    u128::from(a_conns) * u128::from(b_weight) < u128::from(b_conns) * u128::from(a_weight)
}

#[inline]
fn same(a_conns: u32, a_weight: u64, b_conns: u32, b_weight: u64) -> bool {
    u128::from(a_conns) * u128::from(b_weight) == u128::from(b_conns) * u128::from(a_weight)
}

pub(crate) fn pick<E>(
    members: &[u32],
    current: &mut [i64],
    in_flight: &[super::InFlight],
    eligible: &mut E,
) -> Option<usize>
where
    E: FnMut(usize) -> Option<u64>,
{
    // Pass 1: the best ratio, and whether several servers share it.
    let mut best: Option<(usize, u64)> = None;
    let mut ties = 0usize;
    for &m in members {
        let i = m as usize;
        let Some(w) = eligible(i) else { continue };
        match best {
            Some((b, bw)) if !less(in_flight[i].get(), w, in_flight[b].get(), bw) => {
                if same(in_flight[i].get(), w, in_flight[b].get(), bw) {
                    ties += 1;
                }
            }
            _ => {
                best = Some((i, w));
                ties = 1;
            }
        }
    }
    let (b, bw) = best?;
    if ties == 1 {
        return Some(b);
    }
    // Pass 2: smooth weighted round robin among the tied servers.
    let mut total: i64 = 0;
    let mut winner: Option<usize> = None;
    for &m in members {
        let i = m as usize;
        let Some(w) = eligible(i) else { continue };
        if !same(in_flight[i].get(), w, in_flight[b].get(), bw) {
            continue;
        }
        current[i] += w as i64;
        total += w as i64;
        if winner.is_none_or(|x| current[i] > current[x]) {
            winner = Some(i);
        }
    }
    let x = winner.unwrap_or(b);
    current[x] -= total;
    Some(x)
}

#[cfg(test)]
mod tests {
    use crate::config::Balance;
    use crate::lb::tests::specs;
    use crate::lb::{Selector, ShardState};

    #[test]
    fn prefers_the_idle_server() {
        let sel = Selector::build(Balance::LeastConn, &specs(&[1, 1, 1]));
        let mut st = ShardState::new(&sel, 0);
        st.on_start(0);
        st.on_start(1);
        for _ in 0..5 {
            assert_eq!(sel.pick(&mut st, 0, |_| false, |_| 1000), Ok(2));
        }
        st.on_start(2);
        st.on_start(2);
        // Now 1,1,2: the tie between 0 and 1 alternates.
        let a = sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap();
        let b = sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap();
        assert_ne!(a, 2);
        assert_ne!(b, 2);
        assert_ne!(a, b);
    }

    #[test]
    fn equal_idle_servers_alternate() {
        let sel = Selector::build(Balance::LeastConn, &specs(&[1, 1, 1]));
        let mut st = ShardState::new(&sel, 0);
        let got: Vec<usize> = (0..6)
            .map(|_| sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn ratio_is_relative_to_weight() {
        // Weight 4 with 3 in flight (0.75) beats weight 1 with 1 in flight (1.0).
        let sel = Selector::build(Balance::LeastConn, &specs(&[1, 4]));
        let mut st = ShardState::new(&sel, 0);
        st.on_start(0);
        for _ in 0..3 {
            st.on_start(1);
        }
        assert_eq!(sel.pick(&mut st, 0, |_| false, |_| 1000), Ok(1));
        st.on_start(1); // 4/4 = 1.0 ties with 1/1: weighted RR among the two
        st.on_start(1); // 5/4 > 1/1
        assert_eq!(sel.pick(&mut st, 0, |_| false, |_| 1000), Ok(0));
    }

    #[test]
    fn balanced_under_held_connections() {
        // Requests that never finish: least_conn keeps counts proportional.
        let weights = [1, 2, 3];
        let sel = Selector::build(Balance::LeastConn, &specs(&weights));
        let mut st = ShardState::new(&sel, 0);
        for _ in 0..600 {
            let i = sel.pick(&mut st, 0, |_| false, |_| 1000).unwrap();
            st.on_start(i);
        }
        assert_eq!(
            [st.in_flight(0), st.in_flight(1), st.in_flight(2)],
            [100, 200, 300]
        );
    }
}
