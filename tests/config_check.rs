//! `config::parse_str` end to end: a full config resolves to the values
//! written (and defaults for the rest), and each kind of mistake is reported
//! at its exact `LINE:COL` with a message that names the problem.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringlb::config::{
    defaults, parse_str, AccessLogFormat, Balance, Config, Diagnostic, HashKey, HealthCheckKind,
    Workers,
};

/// A smallest valid config; tests append their mistake after it (line 8 on).
const BASE: &str = r#"[[listener]]
listen = "127.0.0.1:8080"
upstream = "app"

[upstream.app]
[[upstream.app.server]]
address = "127.0.0.1:9000"
"#;

fn ok(text: &str) -> Config {
    parse_str(text, "t.toml").unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse_str(text, "t.toml") {
        Ok(_) => panic!("expected errors, config was accepted:\n{text}"),
        Err(e) => e.diagnostics,
    }
}

/// Exactly one diagnostic, at `line:col`, containing `needle`.
#[track_caller]
fn one_error(text: &str, line: usize, col: usize, needle: &str) {
    let errs = errors(text);
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 1, "expected one diagnostic, got {shown:#?}");
    let e = &errs[0];
    assert_eq!(
        (e.file.as_str(), e.line, e.col),
        ("t.toml", line, col),
        "wrong position: {e}"
    );
    assert!(e.message.contains(needle), "{e:?} lacks {needle:?}");
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const FULL: &str = r#"
[runtime]
workers = 2
control_cpu = 0
worker_cpus = [1, 1]
shutdown_timeout = "5s"

[http]
max_header_bytes = 8192
max_headers = 50
client_header_timeout = "10s"
client_body_timeout = "20s"
keepalive_timeout = "0s"
max_connections = 1000

[admin]
listen = "127.0.0.1:9901"

[log]
access_log = "/var/log/ringlb/access.log"
access_log_format = "json"

[[listener]]
listen = "0.0.0.0:80"
upstream = "app"
backlog = 128

[[listener.route]]
host = "API.Example.com:8080"
path_prefix = "/v1"
upstream = "api"

[[listener.route]]
host = "*.example.com"
upstream = "app"

[[listener]]
listen = "[::1]:8080"
route = [{ path_prefix = "/static", upstream = "app" }]

[upstream.app]
balance = "hash"
hash_key = "header:X-User"
keepalive = 16
connect_timeout = "250ms"
read_timeout = "1.5s"
send_timeout = "2m"
retries = 3

[[upstream.app.server]]
address = "198.18.0.10:80"
weight = 5
max_fails = 0
fail_timeout = "30s"
backup = false
down = true
max_conns = 100
slow_start = "10s"

[[upstream.app.server]]
address = "[fd00::10]:8080"
backup = true

[upstream.app.health_check]
kind = "tcp"
path = "/health"
interval = "2s"
timeout = "100ms"
rise = 1
fall = 5
expect_status = "200-299"

[upstream.api]
balance = "least_conn"
server = [{ address = "198.18.0.20:81" }]
health_check = { expect_status = 204 }

[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_interval = "20ms"
version = 3
preempt = false
preempt_delay = "5s"
accept_mode = true
virtual_ipaddress = ["198.18.0.100/24", "198.18.0.101"]
unicast_peers = ["198.18.0.2", "198.18.0.3"]
unicast_src = "198.18.0.1"
track_upstream = [{ upstream = "app", weight = -50 }, { upstream = "api" }]
track_interface = ["eth1"]
track_script = [{ script = "/bin/check", interval = "2s", rise = 2, fall = 3, weight = 10 }]
notify = "/usr/local/bin/on-vrrp-change"
sync_group = "G1"
garp_repeat = 3
garp_interval = "10ms"
garp_refresh = "60s"
garp_master_delay = "0s"

[[vrrp.instance]]
name = "VI_2"
interface = "eth0"
virtual_router_id = 52
version = 2
advert_interval = "2s"
auth_pass = "secret"
virtual_ipaddress = ["198.18.0.200"]

[[vrrp.instance.track_script]]
script = "/bin/other"
"#;

#[test]
fn full_config_resolves_every_key() {
    let c = ok(FULL);

    assert_eq!(c.runtime.workers, Workers::Count(2));
    assert_eq!(c.runtime.control_cpu, Some(0));
    assert_eq!(c.runtime.worker_cpus, Some(vec![1, 1]));
    assert_eq!(c.runtime.shutdown_timeout, Duration::from_secs(5));

    assert_eq!(c.http.max_header_bytes, 8192);
    assert_eq!(c.http.max_headers, 50);
    assert_eq!(c.http.client_header_timeout, Duration::from_secs(10));
    assert_eq!(c.http.client_body_timeout, Duration::from_secs(20));
    assert_eq!(c.http.keepalive_timeout, Duration::ZERO);
    assert_eq!(c.http.max_connections, 1000);

    assert_eq!(c.admin.as_ref().unwrap().listen, sock("127.0.0.1:9901"));
    assert_eq!(
        c.log.access_log.as_deref(),
        Some(std::path::Path::new("/var/log/ringlb/access.log"))
    );
    assert_eq!(c.log.access_log_format, AccessLogFormat::Json);

    // Upstream indices: order of first appearance.
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["app", "api"]);

    assert_eq!(c.listeners.len(), 2);
    let l0 = &c.listeners[0];
    assert_eq!(l0.listen, sock("0.0.0.0:80"));
    assert_eq!(l0.upstream, Some(0));
    assert_eq!(l0.backlog, 128);
    assert_eq!(l0.routes.len(), 2);
    assert_eq!(l0.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(l0.routes[0].path_prefix.as_deref(), Some("/v1"));
    assert_eq!(l0.routes[0].upstream, 1);
    assert_eq!(l0.routes[1].host.as_deref(), Some("*.example.com"));
    assert_eq!(l0.routes[1].path_prefix, None);
    assert_eq!(l0.routes[1].upstream, 0);
    let l1 = &c.listeners[1];
    assert_eq!(l1.listen, sock("[::1]:8080"));
    assert_eq!(l1.upstream, None);
    assert_eq!(l1.backlog, defaults::BACKLOG);
    assert_eq!(l1.routes[0].path_prefix.as_deref(), Some("/static"));

    let app = &c.upstreams[0];
    assert_eq!(app.balance, Balance::Hash);
    assert_eq!(app.hash_key, HashKey::Header("x-user".into()));
    assert_eq!(app.keepalive, 16);
    assert_eq!(app.connect_timeout, Duration::from_millis(250));
    assert_eq!(app.read_timeout, Duration::from_millis(1500));
    assert_eq!(app.send_timeout, Duration::from_secs(120));
    assert_eq!(app.retries, 3);
    assert_eq!(app.servers.len(), 2);
    let s0 = &app.servers[0];
    assert_eq!(s0.spec, "198.18.0.10:80");
    assert_eq!(s0.addr, sock("198.18.0.10:80"));
    assert_eq!(s0.weight, 5);
    assert_eq!(s0.max_fails, 0);
    assert_eq!(s0.fail_timeout, Duration::from_secs(30));
    assert!(!s0.backup);
    assert!(s0.down);
    assert_eq!(s0.max_conns, 100);
    assert_eq!(s0.slow_start, Duration::from_secs(10));
    let s1 = &app.servers[1];
    assert_eq!(s1.addr, sock("[fd00::10]:8080"));
    assert!(s1.backup && !s1.down);
    assert_eq!(s1.weight, defaults::WEIGHT);
    assert_eq!(s1.max_fails, defaults::MAX_FAILS);
    assert_eq!(s1.fail_timeout, defaults::FAIL_TIMEOUT);
    assert_eq!(s1.max_conns, defaults::MAX_CONNS);
    assert_eq!(s1.slow_start, defaults::SLOW_START);
    let hc = app.health_check.as_ref().unwrap();
    assert_eq!(hc.kind, HealthCheckKind::Tcp);
    assert_eq!(hc.path, "/health");
    assert_eq!(hc.interval, Duration::from_secs(2));
    assert_eq!(hc.timeout, Duration::from_millis(100));
    assert_eq!((hc.rise, hc.fall), (1, 5));
    assert_eq!(hc.expect_status, (200, 299));

    let api = &c.upstreams[1];
    assert_eq!(api.balance, Balance::LeastConn);
    assert_eq!(api.hash_key, defaults::HASH_KEY);
    assert_eq!(api.keepalive, defaults::KEEPALIVE);
    assert_eq!(api.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(api.read_timeout, defaults::READ_TIMEOUT);
    assert_eq!(api.send_timeout, defaults::SEND_TIMEOUT);
    assert_eq!(api.retries, defaults::RETRIES);
    assert_eq!(api.servers[0].addr, sock("198.18.0.20:81"));
    let hc = api.health_check.as_ref().unwrap();
    assert_eq!(hc.expect_status, (204, 204));
    assert_eq!(hc.kind, defaults::HC_KIND);
    assert_eq!(hc.path, defaults::HC_PATH);
    assert_eq!(hc.interval, defaults::HC_INTERVAL);
    assert_eq!(hc.timeout, defaults::HC_TIMEOUT);
    assert_eq!((hc.rise, hc.fall), (defaults::HC_RISE, defaults::HC_FALL));

    assert_eq!(c.vrrp.len(), 2);
    let v = &c.vrrp[0];
    assert_eq!(v.name, "VI_1");
    assert_eq!(v.interface, "eth0");
    assert_eq!(v.virtual_router_id, 51);
    assert_eq!(v.priority, 150);
    assert_eq!(v.advert_interval, Duration::from_millis(20));
    assert_eq!(v.version, 3);
    assert!(!v.preempt);
    assert_eq!(v.preempt_delay, Duration::from_secs(5));
    assert_eq!(
        v.virtual_ipaddress,
        [(ip("198.18.0.100"), 24), (ip("198.18.0.101"), 32)]
    );
    assert_eq!(v.unicast_peers, [ip("198.18.0.2"), ip("198.18.0.3")]);
    assert_eq!(v.unicast_src, Some(ip("198.18.0.1")));
    assert_eq!(v.auth_pass, None);
    let tu: Vec<(&str, i32)> = v
        .track_upstream
        .iter()
        .map(|t| (t.upstream.as_str(), t.weight))
        .collect();
    assert_eq!(tu, [("app", -50), ("api", defaults::TRACK_WEIGHT)]);
    assert_eq!(v.track_interface, ["eth1"]);
    let ts = &v.track_script[0];
    assert_eq!(ts.script, "/bin/check");
    assert_eq!(ts.interval, Duration::from_secs(2));
    assert_eq!((ts.rise, ts.fall, ts.weight), (2, 3, 10));
    assert_eq!(v.notify.as_deref(), Some("/usr/local/bin/on-vrrp-change"));
    assert_eq!(v.sync_group.as_deref(), Some("G1"));
    assert_eq!(v.garp_repeat, 3);
    assert_eq!(v.garp_interval, Duration::from_millis(10));
    assert_eq!(v.garp_refresh, Duration::from_secs(60));
    assert_eq!(v.garp_master_delay, Duration::ZERO);

    let v2 = &c.vrrp[1];
    assert_eq!(v2.version, 2);
    assert_eq!(v2.advert_interval, Duration::from_secs(2));
    assert_eq!(v2.auth_pass.as_deref(), Some("secret"));
    assert_eq!(v2.priority, defaults::VRRP_PRIORITY);
    assert_eq!(v2.preempt, defaults::VRRP_PREEMPT);
    assert_eq!(v2.garp_repeat, defaults::GARP_REPEAT);
    assert_eq!(v2.garp_master_delay, Duration::from_secs(5));
    let ts = &v2.track_script[0];
    assert_eq!(ts.script, "/bin/other");
    assert_eq!(ts.interval, defaults::TRACK_SCRIPT_INTERVAL);
    assert_eq!(
        (ts.rise, ts.fall, ts.weight),
        (
            defaults::TRACK_SCRIPT_RISE,
            defaults::TRACK_SCRIPT_FALL,
            defaults::TRACK_WEIGHT
        )
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ok(BASE);
    assert_eq!(c.runtime.workers, defaults::WORKERS);
    assert_eq!(c.runtime.control_cpu, None);
    assert_eq!(c.runtime.worker_cpus, None);
    assert_eq!(c.runtime.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT);
    assert_eq!(c.http.max_header_bytes, defaults::MAX_HEADER_BYTES);
    assert_eq!(c.http.max_headers, defaults::MAX_HEADERS);
    assert_eq!(
        c.http.client_header_timeout,
        defaults::CLIENT_HEADER_TIMEOUT
    );
    assert_eq!(c.http.client_body_timeout, defaults::CLIENT_BODY_TIMEOUT);
    assert_eq!(c.http.keepalive_timeout, defaults::KEEPALIVE_TIMEOUT);
    assert_eq!(c.http.max_connections, defaults::MAX_CONNECTIONS);
    assert!(c.admin.is_none());
    assert!(c.log.access_log.is_none());
    assert_eq!(c.log.access_log_format, defaults::ACCESS_LOG_FORMAT);
    assert_eq!(c.listeners[0].backlog, defaults::BACKLOG);
    let u = &c.upstreams[0];
    assert_eq!(u.balance, defaults::BALANCE);
    assert!(u.health_check.is_none());
    assert!(c.vrrp.is_empty());
}

#[test]
fn vrrp_defaults_and_implied_prefix() {
    let c = ok(&format!(
        "{BASE}[[vrrp.instance]]\ninterface = \"eth0\"\nvirtual_router_id = 7\nvirtual_ipaddress = [\"fd00::64\"]\n"
    ));
    let v = &c.vrrp[0];
    assert_eq!(v.name, "VI_1");
    assert_eq!(v.version, defaults::VRRP_VERSION);
    assert_eq!(v.priority, defaults::VRRP_PRIORITY);
    assert_eq!(v.advert_interval, defaults::VRRP_ADVERT);
    assert_eq!(v.preempt, defaults::VRRP_PREEMPT);
    assert_eq!(v.preempt_delay, defaults::VRRP_PREEMPT_DELAY);
    assert_eq!(v.garp_interval, defaults::GARP_INTERVAL);
    assert_eq!(v.garp_refresh, defaults::GARP_REFRESH);
    assert_eq!(v.virtual_ipaddress, [(ip("fd00::64"), 128)]);
}

#[test]
fn host_names_resolve_to_one_server_per_address() {
    let c = ok(&BASE.replace("127.0.0.1:9000", "localhost:9000"));
    let servers = &c.upstreams[0].servers;
    assert!(!servers.is_empty());
    for s in servers {
        assert_eq!(s.spec, "localhost:9000");
        assert!(s.addr.ip().is_loopback(), "{}", s.addr);
        assert_eq!(s.addr.port(), 9000);
    }
}

#[test]
fn upstream_indices_follow_first_appearance() {
    let c = ok(r#"
[[upstream.zeta.server]]
address = "127.0.0.1:1"
[[upstream.alpha.server]]
address = "127.0.0.1:2"
[[listener]]
listen = "127.0.0.1:80"
upstream = "alpha"
route = [{ host = "z", upstream = "zeta" }]
"#);
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    assert_eq!(c.listeners[0].upstream, Some(1));
    assert_eq!(c.listeners[0].routes[0].upstream, 0);
}

// ---- one test per kind of mistake -------------------------------------

#[test]
fn syntax_error() {
    one_error(
        &format!("{BASE}retries = = 3\n"),
        8,
        11,
        "TOML syntax error",
    );
}

#[test]
fn unknown_key_suggests_the_close_one() {
    one_error(
        &format!("{BASE}wieght = 2\n"),
        8,
        1,
        "unknown key `wieght` in [[upstream.app.server]] (did you mean `weight`?)",
    );
    one_error(
        &format!("{BASE}[[listeners]]\n"),
        8,
        3,
        "unknown key `listeners` in the top level (did you mean `listener`?)",
    );
}

#[test]
fn wrong_type() {
    one_error(
        &format!("{BASE}weight = \"2\"\n"),
        8,
        10,
        "`weight` must be an integer, found a string",
    );
    one_error(
        &format!("{BASE}backup = 1\n"),
        8,
        10,
        "`backup` must be true or false",
    );
}

#[test]
fn bad_durations() {
    one_error(
        &format!("{BASE}fail_timeout = \"5 seconds\"\n"),
        8,
        16,
        "invalid duration \"5 seconds\" for `fail_timeout`: unknown unit",
    );
    one_error(
        &format!("{BASE}fail_timeout = 5\n"),
        8,
        16,
        "`fail_timeout` must be a duration string with a unit",
    );
    one_error(
        &format!("{BASE}fail_timeout = \"0s\"\n"),
        8,
        16,
        "`fail_timeout` must be greater than 0",
    );
}

#[test]
fn bad_listen_address() {
    one_error(
        &BASE.replace("127.0.0.1:8080", "localhost:8080"),
        2,
        10,
        "invalid listen address \"localhost:8080\": expected IP:PORT",
    );
}

#[test]
fn bad_server_addresses() {
    one_error(
        &BASE.replace("127.0.0.1:9000", "no-such-host.invalid:80"),
        7,
        11,
        "cannot resolve server \"no-such-host.invalid\"",
    );
    one_error(
        &BASE.replace("127.0.0.1:9000", "127.0.0.1"),
        7,
        11,
        "the port is required",
    );
}

#[test]
fn listener_names_missing_upstream() {
    one_error(
        &BASE.replace(
            "upstream = \"app\"",
            "upstream = \"ap\"\nroute = [{ host = \"a\", upstream = \"app\" }]",
        ),
        3,
        12,
        "unknown upstream \"ap\" (did you mean \"app\"?)",
    );
}

#[test]
fn route_names_missing_upstream() {
    one_error(
        &format!("{BASE}[[listener.route]]\npath_prefix = \"/x\"\nupstream = \"backend\"\n"),
        10,
        12,
        "unknown upstream \"backend\"; defined upstreams: \"app\"",
    );
}

#[test]
fn unused_upstream() {
    one_error(
        &format!("{BASE}[[upstream.spare.server]]\naddress = \"127.0.0.1:9001\"\n"),
        8,
        12,
        "upstream \"spare\" is not used by any listener or route",
    );
}

#[test]
fn duplicate_listen_address() {
    one_error(
        &format!("{BASE}[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"app\"\n"),
        9,
        10,
        "duplicate listen address 127.0.0.1:8080 (already used on line 2)",
    );
}

/// `check` says no when `run` could not bind the admin socket: the same
/// address as a listener, or the wildcard on a listener's port.
#[test]
fn admin_on_a_listener_s_port() {
    for (admin, col) in [("127.0.0.1:8080", 10), ("0.0.0.0:8080", 10)] {
        one_error(
            &format!("{BASE}[admin]\nlisten = \"{admin}\"\n"),
            9,
            col,
            &format!("admin listen {admin} takes the port of the listener on 127.0.0.1:8080"),
        );
    }
    // Another port, or another family: fine.
    for admin in ["127.0.0.1:8081", "[::1]:8080"] {
        ok(&format!("{BASE}[admin]\nlisten = \"{admin}\"\n"));
    }
}

#[test]
fn duplicate_vrrp_names_and_vrids() {
    let inst = |name: &str, vrid: u8| {
        format!(
            "[[vrrp.instance]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\nvirtual_ipaddress = [\"198.18.0.100\"]\n"
        )
    };
    // Second instance starts on line 13.
    one_error(
        &format!("{BASE}{}{}", inst("VI_1", 1), inst("VI_1", 2)),
        14,
        8,
        "duplicate vrrp instance name \"VI_1\" (already used on line 9)",
    );
    one_error(
        &format!("{BASE}{}{}", inst("A", 9), inst("B", 9)),
        16,
        21,
        "virtual_router_id 9 is already used on interface \"eth0\" by instance \"A\"",
    );
    // Same VRID on another interface is fine.
    ok(&format!(
        "{BASE}{}{}",
        inst("A", 9),
        inst("B", 9).replace("eth0", "eth1")
    ));
}

#[test]
fn empty_server_list() {
    one_error(
        "[[listener]]\nlisten = \"127.0.0.1:80\"\nupstream = \"app\"\n[upstream.app]\nbalance = \"least_conn\"\n",
        4,
        1,
        "upstream \"app\" has no servers",
    );
}

#[test]
fn weight_zero() {
    one_error(
        &format!("{BASE}weight = 0\n"),
        8,
        10,
        "`weight` must be at least 1, found 0",
    );
}

#[test]
fn rise_and_fall_zero() {
    let errs = errors(&format!(
        "{BASE}[upstream.app.health_check]\nrise = 0\nfall = 0\n"
    ));
    let got: Vec<(usize, usize, &str)> = errs
        .iter()
        .map(|e| (e.line, e.col, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (9, 8, "`rise` must be at least 1, found 0"),
            (10, 8, "`fall` must be at least 1, found 0"),
        ]
    );
}

const VRRP: &str = "[[vrrp.instance]]\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"198.18.0.100/24\"]\n";

#[test]
fn accept_mode_false_is_refused_with_the_reason() {
    // BASE is 7 lines, VRRP 4: the key is on line 12, its value at column 15.
    one_error(
        &format!("{BASE}{VRRP}accept_mode = false\n"),
        12,
        15,
        "`accept_mode = false` is not supported: a ringlb master serves its virtual addresses itself",
    );
    // `true` is what a ringlb master does: accepted.
    ok(&format!("{BASE}{VRRP}accept_mode = true\n"));
    one_error(
        &format!("{BASE}{VRRP}accept_mode = \"no\"\n"),
        12,
        15,
        "must be true or false",
    );
}

#[test]
fn priority_out_of_range() {
    one_error(
        &format!("{BASE}{VRRP}priority = 0\n"),
        12,
        12,
        "`priority` must be between 1 and 255, found 0",
    );
    one_error(
        &format!("{BASE}{VRRP}priority = 256\n"),
        12,
        12,
        "between 1 and 255",
    );
    assert_eq!(
        ok(&format!("{BASE}{VRRP}priority = 255\n")).vrrp[0].priority,
        255
    );
}

#[test]
fn advert_interval_rules_per_version() {
    one_error(
        &format!("{BASE}{VRRP}version = 2\nadvert_interval = \"100ms\"\n"),
        13,
        19,
        "with version = 2, `advert_interval` must be a whole number of seconds from 1s to 255s",
    );
    one_error(
        &format!("{BASE}{VRRP}advert_interval = \"15ms\"\n"),
        12,
        19,
        "with version = 3, `advert_interval` must be a multiple of 10ms",
    );
    one_error(
        &format!("{BASE}{VRRP}advert_interval = \"41s\"\n"),
        12,
        19,
        "from 10ms to 40.95s",
    );
    let c = ok(&format!("{BASE}{VRRP}advert_interval = \"40.95s\"\n"));
    assert_eq!(c.vrrp[0].advert_interval, Duration::from_millis(40_950));
}

#[test]
fn auth_pass_rules() {
    one_error(
        &format!("{BASE}{VRRP}auth_pass = \"pw\"\n"),
        12,
        1,
        "`auth_pass` is only supported with version = 2",
    );
    one_error(
        &format!("{BASE}{VRRP}version = 2\nauth_pass = \"123456789\"\n"),
        13,
        13,
        "`auth_pass` must be 1 to 8 bytes",
    );
}

const VRRP6: &str = "[[vrrp.instance]]\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"2001:2::100/64\"]\n";

#[test]
fn ipv6_instance_rules() {
    let c = ok(&format!(
        "{BASE}{VRRP6}unicast_peers = [\"fe80::2\"]\nunicast_src = \"fe80::1\"\n"
    ));
    assert_eq!(c.vrrp[0].virtual_ipaddress, vec![(ip("2001:2::100"), 64)]);
    assert_eq!(c.vrrp[0].unicast_peers, vec![ip("fe80::2")]);
    one_error(
        &format!("{BASE}{VRRP6}version = 2\n"),
        11,
        21,
        "VRRP version 2 supports IPv4 only",
    );
    one_error(
        &format!("{BASE}{VRRP6}unicast_peers = [\"fe80::2\", \"198.18.0.2\"]\n"),
        12,
        29,
        "`unicast_peers` 198.18.0.2 is not IPv6",
    );
    one_error(
        &format!("{BASE}{VRRP}unicast_src = \"fe80::1\"\n"),
        12,
        15,
        "`unicast_src` fe80::1 is not IPv4",
    );
    one_error(
        &format!("{BASE}{VRRP}").replace(
            "\"198.18.0.100/24\"]",
            "\"198.18.0.100/24\", \"2001:2::1\"]",
        ),
        11,
        41,
        "cannot mix IPv4 and IPv6 virtual addresses",
    );
}

#[test]
fn hash_key_rules() {
    one_error(
        &format!("{BASE}[upstream.app.health_check]\n")
            .replace("[upstream.app]\n", "[upstream.app]\nhash_key = \"uri\"\n"),
        6,
        1,
        "`hash_key` only applies with balance = \"hash\"",
    );
    one_error(
        &BASE.replace(
            "[upstream.app]\n",
            "[upstream.app]\nbalance = \"hash\"\nhash_key = \"cookie\"\n",
        ),
        7,
        12,
        "invalid `hash_key` \"cookie\"",
    );
    one_error(
        &BASE.replace(
            "[upstream.app]\n",
            "[upstream.app]\nbalance = \"hash\"\nhash_key = \"header:\"\n",
        ),
        7,
        12,
        "`header:` must be followed by a header name",
    );
    let c = ok(&BASE.replace("[upstream.app]\n", "[upstream.app]\nbalance = \"hash\"\n"));
    assert_eq!(c.upstreams[0].hash_key, HashKey::ClientIp);
}

#[test]
fn unknown_balance() {
    one_error(
        &BASE.replace(
            "[upstream.app]\n",
            "[upstream.app]\nbalance = \"round-robin\"\n",
        ),
        6,
        11,
        "unknown `balance` value \"round-robin\" (did you mean \"round_robin\"?)",
    );
}

#[test]
fn no_listener() {
    one_error("[runtime]\nworkers = 1\n", 1, 1, "no listener defined");
}

#[test]
fn missing_required_keys() {
    one_error(
        &BASE.replace("listen = \"127.0.0.1:8080\"\n", ""),
        1,
        1,
        "missing required key `listen` in [[listener]]",
    );
    one_error(
        &BASE.replace("address = \"127.0.0.1:9000\"\n", "weight = 2\n"),
        6,
        1,
        "missing required key `address` in [[upstream.app.server]]",
    );
    let errs = errors(&format!("{BASE}[[vrrp.instance]]\nname = \"x\"\n"));
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "t.toml:8:1: missing required key `interface` in [[vrrp.instance]]",
            "t.toml:8:1: missing required key `virtual_router_id` in [[vrrp.instance]]",
            "t.toml:8:1: missing required key `virtual_ipaddress` in [[vrrp.instance]]",
        ]
    );
}

#[test]
fn route_needs_host_or_prefix_and_prefix_needs_slash() {
    one_error(
        &format!("{BASE}[[listener.route]]\nupstream = \"app\"\n"),
        8,
        1,
        "a route needs `host`, `path_prefix` or both",
    );
    one_error(
        &format!("{BASE}[[listener.route]]\npath_prefix = \"v1\"\nupstream = \"app\"\n"),
        9,
        15,
        "`path_prefix` must start with '/'",
    );
}

#[test]
fn workers_auto_or_positive() {
    one_error(
        &format!("{BASE}[runtime]\nworkers = \"all\"\n"),
        9,
        11,
        "`workers` must be \"auto\" or a positive integer, found \"all\"",
    );
    one_error(
        &format!("{BASE}[runtime]\nworkers = 0\n"),
        9,
        11,
        "`workers` must be at least 1, found 0",
    );
}

#[test]
fn bad_expect_status_and_vip() {
    one_error(
        &format!("{BASE}[upstream.app.health_check]\nexpect_status = \"399-200\"\n"),
        9,
        17,
        "invalid `expect_status` \"399-200\"",
    );
    one_error(
        &format!("{BASE}{VRRP}").replace("198.18.0.100/24", "198.18.0.100/40"),
        11,
        22,
        "invalid prefix length in \"198.18.0.100/40\"",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r#"[runtime]
workers = "many"
colour = "blue"

[[listener]]
listen = "0.0.0.0"
upstream = "nope"

[upstream.app]
balance = "fastest"
connect_timeout = "soon"

[[upstream.app.server]]
address = "127.0.0.1:80"
weight = 0

[[vrrp.instance]]
interface = "eth0"
virtual_router_id = 300
virtual_ipaddress = ["198.18.0.1"]
auth_pass = "x"
"#;
    let errs = errors(text);
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let want_positions = [
        (2, 11),  // workers
        (3, 1),   // unknown key colour
        (6, 10),  // listen without port
        (7, 12),  // unknown upstream
        (9, 11),  // app unused
        (10, 11), // balance
        (11, 19), // connect_timeout
        (15, 10), // weight 0
        (19, 21), // vrid 300
        (21, 1),  // auth_pass with v3
    ];
    let positions: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(positions, want_positions, "{got:#?}");
    assert!(got[0].starts_with("t.toml:2:11: `workers`"), "{got:#?}");
}

#[test]
fn single_table_where_an_array_of_tables_is_expected() {
    one_error(
        &BASE.replace("[[listener]]", "[listener]"),
        1,
        1,
        "`listener` must be an array of tables (`[[listener]]`), found a table",
    );
}

#[test]
fn problems_inside_inline_tables_and_arrays() {
    let errs = errors(&format!(
        "{BASE}{VRRP}track_upstream = [{{ upstream = \"app\", wieght = 1 }}, {{ upstream = \"web\" }}]\nunicast_peers = [\"198.18.0.2\", 5, \"x\"]\n"
    ));
    let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "t.toml:12:39: unknown key `wieght` in a track_upstream entry (did you mean `weight`?)",
            "t.toml:12:66: unknown upstream \"web\"; defined upstreams: \"app\"",
            "t.toml:13:32: `unicast_peers` must be a string, found an integer",
            "t.toml:13:35: invalid IP address \"x\"",
        ]
    );
}

#[test]
fn syntax_errors_read_as_one_line() {
    for (text, line, col) in [
        ("[[listener]]\nlisten = \"x\n", 2, 12),
        ("[upstream.app]\n[upstream.app]\n", 2, 1),
        ("a = 1\na = 2\n", 2, 1),
    ] {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].line, errs[0].col),
            (line, col),
            "{text:?}: {errs:?}"
        );
        assert!(errs[0].message.starts_with("TOML syntax error"));
        assert!(!errs[0].message.contains('\n'));
    }
}

#[test]
fn body_size_and_uri_limits_resolve_and_inherit() {
    let c = ok(BASE);
    assert_eq!(c.http.max_uri_bytes, defaults::MAX_URI_BYTES);
    assert_eq!(c.http.client_max_body_size, defaults::CLIENT_MAX_BODY_SIZE);
    assert_eq!(c.listeners[0].client_max_body_size, 1 << 20);
    let c = ok(r#"[http]
max_uri_bytes = 2048
client_max_body_size = "8k"

[[listener]]
listen = "127.0.0.1:8080"
upstream = "app"
[[listener.route]]
path_prefix = "/inherit"
upstream = "app"
[[listener.route]]
path_prefix = "/own"
upstream = "app"
client_max_body_size = 0

[[listener]]
listen = "127.0.0.1:8081"
upstream = "app"
client_max_body_size = 1048576
[[listener.route]]
path_prefix = "/up"
upstream = "app"
client_max_body_size = "2m"

[upstream.app]
[[upstream.app.server]]
address = "127.0.0.1:9000"
"#);
    assert_eq!(c.http.max_uri_bytes, 2048);
    assert_eq!(c.http.client_max_body_size, 8192);
    assert_eq!(c.listeners[0].client_max_body_size, 8192);
    assert_eq!(c.listeners[0].routes[0].client_max_body_size, 8192);
    assert_eq!(c.listeners[0].routes[1].client_max_body_size, 0);
    assert_eq!(c.listeners[1].client_max_body_size, 1 << 20);
    assert_eq!(c.listeners[1].routes[0].client_max_body_size, 2 << 20);
}

#[test]
fn bad_body_size_and_uri_limits() {
    one_error(
        &format!("{BASE}[http]\nclient_max_body_size = \"1mb\"\n"),
        9,
        24,
        "invalid size \"1mb\" for `client_max_body_size`",
    );
    one_error(
        &format!("{BASE}[http]\nclient_max_body_size = -1\n"),
        9,
        24,
        "`client_max_body_size` must be at least 0, found -1",
    );
    one_error(
        &format!("{BASE}[http]\nclient_max_body_size = true\n"),
        9,
        24,
        "`client_max_body_size` must be a string",
    );
    one_error(
        &format!("{BASE}[http]\nmax_uri_bytes = 0\n"),
        9,
        17,
        "`max_uri_bytes` must be",
    );
    one_error(
        &format!("{BASE}[http]\nmax_header_bytes = 4096\nmax_uri_bytes = 8192\n"),
        10,
        17,
        "`max_uri_bytes` (8192) must not exceed `max_header_bytes` (4096)",
    );
    one_error(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"app\"\nclient_max_body_size = \"lots\"\n\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n",
        4,
        24,
        "invalid size \"lots\"",
    );
    one_error(
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[listener.route]]\nhost = \"a.test\"\nupstream = \"app\"\nclient_max_body_size = \"1.5m\"\n\n[upstream.app]\n[[upstream.app.server]]\naddress = \"127.0.0.1:9000\"\n",
        6,
        24,
        "invalid size \"1.5m\"",
    );
}
