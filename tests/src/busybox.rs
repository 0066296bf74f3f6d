//! A busybox root filesystem built from the host's statically linked busybox (Debian's
//! `busybox-static`), so container tests need no registry and no network.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The applets the tests' tasks use, as links to busybox.
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "id", "true", "false", "head", "tr", "test", "[", "ls", "date",
    "hostname", "uname", "dd", "env",
];

/// Where the host's busybox is, if it is the static one (a dynamic one cannot run in an
/// image holding nothing else). `Err` says why not, for a SKIP line.
pub fn static_busybox() -> Result<PathBuf, String> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("no busybox on this host (apt-get install busybox-static)")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if has_interpreter(&bytes) {
        return Err(format!(
            "{} is dynamically linked (apt-get install busybox-static)",
            path.display()
        ));
    }
    Ok(path)
}

/// Whether an ELF file asks for a program interpreter (a `PT_INTERP` program header): a
/// dynamically linked one. Little-endian ELF only (what Debian's arm64 and amd64 are); anything
/// unreadable counts as dynamic.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    if elf.get(0..4) != Some(b"\x7fELF".as_slice()) || elf.get(5) != Some(&1) {
        return true;
    }
    let (phoff, phentsize, phnum) = match elf.get(4) {
        Some(2) => (u64_at(0x20).map(|v| v as usize), u16_at(0x36), u16_at(0x38)),
        Some(1) => (u32_at(0x1c).map(|v| v as usize), u16_at(0x2a), u16_at(0x2c)),
        _ => return true,
    };
    let (Some(phoff), Some(size), Some(n)) = (phoff, phentsize, phnum) else {
        return true;
    };
    (0..n).any(|i| u32_at(phoff + i * size).is_none_or(|t| t == PT_INTERP))
}

/// Writes `<dir>/busybox-rootfs.tar`: busybox and its applet links in `/bin`, and the empty
/// directories a container mounts over.
pub fn rootfs_tarball(dir: &Path) -> Result<PathBuf, String> {
    let busybox = static_busybox()?;
    let root = dir.join("busybox-rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    for d in ["proc", "dev", "sys", "tmp", "etc", "mnt/mesos/sandbox"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    std::fs::copy(&busybox, bin.join("busybox")).map_err(|e| format!("copying busybox: {e}"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .map_err(|e| format!("linking {applet}: {e}"))?;
    }
    let tarball = dir.join("busybox-rootfs.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar -cf {}: {status}", tarball.display()));
    }
    Ok(tarball)
}

/// The path of crun, if installed. `Err` says why not, for a SKIP line.
pub fn crun() -> Result<PathBuf, String> {
    ["/usr/bin/crun", "/usr/local/bin/crun"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "crun is not installed (apt-get install crun)".to_string())
}

/// An architecture that is not this host's, for the mismatch test.
pub fn foreign_architecture() -> &'static str {
    if bramble_agent::images::host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// What a container test starts from: crun, a scratch dir, and a busybox root filesystem
/// tarball in it.
pub struct ContainerKit {
    pub crun: PathBuf,
    pub scratch: tempfile::TempDir,
    pub tarball: PathBuf,
}

/// A [`ContainerKit`] for test `name`, or `None` once a `SKIP name: why` line is printed
/// (not root, no crun, no static busybox).
pub fn container_kit(name: &str) -> Option<ContainerKit> {
    if !crate::is_root() {
        eprintln!("SKIP {name}: needs root (crun, cgroups)");
        return None;
    }
    let kit = crun().and_then(|crun| {
        let scratch = tempfile::tempdir().map_err(|e| format!("a scratch dir: {e}"))?;
        let tarball = rootfs_tarball(scratch.path())?;
        Ok(ContainerKit {
            crun,
            scratch,
            tarball,
        })
    });
    kit.map_err(|why| eprintln!("SKIP {name}: {why}")).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // /bin/sh is dynamic on every Debian; a truncated file is not a usable static binary.
        let sh = std::fs::read("/bin/sh").expect("read /bin/sh");
        assert!(super::has_interpreter(&sh));
        assert!(super::has_interpreter(b"\x7fELF"));
        if let Ok(busybox) = super::static_busybox() {
            let bytes = std::fs::read(busybox).expect("read busybox");
            assert!(!super::has_interpreter(&bytes));
        }
    }
}
