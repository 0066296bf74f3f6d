//! The status update checkpoints of agents before the update log: one file per update,
//! `<seq:020>-<uuid>.upd`, holding the `TaskStatus` as pretty JSON. An agent upgraded in place
//! finds them in `meta/updates/` on its first start; `log.rs` loads them here, writes them into
//! a fresh log segment durably, and only then deletes them. Nothing writes this format any more.
//!
//! Left-over temp files (`.<name>.tmp`, of `bramble_proto::durable` writes that never returned,
//! whatever their name) are deleted; `.upd` files that do not parse are renamed to
//! `<name>.corrupt` and logged, never loaded and never fatal. `seq` orders each task's updates
//! as the old agent recorded them.

use super::{Pending, StatusUpdateError};
use bramble_proto::durable::{self, FileError};
use bramble_proto::TaskStatus;
use std::fs;
use std::path::{Path, PathBuf};
use tracing::{debug, warn};
use uuid::Uuid;

pub(super) const SUFFIX: &str = ".upd";
pub(super) const CORRUPT_SUFFIX: &str = ".corrupt";

/// The name an older agent gave an update's file (tests write such files).
#[cfg(test)]
pub(super) fn file_name(seq: u64, uuid: Uuid) -> String {
    format!("{seq:020}-{}{SUFFIX}", uuid.hyphenated())
}

/// `<seq:020>-<uuid>.upd` → (seq, uuid).
pub(super) fn parse_file_name(name: &str) -> Option<(u64, Uuid)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, uuid) = stem.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, Uuid::parse_str(uuid).ok()?))
}

/// Loads every legacy update in `dir` with its file's path, ordered by sequence number.
/// Deletes left-over temp files and moves corrupt files aside.
pub(super) fn load_all(dir: &Path) -> Result<Vec<(Pending, PathBuf)>, StatusUpdateError> {
    let mut loaded: Vec<(Pending, PathBuf)> = Vec::new();
    let mut dir_changed = false;
    for entry in fs::read_dir(dir).map_err(FileError::at("listing", dir))? {
        let entry = entry.map_err(FileError::at("listing", dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            warn!(path = %path.display(), "ignoring file with a non-UTF-8 name");
            continue;
        };
        if durable::is_temp_file_name(&name) {
            debug!(path = %path.display(), "removing unfinished status update write");
            fs::remove_file(&path).map_err(FileError::at("removing", &path))?;
            dir_changed = true;
            continue;
        }
        if !name.ends_with(SUFFIX) {
            continue;
        }
        match load_file(&path, &name) {
            Ok(p) => loaded.push((p, path)),
            Err(why) => {
                let aside = dir.join(format!("{name}{CORRUPT_SUFFIX}"));
                warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    "corrupt status update checkpoint moved aside: {why}"
                );
                fs::rename(&path, &aside).map_err(FileError::at("moving aside", &path))?;
                dir_changed = true;
            }
        }
    }
    if dir_changed {
        durable::sync_dir(dir)?;
    }
    loaded.sort_by_key(|(p, _)| p.seq);
    Ok(loaded)
}

fn load_file(path: &Path, name: &str) -> Result<Pending, String> {
    let (seq, uuid) = parse_file_name(name).ok_or("unrecognised file name")?;
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    let status: TaskStatus =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a status update: {e}"))?;
    if status.uuid != Some(uuid) {
        return Err(format!(
            "uuid {:?} inside does not match the file name",
            status.uuid
        ));
    }
    Ok(Pending {
        seq,
        uuid,
        status,
        frame_len: 0,
        sent: true,
    })
}
