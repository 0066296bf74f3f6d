//! What this machine offers the cluster, and the facts frameworks may place tasks by.
//!
//! Detection runs once at agent start. Each resource is either detected or replaced wholesale
//! by an operator override from the config file; an overridden resource is not probed at all,
//! so a machine without `/proc/meminfo` (or with a work dir on an odd filesystem) still starts
//! when the operator says what to offer.
//!
//! The agent never offers everything it sees: the OS, the agent itself and the executors'
//! bookkeeping need room too, and a Pi that swaps or fills its SD card stops answering
//! heartbeats. The reserves are:
//!
//! * **memory**: `clamp(10% of MemTotal, 128 MiB, 1 GiB)`. A Pi Zero 2 W (≈430 MiB visible
//!   after the GPU split) keeps 128 MiB and offers ≈300 MiB; a 4 GiB Pi 4 keeps ≈380 MiB; an
//!   8 GiB Pi 5 keeps ≈790 MiB; anything bigger keeps 1 GiB.
//! * **disk**: `min(5% of the filesystem's size, 512 MiB)`, taken from the space available
//!   to unprivileged users on the filesystem holding the work dir. Tasks' sandboxes, the
//!   checkpointed status updates and the journal all share that filesystem.
//! * **cpus**: none reserved (the agent is mostly idle); but the count honours CPU affinity
//!   and a cgroup v2 `cpu.max` quota on the agent's own cgroup or its ancestors, so an agent
//!   started under `CPUQuota=150%` offers 1.5 cpus.
//!
//! Parsing helpers take `&str` so they are tested without the machine's real files.

use bramble_proto::{PortRange, Resources};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tracing::{debug, warn};

/// Mesos's default port range for tasks, offered unless the config says otherwise.
pub const DEFAULT_PORTS: PortRange = PortRange {
    begin: 31000,
    end: 32000,
};
/// Memory reserve for the OS and the agent: never less than this...
pub const MEM_RESERVE_MIN_MIB: u64 = 128;
/// ...never more than this...
pub const MEM_RESERVE_MAX_MIB: u64 = 1024;
/// ...and otherwise this percentage of MemTotal.
pub const MEM_RESERVE_PERCENT: u64 = 10;
/// Disk reserve: this percentage of the filesystem size...
pub const DISK_RESERVE_PERCENT: u64 = 5;
/// ...capped at this.
pub const DISK_RESERVE_MAX_MIB: u64 = 512;

const MIB: u64 = 1024 * 1024;

/// Operator-chosen values that replace detected ones (config keys `cpus`, `mem`, `disk`,
/// `ports`). `None` means "detect".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceOverrides {
    pub cpus: Option<f64>,
    pub mem_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    pub ports: Option<Vec<PortRange>>,
}

/// Why the machine's resources could not be detected.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("detecting {what}: reading {}: {source} (set `{key}` in the agent config to skip detection)", .path.display())]
    Io {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("detecting {what}: {}: {message} (set `{key}` in the agent config to skip detection)", .path.display())]
    Parse {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("invalid override `{key}`: {message}")]
    InvalidOverride { key: &'static str, message: String },
}

/// Detects what this machine offers, with `overrides` replacing detected values.
///
/// `work_dir` need not exist yet: disk space is measured on the filesystem of its nearest
/// existing ancestor.
pub fn detect(work_dir: &Path, overrides: &ResourceOverrides) -> Result<Resources, ResourceError> {
    detect_at(Path::new("/"), work_dir, overrides)
}

fn detect_at(
    root: &Path,
    work_dir: &Path,
    overrides: &ResourceOverrides,
) -> Result<Resources, ResourceError> {
    let cpus = match overrides.cpus {
        Some(c) if c.is_finite() && c > 0.0 => c,
        Some(c) => {
            return Err(ResourceError::InvalidOverride {
                key: "cpus",
                message: format!("must be a positive number, got {c}"),
            })
        }
        None => detect_cpus(root),
    };
    let mem_mib = match overrides.mem_mib {
        Some(m) => m,
        None => detect_mem_mib(root)?,
    };
    let disk_mib = match overrides.disk_mib {
        Some(d) => d,
        None => detect_disk_mib(work_dir)?,
    };
    let ports = overrides
        .ports
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_PORTS]);
    Ok(Resources::new(cpus, mem_mib)
        .with_disk(disk_mib)
        .with_ports(ports))
}

/// Online CPUs usable by this process (affinity-aware), lowered to a cgroup v2 quota when one
/// applies. Never less than 0.001 (one thousandth is the smallest unit the master counts).
fn detect_cpus(root: &Path) -> f64 {
    let online = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let quota = cgroup_cpu_limit(root);
    debug!(online, ?quota, "detected cpus");
    match quota {
        Some(q) if q < online => q.max(0.001),
        _ => online,
    }
}

/// The tightest `cpu.max` quota on this process's cgroup v2 path, in cores.
fn cgroup_cpu_limit(root: &Path) -> Option<f64> {
    let own = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let rel = parse_cgroup_v2_path(&own)?;
    let base = root.join("sys/fs/cgroup");
    let mut dir = base.join(rel.trim_start_matches('/'));
    let mut limit: Option<f64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
            if let Some(q) = parse_cpu_max(&text) {
                limit = Some(limit.map_or(q, |l| l.min(q)));
            }
        }
        if dir == base || !dir.pop() || !dir.starts_with(&base) {
            break;
        }
    }
    limit
}

/// The cgroup v2 path from `/proc/self/cgroup` (the `0::/path` line), if any.
pub fn parse_cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

/// Cores allowed by a cgroup v2 `cpu.max` (`"150000 100000"` → 1.5; `"max 100000"` → None).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: f64 = parts.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

fn detect_mem_mib(root: &Path) -> Result<u64, ResourceError> {
    let path = root.join("proc/meminfo");
    let text = std::fs::read_to_string(&path).map_err(|source| ResourceError::Io {
        what: "memory",
        key: "mem",
        path: path.clone(),
        source,
    })?;
    let total = meminfo_total_mib(&text).map_err(|message| ResourceError::Parse {
        what: "memory",
        key: "mem",
        path,
        message,
    })?;
    let reserve = mem_reserve_mib(total);
    if total <= reserve {
        warn!(
            total_mib = total,
            reserve_mib = reserve,
            "memory is no larger than the OS reserve; offering none"
        );
    }
    Ok(total.saturating_sub(reserve))
}

/// `MemTotal` from the text of `/proc/meminfo`, in MiB (rounded down).
pub fn meminfo_total_mib(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .ok_or("no MemTotal line")?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unreadable MemTotal line {line:?}"))?;
    match fields.next() {
        Some("kB") | Some("KiB") => Ok(value / 1024),
        None => Ok(value / MIB),
        Some(unit) => Err(format!("unexpected unit {unit:?} in MemTotal line")),
    }
}

/// Memory kept back for the OS and the agent: `clamp(10% of total, 128 MiB, 1 GiB)`.
pub fn mem_reserve_mib(total_mib: u64) -> u64 {
    (total_mib * MEM_RESERVE_PERCENT / 100).clamp(MEM_RESERVE_MIN_MIB, MEM_RESERVE_MAX_MIB)
}

/// Disk kept back on the work dir's filesystem: `min(5% of its size, 512 MiB)`.
pub fn disk_reserve_mib(fs_size_mib: u64) -> u64 {
    (fs_size_mib * DISK_RESERVE_PERCENT / 100).min(DISK_RESERVE_MAX_MIB)
}

fn detect_disk_mib(work_dir: &Path) -> Result<u64, ResourceError> {
    // The work dir is created later by the agent; measure the filesystem it will live on.
    let mut probe = work_dir.to_path_buf();
    while !probe.exists() && probe.pop() {}
    if probe.as_os_str().is_empty() {
        probe = PathBuf::from(".");
    }
    let st = nix::sys::statvfs::statvfs(&probe).map_err(|errno| ResourceError::Io {
        what: "disk",
        key: "disk",
        path: probe.clone(),
        source: std::io::Error::from(errno),
    })?;
    let frsize = st.fragment_size() as u64;
    let size_mib = (st.blocks() as u64).saturating_mul(frsize) / MIB;
    let avail_mib = (st.blocks_available() as u64).saturating_mul(frsize) / MIB;
    let reserve = disk_reserve_mib(size_mib);
    debug!(path = %probe.display(), size_mib, avail_mib, reserve, "detected disk");
    Ok(avail_mib.saturating_sub(reserve))
}

/// Facts about this machine that frameworks may place tasks by: `arch`, `os`, and on a Pi
/// `pi_model` and `serial` from the device tree. `root` is `/` in production.
pub fn attributes(root: &Path) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    attrs.insert("arch".to_owned(), std::env::consts::ARCH.to_owned());
    attrs.insert("os".to_owned(), "linux".to_owned());
    for (file, key) in [("model", "pi_model"), ("serial-number", "serial")] {
        if let Some(value) = read_device_tree_string(&root.join("proc/device-tree").join(file)) {
            attrs.insert(key.to_owned(), value);
        }
    }
    attrs
}

/// Reads a NUL-terminated device-tree string property; `None` when absent or empty.
fn read_device_tree_string(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let value = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

/// This machine's hostname, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_PI_ZERO_2W: &str = "MemTotal:         437760 kB\n\
        MemFree:          301324 kB\n\
        MemAvailable:     358812 kB\n";

    #[test]
    fn meminfo_total_is_read_in_mib() {
        assert_eq!(meminfo_total_mib(MEMINFO_PI_ZERO_2W), Ok(427));
        assert_eq!(
            meminfo_total_mib("MemTotal:  8245432 kB\nSwapTotal: 0 kB\n"),
            Ok(8052)
        );
    }

    #[test]
    fn meminfo_without_total_is_an_error() {
        assert!(meminfo_total_mib("MemFree: 1 kB\n").is_err());
        assert!(meminfo_total_mib("MemTotal: lots kB\n").is_err());
        assert!(meminfo_total_mib("MemTotal: 5 GB\n").is_err());
    }

    #[test]
    fn memory_reserve_scales_from_pi_zero_to_pi_5() {
        assert_eq!(mem_reserve_mib(427), 128);
        assert_eq!(mem_reserve_mib(3796), 379);
        assert_eq!(mem_reserve_mib(8052), 805);
        assert_eq!(mem_reserve_mib(16_000), 1024);
        assert_eq!(mem_reserve_mib(64), 128);
    }

    #[test]
    fn disk_reserve_is_five_percent_capped_at_512_mib() {
        assert_eq!(disk_reserve_mib(4_000), 200);
        assert_eq!(disk_reserve_mib(60_000), 512);
        assert_eq!(disk_reserve_mib(0), 0);
    }

    #[test]
    fn cpu_max_quota_becomes_fractional_cores() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000"), Some(0.5));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(
            parse_cgroup_v2_path("0::/system.slice/bramble-agent.service\n"),
            Some("/system.slice/bramble-agent.service")
        );
        assert_eq!(parse_cgroup_v2_path("4:cpu,cpuacct:/user\n"), None);
    }

    #[test]
    fn cgroup_quota_on_an_ancestor_limits_cpus() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::write(r.join("proc/self/cgroup"), "0::/bramble.slice/agent\n").unwrap();
        let leaf = r.join("sys/fs/cgroup/bramble.slice/agent");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(
            r.join("sys/fs/cgroup/bramble.slice/cpu.max"),
            "75000 100000\n",
        )
        .unwrap();
        assert_eq!(cgroup_cpu_limit(r), Some(0.75));
        assert_eq!(detect_cpus(r), 0.75);
    }

    #[test]
    fn detection_without_cgroup_files_uses_online_cpus() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_cpu_limit(root.path()), None);
        let online = std::thread::available_parallelism().unwrap().get() as f64;
        assert_eq!(detect_cpus(root.path()), online);
    }

    #[test]
    fn overrides_replace_detection_entirely() {
        // An empty root has no /proc/meminfo: detection would fail, the override avoids it.
        let root = tempfile::tempdir().unwrap();
        let overrides = ResourceOverrides {
            cpus: Some(2.5),
            mem_mib: Some(300),
            disk_mib: Some(1000),
            ports: Some(vec![PortRange::new(8080, 8080), PortRange::new(9000, 9010)]),
        };
        let res = detect_at(root.path(), root.path(), &overrides).unwrap();
        assert_eq!(res.cpus_milli, 2500);
        assert_eq!(res.mem_mib, 300);
        assert_eq!(res.disk_mib, 1000);
        assert_eq!(
            res.ports,
            vec![PortRange::new(8080, 8080), PortRange::new(9000, 9010)]
        );
    }

    #[test]
    fn missing_meminfo_names_the_file_and_the_override() {
        let root = tempfile::tempdir().unwrap();
        let err = detect_at(root.path(), root.path(), &ResourceOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("proc/meminfo"), "{err}");
        assert!(err.contains("`mem`"), "{err}");
    }

    #[test]
    fn invalid_cpu_override_is_refused() {
        let overrides = ResourceOverrides {
            cpus: Some(f64::NAN),
            ..Default::default()
        };
        let err = detect(Path::new("/"), &overrides).unwrap_err();
        assert!(matches!(
            err,
            ResourceError::InvalidOverride { key: "cpus", .. }
        ));
    }

    #[test]
    fn detects_this_machine_with_default_ports() {
        let dir = tempfile::tempdir().unwrap();
        // A work dir that does not exist yet is measured on its parent's filesystem.
        let res = detect(&dir.path().join("not/yet"), &ResourceOverrides::default()).unwrap();
        assert!(res.cpus_milli >= 1);
        assert!(res.mem_mib > 0);
        assert_eq!(res.ports, vec![DEFAULT_PORTS]);
    }

    #[test]
    fn attributes_read_the_device_tree_when_present() {
        let root = tempfile::tempdir().unwrap();
        let attrs = attributes(root.path());
        assert_eq!(attrs["arch"], std::env::consts::ARCH);
        assert_eq!(attrs["os"], "linux");
        assert!(!attrs.contains_key("pi_model"));

        let dt = root.path().join("proc/device-tree");
        std::fs::create_dir_all(&dt).unwrap();
        std::fs::write(dt.join("model"), b"Raspberry Pi Zero 2 W Rev 1.0\0").unwrap();
        std::fs::write(dt.join("serial-number"), b"00000000a1b2c3d4\0").unwrap();
        let attrs = attributes(root.path());
        assert_eq!(attrs["pi_model"], "Raspberry Pi Zero 2 W Rev 1.0");
        assert_eq!(attrs["serial"], "00000000a1b2c3d4");
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
