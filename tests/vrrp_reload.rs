//! SIGHUP applies `[[vrrp.instance]]` changes to a running node, seen from
//! the peer: real `ringlb` processes and keepalived 2.2 in network
//! namespaces (topology and helpers: `tests/netns/mod.rs`; node a =
//! 198.18.0.1, b = 198.18.0.2, client c = 198.18.0.3, VIP 198.18.0.100).
//!
//! What the peer saw is read from a `tcpdump` capture in the peer's
//! namespace (the adverts' priority, a priority-0 resignation) and from
//! keepalived's own log (its state changes); who holds a VIP is polled with
//! `ip addr` during each reload, so a VIP that left the master for even one
//! poll fails the test. Every wait is a bounded poll; nothing asserts how
//! fast something happened.

mod netns;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::peer_view::*;
use netns::*;

const WAIT: Duration = Duration::from_secs(5);
const STEADY: Duration = Duration::from_millis(1500);
const VIP2: &str = "198.18.0.101";

/// The config file [`Lab::ringlb_opts`] wrote for process `i` on `node`.
fn config_path(lab: &Lab, node: &str, i: usize) -> PathBuf {
    lab.dir.join(format!("ringlb-{node}-{i}.toml"))
}

/// Rewrites process `i`'s config with `edit` applied, sends SIGHUP and
/// waits until the reload was logged as applied (`Ok(log)`) or refused
/// (`Err(log)`).
fn reload(
    lab: &mut Lab,
    node: &str,
    i: usize,
    edit: impl Fn(&str) -> String,
) -> Result<String, String> {
    let path = config_path(lab, node, i);
    let text = std::fs::read_to_string(&path).unwrap();
    let new = edit(&text);
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&path, new).unwrap();
    let (ok0, bad0) = reload_counts(&ringlb_log(lab, i));
    lab.signal(i, libc::SIGHUP);
    let mut out = None;
    let done = eventually(WAIT, || {
        let log = ringlb_log(lab, i);
        let (ok, bad) = reload_counts(&log);
        if ok > ok0 {
            out = Some(Ok(log));
        } else if bad > bad0 {
            out = Some(Err(log));
        }
        out.is_some()
    });
    assert!(done, "reload never finished; log:\n{}", ringlb_log(lab, i));
    out.unwrap()
}

fn reload_counts(log: &str) -> (usize, usize) {
    (
        log.matches("reload: configuration generation").count(),
        log.matches("reload failed").count(),
    )
}

/// A tcpdump of VRRP on `node`'s eth0; lines as tcpdump prints them.
struct Capture {
    file: PathBuf,
}

impl Capture {
    fn start(lab: &mut Lab, node: &str) -> Capture {
        let file = lab
            .dir
            .join(format!("tcpdump-{node}-{}.txt", lab.procs.len()));
        let err = file.with_extension("err");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(node)])
            .args(["tcpdump", "-i", "eth0", "-n", "-l", "-U", "vrrp"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump must be installed (tests/run.sh installs it)");
        lab.procs.push(Proc {
            name: format!("tcpdump-{node}"),
            child,
            log: file.clone(),
            extra_pidfile: None,
            alive: true,
        });
        assert!(
            eventually(WAIT, || std::fs::read_to_string(&err)
                .unwrap_or_default()
                .contains("listening on")),
            "tcpdump did not start: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        Capture { file }
    }

    /// `(source, priority)` of every advert captured so far.
    fn adverts(&self) -> Vec<(String, u8)> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let src = l.split(" IP ").nth(1)?.split(' ').next()?.to_string();
                let prio = l
                    .split("prio ")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((src, prio))
            })
            .collect()
    }

    /// Advert intervals (as tcpdump prints them, e.g. `10cs`) node a sent
    /// after the first `skip` adverts.
    fn a_intervals_after(&self, skip: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" IP 198.18.0.1 > "))
            .filter_map(|l| Some(l.split("intvl ").nth(1)?.split(',').next()?.to_string()))
            .skip(skip)
            .collect()
    }

    /// Priorities node a (198.18.0.1) advertised after the first `skip` adverts.
    fn a_prios_after(&self, skip: usize) -> Vec<u8> {
        self.adverts()
            .into_iter()
            .skip(skip)
            .filter(|(s, _)| s == "198.18.0.1")
            .map(|(_, p)| p)
            .collect()
    }
}

fn has(lab: &Lab, node: &str, vip: &str) -> bool {
    ns_has(&lab.ns(node), vip)
}

/// keepalived v3, advert 100 ms, for the lab's VIP (preempts, its default).
fn keepalived(lab: &mut Lab, node: &str, priority: u8) -> usize {
    lab.keepalived(node, &keepalived_conf(3, priority, "0.1", None))
}

#[test]
fn priority_change_by_reload_is_advertised_at_once_without_a_flap() {
    let mut lab = Lab::new();
    lab.backend("a");
    let a = lab.ringlb_opts("a", &instance(200, "100ms", ""), "", &[]);
    let ka = keepalived(&mut lab, "b", 100);
    assert!(
        eventually(WAIT, || lab.only("a")),
        "a never became the only master"
    );
    assert!(
        eventually(WAIT, || keepalived_entered(&lab, ka, "BACKUP") >= 1),
        "keepalived never settled in BACKUP"
    );
    assert!(
        always(STEADY, || lab.only("a")),
        "no steady master before the reload"
    );
    let cap = Capture::start(&mut lab, "b");
    assert!(
        eventually(WAIT, || cap.a_prios_after(0).contains(&200)),
        "b never saw a's adverts"
    );
    let masters_before = keepalived_entered(&lab, ka, "MASTER");
    let transitions_before = transitions(&ringlb_log(&lab, a));

    // 200 → 150: still above keepalived's 100. No re-election, no flap.
    let seen = cap.adverts().len();
    let watch = Watch::start(&lab, VIP, |a, b| a && !b);
    let log = reload(&mut lab, "a", a, |t| {
        t.replace("priority = 200", "priority = 150")
    })
    .expect("reload refused");
    assert!(
        log.contains("vrrp VI_1: applied priority 200 -> 150"),
        "{log}"
    );
    assert!(
        eventually(WAIT, || cap.a_prios_after(seen).contains(&150)),
        "the peer never saw priority 150: {:?}",
        cap.a_prios_after(seen)
    );
    std::thread::sleep(STEADY);
    let (samples, bad) = watch.finish();
    assert!(samples > 10, "too few VIP samples ({samples})");
    assert!(
        bad.is_empty(),
        "the VIP left a (or b took it) during the reload: {bad:?}"
    );
    let prios = cap.a_prios_after(seen);
    let first = prios.iter().position(|&x| x == 150).unwrap();
    assert!(
        prios[first..].iter().all(|&x| x == 150),
        "a advertised something else after 150: {prios:?}"
    );
    assert_eq!(
        keepalived_entered(&lab, ka, "MASTER"),
        masters_before,
        "keepalived changed state during the reload"
    );
    assert_eq!(
        transitions(&ringlb_log(&lab, a)),
        transitions_before,
        "ringlb changed state during the reload:\n{log}"
    );

    // 150 → 50: below the peer. ringlb stays master and advertises 50 at
    // once; keepalived (preempt) takes over by the protocol's rule.
    let seen = cap.adverts().len();
    reload(&mut lab, "a", a, |t| {
        t.replace("priority = 150", "priority = 50")
    })
    .expect("refused");
    assert!(
        eventually(WAIT, || cap.a_prios_after(seen).contains(&50)),
        "the peer never saw priority 50"
    );
    assert!(
        eventually(WAIT, || lab.only("b")),
        "keepalived did not preempt a priority-50 master"
    );

    // 50 → 200: ringlb (preempt) takes the VIP back.
    reload(&mut lab, "a", a, |t| {
        t.replace("priority = 50", "priority = 200")
    })
    .expect("refused");
    assert!(
        eventually(WAIT, || lab.only("a")),
        "a did not preempt after its priority rose"
    );
    assert!(
        always(STEADY, || lab.only("a")),
        "no steady master after the last reload"
    );

    // The advert interval, 100 ms → 20 ms: the peer sees `intvl 2cs` and
    // (VRRPv3 backups learn the master's interval) nothing moves.
    let seen = cap.a_intervals_after(0).len();
    let watch = Watch::start(&lab, VIP, |a, b| a && !b);
    let log = reload(&mut lab, "a", a, |t| {
        t.replace("advert_interval = \"100ms\"", "advert_interval = \"20ms\"")
    })
    .expect("refused");
    assert!(log.contains("applied advert/preempt/auth"), "{log}");
    assert!(
        eventually(WAIT, || cap
            .a_intervals_after(seen)
            .iter()
            .any(|i| i == "2cs")),
        "the peer never saw a 20 ms interval: {:?}",
        cap.a_intervals_after(seen)
    );
    std::thread::sleep(STEADY);
    let (_, bad) = watch.finish();
    assert!(bad.is_empty(), "the interval change moved the VIP: {bad:?}");
}

#[test]
fn vips_added_and_removed_by_reload_without_a_flap() {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend("b");
    // 1 s adverts: the two nodes are reloaded one after the other, well
    // within a Master_Down_Interval (a peer with a different address list
    // ignores the other's adverts, as keepalived does).
    let a = lab.ringlb_opts("a", &instance(200, "1s", ""), "", &[]);
    let b = lab.ringlb_opts("b", &instance(100, "1s", ""), "", &[]);
    assert!(
        eventually(WAIT, || lab.only("a")),
        "a never became the only master"
    );
    assert!(always(STEADY, || lab.only("a")));

    let two = |t: &str| {
        t.replace(
            &format!("virtual_ipaddress = [\"{VIP}/24\"]"),
            &format!("virtual_ipaddress = [\"{VIP}/24\", \"{VIP2}/32\"]"),
        )
    };
    let watch = Watch::start(&lab, VIP, |a, b| a && !b);
    reload(&mut lab, "b", b, two).expect("b refused");
    let log = reload(&mut lab, "a", a, two).expect("a refused");
    assert!(
        log.contains(&format!("vrrp VI_1: applied +{VIP2}/32")),
        "{log}"
    );
    assert!(
        eventually(WAIT, || has(&lab, "a", VIP2)),
        "the added VIP never appeared on a"
    );
    assert!(always(STEADY, || has(&lab, "a", VIP2) && !has(&lab, "b", VIP2)));
    let (samples, bad) = watch.finish();
    assert!(samples > 10);
    assert!(bad.is_empty(), "{VIP} moved during the reload: {bad:?}");
    // The client reaches the service on the new address.
    let url = format!("http://{VIP2}:8080/");
    assert!(
        eventually(WAIT, || Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("c"),
                "curl",
                "-sf",
                "--max-time",
                "1",
                &url
            ])
            .output()
            .is_ok_and(|o| o.status.success())),
        "{VIP2}:8080 not served"
    );

    // Remove the first VIP: it leaves a, the second stays, b holds nothing.
    let one = |t: &str| {
        t.replace(
            &format!("virtual_ipaddress = [\"{VIP}/24\", \"{VIP2}/32\"]"),
            &format!("virtual_ipaddress = [\"{VIP2}/32\"]"),
        )
    };
    let watch = Watch::start(&lab, VIP2, |a, b| a && !b);
    reload(&mut lab, "b", b, one).expect("b refused");
    let log = reload(&mut lab, "a", a, one).expect("a refused");
    assert!(log.contains(&format!("applied -{VIP}/24")), "{log}");
    assert!(
        eventually(WAIT, || !has(&lab, "a", VIP)),
        "the removed VIP stayed on a"
    );
    assert!(always(STEADY, || has(&lab, "a", VIP2)
        && !has(&lab, "b", VIP2)
        && !has(&lab, "b", VIP)));
    let (_, bad) = watch.finish();
    assert!(bad.is_empty(), "{VIP2} moved during the reload: {bad:?}");
}

#[test]
fn reordered_upstreams_keep_track_upstream_on_the_tracked_one() {
    let mut lab = Lab::new();
    let app_a = lab.backend("a");
    let other_a = lab.backend_on("a", "127.0.0.1:9001");
    lab.backend("b");
    let checks = |name: &str| {
        format!(
            "[upstream.{name}.health_check]\nkind = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n"
        )
    };
    let other = "[[listener]]\nlisten = \"0.0.0.0:8081\"\nupstream = \"other\"\n\n\
                 [upstream.other]\n[[upstream.other.server]]\naddress = \"127.0.0.1:9001\"\n";
    let track = "track_upstream = [{ upstream = \"app\", weight = -150 }]\n";
    let extra_a = format!("{}{other}{}", checks("app"), checks("other"));
    let a = lab.ringlb_opts("a", &instance(200, "20ms", track), &extra_a, &[]);
    lab.ringlb_opts("b", &instance(100, "20ms", ""), "", &[]);
    assert!(eventually(WAIT, || lab.only("a")), "startup");

    // Reorder: [upstream.other] first, [upstream.app] after it.
    let path = config_path(&lab, "a", a);
    let text = std::fs::read_to_string(&path).unwrap();
    let app_start = text.find("[upstream.app]").unwrap();
    let app_end = text
        .find("[[listener]]\nlisten = \"0.0.0.0:8081\"")
        .unwrap();
    let app_block = text[app_start..app_end].to_string();
    reload(&mut lab, "a", a, |t| {
        let without = t.replace(&app_block, "");
        let vrrp = without.find("[[vrrp.instance]]").unwrap();
        format!("{}{}\n{}", &without[..vrrp], app_block, &without[vrrp..])
    })
    .expect("reload refused");
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(
        now.find("[upstream.other]").unwrap() < now.find("[upstream.app]").unwrap(),
        "the reload did not reorder the upstreams:\n{now}"
    );
    assert!(
        always(STEADY, || lab.only("a")),
        "the reorder moved the VIP"
    );

    // The untracked upstream loses its backend: nothing moves (with an
    // index it would now be "upstream 0" and move the VIP).
    lab.kill9(other_a);
    assert!(
        always(STEADY, || lab.only("a")),
        "an untracked upstream moved the VIP"
    );
    // The tracked one loses its backend: the VIP moves to b.
    lab.kill9(app_a);
    assert!(
        eventually(WAIT, || lab.only("b")),
        "the tracked upstream going down did not move the VIP"
    );
}

#[test]
fn a_removed_instance_resigns_and_the_peer_takes_over() {
    let mut lab = Lab::new();
    lab.backend("a");
    lab.backend_on("b", "0.0.0.0:8080");
    let admin = Lab::admin_section();
    // 1 s adverts: keepalived's Master_Down_Interval is ~3.6 s, its
    // Skew_Time after a priority-0 advert ~0.6 s.
    let a = lab.ringlb_opts("a", &instance(200, "1s", ""), &admin, &[]);
    let ka = lab.keepalived("b", &keepalived_conf(3, 100, "1", None));
    assert!(eventually(WAIT, || lab.only("a")), "startup");
    assert!(eventually(WAIT, || keepalived_entered(&lab, ka, "BACKUP") >= 1));
    let cap = Capture::start(&mut lab, "b");
    assert!(eventually(WAIT, || cap.a_prios_after(0).contains(&200)));

    // Remove the instance (and with it the [vrrp] section).
    let log = reload(&mut lab, "a", a, |t| {
        let i = t.find("[[vrrp.instance]]").unwrap();
        t[..i].to_string()
    })
    .expect("reload refused");
    assert!(log.contains("vrrp VI_1: removed (resigned"), "{log}");
    assert!(
        eventually(WAIT, || cap.a_prios_after(0).contains(&0)),
        "the peer never saw a priority-0 advert: {:?}",
        cap.adverts()
    );
    assert!(!has(&lab, "a", VIP), "the resigned instance kept its VIP");
    assert!(
        eventually(WAIT, || lab.only("b")),
        "keepalived did not take over"
    );
    assert!(lab.served_by("nodeb", WAIT), "VIP:8080 not served by b");
    // ringlb itself keeps serving with the new config (no VRRP).
    let stats = lab.stats("a");
    assert_eq!(
        stats["vrrp"]["instances"].as_array().map_or(0, |v| v.len()),
        0,
        "{stats}"
    );

    // Added back by a reload: it starts (as BACKUP), and with the higher
    // priority and preempt it takes the VIP back from keepalived.
    let log = reload(&mut lab, "a", a, |t| {
        format!("{t}[[vrrp.instance]]\n{}\n", instance(200, "1s", ""))
    })
    .expect("reload refused");
    assert!(log.contains("vrrp VI_1: added"), "{log}");
    assert_eq!(
        log.matches("vrrp VI_1: INIT -> BACKUP").count(),
        2,
        "started once at boot, once by the reload:\n{log}"
    );
    assert!(
        eventually(Duration::from_secs(10), || lab.only("a")),
        "the re-added instance did not take the VIP back"
    );
}

#[test]
fn an_invalid_vrrp_change_is_refused_and_the_old_config_keeps_running() {
    let mut lab = Lab::new();
    lab.backend("a");
    let admin = Lab::admin_section();
    let a = lab.ringlb_opts("a", &instance(200, "100ms", ""), &admin, &[]);
    lab.ringlb_opts("b", &instance(100, "100ms", ""), "", &[]);
    assert!(eventually(WAIT, || lab.only("a")), "startup");
    let generation = |lab: &Lab| lab.stats("a")["generation"].as_u64();
    let g0 = generation(&lab);
    let watch = Watch::start(&lab, VIP, |a, b| a && !b);

    // A VRID change under the same name, together with a new listener and
    // a new priority: all refused, nothing applied.
    let err = reload(&mut lab, "a", a, |t| {
        t.replace("virtual_router_id = 51", "virtual_router_id = 52")
            .replace("priority = 200", "priority = 90")
            .replace(
                "[upstream.app]",
                "[[listener]]\nlisten = \"0.0.0.0:8082\"\nupstream = \"app\"\n\n[upstream.app]",
            )
    })
    .expect_err("a VRID change must be refused");
    let path = config_path(&lab, "a", a).display().to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("virtual_router_id"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "{path}:{line}:21: vrrp instance \"VI_1\": `virtual_router_id` changed from 51 to 52"
        )),
        "{err}"
    );
    assert!(always(STEADY, || lab.only("a")));
    let (_, bad) = watch.finish();
    assert!(bad.is_empty(), "the refused reload moved the VIP: {bad:?}");
    assert_eq!(
        generation(&lab),
        g0,
        "a refused reload published a generation"
    );
    let s = lab.stats("a");
    assert_eq!(s["vrrp"]["instances"][0]["priority"], 200, "{s}");
    let url = "http://127.0.0.1:8082/";
    let served = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("a"),
            "curl",
            "-s",
            "--max-time",
            "1",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        !served.status.success(),
        "the refused reload's listener is open"
    );

    // An added instance on an interface that does not exist: refused too.
    let err = reload(&mut lab, "a", a, |t| {
        t.replace("virtual_router_id = 52", "virtual_router_id = 51")
            .replace("priority = 90", "priority = 200")
            + "\n[[vrrp.instance]]\nname = \"VI_9\"\ninterface = \"nosuch9\"\nvirtual_router_id = 9\nvirtual_ipaddress = [\"198.18.0.109/32\"]\n"
    })
    .expect_err("a missing interface must be refused");
    assert!(err.contains("nosuch9"), "{err}");
    assert!(always(STEADY, || lab.only("a")));
    assert_eq!(generation(&lab), g0);

    // The same file without the bad instance applies.
    reload(&mut lab, "a", a, |t| {
        t[..t.find("\n[[vrrp.instance]]\nname = \"VI_9\"").unwrap()].to_string() + "\n"
    })
    .expect("the fixed file must apply");
    assert!(generation(&lab) > g0);
    assert!(always(STEADY, || lab.only("a")));
}

/// The handle's side in process: a node started without instances starts
/// its VRRP thread on the reload that adds one; a reload that removes it
/// resigns it; an identity change is refused with the key's position.
#[test]
fn in_process_reload_starts_resigns_and_refuses() {
    use ringlb::control::vrrp::{self, State};
    let lab = Lab::new();
    let text = |inst: &str| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n[upstream.app]\n\
             [[upstream.app.server]]\naddress = \"127.0.0.1:2\"\n{inst}"
        )
    };
    let load = |name: &str, body: String| {
        let p = lab.dir.join(name);
        std::fs::write(&p, body).unwrap();
        ringlb::config::load(&p).unwrap()
    };
    let none = load("none.toml", text(""));
    let one = load(
        "one.toml",
        text(&format!(
            "[[vrrp.instance]]\n{}",
            instance(200, "100ms", "")
        )),
    );
    let moved = load(
        "moved.toml",
        text(&format!(
            "[[vrrp.instance]]\n{}",
            instance(200, "100ms", "").replace("virtual_router_id = 51", "virtual_router_id = 60")
        )),
    );
    let instances = one.vrrp.clone();
    let mut handle = in_netns(&lab.ns("a"), move || {
        let mut h = vrrp::spawn(vrrp::SpawnArgs::new(&none)).unwrap();
        assert!(h.roles().is_empty());
        // The first instance arrives by reload: the thread starts here (in
        // this namespace, like the process's signal thread in its own).
        let lines = h.reload(&instances, "one.toml").unwrap();
        assert_eq!(lines, ["vrrp VI_1: added"]);
        h
    });
    assert!(
        eventually(WAIT, || handle.is_master() && lab.has_vip("a")),
        "the instance added by reload never became master: {:?}",
        handle.roles()
    );
    // An identity change: refused with FILE:LINE:COL, nothing changes.
    let err = handle.reload(&moved.vrrp, "moved.toml").unwrap_err();
    let line = text(&format!(
        "[[vrrp.instance]]\n{}",
        instance(200, "100ms", "")
    ))
    .lines()
    .position(|l| l.starts_with("virtual_router_id"))
    .unwrap()
        + 1;
    assert!(
        err.starts_with(&format!("moved.toml:{line}:21: vrrp instance \"VI_1\"")),
        "{err}"
    );
    assert_eq!(handle.roles(), [("VI_1".to_string(), State::Master, 200)]);
    assert!(lab.has_vip("a"));
    // Same config again: nothing to do.
    assert!(handle.reload(&one.vrrp, "one.toml").unwrap().is_empty());
    // Removed: resigns, drops the VIP, leaves no role behind.
    let lines = handle.reload(&[], "none.toml").unwrap();
    assert_eq!(lines, ["vrrp VI_1: removed (resigned, addresses dropped)"]);
    assert!(!lab.has_vip("a"), "the resigned instance kept its VIP");
    assert!(handle.roles().is_empty());
    handle.shutdown();
}
