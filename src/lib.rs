//! ringlb: a thread-per-core io_uring HTTP/1.1 load balancer with built-in VRRP.
//!
//! One binary does the job of the nginx + keepalived pair: shards proxy
//! HTTP/1.1 to upstream servers, and a control thread runs VRRP and health
//! checks and publishes immutable snapshots to the shards.
//!
//! # Layout
//!
//! - [`config`]: the TOML schema, defaults and validation (`FILE:LINE:COL:` errors).
//! - [`proto`]: sans-IO protocol code. No sockets, no runtime, no clock reads:
//!   callers pass bytes in and `now` in, and get bytes and deadlines out.
//!   - [`proto::http1`]: HTTP/1.1 head decoding, strict body framing, head encoding.
//!   - [`proto::vrrp`]: VRRP v2/v3 wire format and the RFC 5798 state machine.
//!   - [`proto::health`]: rise/fall hysteresis and passive failure windows.
//! - [`lb`]: pure load-balancing selectors, built once per snapshot.
//! - [`data`]: the shards: accept loop, client connection task, upstream pool.
//! - [`runtime`]: thread spawning, CPU pinning, io_uring ring construction.
//! - [`metrics`]: per-shard counters and histograms, merge, exposition.
//! - [`control`]: control-thread services; [`control::admin`] is the admin HTTP endpoint.
//! - [`stats_cli`]: `ringlb stats`, a terminal view of `/stats`.
//! - [`backend`]: a tiny built-in HTTP server for tests, benchmarks and the demo.
//! - [`demo`]: `ringlb demo`.
//! - [`lab`]: the HA lab: open-loop load generator, run reports, plots, namespace lab.
//! - [`import`]: `ringlb import`, nginx.conf + keepalived.conf → ringlb TOML.

pub mod backend;
pub mod config;
pub mod control;
pub mod data;
pub mod demo;
pub mod import;
pub mod lab;
pub mod lb;
pub mod log;
pub mod metrics;
pub mod proto;
pub mod route;
pub mod runtime;
pub mod snapshot;
pub mod stats_cli;
#[cfg(test)]
mod testutil;
