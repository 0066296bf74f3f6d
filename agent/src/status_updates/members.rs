//! The run task lists the update log holds (`checkpoint::TaskChange`; the module header of
//! `checkpoint.rs` says why they live here rather than in the run files): which runs the log
//! holds the task list of, and their tasks, with each task's state moved forward by the updates
//! recorded for it. Pure bookkeeping, shared by the open log (changes applied once their write
//! is durable) and by the replay of a segment, so both build the same picture.
//!
//! Memory holds only what is live: a run from its `RunLogged` to its `RunRemoved`, a task from
//! its `TaskAdded` to its `TaskRemoved`. Nothing of a removed task stays behind, so a
//! long-lived executor running thousands of tiny tasks costs only the tasks it has now.
//! B-tree maps, not hash maps, so the memory of a burst of tasks is given back when they go.

use crate::checkpoint::{LoggedTask, TaskChange};
use bramble_proto::{FrameworkId, TaskId, TaskStatus};
use std::collections::BTreeMap;
use tracing::debug;

/// One run whose task list the log holds.
#[derive(Debug, Default)]
pub(super) struct LoggedRun {
    /// Bytes of its `RunLogged` frame in the current segment.
    pub frame_len: usize,
    pub tasks: BTreeMap<TaskId, Member>,
}

#[derive(Debug)]
pub(super) struct Member {
    pub task: LoggedTask,
    /// Bytes of its `TaskAdded` frame in the current segment.
    pub frame_len: usize,
}

/// See the module header.
#[derive(Debug, Default)]
pub(super) struct Members {
    runs: BTreeMap<String, LoggedRun>,
    /// (framework, task) → the run it is in, to move states forward as updates are recorded.
    index: BTreeMap<(FrameworkId, TaskId), String>,
}

impl Members {
    /// Applies `change`, whose frame is `frame_len` bytes; returns the bytes of frames it made
    /// dead (a replaced or removed task's, a removed run's). A task added to a run the log does
    /// not hold yet opens it (cannot come from this agent, which logs the run first; kept
    /// rather than lost).
    pub fn apply(&mut self, change: TaskChange, frame_len: usize) -> usize {
        match change {
            TaskChange::RunLogged { container } => {
                let run = self.runs.entry(container).or_default();
                std::mem::replace(&mut run.frame_len, frame_len)
            }
            TaskChange::TaskAdded { container, task } => {
                let key = (task.framework_id.clone(), task.info.task_id.clone());
                let task_id = task.info.task_id.clone();
                let run = self.runs.entry(container.clone()).or_default();
                let replaced = run.tasks.insert(task_id, Member { task, frame_len });
                self.index.insert(key, container);
                replaced.map_or(0, |m| m.frame_len)
            }
            TaskChange::TaskRemoved { container, task_id } => {
                let Some(run) = self.runs.get_mut(&container) else {
                    debug!(container, task = %task_id, "removal of a task of a run the log does not hold; ignored");
                    return 0;
                };
                let Some(member) = run.tasks.remove(&task_id) else {
                    return 0;
                };
                self.unindex(&member.task, &container);
                member.frame_len
            }
            TaskChange::RunRemoved { container } => {
                let Some(run) = self.runs.remove(&container) else {
                    return 0;
                };
                let mut freed = run.frame_len;
                for member in run.tasks.into_values() {
                    self.unindex(&member.task, &container);
                    freed += member.frame_len;
                }
                freed
            }
        }
    }

    /// An update of `status`'s task was recorded: its state is the task's now, if that is a
    /// move forward.
    pub fn recorded(&mut self, status: &TaskStatus) {
        let key = (status.framework_id.clone(), status.task_id.clone());
        let Some(container) = self.index.get(&key) else {
            return;
        };
        let member = self
            .runs
            .get_mut(container)
            .and_then(|run| run.tasks.get_mut(&status.task_id));
        if let Some(member) = member {
            if member.task.state.can_move_to(status.state) {
                member.task.state = status.state;
            }
        }
    }

    /// The runs whose task list the log holds, with their tasks.
    pub fn runs(&self) -> impl Iterator<Item = (&String, &LoggedRun)> + '_ {
        self.runs.iter()
    }

    /// The same, for a rewrite (which sets every frame length anew).
    pub fn runs_mut(&mut self) -> impl Iterator<Item = (&String, &mut LoggedRun)> + '_ {
        self.runs.iter_mut()
    }

    /// Bytes of every live frame.
    #[cfg(test)]
    pub fn live_bytes(&self) -> usize {
        self.runs
            .values()
            .map(|r| r.frame_len + r.tasks.values().map(|m| m.frame_len).sum::<usize>())
            .sum()
    }

    fn unindex(&mut self, task: &LoggedTask, container: &str) {
        let key = (task.framework_id.clone(), task.info.task_id.clone());
        // The framework may have reused the id in another run since.
        if self.index.get(&key).is_some_and(|c| c == container) {
            self.index.remove(&key);
        }
    }
}
