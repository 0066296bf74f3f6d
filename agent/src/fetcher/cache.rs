//! The agent's fetch cache: artifacts asked for with `cache = true` are kept in
//! `[fetch] cache_dir` (root only, 0700) under a key made of their uri and sha256, and copied
//! from there into the next sandbox asking for the same pair — copied, never linked, so a
//! task cannot change what the next one gets. Kept under `[fetch] cache_mb`: after each store
//! the least recently used files go first (a file used is touched). Cache trouble is logged
//! and the artifact downloaded instead; it never fails a task.

use bramble_proto::image_transfer::Digest;
use bramble_proto::task::Artifact;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::{debug, warn};

/// A cached artifact's file name: the SHA-256 of its uri and expected digest.
pub(super) fn key(artifact: &Artifact) -> String {
    let mut d = Digest::default();
    d.update(artifact.uri.as_bytes());
    d.update(b"\n");
    d.update(
        artifact
            .sha256
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase()
            .as_bytes(),
    );
    d.finish()
}

#[derive(Debug)]
pub(super) struct Cache {
    dir: PathBuf,
    budget: u64,
}

const TEMP_PREFIX: &str = ".tmp-";

impl Cache {
    /// Makes the directory (0700) and removes what an interrupted store left.
    pub(super) fn open(dir: &Path, budget: u64) -> Result<Cache, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("fetch cache {}: {e}", dir.display()))?;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            budget,
        })
    }

    /// Copies the cached file for `key` to `dest`: its size, or `None` when not cached (or
    /// unreadable: then it is downloaded again).
    pub(super) async fn copy_out(&self, key: &str, dest: &Path) -> Option<u64> {
        let src = self.dir.join(key);
        let dest = dest.to_path_buf();
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            // A new file, never through whatever an earlier artifact left under this name.
            let _ = std::fs::remove_file(&dest);
            let mut from = std::fs::File::open(&src)?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dest)?;
            let size = std::io::copy(&mut from, &mut to)?;
            // Used now: the last to go.
            let _ = std::fs::File::open(&src).and_then(|f| f.set_modified(SystemTime::now()));
            Ok(size)
        })
        .await
        .ok()?;
        match copied {
            Ok(size) => Some(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(cache = %self.dir.display(), "could not copy from the fetch cache, downloading instead: {e}");
                None
            }
        }
    }

    /// Keeps a copy of `src` under `key`, then trims the cache to its budget.
    pub(super) async fn store(&self, key: &str, src: &Path) {
        let (dir, key, src, budget) = (
            self.dir.clone(),
            key.to_string(),
            src.to_path_buf(),
            self.budget,
        );
        let stored = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
            let kept =
                std::fs::copy(&src, &temp).and_then(|_| std::fs::rename(&temp, dir.join(&key)));
            if let Err(e) = kept {
                let _ = std::fs::remove_file(&temp);
                return Err(e.to_string());
            }
            trim(&dir, budget);
            Ok(())
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(cache = %self.dir.display(), "could not keep an artifact in the fetch cache: {e}")
            }
            Err(e) => warn!(cache = %self.dir.display(), "fetch cache: {e}"),
        }
    }
}

/// Removes the least recently used files until the cache is within `budget` bytes.
fn trim(dir: &Path, budget: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= budget {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            debug!(file = %path.display(), bytes = len, "fetch cache: removed the least recently used");
            total -= len;
        }
    }
}
