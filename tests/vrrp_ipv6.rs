//! VRRPv3 over IPv6 end to end: real `ringlb` processes (and keepalived
//! 2.2.7) in network namespaces on one bridge, a client namespace curling
//! the IPv6 VIP.
//!
//! Same lab as `vrrp_netns.rs` (`tests/netns/mod.rs`), plus IPv6 from the
//! benchmarking prefix 2001:2::/48 (RFC 5180): node a = 2001:2::1, node b =
//! 2001:2::2, client c = 2001:2::3, VIP 2001:2::100/64. Adverts go from each
//! node's link-local address to ff02::12. Every wait is a bounded poll with
//! a generous upper bound: these tests assert *what* happens (who holds the
//! VIP, who answers, what was counted), never how fast. The first wait is
//! longer than in the IPv4 tests: a router waits for its link-local address
//! to finish duplicate address detection before it can speak.

mod netns;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::time::Duration;

use netns::*;

const VIP6: &str = "2001:2::100";
const START: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(5);
const STEADY: Duration = Duration::from_millis(1500);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 lab plus a 2001:2::N/64 address per node (no DAD: the test
/// addresses are known unique).
fn lab6() -> Lab {
    let lab = Lab::new();
    for (i, node) in ["a", "b", "c"].iter().enumerate() {
        let addr = format!("2001:2::{}/64", i + 1);
        sh(&[
            "ip",
            "-n",
            &lab.ns(node),
            "addr",
            "add",
            &addr,
            "dev",
            "eth0",
            "nodad",
        ]);
    }
    lab
}

fn has_vip6(lab: &Lab, node: &str) -> bool {
    let out = sh(&[
        "ip",
        "-n",
        &lab.ns(node),
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    out.contains(&format!(" {VIP6}/64"))
}

/// `node` holds the IPv6 VIP and the other router does not (`ip -6 addr`
/// in both namespaces).
fn only6(lab: &Lab, node: &str) -> bool {
    let other = if node == "a" { "b" } else { "a" };
    has_vip6(lab, node) && !has_vip6(lab, other)
}

/// The switch's multicast database (which ports asked for ff02::12), for
/// failure messages.
fn mdb(lab: &Lab) -> String {
    sh(&["bridge", "-n", &lab.ns("sw"), "mdb", "show"])
}

fn assert_only6(lab: &Lab, node: &str, limit: Duration, what: &str) {
    assert!(
        eventually(limit, || only6(lab, node)),
        "{what}: expected only node {node} to hold {VIP6} (a: {}, b: {}); bridge mdb: {}",
        has_vip6(lab, "a"),
        has_vip6(lab, "b"),
        mdb(lab)
    );
}

/// Checked every 20 ms over the window: never both, never the other.
fn assert_steady6(lab: &Lab, node: &str, what: &str) {
    assert!(
        always(STEADY, || only6(lab, node)),
        "{what}: node {node} must hold {VIP6} alone for {STEADY:?} (a: {}, b: {}); bridge mdb: {}",
        has_vip6(lab, "a"),
        has_vip6(lab, "b"),
        mdb(lab)
    );
}

/// `X-Backend` of a GET to [VIP]:8080 over IPv6 from the client, if 200.
fn curl6(lab: &Lab) -> Option<String> {
    let url = format!("http://[{VIP6}]:8080/");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("c"), "curl", "-6", "-s", "-i"])
        .args(["--max-time", "1", &url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("X-Backend: "))
        .map(|s| s.trim().to_string())
}

fn served6_by(lab: &Lab, backend: &str) -> bool {
    eventually(WAIT, || curl6(lab).as_deref() == Some(backend))
}

fn mac(lab: &Lab, node: &str) -> String {
    let out = sh(&["ip", "-n", &lab.ns(node), "-o", "link", "show", "eth0"]);
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out:?}"));
    mac.to_string()
}

/// The client's neighbour-cache line for the VIP (empty when none).
fn client_neigh(lab: &Lab) -> String {
    sh(&["ip", "-n", &lab.ns("c"), "-6", "neigh", "show", VIP6])
}

/// A ringlb `[[vrrp.instance]]` for the IPv6 VIP (VRRPv3 is the default).
fn instance6(priority: u8, advert: &str) -> String {
    format!(
        "name = \"VI_6\"\ninterface = \"eth0\"\nvirtual_router_id = 52\npriority = {priority}\n\
         advert_interval = \"{advert}\"\nvirtual_ipaddress = [\"{VIP6}/64\"]\ngarp_repeat = 3\n\
         garp_interval = \"10ms\"\n"
    )
}

/// An IPv6 listener next to the lab's IPv4 one, and the admin endpoint.
fn extra6() -> String {
    format!(
        "[[listener]]\nlisten = \"[::]:8080\"\nupstream = \"app\"\n\n{}",
        Lab::admin_section()
    )
}

fn ringlb6(lab: &mut Lab, node: &str, priority: u8) -> usize {
    ringlb6_with(lab, node, priority, "")
}

/// [`ringlb6`] with `extra` instance lines (e.g. unicast peers).
fn ringlb6_with(lab: &mut Lab, node: &str, priority: u8, extra: &str) -> usize {
    let inst = format!("{}{extra}", instance6(priority, "100ms"));
    lab.ringlb_opts(node, &inst, &extra6(), &[])
}

/// `node`'s ringlb is BACKUP and has heard its master's adverts.
fn assert_backup_hears(lab: &Lab, node: &str) {
    let i = instance0(lab, node);
    assert_eq!(i["role"], "BACKUP", "{i}");
    assert!(
        i["adverts_received"].as_u64().unwrap_or(0) > 0,
        "{i}; bridge mdb: {}",
        mdb(lab)
    );
}

/// keepalived's VRRPv3 IPv6 instance for the same VIP, with `extra`
/// instance lines (e.g. unicast peers).
fn keepalived6(priority: u8, extra: &str) -> String {
    format!(
        "global_defs {{\n  router_id ka\n}}\n\
         vrrp_instance VI_6 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 52\n\
         \x20 version 3\n  priority {priority}\n  advert_int 0.1\n{extra}\
         \x20 virtual_ipaddress {{\n    {VIP6}/64\n  }}\n}}\n"
    )
}

/// Starts keepalived in `node` once its link-local address has finished
/// DAD. keepalived 2.2.7 does not wait for it (observed here: started on a
/// fresh link it logs `send advert error 22 (Invalid argument)` for every
/// advert until DAD is done, while already MASTER, and the peer becomes
/// master too); ringlb waits. A real host is long past DAD, so the lab waits.
fn keepalived6_on(lab: &mut Lab, node: &str, priority: u8) -> usize {
    keepalived6_with(lab, node, priority, "")
}

/// [`keepalived6_on`] with `extra` instance lines.
fn keepalived6_with(lab: &mut Lab, node: &str, priority: u8, extra: &str) -> usize {
    let ns = lab.ns(node);
    let settled = || {
        let out = sh(&[
            "ip", "-n", &ns, "-6", "addr", "show", "dev", "eth0", "scope", "link",
        ]);
        out.contains("inet6 fe80:") && !out.contains("tentative")
    };
    assert!(
        eventually(START, settled),
        "{node}: link-local address never finished DAD"
    );
    lab.keepalived(node, &keepalived6(priority, extra))
}

fn instance0(lab: &Lab, node: &str) -> serde_json::Value {
    lab.stats(node)["vrrp"]["instances"][0].clone()
}

/// ringlb ↔ ringlb: the master holds the IPv6 VIP and serves the client
/// over IPv6; after a crash the backup takes the VIP, its unsolicited
/// neighbour advertisement repoints the client's neighbour cache at its MAC
/// (without it the client would keep sending to the dead MAC until NUD gave
/// up, seconds later), and the client's next requests are served by it.
#[test]
fn ringlb_pair_fails_over_ipv6_vip_and_client_follows_the_na() {
    let mut lab = lab6();
    lab.backend("a");
    lab.backend("b");
    let a = ringlb6(&mut lab, "a", 200);
    ringlb6(&mut lab, "b", 100);
    assert_only6(&lab, "a", START, "startup");
    assert_steady6(&lab, "a", "steady state");
    assert!(served6_by(&lab, "nodea"), "[VIP]:8080 not served by a");
    let (mac_a, mac_b) = (mac(&lab, "a"), mac(&lab, "b"));
    assert!(
        client_neigh(&lab).contains(&mac_a),
        "client's entry for the VIP should be a's MAC {mac_a}: {}",
        client_neigh(&lab)
    );
    // Both ringlbs speak VRRPv3 over IPv6 to each other: b hears a.
    assert_backup_hears(&lab, "b");

    lab.kill9(a);
    lab.link_down("a");
    assert!(
        eventually(WAIT, || has_vip6(&lab, "b")),
        "backup never took the IPv6 VIP"
    );
    assert!(
        eventually(WAIT, || client_neigh(&lab).contains(&mac_b)),
        "the client's neighbour entry for the VIP never moved to b's MAC {mac_b}: {}",
        client_neigh(&lab)
    );
    assert!(
        served6_by(&lab, "nodeb"),
        "[VIP]:8080 not served by b after failover"
    );
}

/// keepalived master, ringlb backup: ringlb accepts keepalived's IPv6
/// adverts (no dual master at any sampled point), takes over when
/// keepalived crashes, and steps down again when keepalived returns with
/// the higher priority (keepalived accepts ringlb's adverts).
#[test]
fn ringlb_backup_follows_keepalived_ipv6_master_both_ways() {
    let mut lab = lab6();
    lab.backend_on("a", "[::]:8080");
    lab.backend("b");
    let ka = keepalived6_on(&mut lab, "a", 200);
    ringlb6(&mut lab, "b", 100);
    assert_only6(&lab, "a", START, "keepalived master, ringlb backup");
    assert_steady6(&lab, "a", "no dual master");
    assert_backup_hears(&lab, "b");
    assert!(served6_by(&lab, "nodea"), "[VIP]:8080 not served by a");

    lab.kill9(ka);
    lab.link_down("a");
    assert_only6(&lab, "b", WAIT, "ringlb after keepalived crashed");
    assert!(served6_by(&lab, "nodeb"), "[VIP]:8080 not served by b");

    lab.link_up("a");
    keepalived6_on(&mut lab, "a", 200);
    assert_only6(&lab, "a", START, "keepalived preempting ringlb");
    assert_steady6(&lab, "a", "after preemption");
    assert_eq!(instance0(&lab, "b")["role"], "BACKUP");
}

/// ringlb master, keepalived backup: keepalived accepts ringlb's IPv6
/// adverts (never claims the VIP while ringlb runs), takes over when ringlb
/// crashes, and yields when ringlb returns with the higher priority.
#[test]
fn keepalived_backup_follows_ringlb_ipv6_master_both_ways() {
    let mut lab = lab6();
    lab.backend("a");
    lab.backend_on("b", "[::]:8080");
    let a = ringlb6(&mut lab, "a", 200);
    keepalived6_on(&mut lab, "b", 100);
    assert_only6(&lab, "a", START, "ringlb master, keepalived backup");
    assert_steady6(&lab, "a", "no dual master");
    assert!(served6_by(&lab, "nodea"), "[VIP]:8080 not served by a");

    lab.kill9(a);
    lab.link_down("a");
    assert_only6(&lab, "b", WAIT, "keepalived after ringlb crashed");
    assert!(served6_by(&lab, "nodeb"), "[VIP]:8080 not served by b");

    lab.link_up("a");
    ringlb6(&mut lab, "a", 200);
    assert_only6(&lab, "a", START, "ringlb preempting keepalived");
    assert_steady6(&lab, "a", "after preemption");
    assert!(
        served6_by(&lab, "nodea"),
        "[VIP]:8080 not served by a again"
    );
}

/// Unicast VRRPv3 over IPv6: each node names the other by its global
/// address and sends from its own (`unicast_src`); the pair elects the
/// higher priority and fails over on a crash like the multicast pair.
#[test]
fn unicast_ipv6_peers_elect_and_fail_over() {
    let mut lab = lab6();
    lab.backend("a");
    lab.backend("b");
    let unicast = |me: u8, peer: u8| {
        format!("unicast_src = \"2001:2::{me}\"\nunicast_peers = [\"2001:2::{peer}\"]\n")
    };
    let a = ringlb6_with(&mut lab, "a", 200, &unicast(1, 2));
    ringlb6_with(&mut lab, "b", 100, &unicast(2, 1));
    assert_only6(&lab, "a", START, "unicast startup");
    assert_steady6(&lab, "a", "unicast steady state");
    assert_backup_hears(&lab, "b");
    assert!(served6_by(&lab, "nodea"), "[VIP]:8080 not served by a");

    lab.kill9(a);
    lab.link_down("a");
    assert_only6(&lab, "b", WAIT, "unicast failover");
    assert!(served6_by(&lab, "nodeb"), "[VIP]:8080 not served by b");
}

/// Unicast VRRPv3 over IPv6 with keepalived, both ways. keepalived 2.2.7
/// sends its IPv6 unicast adverts with the default hop limit (64, seen on
/// the wire; its multicast ones have 255) and checks none on unicast; a
/// ringlb that insisted on 255 dropped every one (`bad_ttl`) and became a
/// second master. From a configured unicast peer, to our own address, any
/// hop limit is accepted (`wire::hops_ok`).
#[test]
fn unicast_ipv6_interoperates_with_keepalived_both_ways() {
    let mut lab = lab6();
    lab.backend_on("a", "[::]:8080");
    lab.backend("b");
    let ka_unicast = "  unicast_src_ip 2001:2::1\n  unicast_peer {\n    2001:2::2\n  }\n";
    let ka = keepalived6_with(&mut lab, "a", 200, ka_unicast);
    let b_unicast = "unicast_src = \"2001:2::2\"\nunicast_peers = [\"2001:2::1\"]\n";
    ringlb6_with(&mut lab, "b", 100, b_unicast);
    assert_only6(&lab, "a", START, "keepalived unicast master, ringlb backup");
    assert_steady6(&lab, "a", "no dual master (ringlb believes keepalived)");
    assert_backup_hears(&lab, "b");
    assert_eq!(dropped(&lab, "b", "bad_ttl"), 0);
    assert!(served6_by(&lab, "nodea"), "[VIP]:8080 not served by a");

    // keepalived's graceful stop (priority 0): ringlb takes over.
    lab.term(ka);
    assert_only6(&lab, "b", WAIT, "ringlb after keepalived stopped");
    assert!(served6_by(&lab, "nodeb"), "[VIP]:8080 not served by b");
    let masters = instance0(&lab, "b")["transitions"]["MASTER"].as_u64();

    // keepalived returns with a lower priority: it hears ringlb's unicast
    // adverts and stays backup.
    let ka = keepalived6_with(&mut lab, "a", 50, ka_unicast);
    assert!(
        eventually(START, || peer_view::keepalived_entered(&lab, ka, "BACKUP")
            >= 1),
        "the returning keepalived never started"
    );
    assert_steady6(&lab, "b", "keepalived backup believes ringlb");
    assert_eq!(peer_view::keepalived_entered(&lab, ka, "MASTER"), 0);
    let b = instance0(&lab, "b");
    assert_eq!(b["role"], "MASTER", "{b}");
    assert_eq!(b["transitions"]["MASTER"].as_u64(), masters, "{b}");
}

/// Sends `msg` from node `node`'s 2001:2::N to ff02::12 on eth0 with the
/// given hop limit (a raw IPv6 protocol-112 socket; the kernel writes the
/// IPv6 header).
fn send6(lab: &Lab, node: &str, src: Ipv6Addr, hops: u32, msgs: Vec<Vec<u8>>) {
    in_netns(&lab.ns(node), move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddr::V6(SocketAddrV6::new(src, 0, 0, 0)).into())
            .unwrap();
        s.set_multicast_hops_v6(hops).unwrap();
        let idx = ringlb::control::vrrp::iface::index("eth0").unwrap();
        let to = SocketAddr::V6(SocketAddrV6::new(
            ringlb::proto::vrrp::wire::MULTICAST_V6,
            0,
            0,
            idx,
        ));
        for m in msgs {
            s.send_to(&m, &to.into()).unwrap();
        }
    });
}

/// A VRRPv3 IPv6 advert for the VIP, vrid 52, from `src` to ff02::12.
fn advert6(src: Ipv6Addr, priority: u8) -> Vec<u8> {
    use ringlb::proto::vrrp::{Auth, Kind, Repr, Version};
    let repr = Repr {
        version: Version::V3,
        kind: Kind::Advertisement,
        vrid: 52,
        priority,
        auth: Auth::None,
        advert_interval: 10,
        addresses: vec![IpAddr::V6(VIP6.parse().unwrap())],
    };
    let dst = IpAddr::V6(ringlb::proto::vrrp::wire::MULTICAST_V6);
    repr.to_bytes(IpAddr::V6(src), dst)
}

fn dropped(lab: &Lab, node: &str, reason: &str) -> u64 {
    lab.stats(node)["vrrp"]["dropped"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Higher-priority IPv6 adverts that are invalid — hop limit 1 (sent from
/// off-link as far as RFC 5798 §7.1 knows), a bad checksum, truncated —
/// are dropped and counted by reason, and the master keeps the VIP. The
/// same advert sent valid (hop limit 255) does make it step down, so the
/// drops are the checks at work, not packets that never arrived.
#[test]
fn bad_ipv6_adverts_are_dropped_and_counted() {
    let mut lab = lab6();
    lab.backend("a");
    ringlb6(&mut lab, "a", 200);
    assert!(
        eventually(START, || has_vip6(&lab, "a")),
        "a alone must become master"
    );
    let src: Ipv6Addr = "2001:2::2".parse().unwrap();
    let good = advert6(src, 254);
    let mut corrupt = good.clone();
    corrupt[6] ^= 0xff;
    let truncated = good[..6].to_vec();
    let burst = |m: &Vec<u8>| vec![m.clone(); 20];

    send6(&lab, "b", src, 1, burst(&good));
    send6(&lab, "b", src, 255, burst(&corrupt));
    send6(&lab, "b", src, 255, burst(&truncated));
    for reason in ["bad_ttl", "bad_checksum", "truncated"] {
        assert!(
            eventually(WAIT, || dropped(&lab, "a", reason) >= 20),
            "{reason}: expected 20 drops, stats: {}",
            lab.stats("a")["vrrp"]["dropped"]
        );
    }
    assert!(has_vip6(&lab, "a"), "a lost the VIP to invalid adverts");
    let a = instance0(&lab, "a");
    assert_eq!(a["role"], "MASTER", "{a}");
    assert_eq!(a["transitions"]["BACKUP"].as_u64(), Some(1), "{a}");

    // Control: the same advert with hop limit 255 is believed.
    send6(&lab, "b", src, 255, vec![good]);
    assert!(
        eventually(WAIT, || instance0(&lab, "a")["transitions"]["BACKUP"]
            .as_u64()
            .unwrap_or(0)
            >= 2),
        "a valid higher-priority IPv6 advert must make a step down: {}",
        instance0(&lab, "a")
    );
}
