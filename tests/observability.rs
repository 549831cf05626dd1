//! Observability end to end: the real binary, real clients, and the admin
//! endpoint read back. Every request the test sends is accounted for, so the
//! counters are asserted to be *exactly* what was sent — per status class,
//! per listener, per server (cross-checked against the backends' own request
//! counts) — on two shards, so the merge across shards is exercised too.
//! Histograms are published by the shards every few ms and may lag the live
//! counters, so their counts are polled (bounded) rather than read once.
//! `/metrics` is parsed by the reference Prometheus parser (Python's
//! `prometheus_client`), not by a hand-written one.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

const PYTHON: &str = "/usr/bin/python3";

/// Keep-alive connections × GETs per connection to the live upstream.
const KA_CONNS: usize = 4;
const KA_GETS: usize = 10;
/// Requests that match no route (404) and that go to a dead server (502).
const N404: usize = 3;
const N502: usize = 3;
const N: usize = KA_CONNS * KA_GETS + N404 + N502;

/// A backend answering 200 `ok` and counting the requests it served.
fn counting_backend() -> (Backend, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&served);
    let be = backend(move |mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            c.fetch_add(1, Ordering::SeqCst);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    (be, served)
}

struct Setup {
    rl: Ringlb,
    admin: SocketAddr,
    backends: Vec<(Backend, Arc<AtomicUsize>)>,
    dead: SocketAddr,
}

/// Two shards; routes `/app` → two live servers, `/dead` → one server whose
/// port nobody listens on (`max_fails = 0` so it is tried every time; the
/// default `retries = 1` has no other server to go to); anything else has
/// no route → 404.
fn start() -> Setup {
    let backends = vec![counting_backend(), counting_backend()];
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = format!(
        "[runtime]\nworkers = 2\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\n\
         [[listener.route]]\npath_prefix = \"/app\"\nupstream = \"app\"\n\
         [[listener.route]]\npath_prefix = \"/dead\"\nupstream = \"dead\"\n\n\
         [upstream.app]\nbalance = \"round_robin\"\n"
    );
    for (be, _) in &backends {
        cfg.push_str(&format!(
            "[[upstream.app.server]]\naddress = \"{}\"\n",
            be.addr
        ));
    }
    cfg.push_str(&format!(
        "\n[upstream.dead]\n[[upstream.dead.server]]\naddress = \"{dead}\"\nmax_fails = 0\n"
    ));
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, admin);
    Setup {
        rl,
        admin,
        backends,
        dead,
    }
}

fn stats(admin: SocketAddr, query: &str) -> Value {
    let (status, body) = admin_get(admin, &format!("/stats{query}"));
    assert_eq!(status, 200, "/stats answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {body}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned number, got {v}"))
}

/// Polls `/stats{query}` until the total latency histogram holds `n`
/// samples (histograms lag the counters by a publish interval or two).
fn stats_settled(admin: SocketAddr, query: &str, n: u64) -> Value {
    let start = Instant::now();
    loop {
        let s = stats(admin, query);
        if u(&s["totals"]["latency"]["count"]) == n || start.elapsed() > Duration::from_secs(2) {
            return s;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends exactly `N` requests: keep-alive GETs to `/app`, then 404s and 502s
/// each on their own `Connection: close` connection. Asserts every answer.
fn send_traffic(addr: SocketAddr) {
    for c in 0..KA_CONNS {
        let mut s = connect(addr);
        let mut buf = Vec::new();
        for i in 0..KA_GETS {
            s.write_all(format!("GET /app/{c}/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            let r = read_response(&mut s, &mut buf, false).expect("keep-alive response");
            assert_eq!(status_of(&r), 200, "{r}");
        }
    }
    for i in 0..N404 {
        let r = roundtrip_close(
            addr,
            format!("GET /nowhere/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&r), 404, "{r}");
    }
    for i in 0..N502 {
        let r = roundtrip_close(
            addr,
            format!("GET /dead/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&r), 502, "{r}");
    }
}

fn assert_percentiles_monotone(what: &str, h: &Value) {
    let p = &h["percentiles_us"];
    let mut seq = vec![("min", u(&h["min_us"]))];
    for k in ["50", "75", "90", "99", "99.9", "99.99"] {
        seq.push((k, u(&p[k])));
    }
    seq.push(("max", u(&h["max_us"])));
    for w in seq.windows(2) {
        assert!(
            w[0].1 <= w[1].1,
            "{what}: percentiles not monotone: {} = {} > {} = {} in {h}",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
    assert!(u(&h["max_us"]) > 0, "{what}: max is 0 in {h}");
}

fn server<'a>(s: &'a Value, upstream: &str, address: SocketAddr) -> &'a Value {
    let addr = address.to_string();
    s["servers"]
        .as_array()
        .expect("servers array")
        .iter()
        .find(|x| x["upstream"] == upstream && x["address"] == addr.as_str())
        .unwrap_or_else(|| panic!("no server {upstream} {addr} in {}", s["servers"]))
}

/// Parses Prometheus text with `prometheus_client`; returns every sample as
/// `[name, {labels}, value]`. Fails (never skips) if the parser is missing.
fn parse_prometheus(text: &str) -> Vec<(String, Value, f64)> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    sys.stderr.write("IMPORT: %s\n" % e)
    sys.exit(3)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {PYTHON} ({e}): /metrics must be checked with Python's \
                 prometheus_client; install python3 and python3-prometheus-client \
                 (tests/run.sh does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "Python's prometheus_client is not installed ({}): install \
         python3-prometheus-client (tests/run.sh does); this check is not skipped",
        stderr.trim()
    );
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {stderr}\n--- /metrics ---\n{text}"
    );
    let v: Vec<(String, Value, f64)> =
        serde_json::from_slice(&out.stdout).expect("parser output is JSON");
    v
}

fn sample_sum(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
        .collect();
    assert!(
        !hits.is_empty(),
        "no sample {name} {labels:?} in /metrics ({} samples)",
        samples.len()
    );
    hits.iter().sum()
}

#[test]
fn stats_and_metrics_count_exactly_what_was_sent() {
    let st = start();
    send_traffic(st.rl.addr);
    let n = N as u64;
    let ka = (KA_CONNS * KA_GETS) as u64;

    let s = stats_settled(st.admin, "", n);
    let t = &s["totals"];
    assert_eq!(u(&s["shards"]), 2, "{s}");
    assert_eq!(u(&s["connections"]["requests"]), n, "{s}");
    assert_eq!(u(&t["requests"]), n, "{t}");
    let status = &t["status"];
    assert_eq!(u(&status["2xx"]), ka, "{status}");
    assert_eq!(u(&status["4xx"]), N404 as u64, "{status}");
    assert_eq!(u(&status["5xx"]), N502 as u64, "{status}");
    for class in ["1xx", "3xx"] {
        assert_eq!(u(&status[class]), 0, "{class}: {status}");
    }
    assert_eq!(
        u(&t["latency"]["count"]),
        n,
        "latency histogram did not reach {n} samples within 2 s: {}",
        t["latency"]
    );
    assert_percentiles_monotone("totals.latency", &t["latency"]);

    // The one listener carries everything.
    let listeners = s["listeners"].as_array().expect("listeners");
    let l = listeners
        .iter()
        .find(|l| l["listen"] == st.rl.addr.to_string().as_str())
        .unwrap_or_else(|| panic!("listener {} missing: {listeners:?}", st.rl.addr));
    assert_eq!(u(&l["requests"]), n, "{l}");
    assert_eq!(u(&l["latency"]["count"]), n, "{l}");
    let lsum: u64 = listeners.iter().map(|l| u(&l["requests"])).sum();
    assert_eq!(lsum, n, "requests on other listeners: {listeners:?}");

    // Per server: exactly what each backend itself served.
    let mut app_total = 0;
    for (be, served) in &st.backends {
        let sv = server(&s, "app", be.addr);
        let got = served.load(Ordering::SeqCst) as u64;
        assert!(got > 0, "round robin never used {}", be.addr);
        assert_eq!(u(&sv["requests"]), got, "{sv}");
        assert_eq!(u(&sv["status"]["2xx"]), got, "{sv}");
        assert_eq!(u(&sv["latency"]["count"]), got, "{sv}");
        assert_percentiles_monotone("server latency", &sv["latency"]);
        app_total += got;
    }
    assert_eq!(app_total, ka, "backends served {app_total}, sent {ka}");
    let d = server(&s, "dead", st.dead);
    assert_eq!(u(&d["requests"]), N502 as u64, "{d}");
    assert_eq!(u(&d["status"]["5xx"]), N502 as u64, "{d}");
    assert_eq!(u(&d["failures"]["connect"]), N502 as u64, "{d}");
    assert_eq!(
        u(&d["retries"]),
        0,
        "no other server, so no retry happened: {d}"
    );

    // /metrics: valid for the reference parser, and the same numbers.
    let (code, text) = admin_get(st.admin, "/metrics");
    assert_eq!(code, 200, "{text}");
    let samples = parse_prometheus(&text);
    let nf = n as f64;
    assert_eq!(sample_sum(&samples, "ringlb_requests_total", &[]), nf);
    assert_eq!(
        sample_sum(&samples, "ringlb_listener_requests_total", &[]),
        nf
    );
    assert_eq!(
        sample_sum(
            &samples,
            "ringlb_server_requests_total",
            &[("upstream", "app")]
        ),
        ka as f64
    );
    assert_eq!(
        sample_sum(
            &samples,
            "ringlb_server_requests_total",
            &[("upstream", "dead")]
        ),
        N502 as f64
    );
    // The request-duration histogram's _count equals the requests too.
    assert_eq!(
        sample_sum(
            &samples,
            "ringlb_listener_request_duration_seconds_count",
            &[]
        ),
        nf
    );

    // /healthz
    let (code, body) = admin_get(st.admin, "/healthz");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn stats_cli_prints_percentiles_and_reset_opens_a_new_window() {
    let st = start();
    send_traffic(st.rl.addr);
    let n = N as u64;
    let s = stats_settled(st.admin, "", n);
    assert_eq!(u(&s["totals"]["latency"]["count"]), n, "{}", s["totals"]);

    let admin = st.admin.to_string();
    let out = Command::new(BIN)
        .args(["stats", "--admin", &admin])
        .output()
        .expect("run ringlb stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ringlb stats failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("Requests: {n} total;")),
        "request count missing:\n{text}"
    );
    for p in ["50%", "99%"] {
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with(p) && l[p.len()..].trim().ends_with('s')
            }),
            "no {p} latency line:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "Latency Distribution (window, total, {n} samples)"
        )),
        "{text}"
    );

    let out = Command::new(BIN)
        .args(["stats", "--reset", "--admin", &admin])
        .output()
        .expect("run ringlb stats --reset");
    assert!(
        out.status.success(),
        "ringlb stats --reset failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reset"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let w = stats(st.admin, "");
    assert_eq!(u(&w["connections"]["requests"]), 0, "{w}");
    assert_eq!(u(&w["totals"]["requests"]), 0, "{}", w["totals"]);
    assert_eq!(
        u(&w["totals"]["latency"]["count"]),
        0,
        "{}",
        w["totals"]["latency"]
    );
    for sv in w["servers"].as_array().expect("servers") {
        assert_eq!(u(&sv["requests"]), 0, "{sv}");
    }
    // Since-boot views are untouched by a reset.
    let raw = stats(st.admin, "?raw=1");
    assert_eq!(u(&raw["totals"]["requests"]), n, "{}", raw["totals"]);
    let (_, text) = admin_get(st.admin, "/metrics");
    assert_eq!(
        sample_sum(&parse_prometheus(&text), "ringlb_requests_total", &[]),
        n as f64
    );

    // The new window counts only what comes after the reset.
    let mut s = connect(st.rl.addr);
    let mut buf = Vec::new();
    for i in 0..2 {
        s.write_all(format!("GET /app/after/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut s, &mut buf, false).expect("response");
        assert_eq!(status_of(&r), 200, "{r}");
    }
    let w = stats_settled(st.admin, "", 2);
    assert_eq!(u(&w["totals"]["requests"]), 2, "{}", w["totals"]);
    assert_eq!(u(&w["totals"]["status"]["2xx"]), 2, "{}", w["totals"]);
    assert_eq!(
        u(&w["totals"]["latency"]["count"]),
        2,
        "{}",
        w["totals"]["latency"]
    );
}

/// The `health` column of `/stats` for servers with active checks is their
/// checked state: `"up"` for one that passes (before the fix: `null`, as
/// it never changed state), `"down"` for one that fails; `ringlb_server_up`
/// agrees. A server of an upstream without active checks, never taken out
/// by passive failures, keeps `null` (nothing checked it).
#[test]
fn stats_health_reports_the_checked_state_of_every_checked_server() {
    let (good, checks) = counting_backend();
    let bad = backend(|mut s| {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).is_some() {
            let r = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
            if s.write_all(r).is_err() {
                return;
            }
        }
    });
    let (plain, _) = counting_backend();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "[runtime]\nworkers = 1\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[listener]]\nlisten = \"127.0.0.1:{{port}}\"\n\
         [[listener.route]]\npath_prefix = \"/plain\"\nupstream = \"plain\"\n\
         [[listener.route]]\npath_prefix = \"/\"\nupstream = \"checked\"\n\n\
         [upstream.checked]\n\
         [[upstream.checked.server]]\naddress = \"{}\"\n\
         [[upstream.checked.server]]\naddress = \"{}\"\n\
         [upstream.checked.health_check]\nkind = \"http\"\npath = \"/health\"\n\
         interval = \"50ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n\n\
         [upstream.plain]\n[[upstream.plain.server]]\naddress = \"{}\"\n",
        good.addr, bad.addr, plain.addr
    );
    let rl = Ringlb::start(&cfg);
    wait_admin(&rl, admin);
    // Bounded wait for the failing check to take `bad` out, and for `good`
    // to have been checked.
    let start = Instant::now();
    let mut s = stats(admin, "");
    while (server(&s, "checked", bad.addr)["health"] != "down" || checks.load(Ordering::SeqCst) < 2)
        && start.elapsed() < Duration::from_secs(10)
    {
        thread::sleep(Duration::from_millis(50));
        s = stats(admin, "");
    }
    assert!(checks.load(Ordering::SeqCst) >= 2, "good was never checked");
    let g = server(&s, "checked", good.addr);
    let b = server(&s, "checked", bad.addr);
    let p = server(&s, "plain", plain.addr);
    assert_eq!(g["health"], "up", "a passing server: {g}");
    assert_eq!(b["health"], "down", "a failing server: {b}");
    assert_eq!(b["health_transitions"]["down"], 1, "{b}");
    assert_eq!(g["health_transitions"]["down"], 0, "{g}");
    assert_eq!(p["health"], Value::Null, "no active checks: {p}");
    let up = |addr: SocketAddr| {
        metric(
            admin,
            &format!("ringlb_server_up{{upstream=\"checked\",server=\"{addr}\"}}"),
        )
    };
    assert_eq!(up(good.addr), 1);
    assert_eq!(up(bad.addr), 0);
    // The passing server serves, the failing one gets nothing.
    let r = roundtrip_close(
        rl.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
}
