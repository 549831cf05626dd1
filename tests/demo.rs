//! `ringlb demo`, the README's first command, run the way a user runs it.
//!
//! As root (CI): the failover show in network namespaces must finish by
//! itself, print its summary, write its plot, and leave no namespace
//! behind. Without root the loopback demo must say why it fell back, serve
//! through the proxy, and print the histogram on Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringlb");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Wait for `child` at most `limit` (a bound, not a measurement): kill it
/// and fail when it runs longer.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringlb demo still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_shows_a_failover_in_namespaces() {
    assert!(
        is_root(),
        "the failover demo needs root and network namespaces (CI has them); run tests/run.sh as root"
    );
    let out = std::env::temp_dir().join(format!("ringlb-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(BIN)
        .args(["demo", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut e = String::new();
        se.read_to_string(&mut e).unwrap();
        e
    });
    so.read_to_string(&mut stdout).unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    stderr.push_str(&reader.join().unwrap());
    let ctx = format!("status {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(status.success(), "{ctx}");

    // The summary a user reads.
    for needle in [
        "What the clients saw:",
        "lb1 crashes",
        "lb1 back",
        "outage",
        "VIP move",
        "served by     lb1 before the fault, lb2 after, lb1 at the end",
        "Latency histogram",
        "lab torn down",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}\n{ctx}");
    }
    // The machine-readable line: the VIP moved to lb2 and came back.
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line\n{ctx}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["requests"], 6000, "{ctx}");
    let (ok, failed) = (v["ok"].as_u64().unwrap(), v["failed"].as_u64().unwrap());
    assert_eq!(ok + failed, 6000, "{ctx}");
    assert!(ok > failed, "most requests must be answered\n{ctx}");
    assert_eq!(v["served_before"], "lb1", "{ctx}");
    assert_eq!(v["served_after"], "lb2", "{ctx}");
    assert_eq!(v["served_at_end"], "lb1", "{ctx}");
    assert!(v["vip_move_ms"].is_number(), "{ctx}");
    // Answers came from both nodes' backends, and only from them.
    let by = v["by_server"].as_object().unwrap();
    for name in by.keys() {
        assert!(
            ["lb1-a", "lb1-b", "lb2-a", "lb2-b"].contains(&name.as_str()),
            "unexpected backend {name}\n{ctx}"
        );
    }
    assert!(by.keys().any(|k| k.starts_with("lb2-")), "{ctx}");
    let sum: u64 = by.values().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(sum, ok, "{ctx}");

    // The plot it says it wrote.
    let svg = out.join("failover.svg");
    assert!(stdout.contains(&svg.display().to_string()), "{ctx}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains("lb1 crashes"),
        "not the plot: {svg:?}"
    );
    // Nothing left behind.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let prefix = format!("rld{pid}-");
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&prefix),
        "namespaces {prefix}* left behind"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Without root: the reason, then the loopback demo, serving; Ctrl-C
/// prints the histogram.
#[test]
fn demo_without_root_falls_back_to_loopback() {
    let mut cmd = if is_root() {
        // Drop to nobody the way a user without root runs it.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "demo",
        ]);
        c
    } else {
        let mut c = Command::new(BIN);
        c.arg("demo");
        c
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) to drop root");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut head = String::new();
    let mut proxy = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        head.push_str(&line);
        head.push('\n');
        if let Some(rest) = line.trim_start().strip_prefix("proxy:") {
            let url = rest.split_whitespace().next().unwrap();
            proxy = Some(
                url.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string(),
            );
            break;
        }
    }
    let Some(proxy) = proxy else {
        let _ = child.kill();
        panic!("no proxy address printed:\n{head}");
    };
    assert!(
        head.contains("no failover lab: not running as root"),
        "the fallback must say why:\n{head}"
    );
    let mut s = TcpStream::connect(&proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("X-Backend: backend-"), "{resp}");
    // Ctrl-C (to the demo itself; setpriv execs it, so the PID is the demo's).
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", rest.join("\n"));
    let rest = rest.join("\n");
    assert!(
        rest.contains("p99"),
        "no latency summary after Ctrl-C:\n{rest}"
    );
}
