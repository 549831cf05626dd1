//! The data plane: shards that accept, parse, pick and proxy.
//!
//! - [`shard`]: one thread's listeners, connection registry, housekeeping.
//! - [`link`]: everything that crosses a shard's boundary (snapshots and
//!   stop in; heartbeats, passive-health failures and exit out).
//! - [`conn`]: one client connection, request by request.
//! - [`io`]: writes with deadlines and the body relay used in both directions.
//! - [`buf`]: the receive buffer both sides read into.
//! - [`body_buf`]: storage lent to buffered request bodies, within a per-shard budget.
//! - [`deadline`]: coarse per-connection timeouts enforced by the shard tick.
//! - [`access_log`]: buffered access-log lines handed to a writer thread.
//! - [`unwind`]: a panicking connection task costs that connection, not the shard.
//! - [`pool`]: idle upstream keep-alive connections, per shard.
//! - [`peek`]: non-blocking looks at a socket's receive queue (pooled
//!   connections, clients awaiting a response).
//! - [`proxy_protocol`]: the PROXY header read on `proxy_protocol` listeners.
//! - [`date`]: the `Date` field value, cached per shard and refreshed by its tick.

pub mod access_log;
pub mod body_buf;
pub mod buf;
pub mod client_stream;
pub mod conn;
pub mod date;
pub mod deadline;
pub mod idle;
pub mod io;
pub mod link;
pub mod multishot;
pub mod peek;
pub mod pool;
pub mod proxy_protocol;
pub mod shard;
pub mod splice;
pub mod tls;
pub mod unwind;
pub mod upstream;
