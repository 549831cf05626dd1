//! `ringlb stats`: a terminal view of a running node's `/stats`.
//!
//! It speaks to the admin endpoint with a plain blocking `TcpStream` (one
//! request per connection, as the admin server closes after each answer), so
//! it works against any ringlb without extra dependencies. The output follows
//! `wrk --latency`: counters, then Avg/Stdev/Max/+/- Stdev, then the latency
//! distribution at p50 .. p99.99 and max. A one-shot run also prints
//! HdrHistogram's percentile-distribution table (milliseconds), the format the
//! HdrHistogram plotter reads. `--watch` prints one block per interval with
//! rates and percentiles *of that interval*, computed by subtracting the
//! previous poll's histogram buckets; `--reset` starts a fresh server-side
//! window first.
//!
//! `--reset` is a state-changing call: when the node has `[admin] token`
//! set, it must carry `Authorization: Bearer <token>`. The token comes from
//! `--token`, else the `RINGLB_ADMIN_TOKEN` environment variable, else the
//! `[admin] token` of the file given with `--config` (which also supplies
//! the admin address when `--admin` is not given). Read-only calls send it
//! too when known (harmless; `/stats` is open).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{percentile_distribution, LatencyHist, PERCENTILE_POINTS, STATUS_CLASSES};

/// Where `ringlb stats` looks when neither `--admin` nor `--config` says.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// The environment variable `ringlb stats` reads the admin token from.
pub const TOKEN_ENV: &str = "RINGLB_ADMIN_TOKEN";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin endpoint to talk to and the bearer token to present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub admin: SocketAddr,
    pub token: Option<String>,
}

/// What the command line and environment gave, before choosing.
#[derive(Debug, Clone, Default)]
pub struct TargetArgs {
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--token`.
    pub token: Option<String>,
    /// `RINGLB_ADMIN_TOKEN` (empty counts as unset).
    pub env_token: Option<String>,
    /// `[admin]` of the `--config` file: (listen, token).
    pub config_admin: Option<(SocketAddr, Option<String>)>,
}

/// The choice: address from `--admin`, else the config's `[admin] listen`,
/// else [`DEFAULT_ADMIN`]; token from `--token`, else the environment, else
/// the config's `[admin] token`.
pub fn choose_target(a: TargetArgs) -> Target {
    let (cfg_listen, cfg_token) = match a.config_admin {
        Some((l, t)) => (Some(l), t),
        None => (None, None),
    };
    let admin = a
        .admin
        .or(cfg_listen)
        .unwrap_or_else(|| DEFAULT_ADMIN.parse().expect("valid default"));
    let env_token = a.env_token.filter(|t| !t.is_empty());
    Target {
        admin,
        token: a.token.or(env_token).or(cfg_token),
    }
}

/// `[admin]` of a config file, for `ringlb stats --config`.
pub fn config_admin(path: &std::path::Path) -> Result<(SocketAddr, Option<String>), String> {
    let cfg = crate::config::load(path).map_err(|e| format!("{e}"))?;
    let admin = cfg.admin.ok_or_else(|| {
        format!(
            "{}: no [admin] section (no admin endpoint to ask)",
            path.display()
        )
    })?;
    Ok((admin.listen, admin.token))
}

/// The [`Target`] for the command line: reads `--config` and the environment.
pub fn target_from_cli(
    admin: Option<SocketAddr>,
    config: Option<&std::path::Path>,
    token: Option<String>,
) -> Result<Target, String> {
    let config_admin = config.map(config_admin).transpose()?;
    Ok(choose_target(TargetArgs {
        admin,
        token,
        env_token: std::env::var(TOKEN_ENV).ok(),
        config_admin,
    }))
}

/// Run `ringlb stats` against `target`, printing to stdout. With `watch`,
/// runs until interrupted.
pub fn run(target: &Target, watch: Option<Duration>, reset: bool) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_target(&mut out, target, watch, reset, None)
}

/// [`run`] with an explicit sink, no token and an optional bound on watch ticks.
pub fn run_to(
    out: &mut dyn Write,
    admin: SocketAddr,
    watch: Option<Duration>,
    reset: bool,
    max_ticks: Option<u64>,
) -> Result<(), String> {
    let target = Target { admin, token: None };
    run_target(out, &target, watch, reset, max_ticks)
}

/// [`run_to`] with a token.
pub fn run_target(
    out: &mut dyn Write,
    target: &Target,
    watch: Option<Duration>,
    reset: bool,
    max_ticks: Option<u64>,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing output: {e}");
    let admin = target.admin;
    let token = target.token.as_deref();
    if reset {
        let (status, body) = request(admin, "POST", "/reset", token)?;
        if status == 401 {
            let hint = if token.is_some() {
                "the token was refused"
            } else {
                "the node requires a token: pass --token, set RINGLB_ADMIN_TOKEN or --config FILE"
            };
            return Err(format!("{admin}: /reset answered 401 ({hint})"));
        }
        if status != 200 {
            return Err(format!(
                "{admin}: /reset answered {status}: {}",
                body.trim()
            ));
        }
        if watch.is_none() {
            writeln!(out, "stats window reset on {admin}").map_err(io)?;
            return Ok(());
        }
    }
    let Some(interval) = watch else {
        let cur = fetch_stats(admin)?;
        out.write_all(render_summary(admin, &cur, None).as_bytes())
            .map_err(io)?;
        out.write_all(render_distribution(&cur).as_bytes())
            .map_err(io)?;
        return Ok(());
    };
    let mut prev: Option<Value> = None;
    let mut ticks = 0u64;
    loop {
        let cur = fetch_stats(admin)?;
        out.write_all(render_summary(admin, &cur, prev.as_ref()).as_bytes())
            .map_err(io)?;
        out.flush().map_err(io)?;
        prev = Some(cur);
        ticks += 1;
        if max_ticks.is_some_and(|m| ticks >= m) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

/// `--watch`: a duration as in the config file (`"1s"`, `"500ms"`, `"1m30s"`;
/// a unit is required), and more than zero.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("interval {s:?} must be more than zero"));
    }
    Ok(d)
}

/// One HTTP/1.1 request to the admin endpoint; returns (status, body).
pub fn http_request(admin: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    request(admin, method, path, None)
}

/// [`http_request`] with an optional bearer token.
pub fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let err = |e: std::io::Error| format!("admin {admin}: {e}");
    let mut s = TcpStream::connect_timeout(&admin, IO_TIMEOUT).map_err(err)?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(err)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(err)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(err)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("admin {admin}: truncated response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("admin {admin}: bad status line"))?;
    Ok((status, body.to_string()))
}

fn fetch_stats(admin: SocketAddr) -> Result<Value, String> {
    let (status, body) = http_request(admin, "GET", "/stats?buckets=1")?;
    if status != 200 {
        return Err(format!("{admin}: /stats answered {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{admin}: /stats is not JSON: {e}"))
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .or_else(|| cur.as_i64().map(|i| i.max(0) as u64))
        .unwrap_or(0)
}

fn float(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(0.0)
}

/// Rebuild a histogram from a `/stats?buckets=1` histogram object.
pub fn hist_from_json(h: &Value) -> LatencyHist {
    let buckets = h["buckets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    LatencyHist::from_buckets(buckets, num(h, &["sum_us"]))
}

/// wrk-style duration: `812.00us`, `1.23ms`, `2.50s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.2}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b:.0}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}MB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}GB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

fn stat_line(out: &mut String, label: &str, h: &LatencyHist) {
    let p = h.percentiles();
    let _ = writeln!(
        out,
        "    {:<10} {:>10} {:>10} {:>10} {:>9.2}%",
        label,
        fmt_us(p.mean),
        fmt_us(p.stdev),
        fmt_us(p.max as f64),
        h.within_stdev() * 100.0
    );
}

fn distribution_lines(out: &mut String, h: &LatencyHist) {
    let p = h.percentiles();
    for ((name, _), v) in PERCENTILE_POINTS.iter().zip(p.points.iter()) {
        let _ = writeln!(out, "    {:>7}% {:>10}", name, fmt_us(*v as f64));
    }
    let _ = writeln!(out, "    {:>7}  {:>10}", "max", fmt_us(p.max as f64));
}

/// The wrk-like block. With `prev` (the previous poll), rates and the
/// latency distribution are for the interval between the two polls.
pub fn render_summary(admin: SocketAddr, cur: &Value, prev: Option<&Value>) -> String {
    let mut o = String::new();
    let window = float(cur, "window_secs");
    // A window shorter than before means someone reset: no usable interval.
    let prev = prev.filter(|p| float(p, "window_secs") <= window);
    let _ = writeln!(
        o,
        "ringlb {} @ {admin}: generation {}, {} shards, window {:.2}s (uptime {:.2}s)",
        cur["version"].as_str().unwrap_or("?"),
        num(cur, &["generation"]),
        num(cur, &["shards"]),
        window,
        float(cur, "uptime_secs"),
    );
    let c = &cur["connections"];
    let _ = writeln!(
        o,
        "  Connections: {} active ({} reading, {} writing, {} waiting); {} accepted, {} handled",
        num(c, &["active"]),
        num(c, &["reading"]),
        num(c, &["writing"]),
        num(c, &["waiting"]),
        num(c, &["accepted"]),
        num(c, &["handled"]),
    );
    let t = &cur["totals"];
    let requests = num(c, &["requests"]);
    let mut lat = hist_from_json(&t["latency"]);
    let mut up = hist_from_json(&t["upstream_latency"]);
    let (span, reqs) = match prev {
        Some(p) => {
            let span = window - float(p, "window_secs");
            lat = lat.minus(&hist_from_json(&p["totals"]["latency"]));
            up = up.minus(&hist_from_json(&p["totals"]["upstream_latency"]));
            (
                span,
                requests.saturating_sub(num(p, &["connections", "requests"])),
            )
        }
        None => (window, requests),
    };
    let rate = if span > 0.0 { reqs as f64 / span } else { 0.0 };
    let mut status = String::new();
    for class in STATUS_CLASSES {
        let _ = write!(status, " {class} {}", num(t, &["status", class]));
    }
    let _ = writeln!(
        o,
        "  Requests: {requests} total; {reqs} in {span:.2}s = {rate:.2}/s;{status}"
    );
    let _ = writeln!(
        o,
        "  Transfer: in {}, out {}",
        fmt_bytes(num(t, &["bytes_in"])),
        fmt_bytes(num(t, &["bytes_out"]))
    );
    let scope = if prev.is_some() { "interval" } else { "window" };
    let _ = writeln!(
        o,
        "  Latency ({scope})  {:>10} {:>10} {:>10} {:>10}",
        "Avg", "Stdev", "Max", "+/- Stdev"
    );
    stat_line(&mut o, "total", &lat);
    stat_line(&mut o, "upstream", &up);
    let _ = writeln!(
        o,
        "  Latency Distribution ({scope}, total, {} samples)",
        lat.count()
    );
    distribution_lines(&mut o, &lat);

    if let Some(ls) = cur["listeners"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(o, "  Listeners:");
        for l in ls {
            let p = &l["latency"]["percentiles_us"];
            let _ = writeln!(
                o,
                "    {:<22} requests {:>10}  5xx {:>8}  p50 {:>9}  p99 {:>9}  max {:>9}",
                l["listen"].as_str().unwrap_or("?"),
                num(l, &["requests"]),
                num(l, &["status", "5xx"]),
                fmt_us(num(p, &["50"]) as f64),
                fmt_us(num(p, &["99"]) as f64),
                fmt_us(num(l, &["latency", "max_us"]) as f64),
            );
        }
    }
    if let Some(ss) = cur["servers"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(
            o,
            "  Servers:                          health  requests   fail c/r/t/m  retries      p50      p99  connect p99"
        );
        for s in ss {
            let p = &s["latency"]["percentiles_us"];
            let f = &s["failures"];
            let name = format!(
                "{} {}",
                s["upstream"].as_str().unwrap_or("?"),
                s["address"].as_str().unwrap_or("?")
            );
            let _ = writeln!(
                o,
                "    {:<30} {:>6} {:>9} {:>14} {:>8} {:>8} {:>8} {:>12}",
                name,
                s["health"].as_str().unwrap_or("-"),
                num(s, &["requests"]),
                format!(
                    "{}/{}/{}/{}",
                    num(f, &["connect"]),
                    num(f, &["reset"]),
                    num(f, &["timeout"]),
                    num(f, &["malformed"])
                ),
                num(s, &["retries"]),
                fmt_us(num(p, &["50"]) as f64),
                fmt_us(num(p, &["99"]) as f64),
                fmt_us(num(&s["connect_time"]["percentiles_us"], &["99"]) as f64),
            );
        }
    }
    let vrrp = &cur["vrrp"];
    if let Some(is) = vrrp["instances"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(o, "  VRRP:");
        for i in is {
            let tr: u64 = i["transitions"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "    {:<12} {:<7} prio {:>3}  transitions {:>4}  adverts tx {} rx {}  gap p99 {} max {}",
                i["name"].as_str().unwrap_or("?"),
                i["role"].as_str().unwrap_or("?"),
                num(i, &["priority"]),
                tr,
                num(i, &["adverts_sent"]),
                num(i, &["adverts_received"]),
                fmt_us(num(&i["advert_gap"]["percentiles_us"], &["99"]) as f64),
                fmt_us(num(&i["advert_gap"], &["max_us"]) as f64),
            );
        }
    }
    if let Some(d) = vrrp["dropped"].as_object().filter(|m| !m.is_empty()) {
        let list: Vec<String> = d
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_u64().unwrap_or(0)))
            .collect();
        let _ = writeln!(o, "  VRRP dropped: {}", list.join(" "));
    }
    o.push('\n');
    o
}

/// HdrHistogram percentile distribution of the total latency, in ms.
pub fn render_distribution(cur: &Value) -> String {
    let h = hist_from_json(&cur["totals"]["latency"]);
    let mut o = String::from("  Detailed Percentile spectrum (total latency, ms):\n");
    o.push_str(&percentile_distribution(&h, 5, 1000.0));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_precedence() {
        let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let cfg = Some((a2, Some("cfg".to_string())));
        let s = |v: &str| Some(v.to_string());
        // (args, expected address, expected token)
        let cases: Vec<(TargetArgs, SocketAddr, Option<String>)> = vec![
            (TargetArgs::default(), DEFAULT_ADMIN.parse().unwrap(), None),
            (
                TargetArgs {
                    config_admin: cfg.clone(),
                    ..Default::default()
                },
                a2,
                s("cfg"),
            ),
            (
                TargetArgs {
                    admin: Some(a1),
                    config_admin: cfg.clone(),
                    ..Default::default()
                },
                a1,
                s("cfg"),
            ),
            (
                TargetArgs {
                    env_token: s("env"),
                    config_admin: cfg.clone(),
                    ..Default::default()
                },
                a2,
                s("env"),
            ),
            (
                TargetArgs {
                    env_token: s(""),
                    config_admin: cfg.clone(),
                    ..Default::default()
                },
                a2,
                s("cfg"),
            ),
            (
                TargetArgs {
                    token: s("flag"),
                    env_token: s("env"),
                    config_admin: cfg.clone(),
                    ..Default::default()
                },
                a2,
                s("flag"),
            ),
            (
                TargetArgs {
                    config_admin: Some((a2, None)),
                    ..Default::default()
                },
                a2,
                None,
            ),
        ];
        for (args, admin, token) in cases {
            let t = choose_target(args.clone());
            assert_eq!(t, Target { admin, token }, "{args:?}");
        }
    }

    #[test]
    fn watch_intervals_use_the_config_duration_rules() {
        assert_eq!(parse_interval("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_interval("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_interval("3h").unwrap(), Duration::from_secs(3 * 3600));
        assert!(parse_interval("0s").unwrap_err().contains("more than zero"));
        assert!(parse_interval("2").unwrap_err().contains("missing unit"));
        assert!(parse_interval("fast")
            .unwrap_err()
            .contains("expected a number"));
    }

    #[test]
    fn wrk_style_units() {
        assert_eq!(fmt_us(812.0), "812.00us");
        assert_eq!(fmt_us(1234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
    }
}
