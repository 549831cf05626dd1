//! `ringlb run`: start, then serve signals until told to stop.
//!
//! Signals are received here, on the orchestrator's thread, with
//! `signal-hook`; shard threads neither block nor handle any.
//!
//! | signal | effect |
//! |---|---|
//! | SIGHUP | [`Running::reload`] (see [`super::reload`]) |
//! | SIGTERM, SIGINT, SIGQUIT | [`Running::stop`] (see [`super::stop`]), then exit 0 |
//! | SIGUSR1 | [`Running::reopen_logs`]: the access log is reopened |
//! | SIGUSR2 | ignored (logged); test builds with `fault-injection`: stall or resume every shard |
//!
//! SIGUSR1 and SIGQUIT mean what they mean to nginx (reopen the logs; stop
//! gracefully), so the scripts that drive an nginx being replaced keep
//! working: logrotate's stock `postrotate` sends SIGUSR1, and unhandled it
//! would kill the process. SIGUSR2 (nginx's binary upgrade, which ringlb
//! does not do) is caught for the same reason.

use std::path::PathBuf;

use super::start::{start, Running};
use crate::config::Config;

/// Starts `config` (loaded from `path`) and serves signals until stopped.
pub fn run(path: PathBuf, config: Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2])?;
    let mut running: Running = start(config)?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                crate::info!("SIGHUP: reloading {}", path.display());
                running.reload(&path);
            }
            SIGUSR1 => {
                crate::info!("SIGUSR1: reopening the access log");
                running.reopen_logs();
            }
            #[cfg(not(feature = "fault-injection"))]
            SIGUSR2 => crate::warn!("SIGUSR2 ignored (ringlb has no binary upgrade)"),
            #[cfg(feature = "fault-injection")]
            SIGUSR2 => {
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
