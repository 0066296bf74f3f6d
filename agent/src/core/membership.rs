//! Where each run's task list is durable (the split is explained in `checkpoint.rs`): in its
//! run file until the update log holds it, in the log after. The parts of the core that add,
//! hand over or remove a task say so here; this file decides what that costs — nothing, a
//! record in the burst's log write, or (only while the log does not hold the run yet) a
//! rewrite of the run file — and builds what [`Agent::take_writes`] hands the runtime.
//!
//! A run's list moves into the log in the commit after its run file is first written (for a
//! new run that is the same commit: the file first, with its tasks, then the log's snapshot),
//! and once the log holds it durably the run file is written without tasks. So an executor
//! running thousands of tiny tasks has its run file written at launch and when run-level facts
//! change, never per task.

use super::{Agent, ContainerKey, Kind, Run};
use crate::checkpoint::{LoggedTask, RunCheckpoint, TaskChange, TaskCheckpoint};
use bramble_proto::{TaskId, TaskState};
use tracing::error;

/// Where a run's task list is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskList {
    /// Nowhere yet: the run file's first write will hold it.
    Unwritten,
    /// In the run file only: the next commit moves it into the log.
    InFile,
    /// Handed to the log (`RunLogged` and a snapshot) but not durable there yet: changes go
    /// to both.
    Logging,
    /// In the log: changes are log records, and the run file is written without tasks.
    Logged,
}

impl Agent {
    /// Task `task_id` joined run `key` (queued or handed to its executor), or was handed over
    /// from the queue.
    pub(super) fn task_joined(&mut self, key: &ContainerKey, task_id: &TaskId) {
        let Some(run) = self.runs.get(key) else {
            return;
        };
        let logged = logged_task(run, task_id);
        let list = run.task_list;
        if matches!(list, TaskList::Logging | TaskList::Logged) {
            match logged {
                Some(task) => self.task_changes.push(TaskChange::TaskAdded {
                    container: key.clone(),
                    task,
                }),
                None => error!(container = %key, task = %task_id, "joined task not in its run"),
            }
        }
        self.rewrite_unless_logged(key, list);
        self.resize_executor(key);
    }

    /// Task `task_id` left run `key` (acknowledged terminal, or dropped from the queue).
    pub(super) fn task_left(&mut self, key: &ContainerKey, task_id: &TaskId) {
        let Some(list) = self.runs.get(key).map(|r| r.task_list) else {
            return;
        };
        if matches!(list, TaskList::Logging | TaskList::Logged) {
            self.task_changes.push(TaskChange::TaskRemoved {
                container: key.clone(),
                task_id: task_id.clone(),
            });
        }
        self.rewrite_unless_logged(key, list);
    }

    /// A task of run `key` changed state in a way a restarted agent must know even once its
    /// update is acknowledged (a Mesos executor's task leaving STAGING). The log keeps each
    /// task's latest recorded state itself; a run file only when rewritten.
    pub(super) fn task_state_matters(&mut self, key: &ContainerKey) {
        if let Some(list) = self.runs.get(key).map(|r| r.task_list) {
            self.rewrite_unless_logged(key, list);
        }
    }

    /// While the run file holds the list, it is rewritten as the list changes.
    fn rewrite_unless_logged(&mut self, key: &ContainerKey, list: TaskList) {
        if matches!(list, TaskList::InFile | TaskList::Logging) {
            self.dirty.insert(key.clone());
        }
    }

    /// The run is forgotten: so is its task list in the log.
    pub(super) fn task_list_removed(&mut self, key: &ContainerKey, run: &Run) {
        self.to_log.remove(key);
        if matches!(run.task_list, TaskList::Logging | TaskList::Logged) {
            self.task_changes.push(TaskChange::RunRemoved {
                container: key.clone(),
            });
        }
    }

    /// The burst's run files (dirty runs), then its task list changes: the ones noted as they
    /// happened, then a snapshot of each run whose list moves into the log now.
    pub(super) fn take_run_writes(&mut self) -> (Vec<RunCheckpoint>, Vec<TaskChange>) {
        let mut files = Vec::new();
        self.first_checkpoints.clear();
        for key in std::mem::take(&mut self.dirty) {
            let Some(run) = self.runs.get_mut(&key) else {
                continue;
            };
            if run.task_list == TaskList::Unwritten {
                run.task_list = TaskList::InFile;
                self.to_log.insert(key.clone());
                self.first_checkpoints.insert(key.clone());
            }
            files.push(run_checkpoint(&key, run));
        }
        let mut changes = std::mem::take(&mut self.task_changes);
        for key in std::mem::take(&mut self.to_log) {
            let Some(run) = self.runs.get_mut(&key) else {
                continue;
            };
            run.task_list = TaskList::Logging;
            changes.push(TaskChange::RunLogged {
                container: key.clone(),
            });
            let handed = run.tasks.values().map(|t| LoggedTask {
                framework_id: run.framework_id.clone(),
                info: t.info.clone(),
                handed: true,
                state: t.state,
            });
            let queued = run.queued.iter().map(|info| LoggedTask {
                framework_id: run.framework_id.clone(),
                info: info.clone(),
                handed: false,
                state: TaskState::Staging,
            });
            changes.extend(handed.chain(queued).map(|task| TaskChange::TaskAdded {
                container: key.clone(),
                task,
            }));
        }
        (files, changes)
    }

    /// The burst's task list changes are durable: runs whose snapshot was among them are held
    /// by the log now.
    pub(super) fn task_changes_durable(&mut self, changes: &[TaskChange]) {
        for change in changes {
            if let TaskChange::RunLogged { container } = change {
                if let Some(run) = self.runs.get_mut(container) {
                    if run.task_list == TaskList::Logging {
                        run.task_list = TaskList::Logged;
                    }
                }
            }
        }
    }
}

/// Task `task_id` of `run` as the log holds it.
fn logged_task(run: &Run, task_id: &TaskId) -> Option<LoggedTask> {
    let (info, handed, state) = match run.tasks.get(task_id) {
        Some(t) => (&t.info, true, t.state),
        None => {
            let info = run.queued.iter().find(|t| &t.task_id == task_id)?;
            (info, false, TaskState::Staging)
        }
    };
    Some(LoggedTask {
        framework_id: run.framework_id.clone(),
        info: info.clone(),
        handed,
        state,
    })
}

/// The run file of one run as it stands: its tasks only while the log does not hold them. A
/// run without a live container is written with pid 0: there is nothing to re-adopt.
fn run_checkpoint(key: &ContainerKey, run: &Run) -> RunCheckpoint {
    let container = run.container.as_ref().filter(|_| !run.exited);
    let with_tasks = run.task_list != TaskList::Logged;
    RunCheckpoint {
        container: key.clone(),
        framework_id: run.framework_id.clone(),
        executor_id: run.executor_id.clone(),
        executor: match &run.kind {
            Kind::Command => None,
            Kind::Custom { info, .. } => Some(info.clone()),
        },
        mesos: run.kind.mesos().cloned(),
        sandbox: run.sandbox.clone(),
        token: run.token.clone(),
        pid: container.map_or(0, |c| c.pid),
        start_time: container.map_or(0, |c| c.start_time),
        cgroup_dirs: container.map_or_else(Vec::new, |c| c.cgroup_dirs.clone()),
        memory_limit_mib: run.memory_limit_mib,
        tasks: if with_tasks {
            run.tasks
                .values()
                .map(|t| TaskCheckpoint {
                    info: t.info.clone(),
                    state: t.state,
                })
                .collect()
        } else {
            Vec::new()
        },
        queued: if with_tasks {
            run.queued.clone()
        } else {
            Vec::new()
        },
    }
}
