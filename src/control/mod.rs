//! Control-thread services (VRRP I/O, health probes, admin HTTP, reload).

pub mod admin;
