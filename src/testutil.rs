//! Test support shared by unit tests (compiled only for tests).
//!
//! The sans-IO modules (`proto/`, `lb/`) never read the clock; their tests
//! drive a fake clock that starts at one arbitrary [`epoch`] and advances by
//! adding durations. Reading the real clock once, here, to get that starting
//! point keeps the clock out of the protocol code entirely.

use std::time::Instant;

/// An arbitrary starting point for a fake clock.
pub fn epoch() -> Instant {
    Instant::now()
}
