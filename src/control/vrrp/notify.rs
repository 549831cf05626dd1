//! `notify` scripts: run on every state change, never waited for.
//!
//! The VRRP loop must not block on a user's script (a slow script would
//! delay adverts and cause a false failover), so a script is spawned and
//! reaped later with `try_wait` on the loop's periodic tick. Arguments follow
//! keepalived's generic notify: `SCRIPT INSTANCE NAME STATE PRIORITY`, where
//! the first argument is the literal word `INSTANCE` and STATE is one of
//! MASTER, BACKUP, FAULT, STOP. The configured string is split on whitespace
//! into a program and leading arguments (no shell), like keepalived.
//!
//! Children are started with SCHED_OTHER even though the VRRP thread may run
//! SCHED_FIFO: the driver sets `SCHED_RESET_ON_FORK`.

use std::process::{Child, Command, Stdio};

/// Most notify processes kept waiting to be reaped; past it the oldest is
/// killed (a script that never ends must not pile up processes).
pub const MAX_PENDING: usize = 32;

/// The argument vector of one notification.
pub fn argv(script: &str, instance: &str, state: &str, priority: u8) -> Option<Vec<String>> {
    let mut parts = script.split_whitespace().map(str::to_string);
    let program = parts.next()?;
    let mut v = vec![program];
    v.extend(parts);
    v.extend([
        "INSTANCE".to_string(),
        instance.to_string(),
        state.to_string(),
        priority.to_string(),
    ]);
    Some(v)
}

/// Spawned notify processes not yet reaped.
#[derive(Default)]
pub struct Notifier {
    pending: Vec<Child>,
}

impl Notifier {
    /// Starts `script` for a change of `instance` into `state`.
    pub fn notify(&mut self, script: &str, instance: &str, state: &str, priority: u8) {
        let Some(args) = argv(script, instance, state, priority) else {
            return;
        };
        match Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                if self.pending.len() >= MAX_PENDING {
                    let mut old = self.pending.remove(0);
                    crate::warn!("vrrp notify: killing pid {} (too many pending)", old.id());
                    let _ = old.kill();
                    let _ = old.wait();
                }
                self.pending.push(child);
            }
            Err(e) => crate::error!("vrrp notify {script:?} for {instance} {state}: {e}"),
        }
    }

    /// Reaps finished scripts; logs failures.
    pub fn reap(&mut self) {
        self.pending.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    crate::warn!("vrrp notify pid {} exited with {status}", c.id());
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn keepalived_argument_order() {
        assert_eq!(
            argv("/bin/notify.sh --verbose", "VI_1", "MASTER", 100).unwrap(),
            [
                "/bin/notify.sh",
                "--verbose",
                "INSTANCE",
                "VI_1",
                "MASTER",
                "100"
            ]
        );
        assert_eq!(argv("   ", "VI_1", "MASTER", 100), None);
    }

    #[test]
    fn runs_and_reaps_without_blocking() {
        let dir = std::env::temp_dir().join(format!("rl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = dir.join("n.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}\n", out.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut n = Notifier::default();
        n.notify(script.to_str().unwrap(), "VI_1", "BACKUP", 90);
        assert_eq!(n.pending(), 1);
        let start = Instant::now();
        while n.pending() > 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
            n.reap();
        }
        assert_eq!(n.pending(), 0);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "INSTANCE VI_1 BACKUP 90"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
