//! The status update checkpoints on disk: naming, loading after a restart, writing a batch
//! durably, deleting one on acknowledgement. The manager in `mod.rs` keeps the queues; this
//! file is the only one that knows the directory's format.
//!
//! **On disk** (`meta/updates/` under the agent's work dir): one file per unacknowledged
//! update, `<seq:020>-<uuid>.upd`, holding the `TaskStatus` as pretty JSON so it can be read
//! over ssh. `seq` increases monotonically across the agent's life (restored as max + 1 on
//! open), so sorting names restores each task's order after a restart. Files are written with
//! `bramble_proto::durable` (hidden temp file, fsync, rename, directory fsync) before `record`
//! returns: a crash leaves either no update or a whole one. Left-over temp files belong to
//! `record`s that never returned and are deleted on open; files that do not parse are renamed
//! to `<name>.corrupt` and logged, never loaded and never fatal.
//!
//! **Cost**: one data fsync per update, plus one directory fsync per `record`/`record_batch`
//! call. On an SD card an fsync costs milliseconds, so producers with several updates at once
//! (an executor reporting many tasks, recovery marking tasks LOST) should use
//! [`StatusUpdateManager::record_batch`](super::StatusUpdateManager::record_batch), which
//! shares the directory fsync. Acknowledgement deletes the file without a directory fsync: if
//! a crash resurrects it, the update is resent and acknowledged again, which at-least-once
//! delivery allows. A single-file group commit (one fsync for a whole batch) is a later
//! optimisation.

use super::{Pending, StatusUpdateError};
use bramble_proto::durable::{self, FileError};
use bramble_proto::TaskStatus;
use std::fs;
use std::io;
use std::path::Path;
use tracing::{debug, warn};
use uuid::Uuid;

pub(super) const SUFFIX: &str = ".upd";
pub(super) const CORRUPT_SUFFIX: &str = ".corrupt";

impl Pending {
    pub(super) fn file_name(&self) -> String {
        file_name(self.seq, self.uuid)
    }
}

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

/// Creates `dir` if needed and loads every update in it, ordered by sequence number. Deletes
/// left-over temp files and moves corrupt files aside.
pub(super) fn load_all(dir: &Path) -> Result<Vec<Pending>, StatusUpdateError> {
    fs::create_dir_all(dir).map_err(FileError::at("creating", dir))?;
    let mut loaded: Vec<Pending> = Vec::new();
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
            Ok(p) => loaded.push(p),
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
    loaded.sort_by_key(|p| p.seq);
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
    Ok(Pending { seq, uuid, status })
}

/// Writes a batch of updates with one directory fsync. All or nothing: on failure the files
/// of the batch already in place are removed again (best effort), so a restart cannot load
/// part of a batch the manager never queued.
///
/// Each file's data is flushed (fdatasync) before any rename. (`syncfs` would flush a batch at
/// once, but it also flushes every other dirty page on the filesystem, which on a shared disk
/// costs more than it saves.)
pub(super) fn write_batch(dir: &Path, batch: &[Pending]) -> Result<(), StatusUpdateError> {
    let files = batch
        .iter()
        .map(|p| {
            let mut bytes = serde_json::to_vec_pretty(&p.status).map_err(|source| {
                StatusUpdateError::Encode {
                    task_id: p.status.task_id.clone(),
                    source,
                }
            })?;
            bytes.push(b'\n');
            Ok((p.file_name(), bytes))
        })
        .collect::<Result<Vec<_>, StatusUpdateError>>()?;
    let written = durable::write_batch(dir, &files);
    if written.is_err() {
        // Fresh sequence numbers: these names held nothing before this batch.
        for (name, _) in &files {
            let _ = fs::remove_file(dir.join(name));
        }
    }
    Ok(written?)
}

/// Deletes an update's file (acknowledged or forgotten); not flushed, see the header.
pub(super) fn remove(dir: &Path, update: &Pending) -> Result<(), StatusUpdateError> {
    let path = dir.join(update.file_name());
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(FileError::at("removing", &path)(e).into())
        }
        _ => Ok(()),
    }
}
