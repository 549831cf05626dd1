//! Unit tests: exact counts, merge, percentiles, reset, reloads, exposition.

use super::*;
use crate::proto::vrrp::State;

fn layout(listeners: &[&str], servers: &[(&str, &str)]) -> Arc<Layout> {
    Arc::new(Layout {
        listeners: listeners.iter().map(|s| s.to_string()).collect(),
        servers: servers
            .iter()
            .map(|(u, s)| (u.to_string(), s.to_string()))
            .collect(),
    })
}

fn lay1() -> Arc<Layout> {
    layout(
        &["0.0.0.0:80"],
        &[("app", "10.0.0.1:80"), ("app", "10.0.0.2:80")],
    )
}

/// Deterministic spread of latencies (µs), no RNG crate needed.
fn lat(i: u64) -> u64 {
    100 + (i.wrapping_mul(2_654_435_761) % 20_000)
}

fn key(u: &str, s: &str) -> (String, String) {
    (u.to_string(), s.to_string())
}

#[test]
fn status_classes() {
    assert_eq!(status_class(100), 0);
    assert_eq!(status_class(204), 1);
    assert_eq!(status_class(302), 2);
    assert_eq!(status_class(404), 3);
    assert_eq!(status_class(599), 4);
    assert_eq!(status_class(0), 5);
    assert_eq!(status_class(600), 5);
    assert_eq!(STATUS_CLASSES[status_class(503)], "5xx");
}

#[test]
fn counts_are_exact_across_shards() {
    let reg = Registry::new(2);
    let mut r0 = reg.recorder(0, lay1(), 1);
    let mut r1 = reg.recorder(1, lay1(), 1);
    for i in 0..700u64 {
        r0.on_request_done(0, Some(0), 200, lat(i), Some(lat(i) / 2), 100, 1000);
    }
    for i in 0..300u64 {
        let status = if i % 10 == 0 { 502 } else { 200 };
        r1.on_request_done(0, Some(1), status, lat(i), Some(50), 10, 20);
    }
    r1.on_request_done(0, None, 400, 5, None, 7, 9);
    r0.on_connect_time(0, 300);
    r0.on_upstream_failure(1, FailureKind::Reset);
    r0.on_upstream_failure(1, FailureKind::Timeout);
    r1.on_upstream_failure(1, FailureKind::Reset);
    r1.on_retry(1);
    assert!(r0.publish() && r1.publish());

    let m = reg.snapshot();
    assert_eq!(m.shards, 2);
    assert_eq!(m.shard_generations, vec![1, 1]);
    assert_eq!(m.conn.requests, 1001);
    let l = &m.listeners["0.0.0.0:80"];
    assert_eq!(l.requests, 1001);
    assert_eq!(l.status, [0, 970, 0, 1, 30, 0]);
    assert_eq!(l.bytes_in, 700 * 100 + 300 * 10 + 7);
    assert_eq!(l.bytes_out, 700 * 1000 + 300 * 20 + 9);
    assert_eq!(l.latency.count(), 1001);
    assert_eq!(l.upstream_latency.count(), 1000);
    let exact_sum: u64 = (0..700).map(lat).sum::<u64>() + (0..300).map(lat).sum::<u64>() + 5;
    assert_eq!(l.latency.sum_us(), exact_sum);

    let a = &m.servers[&key("app", "10.0.0.1:80")];
    let b = &m.servers[&key("app", "10.0.0.2:80")];
    assert_eq!((a.requests, b.requests), (700, 300));
    assert_eq!(b.status[4], 30);
    assert_eq!(a.connects, 1);
    assert_eq!(a.connect_time.count(), 1);
    assert_eq!(b.failures, [0, 2, 1, 0, 0, 0]);
    assert_eq!(b.retries, 1);
    assert!(a.in_layout && b.in_layout);
}

#[test]
fn histograms_lag_until_publish_but_counters_are_live() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 1);
    for i in 0..10 {
        r.on_request_done(0, Some(0), 200, lat(i), None, 1, 1);
    }
    let before = reg.snapshot();
    assert_eq!(before.conn.requests, 10);
    assert_eq!(before.listeners["0.0.0.0:80"].requests, 10);
    assert_eq!(before.listeners["0.0.0.0:80"].latency.count(), 0);
    assert!(r.has_pending());
    assert!(r.publish());
    assert!(!r.has_pending());
    assert_eq!(reg.snapshot().listeners["0.0.0.0:80"].latency.count(), 10);
}

#[test]
fn publish_never_blocks_on_a_busy_slot() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 1);
    r.on_request_done(0, Some(0), 200, 1000, None, 1, 1);
    {
        let _held = reg.slots[0].hold_lock();
        assert!(!r.publish(), "publish must give up, not wait");
        assert!(r.has_pending());
    }
    assert!(r.publish());
    assert_eq!(reg.snapshot().listeners["0.0.0.0:80"].latency.count(), 1);
}

#[test]
fn percentiles_are_monotone_and_accurate() {
    let mut h = LatencyHist::new();
    for v in 1..=100_000u64 {
        h.record(v);
    }
    let p = h.percentiles();
    assert_eq!(p.count, 100_000);
    let mut last = p.min;
    for v in p.points {
        assert!(v >= last, "{:?}", p);
        last = v;
    }
    assert!(p.max >= last);
    // 3 significant digits: within 0.1%.
    let within = |got: u64, want: f64| ((got as f64 - want).abs() / want) < 0.001;
    assert!(within(p.points[0], 50_000.0), "{}", p.points[0]);
    assert!(within(p.points[3], 99_000.0), "{}", p.points[3]);
    assert!(within(p.points[4], 99_900.0), "{}", p.points[4]);
    assert!(within(p.max, 100_000.0), "{}", p.max);
    assert_eq!(h.sum_us(), 100_000 * 100_001 / 2);
}

#[test]
fn merged_histogram_equals_single_recording() {
    let reg = Registry::new(3);
    let mut recs: Vec<_> = (0..3).map(|s| reg.recorder(s, lay1(), 1)).collect();
    let mut single = LatencyHist::new();
    for i in 0..3000u64 {
        recs[(i % 3) as usize].on_request_done(0, Some(0), 200, lat(i), None, 0, 0);
        single.record(lat(i));
    }
    for r in &mut recs {
        r.publish_blocking();
    }
    let m = reg.snapshot();
    let merged = &m.listeners["0.0.0.0:80"].latency;
    assert_eq!(merged.percentiles(), single.percentiles());
    assert_eq!(merged.buckets(), single.buckets());
}

#[test]
fn values_beyond_range_are_clamped_not_lost() {
    let mut h = LatencyHist::new();
    h.record(0);
    h.record(HIGHEST_US * 10);
    assert_eq!(h.count(), 2);
    assert!(h.max() >= HIGHEST_US && h.max() <= HIGHEST_US + HIGHEST_US / 500);
}

#[test]
fn reload_keeps_per_server_totals_by_label() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 1);
    r.on_request_done(0, Some(0), 200, 100, None, 1, 1); // .1
    r.on_request_done(0, Some(1), 200, 100, None, 1, 1); // .2
    r.on_request_done(0, Some(1), 200, 100, None, 1, 1); // .2
                                                         // New config: .1 removed, .2 moves to index 0, .3 added.
    let l2 = layout(
        &["0.0.0.0:80"],
        &[("app", "10.0.0.2:80"), ("app", "10.0.0.3:80")],
    );
    r.set_layout(l2.clone(), 2);
    r.on_request_done(0, Some(0), 200, 100, None, 1, 1); // .2
    r.on_request_done(0, Some(1), 200, 100, None, 1, 1); // .3
    r.publish_blocking();
    let m = reg.snapshot();
    assert_eq!(m.shard_generations, vec![2]);
    let s1 = &m.servers[&key("app", "10.0.0.1:80")];
    let s2 = &m.servers[&key("app", "10.0.0.2:80")];
    let s3 = &m.servers[&key("app", "10.0.0.3:80")];
    assert_eq!((s1.requests, s2.requests, s3.requests), (1, 3, 1));
    assert_eq!(
        (s1.latency.count(), s2.latency.count(), s3.latency.count()),
        (1, 3, 1)
    );
    assert!(!s1.in_layout && s2.in_layout && s3.in_layout);
    assert_eq!(m.listeners["0.0.0.0:80"].requests, 5);
    assert_eq!(m.listeners["0.0.0.0:80"].latency.count(), 5);

    // Same layout, new generation: counters continue, nothing retired twice.
    r.set_layout(l2, 3);
    r.on_request_done(0, Some(0), 200, 100, None, 1, 1);
    r.publish_blocking();
    let m = reg.snapshot();
    assert_eq!(m.shard_generations, vec![3]);
    assert_eq!(m.servers[&key("app", "10.0.0.2:80")].requests, 4);
    assert_eq!(m.conn.requests, 6);
}

#[test]
fn reattached_recorder_continues_counters() {
    let reg = Registry::new(1);
    {
        let mut r = reg.recorder(0, lay1(), 1);
        r.on_request_done(0, Some(0), 200, 100, None, 1, 1);
        // Drop publishes.
    }
    let mut r = reg.recorder(0, lay1(), 1);
    r.on_request_done(0, Some(0), 200, 100, None, 1, 1);
    r.publish_blocking();
    let m = reg.snapshot();
    assert_eq!(m.servers[&key("app", "10.0.0.1:80")].requests, 2);
    assert_eq!(m.servers[&key("app", "10.0.0.1:80")].latency.count(), 2);
}

#[test]
#[should_panic(expected = "already has a live recorder")]
fn one_writer_per_slot() {
    let reg = Registry::new(1);
    let _a = reg.recorder(0, lay1(), 1);
    let _b = reg.recorder(0, lay1(), 1);
}

#[test]
fn connection_gauges_follow_stub_status() {
    let reg = Registry::new(2);
    let mut r0 = reg.recorder(0, lay1(), 1);
    let mut r1 = reg.recorder(1, lay1(), 1);
    for r in [&mut r0, &mut r1] {
        r.on_accept();
        r.on_handled();
        r.on_accept();
        r.on_handled();
    }
    r0.on_accept(); // accepted, then dropped by a limit: not handled
    r0.conn_transition(ConnState::Reading, ConnState::Writing);
    r0.conn_transition(ConnState::Writing, ConnState::Waiting);
    r1.conn_transition(ConnState::Reading, ConnState::Writing);
    r1.on_close(ConnState::Reading);
    let c = reg.snapshot().conn;
    assert_eq!((c.accepted, c.handled), (5, 4));
    assert_eq!(c.active, 3);
    assert_eq!((c.reading, c.writing, c.waiting), (1, 1, 1));
    assert_eq!(c.active, c.reading + c.writing + c.waiting);
}

#[test]
fn reset_starts_a_fresh_window_without_touching_shards() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 1);
    r.on_accept();
    r.on_handled();
    for i in 0..10 {
        r.on_request_done(0, Some(0), 200, 1000 + i, Some(10), 1, 1);
    }
    r.publish_blocking();
    reg.control().vrrp_drop("bad_checksum");
    reg.control()
        .vrrp_advert_received("VI_1", Some(Duration::from_millis(10)));
    reg.reset();
    for _ in 0..5 {
        r.on_request_done(0, Some(0), 500, 50_000, Some(40_000), 1, 1);
    }
    r.publish_blocking();
    reg.control().vrrp_drop("bad_checksum");
    let m = reg.snapshot();
    let l = &m.listeners["0.0.0.0:80"];
    assert_eq!(m.conn.requests, 5);
    assert_eq!(m.conn.accepted, 0);
    assert_eq!(m.conn.active, 1, "gauges are not reset");
    assert_eq!(l.requests, 5);
    assert_eq!(l.status[1], 0);
    assert_eq!(l.status[4], 5);
    assert_eq!(l.latency.count(), 5);
    assert_eq!(l.latency.sum_us(), 250_000);
    // Only the new, slow samples remain: min reflects the window.
    assert!(l.latency.percentiles().min >= 49_900);
    assert_eq!(m.control.vrrp_drops["bad_checksum"], 1);
    assert_eq!(m.control.vrrp["VI_1"].advert_gap.count(), 0);
    assert_eq!(m.control.vrrp["VI_1"].adverts_received, 0);
    let raw = reg.snapshot_raw();
    assert_eq!(raw.conn.requests, 15);
    assert_eq!(raw.listeners["0.0.0.0:80"].latency.count(), 15);
}

#[test]
fn control_stats_count_transitions() {
    let reg = Registry::new(0);
    let c = reg.control();
    c.set_generation(7);
    c.set_server_health("app", "10.0.0.1:80", true);
    c.health_transition("app", "10.0.0.1:80", false);
    c.health_transition("app", "10.0.0.1:80", true);
    c.health_transition("app", "10.0.0.1:80", false);
    c.set_vrrp("VI_1", State::Backup, 100);
    c.vrrp_transition("VI_1", State::Master);
    c.set_vrrp_priority("VI_1", 50);
    c.vrrp_advert_sent("VI_1");
    c.vrrp_drop("ttl");
    c.vrrp_drop("ttl");
    c.vrrp_drop("auth");
    let s = c.snapshot();
    assert_eq!(s.generation, 7);
    let h = s.health[&key("app", "10.0.0.1:80")];
    assert_eq!((h.up, h.to_up, h.to_down), (false, 1, 2));
    let v = &s.vrrp["VI_1"];
    assert_eq!((v.role, v.priority, v.adverts_sent), (State::Master, 50, 1));
    assert_eq!(v.transitions, [0, 0, 1, 0]);
    assert_eq!(s.vrrp_drops["ttl"], 2);
    assert_eq!(s.vrrp_drops["auth"], 1);
}

/// Parse `name{labels} value` lines into (name+labels, value).
fn prom_samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse::<f64>().expect("numeric value"))
        })
        .collect()
}

#[test]
fn prometheus_histogram_buckets() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 1);
    for us in [50, 150, 2_000, 2_000, 70_000_000] {
        r.on_request_done(0, Some(0), 200, us, None, 0, 0);
    }
    r.publish_blocking();
    let text = reg.snapshot_raw().to_prometheus();
    let samples = prom_samples(&text);
    let get = |k: &str| {
        samples
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("missing {k}\n{text}"))
            .1
    };
    let h = "ringlb_listener_request_duration_seconds";
    let l = "listener=\"0.0.0.0:80\"";
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"0.0001\"}}")), 1.0);
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"0.00025\"}}")), 2.0);
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"0.001\"}}")), 2.0);
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"0.0025\"}}")), 4.0);
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"30\"}}")), 4.0);
    assert_eq!(get(&format!("{h}_bucket{{{l},le=\"+Inf\"}}")), 5.0);
    assert_eq!(get(&format!("{h}_count{{{l}}}")), 5.0);
    // 70 s is clamped to 60 s; the sum is exact over what was recorded.
    let sum = get(&format!("{h}_sum{{{l}}}"));
    assert!(
        (sum - (50.0 + 150.0 + 4000.0 + 60e6) / 1e6).abs() < 1e-9,
        "{sum}"
    );
    assert_eq!(get("ringlb_requests_total"), 5.0);
    assert_eq!(
        get("ringlb_server_requests_total{upstream=\"app\",server=\"10.0.0.1:80\"}"),
        5.0
    );
    // Every bucket series is cumulative.
    let mut last: Option<(String, f64)> = None;
    for (k, v) in samples.iter().filter(|(k, _)| k.contains("_bucket{")) {
        let series = k.split(",le=").next().unwrap().to_string();
        if let Some((ls, lv)) = &last {
            if *ls == series {
                assert!(v >= lv, "{k} decreased");
            }
        }
        last = Some((series, *v));
    }
}

#[test]
fn prometheus_label_values_are_escaped() {
    let reg = Registry::new(0);
    reg.control().vrrp_drop("we\"ird\\re\nason");
    let text = reg.snapshot_raw().to_prometheus();
    assert!(
        text.contains(r#"ringlb_vrrp_dropped_packets_total{reason="we\"ird\\re\nason"} 1"#),
        "{text}"
    );
}

#[test]
fn json_has_exact_counts_and_percentiles() {
    let reg = Registry::new(1);
    let mut r = reg.recorder(0, lay1(), 4);
    reg.control().set_generation(4);
    reg.control().set_server_health("app", "10.0.0.1:80", true);
    reg.control().set_vrrp("VI_1", State::Master, 150);
    for i in 0..123 {
        r.on_request_done(0, Some(0), 200, lat(i), Some(10), 1, 2);
    }
    r.publish_blocking();
    let v = reg.snapshot().to_json_value(JsonOptions { buckets: true });
    assert_eq!(v["generation"], 4);
    assert_eq!(v["connections"]["requests"], 123);
    assert_eq!(v["totals"]["requests"], 123);
    assert_eq!(v["totals"]["status"]["2xx"], 123);
    assert_eq!(v["totals"]["latency"]["count"], 123);
    assert_eq!(v["listeners"][0]["listen"], "0.0.0.0:80");
    assert_eq!(v["servers"][0]["address"], "10.0.0.1:80");
    assert_eq!(v["servers"][0]["health"], "up");
    assert_eq!(v["servers"][0]["requests"], 123);
    assert_eq!(v["servers"][1]["health"], Value::Null);
    assert_eq!(v["vrrp"]["instances"][0]["role"], "MASTER");
    assert_eq!(v["vrrp"]["instances"][0]["priority"], 150);
    let buckets = v["totals"]["latency"]["buckets"].as_array().unwrap();
    let n: u64 = buckets.iter().map(|b| b[1].as_u64().unwrap()).sum();
    assert_eq!(n, 123);
    let p = &v["totals"]["latency"]["percentiles_us"];
    let vals: Vec<u64> = ["50", "75", "90", "99", "99.9", "99.99"]
        .iter()
        .map(|k| p[*k].as_u64().unwrap())
        .collect();
    assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{vals:?}");
    assert!(vals[5] <= v["totals"]["latency"]["max_us"].as_u64().unwrap());
    // Round trip through the bucket form used by `ringlb stats`.
    let rebuilt = crate::cli::stats::hist_from_json(&v["totals"]["latency"]);
    assert_eq!(
        rebuilt.percentiles(),
        reg.snapshot().totals().latency.percentiles()
    );
}

use serde_json::Value;

#[test]
fn percentile_distribution_text() {
    let mut h = LatencyHist::new();
    for v in 1..=1000u64 {
        h.record(v * 10);
    }
    let text = percentile_distribution(&h, 5, 1000.0);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.contains("Value") && header.contains("1/(1-Percentile)"));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("Value") && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.len() > 10);
    let mut last_q = -1.0f64;
    let mut last_v = -1.0f64;
    for r in &rows {
        let v: f64 = r[0].parse().unwrap();
        let q: f64 = r[1].parse().unwrap();
        assert!(v >= last_v && q >= last_q);
        last_v = v;
        last_q = q;
    }
    let final_row = rows.last().unwrap();
    assert_eq!(final_row[1].parse::<f64>().unwrap(), 1.0);
    assert_eq!(final_row[2], "1000");
    assert!(
        text.contains("#[Max     =       10.007, Total count    =         1000]"),
        "{text}"
    );
}
