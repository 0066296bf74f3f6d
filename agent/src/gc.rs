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
//! Shape: one task owns the schedule; the agent's state loop only sends it paths over an
//! unbounded channel and never waits on it. Each sweep (every `interval`, or at once after a
//! launch found the disk full) runs on the blocking pool and logs one line per sandbox removed
//! (path, age, why). Ages run on the monotonic clock, so a Pi setting its clock at boot does
//! not make every sandbox look ancient. Removed paths are remembered (bounded) so a read of
//! one answers "removed by gc" instead of an I/O error. The task ends when the agent drops
//! its handle.

use bramble_proto::bounded::BoundedMap;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Default `[gc] max_age_secs`: three days, a weekend of logs on a small SD card.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default `[gc] disk_headroom` (Mesos's `gc_disk_headroom`).
pub const DEFAULT_HEADROOM: f64 = 0.1;
/// Default `[gc] disk_high_watermark`.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.9;
/// Default `[gc] interval_secs`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How many removed sandboxes are remembered for the "removed by gc" answer.
const REMEMBERED_REMOVALS: usize = 10_000;
/// A sandbox that cannot be removed is retried this many sweeps, then given up (and logged).
const MAX_ATTEMPTS: u32 = 3;
/// Removals per sweep. A slow SD card takes ~10 ms per sandbox, so a backlog is worked off
/// in steps of well under a second: removals are logged and remembered as they go, and a
/// shutdown never waits long for a sweep on the blocking pool.
const SWEEP_BUDGET: usize = 32;

/// When finished sandboxes are removed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    /// How long a finished sandbox is kept on an empty disk.
    pub max_age: Duration,
    /// Fraction of the disk kept free on top of the current use when scaling `max_age`.
    pub disk_headroom: f64,
    /// Fraction of the disk in use above which the oldest finished sandboxes go at once.
    pub high_watermark: f64,
    /// Time between sweeps.
    pub interval: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            max_age: DEFAULT_MAX_AGE,
            disk_headroom: DEFAULT_HEADROOM,
            high_watermark: DEFAULT_HIGH_WATERMARK,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl GcPolicy {
    /// How old a finished sandbox may get when `usage` (0..=1) of the disk is in use.
    pub fn allowed_age(&self, usage: f64) -> Duration {
        let factor = 1.0 - usage - self.disk_headroom;
        // NaN (an unmeasurable disk) counts as full: keeping too little beats filling it.
        if factor.is_nan() || factor <= 0.0 {
            return Duration::ZERO;
        }
        self.max_age.mul_f64(factor.min(1.0))
    }
}

/// Space on the work dir's filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total: u64,
    /// Available to unprivileged writers (what a task sees).
    pub available: u64,
}

impl DiskUsage {
    /// Measures the filesystem holding `path`.
    pub fn of(path: &Path) -> io::Result<DiskUsage> {
        let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        let frsize = st.fragment_size() as u64;
        Ok(DiskUsage {
            total: (st.blocks() as u64).saturating_mul(frsize),
            available: (st.blocks_available() as u64).saturating_mul(frsize),
        })
    }

    /// Fraction in use, 0..=1 (an empty-sized filesystem counts as full).
    pub fn used_fraction(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        1.0 - (self.available.min(self.total) as f64 / self.total as f64)
    }
}

impl fmt::Display for DiskUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "free {} of {}", bytes(self.available), bytes(self.total))
    }
}

/// `1.5 MiB`-style sizes for log lines and messages.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `2h 5m`, `1m 30s`, `1.2s`: ages in log lines.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Why a sandbox was removed.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Older than the policy allows at this disk usage.
    Age { allowed: Duration, usage: f64 },
    /// The disk was above the high watermark and this was the oldest finished sandbox left.
    Watermark { usage: f64, watermark: f64 },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Age { allowed, usage } => write!(
                f,
                "older than the {} allowed at {:.0}% disk use",
                age(*allowed),
                usage * 100.0
            ),
            Why::Watermark { usage, watermark } => write!(
                f,
                "disk {:.0}% full, above the {:.0}% high watermark; oldest finished first",
                usage * 100.0,
                watermark * 100.0
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Age when it entered the schedule (0 for a sandbox that just finished).
    age_then: Duration,
    since: Instant,
    failures: u32,
}

impl Entry {
    fn age(&self, now: Instant) -> Duration {
        self.age_then + now.saturating_duration_since(self.since)
    }
}

/// Finished sandboxes waiting for removal. Pure: no I/O, the caller passes the time.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: HashMap<PathBuf, Entry>,
}

impl Schedule {
    /// Adds a finished sandbox that is `age` old at `now`; a path already scheduled keeps its
    /// older age.
    pub fn insert(&mut self, path: PathBuf, age: Duration, now: Instant) {
        self.entries.entry(path).or_insert(Entry {
            age_then: age,
            since: now,
            failures: 0,
        });
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every scheduled sandbox with its age, oldest first (ties by path, for a stable order).
    pub fn oldest_first(&self, now: Instant) -> Vec<(PathBuf, Duration)> {
        let mut all: Vec<(PathBuf, Duration)> = self
            .entries
            .iter()
            .map(|(p, e)| (p.clone(), e.age(now)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// The sandboxes past the age `policy` allows at `usage`, oldest first.
    pub fn expired(&self, policy: &GcPolicy, usage: f64, now: Instant) -> Vec<(PathBuf, Duration)> {
        let allowed = policy.allowed_age(usage);
        self.oldest_first(now)
            .into_iter()
            .filter(|(_, a)| *a >= allowed)
            .collect()
    }
}

/// What a sweep needs from the disk; a trait so the policy is testable without filling one.
pub trait Disk {
    fn usage(&self) -> io::Result<DiskUsage>;
    /// Removes one finished sandbox. `NotFound` means it is already gone.
    fn remove(&self, sandbox: &Path) -> io::Result<()>;
}

/// One sandbox a sweep removed, or tried to.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub path: PathBuf,
    pub age: Duration,
    pub why: Why,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Removed,
    /// Nothing was there (a launch that failed before creating it, or removed by hand).
    AlreadyGone,
    /// Could not be removed; the reason.
    Failed(String),
}

/// One sweep: removes what is past its allowed age, then, while the disk is above the high
/// watermark, the oldest of the rest, measuring again after each removal; at most `budget`
/// removals (a caller with more to do sweeps again). A sandbox that could not be removed
/// stays scheduled for the next sweep, up to [`MAX_ATTEMPTS`].
pub fn sweep(
    schedule: &mut Schedule,
    policy: &GcPolicy,
    now: Instant,
    disk: &dyn Disk,
    budget: usize,
) -> io::Result<Vec<Removal>> {
    if schedule.is_empty() {
        return Ok(Vec::new());
    }
    let mut usage = disk.usage()?.used_fraction();
    let mut done = Vec::new();
    let expired = schedule.expired(policy, usage, now);
    let allowed = policy.allowed_age(usage);
    for (path, age) in expired.into_iter().take(budget) {
        let why = Why::Age { allowed, usage };
        done.push(remove_one(schedule, disk, path, age, why));
    }
    if usage > policy.high_watermark {
        usage = disk.usage()?.used_fraction();
    }
    for (path, age) in schedule.oldest_first(now) {
        if usage <= policy.high_watermark || done.len() >= budget {
            break;
        }
        let why = Why::Watermark {
            usage,
            watermark: policy.high_watermark,
        };
        done.push(remove_one(schedule, disk, path, age, why));
        usage = disk.usage()?.used_fraction();
    }
    Ok(done)
}

fn remove_one(
    schedule: &mut Schedule,
    disk: &dyn Disk,
    path: PathBuf,
    age: Duration,
    why: Why,
) -> Removal {
    let outcome = match disk.remove(&path) {
        Ok(()) => Outcome::Removed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::AlreadyGone,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let give_up = match (&outcome, schedule.entries.get_mut(&path)) {
        (Outcome::Failed(_), Some(entry)) => {
            entry.failures += 1;
            entry.failures >= MAX_ATTEMPTS
        }
        _ => true,
    };
    if give_up {
        schedule.entries.remove(&path);
    }
    Removal {
        path,
        age,
        why,
        outcome,
    }
}

/// Whether `path` looks like a sandbox the agent made: exactly
/// `<work_dir>/frameworks/<fw>/executors/<executor>/runs/<container>`, lexically.
pub fn is_sandbox_path(work_dir: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(work_dir.join("frameworks")) else {
        return false;
    };
    let parts: Vec<Component<'_>> = rest.components().collect();
    parts.len() == 5
        && parts.iter().all(|c| matches!(c, Component::Normal(_)))
        && parts[1].as_os_str() == "executors"
        && parts[3].as_os_str() == "runs"
}

/// The real disk under an agent's work dir.
struct WorkDirDisk {
    work_dir: PathBuf,
}

impl Disk for WorkDirDisk {
    fn usage(&self) -> io::Result<DiskUsage> {
        DiskUsage::of(&self.work_dir)
    }

    fn remove(&self, sandbox: &Path) -> io::Result<()> {
        confined(&self.work_dir, sandbox)?;
        let meta = std::fs::symlink_metadata(sandbox)?;
        // A symlink is removed, never followed; `remove_dir_all` does not follow links inside.
        if meta.is_dir() {
            std::fs::remove_dir_all(sandbox)?;
        } else {
            std::fs::remove_file(sandbox)?;
        }
        // Empty `runs/`, executor and framework directories go too (best effort: a launch
        // creating a sibling at this moment keeps them, and sandbox creation retries once).
        let top = self.work_dir.join("frameworks");
        let mut dir = sandbox.parent();
        while let Some(d) = dir {
            if d == top || !d.starts_with(&top) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// Refuses a path that is not shaped like a sandbox or whose parent resolves outside
/// `<work_dir>/frameworks` (a symlinked directory on the way).
fn confined(work_dir: &Path, sandbox: &Path) -> io::Result<()> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to remove {}: {why}", sandbox.display()),
        ))
    };
    if !is_sandbox_path(work_dir, sandbox) {
        return refuse("not a sandbox under the work dir");
    }
    let top = work_dir.join("frameworks").canonicalize()?;
    let parent = match sandbox.parent() {
        Some(p) => p.canonicalize()?,
        None => return refuse("no parent directory"),
    };
    if !parent.starts_with(&top) {
        return refuse("its directory resolves outside the work dir");
    }
    Ok(())
}

/// Sandboxes under `work_dir` that are not in `live`, with their age by mtime: left over from
/// before a restart, they belong to no run the agent knows and are scheduled like finished ones.
pub fn scan_leftovers(work_dir: &Path, live: &HashSet<PathBuf>) -> Vec<(PathBuf, Duration)> {
    let now = SystemTime::now();
    let mut found = Vec::new();
    let children = |dir: &Path| -> Vec<PathBuf> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                warn!(dir = %dir.display(), "scanning for leftover sandboxes: {e}");
                Vec::new()
            }
        }
    };
    for fw in children(&work_dir.join("frameworks")) {
        for executor in children(&fw.join("executors")) {
            for run in children(&executor.join("runs")) {
                if live.contains(&run) || !is_sandbox_path(work_dir, &run) {
                    continue;
                }
                let age = std::fs::symlink_metadata(&run)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                found.push((run, age));
            }
        }
    }
    found
}

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
            work_dir: work_dir.clone(),
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
mod tests {
    use super::*;
    use std::cell::RefCell;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> GcPolicy {
        GcPolicy {
            max_age: 100 * HOUR,
            disk_headroom: 0.1,
            high_watermark: 0.9,
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn allowed_age_shrinks_as_the_disk_fills() {
        let p = policy();
        assert_eq!(p.allowed_age(0.0), 90 * HOUR);
        assert_eq!(p.allowed_age(0.5), 40 * HOUR);
        assert_eq!(p.allowed_age(0.85), 5 * HOUR);
        assert_eq!(p.allowed_age(0.9), Duration::ZERO);
        assert_eq!(p.allowed_age(1.0), Duration::ZERO);
        assert_eq!(p.allowed_age(f64::NAN), Duration::ZERO);
        let no_headroom = GcPolicy {
            disk_headroom: 0.0,
            ..p
        };
        assert_eq!(no_headroom.allowed_age(0.0), 100 * HOUR);
        // A negative usage (never measured, but a bad input) cannot stretch past max_age.
        assert_eq!(no_headroom.allowed_age(-1.0), 100 * HOUR);
    }

    #[test]
    fn usage_fraction_and_display() {
        let u = DiskUsage {
            total: 2 * 1024 * 1024,
            available: 512 * 1024,
        };
        assert!((u.used_fraction() - 0.75).abs() < 1e-9);
        assert_eq!(u.to_string(), "free 512.0 KiB of 2.0 MiB");
        let empty = DiskUsage {
            total: 0,
            available: 0,
        };
        assert_eq!(empty.used_fraction(), 1.0);
        assert_eq!(bytes(0), "0 B");
        assert_eq!(age(Duration::from_secs(3 * 86400 + 7200)), "3d 2h");
        assert_eq!(age(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn expired_depends_on_age_and_usage_oldest_first() {
        let now = Instant::now();
        let mut s = Schedule::default();
        s.insert("a".into(), 10 * HOUR, now);
        s.insert("b".into(), 50 * HOUR, now);
        s.insert("c".into(), 95 * HOUR, now);
        // Inserting again keeps the first age.
        s.insert("a".into(), 99 * HOUR, now);
        let names = |v: Vec<(PathBuf, Duration)>| -> Vec<String> {
            v.into_iter()
                .map(|(p, _)| p.display().to_string())
                .collect()
        };
        let p = policy();
        assert_eq!(names(s.expired(&p, 0.0, now)), ["c"]);
        assert_eq!(names(s.expired(&p, 0.5, now)), ["c", "b"]);
        assert_eq!(names(s.expired(&p, 0.85, now)), ["c", "b", "a"]);
        // Time passes on the monotonic clock.
        assert_eq!(names(s.expired(&p, 0.0, now + 41 * HOUR)), ["c", "b"]);
        assert_eq!(names(s.oldest_first(now)), ["c", "b", "a"]);
    }

    /// A disk whose usage drops by each removed sandbox's size.
    struct FakeDisk {
        total: u64,
        used: RefCell<u64>,
        sizes: HashMap<PathBuf, u64>,
        removed: RefCell<Vec<PathBuf>>,
        broken: HashSet<PathBuf>,
    }

    impl FakeDisk {
        fn new(total: u64, used: u64, sizes: &[(&str, u64)]) -> Self {
            FakeDisk {
                total,
                used: RefCell::new(used),
                sizes: sizes.iter().map(|(p, s)| (PathBuf::from(p), *s)).collect(),
                removed: RefCell::new(Vec::new()),
                broken: HashSet::new(),
            }
        }
        fn removed(&self) -> Vec<String> {
            self.removed
                .borrow()
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        }
    }

    impl Disk for FakeDisk {
        fn usage(&self) -> io::Result<DiskUsage> {
            Ok(DiskUsage {
                total: self.total,
                available: self.total - *self.used.borrow(),
            })
        }
        fn remove(&self, sandbox: &Path) -> io::Result<()> {
            if self.broken.contains(sandbox) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            let size = self.sizes.get(sandbox).copied().unwrap_or(0);
            *self.used.borrow_mut() -= size;
            self.removed.borrow_mut().push(sandbox.to_path_buf());
            Ok(())
        }
    }

    fn scheduled(now: Instant, entries: &[(&str, u64)]) -> Schedule {
        let mut s = Schedule::default();
        for (p, hours) in entries {
            s.insert((*p).into(), *hours as u32 * HOUR, now);
        }
        s
    }

    #[test]
    fn watermark_removes_oldest_first_until_under_it() {
        let now = Instant::now();
        // At 95% use with no headroom 5 h are allowed: none of these is too old by age.
        let p = GcPolicy {
            disk_headroom: 0.0,
            ..policy()
        };
        let mut s = scheduled(now, &[("new", 1), ("old", 4), ("mid", 2), ("older", 3)]);
        let disk = FakeDisk::new(100, 95, &[("new", 3), ("old", 2), ("mid", 5), ("older", 2)]);
        let done = sweep(&mut s, &p, now, &disk, 100).unwrap();
        // 95% → 93 (old) → 91 (older, still above 90) → 86 (mid): under the watermark.
        assert_eq!(disk.removed(), ["old", "older", "mid"]);
        assert!(done
            .iter()
            .all(|r| matches!(r.why, Why::Watermark { .. }) && r.outcome == Outcome::Removed));
        assert_eq!(s.len(), 1);
        assert!(s.contains(Path::new("new")));
        assert!(done[0]
            .why
            .to_string()
            .starts_with("disk 95% full, above the 90% high watermark"));
    }

    #[test]
    fn age_expiry_comes_first_then_the_watermark_if_still_needed() {
        let now = Instant::now();
        let p = policy(); // at 50% use, 40 h allowed
        let mut s = scheduled(now, &[("a", 45), ("b", 10), ("c", 1)]);
        let disk = FakeDisk::new(100, 50, &[("a", 10)]);
        let done = sweep(&mut s, &p, now, &disk, 100).unwrap();
        assert_eq!(disk.removed(), ["a"]);
        assert_eq!(
            done[0].why,
            Why::Age {
                allowed: 40 * HOUR,
                usage: 0.5
            }
        );
        assert_eq!(s.len(), 2);
        // Nothing to do below the watermark with young sandboxes.
        assert!(sweep(&mut s, &p, now, &disk, 100).unwrap().is_empty());
    }

    #[test]
    fn a_sweep_stops_at_its_budget_and_the_next_one_goes_on() {
        let now = Instant::now();
        let mut s = scheduled(now, &[("a", 200), ("b", 300), ("c", 400)]);
        let disk = FakeDisk::new(100, 10, &[]);
        assert_eq!(sweep(&mut s, &policy(), now, &disk, 2).unwrap().len(), 2);
        assert_eq!(disk.removed(), ["c", "b"]);
        assert_eq!(sweep(&mut s, &policy(), now, &disk, 2).unwrap().len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn a_sandbox_that_cannot_be_removed_is_retried_then_given_up() {
        let now = Instant::now();
        let mut s = scheduled(now, &[("stuck", 200)]);
        let mut disk = FakeDisk::new(100, 10, &[]);
        disk.broken.insert("stuck".into());
        for attempt in 1..=MAX_ATTEMPTS {
            let done = sweep(&mut s, &policy(), now, &disk, 100).unwrap();
            assert_eq!(done.len(), 1);
            assert!(matches!(done[0].outcome, Outcome::Failed(_)));
            assert_eq!(s.contains(Path::new("stuck")), attempt < MAX_ATTEMPTS);
        }
    }

    #[test]
    fn only_sandbox_shaped_paths_are_sandboxes() {
        let w = Path::new("/w");
        assert!(is_sandbox_path(
            w,
            Path::new("/w/frameworks/f/executors/e/runs/k")
        ));
        for bad in [
            "/w/frameworks/f/executors/e/runs",
            "/w/frameworks/f/executors/e/runs/k/x",
            "/w/frameworks/f/executors/e/runs/../../../meta",
            "/w/frameworks/f/other/e/runs/k",
            "/w/meta/updates",
            "/etc",
        ] {
            assert!(!is_sandbox_path(w, Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn real_removal_is_confined_and_prunes_empty_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let run = work.join("frameworks/f/executors/e/runs/k");
        let sibling = work.join("frameworks/f/executors/e2/runs/k2");
        std::fs::create_dir_all(run.join("out")).unwrap();
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(run.join("out/x"), b"x").unwrap();
        let outside = tmp.path().join("precious");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(outside.join("runs/keep")).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        // A symlinked executor dir pointing outside must not be followed.
        std::os::unix::fs::symlink(&outside, work.join("frameworks/f/executors/evil")).unwrap();
        let disk = WorkDirDisk {
            work_dir: work.clone(),
        };
        disk.remove(&run).unwrap();
        assert!(!run.exists());
        assert!(!work.join("frameworks/f/executors/e").exists(), "pruned");
        assert!(sibling.exists());
        let err = disk
            .remove(&work.join("frameworks/f/executors/evil/runs/keep"))
            .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        let err = disk.remove(&work.join("meta")).unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert!(outside.join("keep").exists());
        assert!(outside.join("runs/keep").exists());
    }

    #[test]
    fn leftovers_are_found_by_mtime_except_live_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path();
        let old = work.join("frameworks/f/executors/e/runs/old");
        let live = work.join("frameworks/f/executors/e/runs/live");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        let two_hours_ago = SystemTime::now() - 2 * HOUR;
        std::fs::File::open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let found = scan_leftovers(work, &HashSet::from([live.clone()]));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, old);
        assert!(
            found[0].1 >= 2 * HOUR && found[0].1 < 3 * HOUR,
            "{:?}",
            found[0].1
        );
        assert!(scan_leftovers(&work.join("nothing"), &HashSet::new()).is_empty());
    }
}
