//! The health thread: active probes, passive observations, republishing.
//!
//! It runs its own small monoio runtime on the control CPU. Each server
//! with a `[upstream.X.health_check]` gets a sans-IO
//! [`ActiveChecker`](crate::proto::health::ActiveChecker) that decides when
//! to probe and when the server flips; this file only performs the probes
//! (TCP connect, or an HTTP GET judged by status) and reports outcomes.
//! Shards report upstream failures through their link to the orchestrator,
//! which hands this thread a [`FailuresFn`] to collect them (this module
//! knows nothing of shards); every tick it feeds them to the passive windows.
//! Verdicts go to the [`Publisher`], which alone decides availability; any
//! change of it — including a passive window expiring — republishes the
//! snapshot at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::publisher::{Publisher, ServerKey};
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::proto::health::{
    judge_http_response, probe_request, spread, ActiveChecker, ActiveConfig, ProbeAction, ProbeId,
};
use crate::proto::proxy_protocol::{self, Version as ProxyVersion};
use crate::tls::upstream::UpstreamTls;

/// How often passive reports and expiries are looked at.
pub const TICK: Duration = Duration::from_millis(20);

/// Collects the upstream failures the data plane observed since the last
/// call, as (upstream name, server address).
pub type FailuresFn = dyn Fn() -> Vec<(Box<str>, SocketAddr)> + Send;

struct Checked {
    checker: ActiveChecker,
    check: HealthCheckConfig,
    generation: u64,
    /// The upstream's TLS and the server's index, when `tls = true`.
    tls: Option<(Arc<UpstreamTls>, usize)>,
    /// `send_proxy_protocol`: a probe starts with a header naming no client.
    proxy: Option<ProxyVersion>,
}

/// Starts the health thread.
pub fn spawn(
    publisher: Arc<Publisher>,
    failures: Box<FailuresFn>,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            if let Some(cpu) = cpu {
                crate::runtime::pin(cpu);
            }
            let mut rt = match crate::runtime::build() {
                Ok(rt) => rt,
                Err(e) => {
                    crate::error!("health thread: cannot build runtime: {e}");
                    return;
                }
            };
            rt.block_on(run(publisher, failures, stop));
        })
}

async fn run(publisher: Arc<Publisher>, failures: Box<FailuresFn>, stop: Arc<AtomicBool>) {
    let mut checks: HashMap<ServerKey, Checked> = HashMap::new();
    let results: Rc<RefCell<Vec<(ServerKey, ProbeId, bool)>>> = Rc::new(RefCell::new(Vec::new()));
    let mut seen_generation = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let config = publisher.config();
        let generation = publisher.generation();

        // Keep one checker per (upstream, server) that has a check; keep
        // the state of servers that survive a reload.
        if generation != seen_generation {
            seen_generation = generation;
            let mut next = HashMap::new();
            for u in &config.upstreams {
                let Some(hc) = &u.health_check else { continue };
                let n = u.servers.len();
                for (i, s) in u.servers.iter().enumerate() {
                    let key = (u.name.clone(), s.addr);
                    let entry = match checks.remove(&key) {
                        Some(mut c)
                            if c.check.kind == hc.kind
                                && ActiveConfig::from(&c.check) == ActiveConfig::from(hc) =>
                        {
                            c.check = hc.clone();
                            c.generation = generation;
                            c.tls = u.tls.as_ref().map(|t| (Arc::clone(t), i));
                            c.proxy = u.send_proxy_protocol;
                            c
                        }
                        _ => Checked {
                            checker: ActiveChecker::new(
                                ActiveConfig::from(hc),
                                now,
                                spread(i, n, hc.interval),
                                true,
                            ),
                            check: hc.clone(),
                            generation,
                            tls: u.tls.as_ref().map(|t| (Arc::clone(t), i)),
                            proxy: u.send_proxy_protocol,
                        },
                    };
                    next.insert(key, entry);
                }
            }
            checks = next;
        }

        // Passive observations from the shards.
        let reports = failures();
        if !reports.is_empty() {
            publisher.record_failures(reports, now);
        }

        // Probe outcomes.
        let outcomes = std::mem::take(&mut *results.borrow_mut());
        for (key, id, ok) in outcomes {
            if let Some(c) = checks.get_mut(&key) {
                if let Some(t) = c.checker.handle_result(now, id, ok) {
                    publisher.set_active(&key, t.up);
                }
            }
        }

        // Probe schedule.
        for (key, c) in checks.iter_mut() {
            while let Some(action) = c.checker.handle_timeout(now) {
                match action {
                    ProbeAction::Start { id, deadline } => {
                        let results = Rc::clone(&results);
                        let key = key.clone();
                        let check = c.check.clone();
                        let tls = c.tls.clone();
                        let proxy = c.proxy;
                        monoio::spawn(async move {
                            let tls = tls.as_ref().map(|(t, i)| (&**t, *i));
                            let ok = probe(key.1, &check, tls, proxy, deadline).await;
                            results.borrow_mut().push((key, id, ok));
                        });
                    }
                    ProbeAction::TimedOut { transition, .. } => {
                        if let Some(t) = transition {
                            publisher.set_active(key, t.up);
                        }
                    }
                }
            }
        }

        // Anything that changed availability, including passive windows
        // that expired.
        publisher.publish_if_changed(now);

        let next = checks
            .values()
            .filter_map(|c| c.checker.poll_timeout())
            .min()
            .unwrap_or(now + TICK)
            .min(now + TICK);
        monoio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
}

/// One probe; `true` = healthy. Bounded by `deadline`.
/// An HTTP check of a `tls = true` upstream runs over TLS, verified like
/// the proxied traffic (a server whose certificate fails is down).
async fn probe(
    addr: SocketAddr,
    check: &HealthCheckConfig,
    tls: Option<(&UpstreamTls, usize)>,
    proxy: Option<ProxyVersion>,
    deadline: Instant,
) -> bool {
    let limit = deadline.saturating_duration_since(Instant::now());
    let fut = async {
        let mut s = TcpStream::connect_addr(addr).await.ok()?;
        if let Some(v) = proxy {
            // A backend that requires the header closes on anything else.
            let mut pre = Vec::with_capacity(16);
            proxy_protocol::encode_local(v, &mut pre);
            let (r, _) = s.write_all(pre).await;
            r.ok()?;
        }
        if check.kind == HealthCheckKind::Tcp {
            return Some(true);
        }
        match tls {
            None => http_probe(s, addr, check).await,
            Some((tls, i)) => {
                let conn =
                    rustls::ClientConnection::new(Arc::clone(&tls.client), tls.names[i].clone())
                        .ok()?;
                let (s, _) = crate::tls::stream::connect(s, conn).await.ok()?;
                http_probe(s, addr, check).await
            }
        }
    };
    matches!(monoio::time::timeout(limit, fut).await, Ok(Some(true)))
}

/// An HTTP GET on a connected stream, judged by status.
async fn http_probe<S: AsyncReadRent + AsyncWriteRent>(
    mut s: S,
    addr: SocketAddr,
    check: &HealthCheckConfig,
) -> Option<bool> {
    {
        let req = probe_request(&check.path, &addr.to_string());
        let (r, _) = s.write_all(req).await;
        r.ok()?;
        let mut got: Vec<u8> = Vec::with_capacity(1024);
        loop {
            let buf = Vec::with_capacity(1024);
            let (r, buf) = s.read(buf).await;
            match r {
                Ok(0) | Err(_) => return judge_http_response(&got, check.expect_status).outcome(),
                Ok(_) => got.extend_from_slice(&buf),
            }
            if let Some(ok) = judge_http_response(&got, check.expect_status).outcome() {
                return Some(ok);
            }
        }
    }
}
