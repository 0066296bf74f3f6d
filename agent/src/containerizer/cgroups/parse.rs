//! The kernel's cgroup text formats and units, as pure functions over `&str` and numbers:
//! `/proc/self/mountinfo`, `/proc/<pid>/cgroup`, controller lists, flat keyed files, and the
//! conversion of cpus and MiB into v1 and v2 knob values. Unit-tested in `tests.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// CFS period used for cpu quotas, in microseconds (the kernel default).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (see proc(5)); lines it can't read are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let _source = right.next()?;
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect();
            Some(Mount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`. The v2 entry is `0::/path` (no controllers).
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let path = parts.next()?.to_string();
            Some(ProcCgroup {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// The cgroup path of a process for a v1 `controller`, or for v2 with `None`.
pub(crate) fn cgroup_path_of(entries: &[ProcCgroup], controller: Option<&str>) -> Option<String> {
    entries
        .iter()
        .find(|e| match controller {
            None => e.hierarchy == 0 && e.controllers.is_empty(),
            Some(c) => e.controllers.iter().any(|x| x == c),
        })
        .map(|e| e.path.clone())
}

/// Parses `cgroup.controllers` / `cgroup.subtree_control` (space separated names).
pub(crate) fn parse_controllers(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Reads `key N` from a flat keyed file (`memory.events`, `memory.oom_control`).
pub(crate) fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US)
}

/// v2 `cpu.max` for a number of cpus: `"<quota> <period>"` in microseconds.
pub(crate) fn cpu_max(cpus: f64) -> String {
    format!("{} {}", cpu_quota_us(cpus), CPU_PERIOD_US)
}

/// v1 `(cpu.cfs_quota_us, cpu.cfs_period_us)`.
pub(crate) fn cfs_quota(cpus: f64) -> (u64, u64) {
    (cpu_quota_us(cpus), CPU_PERIOD_US)
}

/// v2 `cpu.weight` (1..=10000, default 100 per cpu).
pub(crate) fn cpu_weight(cpus: f64) -> u64 {
    ((cpus * 100.0).round() as u64).clamp(1, 10_000)
}

/// v1 `cpu.shares` (1024 per cpu, kernel minimum 2).
pub(crate) fn cpu_shares(cpus: f64) -> u64 {
    ((cpus * 1024.0).round() as u64).max(2)
}

pub(crate) fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(1024 * 1024)
}
