//! Sandbox lifecycle: a finished sandbox is kept so `bramble logs` can still read it, then
//! removed by age and by disk pressure, like Mesos's `gc_delay` + `disk_watermark_gc`.
//!
//! The policy ([`GcPolicy`], [`Schedule`], [`sweep`]) is pure and unit-tested without a disk:
//! * every finished sandbox may live `max_age × max(0, 1 − usage − headroom)`, where `usage`
//!   is the fraction of the work dir's filesystem in use: the fuller the disk, the sooner
//!   sandboxes go (at `1 − headroom` full, at once);
//! * when usage passes `high_watermark` the oldest finished sandboxes go first, one at a time
//!   with the disk measured again after each, until usage is back under it.
//!
//! Only sandboxes the agent hands over are ever removed: [`GcHandle::schedule`] once a
//! container has ended (or never started), and at startup [`scan_leftovers`] for sandboxes
//! in the work dir that belong to no run the agent knows (aged by their mtime). A running
//! task's sandbox is never in the schedule. Before removing, a path must have the shape of a
//! sandbox under `<work_dir>/frameworks` and its parent must resolve inside it (`confined`),
//! so a bad path or a planted symlink cannot point the gc elsewhere.
//!
//! Files: `policy.rs` (the pure rules and the sweep), `disk.rs` (the real disk: measuring,
//! removing, scanning for leftovers), this file (the gc task and its handle).
//!
//! Shape: one task owns the schedule; the agent's state loop only sends it paths over an
//! unbounded channel and never waits on it. Each sweep (every `interval`, or at once after a
//! launch found the disk full) runs on the blocking pool and logs one line per sandbox removed
//! (path, age, why). Ages run on the monotonic clock, so a Pi setting its clock at boot does
//! not make every sandbox look ancient. Removed paths are remembered (bounded) so a read of
//! one answers "removed by gc" instead of an I/O error. The task ends when the agent drops
//! its handle.

mod disk;
mod policy;

pub use disk::scan_leftovers;
pub use policy::*;

use crate::paths::WorkDir;
use bramble_proto::bounded::BoundedMap;
use disk::WorkDirDisk;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How many removed sandboxes are remembered for the "removed by gc" answer.
const REMEMBERED_REMOVALS: usize = 10_000;
/// Removals per sweep. A slow SD card takes ~10 ms per sandbox, so a backlog is worked off
/// in steps of well under a second: removals are logged and remembered as they go, and a
/// shutdown never waits long for a sweep on the blocking pool.
const SWEEP_BUDGET: usize = 32;

enum Cmd {
    Schedule(PathBuf, Duration),
    SweepNow,
}

/// The agent's handle on its sandbox gc. Cheap to clone; the gc task ends when every handle
/// is dropped.
#[derive(Clone)]
pub struct GcHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    removed: Arc<Mutex<BoundedMap<PathBuf, String>>>,
}

impl fmt::Debug for GcHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcHandle")
    }
}

impl GcHandle {
    /// Starts the gc task for the sandboxes under `work_dir`. Needs a tokio runtime.
    pub fn spawn(work_dir: PathBuf, policy: GcPolicy) -> GcHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let removed = Arc::new(Mutex::new(BoundedMap::new(REMEMBERED_REMOVALS)));
        tokio::spawn(run(work_dir, policy, rx, Arc::clone(&removed)));
        GcHandle { tx, removed }
    }

    /// A sandbox is finished (its container ended or never started): keep it for the policy's
    /// time, then remove it.
    pub fn schedule(&self, sandbox: PathBuf) {
        let _ = self.tx.send(Cmd::Schedule(sandbox, Duration::ZERO));
    }

    /// Schedules a sandbox found on disk that is already `age` old.
    pub fn schedule_aged(&self, sandbox: PathBuf, age: Duration) {
        let _ = self.tx.send(Cmd::Schedule(sandbox, age));
    }

    /// Sweeps now rather than at the next interval (a launch found the disk full).
    pub fn sweep_now(&self) {
        let _ = self.tx.send(Cmd::SweepNow);
    }

    /// When the gc removed `sandbox`, and why, for a read that finds it gone.
    pub fn removed(&self, sandbox: &Path) -> Option<String> {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        removed.get(&sandbox.to_path_buf()).cloned()
    }
}

async fn run(
    work_dir: PathBuf,
    policy: GcPolicy,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    removed: Arc<Mutex<BoundedMap<PathBuf, String>>>,
) {
    let mut schedule = Schedule::default();
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last sweep used its whole budget: sweep again as soon as the queue is drained.
    let mut more = false;
    loop {
        let cmd = if more {
            match rx.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        } else {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                _ = tick.tick() => None,
            }
        };
        if let Some(Cmd::Schedule(path, age)) = cmd {
            if !schedule.contains(&path) {
                debug!(sandbox = %path.display(), age = %self::age(age), "sandbox scheduled for gc");
            }
            schedule.insert(path, age, Instant::now());
            continue;
        }
        if schedule.is_empty() {
            more = false;
            continue;
        }
        let disk = WorkDirDisk {
            work_dir: WorkDir::new(&work_dir),
        };
        let job = tokio::task::spawn_blocking(move || {
            let result = sweep(&mut schedule, &policy, Instant::now(), &disk, SWEEP_BUDGET);
            (schedule, result)
        });
        let result;
        (schedule, result) = match job.await {
            Ok(done) => done,
            Err(e) => {
                warn!("sandbox gc sweep failed: {e}; schedule lost, leftovers are found again at the next start");
                (Schedule::default(), Ok(Vec::new()))
            }
        };
        more = false;
        match result {
            Ok(removals) => {
                more = removals.len() >= SWEEP_BUDGET;
                log_removals(&removals, &removed)
            }
            Err(e) => {
                warn!(work_dir = %work_dir.display(), "sandbox gc: measuring the disk: {e}")
            }
        }
    }
}

fn log_removals(removals: &[Removal], removed: &Mutex<BoundedMap<PathBuf, String>>) {
    let mut memory = removed.lock().unwrap_or_else(|e| e.into_inner());
    for r in removals {
        match &r.outcome {
            Outcome::AlreadyGone => {
                debug!(sandbox = %r.path.display(), "finished sandbox was already gone")
            }
            Outcome::Removed => {
                info!(sandbox = %r.path.display(), age = %age(r.age), "removed finished sandbox: {}", r.why);
                memory.insert(r.path.clone(), format!("at age {}, {}", age(r.age), r.why));
            }
            Outcome::Failed(e) => {
                warn!(sandbox = %r.path.display(), age = %age(r.age), "could not remove finished sandbox ({}): {e}", r.why)
            }
        }
    }
}

#[cfg(test)]
mod tests;
