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
//! * v2: `memory`, `cpu` and `pids` are enabled in the root's and the parent's
//!   `cgroup.subtree_control`; the parent never holds processes, containers are leaves.
//! * v1: the `memory`, `cpu` and `pids` hierarchies are separate mounts (found in
//!   `/proc/self/mountinfo`, so `cpu,cpuacct` co-mounts work too); a container has one
//!   directory in each.
//!
//! Limits: memory is a hard limit with no swap (v2 `memory.max` + `memory.swap.max=0` +
//! `memory.oom.group=1`; v1 `memory.limit_in_bytes` + `memory.memsw.limit_in_bytes`); cpu is
//! a CFS quota over a 100 ms period plus a proportional weight (v2 `cpu.max` + `cpu.weight`,
//! v1 `cpu.cfs_quota_us` + `cpu.shares`); the number of processes (and threads) is capped by
//! `pids.max` (the agent's `container_pids_max`), so a fork bomb stays in its container.
//!
//! Parsing is kept in pure functions over `&str` so the v2 path is unit-tested on a v1 box.
//!
//! Files: this one (probing, the backend and a container's cgroup once made), `v2.rs` and
//! `v1.rs` (making the parent and a container's cgroup in each interface), `parse.rs` (the
//! kernel's text formats and units, pure).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod parse;
mod v1;
mod v2;

pub(crate) use parse::*;

/// A cgroup failure: what was being done, the path it concerns, the OS error. Turned into a
/// `ContainerError` by the caller.
pub(crate) type CgroupError = bramble_proto::durable::FileError;
use bramble_proto::durable::FileError;

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

/// The probed cgroup setup of this machine; the parent cgroup(s) exist once this is built.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    V2 {
        parent: PathBuf,
        memory: bool,
        cpu: bool,
        pids: bool,
    },
    V1 {
        memory_parent: Option<PathBuf>,
        cpu_parent: Option<PathBuf>,
        pids_parent: Option<PathBuf>,
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
                pids,
            } => format!(
                "cgroup v2 (unified) under {} with controllers:{}{}{}",
                parent.display(),
                if *memory { " memory" } else { "" },
                if *cpu { " cpu" } else { "" },
                if *pids { " pids" } else { "" },
            ),
            Backend::V1 {
                memory_parent,
                cpu_parent,
                pids_parent,
            } => {
                let show = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map_or_else(|| "unavailable".to_string(), |p| p.display().to_string())
                };
                format!(
                    "cgroup v1 with memory at {}, cpu at {} and pids at {}",
                    show(memory_parent),
                    show(cpu_parent),
                    show(pids_parent)
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
        let (v1_memory, v1_cpu, v1_pids) = (v1_with("memory"), v1_with("cpu"), v1_with("pids"));

        // Prefer v2 when it actually carries a controller; on hybrid systems the v2 mount
        // (`/sys/fs/cgroup/unified`) is empty and the controllers sit in v1.
        if let Some(root) = unified {
            let available = fs::read_to_string(root.join("cgroup.controllers"))
                .map(|t| parse_controllers(&t))
                .unwrap_or_default();
            let (memory, cpu) = (available.contains("memory"), available.contains("cpu"));
            let pids = available.contains("pids");
            if memory || cpu {
                return match v2::setup_parent(&root, parent_name, memory, cpu, pids) {
                    Ok(parent) => Backend::V2 {
                        parent,
                        memory,
                        cpu,
                        pids,
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
        let roots = v1::Roots {
            memory: v1_memory.as_deref(),
            cpu: v1_cpu.as_deref(),
            pids: v1_pids.as_deref(),
        };
        match v1::setup_parents(&roots, parent_name) {
            Ok(parents) => Backend::V1 {
                memory_parent: parents.memory,
                cpu_parent: parents.cpu,
                pids_parent: parents.pids,
            },
            Err(e) => Backend::None {
                reason: format!("cgroup v1 not writable: {e}"),
            },
        }
    }

    /// Makes (and limits) the cgroup of one container. `Ok(None)` without cgroups.
    pub fn create(
        &self,
        container_id: &str,
        limits: &CgroupLimits,
    ) -> Result<Option<ContainerCgroup>, CgroupError> {
        match self {
            Backend::None { .. } => Ok(None),
            Backend::V2 {
                parent,
                memory,
                cpu,
                pids,
            } => {
                let controllers = v2::Controllers {
                    memory: *memory,
                    cpu: *cpu,
                    pids: *pids,
                };
                v2::create(parent, &controllers, container_id, limits).map(Some)
            }
            Backend::V1 {
                memory_parent,
                cpu_parent,
                pids_parent,
            } => {
                let parents = v1::Parents {
                    memory: memory_parent.clone(),
                    cpu: cpu_parent.clone(),
                    pids: pids_parent.clone(),
                };
                v1::create(&parents, container_id, limits).map(Some)
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
                pids_parent,
            } => memory_parent
                .iter()
                .chain(cpu_parent.iter())
                .chain(pids_parent.iter())
                .collect(),
            Backend::None { .. } => Vec::new(),
        };
        for parent in parents {
            match fs::remove_dir(parent) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(FileError::at("removing cgroup", parent)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What a container's cgroup is limited to; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct CgroupLimits {
    pub cpus: f64,
    pub mem_mib: u64,
    pub pids_max: u64,
}

/// The cgroup directories of one container (one on v2; one per hierarchy on v1).
#[derive(Debug)]
pub(crate) struct ContainerCgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
    memory_dir: Option<PathBuf>,
    /// The memory limit set (0: none); raised by `set_limits`.
    mem_mib: AtomicU64,
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
            mem_mib: AtomicU64::new(mem_mib),
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
                    .map_err(FileError::at("opening", &path))
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

    /// Changes the cpu and memory limits of a running container (a custom executor's, as its
    /// tasks come and go). Memory is only ever raised: lowering a hard limit under the
    /// container's usage would make the kernel reclaim or OOM-kill it (Mesos raises only,
    /// too). A knob the container's cgroup does not have (controller missing) is skipped.
    pub fn set_limits(&self, cpus: f64, mem_mib: u64) -> Result<(), CgroupError> {
        let raise_memory = mem_mib > self.mem_mib();
        for dir in &self.dirs {
            if self.v2 {
                if raise_memory && dir.join("memory.max").exists() {
                    write_file(&dir.join("memory.max"), &mib_to_bytes(mem_mib).to_string())?;
                }
                if cpus > 0.0 && dir.join("cpu.max").exists() {
                    write_file(&dir.join("cpu.max"), &cpu_max(cpus))?;
                    write_if_present(&dir.join("cpu.weight"), &cpu_weight(cpus).to_string())?;
                }
            } else {
                if raise_memory && dir.join("memory.limit_in_bytes").exists() {
                    let bytes = mib_to_bytes(mem_mib).to_string();
                    // memsw must stay >= the memory limit: when raising, memsw goes first.
                    write_if_present(&dir.join("memory.memsw.limit_in_bytes"), &bytes)?;
                    write_file(&dir.join("memory.limit_in_bytes"), &bytes)?;
                }
                if cpus > 0.0 && dir.join("cpu.cfs_quota_us").exists() {
                    let (quota, period) = cfs_quota(cpus);
                    write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    write_if_present(&dir.join("cpu.shares"), &cpu_shares(cpus).to_string())?;
                }
            }
        }
        if raise_memory {
            self.mem_mib.store(mem_mib, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The memory limit it has now, in MiB (0: none).
    pub fn mem_mib(&self) -> u64 {
        self.mem_mib.load(Ordering::Relaxed)
    }

    /// Did the kernel's OOM killer act inside this container? `exit_signal` is the leader's.
    pub fn memory_limit_exceeded(&self, exit_signal: Option<i32>) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        if self.mem_mib() == 0 {
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

// ----- filesystem helpers, shared by v1 and v2 -----

pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(FileError::at("writing", path))
}

/// For knobs that depend on kernel config (`memory.swap.max` without swap accounting, ...).
pub(super) fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write_file(path, value)
    } else {
        Ok(())
    }
}

pub(super) fn mkdir_existing_ok(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(FileError::at("creating cgroup", dir)(e))
        }
        _ => Ok(()),
    }
}

/// A container's cgroup must be new; an empty leftover (e.g. from a crashed agent) is
/// recreated so stale limits and counters never leak into a new container.
pub(super) fn make_fresh_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_dir(dir).map_err(FileError::at(
                "removing leftover cgroup (is that container still running?)",
                dir,
            ))?;
            fs::create_dir(dir).map_err(FileError::at("creating cgroup", dir))
        }
        Err(e) => Err(FileError::at("creating cgroup", dir)(e)),
    }
}

#[cfg(test)]
mod tests;
