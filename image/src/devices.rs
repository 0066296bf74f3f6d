//! Is it safe to overwrite this device? Answered from `/proc` and `/sys` before a single
//! byte is written.
//!
//! A card reader's disk is refused when it or anything built on it (a partition, a
//! device-mapper volume holding one) is mounted or used as swap, when it holds `/`, and when
//! the kernel does not call it removable (unless `--force`: some USB readers say 0). A
//! partition is refused too: an image is a whole disk. `mmcblk*` counts as removable (SD
//! slots report 0 on many laptops) but the Pi's own card holds `/` and is refused for that.
//! The view of `/proc` and `/sys` is a parameter so the rules are tested on fake trees.

use serde::Serialize;
use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where to read the system's state from (`/proc` and `/sys`, or fakes in tests).
#[derive(Debug, Clone)]
pub struct HostView {
    pub proc_dir: PathBuf,
    pub sys_dir: PathBuf,
    /// `major:minor` of the filesystem holding `/`, when it is a block device.
    pub root_dev: Option<String>,
}

impl HostView {
    pub fn system() -> HostView {
        let root_dev = std::fs::metadata("/").ok().map(|m| {
            let dev = m.dev();
            format!("{}:{}", major(dev), minor(dev))
        });
        HostView {
            proc_dir: PathBuf::from("/proc"),
            sys_dir: PathBuf::from("/sys"),
            root_dev,
        }
    }

    /// The kernel name (`sdb`, `mmcblk0p1`, `dm-0`) of device `major:minor`.
    fn name_of_dev(&self, dev: &str) -> Option<String> {
        let link = std::fs::read_link(self.sys_dir.join("dev/block").join(dev)).ok()?;
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    fn class_dir(&self, name: &str) -> PathBuf {
        self.sys_dir.join("class/block").join(name)
    }

    fn is_partition(&self, name: &str) -> bool {
        self.class_dir(name).join("partition").exists()
    }

    /// The disk a partition belongs to (the directory above it in sysfs).
    fn disk_of(&self, name: &str) -> String {
        if !self.is_partition(name) {
            return name.to_owned();
        }
        std::fs::canonicalize(self.class_dir(name))
            .ok()
            .and_then(|p| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| name.to_owned())
    }

    /// `disk`, its partitions, and everything holding any of them (dm, md), transitively.
    fn family(&self, disk: &str) -> BTreeSet<String> {
        let mut family = BTreeSet::from([disk.to_owned()]);
        let disk_dir = self.sys_dir.join("block").join(disk);
        if let Ok(entries) = std::fs::read_dir(&disk_dir) {
            for e in entries.flatten() {
                if e.path().join("partition").exists() {
                    family.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        let mut todo: Vec<String> = family.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            let holders = self.class_dir(&name).join("holders");
            if let Ok(entries) = std::fs::read_dir(holders) {
                for e in entries.flatten() {
                    let h = e.file_name().to_string_lossy().into_owned();
                    if family.insert(h.clone()) {
                        todo.push(h);
                    }
                }
            }
        }
        family
    }

    /// Names of block devices in use: `(name, where)` for mounts and swap.
    fn in_use(&self) -> Vec<(String, String)> {
        let mut used = Vec::new();
        let mounts = std::fs::read_to_string(self.proc_dir.join("mounts")).unwrap_or_default();
        for l in mounts.lines() {
            let mut f = l.split_whitespace();
            if let (Some(src), Some(at)) = (f.next(), f.next()) {
                if let Some(name) = dev_name(src) {
                    used.push((name, format!("mounted at {}", unescape(at))));
                }
            }
        }
        let swaps = std::fs::read_to_string(self.proc_dir.join("swaps")).unwrap_or_default();
        for l in swaps.lines().skip(1) {
            if let Some(name) = l.split_whitespace().next().and_then(dev_name) {
                used.push((name, "used as swap".into()));
            }
        }
        used
    }

    fn removable(&self, disk: &str) -> bool {
        let flag = std::fs::read_to_string(self.sys_dir.join("block").join(disk).join("removable"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        flag || disk.starts_with("mmcblk")
    }
}

/// `/dev/X` (or a symlink such as `/dev/disk/by-uuid/...` or `/dev/mapper/...`) → `X`.
fn dev_name(src: &str) -> Option<String> {
    let src = unescape(src);
    if !src.starts_with("/dev/") {
        return None;
    }
    let path = std::fs::canonicalize(&src).unwrap_or_else(|_| PathBuf::from(&src));
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// /proc/mounts escapes spaces and the like as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let code = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok());
            if let Some(v) = code {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Why a device may not be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Refusal {
    Partition { disk: String },
    InUse { device: String, how: String },
    HoldsRoot,
    NotRemovable,
}

impl Refusal {
    /// Only `NotRemovable` gives way to `--force`: writing over a mounted filesystem or the
    /// running system is never what anyone meant.
    pub fn forceable(&self) -> bool {
        matches!(self, Refusal::NotRemovable)
    }

    pub fn message(&self, device: &Path) -> String {
        let d = device.display();
        match self {
            Refusal::Partition { disk } => {
                format!("{d} is a partition; flash the whole disk (/dev/{disk})")
            }
            Refusal::InUse { device, how } => format!(
                "{d} is in use: /dev/{device} is {how}; unmount it first (umount /dev/{device})"
            ),
            Refusal::HoldsRoot => format!("{d} holds this machine's root filesystem (/)"),
            Refusal::NotRemovable => format!(
                "{d} is not a removable disk (/sys/block/.../removable is 0); if it really is \
                 the card, pass --force"
            ),
        }
    }
}

/// What is to be written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file standing in for a card (tests, or making a copy).
    File(PathBuf),
    /// A block device and its kernel name.
    Block { path: PathBuf, name: String },
}

/// Tells a block device from a file; anything else (a directory, a char device) is an error.
pub fn classify(path: &Path, view: &HostView) -> Result<Target, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.starts_with("/dev") {
                return Err(format!("{}: no such device", path.display()));
            }
            return Ok(Target::File(path.to_path_buf()));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(Target::File(path.to_path_buf()));
    }
    if !ft.is_block_device() {
        return Err(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        ));
    }
    let dev = format!("{}:{}", major(meta.rdev()), minor(meta.rdev()));
    let name = view
        .name_of_dev(&dev)
        .ok_or_else(|| format!("{}: block device {dev} not found in sysfs", path.display()))?;
    Ok(Target::Block {
        path: path.to_path_buf(),
        name,
    })
}

/// Every reason not to write block device `name` (empty: go ahead).
pub fn refusals(name: &str, view: &HostView) -> Vec<Refusal> {
    let mut out = Vec::new();
    if view.is_partition(name) {
        out.push(Refusal::Partition {
            disk: view.disk_of(name),
        });
    }
    let disk = view.disk_of(name);
    let family = view.family(&disk);
    for (dev, how) in view.in_use() {
        if family.contains(&dev) {
            out.push(Refusal::InUse { device: dev, how });
        }
    }
    let root_name = view.root_dev.as_deref().and_then(|d| view.name_of_dev(d));
    if root_name.is_some_and(|r| family.contains(&r)) {
        out.push(Refusal::HoldsRoot);
    }
    if !view.removable(&disk) {
        out.push(Refusal::NotRemovable);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys with disk `sdb` (partitions sdb1, sdb2; sdb2 held by dm-0) and `sdc`.
    fn fake(removable_sdb: bool, mounts: &str, root_on_dm: bool) -> (tempfile::TempDir, HostView) {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let proc_dir = dir.path().join("proc");
        std::fs::create_dir_all(&proc_dir).unwrap();
        std::fs::write(proc_dir.join("mounts"), mounts).unwrap();
        std::fs::write(proc_dir.join("swaps"), "Filename Type Size Used Priority\n").unwrap();
        let devices = sys.join("devices/virtual/block");
        let mk = |rel: &str| {
            let p = devices.join(rel);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let sdb = mk("sdb");
        std::fs::write(
            sdb.join("removable"),
            if removable_sdb { "1\n" } else { "0\n" },
        )
        .unwrap();
        for part in ["sdb1", "sdb2"] {
            let p = mk(&format!("sdb/{part}"));
            std::fs::write(p.join("partition"), "1\n").unwrap();
            std::fs::create_dir_all(p.join("holders")).unwrap();
        }
        std::fs::create_dir_all(devices.join("sdb/sdb2/holders/dm-0")).unwrap();
        let sdc = mk("sdc");
        std::fs::write(sdc.join("removable"), "1\n").unwrap();
        mk("dm-0");
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::fs::create_dir_all(sys.join("block")).unwrap();
        for (name, rel) in [
            ("sdb", "sdb"),
            ("sdb1", "sdb/sdb1"),
            ("sdb2", "sdb/sdb2"),
            ("sdc", "sdc"),
            ("dm-0", "dm-0"),
        ] {
            std::os::unix::fs::symlink(devices.join(rel), sys.join("class/block").join(name))
                .unwrap();
        }
        for name in ["sdb", "sdc", "dm-0"] {
            std::os::unix::fs::symlink(devices.join(name), sys.join("block").join(name)).unwrap();
        }
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(devices.join("dm-0"), sys.join("dev/block/253:0")).unwrap();
        let view = HostView {
            proc_dir,
            sys_dir: sys,
            root_dev: root_on_dm.then(|| "253:0".into()),
        };
        (dir, view)
    }

    #[test]
    fn a_free_removable_disk_may_be_written() {
        let (_d, view) = fake(true, "proc /proc proc rw 0 0\n", false);
        assert_eq!(refusals("sdc", &view), vec![]);
    }

    #[test]
    fn a_disk_under_the_root_volume_is_refused_for_mount_and_root() {
        let (_d, view) = fake(true, "/dev/dm-0 / ext4 rw 0 0\n", true);
        let r = refusals("sdb", &view);
        assert!(r.contains(&Refusal::HoldsRoot), "{r:?}");
        assert!(
            r.contains(&Refusal::InUse {
                device: "dm-0".into(),
                how: "mounted at /".into()
            }),
            "{r:?}"
        );
        assert!(r.iter().all(|x| !x.forceable()));
    }

    #[test]
    fn a_mounted_partition_refuses_its_disk_and_partitions_are_refused_outright() {
        let (_d, view) = fake(true, "/dev/sdb1 /media/x\\040y vfat rw 0 0\n", false);
        let r = refusals("sdb", &view);
        assert_eq!(
            r,
            vec![Refusal::InUse {
                device: "sdb1".into(),
                how: "mounted at /media/x y".into()
            }]
        );
        let r = refusals("sdb1", &view);
        assert!(
            r.contains(&Refusal::Partition { disk: "sdb".into() }),
            "{r:?}"
        );
    }

    #[test]
    fn a_fixed_disk_is_refused_unless_forced() {
        let (_d, view) = fake(false, "", false);
        assert_eq!(refusals("sdb", &view), vec![Refusal::NotRemovable]);
        assert!(Refusal::NotRemovable.forceable());
    }
}
