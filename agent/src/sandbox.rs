//! Reading files out of task sandboxes for operators (`bramble logs`, the web UI).
//!
//! The path comes from a remote operator, so it is treated as hostile: it must be relative,
//! must not climb out with `..`, and after resolving symlinks must still lie inside the
//! sandbox. Reads are bounded by [`MAX_SANDBOX_READ`].

use bramble_proto::messages::{
    SandboxChunk, SandboxEntry, SandboxListing, MAX_SANDBOX_ENTRIES, MAX_SANDBOX_READ,
};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Resolves `relative` inside `sandbox`, refusing anything that would leave it.
pub fn resolve(sandbox: &Path, relative: &str) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if relative.is_empty() {
        return Err("empty path".into());
    }
    if rel.is_absolute() {
        return Err(format!("{relative}: absolute paths are not allowed"));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{relative}: path leaves the sandbox"));
    }
    let root = sandbox
        .canonicalize()
        .map_err(|e| format!("sandbox {}: {e}", sandbox.display()))?;
    let full = root
        .join(rel)
        .canonicalize()
        .map_err(|e| format!("{relative}: {e}"))?;
    if !full.starts_with(&root) {
        return Err(format!("{relative}: resolves outside the sandbox"));
    }
    Ok(full)
}

/// Reads up to `max` bytes at `offset` of `relative` in `sandbox`.
pub fn read(
    sandbox: &Path,
    relative: &str,
    offset: u64,
    max: u32,
    task_ended: bool,
) -> Result<SandboxChunk, String> {
    let path = resolve(sandbox, relative)?;
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{relative}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{relative}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{relative}: not a regular file"));
    }
    let size = meta.len();
    let want = u64::from(max.min(MAX_SANDBOX_READ)).min(size.saturating_sub(offset));
    let mut data = vec![0u8; want as usize];
    if want > 0 {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{relative}: {e}"))?;
        file.read_exact(&mut data)
            .map_err(|e| format!("{relative}: {e}"))?;
    }
    Ok(SandboxChunk {
        offset,
        data,
        size,
        task_ended,
    })
}

/// How deep a listing descends below the directory asked for.
const MAX_LIST_DEPTH: usize = 8;

/// Lists `relative` (a directory in `sandbox`) recursively, depth first, up to
/// [`MAX_SANDBOX_ENTRIES`]. Symlinks are listed but never followed: a read of one goes through
/// [`resolve`] like any other path.
pub fn list(sandbox: &Path, relative: &str, task_ended: bool) -> Result<SandboxListing, String> {
    let dir = resolve(sandbox, relative)?;
    let root = sandbox
        .canonicalize()
        .map_err(|e| format!("sandbox {}: {e}", sandbox.display()))?;
    if !dir.is_dir() {
        return Err(format!("{relative}: not a directory"));
    }
    let mut listing = SandboxListing {
        entries: Vec::new(),
        truncated: false,
        task_ended,
    };
    let mut stack = vec![(dir, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        children.sort_by_key(|e| e.file_name());
        for child in children.into_iter().rev() {
            if listing.entries.len() >= MAX_SANDBOX_ENTRIES {
                listing.truncated = true;
                break;
            }
            let path = child.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            listing.entries.push(SandboxEntry {
                path: rel.to_string_lossy().into_owned(),
                size: if meta.is_file() { meta.len() } else { 0 },
                is_dir: meta.is_dir(),
                modified,
            });
            if meta.is_dir() && depth + 1 < MAX_LIST_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    listing.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_of_sandbox_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stdout"), b"hello world").expect("write");
        let chunk = read(dir.path(), "stdout", 6, 100, false).expect("read");
        assert_eq!(chunk.data, b"world");
        assert_eq!(chunk.size, 11);
        let past_end = read(dir.path(), "stdout", 50, 100, true).expect("read");
        assert!(past_end.data.is_empty());
    }

    #[test]
    fn paths_that_escape_the_sandbox_are_refused() {
        let outer = tempfile::tempdir().expect("tempdir");
        let sandbox = outer.path().join("sb");
        std::fs::create_dir(&sandbox).expect("mkdir");
        std::fs::write(outer.path().join("secret"), b"key").expect("write");
        std::os::unix::fs::symlink(outer.path().join("secret"), sandbox.join("link"))
            .expect("symlink");
        for bad in ["../secret", "/etc/passwd", "a/../../secret", "link", ""] {
            let err = read(&sandbox, bad, 0, 10, false).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(read(&sandbox, "link", 0, 10, false)
            .expect_err("symlink out")
            .contains("outside the sandbox"));
    }

    #[test]
    fn listing_shows_files_without_following_symlinks_out() {
        let outer = tempfile::tempdir().expect("tempdir");
        let sandbox = outer.path().join("sb");
        std::fs::create_dir_all(sandbox.join("out")).expect("mkdir");
        std::fs::write(sandbox.join("stdout"), b"hi\n").expect("write");
        std::fs::write(sandbox.join("out/result.txt"), b"42").expect("write");
        std::fs::create_dir(outer.path().join("secret")).expect("mkdir");
        std::fs::write(outer.path().join("secret/key"), b"k").expect("write");
        std::os::unix::fs::symlink(outer.path().join("secret"), sandbox.join("link"))
            .expect("symlink");
        let listing = list(&sandbox, ".", false).expect("list");
        let paths: Vec<&str> = listing.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["link", "out", "out/result.txt", "stdout"]);
        assert_eq!(listing.entries[3].size, 3);
        assert!(list(&sandbox, "link", false).is_err(), "symlinked dir out");
        assert!(list(&sandbox, "..", false).is_err());
    }
}
