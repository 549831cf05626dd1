//! ringlb: a thread-per-core io_uring HTTP/1.1 load balancer with built-in VRRP.
//!
//! One binary does the job of the nginx + keepalived pair: shards proxy
//! HTTP/1.1 to upstream servers, and a control thread runs VRRP and health
//! checks and publishes immutable snapshots to the shards. `ARCHITECTURE.md`
//! at the repository root is the guide: the picture, the lifecycle, the hot
//! path of one request and the rules.
//!
//! # Layout
//!
//! The core:
//!
//! - [`runtime`]: the orchestrator. Start (bind listeners, spawn and pin
//!   shards, start control services), the signal loop, reload
//!   ([`runtime::reload`]: SIGHUP), graceful stop ([`runtime::stop`]:
//!   SIGTERM), data-plane liveness; listener sockets, CPU placement, ring
//!   construction.
//! - [`data`]: the shards: accept loop, client connection task, upstream
//!   pool, body relay, deadlines, access log; [`data::link`] is everything
//!   that crosses a shard's boundary.
//! - [`control`]: control-plane services, which know nothing of shards:
//!   [`control::publisher`] (the single source of truth, builds snapshots),
//!   [`control::health`], [`control::vrrp`], [`control::admin`].
//! - [`snapshot`]: the one immutable value shards route with, and its
//!   lock-free cell.
//! - [`proto`]: sans-IO protocol code. No sockets, no runtime, no clock reads:
//!   callers pass bytes in and `now` in, and get bytes and deadlines out.
//!   - [`proto::http1`]: HTTP/1.1 head decoding, strict body framing, head encoding.
//!   - [`proto::vrrp`]: VRRP v2/v3 wire format and the RFC 5798 state machine.
//!   - [`proto::health`]: rise/fall hysteresis and passive failure windows.
//! - [`lb`]: pure load-balancing selectors, built once per snapshot, and
//!   [`lb::route`], host/path routing to an upstream. Sans-IO like `proto`.
//! - [`config`]: the TOML schema, defaults and validation (`FILE:LINE:COL:` errors).
//! - [`metrics`]: per-shard counters and histograms, merge, exposition.
//! - [`log`]: rate-limited, one-`write` stderr log lines (`info!`, `warn!`, `error!`).
//!
//! The tools, which use the core and are not used by it:
//!
//! - [`cli`]: [`cli::stats`] (`ringlb stats`), [`cli::import`] (`ringlb
//!   import`, nginx.conf + keepalived.conf → ringlb TOML), [`cli::backend`]
//!   (a tiny built-in HTTP origin for tests, benchmarks and the demo),
//!   [`cli::demo`] (`ringlb demo`, a VRRP failover in a namespace lab) and
//!   [`cli::lab`] (the HA lab: open-loop load generator, run reports, plots).

pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod lb;
pub mod log;
pub mod metrics;
pub mod proto;
pub mod runtime;
pub mod snapshot;
#[cfg(test)]
mod testutil;
pub mod tls;
