//! The gc's hands on the real disk: measuring the work dir's filesystem, removing a sandbox
//! (only a path shaped like one, whose directory resolves inside the work dir's sandboxes),
//! and finding sandboxes left over from before a restart. The layout itself is `paths.rs`'s.

use super::{Disk, DiskUsage};
use crate::paths::WorkDir;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
}

/// The real disk under an agent's work dir.
pub(super) struct WorkDirDisk {
    pub(super) work_dir: WorkDir,
}

impl Disk for WorkDirDisk {
    fn usage(&self) -> io::Result<DiskUsage> {
        DiskUsage::of(self.work_dir.root())
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
        let top = self.work_dir.sandboxes_dir();
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

/// Refuses a path that is not shaped like a sandbox or whose parent resolves outside the
/// work dir's sandboxes dir (a symlinked directory on the way).
fn confined(work_dir: &WorkDir, sandbox: &Path) -> io::Result<()> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to remove {}: {why}", sandbox.display()),
        ))
    };
    if !work_dir.is_sandbox(sandbox) {
        return refuse("not a sandbox under the work dir");
    }
    let top = work_dir.sandboxes_dir().canonicalize()?;
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
    WorkDir::new(work_dir)
        .sandboxes_on_disk()
        .into_iter()
        .filter(|run| !live.contains(run))
        .map(|run| {
            let age = std::fs::symlink_metadata(&run)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            (run, age)
        })
        .collect()
}
