//! Orphans end after the recovery timeout (Mesos's `recovery_timeout`). An agent that stops
//! leaving its tasks running (SIGTERM does, by design, for the next agent process) and never
//! comes back must not leave them running forever.
//!
//! Custom executors see it themselves: the SDK's driver gives up after failing to reach the
//! agent's socket for that long (`BRAMBLE_RECOVERY_TIMEOUT_SECS`, `sdk/src/executor.rs`). A
//! command task has no connection to lose, so its exit-status supervisor (`recover.rs`) runs a
//! watcher beside it: the agent touches a heartbeat file every [`OrphanWatch::tick_secs`]
//! while it runs ([`beat`]), and a watcher that sees the file's mtime unchanged for the
//! timeout SIGTERMs the task's process group (SIGKILL 5 s later), so the supervisor records
//! how the task ended. A restarted agent touches the same file, so the tasks it re-adopts
//! run on. A *changed* mtime counts, never its age, so a clock step (a Pi without a clock
//! setting its time by NTP) neither kills a task nor keeps an orphan. After a reboot nothing
//! is left to watch: the next agent reports the old tasks LOST, as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tokio::sync::watch;
use tracing::{info, warn};

/// What a command task's supervisor watches: the agent's heartbeat file, and how long it may
/// stand still before the task is ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanWatch {
    pub heartbeat: PathBuf,
    /// Whole seconds, at least 1.
    pub timeout_secs: u64,
}

impl OrphanWatch {
    pub fn new(heartbeat: PathBuf, timeout: Duration) -> OrphanWatch {
        OrphanWatch {
            heartbeat,
            timeout_secs: timeout.as_secs().max(1),
        }
    }

    /// How often the agent touches the file and the watcher looks at it: a quarter of the
    /// timeout, so a live agent is seen several times per timeout, between 1 s (the mtime's
    /// resolution as the watcher reads it) and a minute (an SD card need not be written more).
    pub fn tick_secs(&self) -> u64 {
        (self.timeout_secs / 4).clamp(1, 60)
    }
}

/// Touches `watch.heartbeat` now and twice a tick until `shutdown` (the agent's task for it):
/// twice, so two looks a tick apart always see a new second in the mtime.
/// A failure is logged once, and again when it recovers: the watchers only notice when it
/// lasts the whole timeout.
pub async fn beat(watch: OrphanWatch, mut shutdown: watch::Receiver<bool>) {
    let tick = Duration::from_secs(watch.tick_secs()) / 2;
    let mut failing = false;
    loop {
        match touch(&watch.heartbeat) {
            Ok(()) if failing => {
                info!(file = %watch.heartbeat.display(), "agent heartbeat written again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(file = %watch.heartbeat.display(), timeout_secs = watch.timeout_secs,
                    "cannot write the agent heartbeat; command tasks end if this lasts the recovery timeout: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Creates `file` if missing and sets its times to now.
fn touch(file: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    utimensat(
        None,
        file,
        &TimeSpec::UTIME_NOW,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::FollowSymlink,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_quarter_of_the_timeout_within_bounds() {
        let tick =
            |secs| OrphanWatch::new(PathBuf::from("/x"), Duration::from_secs(secs)).tick_secs();
        assert_eq!(tick(2), 1);
        assert_eq!(tick(20), 5);
        assert_eq!(tick(15 * 60), 60);
        assert_eq!(
            OrphanWatch::new(PathBuf::from("/x"), Duration::ZERO).timeout_secs,
            1
        );
    }

    #[tokio::test]
    async fn beat_touches_the_file_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alive");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(beat(
            OrphanWatch::new(file.clone(), Duration::from_secs(4)),
            stopped,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            assert!(std::time::Instant::now() < deadline, "never touched");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }
}
