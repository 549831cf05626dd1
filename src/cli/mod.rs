//! The tools around the core: everything a `ringlb` subcommand runs that is
//! not the proxy itself.
//!
//! - [`stats`]: `ringlb stats`, a terminal view of a node's `/stats`.
//! - [`import`]: `ringlb import`, nginx.conf + keepalived.conf → ringlb TOML.
//! - [`backend`]: a tiny built-in HTTP origin server for tests, benchmarks
//!   and the demo (`ringlb backend`, `ringlb-backend`).
//! - [`demo`]: `ringlb demo`, a VRRP failover in a namespace lab.
//! - [`lab`]: the HA lab's tools (`ringlb loadgen`, `ringlb plot`).
//!
//! Nothing in the core (`data`, `control`, `runtime`, `proto`, `lb`) depends
//! on this module; tools may use the core.

pub mod backend;
pub mod demo;
pub mod import;
pub mod lab;
pub mod stats;
