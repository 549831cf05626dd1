//! VRRP end to end: real `ringlb` processes (and keepalived 2.2.7) in
//! network namespaces on one bridge, a client namespace curling the VIP.
//!
//! Needs root and network namespaces (CI has both; see tests/run.sh, which
//! installs keepalived, curl and iproute2). Every wait is a bounded poll
//! (20 ms steps) with a generous upper bound: these tests assert *what*
//! happens (who holds the VIP, who answers), never how fast.
//!
//! Topology and helpers: `tests/netns/mod.rs`. Node a = 198.18.0.1,
//! node b = 198.18.0.2, client c = 198.18.0.3, VIP 198.18.0.100.

mod netns;

use std::time::{Duration, Instant};

use netns::*;

const WAIT: Duration = Duration::from_secs(5);
/// keepalived v2 speaks whole seconds: Master_Down_Interval is ~3.6 s.
const WAIT_V2: Duration = Duration::from_secs(10);
const STEADY: Duration = Duration::from_millis(1500);

fn assert_only(lab: &Lab, node: &str, limit: Duration, what: &str) {
    assert!(
        eventually(limit, || lab.only(node)),
        "{what}: expected only node {node} to hold the VIP (a: {}, b: {})",
        lab.has_vip("a"),
        lab.has_vip("b")
    );
}

fn assert_steady(lab: &Lab, node: &str, window: Duration, what: &str) {
    assert!(
        always(window, || lab.only(node)),
        "{what}: node {node} must hold the VIP alone for {window:?} (a: {}, b: {})",
        lab.has_vip("a"),
        lab.has_vip("b")
    );
}

/// Two ringlb nodes with a backend each: a (priority 200) and b (100),
/// adverts every `advert`; returns once a alone holds the VIP, with a's pid.
fn ringlb_pair(advert: &str) -> (Lab, usize) {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend("b");
    let a = lab.ringlb("a", &instance(200, advert, ""));
    lab.ringlb("b", &instance(100, advert, ""));
    assert_only(&lab, "a", WAIT, "startup");
    (lab, a)
}

#[test]
fn higher_priority_holds_vip_backup_takes_over_after_crash() {
    let (mut lab, a) = ringlb_pair("100ms");
    assert_steady(&lab, "a", STEADY, "steady state");
    assert!(
        lab.served_by("nodea", WAIT),
        "VIP:8080 not served by node a"
    );

    // A crash: the process dies and the host drops off the link (a killed
    // process leaves its VIP configured, so the link must go too).
    lab.kill9(a);
    lab.link_down("a");
    assert!(
        eventually(WAIT, || lab.has_vip("b")),
        "backup never took the VIP"
    );
    assert!(
        lab.served_by("nodeb", WAIT),
        "VIP:8080 not served by node b after failover"
    );
}

#[test]
fn sigterm_hands_over_and_master_preempts_on_return() {
    let (mut lab, a) = ringlb_pair("100ms");

    // Graceful stop: priority-0 advert, VIP removed before the exit.
    lab.term(a);
    assert!(!lab.has_vip("a"), "a stopped master must remove its VIP");
    assert_only(&lab, "b", WAIT, "after SIGTERM of the master");
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");

    // The higher-priority router comes back and preempts (preempt = true).
    lab.ringlb("a", &instance(200, "100ms", ""));
    assert_only(&lab, "a", WAIT, "after the master returned");
    assert_steady(&lab, "a", STEADY, "after preemption");
    assert!(lab.served_by("nodea", WAIT), "VIP:8080 not served by a");
}

/// A planned stop leaves no moment without the VIP: the stopping master
/// keeps it until the backup's first advert (which follows the backup's own
/// address add), so a client always finds a node holding it. Dropping it at
/// once, as keepalived does, leaves nobody holding it for the backup's
/// Skew_Time (~61 ms here: priority 100, 100 ms adverts), which these
/// samples (a few ms apart) see.
#[test]
fn sigterm_keeps_the_vip_until_the_backup_holds_it() {
    let (mut lab, a) = ringlb_pair("100ms");
    stop_without_gap(&mut lab, a, "a", "b");
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");
}

/// SIGTERM to `stopping` (the master, on node `from`): at every sample some
/// node holds the VIP until `to` alone does; then it has exited.
fn stop_without_gap(lab: &mut Lab, stopping: usize, from: &str, to: &str) {
    lab.signal(stopping, libc::SIGTERM);
    let start = Instant::now();
    let mut samples = 0u32;
    loop {
        let (on_from, on_to) = (lab.has_vip(from), lab.has_vip(to));
        samples += 1;
        assert!(
            on_from || on_to,
            "nobody held the VIP {:?} after SIGTERM (sample {samples})",
            start.elapsed()
        );
        if on_to && !on_from {
            break;
        }
        assert!(start.elapsed() < WAIT, "{to} never held the VIP alone");
    }
    assert!(samples > 1, "the VIP moved before the first sample");
    lab.wait_exit(stopping);
    assert_only(lab, to, WAIT, "after the stopped master exited");
}

/// SIGTERM to the master while keep-alive clients (two `requests` sessions
/// and two `httpx` clients, no retries: `tests/peers/keepalive_rounds.py`)
/// sit idle on connections to it. Once the VIP moves, b resets every packet
/// of a connection made to a, and a can no longer send from the address, so
/// a client's next request on such a connection would fail. The stop winds
/// keep-alive down first: a closes the idle connections while it still
/// holds the VIP, the clients see the close and reconnect, and b answers
/// their next requests. (Without the wind-down, every one of them failed
/// with a reset.)
#[test]
fn idle_keep_alive_clients_reconnect_cleanly_across_a_planned_handover() {
    let (mut lab, a) = ringlb_pair("100ms");
    assert!(lab.served_by("nodea", WAIT), "VIP:8080 not served by a");
    let url = format!("http://{VIP}:8080/");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/keepalive_rounds.py");
    let py = python::python();
    let mut client = lab.client("c", &[py.to_str().unwrap(), script.to_str().unwrap(), &url]);
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut round = move || -> serde_json::Value {
        use std::io::{BufRead, Write};
        stdin.write_all(b"round\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client said {line:?}: {e}"))
    };
    let answered_by = |got: &serde_json::Value, node: &str| {
        let sessions = got.as_array().unwrap();
        sessions.len() == 4
            && sessions
                .iter()
                .all(|s| s["status"] == 200 && s["backend"] == node)
    };
    let before = round();
    assert!(answered_by(&before, "nodea"), "before the stop: {before}");
    lab.signal(a, libc::SIGTERM);
    lab.wait_exit(a);
    assert_only(&lab, "b", WAIT, "after a stopped");
    let after = round();
    assert!(
        answered_by(&after, "nodeb"),
        "the next request of each idle keep-alive session, after the handover: {after}"
    );
    // End of input ends the client.
    drop(round);
    let _ = client.wait();
    let log = lab.logs();
    assert!(
        log.contains("keep-alive wound down"),
        "a did not report the wind-down: {log}"
    );
}

#[test]
fn no_preempt_leaves_the_lower_master_in_place() {
    let mut lab = Lab::new();
    let a = lab.ringlb("a", &instance(200, "100ms", "preempt = false\n"));
    let b = lab.ringlb("b", &instance(100, "100ms", ""));
    assert_only(&lab, "a", WAIT, "startup");
    lab.term(a);
    assert_only(&lab, "b", WAIT, "after SIGTERM of a");

    // a returns with a higher priority but preempt = false: b keeps the VIP
    // well past a's Master_Down_Interval (~0.32 s here).
    lab.ringlb("a", &instance(200, "100ms", "preempt = false\n"));
    assert_steady(&lab, "b", STEADY, "no preemption");
    // ...and a still takes over when b goes away.
    lab.term(b);
    assert_only(&lab, "a", WAIT, "after SIGTERM of b");
}

#[test]
fn unicast_peers_elect_and_fail_over() {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend("b");
    let a = lab.ringlb(
        "a",
        &instance(200, "100ms", "unicast_peers = [\"198.18.0.2\"]\n"),
    );
    lab.ringlb(
        "b",
        &instance(100, "100ms", "unicast_peers = [\"198.18.0.1\"]\n"),
    );
    assert_only(&lab, "a", WAIT, "startup");
    assert_steady(&lab, "a", STEADY, "steady state");
    lab.kill9(a);
    lab.link_down("a");
    assert!(
        eventually(WAIT, || lab.has_vip("b")),
        "b never took the VIP"
    );
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");
}

/// keepalived's config for the lab's VIP in unicast mode: from `me` to `peer`.
fn keepalived_unicast(priority: u8, me: &str, peer: &str) -> String {
    keepalived_conf(3, priority, "0.1", None).replace(
        "  virtual_ipaddress",
        &format!("  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  virtual_ipaddress"),
    )
}

/// Unicast VRRP (no multicast anywhere) between ringlb and keepalived,
/// both ways: each believes the other's adverts (one holder throughout),
/// and a graceful stop of either hands over.
#[test]
fn unicast_interoperates_with_keepalived_both_ways() {
    let mut lab = Lab::new();
    lab.backend_on("a", "0.0.0.0:8080");
    lab.backend("b");
    let ka = lab.keepalived("a", &keepalived_unicast(200, "198.18.0.1", "198.18.0.2"));
    let unicast_b = "unicast_peers = [\"198.18.0.1\"]\n";
    lab.ringlb("b", &instance(100, "100ms", unicast_b));
    assert_only(&lab, "a", WAIT, "keepalived unicast master, ringlb backup");
    assert_steady(&lab, "a", STEADY, "ringlb believes keepalived");
    lab.term(ka);
    assert_only(&lab, "b", WAIT, "after SIGTERM of keepalived");
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");

    // keepalived back with a lower priority: it believes ringlb.
    let ka = lab.keepalived("a", &keepalived_unicast(50, "198.18.0.1", "198.18.0.2"));
    assert!(
        eventually(WAIT, || peer_view::keepalived_entered(&lab, ka, "BACKUP")
            >= 1),
        "the returning keepalived never started"
    );
    assert_steady(&lab, "b", STEADY, "keepalived believes ringlb");
    assert_eq!(peer_view::keepalived_entered(&lab, ka, "MASTER"), 0);
}

#[test]
fn keepalived_v3_backup_follows_ringlb_master_both_ways() {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend("b");
    lab.backend_on("b", "0.0.0.0:8080");
    let a = lab.ringlb("a", &instance(200, "100ms", ""));
    lab.keepalived("b", &keepalived_conf(3, 100, "0.1", None));
    assert_only(&lab, "a", WAIT, "ringlb master, keepalived backup");
    // keepalived's Master_Down_Interval is ~0.36 s: it accepts our adverts.
    assert_steady(&lab, "a", STEADY, "no dual master");

    lab.kill9(a);
    lab.link_down("a");
    assert!(
        eventually(WAIT, || lab.has_vip("b")),
        "keepalived never took over from the crashed ringlb"
    );
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");

    // ringlb returns with the higher priority and takes the VIP back.
    lab.link_up("a");
    let a = lab.ringlb("a", &instance(200, "100ms", ""));
    assert_only(&lab, "a", WAIT, "ringlb preempting keepalived");
    assert_steady(&lab, "a", STEADY, "after preemption");

    // A graceful stop hands over to keepalived with no gap: ringlb keeps the
    // VIP until keepalived's first advert as master.
    stop_without_gap(&mut lab, a, "a", "b");
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");
}

#[test]
fn ringlb_v3_backup_follows_keepalived_master_both_ways() {
    let mut lab = Lab::new();
    lab.backend_on("a", "0.0.0.0:8080");
    lab.backend("b");
    let ka = lab.keepalived("a", &keepalived_conf(3, 200, "0.1", None));
    lab.ringlb("b", &instance(100, "100ms", ""));
    assert_only(&lab, "a", WAIT, "keepalived master, ringlb backup");
    assert_steady(&lab, "a", STEADY, "no dual master");
    assert!(lab.served_by("nodea", WAIT), "VIP:8080 not served by a");

    lab.term(ka);
    assert_only(&lab, "b", WAIT, "after SIGTERM of keepalived");
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");

    // keepalived returns with the higher priority: ringlb steps down.
    lab.keepalived("a", &keepalived_conf(3, 200, "0.1", None));
    assert_only(&lab, "a", WAIT, "keepalived preempting ringlb");
    assert_steady(&lab, "a", STEADY, "after preemption");
}

#[test]
fn keepalived_v2_auth_pass_backup_accepts_ringlb_master() {
    let mut lab = Lab::new();
    let v2 = "version = 2\nauth_pass = \"rlpass1\"\n";
    let a = lab.ringlb("a", &instance(200, "1s", v2));
    lab.keepalived("b", &keepalived_conf(2, 100, "1", Some("rlpass1")));
    assert_only(&lab, "a", WAIT_V2, "ringlb v2 master");
    // Longer than keepalived's Master_Down_Interval (3 s + skew): had it
    // rejected our adverts (auth, checksum) it would be master by now.
    assert_steady(
        &lab,
        "a",
        Duration::from_millis(4500),
        "no dual master (v2)",
    );

    lab.kill9(a);
    lab.link_down("a");
    assert!(
        eventually(WAIT_V2, || lab.has_vip("b")),
        "keepalived v2 never took over"
    );
}

#[test]
fn ringlb_v2_auth_pass_backup_follows_keepalived_master() {
    let mut lab = Lab::new();
    let v2 = "version = 2\nauth_pass = \"rlpass1\"\n";
    let ka = lab.keepalived("a", &keepalived_conf(2, 200, "1", Some("rlpass1")));
    lab.ringlb("b", &instance(100, "1s", v2));
    assert_only(&lab, "a", WAIT_V2, "keepalived v2 master");
    assert_steady(
        &lab,
        "a",
        Duration::from_millis(4500),
        "no dual master (v2)",
    );

    // keepalived's SIGTERM sends priority 0: ringlb takes over after Skew_Time.
    lab.term(ka);
    assert_only(&lab, "b", WAIT_V2, "after SIGTERM of keepalived (v2)");
}

#[test]
fn track_script_weight_moves_the_vip_and_notify_reports_states() {
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::new();
    let flag = lab.dir.join("healthy");
    std::fs::write(&flag, "").unwrap();
    let events = lab.dir.join("notify.out");
    let script = lab.dir.join("notify.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", events.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(
        "notify = \"{}\"\ntrack_script = [{{ script = \"test -e {}\", interval = \"50ms\", weight = -150 }}]\n",
        script.display(),
        flag.display()
    );
    let a = lab.ringlb("a", &instance(200, "100ms", &extra));
    lab.ringlb("b", &instance(100, "100ms", ""));
    assert_only(&lab, "a", WAIT, "startup");

    // The check fails: a's priority drops to 50 and b (100) preempts it.
    std::fs::remove_file(&flag).unwrap();
    assert_only(&lab, "b", WAIT, "after a's track_script failed");
    // Healthy again: a is back at 200 and preempts.
    std::fs::write(&flag, "").unwrap();
    assert_only(&lab, "a", WAIT, "after a's track_script recovered");
    lab.term(a);

    let read = || std::fs::read_to_string(&events).unwrap_or_default();
    let expected = [
        "INSTANCE VI_1 BACKUP 200",
        "INSTANCE VI_1 MASTER 200",
        "INSTANCE VI_1 BACKUP 50",
        "INSTANCE VI_1 MASTER 200",
        "INSTANCE VI_1 STOP 200",
    ];
    assert!(
        eventually(WAIT, || read().lines().count() >= expected.len()),
        "notify lines: {:?}",
        read()
    );
    let got: Vec<String> = read().lines().map(str::to_string).collect();
    assert_eq!(got, expected);
}

#[test]
fn driver_counts_drops_publishes_roles_and_cleans_up_in_process() {
    use ringlb::control::vrrp::{self, State};
    use std::sync::Arc;
    let lab = Lab::new();
    let registry = ringlb::metrics::Registry::new(1);
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n[upstream.app]\n\
         [[upstream.app.server]]\naddress = \"127.0.0.1:2\"\n[[vrrp.instance]]\n{}",
        instance(100, "100ms", "")
    );
    let cfg_path = lab.dir.join("inproc.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let config = ringlb::config::load(&cfg_path).unwrap();
    let mut args = vrrp::SpawnArgs::new(&config);
    args.registry = Some(Arc::clone(&registry));
    let handle = in_netns(&lab.ns("a"), move || vrrp::spawn(args).unwrap());
    let tx = raw_sender(&lab, "b");

    // A valid higher-priority master in b keeps a in Backup, with garbage mixed in.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1000) {
        send_advert(&tx, 255, 51, 3, 200, false);
        send_advert(&tx, 254, 51, 3, 200, false); // TTL != 255
        send_advert(&tx, 255, 51, 3, 200, true); // bad checksum
        send_advert(&tx, 255, 52, 3, 200, false); // someone else's VRID
        send_advert(&tx, 255, 51, 2, 200, false); // v2 to a v3 router
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        handle.roles(),
        vec![("VI_1".to_string(), State::Backup, 100)]
    );
    assert!(!lab.has_vip("a"));
    let snap = registry.control().snapshot();
    for reason in ["bad_ttl", "bad_checksum", "unknown_vrid", "wrong_version"] {
        assert!(
            snap.vrrp_drops.get(reason).copied().unwrap_or(0) >= 10,
            "{reason} not counted: {:?}",
            snap.vrrp_drops
        );
    }
    let stats = &snap.vrrp["VI_1"];
    assert!(stats.adverts_received >= 10, "{stats:?}");
    assert!(stats.advert_gap.count() >= 9, "advert gaps not recorded");

    // The master goes silent: a takes over, holds the VIP, and says so.
    assert!(
        eventually(WAIT, || handle.is_master() && lab.has_vip("a")),
        "a never became master: {:?}",
        handle.roles()
    );
    let snap = registry.control().snapshot();
    assert_eq!(snap.vrrp["VI_1"].role, ringlb::proto::vrrp::State::Master);
    assert!(snap.vrrp["VI_1"].adverts_sent >= 1);

    // Graceful stop removes the VIP before returning.
    handle.shutdown();
    assert!(!lab.has_vip("a"), "VIP left behind after shutdown");
}

#[test]
fn sync_group_members_fault_together() {
    use ringlb::control::vrrp::{self, State};
    let lab = Lab::new();
    let flag = lab.dir.join("ok");
    std::fs::write(&flag, "").unwrap();
    let weight_flag = lab.dir.join("weight-ok");
    std::fs::write(&weight_flag, "").unwrap();
    let vi1 = instance(
        100,
        "100ms",
        &format!(
            "sync_group = \"G\"\ntrack_script = [{{ script = \"test -e {}\", interval = \"50ms\", weight = 0 }}, {{ script = \"test -e {}\", interval = \"50ms\", weight = -30 }}]\n",
            flag.display(),
            weight_flag.display()
        ),
    );
    let vi2 = "name = \"VI_2\"\ninterface = \"eth0\"\nvirtual_router_id = 52\npriority = 100\n\
               advert_interval = \"100ms\"\nvirtual_ipaddress = [\"198.18.0.101/24\"]\nsync_group = \"G\"\n";
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n[upstream.app]\n\
         [[upstream.app.server]]\naddress = \"127.0.0.1:2\"\n[[vrrp.instance]]\n{vi1}\n[[vrrp.instance]]\n{vi2}"
    );
    let cfg_path = lab.dir.join("sync.toml");
    std::fs::write(&cfg_path, text).unwrap();
    let config = ringlb::config::load(&cfg_path).unwrap();
    let args = vrrp::SpawnArgs::new(&config);
    let handle = in_netns(&lab.ns("a"), move || vrrp::spawn(args).unwrap());
    let states = |h: &vrrp::VrrpHandle| h.roles().iter().map(|r| r.1).collect::<Vec<_>>();
    let has = |ip: &str| {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                &lab.ns("a"),
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
    };
    assert!(
        eventually(WAIT, || states(&handle) == [State::Master, State::Master]),
        "{:?}",
        handle.roles()
    );
    assert!(has("198.18.0.100") && has("198.18.0.101"));

    // VI_1's weight-0 check fails: VI_2 follows it into FAULT.
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(WAIT, || states(&handle) == [State::Fault, State::Fault]),
        "{:?}",
        handle.roles()
    );
    assert!(!has("198.18.0.100") && !has("198.18.0.101"));

    // Healthy again: both leave FAULT (and, alone on the link, become master).
    std::fs::write(&flag, "").unwrap();
    assert!(
        eventually(WAIT, || states(&handle) == [State::Master, State::Master]),
        "{:?}",
        handle.roles()
    );

    // A weighted check failing on VI_1 lowers the whole group's priority,
    // so a peer would take both VIPs, not one.
    let prios = |h: &vrrp::VrrpHandle| h.roles().iter().map(|r| r.2).collect::<Vec<_>>();
    assert_eq!(prios(&handle), [100, 100]);
    std::fs::remove_file(&weight_flag).unwrap();
    assert!(
        eventually(WAIT, || prios(&handle) == [70, 70]),
        "{:?}",
        handle.roles()
    );
    std::fs::write(&weight_flag, "").unwrap();
    assert!(
        eventually(WAIT, || prios(&handle) == [100, 100]),
        "{:?}",
        handle.roles()
    );
    handle.shutdown();
    assert!(!has("198.18.0.100") && !has("198.18.0.101"));
}

/// The data plane's own health decides who holds the VIP: when every
/// backend of the master is down (seen by its health checks), the master's
/// priority drops by the `track_upstream` weight and the VIP moves to the
/// node that can serve.
#[test]
fn all_backends_down_on_the_master_moves_the_vip() {
    let mut lab = Lab::new();
    let backend_a = lab.backend("a");
    lab.backend("b");
    let checks = "\n[upstream.app.health_check]\nkind = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n";
    let track = "track_upstream = [{ upstream = \"app\", weight = -150 }]\n";
    lab.ringlb("a", &instance(200, "20ms", &format!("{track}{checks}")));
    lab.ringlb("b", &instance(100, "20ms", &format!("{track}{checks}")));
    assert_only(&lab, "a", WAIT, "startup");
    lab.kill9(backend_a);
    assert_only(&lab, "b", WAIT, "after node a lost every backend");
    assert!(
        lab.served_by("nodeb", WAIT),
        "VIP:8080 not served by node b"
    );
}

/// A stalled data plane (every shard thread blocked; SIGUSR2 in
/// fault-injection builds) moves the VIP at once — its priority drops by
/// `track_data_plane`'s weight and the backup preempts — without any
/// polling script, and it comes back when the shards resume.
#[cfg(feature = "fault-injection")]
#[test]
fn stalled_shards_give_the_vip_away() {
    let (mut lab, a) = ringlb_pair("10ms");
    assert_steady(&lab, "a", STEADY, "steady state at 10 ms adverts");
    let t0 = std::time::Instant::now();
    lab.signal(a, libc::SIGUSR2);
    assert_only(&lab, "b", WAIT, "after node a's shards stalled");
    println!(
        "VIP on b alone {:?} after node a's shards stalled (includes `ip` polling)",
        t0.elapsed()
    );
    assert!(
        lab.served_by("nodeb", WAIT),
        "VIP:8080 not served by node b"
    );
    lab.signal(a, libc::SIGUSR2);
    assert_only(&lab, "a", WAIT, "after node a's shards resumed (preempt)");
}

/// The shards' CPU of ringlb process `pid`: the first CPU its `shard-0`
/// thread may run on.
fn shard_cpu(pid: u32) -> usize {
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == "shard-0" {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap();
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_string();
            let first = list.split([',', '-']).next().unwrap();
            return first.parse().unwrap();
        }
    }
    panic!("ringlb {pid} has no shard-0 thread");
}

/// Busy loops pinned to `cpu` for `dur`, `n` of them at normal priority and,
/// if `rt_bursts`, one SCHED_FIFO thread spinning 80 ms bursts every 500 ms.
fn hog(cpu: usize, n: usize, dur: Duration, rt_bursts: bool) -> Vec<std::thread::JoinHandle<()>> {
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t with one CPU set, for the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
    let mut hs: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                pin(cpu);
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < dur {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    if rt_bursts {
        hs.push(std::thread::spawn(move || {
            pin(cpu);
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: the calling thread, a valid sched_param.
            let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
            assert!(
                rt,
                "SCHED_FIFO for the real-time burst: {}",
                std::io::Error::last_os_error()
            );
            let start = std::time::Instant::now();
            while start.elapsed() < dur {
                let burst = std::time::Instant::now();
                let mut x = 0u64;
                while burst.elapsed() < Duration::from_millis(80) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
    }
    hs
}

/// A busy host is not a dead data plane: busy loops pinned to the shards'
/// core (both nodes' shards share it in this lab) and 80 ms bursts of a
/// real-time process there neither move the VIP nor leave it unheld.
#[test]
fn cpu_hog_on_the_shards_core_moves_nothing() {
    // The hog takes the whole host's CPUs: no other lab runs beside it.
    let mut lab = Lab::alone();
    lab.backend("a");
    lab.backend("b");
    let a = lab.ringlb("a", &instance(200, "10ms", ""));
    let b = lab.ringlb("b", &instance(100, "10ms", ""));
    assert_only(&lab, "a", WAIT, "startup");
    assert_steady(&lab, "a", STEADY, "steady state at 10 ms adverts");
    let cpu_a = shard_cpu(lab.procs[a].child.id());
    let cpu_b = shard_cpu(lab.procs[b].child.id());
    println!("shards: node a on cpu {cpu_a}, node b on cpu {cpu_b}");
    let dur = Duration::from_secs(4);
    let mut hogs = hog(cpu_a, 12, dur, true);
    if cpu_b != cpu_a {
        hogs.extend(hog(cpu_b, 12, dur, true));
    }
    let watch = lab.watch_vip(dur + Duration::from_millis(500));
    for h in hogs {
        h.join().unwrap();
    }
    println!("VIP during the hog: {watch:?}");
    let log = std::fs::read_to_string(lab.procs[a].log.with_extension("err")).unwrap_or_default();
    let degraded = log.matches("data plane degraded").count();
    println!("node a: data plane degraded {degraded} time(s) during the hog");
    for l in log.lines().filter(|l| l.contains("data plane")) {
        println!("  a: {l}");
    }
    assert_eq!(watch.b_held, 0, "the VIP moved to b: {watch:?}");
    assert_eq!(
        watch.a_held, watch.samples,
        "the VIP left a (unheld or moved): {watch:?}"
    );
    assert!(!log.contains("-> FAULT"), "a went to FAULT:\n{log}");
}

/// A sync group moves as one: node a is the better master for VI_2, node b
/// for VI_1. Without the group rule each node would master one VIP; with it,
/// the first member to find itself outranked drags its group to BACKUP, so
/// one node (whichever wins that race) holds both and the group is never
/// split (keepalived's `vrrp_sync_group`). When that node dies, the other
/// takes both.
#[test]
fn sync_group_member_outranked_drags_the_group() {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend("b");
    let pair = |p1: u8, p2: u8| {
        format!(
            "{}sync_group = \"G\"\n\n[[vrrp.instance]]\nname = \"VI_2\"\ninterface = \"eth0\"\n\
             virtual_router_id = 52\npriority = {p2}\nadvert_interval = \"20ms\"\n\
             virtual_ipaddress = [\"198.18.0.101/24\"]\nsync_group = \"G\"\n",
            instance(p1, "20ms", "")
        )
    };
    let a = lab.ringlb("a", &pair(100, 200));
    let b = lab.ringlb("b", &pair(150, 100));
    let (ns_a, ns_b) = (lab.ns("a"), lab.ns("b"));
    let has = |node: &str, ip: &str| {
        let ns = if node == "a" { &ns_a } else { &ns_b };
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
    };
    let holder = || {
        let v: Vec<bool> = [("a", "100"), ("a", "101"), ("b", "100"), ("b", "101")]
            .iter()
            .map(|(n, ip)| has(n, &format!("198.18.0.{ip}")))
            .collect();
        match v[..] {
            [true, true, false, false] => Some("a"),
            [false, false, true, true] => Some("b"),
            _ => None,
        }
    };
    let mut first = None;
    assert!(
        eventually(WAIT, || {
            first = holder();
            first.is_some()
        }),
        "one node must hold both VIPs"
    );
    let first = first.unwrap();
    println!("the group settled on node {first}");
    assert!(
        always(STEADY, || holder() == Some(first)),
        "the group must stay whole on {first}"
    );
    let (dead, other) = if first == "a" { (a, "b") } else { (b, "a") };
    lab.kill9(dead);
    lab.link_down(first);
    assert!(
        eventually(WAIT, || has(other, "198.18.0.100")
            && has(other, "198.18.0.101")),
        "{other} must take both VIPs after {first} died"
    );
}

/// keepalived's config for another virtual router on the lab's link:
/// VRID 61 with 25 addresses of 198.18.1.0/24.
fn keepalived_many_vips(priority: u8) -> String {
    let vips: String = (1..=25).map(|i| format!("    198.18.1.{i}/24\n")).collect();
    format!(
        "global_defs {{\n  router_id other\n  vrrp_version 3\n}}\n\
         vrrp_instance VI_9 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 61\n\
         \x20 priority {priority}\n  advert_int 0.1\n  virtual_ipaddress {{\n{vips}  }}\n}}\n"
    )
}

/// Another virtual router on the same link — keepalived, VRID 61, 25
/// addresses — coming up and going away twice next to a ringlb master and
/// its keepalived backup (VRID 51, 10 ms adverts) moves nothing: ringlb
/// counts the foreign adverts as `unknown_vrid`, and neither VRID-51 router
/// changes state. This once failed on every takeover of the other router:
/// the lab ran keepalived with syslog on, and with no syslog daemon glibc
/// writes each log line to /dev/console, which on a VM's serial console
/// keeps a CPU busy with interrupts off for ~1.5 ms per line (a 25-VIP
/// takeover logs ~100 lines); the ringlb shard's 10 ms tick came 30+ ms
/// late, its liveness tracking saw a stalled data plane and the backup took
/// the VIP. keepalived now runs with `-G` (see `Lab::keepalived`).
#[test]
fn another_virtual_router_on_the_link_moves_nothing() {
    other_router_takeovers_move_nothing(false, 2);
}

/// The same as [`another_virtual_router_on_the_link_moves_nothing`], with
/// the other router's keepalived run the way its docs say
/// (`keepalived -P -n -l`, syslog on): with no syslog daemon on the host,
/// glibc writes each of its ~100 takeover log lines to /dev/console, which
/// on a VM's serial console holds a CPU with interrupts off ~1.5 ms a line.
/// Timers on the whole host fire late — ringlb's shard tick among them —
/// but that is the host's hiccup, not a dead data plane: ringlb keeps the
/// VIP (no state change), and so does keepalived b stay BACKUP.
#[test]
fn a_console_logging_neighbour_does_not_move_the_vip() {
    other_router_takeovers_move_nothing(true, 4);
}

/// A ringlb master (10 ms adverts) and a keepalived backup; `rounds` times
/// a keepalived for another VRID with 25 VIPs starts, takes its own VIPs
/// and stops (logging to syslog, or not): ringlb and keepalived b keep
/// their roles, and ringlb never blames its data plane.
fn other_router_takeovers_move_nothing(syslog: bool, rounds: u32) {
    // Console writes hold a CPU with interrupts off for the whole host, and
    // a CPU hog in a lab beside this one would starve its shard: either
    // way the "never blames its data plane" check below would judge
    // another test's load. The console-logging variant runs alone.
    let mut lab = if syslog { Lab::alone() } else { Lab::new() };
    lab.backend("a");
    let a = lab.ringlb_opts("a", &instance(200, "10ms", ""), &Lab::admin_section(), &[]);
    let kb = lab.keepalived("b", &keepalived_conf(3, 100, "0.01", None));
    assert_only(&lab, "a", WAIT, "ringlb master, keepalived backup");
    assert!(
        eventually(WAIT, || peer_view::keepalived_entered(&lab, kb, "BACKUP")
            >= 1),
        "keepalived b never settled in BACKUP"
    );
    let before = lab.stats("a")["vrrp"]["instances"][0]["transitions"].clone();
    let b_masters = peer_view::keepalived_entered(&lab, kb, "MASTER");
    for round in 0..rounds {
        let other = lab.keepalived_logging("c", &keepalived_many_vips(200), syslog);
        assert!(
            eventually(WAIT, || peer_view::keepalived_entered(
                &lab, other, "MASTER"
            ) >= 1),
            "round {round}: the other router never became master"
        );
        assert_steady(
            &lab,
            "a",
            Duration::from_millis(500),
            "the other router's takeover",
        );
        lab.term(other);
    }
    let log = peer_view::ringlb_log(&lab, a);
    assert!(
        !log.contains("data plane degraded"),
        "ringlb blamed its data plane for the host's hiccup:\n{log}"
    );
    let stats = lab.stats("a");
    let inst = &stats["vrrp"]["instances"][0];
    assert_eq!(inst["transitions"], before, "ringlb changed state: {inst}");
    assert_eq!(inst["role"], "MASTER", "{inst}");
    assert_eq!(
        peer_view::keepalived_entered(&lab, kb, "MASTER"),
        b_masters,
        "keepalived b took the VIP"
    );
    assert!(
        stats["vrrp"]["dropped"]["unknown_vrid"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "ringlb never heard the other router: {}",
        stats["vrrp"]["dropped"]
    );
}
