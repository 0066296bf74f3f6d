//! The sandbox gc's policy: how long a finished sandbox may live at a given disk usage, the
//! schedule of finished sandboxes, and one sweep over it. Pure: the disk is behind the
//! [`Disk`] trait and the caller passes the time, so every rule is unit-tested without a
//! disk or a clock (`tests.rs`). The rules themselves are in the header of `mod.rs`.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default `[gc] max_age_secs`: three days, a weekend of logs on a small SD card.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);
/// Default `[gc] disk_headroom` (Mesos's `gc_disk_headroom`).
pub const DEFAULT_HEADROOM: f64 = 0.1;
/// Default `[gc] disk_high_watermark`.
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.9;
/// Default `[gc] interval_secs`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// A sandbox that cannot be removed is retried this many sweeps, then given up (and logged).
pub(super) const MAX_ATTEMPTS: u32 = 3;
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
