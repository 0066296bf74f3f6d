//! The status update manager: every task status update this agent produces is made durable
//! before it is sent, and resent until the framework acknowledges its uuid (at-least-once).
//!
//! Shape, as in Mesos:
//! * one **stream** per `(framework, task)`: updates of one task go out in the order they were
//!   recorded, one in flight at a time; the next is sent only once the head is acknowledged;
//! * a head that is not acknowledged is resent with exponential backoff ([`INITIAL_BACKOFF`],
//!   doubling, capped at [`MAX_BACKOFF`]), so sends happen at t = 0, 1, 3, 7, 15, 31, 61, 91 s…;
//!   [`StatusUpdateManager::resend_all_now`] short-cuts the wait after reconnecting to a master;
//! * once a task's terminal update is queued, further updates for it are refused with
//!   [`StatusUpdateError::AfterTerminal`] (a typed error rather than a silent `Ok`, because it
//!   means the producer has a bug or lost track of the task and the caller should log it). An
//!   update whose uuid is already queued for its task is a resend by the producer and returns
//!   `Ok` with that uuid without writing anything.
//!
//! This module is pure bookkeeping plus files: it never sends, sleeps or reads the clock for
//! scheduling decisions; the caller passes `now` to [`StatusUpdateManager::due`] and sleeps
//! until [`StatusUpdateManager::next_deadline`].
//!
//! **On disk** (under the agent's work dir): one file per unacknowledged update,
//! `<seq:020>-<uuid>.upd`, holding the `TaskStatus` as pretty JSON so it can be read over ssh.
//! `seq` increases monotonically across the agent's life (restored as max + 1 on open), so
//! sorting names restores each task's order after a restart. A file is written as a hidden
//! `.<name>.tmp`, fsync'd, renamed into place, and the directory fsync'd before `record`
//! returns: a crash leaves either no update or a whole one. Left-over `.tmp` files belong to
//! `record`s that never returned and are deleted on open; files that do not parse are renamed
//! to `<name>.corrupt` and logged, never loaded and never fatal.
//!
//! **Cost**: one data fsync per update, plus one directory fsync per `record`/`record_batch`
//! call. On an SD card an fsync costs milliseconds, so producers with several updates at once
//! (an executor reporting many tasks, recovery marking tasks LOST) should use
//! [`StatusUpdateManager::record_batch`], which shares the directory fsync. Acknowledgement
//! deletes the file without a directory fsync: if a crash resurrects it, the update is resent
//! and acknowledged again, which at-least-once delivery allows. A single-file group commit
//! (one fsync for a whole batch) is a later optimisation.

use bramble_proto::task::TaskState;
use bramble_proto::{FrameworkId, TaskId, TaskStatus};
use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use uuid::Uuid;

/// Delay before the first resend of an unacknowledged update.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between resends: doubling stops here.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

const SUFFIX: &str = ".upd";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_SUFFIX: &str = ".corrupt";

#[derive(Debug, thiserror::Error)]
pub enum StatusUpdateError {
    #[error("status updates: {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "task {task_id} of framework {framework_id}: refusing {state} update {uuid}: \
         terminal update {terminal_uuid} ({terminal_state}) is already queued"
    )]
    AfterTerminal {
        framework_id: FrameworkId,
        task_id: TaskId,
        state: TaskState,
        uuid: Uuid,
        terminal_uuid: Uuid,
        terminal_state: TaskState,
    },
    #[error("status updates: encoding update for task {task_id}: {source}")]
    Encode {
        task_id: TaskId,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StatusUpdateError {
    let path = path.to_path_buf();
    move |source| StatusUpdateError::Io {
        action,
        path,
        source,
    }
}

type StreamKey = (FrameworkId, TaskId);

#[derive(Debug)]
struct Pending {
    seq: u64,
    uuid: Uuid,
    status: TaskStatus,
}

impl Pending {
    fn file_name(&self) -> String {
        file_name(self.seq, self.uuid)
    }
}

fn file_name(seq: u64, uuid: Uuid) -> String {
    format!("{seq:020}-{}{SUFFIX}", uuid.hyphenated())
}

/// `<seq:020>-<uuid>.upd` → (seq, uuid).
fn parse_file_name(name: &str) -> Option<(u64, Uuid)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, uuid) = stem.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, Uuid::parse_str(uuid).ok()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Now,
    At(Instant),
}

impl Due {
    fn reached(self, now: Instant) -> bool {
        match self {
            Due::Now => true,
            Due::At(t) => t <= now,
        }
    }
}

/// One task's queue. Only the head is ever in flight.
#[derive(Debug)]
struct Stream {
    queue: VecDeque<Pending>,
    /// When the head is next to be (re)sent.
    due: Due,
    /// The wait after the head's latest send; `None` until the head is first sent.
    backoff: Option<Duration>,
}

impl Stream {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            due: Due::Now,
            backoff: None,
        }
    }

    fn reset(&mut self) {
        self.due = Due::Now;
        self.backoff = None;
    }
}

/// Checkpointed, ordered, at-least-once status updates. See the module header.
#[derive(Debug)]
pub struct StatusUpdateManager {
    dir: PathBuf,
    next_seq: u64,
    streams: BTreeMap<StreamKey, Stream>,
}

impl StatusUpdateManager {
    /// Opens (creating if needed) `dir` and loads every checkpointed, unacknowledged update,
    /// all due for sending at once. Corrupt files are logged and moved aside to
    /// `<name>.corrupt`; left-over temporary files are deleted.
    pub fn open(dir: &Path) -> Result<Self, StatusUpdateError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let mut loaded: Vec<Pending> = Vec::new();
        let mut max_seq = 0;
        let mut dir_changed = false;
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            let entry = entry.map_err(io_err("listing", dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                warn!(path = %path.display(), "ignoring file with a non-UTF-8 name");
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                debug!(path = %path.display(), "removing unfinished status update write");
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                dir_changed = true;
                continue;
            }
            if !name.ends_with(SUFFIX) {
                continue;
            }
            match load_file(&path, &name) {
                Ok(p) => {
                    max_seq = max_seq.max(p.seq);
                    loaded.push(p);
                }
                Err(why) => {
                    let aside = dir.join(format!("{name}{CORRUPT_SUFFIX}"));
                    warn!(
                        path = %path.display(),
                        moved_to = %aside.display(),
                        "corrupt status update checkpoint moved aside: {why}"
                    );
                    fs::rename(&path, &aside).map_err(io_err("moving aside", &path))?;
                    dir_changed = true;
                }
            }
        }
        if dir_changed {
            sync_dir(dir)?;
        }
        loaded.sort_by_key(|p| p.seq);
        let mut streams: BTreeMap<StreamKey, Stream> = BTreeMap::new();
        for p in loaded {
            let key = (p.status.framework_id.clone(), p.status.task_id.clone());
            streams
                .entry(key)
                .or_insert_with(Stream::new)
                .queue
                .push_back(p);
        }
        let manager = Self {
            dir: dir.to_path_buf(),
            next_seq: max_seq + 1,
            streams,
        };
        if manager.pending() > 0 {
            debug!(
                dir = %dir.display(),
                pending = manager.pending(),
                tasks = manager.streams.len(),
                "recovered unacknowledged status updates"
            );
        }
        Ok(manager)
    }

    /// The directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `update` durable and queues it behind its task's earlier updates. Assigns a uuid
    /// when it has none; returns the uuid.
    ///
    /// An update whose uuid is already queued for its task returns `Ok` with that uuid and
    /// writes nothing. Any update for a task whose terminal update is queued is refused with
    /// [`StatusUpdateError::AfterTerminal`].
    pub fn record(&mut self, update: TaskStatus) -> Result<Uuid, StatusUpdateError> {
        Ok(self.record_batch(vec![update])?[0])
    }

    /// Like [`record`](Self::record) for several updates, sharing one directory fsync.
    /// All or nothing: if any update is refused or any write fails, none is queued (files
    /// already written are removed, best effort). Uuids are returned in input order.
    pub fn record_batch(
        &mut self,
        updates: Vec<TaskStatus>,
    ) -> Result<Vec<Uuid>, StatusUpdateError> {
        let mut uuids = Vec::with_capacity(updates.len());
        let mut fresh: Vec<Pending> = Vec::with_capacity(updates.len());
        // Check everything first, against the queues plus the earlier updates of this batch.
        for mut status in updates {
            let uuid = *status.uuid.get_or_insert_with(Uuid::new_v4);
            let same_task = |p: &&Pending| {
                p.status.framework_id == status.framework_id && p.status.task_id == status.task_id
            };
            let stream = self
                .streams
                .get(&(status.framework_id.clone(), status.task_id.clone()));
            let queued = stream
                .into_iter()
                .flat_map(|s| s.queue.iter())
                .chain(fresh.iter().filter(same_task));
            let mut terminal = None;
            let mut duplicate = false;
            for p in queued {
                duplicate |= p.uuid == uuid;
                if terminal.is_none() && p.status.state.is_terminal() {
                    terminal = Some((p.uuid, p.status.state));
                }
            }
            uuids.push(uuid);
            if duplicate {
                debug!(task = %status.task_id, %uuid, "status update already queued");
                continue;
            }
            if let Some((terminal_uuid, terminal_state)) = terminal {
                return Err(StatusUpdateError::AfterTerminal {
                    framework_id: status.framework_id,
                    task_id: status.task_id,
                    state: status.state,
                    uuid,
                    terminal_uuid,
                    terminal_state,
                });
            }
            let seq = self.next_seq + fresh.len() as u64;
            fresh.push(Pending { seq, uuid, status });
        }
        if fresh.is_empty() {
            return Ok(uuids);
        }
        self.write_durably(&fresh)?;
        self.next_seq += fresh.len() as u64;
        for p in fresh {
            let key = (p.status.framework_id.clone(), p.status.task_id.clone());
            self.streams
                .entry(key)
                .or_insert_with(Stream::new)
                .queue
                .push_back(p);
        }
        Ok(uuids)
    }

    /// Writes each update to a temp file, makes the data durable, renames them all into place
    /// and fsyncs the directory once. On failure removes what it wrote.
    ///
    /// A batch shares its directory flush; each file's data is flushed (fdatasync) before any
    /// rename. (`syncfs` would flush a batch at once, but it also flushes every other dirty
    /// page on the filesystem, which on a shared disk costs more than it saves.)
    fn write_durably(&self, batch: &[Pending]) -> Result<(), StatusUpdateError> {
        let mut written: Vec<PathBuf> = Vec::with_capacity(batch.len());
        let result = (|| {
            let mut temps = Vec::with_capacity(batch.len());
            for p in batch {
                let name = p.file_name();
                let tmp = self.dir.join(format!(".{name}{TMP_SUFFIX}"));
                let mut bytes = serde_json::to_vec_pretty(&p.status).map_err(|source| {
                    StatusUpdateError::Encode {
                        task_id: p.status.task_id.clone(),
                        source,
                    }
                })?;
                bytes.push(b'\n');
                written.push(tmp.clone());
                let mut file = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
                file.write_all(&bytes).map_err(io_err("writing", &tmp))?;
                temps.push((tmp, file, self.dir.join(name)));
            }
            // Data first (every file, before any rename can be seen), then one directory flush.
            let temps: Vec<(PathBuf, PathBuf)> = temps
                .into_iter()
                .map(|(tmp, file, path)| {
                    file.sync_data().map_err(io_err("syncing", &tmp))?;
                    Ok((tmp, path))
                })
                .collect::<Result<_, StatusUpdateError>>()?;
            for (tmp, path) in temps {
                fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
                written.push(path);
            }
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            for path in written {
                let _ = fs::remove_file(path);
            }
        }
        result
    }

    /// The framework acknowledged `uuid` for this task: deletes its checkpoint, dequeues it,
    /// and makes the task's next update (if any) due now. `Ok(false)` for a uuid that is not
    /// the head of that task's queue (unknown, or already acknowledged): harmless.
    pub fn acknowledge(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: Uuid,
    ) -> Result<bool, StatusUpdateError> {
        let key = (framework_id.clone(), task_id.clone());
        let Some(stream) = self.streams.get_mut(&key) else {
            return Ok(false);
        };
        match stream.queue.front() {
            Some(head) if head.uuid == uuid => {
                remove_if_present(&self.dir.join(head.file_name()))?;
            }
            _ => {
                if stream.queue.iter().any(|p| p.uuid == uuid) {
                    warn!(task = %task_id, %uuid, "acknowledgement for an update not yet sent; ignored");
                }
                return Ok(false);
            }
        }
        stream.queue.pop_front();
        if stream.queue.is_empty() {
            self.streams.remove(&key);
        } else {
            stream.reset();
        }
        Ok(true)
    }

    /// The queue heads whose (re)send is due at `now`. Each returned head is marked sent and
    /// its next resend scheduled: `now + 1 s` after the first send, then doubling to 30 s.
    pub fn due(&mut self, now: Instant) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let Some(head) = stream.queue.front() else {
                continue;
            };
            if !stream.due.reached(now) {
                continue;
            }
            out.push(head.status.clone());
            let backoff = match stream.backoff {
                None => INITIAL_BACKOFF,
                Some(b) => (b * 2).min(MAX_BACKOFF),
            };
            stream.backoff = Some(backoff);
            stream.due = Due::At(now + backoff);
        }
        out
    }

    /// Makes every queue head due immediately with its backoff reset (after (re)connecting to
    /// a master, when whatever was in flight may have been lost).
    pub fn resend_all_now(&mut self) {
        self.streams.values_mut().for_each(Stream::reset);
    }

    /// When the next (re)send is due, for a `sleep_until`; `None` when nothing is pending. A
    /// head that is due immediately reports the current instant.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for stream in self.streams.values() {
            let at = match stream.due {
                Due::Now => return Some(Instant::now()),
                Due::At(t) => t,
            };
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
        earliest
    }

    /// Whether any update of this task still waits for its acknowledgement.
    pub fn has_pending(&self, fw: &FrameworkId, task: &TaskId) -> bool {
        self.streams
            .get(&(fw.clone(), task.clone()))
            .is_some_and(|s| !s.queue.is_empty())
    }

    /// Number of unacknowledged updates, over all tasks.
    pub fn pending(&self) -> usize {
        self.streams.values().map(|s| s.queue.len()).sum()
    }

    /// The latest recorded state of each task with unacknowledged updates (the tail of each
    /// queue), for re-registration with a master.
    pub fn latest(&self) -> impl Iterator<Item = &TaskStatus> + '_ {
        self.streams
            .values()
            .filter_map(|s| s.queue.back())
            .map(|p| &p.status)
    }

    /// Drops, durably, everything queued for framework `fw` (the framework was removed and
    /// will never acknowledge). Returns how many updates were dropped.
    pub fn forget_framework(&mut self, fw: &FrameworkId) -> Result<usize, StatusUpdateError> {
        let keys: Vec<StreamKey> = self
            .streams
            .range((fw.clone(), TaskId(String::new()))..)
            .take_while(|((f, _), _)| f == fw)
            .map(|(k, _)| k.clone())
            .collect();
        let mut dropped = 0;
        for key in keys {
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            // Pop only what is deleted, so an error leaves memory matching the disk.
            while let Some(head) = stream.queue.front() {
                remove_if_present(&self.dir.join(head.file_name()))?;
                stream.queue.pop_front();
                dropped += 1;
            }
            self.streams.remove(&key);
        }
        if dropped > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(dropped)
    }
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

fn remove_if_present(path: &Path) -> Result<(), StatusUpdateError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StatusUpdateError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::UpdateSource;

    fn update(fw: &str, task: &str, state: TaskState) -> TaskStatus {
        TaskStatus::new(fw.into(), task.into(), state, UpdateSource::Agent)
    }

    fn files(dir: &Path, suffix: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(suffix))
            .collect();
        names.sort();
        names
    }

    fn states(updates: &[TaskStatus]) -> Vec<TaskState> {
        updates.iter().map(|u| u.state).collect()
    }

    #[test]
    fn record_due_ack_then_next_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let t0 = Instant::now();
        let running = m.record(update("fw", "t1", TaskState::Running)).unwrap();
        let finished = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
        assert_eq!(m.pending(), 2);

        let sent = m.due(t0);
        assert_eq!(sent.len(), 1, "one update in flight per task");
        assert_eq!(sent[0].uuid, Some(running));
        assert!(m.due(t0).is_empty(), "not resent before its backoff");

        assert!(m.acknowledge(&"fw".into(), &"t1".into(), running).unwrap());
        let sent = m.due(t0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].uuid, Some(finished));
        assert_eq!(sent[0].state, TaskState::Finished);

        assert!(m.acknowledge(&"fw".into(), &"t1".into(), finished).unwrap());
        assert_eq!(m.pending(), 0);
        assert_eq!(m.next_deadline(), None);
        assert!(m.due(t0 + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn unacknowledged_head_is_resent_with_capped_exponential_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        m.record(update("fw", "t1", TaskState::Running)).unwrap();
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);

        let mut sent_at = Vec::new();
        for s in 0..=200 {
            if !m.due(secs(s)).is_empty() {
                sent_at.push(s);
            }
        }
        assert_eq!(sent_at, vec![0, 1, 3, 7, 15, 31, 61, 91, 121, 151, 181]);
        assert_eq!(m.next_deadline(), Some(secs(211)));

        // Reconnecting makes it due at once and restarts the backoff.
        m.resend_all_now();
        assert!(m.next_deadline().unwrap() <= Instant::now());
        assert_eq!(m.due(secs(205)).len(), 1);
        assert_eq!(m.next_deadline(), Some(secs(206)));
        assert!(m.due(secs(205)).is_empty());
    }

    #[test]
    fn tasks_progress_independently() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let t0 = Instant::now();
        let a = m.record(update("fw", "a", TaskState::Running)).unwrap();
        m.record(update("fw", "b", TaskState::Running)).unwrap();
        assert_eq!(m.due(t0).len(), 2);
        m.acknowledge(&"fw".into(), &"a".into(), a).unwrap();
        m.record(update("fw", "a", TaskState::Finished)).unwrap();
        // a's next update is due now; b waits for its backoff.
        let sent = m.due(t0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].task_id, TaskId::from("a"));
    }

    #[test]
    fn order_per_task_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        {
            let mut m = StatusUpdateManager::open(dir.path()).unwrap();
            for state in [TaskState::Staging, TaskState::Starting, TaskState::Running] {
                expected.push(m.record(update("fw", "t1", state)).unwrap());
                m.record(update("fw", "t2", state)).unwrap();
            }
            expected.push(m.record(update("fw", "t1", TaskState::Failed)).unwrap());
            let first = m.due(Instant::now());
            m.acknowledge(&"fw".into(), &"t1".into(), first[0].uuid.unwrap())
                .unwrap();
            expected.remove(0);
        }
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        assert_eq!(m.pending(), 3 + 3);
        let latest: Vec<_> = m.latest().map(|s| (s.task_id.clone(), s.state)).collect();
        assert_eq!(
            latest,
            vec![
                ("t1".into(), TaskState::Failed),
                ("t2".into(), TaskState::Running)
            ]
        );
        let t0 = Instant::now();
        let mut got = Vec::new();
        loop {
            let sent: Vec<_> = m
                .due(t0)
                .into_iter()
                .filter(|s| s.task_id.as_str() == "t1")
                .collect();
            let Some(head) = sent.first() else { break };
            got.push(head.uuid.unwrap());
            m.acknowledge(&"fw".into(), &"t1".into(), head.uuid.unwrap())
                .unwrap();
        }
        assert_eq!(got, expected);

        // New updates after the restart sort after the recovered ones.
        let before = files(dir.path(), SUFFIX);
        m.record(update("fw", "t3", TaskState::Running)).unwrap();
        let after = files(dir.path(), SUFFIX);
        assert!(after.last().unwrap() > before.last().unwrap());
    }

    #[test]
    fn acknowledging_an_unknown_or_repeated_uuid_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let (fw, t1) = (FrameworkId::from("fw"), TaskId::from("t1"));
        assert!(!m.acknowledge(&fw, &t1, Uuid::new_v4()).unwrap());
        let u = m.record(update("fw", "t1", TaskState::Running)).unwrap();
        let later = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
        assert!(!m.acknowledge(&fw, &t1, Uuid::new_v4()).unwrap());
        assert!(!m.acknowledge(&fw, &t1, later).unwrap(), "not the head yet");
        assert!(!m.acknowledge(&"other".into(), &t1, u).unwrap());
        assert_eq!(m.pending(), 2);
        assert!(m.acknowledge(&fw, &t1, u).unwrap());
        assert!(!m.acknowledge(&fw, &t1, u).unwrap(), "already acknowledged");
        assert_eq!(m.pending(), 1);
    }

    #[test]
    fn files_are_gone_after_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let u = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
        let names = files(dir.path(), SUFFIX);
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(&format!("-{u}.upd")), "{names:?}");
        // Human-readable JSON carrying the assigned uuid.
        let text = fs::read_to_string(dir.path().join(&names[0])).unwrap();
        assert!(text.contains("\"Finished\""), "{text}");
        assert!(text.contains(&u.to_string()), "{text}");

        m.acknowledge(&"fw".into(), &"t1".into(), u).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(StatusUpdateManager::open(dir.path()).unwrap().pending(), 0);
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = {
            let mut m = StatusUpdateManager::open(dir.path()).unwrap();
            m.record(update("fw", "t1", TaskState::Running)).unwrap();
            m.record(update("fw", "t2", TaskState::Running)).unwrap()
        };
        let names = files(dir.path(), SUFFIX);
        fs::write(dir.path().join(&names[0]), b"{\"task_id\": trunc").unwrap();
        fs::write(dir.path().join("junk.upd"), b"").unwrap();
        fs::write(dir.path().join(".00000000000000000009-x.upd.tmp"), b"{").unwrap();

        let m = StatusUpdateManager::open(dir.path()).unwrap();
        assert_eq!(m.pending(), 1);
        assert_eq!(m.latest().next().unwrap().uuid, Some(good));
        assert_eq!(
            files(dir.path(), CORRUPT_SUFFIX),
            vec![
                format!("{}.corrupt", names[0]),
                "junk.upd.corrupt".to_owned()
            ]
        );
        assert!(
            files(dir.path(), TMP_SUFFIX).is_empty(),
            "unfinished write removed"
        );
    }

    #[test]
    fn updates_after_a_terminal_one_are_refused_but_resends_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let done = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
        let err = m.record(update("fw", "t1", TaskState::Failed)).unwrap_err();
        assert!(
            matches!(err, StatusUpdateError::AfterTerminal { terminal_uuid, .. } if terminal_uuid == done)
        );
        let mut resend = update("fw", "t1", TaskState::Finished);
        resend.uuid = Some(done);
        assert_eq!(m.record(resend).unwrap(), done);
        assert_eq!(m.pending(), 1);
        assert_eq!(files(dir.path(), SUFFIX).len(), 1);
    }

    #[test]
    fn batch_is_all_or_nothing_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        let err = m.record_batch(vec![
            update("fw", "t1", TaskState::Running),
            update("fw", "t1", TaskState::Lost),
            update("fw", "t1", TaskState::Killed),
        ]);
        assert!(matches!(err, Err(StatusUpdateError::AfterTerminal { .. })));
        assert_eq!(m.pending(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        let uuids = m
            .record_batch(vec![
                update("fw", "t1", TaskState::Running),
                update("fw", "t2", TaskState::Lost),
                update("fw", "t1", TaskState::Lost),
            ])
            .unwrap();
        assert_eq!(uuids.len(), 3);
        assert_eq!(files(dir.path(), SUFFIX).len(), 3);
        let t0 = Instant::now();
        assert_eq!(
            states(&m.due(t0)),
            vec![TaskState::Running, TaskState::Lost]
        );
        m.acknowledge(&"fw".into(), &"t1".into(), uuids[0]).unwrap();
        let next = m.due(t0);
        assert_eq!(next[0].uuid, Some(uuids[2]));
    }

    #[test]
    fn forgetting_a_framework_drops_its_updates_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        m.record(update("fw-a", "t1", TaskState::Running)).unwrap();
        m.record(update("fw-a", "t1", TaskState::Finished)).unwrap();
        m.record(update("fw-a", "t2", TaskState::Running)).unwrap();
        let kept = m.record(update("fw-b", "t1", TaskState::Running)).unwrap();
        assert_eq!(m.forget_framework(&"fw-a".into()).unwrap(), 3);
        assert_eq!(m.forget_framework(&"fw-none".into()).unwrap(), 0);
        assert_eq!(m.pending(), 1);
        assert_eq!(files(dir.path(), SUFFIX).len(), 1);
        let m = StatusUpdateManager::open(dir.path()).unwrap();
        assert_eq!(m.latest().next().unwrap().uuid, Some(kept));
    }

    #[test]
    fn recovered_updates_are_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut m = StatusUpdateManager::open(dir.path()).unwrap();
            m.record(update("fw", "t1", TaskState::Running)).unwrap();
            m.due(Instant::now());
        }
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        assert!(m.next_deadline().unwrap() <= Instant::now());
        let t0 = Instant::now();
        assert_eq!(m.due(t0).len(), 1);
        assert_eq!(m.next_deadline(), Some(t0 + INITIAL_BACKOFF));
    }

    #[test]
    fn file_names_round_trip_and_sort_by_sequence() {
        let u = Uuid::new_v4();
        let name = file_name(42, u);
        assert_eq!(parse_file_name(&name), Some((42, u)));
        assert!(file_name(9, u) < file_name(10, u));
        assert_eq!(parse_file_name("42-abc.upd"), None);
    }
}
