//! CPU placement: which core each shard and the control thread run on, and
//! pinning a thread there.
//!
//! One shard per core, the control thread (VRRP, health, admin, signals) on a
//! core of its own when there is one to spare: shards then never compete with
//! the control plane for a core, and VRRP adverts keep their cadence under
//! full load.

/// Pins the calling thread to `cpu`; logs when the kernel refuses.
///
/// `core_affinity::set_for_current` only accepts cores of the caller's
/// current mask, and threads inherit the mask of the (already pinned)
/// control thread, so this goes to `sched_setaffinity` directly.
pub fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in
    // bounds for cpu < CPU_SETSIZE, checked first.
    let ok = cpu < libc::CPU_SETSIZE as usize
        && unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        };
    if !ok {
        crate::warn!("could not pin thread to CPU {cpu}");
    }
    ok
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len().max(1))
}

/// CPU ids for the shards and the control thread: explicit lists win;
/// `auto` uses every core but the control core (at least one shard).
pub fn plan_cpus(
    workers: crate::config::Workers,
    control_cpu: Option<usize>,
    worker_cpus: Option<&[usize]>,
) -> (Vec<Option<usize>>, Option<usize>) {
    let all: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let control = control_cpu.or_else(|| all.first().copied());
    let count = match workers {
        crate::config::Workers::Count(n) => n.max(1),
        crate::config::Workers::Auto => all.len().saturating_sub(1).max(1),
    };
    let pool: Vec<usize> = match worker_cpus {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => {
            let others: Vec<usize> = all
                .iter()
                .copied()
                .filter(|c| Some(*c) != control)
                .collect();
            if others.is_empty() {
                all.clone()
            } else {
                others
            }
        }
    };
    let shards = (0..count)
        .map(|i| (!pool.is_empty()).then(|| pool[i % pool.len()]))
        .collect();
    (shards, control)
}
