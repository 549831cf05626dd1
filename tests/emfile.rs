//! The master runs out of file descriptors under a burst of clients: it
//! keeps serving what it can, accepts again once descriptors are free, and
//! nothing in VRRP notices — the keepalived peer's state never changes and
//! the VIP never leaves the master (polled with `ip addr` throughout).
//!
//! The master's `RLIMIT_NOFILE` is lowered with `prlimit --pid` after it
//! started (so the start-up fd budget, sized for the real limit, does not
//! shrink `max_connections` first), to a few descriptors above what it
//! holds, and the client namespace opens many more connections than that.
//! The master also runs a `track_script` (weight −150, enough to move the
//! VIP): a script that cannot be started for lack of descriptors is not a
//! failing script.
//! Namespace lab: `tests/netns/mod.rs` (a = 198.18.0.1 ringlb, b =
//! 198.18.0.2 keepalived, c = client, VIP 198.18.0.100).

mod netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use netns::peer_view::*;
use netns::*;

const WAIT: Duration = Duration::from_secs(5);
const STEADY: Duration = Duration::from_millis(1500);
/// Client connections opened in the burst (far more than the free fds).
const BURST: usize = 200;

fn vip_addr() -> SocketAddr {
    format!("{VIP}:8080").parse().unwrap()
}

/// One keep-alive GET on `s`; the status code (0 if the connection failed).
fn get(s: &mut TcpStream) -> u16 {
    if s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n").is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn emfile_on_the_master_causes_no_failover() {
    let mut lab = Lab::new();
    lab.backend("a");
    // A track script whose failure would hand the VIP over: under EMFILE it
    // cannot even be started, which must not count as failing.
    let track =
        "track_script = [{ script = \"/bin/true\", interval = \"100ms\", weight = -150 }]\n";
    let a = lab.ringlb("a", &instance(200, "100ms", track));
    let ka = lab.keepalived("b", &keepalived_conf(3, 100, "0.1", None));
    assert!(
        eventually(WAIT, || lab.only("a")),
        "a never became the only master"
    );
    assert!(
        eventually(WAIT, || keepalived_entered(&lab, ka, "BACKUP") >= 1),
        "keepalived never settled in BACKUP"
    );
    assert!(always(STEADY, || lab.only("a")));
    assert!(lab.served_by("nodea", WAIT), "VIP:8080 not served by a");

    // A keep-alive client that is connected before the burst.
    let mut keep = in_netns(&lab.ns("c"), || {
        let s = TcpStream::connect_timeout(&vip_addr(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    assert_eq!(get(&mut keep), 200, "keep-alive client before the burst");

    let pid = lab.procs[a].child.id();
    let limit = open_fds(pid) + 8;
    let masters_before = keepalived_entered(&lab, ka, "MASTER");
    let transitions_before = transitions(&ringlb_log(&lab, a));

    // Watch the VIP from here to the end.
    let watch = Watch::start(&lab, VIP, |a, b| a && !b);

    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()
        .expect("prlimit (util-linux) must be installed");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The burst: connections the kernel completes but ringlb cannot all accept.
    let burst = in_netns(&lab.ns("c"), || {
        (0..BURST)
            .filter_map(|_| {
                TcpStream::connect_timeout(&vip_addr(), Duration::from_millis(500)).ok()
            })
            .collect::<Vec<_>>()
    });
    assert!(
        burst.len() > limit,
        "only {} burst connections were made",
        burst.len()
    );
    assert!(
        eventually(WAIT, || ringlb_log(&lab, a).contains("Too many open files")),
        "ringlb never hit EMFILE (limit {limit}); log:\n{}",
        ringlb_log(&lab, a)
    );
    // Keeps serving what it can: the connection it already has.
    for i in 0..5 {
        assert_eq!(get(&mut keep), 200, "keep-alive request {i} during EMFILE");
    }
    assert!(
        always(STEADY, || lab.only("a")),
        "the VIP moved while a was out of descriptors"
    );

    // Descriptors free again: new clients are accepted.
    drop(burst);
    assert!(
        lab.served_by("nodea", WAIT),
        "a never accepted again after the burst"
    );
    assert!(always(STEADY, || lab.only("a")));

    let (samples, bad) = watch.finish();
    assert!(samples > 10, "too few VIP samples ({samples})");
    assert!(bad.is_empty(), "the VIP left a (or b took it): {bad:?}");
    assert_eq!(
        keepalived_entered(&lab, ka, "MASTER"),
        masters_before,
        "the keepalived peer changed state"
    );
    assert_eq!(
        transitions(&ringlb_log(&lab, a)),
        transitions_before,
        "ringlb's VRRP changed state:\n{}",
        ringlb_log(&lab, a)
    );
}
