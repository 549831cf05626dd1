//! The admin endpoint of a running `ringlb`, driven with curl as an
//! operator would: state-changing calls need POST and the `[admin] token`,
//! reads stay open, and neither a client trickling its request nor more
//! stuck clients than the endpoint has slots stall the health probe.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed (tests/run.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn requests_in_window(admin: &str) -> u64 {
    let (code, body) = curl(&[&format!("http://{admin}/stats")]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"]["requests"].as_u64().unwrap()
}

#[test]
fn reset_needs_post_and_the_token_reads_stay_open() {
    let be = echo_backend();
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = simple_config(&[be.addr], "")
        + &format!("\n[admin]\nlisten = \"{admin}\"\ntoken = \"s3cret-token\"\n");
    let rl = Ringlb::start(&cfg);
    // Two proxied requests so the stats window is not empty.
    for _ in 0..2 {
        let (code, _) = curl(&[&format!("http://{}/x", rl.addr)]);
        assert_eq!(code, 200);
    }
    assert_eq!(requests_in_window(&admin), 2);
    let url = format!("http://{admin}/reset");
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 405, "GET /reset");
    let (code, _) = curl(&["-X", "POST", &url]);
    assert_eq!(code, 401, "POST /reset without a token");
    let (code, _) = curl(&["-X", "POST", "-H", "Authorization: Bearer nope", &url]);
    assert_eq!(code, 401, "POST /reset with a wrong token");
    assert_eq!(
        requests_in_window(&admin),
        2,
        "refused resets reset nothing"
    );
    for path in ["/metrics", "/healthz"] {
        let (code, body) = curl(&[&format!("http://{admin}{path}")]);
        assert_eq!(code, 200, "{path} must stay open: {body}");
    }
    let (code, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer s3cret-token",
        &url,
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(requests_in_window(&admin), 0);
}

#[test]
fn a_trickling_admin_client_does_not_stall_healthz() {
    let be = echo_backend();
    let admin = format!("127.0.0.1:{}", free_port());
    let cfg = simple_config(&[be.addr], "") + &format!("\n[admin]\nlisten = \"{admin}\"\n");
    let _rl = Ringlb::start(&cfg);
    let a: std::net::SocketAddr = admin.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // One byte every 150 ms, never finishing a head, for at most 3 s.
    let trickler = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let mut sent = 0;
        for _ in 0..20 {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(b"G").is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let (code, body) = curl(&[&format!("http://{admin}/healthz")]);
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, _) = curl(&[&format!("http://{admin}/metrics")]);
        assert_eq!(code, 200);
    }
    assert!(
        !trickler.is_finished(),
        "the trickler must still be sending"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = trickler.join().unwrap();
    println!("trickler sent {sent} bytes while 10 probes were answered");
}

/// More admin clients than there are slots (`MAX_CLIENTS` = 32) connect and
/// never finish a request head: 20 send nothing, 20 half a head. A prober
/// that connects after all of them still gets `200 ok` from `/healthz`
/// (before the fix: `503 busy`, every slot held), and every stuck client is
/// closed with a `408`: the oldest ones evicted to make room, the rest at
/// the head deadline. None is left open, none was refused.
#[test]
fn stuck_admin_clients_beyond_every_slot_do_not_fail_healthz() {
    let be = echo_backend();
    let a: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = simple_config(&[be.addr], "") + &format!("\n[admin]\nlisten = \"{a}\"\n");
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, a);
    const STUCK: usize = 40;
    let stuck: Vec<TcpStream> = (0..STUCK)
        .map(|i| {
            let mut s = TcpStream::connect(a).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            s
        })
        .collect();
    // The listener's queue is FIFO: each probe is accepted after every
    // stuck client, so it finds all the slots taken.
    for i in 0..5 {
        let (code, body) = admin_get(a, "/healthz");
        assert_eq!((code, body.as_str()), (200, "ok\n"), "probe {i}");
    }
    let mut closed = 0;
    for (i, mut s) in stuck.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            r.is_ok(),
            "stuck client {i} not closed: {r:?} after {text:?}"
        );
        assert!(
            text.starts_with("HTTP/1.1 408 "),
            "stuck client {i} must be told 408: {text:?}"
        );
        closed += 1;
    }
    assert_eq!(closed, STUCK);
    let (code, _) = admin_get(a, "/healthz");
    assert_eq!(code, 200);
    println!("{STUCK} stuck admin clients closed with 408; 5 probes answered 200");
}
