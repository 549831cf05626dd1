//! The HA lab: open-loop load, what a run means, plots, and the namespace
//! lab `ringlb demo` builds.
//!
//! - [`loadgen`]: fixed-rate HTTP load on fresh connections, latency from
//!   the intended send time, events (faults) at fixed offsets.
//! - [`report`]: pure definitions of the summary (outage window, VIP move
//!   time, who served, percentiles), the 10 ms timeline and the curve.
//! - [`plot`]: SVG plots of several runs on the same axes.
//! - [`netns`]: a throwaway bridge + namespaces lab, torn down on drop.
//! - [`commands`]: `ringlb loadgen` and `ringlb plot`, used by `loadtest/`.

pub mod commands;
pub mod loadgen;
pub mod netns;
pub mod plot;
pub mod report;
