//! What an open-loop run means: summary, timeline and percentile curve.
//!
//! Pure functions over the samples a run recorded (no clock, no I/O), so the
//! definitions the lab reports — outage window, VIP move time, who served —
//! are written down once and table-tested:
//!
//! - **latency** is measured from the *intended* send time of a request (the
//!   fixed-rate schedule), not from when a busy client got round to sending
//!   it, so a stall shows up in the percentiles instead of hiding behind
//!   requests that were never sent (no coordinated omission);
//! - **outage window** = intended send time of the last failed request minus
//!   that of the first (0 when at most one request failed);
//! - **VIP move time** = from the fault (the first event) to the intended
//!   send time of the first request answered by another node than the one
//!   that served just before the fault;
//! - a **node** is the part of a backend's name before its first `-`
//!   (`lb1-a` and `lb1-b` are node `lb1`): in the lab every node runs its
//!   own backends and they answer with `X-Backend: NAME`.

use serde::{Deserialize, Serialize};

/// Why a request failed, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `connect()` got a RST: the address answers but nothing listens.
    Refused,
    /// No SYN-ACK within the timeout (e.g. the VIP's MAC is a dead node).
    ConnectTimeout,
    /// Host or network unreachable (ARP failed, no route).
    Unreachable,
    /// Connection reset after it was established.
    Reset,
    /// Connected, but no complete response within the timeout.
    Timeout,
    /// The peer closed before a complete response head.
    Closed,
    /// A 5xx status from the proxy.
    Http5xx,
    /// Any other non-2xx/3xx status, or a response that did not parse.
    BadResponse,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Refused,
        Kind::ConnectTimeout,
        Kind::Unreachable,
        Kind::Reset,
        Kind::Timeout,
        Kind::Closed,
        Kind::Http5xx,
        Kind::BadResponse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::Unreachable => "unreachable",
            Kind::Reset => "reset",
            Kind::Timeout => "timeout",
            Kind::Closed => "closed",
            Kind::Http5xx => "http_5xx",
            Kind::BadResponse => "bad_response",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One request's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx/3xx by the server with this index into `Run::servers`.
    Ok(u16),
    Failed(Kind),
}

/// One request, times in µs since the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub intended_us: u64,
    /// From the intended send time to the end of the exchange.
    pub latency_us: u64,
    pub outcome: Outcome,
}

/// Something done to the lab during the run (a crash, a reload…).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    /// When it actually started, µs since the start of the run.
    pub at_us: u64,
}

/// How late the generator itself started requests, µs after their
/// intended send time: the client's own share of the latency. A run whose
/// client was far behind measured the host, not the system under test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    pub p99_us: u64,
    pub max_us: u64,
}

impl Lateness {
    /// Of every request's start delay (sorted in place).
    pub fn of(late_us: &mut [u64]) -> Lateness {
        late_us.sort_unstable();
        Lateness {
            p99_us: quantile(late_us, 0.99),
            max_us: late_us.last().copied().unwrap_or(0),
        }
    }
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub rate: u32,
    pub duration_us: u64,
    pub servers: Vec<String>,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
    pub late: Lateness,
}

/// Width of a timeline bin.
pub const BIN_US: u64 = 10_000;

/// The node part of a backend name: `lb1-a` → `lb1`.
pub fn node_of(server: &str) -> &str {
    server.split('-').next().unwrap_or(server)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failures by kind (only kinds that occurred), in `Kind::ALL` order.
    pub failures: Vec<(Kind, u64)>,
    /// First failed to last failed request (intended send times), ms.
    pub outage_ms: f64,
    /// First failure relative to the first event, ms (None: no failure or no event).
    pub first_failure_after_fault_ms: Option<f64>,
    pub vip_move_ms: Option<f64>,
    /// Node serving just before the first event (or at the start).
    pub served_before: Option<String>,
    /// Node that first served after the first event, when it differs.
    pub served_after: Option<String>,
    /// Node serving at the end of the run.
    pub served_at_end: Option<String>,
    /// Answered requests per backend name, by name.
    pub by_server: Vec<(String, u64)>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// How late the generator started requests (p99, max), ms: see
    /// [`Lateness`]. (Absent in reports written before it existed.)
    #[serde(default)]
    pub client_late_p99_ms: f64,
    #[serde(default)]
    pub client_late_max_ms: f64,
}

/// `q`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn ok_node(run: &Run, s: &Sample) -> Option<String> {
    match s.outcome {
        Outcome::Ok(i) => run.servers.get(i as usize).map(|n| node_of(n).to_string()),
        Outcome::Failed(_) => None,
    }
}

/// Samples in intended-time order (workers finish out of order).
fn by_time(run: &Run) -> Vec<Sample> {
    let mut v = run.samples.clone();
    v.sort_by_key(|s| s.intended_us);
    v
}

fn per_server(run: &Run) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = run.servers.iter().map(|n| (n.clone(), 0)).collect();
    for s in &run.samples {
        if let Outcome::Ok(i) = s.outcome {
            if let Some(e) = v.get_mut(i as usize) {
                e.1 += 1;
            }
        }
    }
    v.sort();
    v
}

pub fn summarize(run: &Run) -> Summary {
    let samples = by_time(run);
    let fault = run.events.first().map(|e| e.at_us);
    let mut counts = [0u64; Kind::ALL.len()];
    let mut lat: Vec<u64> = Vec::with_capacity(samples.len());
    let (mut first_fail, mut last_fail) = (None::<u64>, None::<u64>);
    for s in &samples {
        match s.outcome {
            Outcome::Ok(_) => lat.push(s.latency_us),
            Outcome::Failed(k) => {
                counts[k.index()] += 1;
                first_fail.get_or_insert(s.intended_us);
                last_fail = Some(s.intended_us);
            }
        }
    }
    lat.sort_unstable();
    let failed: u64 = counts.iter().sum();
    let split = fault.unwrap_or(u64::MAX);
    let served_before = samples
        .iter()
        .rev()
        .filter(|s| s.intended_us < split)
        .find_map(|s| ok_node(run, s))
        .or_else(|| samples.iter().find_map(|s| ok_node(run, s)));
    let moved = fault.and_then(|f| {
        samples.iter().filter(|s| s.intended_us >= f).find_map(|s| {
            ok_node(run, s)
                .filter(|n| Some(n) != served_before.as_ref())
                .map(|n| (s.intended_us, n))
        })
    });
    Summary {
        requests: samples.len() as u64,
        ok: lat.len() as u64,
        failed,
        failures: Kind::ALL
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(k, c)| (*k, c))
            .collect(),
        outage_ms: match (first_fail, last_fail) {
            (Some(a), Some(b)) => ms(b - a),
            _ => 0.0,
        },
        first_failure_after_fault_ms: match (first_fail, fault) {
            (Some(a), Some(f)) => Some((a as f64 - f as f64) / 1000.0),
            _ => None,
        },
        vip_move_ms: moved.as_ref().map(|(t, _)| ms(t.saturating_sub(split))),
        served_before,
        served_after: moved.map(|(_, n)| n),
        served_at_end: samples.iter().rev().find_map(|s| ok_node(run, s)),
        by_server: per_server(run),
        p50_ms: ms(quantile(&lat, 0.5)),
        p99_ms: ms(quantile(&lat, 0.99)),
        p999_ms: ms(quantile(&lat, 0.999)),
        max_ms: ms(lat.last().copied().unwrap_or(0)),
        client_late_p99_ms: ms(run.late.p99_us),
        client_late_max_ms: ms(run.late.max_us),
    }
}

/// One 10 ms bin of the timeline: successes and failures by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Bin start, ms since the start of the run.
    pub t_ms: f64,
    pub ok: u32,
    /// Indexed like `Kind::ALL`.
    pub failed: [u32; 8],
}

impl Bin {
    pub fn failed_total(&self) -> u32 {
        self.failed.iter().sum()
    }
}

/// Per-10 ms successes and failures by kind, by intended send time.
pub fn timeline(run: &Run) -> Vec<Bin> {
    let n = run.duration_us.div_ceil(BIN_US).max(1) as usize;
    let mut bins: Vec<Bin> = (0..n)
        .map(|i| Bin {
            t_ms: ms(i as u64 * BIN_US),
            ..Bin::default()
        })
        .collect();
    for s in &run.samples {
        let i = ((s.intended_us / BIN_US) as usize).min(n - 1);
        match s.outcome {
            Outcome::Ok(_) => bins[i].ok += 1,
            Outcome::Failed(k) => bins[i].failed[k.index()] += 1,
        }
    }
    bins
}

/// The successful requests' latencies (µs), smallest first.
fn ok_latencies_sorted(run: &Run) -> Vec<u64> {
    let mut lat: Vec<u64> = run
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Ok(_)))
        .map(|s| s.latency_us)
        .collect();
    lat.sort_unstable();
    lat
}

/// Latency percentile curve of the successful requests: points
/// (percentile, ms) at 1 − 10^(−x) for x = 0, 0.1, … up to the resolution
/// the sample count allows, plus the maximum.
pub fn percentile_curve(run: &Run) -> Vec<(f64, f64)> {
    let lat = ok_latencies_sorted(run);
    if lat.is_empty() {
        return Vec::new();
    }
    let top = (lat.len() as f64).log10();
    let mut out = Vec::new();
    let mut x = 0.0;
    while x <= top {
        let q = 1.0 - 10f64.powf(-x);
        out.push((q * 100.0, ms(quantile(&lat, q.max(0.0)))));
        x += 0.1;
    }
    out.push((100.0, ms(*lat.last().unwrap_or(&0))));
    out
}

/// The result file a run writes and `ringlb plot` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub rate: u32,
    pub duration_ms: f64,
    pub events: Vec<Event>,
    pub summary: Summary,
    pub timeline: Vec<Bin>,
    pub percentiles: Vec<(f64, f64)>,
}

pub fn report(label: &str, run: &Run) -> Report {
    Report {
        label: label.to_string(),
        rate: run.rate,
        duration_ms: ms(run.duration_us),
        events: run.events.clone(),
        summary: summarize(run),
        timeline: timeline(run),
        percentiles: percentile_curve(run),
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} ms"))
}

/// Human summary (several lines).
pub fn render_summary(r: &Report) -> String {
    let s = &r.summary;
    let kinds = if s.failures.is_empty() {
        "none".to_string()
    } else {
        s.failures
            .iter()
            .map(|(k, c)| format!("{} {c}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "  requests      {} at {}/s over {:.1} s: {} ok, {} failed ({kinds})\n",
        s.requests,
        r.rate,
        r.duration_ms / 1000.0,
        s.ok,
        s.failed
    );
    for e in &r.events {
        out += &format!(
            "  event         {:>8.1} ms  {}\n",
            e.at_us as f64 / 1000.0,
            e.name
        );
    }
    out += &format!(
        "  outage        {:.1} ms (first to last failed request{})\n",
        s.outage_ms,
        s.first_failure_after_fault_ms
            .map_or(String::new(), |t| format!(
                "; first failure {t:+.1} ms from the fault"
            ))
    );
    out += &format!("  VIP move      {}\n", opt_ms(s.vip_move_ms));
    out += &format!(
        "  served by     {} before the fault, {} after, {} at the end\n",
        s.served_before.as_deref().unwrap_or("-"),
        s.served_after.as_deref().unwrap_or("(same node)"),
        s.served_at_end.as_deref().unwrap_or("-")
    );
    out += &format!(
        "  latency       p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms (from the intended send time)\n",
        s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
    );
    out += &format!(
        "  client        started requests p99 {:.2} ms, max {:.2} ms after their send time\n",
        s.client_late_p99_ms, s.client_late_max_ms
    );
    out
}

/// The machine-readable last line: `RESULT {json}`.
pub fn result_line(r: &Report, extra: &[(&str, serde_json::Value)]) -> String {
    let s = &r.summary;
    let mut m = serde_json::Map::new();
    m.insert("label".into(), r.label.clone().into());
    m.insert("requests".into(), s.requests.into());
    m.insert("ok".into(), s.ok.into());
    m.insert("failed".into(), s.failed.into());
    let mut f = serde_json::Map::new();
    for (k, c) in &s.failures {
        f.insert(k.name().into(), (*c).into());
    }
    m.insert("failures".into(), f.into());
    m.insert("outage_ms".into(), s.outage_ms.into());
    m.insert("vip_move_ms".into(), s.vip_move_ms.into());
    m.insert("served_before".into(), s.served_before.clone().into());
    m.insert("served_after".into(), s.served_after.clone().into());
    m.insert("served_at_end".into(), s.served_at_end.clone().into());
    let mut by = serde_json::Map::new();
    for (k, c) in &s.by_server {
        by.insert(k.clone(), (*c).into());
    }
    m.insert("by_server".into(), by.into());
    for (k, v) in [
        ("p50_ms", s.p50_ms),
        ("p99_ms", s.p99_ms),
        ("p999_ms", s.p999_ms),
        ("max_ms", s.max_ms),
        ("client_late_p99_ms", s.client_late_p99_ms),
        ("client_late_max_ms", s.client_late_max_ms),
    ] {
        m.insert(k.into(), v.into());
    }
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    format!("RESULT {}", serde_json::Value::Object(m))
}

/// A text histogram of the successful requests' latency (log-spaced
/// buckets from 0.1 ms, one `#` per 1/40 of the biggest bucket).
pub fn render_histogram(run: &Run) -> String {
    let lat = ok_latencies_sorted(run);
    if lat.is_empty() {
        return "  (no successful request)\n".into();
    }
    let bounds: Vec<u64> = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    ]
    .into_iter()
    .collect();
    let mut counts = vec![0u64; bounds.len() + 1];
    for l in &lat {
        let i = bounds.iter().position(|b| l <= b).unwrap_or(bounds.len());
        counts[i] += 1;
    }
    let last = counts.iter().rposition(|c| *c > 0).unwrap_or(0);
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut out = String::new();
    for (i, c) in counts.iter().enumerate().take(last + 1) {
        let label = match bounds.get(i) {
            Some(b) => format!("≤ {:>6.1} ms", ms(*b)),
            None => format!("> {:>6.1} ms", ms(bounds[bounds.len() - 1])),
        };
        let bar = "#".repeat(((*c * 40).div_ceil(peak)) as usize);
        out += &format!("  {label} {c:>7}  {bar}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: u64, lat: u64, server: u16) -> Sample {
        Sample {
            intended_us: t,
            latency_us: lat,
            outcome: Outcome::Ok(server),
        }
    }
    fn fail(t: u64, k: Kind) -> Sample {
        Sample {
            intended_us: t,
            latency_us: 100_000,
            outcome: Outcome::Failed(k),
        }
    }

    fn failover_run() -> Run {
        Run {
            rate: 1000,
            duration_us: 100_000,
            servers: vec!["lb1-a".into(), "lb2-a".into(), "lb1-b".into()],
            samples: vec![
                ok(0, 500, 0),
                ok(10_000, 700, 2),
                fail(22_000, Kind::ConnectTimeout),
                fail(30_000, Kind::ConnectTimeout),
                fail(51_000, Kind::Refused),
                ok(40_000, 900, 0), // a straggler served by the old node
                ok(60_000, 600, 1),
                ok(90_000, 800, 0),
            ],
            events: vec![Event {
                name: "crash lb1".into(),
                at_us: 20_000,
            }],
            late: Lateness {
                p99_us: 300,
                max_us: 2_500,
            },
        }
    }

    #[test]
    fn summary_definitions() {
        let s = summarize(&failover_run());
        assert_eq!((s.requests, s.ok, s.failed), (8, 5, 3));
        assert_eq!(
            s.failures,
            vec![(Kind::Refused, 1), (Kind::ConnectTimeout, 2)]
        );
        assert_eq!(s.outage_ms, 29.0);
        assert_eq!(s.first_failure_after_fault_ms, Some(2.0));
        // lb1 answered at 40 ms (same node), lb2 first at 60 ms.
        assert_eq!(s.vip_move_ms, Some(40.0));
        assert_eq!(s.served_before.as_deref(), Some("lb1"));
        assert_eq!(s.served_after.as_deref(), Some("lb2"));
        assert_eq!(s.served_at_end.as_deref(), Some("lb1"));
        assert_eq!(s.p50_ms, 0.7);
        assert_eq!(
            s.by_server,
            vec![
                ("lb1-a".into(), 3),
                ("lb1-b".into(), 1),
                ("lb2-a".into(), 1)
            ]
        );
        assert_eq!(s.max_ms, 0.9);
        assert_eq!((s.client_late_p99_ms, s.client_late_max_ms), (0.3, 2.5));
    }

    #[test]
    fn lateness_of_the_client() {
        let mut late: Vec<u64> = (0..1000).rev().collect();
        assert_eq!(
            Lateness::of(&mut late),
            Lateness {
                p99_us: 989,
                max_us: 999
            }
        );
        assert_eq!(Lateness::of(&mut []), Lateness::default());
    }

    #[test]
    fn no_failures_no_move() {
        let mut r = failover_run();
        r.samples.retain(|s| matches!(s.outcome, Outcome::Ok(0)));
        let s = summarize(&r);
        assert_eq!((s.failed, s.outage_ms), (0, 0.0));
        assert_eq!((s.vip_move_ms, s.served_after), (None, None));
        assert_eq!(s.first_failure_after_fault_ms, None);
    }

    #[test]
    fn one_failure_is_a_zero_window() {
        let mut r = failover_run();
        r.samples
            .retain(|s| s.intended_us != 30_000 && s.intended_us != 51_000);
        assert_eq!(summarize(&r).outage_ms, 0.0);
        assert_eq!(summarize(&r).failed, 1);
    }

    #[test]
    fn timeline_bins_by_intended_time() {
        let t = timeline(&failover_run());
        assert_eq!(t.len(), 10);
        assert_eq!((t[0].ok, t[1].ok, t[2].failed_total()), (1, 1, 1));
        assert_eq!(t[5].failed[Kind::Refused.index()], 1);
        assert_eq!(t[3].failed[Kind::ConnectTimeout.index()], 1);
        let total: u32 = t.iter().map(|b| b.ok + b.failed_total()).sum();
        assert_eq!(total, 8);
    }

    #[test]
    fn quantiles_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn percentile_curve_ends_at_max() {
        let c = percentile_curve(&failover_run());
        assert_eq!(c.first(), Some(&(0.0, 0.5)));
        assert_eq!(c.last(), Some(&(100.0, 0.9)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn node_names() {
        assert_eq!(node_of("lb1-a"), "lb1");
        assert_eq!(node_of("solo"), "solo");
    }

    #[test]
    fn result_line_is_one_json_line() {
        let r = report("crash ringlb", &failover_run());
        let line = result_line(&r, &[("scenario", "crash".into())]);
        assert!(!line.contains('\n'));
        let v: serde_json::Value =
            serde_json::from_str(line.strip_prefix("RESULT ").unwrap()).unwrap();
        assert_eq!(v["failed"], 3);
        assert_eq!(v["failures"]["connect_timeout"], 2);
        assert_eq!(v["vip_move_ms"], 40.0);
        assert_eq!(v["scenario"], "crash");
        assert_eq!(v["by_server"]["lb2-a"], 1);
    }
}
