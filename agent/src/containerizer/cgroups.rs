//! Control groups: finding them, making one per container, reading what happened in it,
//! and tearing it down.
//!
//! This file owns every path under `/sys/fs/cgroup`. The rest of the containerizer sees two
//! things: a [`Backend`] (probed once per agent) and a [`ContainerCgroup`] (one per launch).
//!
//! Where the cgroups live (the same choice for v1 and v2):
//!
//! * The parent is `<hierarchy mount>/<parent_name>` at the TOP of each hierarchy
//!   (`/sys/fs/cgroup/bramble` on v2; `/sys/fs/cgroup/memory/bramble` and
//!   `/sys/fs/cgroup/cpu/bramble` on v1), and each container gets `<parent>/<container_id>`.
//!   It is the layout Docker, kubelet (cgroupfs driver) and Mesos use. Why not under the
//!   agent's own cgroup (read from `/proc/self/cgroup`)?
//!   - v2's "no internal processes" rule: the agent lives in its own cgroup, so that cgroup
//!     can't hand memory/cpu down to children without first moving the agent into a leaf;
//!     the root cgroup is exempt, so a top-level parent works as root in a plain shell and
//!     under systemd alike (systemd leaves cgroups it did not create alone).
//!   - Executors must outlive an agent restart (the agent reconnects to them). Under systemd
//!     anything inside the agent's unit cgroup is killed when the unit stops
//!     (`KillMode=control-group`); a top-level parent keeps them outside it.
//! * The agent needs write access to `/sys/fs/cgroup` (root, and no `ProtectControlGroups=`
//!   in its unit). Anything else (non-root, read-only cgroupfs, controllers missing) gives
//!   [`Backend::None`] with the reason, and containers run without limits.
//! * v2: `memory` and `cpu` are enabled in the root's and the parent's
//!   `cgroup.subtree_control`; the parent never holds processes, containers are leaves.
//! * v1: the `memory` and `cpu` hierarchies are separate mounts (found in
//!   `/proc/self/mountinfo`, so `cpu,cpuacct` co-mounts work too); a container has one
//!   directory in each.
//!
//! Limits: memory is a hard limit with no swap (v2 `memory.max` + `memory.swap.max=0` +
//! `memory.oom.group=1`; v1 `memory.limit_in_bytes` + `memory.memsw.limit_in_bytes`); cpu is
//! a CFS quota over a 100 ms period plus a proportional weight (v2 `cpu.max` + `cpu.weight`,
//! v1 `cpu.cfs_quota_us` + `cpu.shares`).
//!
//! Parsing is kept in pure functions over `&str` so the v2 path is unit-tested on a v1 box.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// CFS period used for cpu quotas, in microseconds (the kernel default).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// Which cgroup interface the containerizer drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2, the unified hierarchy (Raspberry Pi OS Bookworm and newer).
    V2,
    /// cgroup v1 with separate `memory` and `cpu` hierarchies.
    V1,
    /// No cgroups: processes run without limits.
    None,
}

/// A cgroup failure, with the path it concerns. Turned into a `ContainerError` by the caller.
#[derive(Debug)]
pub(crate) struct CgroupError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for CgroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

fn ctx(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError {
        action,
        path,
        source,
    }
}

/// The probed cgroup setup of this machine; the parent cgroup(s) exist once this is built.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    V2 {
        parent: PathBuf,
        memory: bool,
        cpu: bool,
    },
    V1 {
        memory_parent: Option<PathBuf>,
        cpu_parent: Option<PathBuf>,
    },
    None {
        reason: String,
    },
}

impl Backend {
    pub fn mode(&self) -> CgroupMode {
        match self {
            Backend::V2 { .. } => CgroupMode::V2,
            Backend::V1 { .. } => CgroupMode::V1,
            Backend::None { .. } => CgroupMode::None,
        }
    }

    /// One human line, used by the startup log and by test skip messages.
    pub fn summary(&self) -> String {
        match self {
            Backend::V2 {
                parent,
                memory,
                cpu,
            } => format!(
                "cgroup v2 (unified) under {} with controllers:{}{}",
                parent.display(),
                if *memory { " memory" } else { "" },
                if *cpu { " cpu" } else { "" },
            ),
            Backend::V1 {
                memory_parent,
                cpu_parent,
            } => {
                let show = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map_or_else(|| "unavailable".to_string(), |p| p.display().to_string())
                };
                format!(
                    "cgroup v1 with memory at {} and cpu at {}",
                    show(memory_parent),
                    show(cpu_parent)
                )
            }
            Backend::None { reason } => format!("no cgroups, running without limits: {reason}"),
        }
    }

    /// Probes the machine: which hierarchy has the controllers, and can we make our parent.
    pub fn detect(parent_name: &str) -> Backend {
        let mountinfo = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => text,
            Err(e) => {
                return Backend::None {
                    reason: format!("reading /proc/self/mountinfo: {e}"),
                }
            }
        };
        let mounts = parse_mountinfo(&mountinfo);
        let unified = mounts
            .iter()
            .find(|m| m.fstype == "cgroup2")
            .map(|m| m.mount_point.clone());
        let v1_with = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
                .map(|m| m.mount_point.clone())
        };
        let (v1_memory, v1_cpu) = (v1_with("memory"), v1_with("cpu"));

        // Prefer v2 when it actually carries a controller; on hybrid systems the v2 mount
        // (`/sys/fs/cgroup/unified`) is empty and the controllers sit in v1.
        if let Some(root) = unified {
            let available = fs::read_to_string(root.join("cgroup.controllers"))
                .map(|t| parse_controllers(&t))
                .unwrap_or_default();
            let (memory, cpu) = (available.contains("memory"), available.contains("cpu"));
            if memory || cpu {
                return match setup_v2_parent(&root, parent_name, memory, cpu) {
                    Ok(parent) => Backend::V2 {
                        parent,
                        memory,
                        cpu,
                    },
                    Err(e) => Backend::None {
                        reason: format!("cgroup v2 at {} not usable: {e}", root.display()),
                    },
                };
            }
        }
        if v1_memory.is_none() && v1_cpu.is_none() {
            return Backend::None {
                reason: "no cgroup hierarchy with the memory or cpu controller is mounted".into(),
            };
        }
        let make = |root: &Option<PathBuf>| -> Result<Option<PathBuf>, CgroupError> {
            match root {
                Some(root) => {
                    let parent = root.join(parent_name);
                    mkdir_existing_ok(&parent)?;
                    Ok(Some(parent))
                }
                None => Ok(None),
            }
        };
        match (make(&v1_memory), make(&v1_cpu)) {
            (Ok(memory_parent), Ok(cpu_parent)) => Backend::V1 {
                memory_parent,
                cpu_parent,
            },
            (Err(e), _) | (_, Err(e)) => Backend::None {
                reason: format!("cgroup v1 not writable: {e}"),
            },
        }
    }

    /// Makes (and limits) the cgroup of one container. `Ok(None)` without cgroups.
    pub fn create(
        &self,
        container_id: &str,
        cpus: f64,
        mem_mib: u64,
    ) -> Result<Option<ContainerCgroup>, CgroupError> {
        match self {
            Backend::None { .. } => Ok(None),
            Backend::V2 {
                parent,
                memory,
                cpu,
            } => {
                let dir = parent.join(container_id);
                make_fresh_dir(&dir)?;
                let cg = ContainerCgroup {
                    v2: true,
                    dirs: vec![dir.clone()],
                    memory_dir: memory.then(|| dir.clone()),
                    mem_mib,
                };
                // On any error below, drop `cg` after removing the directory we just made.
                let apply = || -> Result<(), CgroupError> {
                    if *memory && mem_mib > 0 {
                        write_file(&dir.join("memory.max"), &mib_to_bytes(mem_mib).to_string())?;
                        write_if_present(&dir.join("memory.swap.max"), "0")?;
                    }
                    if *memory {
                        // The whole container dies together on OOM, like a v1 memcg OOM would
                        // leave it unusable anyway; the agent reports it once.
                        write_if_present(&dir.join("memory.oom.group"), "1")?;
                    }
                    if *cpu && cpus > 0.0 {
                        write_file(&dir.join("cpu.max"), &cpu_max(cpus))?;
                        write_if_present(&dir.join("cpu.weight"), &cpu_weight(cpus).to_string())?;
                    }
                    Ok(())
                };
                match apply() {
                    Ok(()) => Ok(Some(cg)),
                    Err(e) => {
                        let _ = fs::remove_dir(&dir);
                        Err(e)
                    }
                }
            }
            Backend::V1 {
                memory_parent,
                cpu_parent,
            } => {
                let mut cg = ContainerCgroup {
                    v2: false,
                    dirs: Vec::new(),
                    memory_dir: None,
                    mem_mib,
                };
                let apply = |cg: &mut ContainerCgroup| -> Result<(), CgroupError> {
                    if let Some(parent) = memory_parent {
                        let dir = parent.join(container_id);
                        make_fresh_dir(&dir)?;
                        cg.dirs.push(dir.clone());
                        cg.memory_dir = Some(dir.clone());
                        if mem_mib > 0 {
                            let bytes = mib_to_bytes(mem_mib).to_string();
                            // memsw must stay >= the memory limit, so set memory first.
                            write_file(&dir.join("memory.limit_in_bytes"), &bytes)?;
                            write_if_present(&dir.join("memory.memsw.limit_in_bytes"), &bytes)?;
                        }
                    }
                    if let Some(parent) = cpu_parent {
                        let dir = parent.join(container_id);
                        make_fresh_dir(&dir)?;
                        cg.dirs.push(dir.clone());
                        if cpus > 0.0 {
                            let (quota, period) = cfs_quota(cpus);
                            write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                            write_if_present(
                                &dir.join("cpu.shares"),
                                &cpu_shares(cpus).to_string(),
                            )?;
                        }
                    }
                    Ok(())
                };
                match apply(&mut cg) {
                    Ok(()) => Ok(Some(cg)),
                    Err(e) => {
                        for dir in &cg.dirs {
                            let _ = fs::remove_dir(dir);
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// Removes the (empty) parent cgroups. Fails while containers still exist.
    pub fn remove_parent(&self) -> Result<(), CgroupError> {
        let parents: Vec<&PathBuf> = match self {
            Backend::V2 { parent, .. } => vec![parent],
            Backend::V1 {
                memory_parent,
                cpu_parent,
            } => memory_parent.iter().chain(cpu_parent.iter()).collect(),
            Backend::None { .. } => Vec::new(),
        };
        for parent in parents {
            match fs::remove_dir(parent) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ctx("removing cgroup", parent)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// v2: make `<root>/<parent_name>` and let memory/cpu flow from the root down to it.
fn setup_v2_parent(
    root: &Path,
    parent_name: &str,
    memory: bool,
    cpu: bool,
) -> Result<PathBuf, CgroupError> {
    let wanted: Vec<&str> = [("memory", memory), ("cpu", cpu)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(c, _)| *c)
        .collect();
    enable_controllers(root, &wanted)?;
    let parent = root.join(parent_name);
    mkdir_existing_ok(&parent)?;
    enable_controllers(&parent, &wanted)?;
    Ok(parent)
}

/// Adds each controller not yet in `dir/cgroup.subtree_control`.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file)
        .map(|t| parse_controllers(&t))
        .map_err(ctx("reading", &file))?;
    for c in controllers.iter().filter(|c| !enabled.contains(**c)) {
        write_file(&file, &format!("+{c}"))?;
    }
    Ok(())
}

/// The cgroup directories of one container (one on v2; one per hierarchy on v1).
#[derive(Debug)]
pub(crate) struct ContainerCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    mem_mib: u64,
}

impl ContainerCgroup {
    /// The cgroup of a container launched by a previous agent process, from its directories
    /// as checkpointed (those still present). `None` when none is left.
    pub fn existing(dirs: &[PathBuf], mem_mib: u64) -> Option<ContainerCgroup> {
        let dirs: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
        if dirs.is_empty() {
            return None;
        }
        let v2 = dirs.iter().any(|d| d.join("cgroup.controllers").exists());
        let memory_file = if v2 {
            "memory.max"
        } else {
            "memory.oom_control"
        };
        let memory_dir = dirs.iter().find(|d| d.join(memory_file).exists()).cloned();
        Some(ContainerCgroup {
            v2,
            dirs,
            memory_dir,
            mem_mib,
        })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` of every directory, opened for writing by the parent before fork so the
    /// child can join with a single `write(fd, "0")` (see `process.rs`).
    pub fn open_procs(&self) -> Result<Vec<fs::File>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(ctx("opening", &path))
            })
            .collect()
    }

    /// Pids currently in the container (union over hierarchies).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for dir in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.into_iter().collect()
    }

    /// SIGKILLs everything in the container, including processes that left the process group.
    pub fn kill_all(&self) {
        if self.v2 {
            // cgroup.kill (Linux 5.14+) is atomic against forks; fall through if absent.
            if let Some(dir) = self.dirs.first() {
                if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        for pid in self.pids() {
            // ESRCH: it exited between reading cgroup.procs and now.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Did the kernel's OOM killer act inside this container? `exit_signal` is the leader's.
    pub fn memory_limit_exceeded(&self, exit_signal: Option<i32>) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        if self.mem_mib == 0 {
            return false;
        }
        let counter = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        if let Some(n) = fs::read_to_string(dir.join(counter))
            .ok()
            .and_then(|t| parse_keyed(&t, "oom_kill"))
        {
            return n > 0;
        }
        // Kernels before 4.13 have no v1 oom_kill counter: hitting the limit and dying by
        // SIGKILL is the best evidence there is.
        !self.v2
            && exit_signal == Some(Signal::SIGKILL as i32)
            && fs::read_to_string(dir.join("memory.failcnt"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
                > 0
    }

    /// Kills what is left and removes the directories, retrying while the kernel still counts
    /// dying processes as members. Returns the directories it could not remove.
    pub async fn destroy(&self, deadline: Duration) -> Vec<(PathBuf, io::Error)> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if !self.pids().is_empty() {
                self.kill_all();
            }
            let mut failed = Vec::new();
            for dir in &self.dirs {
                match fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => failed.push((dir.clone(), e)),
                }
            }
            if failed.is_empty() || tokio::time::Instant::now() >= until {
                return failed;
            }
            // Polling is the only interface: rmdir has no "wait until empty".
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ----- pure helpers -----

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

fn mib_to_bytes(mib: u64) -> u64 {
    mib.saturating_mul(1024 * 1024)
}

// ----- filesystem helpers -----

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(ctx("writing", path))
}

/// For knobs that depend on kernel config (`memory.swap.max` without swap accounting, ...).
fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write_file(path, value)
    } else {
        Ok(())
    }
}

fn mkdir_existing_ok(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(ctx("creating cgroup", dir)(e)),
        _ => Ok(()),
    }
}

/// A container's cgroup must be new; an empty leftover (e.g. from a crashed agent) is
/// recreated so stale limits and counters never leak into a new container.
fn make_fresh_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_dir(dir).map_err(ctx(
                "removing leftover cgroup (is that container still running?)",
                dir,
            ))?;
            fs::create_dir(dir).map_err(ctx("creating cgroup", dir))
        }
        Err(e) => Err(ctx("creating cgroup", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_v1_controllers_and_v2_mount() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 31 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
garbage line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            mounts[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(mounts[1].super_options.iter().any(|o| o == "cpu"));
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert_eq!(mounts[4].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn proc_cgroup_parses_v1_and_v2_entries() {
        let v1 = "4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n";
        let entries = parse_proc_cgroup(v1);
        assert_eq!(
            cgroup_path_of(&entries, Some("memory")).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(
            cgroup_path_of(&entries, Some("cpuacct")).as_deref(),
            Some("/")
        );
        assert_eq!(cgroup_path_of(&entries, None).as_deref(), Some("/"));
        assert_eq!(cgroup_path_of(&entries, Some("pids")), None);

        let v2 = "0::/system.slice/bramble-agent.service\n";
        let entries = parse_proc_cgroup(v2);
        assert_eq!(
            cgroup_path_of(&entries, None).as_deref(),
            Some("/system.slice/bramble-agent.service")
        );
        assert_eq!(cgroup_path_of(&entries, Some("memory")), None);
    }

    #[test]
    fn controllers_and_keyed_files_parse() {
        let c = parse_controllers("cpuset cpu io memory pids\n");
        assert!(c.contains("memory") && c.contains("cpu") && !c.contains("hugetlb"));
        assert!(parse_controllers("\n").is_empty());

        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "oom"), Some(1));
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(0));
        assert_eq!(parse_keyed("under_oom 0\n", "oom_kill"), None);
    }

    #[test]
    fn cpu_limits_convert_to_kernel_units() {
        assert_eq!(cpu_max(1.0), "100000 100000");
        assert_eq!(cpu_max(0.5), "50000 100000");
        assert_eq!(cpu_max(2.25), "225000 100000");
        assert_eq!(
            cpu_max(0.001),
            "1000 100000",
            "clamped to the kernel minimum quota"
        );
        assert_eq!(cfs_quota(1.5), (150_000, 100_000));
        assert_eq!(cpu_weight(1.0), 100);
        assert_eq!(cpu_weight(0.001), 1);
        assert_eq!(cpu_weight(1000.0), 10_000);
        assert_eq!(cpu_shares(0.5), 512);
        assert_eq!(cpu_shares(0.0001), 2);
    }

    /// Drives the v2 setup against a directory laid out like a v2 root, so the v2 path is
    /// exercised on v1 machines too.
    #[test]
    fn v2_setup_enables_controllers_and_writes_limits() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "memory\n").unwrap();

        // The fake kernel: a new cgroup dir has these files.
        let parent = root.join("bramble");
        fs::create_dir(&parent).unwrap();
        fs::write(parent.join("cgroup.subtree_control"), "").unwrap();

        let got = setup_v2_parent(root, "bramble", true, true).expect("setup");
        assert_eq!(got, parent);
        // A real kernel turns "+cpu" into a list; the fake file keeps the last write.
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        assert_eq!(
            fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );

        let backend = Backend::V2 {
            parent: parent.clone(),
            memory: true,
            cpu: true,
        };
        let cg = backend
            .create("task-1", 0.5, 64)
            .expect("create")
            .expect("some cgroup");
        let dir = parent.join("task-1");
        assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert!(
            !dir.join("memory.swap.max").exists(),
            "absent knobs are not created"
        );

        fs::write(dir.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert!(cg.memory_limit_exceeded(None));
        fs::write(dir.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        assert!(!cg.memory_limit_exceeded(Some(9)));
    }

    #[test]
    fn v2_setup_reports_the_path_that_failed() {
        let root = tempfile::tempdir().expect("tempdir");
        // No cgroup.subtree_control: like a read-only or foreign tree.
        let err = setup_v2_parent(root.path(), "bramble", true, false).expect_err("must fail");
        assert!(err.path.ends_with("cgroup.subtree_control"), "{err}");
        assert!(err.to_string().starts_with("reading "), "{err}");
    }
}
