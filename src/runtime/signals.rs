//! `ringlb run`: start, then serve signals until told to stop.
//!
//! Signals are received here, on the orchestrator's thread, with
//! `signal-hook`; shard threads neither block nor handle any.
//!
//! | signal | effect |
//! |---|---|
//! | SIGHUP | [`Running::reload`] (see [`super::reload`]) |
//! | SIGTERM, SIGINT | [`Running::stop`] (see [`super::stop`]), then exit 0 |
//! | SIGUSR2 | test builds with `fault-injection` only: stall or resume every shard |

use std::path::PathBuf;

use super::start::{start, Running};
use crate::config::Config;

/// Starts `config` (loaded from `path`) and serves signals until stopped.
pub fn run(path: PathBuf, config: Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    #[cfg(feature = "fault-injection")]
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, libc::SIGUSR2])?;
    #[cfg(not(feature = "fault-injection"))]
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let mut running: Running = start(config)?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                crate::info!("SIGHUP: reloading {}", path.display());
                running.reload(&path);
            }
            #[cfg(feature = "fault-injection")]
            libc::SIGUSR2 => {
                use std::sync::atomic::Ordering;
                let stalled = !crate::data::shard::FAULT_STALL.load(Ordering::Relaxed);
                crate::warn!(
                    "fault injection: shards {}",
                    if stalled { "stalled" } else { "resumed" }
                );
                crate::data::shard::FAULT_STALL.store(stalled, Ordering::Relaxed);
            }
            _ => {
                crate::info!("signal {sig}: draining and stopping");
                running.stop();
                crate::info!("stopped");
                return Ok(());
            }
        }
    }
    Ok(())
}
