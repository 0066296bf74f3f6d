//! Least-recently-used removal of images under a byte budget.

use super::{
    io_err, temp_dir, Image, ImageConfig, ImageError, ImageStore, IMAGE_JSON, ROOTFS, TMP_PREFIX,
};
use std::io;
use std::path::{Path, PathBuf};

/// Marks an image used by a task now (its mtime orders the gc, least recently used first).
const LAST_USED: &str = "last-used";

impl ImageStore {
    /// Records that a task is starting in `image` (best effort: only the gc's order rests on it).
    pub fn mark_used(&self, image: &Image) {
        if let Some(dir) = image.rootfs.parent() {
            let _ = std::fs::write(dir.join(LAST_USED), b"");
        }
    }

    /// Removes images, least recently used first (by a task, else since installed), until the
    /// store holds at most `budget` bytes; an image whose root filesystem is in `in_use` stays
    /// whatever the budget. Returns the names removed. An image disappears whole: it is moved
    /// to a `.tmp-` name first, then deleted.
    pub fn gc(
        &self,
        budget: u64,
        in_use: &std::collections::HashSet<PathBuf>,
    ) -> Result<Vec<String>, ImageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dir)(e)),
        };
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        // (last used, directory, config)
        let mut images: Vec<(std::time::SystemTime, PathBuf, ImageConfig)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .filter_map(|e| {
                let dir = e.path();
                let text = std::fs::read_to_string(dir.join(IMAGE_JSON)).ok()?;
                let config: ImageConfig = serde_json::from_str(&text).ok()?;
                let used = mtime(&dir.join(LAST_USED))
                    .or_else(|| mtime(&dir.join(IMAGE_JSON)))
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((used, dir, config))
            })
            .collect();
        let mut total: u64 = images.iter().map(|(_, _, c)| c.size_bytes).sum();
        images.sort_by_key(|(used, _, _)| *used);
        let mut removed = Vec::new();
        for (_, dir, config) in images {
            if total <= budget {
                break;
            }
            if in_use.contains(&dir.join(ROOTFS)) {
                continue;
            }
            let aside = temp_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
                .map_err(io_err("creating a directory in", &self.dir))?;
            std::fs::rename(&dir, aside.path().join("old"))
                .map_err(io_err("moving aside", &dir))?;
            drop(aside);
            total = total.saturating_sub(config.size_bytes);
            removed.push(config.name);
        }
        Ok(removed)
    }
}
