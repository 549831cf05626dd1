//! The control plane's services: everything that is not on the request path.
//!
//! - [`publisher`]: the single source of truth (config, server health,
//!   draining, VRRP roles) and the only snapshot builder;
//! - [`health`]: the health thread — active probes, passive failure reports;
//! - [`vrrp`]: VRRP on the control core, VIPs, GARP, tracking, notify;
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/stats`, `/healthz`).
//!
//! These services know nothing of shards: they publish snapshots, and they
//! learn about the data plane only through narrow functions the orchestrator
//! ([`crate::runtime`]) builds from the shard links (`health::FailuresFn`,
//! `vrrp::SampleFn`, `vrrp::UpstreamDownFn`). Starting, reloading and stopping
//! them is the orchestrator's job too. Nothing here imports the data plane.

pub mod admin;
pub mod fd_budget;
pub mod health;
pub mod publisher;
pub mod vrrp;
