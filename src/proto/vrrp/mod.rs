//! VRRP (v3 per RFC 5798, v2 per RFC 3768), sans-IO.
//!
//! ringlb replaces keepalived, so VRRP lives in-process on the control
//! thread. Like quinn-proto, this module never touches a socket or a clock:
//! the driver (`control/`) reads raw IP protocol 112 packets, hands the bytes
//! to [`wire`], passes the parsed advert and the current `now` to a
//! [`machine::Machine`], and then drains the machine's outputs (adverts to
//! send, state changes to act on, the next deadline to sleep until). That keeps
//! every RFC timer rule unit-testable with a fake clock, and lets a simulated
//! network (the `sim` tests) run minutes of elections, crashes, partitions and
//! lossy links in milliseconds.
//!
//! - [`wire`]: packet view, parse/emit, checksums, drop reasons.
//! - [`timer`]: the small timer table (Advert, MasterDown, PreemptDelay).
//! - [`machine`]: the per-instance state machine (Initialize/Backup/Master/Fault).
//!
//! Driver loop, in short:
//!
//! ```text
//! on packet:  env = wire::parse_ipv4(bytes)?; repr = Repr::parse(&Packet::new_checked(env.payload)?, src, dst)?;
//!             wire::hops_ok(env.ttl, dst, from_unicast_peer) or drop; machine.handle_advert(now, src, &repr)?
//! on wake:    machine.handle_timeout(now)
//! after each: while let Some(r) = machine.poll_transmit() { send r.to_bytes(primary_ip, group) }
//!             while let Some(e) = machine.poll_event()    { add/remove VIPs, GARP, notify }
//!             sleep until machine.poll_timeout()
//! ```

pub mod machine;
pub mod timer;
pub mod wire;

#[cfg(test)]
mod sim;

pub use machine::{Config, Event, Machine, Reject, Role, State};
pub use timer::{Timer, TimerTable};
pub use wire::{Auth, Error, Family, Kind, Packet, Repr, Version};
