//! The orchestrator: the one place that starts, reloads and stops ringlb.
//!
//! `main.rs` parses the command line and calls [`run`]; everything about the
//! process lifecycle is here, one file per phase:
//!
//! - [`start`]: bind every listener, spawn and pin the shards, start the
//!   control services (health, admin, VRRP, access-log writer) → [`Running`].
//! - [`signals`]: the signal loop of `ringlb run` (SIGHUP, SIGTERM/SIGINT).
//! - [`reload`]: what SIGHUP does.
//! - [`stop`]: what SIGTERM/SIGINT does (graceful stop).
//! - [`liveness`]: the data plane's progress as VRRP tracks it.
//!
//! and the building blocks they use:
//!
//! - [`listeners`]: the `SO_REUSEPORT` listening sockets, made from an address
//!   or taken over from an inherited file descriptor;
//! - [`cpus`]: which core runs what, and pinning;
//! - [`ring`]: a thread's monoio runtime with the measured io_uring flags.
//!
//! The control plane's services live in [`crate::control`] and know nothing
//! of the shards; the shards live in [`crate::data`] and know the control
//! side only through [`crate::data::link`]. This module is the only one that
//! holds both ends.

pub mod cpus;
pub mod listeners;
pub mod liveness;
pub mod reload;
pub mod ring;
pub mod signals;
pub mod start;
pub mod stop;

pub use cpus::{cpu_count, pin, plan_cpus};
pub use ring::{build, build_epoll, ShardRuntime, RING_ENTRIES};
pub use signals::run;
pub use start::{start, Running};
