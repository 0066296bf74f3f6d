use super::disk::WorkDirDisk;
use super::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::SystemTime;

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
        work_dir: WorkDir::new(&work),
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
