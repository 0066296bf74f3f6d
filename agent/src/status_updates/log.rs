//! The update log on disk: the segment files in `meta/updates/`, appending to them, rewriting
//! them, and recovering them after a crash. The manager in `mod.rs` keeps the queues; this file
//! is the only one that knows the directory's format (the bytes of a segment are `frame.rs`).
//!
//! **Segments**: `updates-<gen:020>.log`, appended to in order. One is live at a time; a new
//! one is started (a *rewrite*) by writing every live update into `updates-<gen+1>.log`
//! through `bramble_proto::durable` (temp file, fsync, rename, directory fsync) and only then
//! deleting the old one. So the segment with the highest generation is always complete and
//! authoritative, whatever point a crash interrupts a rewrite at: on open, older segments
//! (a rewrite's leftovers) are deleted unread, temp files are deleted.
//!
//! **Costs**: `record_batch` appends all its updates with one `write` and one `fdatasync`,
//! however many there are, behind the burst's run task list changes (`members.rs`) if any. Acknowledgements are buffered in memory and reach the file with
//! the next write (an append, or [`UpdateLog::flush`] after each burst of inputs): they are
//! never flushed on their own, because losing one in a crash only means its update is resent
//! and acknowledged again, which at-least-once delivery allows. They can only follow the
//! update they acknowledge, which was flushed before it could be sent. Forgetting a framework
//! is flushed: nobody would acknowledge its updates again.
//!
//! A rewrite happens on every open (a fresh segment from what was recovered, so a torn tail,
//! a damaged segment or legacy `.upd` files are dealt with in one way) and, as compaction, when
//! the segment is over [`COMPACT_MIN_BYTES`] and less than a quarter of it is live. Live are
//! the unacknowledged updates and the run task lists (a `RunLogged` until its `RunRemoved`, a
//! `TaskAdded` until its `TaskRemoved`); a rewrite writes the task lists first, each task with
//! the state it has reached, then the updates. The log's size is thus bounded by what is live
//! plus a burst, and memory holds only what is live (acknowledged updates and removed tasks are
//! dropped at once).
//!
//! **Failures**: a failed append is cut back to the last whole frame (best effort) and marks
//! the segment broken, as does a failed rewrite (it may have left a newer segment behind that
//! would hide later appends to this one): the next durable write is then a rewrite from
//! memory, and if that fails too the write fails and nothing is queued. Damage found on open
//! is logged, never fatal: a torn tail (an append a crash cut short) is dropped with a
//! warning; damage in the middle is logged as an error, every record that verifies is kept, and
//! the segment is moved aside as `<name>.corrupt` once the fresh segment is durable; a segment
//! whose header cannot be read is moved aside and the next older segment, if any, is read.

use super::frame::{self, Record, HEADER_LEN};
use super::legacy;
use super::members::{LoggedRun, Members};
use super::{Pending, StatusUpdateError};
use crate::checkpoint::{LoggedTask, TaskChange};
use bramble_proto::durable::{self, FileError};
use bramble_proto::{FrameworkId, TaskId};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

const PREFIX: &str = "updates-";
const SUFFIX: &str = ".log";
/// A segment smaller than this is never compacted: rewriting it would save little.
pub(super) const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// Buffered acknowledgements are written once they reach this size, even mid-burst.
const ACK_FLUSH_BYTES: usize = 64 << 10;
/// A write buffer grown past this by a large batch is given back afterwards.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// What the next successful rewrite does with a file it supersedes.
#[derive(Debug)]
enum Retire {
    /// An older segment, a failed rewrite's target, or an upgraded legacy `.upd` file.
    Delete(PathBuf),
    /// A damaged segment, kept for a post-mortem as `<name>.corrupt`.
    MoveAside(PathBuf),
}

/// The open log. See the module header.
#[derive(Debug)]
pub(super) struct UpdateLog {
    dir: PathBuf,
    /// The highest generation started (or tried) so far.
    gen: u64,
    /// The segment being appended to; `None` before the first successful rewrite.
    segment: Option<Segment>,
    /// Bytes of the segment known to be written: where a failed append is cut back to.
    len: u64,
    /// Bytes of the segment's frames that are live (unacknowledged updates, run task lists).
    live: u64,
    /// Acknowledgement frames not yet written (see the module header).
    acks: Vec<u8>,
    /// The segment may end in a partial frame or be hidden by a newer one: the next durable
    /// write must be a rewrite.
    broken: bool,
    retire: Vec<Retire>,
    /// The run task lists the log holds (`members.rs`), as of the last durable write.
    members: Members,
    /// Compaction threshold ([`COMPACT_MIN_BYTES`]; lowered by tests).
    pub(super) compact_min: u64,
}

#[derive(Debug)]
struct Segment {
    file: File,
    path: PathBuf,
}

/// What [`UpdateLog::open`] found.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The live updates, in sequence order.
    pub updates: Vec<Pending>,
    /// The sequence number for the next update.
    pub next_seq: u64,
}

impl UpdateLog {
    /// Opens the log in `dir` (creating it if needed), recovers the live updates (see the
    /// module header) and starts a fresh segment holding them. Fails only if the directory
    /// cannot be created, listed or read; a fresh segment that cannot be written is logged and
    /// retried by the first durable write.
    pub(super) fn open(dir: &Path) -> Result<(Self, Recovered), StatusUpdateError> {
        fs::create_dir_all(dir).map_err(FileError::at("creating", dir))?;
        let legacy = legacy::load_all(dir)?;
        let segments = list_segments(dir)?;
        let mut replay = Replay::default();
        let mut retire = Vec::new();
        let mut next_seq = 1;
        let mut read_one = false;
        for (_, path) in segments.iter().rev() {
            if read_one {
                debug!(path = %path.display(), "removing a segment an interrupted rewrite superseded");
                retire.push(Retire::Delete(path.clone()));
                continue;
            }
            let bytes = fs::read(path).map_err(FileError::at("reading", path))?;
            match frame::read_header(&bytes) {
                Err(why) => {
                    error!(
                        path = %path.display(),
                        "update log segment unreadable, moved aside; trying an older one: {why}"
                    );
                    retire.push(Retire::MoveAside(path.clone()));
                }
                Ok(seq) => {
                    next_seq = seq;
                    read_one = true;
                    let damaged = replay.segment(path, &bytes);
                    retire.push(if damaged {
                        Retire::MoveAside(path.clone())
                    } else {
                        Retire::Delete(path.clone())
                    });
                }
            }
        }
        if !legacy.is_empty() {
            info!(
                files = legacy.len(),
                "moving the .upd status update files of an older agent into the update log"
            );
        }
        for (pending, path) in legacy {
            replay.update(pending);
            retire.push(Retire::Delete(path));
        }
        let members = std::mem::take(&mut replay.members);
        let mut updates = replay.into_updates();
        let max_seq = updates.iter().map(|p| p.seq).max().unwrap_or(0);
        let next_seq = next_seq.max(max_seq + 1);
        let mut log = Self {
            dir: dir.to_path_buf(),
            gen: segments.last().map_or(0, |(gen, _)| *gen),
            segment: None,
            len: 0,
            live: 0,
            acks: Vec::new(),
            broken: true,
            retire,
            members,
            compact_min: COMPACT_MIN_BYTES,
        };
        let mut live: Vec<&mut Pending> = updates.iter_mut().collect();
        if let Err(e) = log.rewrite(&mut live, next_seq) {
            error!(
                dir = %dir.display(),
                "could not start a fresh update log segment; recording updates will retry: {e}"
            );
        }
        Ok((log, Recovered { updates, next_seq }))
    }

    /// Makes the log ready for a durable append: rewrites it if it is broken (failing if that
    /// fails) or due for compaction (see the module header). `live` lists the live updates;
    /// it is called only for a rewrite (which also writes the run task lists the log holds).
    pub(super) fn prepare<'a>(
        &mut self,
        live: impl FnOnce() -> Vec<&'a mut Pending>,
        next_seq: u64,
    ) -> Result<(), StatusUpdateError> {
        let due = self.len > self.compact_min && self.live * 4 < self.len;
        if !(self.broken || due) {
            return Ok(());
        }
        let (before, was_broken) = (self.len, self.broken);
        let mut live = live();
        live.sort_by_key(|p| p.seq);
        self.rewrite(&mut live, next_seq)?;
        if !was_broken {
            debug!(from = before, to = self.len, "update log compacted");
        }
        Ok(())
    }

    /// Appends `changes` (run task lists) then `batch` (updates) durably after any buffered
    /// acknowledgements: one write, one fdatasync. Sets each update's `frame_len`; once
    /// durable, applies the changes and moves the tasks' states forward by the updates. Call
    /// [`prepare`](Self::prepare) first. All or nothing: on error the segment is cut back and
    /// marked broken, and the run task lists are as they were.
    pub(super) fn append(
        &mut self,
        changes: &[TaskChange],
        batch: &mut [Pending],
    ) -> Result<(), StatusUpdateError> {
        let mut buf = std::mem::take(&mut self.acks);
        let acks = buf.len();
        let mut change_lens = Vec::with_capacity(changes.len());
        let mut added = 0;
        let encoded = changes
            .iter()
            .try_for_each(|c| {
                let n = frame::encode(&Record::change(c), &mut buf).map_err(|source| {
                    StatusUpdateError::Encode {
                        what: format!("a change to the tasks of run {}", c.container()),
                        source,
                    }
                })?;
                change_lens.push(n);
                Ok(())
            })
            .and_then(|()| {
                batch.iter_mut().try_for_each(|p| {
                    added += encode_update(p, &mut buf)?;
                    Ok(())
                })
            });
        if let Err(e) = encoded {
            buf.truncate(acks);
            self.acks = buf;
            return Err(e);
        }
        self.write(buf, true)?;
        for (change, len) in changes.iter().zip(change_lens) {
            if matches!(
                change,
                TaskChange::RunLogged { .. } | TaskChange::TaskAdded { .. }
            ) {
                added += len;
            }
            let freed = self.members.apply(change.clone(), len);
            self.live = self.live.saturating_sub(freed as u64);
        }
        for p in batch.iter() {
            self.members.recorded(&p.status);
        }
        self.live += added as u64;
        Ok(())
    }

    /// The runs whose task list the log holds, with their tasks.
    pub(super) fn logged_runs(&self) -> BTreeMap<String, Vec<LoggedTask>> {
        self.members
            .runs()
            .map(|(container, run)| {
                let tasks = run.tasks.values().map(|m| m.task.clone()).collect();
                (container.clone(), tasks)
            })
            .collect()
    }

    /// Notes that the update `frame_len` bytes long was acknowledged; the record is buffered
    /// (see the module header). Never fails: a write error marks the segment broken.
    pub(super) fn ack(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: Uuid,
        frame_len: usize,
    ) {
        self.live = self.live.saturating_sub(frame_len as u64);
        if self.broken {
            // The rewrite that repairs the log starts from memory, where this ack is applied.
            return;
        }
        let record = Record::Ack {
            framework_id: Cow::Borrowed(framework_id),
            task_id: Cow::Borrowed(task_id),
            uuid,
        };
        if let Err(e) = frame::encode(&record, &mut self.acks) {
            warn!(task = %task_id, %uuid, "could not log an acknowledgement; the update may be resent after a restart: {e}");
        }
        if self.acks.len() >= ACK_FLUSH_BYTES {
            self.flush();
        }
    }

    /// Durably drops every update of `framework_id`, `dropped` bytes of them. Call
    /// [`prepare`](Self::prepare) first.
    pub(super) fn forget(
        &mut self,
        framework_id: &FrameworkId,
        dropped: usize,
    ) -> Result<(), StatusUpdateError> {
        let mut buf = std::mem::take(&mut self.acks);
        let acks = buf.len();
        let record = Record::Forget {
            framework_id: Cow::Borrowed(framework_id),
        };
        if let Err(source) = frame::encode(&record, &mut buf) {
            buf.truncate(acks);
            self.acks = buf;
            return Err(StatusUpdateError::Encode {
                what: format!("the forgetting of framework {framework_id}"),
                source,
            });
        }
        self.write(buf, true)?;
        self.live = self.live.saturating_sub(dropped as u64);
        Ok(())
    }

    /// Hands buffered acknowledgements to the OS, without a flush.
    pub(super) fn flush(&mut self) {
        if self.acks.is_empty() || self.broken {
            return;
        }
        let buf = std::mem::take(&mut self.acks);
        if let Err(e) = self.write(buf, false) {
            warn!("could not write acknowledgements to the update log; the next update starts a fresh segment: {e}");
        }
    }

    /// The segment being appended to, if there is one.
    pub(super) fn segment_path(&self) -> Option<&Path> {
        self.segment.as_ref().map(|s| s.path.as_path())
    }

    /// The run task lists, and the bytes counted live.
    #[cfg(test)]
    pub(super) fn members(&self) -> (&Members, u64) {
        (&self.members, self.live)
    }

    /// Bytes in the current segment.
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The current segment's generation.
    #[cfg(test)]
    pub(super) fn gen(&self) -> u64 {
        self.gen
    }

    /// Bytes the acknowledgement buffer holds on to.
    #[cfg(test)]
    pub(super) fn buffer_capacity(&self) -> usize {
        self.acks.capacity()
    }

    /// Makes every later write to the segment fail for real (`/dev/full` answers every write
    /// with ENOSPC), as a disk that filled up would.
    #[cfg(test)]
    pub(super) fn fail_writes(&mut self) {
        if let Some(segment) = &mut self.segment {
            if let Ok(full) = OpenOptions::new().append(true).open("/dev/full") {
                segment.file = full;
            }
        }
    }

    /// Writes `buf` at the end of the segment (flushing if `sync`), then keeps it, emptied, as
    /// the acknowledgement buffer. On error: cut back, broken.
    fn write(&mut self, mut buf: Vec<u8>, sync: bool) -> Result<(), StatusUpdateError> {
        let written = match (&mut self.segment, self.broken) {
            (Some(Segment { file, path }), false) => {
                let done = file
                    .write_all(&buf)
                    .map_err(FileError::at("appending to", path))
                    .and_then(|()| {
                        if sync {
                            file.sync_data().map_err(FileError::at("syncing", path))
                        } else {
                            Ok(())
                        }
                    });
                if done.is_err() {
                    if let Err(e) = file.set_len(self.len) {
                        warn!(path = %path.display(), "could not cut a failed append back; the next open drops it as a torn tail: {e}");
                    }
                }
                done
            }
            _ => Err(FileError::at("appending to", &self.dir)(io::Error::other(
                "no usable segment after an earlier failure",
            ))),
        };
        let len = buf.len() as u64;
        buf.clear();
        if buf.capacity() > KEEP_BUFFER_BYTES {
            buf.shrink_to(ACK_FLUSH_BYTES);
        }
        self.acks = buf;
        match written {
            Ok(()) => {
                self.len += len;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e.into())
            }
        }
    }

    /// Starts segment `gen + 1` holding `live` (in sequence order) durably, switches to it and
    /// retires what it supersedes. On error the log is broken (see the module header).
    fn rewrite(
        &mut self,
        live: &mut [&mut Pending],
        next_seq: u64,
    ) -> Result<(), StatusUpdateError> {
        self.gen += 1;
        let path = segment_path(&self.dir, self.gen);
        let mut buf = Vec::with_capacity(HEADER_LEN + live.len() * 128);
        buf.extend_from_slice(&frame::header(next_seq));
        // The run task lists first, so a replay moves their states on by the updates after.
        let mut live_bytes = 0;
        for (container, run) in self.members.runs_mut() {
            live_bytes += encode_run(container, run, &mut buf)? as u64;
        }
        for p in live.iter_mut() {
            live_bytes += encode_update(p, &mut buf)? as u64;
        }
        let started = durable::write(&path, &buf).and_then(|()| {
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(FileError::at("opening", &path))
        });
        let file = match started {
            Ok(file) => file,
            Err(e) => {
                self.broken = true;
                self.retire.push(Retire::Delete(path));
                return Err(e.into());
            }
        };
        if let Some(old) = self.segment.replace(Segment { file, path }) {
            self.retire.push(Retire::Delete(old.path));
        }
        self.len = buf.len() as u64;
        self.live = live_bytes;
        self.acks.clear();
        self.broken = false;
        self.retire_superseded();
        Ok(())
    }

    /// Deletes or moves aside what the new segment supersedes; failures are only logged (the
    /// newest segment wins on open whatever is left).
    fn retire_superseded(&mut self) {
        let mut dir_changed = false;
        let current = self.segment_path().map(Path::to_path_buf);
        for retire in std::mem::take(&mut self.retire) {
            let (path, result) = match retire {
                Retire::Delete(path) if Some(&path) == current.as_ref() => continue,
                Retire::Delete(path) => {
                    // A resurrected `.upd` file would be loaded again: make its removal durable.
                    dir_changed |= path.extension().is_some_and(|e| e == "upd");
                    let removed = fs::remove_file(&path);
                    (path, removed)
                }
                Retire::MoveAside(path) => {
                    let mut aside = path.clone().into_os_string();
                    aside.push(legacy::CORRUPT_SUFFIX);
                    let moved = fs::rename(&path, &aside);
                    if moved.is_ok() {
                        error!(path = %path.display(), "damaged update log segment moved aside");
                        dir_changed = true;
                    }
                    (path, moved)
                }
            };
            match result {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    warn!(path = %path.display(), "could not retire a superseded update log file: {e}");
                }
                _ => {}
            }
        }
        if dir_changed {
            if let Err(e) = durable::sync_dir(&self.dir) {
                warn!("{e}");
            }
        }
    }
}

impl Drop for UpdateLog {
    /// A clean stop keeps its acknowledgements: the next start does not resend them.
    fn drop(&mut self) {
        self.flush();
    }
}

/// The number of live updates in `dir`, read without changing anything (for tests and tools
/// looking at an agent that is running).
pub(super) fn pending_on_disk(dir: &Path) -> Result<usize, StatusUpdateError> {
    // A rewrite by the running agent may delete a segment between the listing and the read:
    // list again rather than read an older one.
    let mut attempts = 0;
    let live = 'listing: loop {
        attempts += 1;
        for (_, path) in list_segments(dir)?.iter().rev() {
            let bytes = match fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 10 => continue 'listing,
                Err(e) => return Err(FileError::at("reading", path)(e).into()),
            };
            if frame::read_header(&bytes).is_ok() {
                let mut replay = Replay {
                    quiet: true,
                    ..Replay::default()
                };
                replay.segment(path, &bytes);
                break 'listing replay.live.len();
            }
        }
        break 0;
    };
    let legacy = fs::read_dir(dir)
        .map_err(FileError::at("listing", dir))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| legacy::parse_file_name(n).is_some())
        })
        .count();
    Ok(live + legacy)
}

fn encode_update(p: &mut Pending, buf: &mut Vec<u8>) -> Result<usize, StatusUpdateError> {
    let record = Record::Update {
        seq: p.seq,
        uuid: p.uuid,
        status: Cow::Borrowed(&p.status),
    };
    let n = frame::encode(&record, buf).map_err(|source| StatusUpdateError::Encode {
        what: format!("an update of task {}", p.status.task_id),
        source,
    })?;
    p.frame_len = n;
    Ok(n)
}

/// A run the log holds, as a rewrite writes it: `RunLogged`, then a `TaskAdded` per task (with
/// the state it has now). Sets the frame lengths; returns the bytes written.
fn encode_run(
    container: &str,
    run: &mut LoggedRun,
    buf: &mut Vec<u8>,
) -> Result<usize, StatusUpdateError> {
    let what = || format!("the task list of run {container}");
    let logged = Record::RunLogged {
        container: Cow::Borrowed(container),
    };
    run.frame_len = frame::encode(&logged, buf).map_err(|source| StatusUpdateError::Encode {
        what: what(),
        source,
    })?;
    let mut written = run.frame_len;
    for member in run.tasks.values_mut() {
        let added = Record::TaskAdded {
            container: Cow::Borrowed(container),
            task: Cow::Borrowed(&member.task),
        };
        member.frame_len =
            frame::encode(&added, buf).map_err(|source| StatusUpdateError::Encode {
                what: what(),
                source,
            })?;
        written += member.frame_len;
    }
    Ok(written)
}

fn segment_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{gen:020}{SUFFIX}"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let gen = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if gen.len() != 20 || !gen.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    gen.parse().ok()
}

/// The segments in `dir`, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StatusUpdateError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(FileError::at("listing", dir))? {
        let entry = entry.map_err(FileError::at("listing", dir))?;
        if let Some(gen) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push((gen, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The live updates, rebuilt record by record.
#[derive(Debug, Default)]
struct Replay {
    /// Keyed by sequence number, then arrival (legacy files may repeat a sequence number).
    live: BTreeMap<(u64, u64), Pending>,
    index: HashMap<(FrameworkId, TaskId, Uuid), (u64, u64)>,
    arrivals: u64,
    /// Read-only inspection: no warnings about what the agent will deal with itself.
    quiet: bool,
    /// The run task lists.
    members: Members,
}

impl Replay {
    /// Applies a segment's records; whether it was damaged in the middle.
    fn segment(&mut self, path: &Path, bytes: &[u8]) -> bool {
        let scan = frame::scan(&bytes[HEADER_LEN..], HEADER_LEN);
        let records = scan.records.len();
        for (record, len) in scan.records {
            self.record(record, len);
        }
        if self.quiet {
            return false;
        }
        if let Some(torn) = scan.torn_tail {
            warn!(
                path = %path.display(),
                offset = torn.start,
                bytes = torn.end - torn.start,
                "update log ends in an incomplete record (a write cut short); dropped"
            );
        }
        for damage in &scan.damaged {
            error!(
                path = %path.display(),
                offset = damage.start,
                bytes = damage.end - damage.start,
                records_kept = records,
                "update log damaged in the middle: the records that verify are kept, any \
                 update in the damaged bytes is lost; the segment will be moved aside"
            );
        }
        !scan.damaged.is_empty()
    }

    fn record(&mut self, record: Record<'static>, len: usize) {
        match record {
            Record::Update { seq, uuid, status } => {
                let mut status = status.into_owned();
                status.uuid = Some(uuid);
                self.members.recorded(&status);
                self.update(Pending {
                    seq,
                    uuid,
                    status,
                    frame_len: len,
                    // The previous process may have sent it.
                    sent: true,
                });
            }
            Record::Ack {
                framework_id,
                task_id,
                uuid,
            } => {
                let key = (framework_id.into_owned(), task_id.into_owned(), uuid);
                if let Some(at) = self.index.remove(&key) {
                    self.live.remove(&at);
                }
            }
            Record::Forget { framework_id } => {
                self.live
                    .retain(|_, p| p.status.framework_id != *framework_id);
                self.index.retain(|(fw, _, _), _| *fw != *framework_id);
            }
            Record::RunLogged { container } => {
                let change = TaskChange::RunLogged {
                    container: container.into_owned(),
                };
                self.members.apply(change, len);
            }
            Record::TaskAdded { container, task } => {
                let change = TaskChange::TaskAdded {
                    container: container.into_owned(),
                    task: task.into_owned(),
                };
                self.members.apply(change, len);
            }
            // The scan turns these into `TaskAdded` already; read the same if one gets here.
            Record::TaskAddedBeforeArtifacts { container, task } => {
                let change = TaskChange::TaskAdded {
                    container: container.into_owned(),
                    task: task.into(),
                };
                self.members.apply(change, len);
            }
            Record::TaskRemoved { container, task_id } => {
                let change = TaskChange::TaskRemoved {
                    container: container.into_owned(),
                    task_id: task_id.into_owned(),
                };
                self.members.apply(change, len);
            }
            Record::RunRemoved { container } => {
                let change = TaskChange::RunRemoved {
                    container: container.into_owned(),
                };
                self.members.apply(change, len);
            }
        }
    }

    /// Adds an update unless its uuid is already live for its task.
    fn update(&mut self, p: Pending) {
        let key = (
            p.status.framework_id.clone(),
            p.status.task_id.clone(),
            p.uuid,
        );
        if self.index.contains_key(&key) {
            return;
        }
        self.arrivals += 1;
        let at = (p.seq, self.arrivals);
        self.index.insert(key, at);
        self.live.insert(at, p);
    }

    fn into_updates(self) -> Vec<Pending> {
        self.live.into_values().collect()
    }
}
