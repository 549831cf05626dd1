//! Placeholder until the selectors land: smooth weighted round robin only.
use crate::config::Balance;

pub struct ServerSpec {
    pub weight: u32,
    pub backup: bool,
    pub max_conns: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    AllDown,
    AllFull,
}

pub struct Selector {
    weights: Vec<i64>,
}

pub struct ShardState {
    current: Vec<i64>,
    in_flight: Vec<u32>,
}

impl ShardState {
    pub fn new(sel: &Selector, _seed: u64) -> Self {
        ShardState { current: vec![0; sel.weights.len()], in_flight: vec![0; sel.weights.len()] }
    }
    pub fn on_start(&mut self, i: usize) {
        self.in_flight[i] += 1;
    }
    pub fn on_finish(&mut self, i: usize) {
        self.in_flight[i] = self.in_flight[i].saturating_sub(1);
    }
    pub fn in_flight(&self, i: usize) -> u32 {
        self.in_flight[i]
    }
}

impl Selector {
    pub fn build(_balance: Balance, servers: &[ServerSpec]) -> Selector {
        Selector { weights: servers.iter().map(|s| s.weight as i64).collect() }
    }
    pub fn pick(
        &self,
        st: &mut ShardState,
        _key: u64,
        unavailable: impl Fn(usize) -> bool,
        _weight_permille: impl Fn(usize) -> u32,
    ) -> Result<usize, NoServer> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.weights.len() {
            if unavailable(i) {
                continue;
            }
            st.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| st.current[i] > st.current[b]) {
                best = Some(i);
            }
        }
        let b = best.ok_or(NoServer::AllDown)?;
        st.current[b] -= total;
        Ok(b)
    }
}

pub fn hash_bytes(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}
