//! Sans-IO protocol code: no sockets, no runtime, no clock reads.

pub mod exchange;
pub mod health;
pub mod http1;
pub mod pool_policy;
pub mod vrrp;
