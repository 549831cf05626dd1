//! Prometheus text exposition (format 0.0.4) of a [`MergedStats`].
//!
//! Histograms become native `_bucket`/`_sum`/`_count` families in seconds.
//! HdrHistogram keeps far finer buckets than Prometheus should scrape, so we
//! fold them into a fixed ladder ([`PROM_BUCKETS_SECONDS`], 100 µs .. 60 s)
//! that covers a fast LAN proxy up to the read timeout. A sample counts into
//! `le` when its HdrHistogram bucket starts at or below the bound (0.1%
//! resolution). `_sum` is exact (kept alongside the histogram).

use std::fmt::Write as _;

use super::hist::LatencyHist;
use super::merged::MergedStats;
use super::{FailureKind, STATUS_CLASSES};
use crate::proto::vrrp::State;

/// Upper bounds of the exported histogram buckets, in seconds (+Inf implied).
pub const PROM_BUCKETS_SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn labels(out: &mut String, ls: &[(&str, &str)]) {
    if ls.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in ls.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}=\"{}\"", k, escape(v));
    }
    out.push('}');
}

struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, ls: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        labels(&mut self.out, ls);
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(&mut self, name: &str, ls: &[(&str, &str)], h: &LatencyHist) {
        let mut cum = [0u64; PROM_BUCKETS_SECONDS.len()];
        let hist = h.histogram();
        for v in hist.iter_recorded() {
            let lo_us = hist.lowest_equivalent(v.value_iterated_to());
            let c = v.count_at_value();
            // First bound that contains this bucket; counts above 60 s only in +Inf.
            if let Some(i) = PROM_BUCKETS_SECONDS
                .iter()
                .position(|b| (lo_us as f64) <= b * 1e6)
            {
                cum[i] += c;
            }
        }
        let mut running = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, b) in PROM_BUCKETS_SECONDS.iter().enumerate() {
            running += cum[i];
            let le = format!("{b}");
            let mut l = ls.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, running);
        }
        let mut l = ls.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count());
        self.sample(&format!("{name}_sum"), ls, h.sum_us() as f64 / 1e6);
        self.sample(&format!("{name}_count"), ls, h.count());
    }
}

impl MergedStats {
    /// Prometheus text format. Pass a since-boot snapshot
    /// ([`super::Registry::snapshot_raw`]): counters must not go backwards.
    pub fn to_prometheus(&self) -> String {
        let mut p = Prom {
            out: String::with_capacity(16 * 1024),
        };
        let c = &self.conn;

        p.family("ringlb_up", "gauge", "1 while the process serves metrics.");
        p.sample("ringlb_up", &[], 1);
        p.family("ringlb_shards", "gauge", "Number of data-plane shards.");
        p.sample("ringlb_shards", &[], self.shards);
        p.family(
            "ringlb_config_generation",
            "gauge",
            "Generation of the config published by the control thread.",
        );
        p.sample("ringlb_config_generation", &[], self.control.generation);
        p.family(
            "ringlb_uptime_seconds",
            "gauge",
            "Seconds since the metrics registry was created.",
        );
        p.sample("ringlb_uptime_seconds", &[], self.uptime.as_secs_f64());

        p.family(
            "ringlb_connections_accepted_total",
            "counter",
            "Client connections accepted.",
        );
        p.sample("ringlb_connections_accepted_total", &[], c.accepted);
        p.family(
            "ringlb_connections_handled_total",
            "counter",
            "Client connections handled (accepted and not dropped by limits).",
        );
        p.sample("ringlb_connections_handled_total", &[], c.handled);
        p.family(
            "ringlb_tls_handshakes_total",
            "counter",
            "TLS handshakes completed on TLS listeners.",
        );
        p.sample("ringlb_tls_handshakes_total", &[], self.tls.handshakes);
        p.family(
            "ringlb_tls_resumptions_total",
            "counter",
            "TLS handshakes that resumed a session (ticket or session ID).",
        );
        p.sample("ringlb_tls_resumptions_total", &[], self.tls.resumed);
        p.family(
            "ringlb_tls_handshake_seconds_total",
            "counter",
            "Summed time of completed TLS handshakes (divide by ringlb_tls_handshakes_total for the mean).",
        );
        p.sample(
            "ringlb_tls_handshake_seconds_total",
            &[],
            self.tls.handshake_us as f64 / 1e6,
        );
        for (name, help, v) in [
            (
                "ringlb_upstream_tls_handshakes_total",
                "TLS handshakes with upstream servers completed.",
                self.tls.upstream_handshakes,
            ),
            (
                "ringlb_upstream_tls_resumptions_total",
                "Upstream TLS handshakes that resumed a session.",
                self.tls.upstream_resumed,
            ),
            (
                "ringlb_upstream_tls_handshake_failures_total",
                "TLS handshakes with upstream servers that failed (certificate, name, protocol, timeout).",
                self.tls.upstream_failures,
            ),
            (
                "ringlb_upstream_tls_handshake_timeouts_total",
                "Upstream TLS handshakes not finished within connect_timeout (counted in ringlb_upstream_tls_handshake_failures_total too).",
                self.tls.upstream_timeouts,
            ),
        ] {
            p.family(name, "counter", help);
            p.sample(name, &[], v);
        }
        p.family(
            "ringlb_tls_handshake_duration_seconds",
            "histogram",
            "TLS listener handshakes: accept to handshake done.",
        );
        p.histogram(
            "ringlb_tls_handshake_duration_seconds",
            &[],
            &self.tls_handshake_time,
        );
        p.family(
            "ringlb_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed, by reason.",
        );
        for (f, n) in crate::tls::Failure::ALL.iter().zip(self.tls.failures) {
            p.sample(
                "ringlb_tls_handshake_failures_total",
                &[("reason", f.label())],
                n,
            );
        }
        p.family(
            "ringlb_proxy_protocol_headers_total",
            "counter",
            "PROXY protocol headers read on proxy_protocol listeners.",
        );
        p.sample(
            "ringlb_proxy_protocol_headers_total",
            &[],
            self.proxy_protocol.headers,
        );
        p.family(
            "ringlb_proxy_protocol_errors_total",
            "counter",
            "Connections closed on proxy_protocol listeners for a missing or bad PROXY header, by reason.",
        );
        for (e, n) in crate::proto::proxy_protocol::Error::ALL
            .iter()
            .zip(self.proxy_protocol.errors)
        {
            p.sample(
                "ringlb_proxy_protocol_errors_total",
                &[("reason", e.label())],
                n,
            );
        }
        p.family(
            "ringlb_connections_active",
            "gauge",
            "Open client connections.",
        );
        p.sample("ringlb_connections_active", &[], c.active.max(0));
        p.family(
            "ringlb_connections",
            "gauge",
            "Open client connections by state (reading, writing, waiting).",
        );
        for (state, v) in [
            ("reading", c.reading),
            ("writing", c.writing),
            ("waiting", c.waiting),
        ] {
            p.sample("ringlb_connections", &[("state", state)], v.max(0));
        }
        p.family(
            "ringlb_buffers_in_use",
            "gauge",
            "Receive buffers held by client and upstream connections (idle ones hold none).",
        );
        p.sample("ringlb_buffers_in_use", &[], c.buffers_in_use);
        p.family(
            "ringlb_buffers_pooled",
            "gauge",
            "Buffers parked in the shards' pools for reuse.",
        );
        p.sample("ringlb_buffers_pooled", &[], c.buffers_pooled);
        p.family(
            "ringlb_connections_parked",
            "gauge",
            "Idle keep-alive connections waiting outside any task (a subset of waiting).",
        );
        p.sample("ringlb_connections_parked", &[], c.parked);
        p.family("ringlb_requests_total", "counter", "Completed requests.");
        p.sample("ringlb_requests_total", &[], c.requests);

        // ---- listeners ----
        p.family(
            "ringlb_listener_requests_total",
            "counter",
            "Completed requests per listener.",
        );
        for (name, s) in &self.listeners {
            p.sample(
                "ringlb_listener_requests_total",
                &[("listener", name)],
                s.requests,
            );
        }
        p.family(
            "ringlb_listener_responses_total",
            "counter",
            "Responses per listener by status class.",
        );
        for (name, s) in &self.listeners {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                p.sample(
                    "ringlb_listener_responses_total",
                    &[("listener", name), ("code", class)],
                    s.status[i],
                );
            }
        }
        p.family(
            "ringlb_listener_received_bytes_total",
            "counter",
            "Bytes read from clients.",
        );
        for (name, s) in &self.listeners {
            p.sample(
                "ringlb_listener_received_bytes_total",
                &[("listener", name)],
                s.bytes_in,
            );
        }
        p.family(
            "ringlb_listener_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
        );
        for (name, s) in &self.listeners {
            p.sample(
                "ringlb_listener_sent_bytes_total",
                &[("listener", name)],
                s.bytes_out,
            );
        }
        p.family(
            "ringlb_listener_request_duration_seconds",
            "histogram",
            "First request byte to last response byte, per listener.",
        );
        for (name, s) in &self.listeners {
            p.histogram(
                "ringlb_listener_request_duration_seconds",
                &[("listener", name)],
                &s.latency,
            );
        }
        p.family(
            "ringlb_listener_upstream_duration_seconds",
            "histogram",
            "Request sent upstream to response head received, per listener.",
        );
        for (name, s) in &self.listeners {
            p.histogram(
                "ringlb_listener_upstream_duration_seconds",
                &[("listener", name)],
                &s.upstream_latency,
            );
        }

        // ---- servers ----
        macro_rules! per_server {
            ($name:expr, $kind:expr, $help:expr, |$s:ident| $val:expr) => {
                p.family($name, $kind, $help);
                for (k, $s) in &self.servers {
                    p.sample($name, &[("upstream", &k.0), ("server", &k.1)], $val);
                }
            };
        }
        per_server!(
            "ringlb_server_requests_total",
            "counter",
            "Requests answered by each upstream server.",
            |s| s.requests
        );
        p.family(
            "ringlb_server_responses_total",
            "counter",
            "Responses per upstream server by status class.",
        );
        for (k, s) in &self.servers {
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                p.sample(
                    "ringlb_server_responses_total",
                    &[("upstream", &k.0), ("server", &k.1), ("code", class)],
                    s.status[i],
                );
            }
        }
        p.family(
            "ringlb_server_failures_total",
            "counter",
            "Failed tries per upstream server by kind.",
        );
        for (k, s) in &self.servers {
            for kind in FailureKind::ALL {
                p.sample(
                    "ringlb_server_failures_total",
                    &[
                        ("upstream", &k.0),
                        ("server", &k.1),
                        ("kind", kind.as_str()),
                    ],
                    s.failures[kind.index()],
                );
            }
        }
        per_server!(
            "ringlb_server_retries_total",
            "counter",
            "Requests retried after a failure on this server.",
            |s| s.retries
        );
        per_server!(
            "ringlb_server_connections_total",
            "counter",
            "New upstream connections established.",
            |s| s.connects
        );
        per_server!(
            "ringlb_server_received_bytes_total",
            "counter",
            "Client bytes of requests answered by this server.",
            |s| s.bytes_in
        );
        per_server!(
            "ringlb_server_sent_bytes_total",
            "counter",
            "Bytes sent to clients for requests answered by this server.",
            |s| s.bytes_out
        );
        for (name, help, pick) in [
            (
                "ringlb_server_request_duration_seconds",
                "First request byte to last response byte, per server.",
                0u8,
            ),
            (
                "ringlb_server_upstream_duration_seconds",
                "Request sent to response head received, per server.",
                1,
            ),
            (
                "ringlb_server_connect_duration_seconds",
                "Upstream TCP connect time, per server.",
                2,
            ),
        ] {
            p.family(name, "histogram", help);
            for (k, s) in &self.servers {
                let h = match pick {
                    0 => &s.latency,
                    1 => &s.upstream_latency,
                    _ => &s.connect_time,
                };
                p.histogram(name, &[("upstream", &k.0), ("server", &k.1)], h);
            }
        }

        // ---- health ----
        let health = &self.control.health;
        p.family(
            "ringlb_server_up",
            "gauge",
            "1 if the health checker considers the server up.",
        );
        for ((u, s), h) in health {
            p.sample(
                "ringlb_server_up",
                &[("upstream", u), ("server", s)],
                u8::from(h.up),
            );
        }
        p.family(
            "ringlb_health_transitions_total",
            "counter",
            "Health state changes per server.",
        );
        for ((u, s), h) in health {
            for (to, v) in [("up", h.to_up), ("down", h.to_down)] {
                p.sample(
                    "ringlb_health_transitions_total",
                    &[("upstream", u), ("server", s), ("to", to)],
                    v,
                );
            }
        }

        // ---- VRRP ----
        let vrrp = &self.control.vrrp;
        p.family(
            "ringlb_vrrp_state",
            "gauge",
            "1 for the current role of each VRRP instance.",
        );
        for (name, v) in vrrp {
            for role in State::ALL {
                p.sample(
                    "ringlb_vrrp_state",
                    &[("instance", name), ("state", role.as_str())],
                    u8::from(v.role == role),
                );
            }
        }
        p.family("ringlb_vrrp_priority", "gauge", "Effective VRRP priority.");
        for (name, v) in vrrp {
            p.sample("ringlb_vrrp_priority", &[("instance", name)], v.priority);
        }
        p.family(
            "ringlb_vrrp_transitions_total",
            "counter",
            "VRRP role changes by target role.",
        );
        for (name, v) in vrrp {
            for role in State::ALL {
                p.sample(
                    "ringlb_vrrp_transitions_total",
                    &[("instance", name), ("to", role.as_str())],
                    v.transitions[role as usize],
                );
            }
        }
        p.family(
            "ringlb_vrrp_adverts_sent_total",
            "counter",
            "VRRP adverts sent.",
        );
        for (name, v) in vrrp {
            p.sample(
                "ringlb_vrrp_adverts_sent_total",
                &[("instance", name)],
                v.adverts_sent,
            );
        }
        p.family(
            "ringlb_vrrp_adverts_received_total",
            "counter",
            "VRRP adverts accepted from the master.",
        );
        for (name, v) in vrrp {
            p.sample(
                "ringlb_vrrp_adverts_received_total",
                &[("instance", name)],
                v.adverts_received,
            );
        }
        p.family(
            "ringlb_vrrp_advert_gap_seconds",
            "histogram",
            "Time between consecutive adverts received.",
        );
        for (name, v) in vrrp {
            p.histogram(
                "ringlb_vrrp_advert_gap_seconds",
                &[("instance", name)],
                &v.advert_gap,
            );
        }
        p.family(
            "ringlb_vrrp_dropped_packets_total",
            "counter",
            "VRRP packets dropped, by reason.",
        );
        for (reason, n) in &self.control.vrrp_drops {
            p.sample(
                "ringlb_vrrp_dropped_packets_total",
                &[("reason", reason)],
                n,
            );
        }
        p.out
    }
}
