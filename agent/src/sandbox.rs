//! Reading files out of task sandboxes for operators (`bramble logs`, the web UI).
//!
//! The path comes from a remote operator, so it is treated as hostile: it must be relative,
//! must not climb out with `..`, and after resolving symlinks must still lie inside the
//! sandbox. Reads are bounded by [`MAX_SANDBOX_READ`].

use bramble_proto::messages::{SandboxChunk, MAX_SANDBOX_READ};
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
}
