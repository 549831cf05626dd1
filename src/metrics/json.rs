//! JSON rendering of a [`MergedStats`] for `GET /stats` and `ringlb stats`.
//!
//! A `serde_json::Value` is built by hand rather than deriving `Serialize`
//! on the stats types: histograms need a summary (and optionally raw
//! buckets), labels become fields of list entries, and the shape is a
//! user-facing contract that should not drift when an internal field is
//! renamed. All durations are integer microseconds (`*_us`).

use serde_json::{json, Map, Value};

use super::hist::{LatencyHist, PERCENTILE_POINTS};
use super::merged::{ListenerStats, MergedStats};
use super::{FailureKind, STATUS_CLASSES};

/// Rendering options for [`MergedStats::to_json_value`].
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// Include every histogram's non-empty buckets as `[[value_us, count], ...]`
    /// (what `ringlb stats` uses for interval percentiles and the distribution).
    pub buckets: bool,
}

fn hist_json(h: &LatencyHist, opts: JsonOptions) -> Value {
    let p = h.percentiles();
    let mut pct = Map::new();
    for ((name, _), v) in PERCENTILE_POINTS.iter().zip(p.points.iter()) {
        pct.insert((*name).to_string(), json!(v));
    }
    let mut o = json!({
        "count": p.count,
        "sum_us": h.sum_us(),
        "min_us": p.min,
        "mean_us": p.mean,
        "stdev_us": p.stdev,
        "max_us": p.max,
        "percentiles_us": pct,
    });
    if opts.buckets {
        o["buckets"] = json!(h.buckets());
    }
    o
}

fn status_json(s: &[u64; 6]) -> Value {
    let mut m = Map::new();
    for (i, c) in STATUS_CLASSES.iter().enumerate() {
        m.insert((*c).to_string(), json!(s[i]));
    }
    Value::Object(m)
}

fn listener_json(s: &ListenerStats, opts: JsonOptions) -> Map<String, Value> {
    let v = json!({
        "requests": s.requests,
        "status": status_json(&s.status),
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "latency": hist_json(&s.latency, opts),
        "upstream_latency": hist_json(&s.upstream_latency, opts),
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("json! object"),
    }
}

impl MergedStats {
    pub fn to_json_value(&self, opts: JsonOptions) -> Value {
        let c = &self.conn;
        let ctl = &self.control;

        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|(name, s)| {
                let mut m = Map::new();
                m.insert("listen".into(), json!(name));
                m.insert("in_config".into(), json!(s.in_layout));
                m.extend(listener_json(s, opts));
                Value::Object(m)
            })
            .collect();

        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|(k, s)| {
                let health = ctl.health.get(k);
                let mut failures = Map::new();
                for kind in FailureKind::ALL {
                    failures.insert(kind.as_str().into(), json!(s.failures[kind.index()]));
                }
                json!({
                    "upstream": k.0,
                    "address": k.1,
                    "in_config": s.in_layout,
                    "health": health.map(|h| if h.up { "up" } else { "down" }),
                    "health_transitions": health.map(|h| json!({"up": h.to_up, "down": h.to_down})),
                    "requests": s.requests,
                    "status": status_json(&s.status),
                    "failures": failures,
                    "retries": s.retries,
                    "connects": s.connects,
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "latency": hist_json(&s.latency, opts),
                    "upstream_latency": hist_json(&s.upstream_latency, opts),
                    "connect_time": hist_json(&s.connect_time, opts),
                })
            })
            .collect();

        // Servers known to the health checker but with no traffic yet.
        let health_only: Vec<Value> = ctl
            .health
            .iter()
            .filter(|(k, _)| !self.servers.contains_key(*k))
            .map(|((u, a), h)| {
                json!({
                    "upstream": u, "address": a,
                    "health": if h.up { "up" } else { "down" },
                    "health_transitions": {"up": h.to_up, "down": h.to_down},
                })
            })
            .collect();

        let instances: Vec<Value> = ctl
            .vrrp
            .iter()
            .map(|(name, v)| {
                let mut tr = Map::new();
                for role in crate::proto::vrrp::State::ALL {
                    tr.insert(role.as_str().into(), json!(v.transitions[role as usize]));
                }
                json!({
                    "name": name,
                    "role": v.role.as_str(),
                    "priority": v.priority,
                    "transitions": tr,
                    "adverts_sent": v.adverts_sent,
                    "adverts_received": v.adverts_received,
                    "advert_gap": hist_json(&v.advert_gap, opts),
                })
            })
            .collect();

        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "generation": ctl.generation,
            "draining": ctl.draining,
            "shards": self.shards,
            "shard_generations": self.shard_generations,
            "uptime_secs": self.uptime.as_secs_f64(),
            "window_secs": self.window.as_secs_f64(),
            "publish_interval_ms": super::PUBLISH_INTERVAL.as_millis() as u64,
            "connections": {
                "accepted": c.accepted,
                "handled": c.handled,
                "active": c.active.max(0),
                "reading": c.reading.max(0),
                "writing": c.writing.max(0),
                "waiting": c.waiting.max(0),
                "requests": c.requests,
                "buffers_in_use": c.buffers_in_use,
                "buffers_pooled": c.buffers_pooled,
                "parked": c.parked,
            },
            "tls": {
                "handshakes": self.tls.handshakes,
                "resumed": self.tls.resumed,
                "handshake_us_total": self.tls.handshake_us,
                "handshake_time": hist_json(&self.tls_handshake_time, opts),
                "upstream": {
                    "handshakes": self.tls.upstream_handshakes,
                    "resumed": self.tls.upstream_resumed,
                    "failures": self.tls.upstream_failures,
                    "timeouts": self.tls.upstream_timeouts,
                },
                "failures": Value::Object(
                    crate::tls::Failure::ALL
                        .iter()
                        .zip(self.tls.failures)
                        .map(|(f, n)| (f.label().to_string(), json!(n)))
                        .collect()
                ),
            },
            "proxy_protocol": {
                "headers": self.proxy_protocol.headers,
                "errors": Value::Object(
                    crate::proto::proxy_protocol::Error::ALL
                        .iter()
                        .zip(self.proxy_protocol.errors)
                        .map(|(e, n)| (e.label().to_string(), json!(n)))
                        .collect()
                ),
            },
            "totals": Value::Object(listener_json(&self.totals(), opts)),
            "listeners": listeners,
            "servers": servers,
            "unused_servers": health_only,
            "vrrp": {
                "instances": instances,
                "dropped": ctl.vrrp_drops,
            },
        })
    }

    /// Compact JSON with default options.
    pub fn to_json(&self) -> String {
        self.to_json_value(JsonOptions::default()).to_string()
    }
}
