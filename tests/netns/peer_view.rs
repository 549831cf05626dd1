//! What the other side saw, for VRRP tests that change a running node
//! (reload, descriptor exhaustion): keepalived's and ringlb's own state
//! changes from their logs, and who held a VIP, polled on a thread.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Lab;

/// How many times keepalived process `i` logged entering `state`
/// (`MASTER`, `BACKUP`, `FAULT`).
pub fn keepalived_entered(lab: &Lab, i: usize, state: &str) -> usize {
    let p = &lab.procs[i];
    let text = std::fs::read_to_string(&p.log).unwrap_or_default()
        + &std::fs::read_to_string(p.log.with_extension("err")).unwrap_or_default();
    text.matches(&format!("Entering {state} STATE")).count()
}

/// What ringlb process `i` logged so far (stderr).
pub fn ringlb_log(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.procs[i].log.with_extension("err")).unwrap_or_default()
}

/// ringlb's state-change lines for instance VI_1
/// (`vrrp VI_1: BACKUP -> MASTER (priority 200)`).
pub fn transitions(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("vrrp VI_1: ") && l.contains(" -> ") && l.contains("(priority"))
        .count()
}

/// Whether namespace `ns` has `vip` on eth0.
pub fn ns_has(ns: &str, vip: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")))
        .unwrap_or(false)
}

/// Polls `ip addr` in nodes a and b on a thread until finished (at most
/// 60 s) and records every sample where `ok(a_has, b_has)` was false.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Watch {
    pub fn start(lab: &Lab, vip: &'static str, ok: fn(bool, bool) -> bool) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let (na, nb) = (lab.ns("a"), lab.ns("b"));
        let thread = std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut samples = 0;
            let start = Instant::now();
            while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let (a, b) = (ns_has(&na, vip), ns_has(&nb, vip));
                samples += 1;
                if !ok(a, b) {
                    bad.push(format!("{:?}: a={a} b={b}", start.elapsed()));
                }
            }
            (samples, bad)
        });
        Watch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns (samples, bad samples).
    pub fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}
