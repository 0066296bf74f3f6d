//! The status update manager: every task status update this agent produces is made durable
//! before it is sent, and resent until the framework acknowledges its uuid (at-least-once).
//!
//! Shape, as in Mesos:
//! * one **stream** per `(framework, task)`: updates of one task go out in the order they were
//!   recorded. Unlike Mesos (one in flight, the next only once the head is acknowledged),
//!   updates recorded while earlier ones are in flight follow them at once, in order, over
//!   the same connection: a short task's FINISHED does not wait for its RUNNING's
//!   acknowledgement (a master commit and three hops). An acknowledgement settles its update
//!   and every earlier one of the task (one update superseded by a later one the framework
//!   saw needs no answer of its own);
//! * unacknowledged updates are resent with exponential backoff ([`INITIAL_BACKOFF`],
//!   doubling, capped at [`MAX_BACKOFF`]), so sends happen at t = 0, 1, 3, 7, 15, 31, 61, 91 s…;
//!   [`StatusUpdateManager::resend_all_now`] short-cuts the wait after reconnecting to a master.
//!   A resend of a stream whose terminal update has gone out before (or may have: recovered
//!   from disk) is that terminal update alone: resending the earlier ones could show the
//!   framework a RUNNING after its FINISHED;
//! * once a task's terminal update is queued, further updates for it are refused with
//!   [`StatusUpdateError::AfterTerminal`] (a typed error rather than a silent `Ok`, because it
//!   means the producer has a bug or lost track of the task and the caller should log it). An
//!   update whose uuid is already queued for its task is a resend by the producer and returns
//!   `Ok` with that uuid without writing anything.
//!
//! This module is pure bookkeeping plus the log: it never sends, sleeps or reads the clock for
//! scheduling decisions; the caller passes `now` to [`StatusUpdateManager::due`] and sleeps
//! until [`StatusUpdateManager::next_deadline`].
//!
//! **On disk**: an append-only log in `meta/updates/`; each `record_batch` is made durable with
//! one write and one fdatasync before it returns, however many updates it holds;
//! acknowledgements are appended without a flush (the caller hands them to the OS after each
//! burst with [`StatusUpdateManager::flush`]), and the log is compacted as updates are
//! acknowledged. Memory holds only unacknowledged updates. The segments, their recovery
//! after a crash and the costs are in `log.rs`, the bytes in `frame.rs`; `legacy.rs` reads the
//! one-file-per-update checkpoints of older agents once, on upgrade.
//!
//! **Run task lists** ride in the same log: which tasks each executor run has changes with
//! every tiny task, and a run file rewritten per burst cost more than the updates themselves
//! (`checkpoint.rs` says how the two split a run). [`StatusUpdateManager::record_burst`] writes
//! a burst's [`TaskChange`]s ahead of its updates in the one durable write, and the log keeps
//! what they add up to (`members.rs`) for [`StatusUpdateManager::logged_runs`] and its rewrites.

use crate::checkpoint::{LoggedTask, TaskChange};
use bramble_proto::durable::FileError;
use bramble_proto::task::TaskState;
use bramble_proto::{FrameworkId, TaskId, TaskStatus};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use uuid::Uuid;

mod before_artifacts;
mod frame;
mod legacy;
mod log;
mod members;

pub use frame::EncodeError;
use log::UpdateLog;

/// Delay before the first resend of an unacknowledged update.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between resends: doubling stops here.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StatusUpdateError {
    #[error("status updates: {source}")]
    Io {
        #[from]
        source: FileError,
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
    #[error("status updates: encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: EncodeError,
    },
}

type StreamKey = (FrameworkId, TaskId);

#[derive(Debug)]
struct Pending {
    seq: u64,
    uuid: Uuid,
    status: TaskStatus,
    /// Bytes of its record in the log, for compaction's accounting.
    frame_len: usize,
    /// Sent at least once (or recovered from disk: maybe sent by the previous process).
    sent: bool,
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

/// One task's queue: its first `in_flight` updates are sent and wait for an acknowledgement.
#[derive(Debug)]
struct Stream {
    queue: VecDeque<Pending>,
    /// When the queue is next to be (re)sent.
    due: Due,
    /// The wait after the latest (re)send; `None` until the queue is first sent.
    backoff: Option<Duration>,
    /// How many of the queue's first updates went out since the last reset.
    in_flight: usize,
}

impl Stream {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            due: Due::Now,
            backoff: None,
            in_flight: 0,
        }
    }

    fn reset(&mut self) {
        self.due = Due::Now;
        self.backoff = None;
        self.in_flight = 0;
    }

    /// What a (re)send of the whole stream sends: everything queued, in order; or, when its
    /// terminal update (always last) went out before, that update alone.
    fn to_send(&self) -> std::ops::Range<usize> {
        match self.queue.back() {
            Some(last) if last.sent && last.status.state.is_terminal() => {
                self.queue.len() - 1..self.queue.len()
            }
            _ => 0..self.queue.len(),
        }
    }
}

/// Checkpointed, ordered, at-least-once status updates. See the module header.
#[derive(Debug)]
pub struct StatusUpdateManager {
    dir: PathBuf,
    next_seq: u64,
    streams: BTreeMap<StreamKey, Stream>,
    log: UpdateLog,
}

impl StatusUpdateManager {
    /// Opens (creating if needed) the log in `dir` and loads every unacknowledged update, all
    /// due for sending at once. Damage is logged and survived (see `log.rs`); checkpoints of
    /// older agents are moved into the log.
    pub fn open(dir: &Path) -> Result<Self, StatusUpdateError> {
        let (log, recovered) = UpdateLog::open(dir)?;
        let mut streams: BTreeMap<StreamKey, Stream> = BTreeMap::new();
        for p in recovered.updates {
            let key = (p.status.framework_id.clone(), p.status.task_id.clone());
            streams
                .entry(key)
                .or_insert_with(Stream::new)
                .queue
                .push_back(p);
        }
        let manager = Self {
            dir: dir.to_path_buf(),
            next_seq: recovered.next_seq,
            streams,
            log,
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

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of unacknowledged updates in the log in `dir`, read without changing
    /// anything: for looking at an agent that is running. Acknowledgements it has not yet
    /// [`flush`](Self::flush)ed are not seen.
    pub fn pending_on_disk(dir: &Path) -> Result<usize, StatusUpdateError> {
        log::pending_on_disk(dir)
    }

    /// Hands buffered acknowledgements to the OS (no fsync; see `log.rs`). Call after each
    /// burst of inputs, so a crash or a reader sees at most one burst's acknowledgements
    /// missing.
    pub fn flush(&mut self) {
        self.log.flush();
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

    /// Like [`record`](Self::record) for several updates, made durable together with one
    /// write and one fdatasync. All or nothing: if any update is refused or the write fails,
    /// none is queued (and none is recovered after a restart). Uuids are returned in input
    /// order.
    pub fn record_batch(
        &mut self,
        updates: Vec<TaskStatus>,
    ) -> Result<Vec<Uuid>, StatusUpdateError> {
        self.record_burst(&[], updates)
    }

    /// A burst's durable writes to the log: `changes` to run task lists (see `checkpoint.rs`),
    /// then `updates` as [`record_batch`](Self::record_batch) takes them, all in one write
    /// and one fdatasync. All or nothing, like `record_batch`: a refused update sinks the
    /// changes too.
    pub fn record_burst(
        &mut self,
        changes: &[TaskChange],
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
            fresh.push(Pending {
                seq,
                uuid,
                status,
                frame_len: 0,
                sent: false,
            });
        }
        if fresh.is_empty() && changes.is_empty() {
            return Ok(uuids);
        }
        self.log
            .prepare(|| live(&mut self.streams), self.next_seq)?;
        self.log.append(changes, &mut fresh)?;
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

    /// The framework acknowledged `uuid` for this task: dequeues it and the task's earlier
    /// updates, logs the acknowledgements (buffered, see `log.rs`), and makes the task's next
    /// update (if any, and not in flight already) due now. `Ok(false)` for a uuid that is not
    /// queued for the task (unknown, or already acknowledged), or neither its head nor ever
    /// sent: harmless. Never fails today: a failed log write is repaired by the next
    /// durable write.
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
        let Some(at) = stream.queue.iter().position(|p| p.uuid == uuid) else {
            return Ok(false);
        };
        // The head, or an update that went out (from this process or the one before).
        if at > 0 && !stream.queue[at].sent {
            warn!(task = %task_id, %uuid, "acknowledgement for an update not yet sent; ignored");
            return Ok(false);
        }
        // It and every earlier update of the task: the framework saw this one after them.
        for settled in stream.queue.drain(..=at) {
            self.log
                .ack(framework_id, task_id, settled.uuid, settled.frame_len);
        }
        stream.in_flight = stream.in_flight.saturating_sub(at + 1);
        if stream.queue.is_empty() {
            self.streams.remove(&key);
        } else if stream.in_flight == 0 {
            // The next update is due at once.
            stream.reset();
        }
        Ok(true)
    }

    /// The updates to send at `now`, each task's in order: a stream's whole queue when its
    /// (re)send is due (see the module header for a resend after a terminal update), and
    /// otherwise the updates recorded behind ones already in flight. A (re)send schedules the
    /// next: `now + 1 s` after the first send, then doubling to 30 s.
    pub fn due(&mut self, now: Instant) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let range = if stream.due.reached(now) {
                let backoff = match stream.backoff {
                    None => INITIAL_BACKOFF,
                    Some(b) => (b * 2).min(MAX_BACKOFF),
                };
                stream.backoff = Some(backoff);
                stream.due = Due::At(now + backoff);
                stream.to_send()
            } else if stream.in_flight > 0 {
                stream.in_flight..stream.queue.len()
            } else {
                continue;
            };
            for p in stream.queue.range_mut(range) {
                p.sent = true;
                out.push(p.status.clone());
            }
            stream.in_flight = stream.queue.len();
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

    /// The runs whose task list the log holds (see `checkpoint.rs`), with their tasks, each in
    /// the state of its latest recorded update: for recovery, beside the run files.
    pub fn logged_runs(&self) -> BTreeMap<String, Vec<LoggedTask>> {
        self.log.logged_runs()
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
        let (count, bytes) = keys
            .iter()
            .filter_map(|k| self.streams.get(k))
            .flat_map(|s| s.queue.iter())
            .fold((0, 0), |(n, b), p| (n + 1, b + p.frame_len));
        if count == 0 {
            return Ok(0);
        }
        // Durable before memory forgets, so an error leaves memory matching the disk.
        self.log
            .prepare(|| live(&mut self.streams), self.next_seq)?;
        self.log.forget(fw, bytes)?;
        for key in keys {
            self.streams.remove(&key);
        }
        Ok(count)
    }
}

/// Every queued update, for a rewrite of the log.
fn live(streams: &mut BTreeMap<StreamKey, Stream>) -> Vec<&mut Pending> {
    streams
        .values_mut()
        .flat_map(|s| s.queue.iter_mut())
        .collect()
}

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod members_tests;
#[cfg(test)]
mod tests;
