//! Taking over what a previous agent process left (see the module header in `mod.rs`): the
//! runtime reads the checkpoints and checks which processes still live; the core decides what
//! each run is now and asks for the live ones to be re-adopted.
//!
//! A run's tasks come from the update log when it holds the run's task list, else from its run
//! file (the run's first commit was cut short, or an older agent wrote it): the next commit
//! then moves them into the log (`membership.rs`). Each task's state is the newest of the
//! file's or the log's and its newest unacknowledged update.

use super::{Agent, ContainerKey, Effect, Kind, Run, TaskList, TaskRun};
use crate::checkpoint::{LoggedTask, RunCheckpoint, TaskChange};
use crate::containerizer::RecoverSpec;
use bramble_proto::task::TaskInfo;
use bramble_proto::{FrameworkId, TaskId, TaskReason, TaskState};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tracing::{info, warn};

/// One checkpointed run, and whether its process is still the one that was launched.
#[derive(Debug, Clone)]
pub struct RecoveredRun {
    pub checkpoint: RunCheckpoint,
    pub alive: bool,
}

/// What [`Agent::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Runs read from checkpoints.
    pub runs: usize,
    /// Processes still running and re-adopted.
    pub adopted: usize,
    /// Custom executors among them, expected to reconnect.
    pub executors: usize,
    /// Tasks reported ended or lost because their processes did not survive.
    pub tasks_gone: usize,
}

impl Agent {
    /// Takes over what a previous agent process left. Call once, before any input is
    /// handled. `logged`: the runs whose task list the update log holds, with their tasks
    /// (`StatusUpdateManager::logged_runs`). `reboot`: why nothing can have survived (the host
    /// rebooted), or `None` to re-adopt live processes. Every run that is not lost is adopted
    /// ([`Effect::Adopt`]), dead or alive: its end is reported the usual way, through
    /// `ContainerExited`.
    pub fn recover(
        &mut self,
        runs: Vec<RecoveredRun>,
        mut logged: BTreeMap<ContainerKey, Vec<LoggedTask>>,
        reboot: Option<String>,
        now: Instant,
    ) -> (RecoverySummary, Vec<Effect>) {
        let mut summary = RecoverySummary {
            runs: runs.len(),
            ..RecoverySummary::default()
        };
        if !runs.is_empty() {
            self.recovery_began = Some(now);
        }
        for RecoveredRun {
            checkpoint: cp,
            alive,
        } in runs
        {
            let key = cp.container.clone();
            let (tasks, queued, task_list) = match logged.remove(&key) {
                Some(list) => {
                    let (tasks, queued) = self.tasks_from_log(&key, &cp.framework_id, list);
                    (tasks, queued, TaskList::Logged)
                }
                None => {
                    let file = cp.tasks.into_iter().map(|t| (t.info, t.state));
                    let tasks = self.task_runs(&cp.framework_id, file);
                    self.to_log.insert(key.clone());
                    (tasks, cp.queued, TaskList::InFile)
                }
            };
            let is_command = cp.executor.is_none();
            let mut run = Run {
                framework_id: cp.framework_id.clone(),
                executor_id: cp.executor_id.clone(),
                kind: match cp.executor {
                    Some(info) => Kind::Custom {
                        info,
                        mesos: cp.mesos,
                    },
                    None => Kind::Command,
                },
                sandbox: cp.sandbox,
                container: None,
                token: cp.token,
                conn: None,
                tasks,
                queued,
                launched_at: now,
                disconnected_at: None,
                idle_since: None,
                shutting_down: false,
                registration_timed_out: false,
                exited: false,
                memory_limit_mib: cp.memory_limit_mib,
                cpus: 0.0,
                recovered: true,
                task_list,
                fetched: None,
            };
            if let Some(why) = &reboot {
                summary.tasks_gone += self.lose_run(&key, run, why);
                continue;
            }
            let what = if is_command {
                "command task"
            } else {
                "executor"
            };
            // pid 0: the run was written after its process was already known to be gone.
            if alive && cp.pid != 0 {
                summary.adopted += 1;
                info!(framework = %run.framework_id, executor = %run.executor_id, container = %key,
                    pid = cp.pid, "re-adopted a running {what}");
                if !is_command {
                    summary.executors += 1;
                    self.awaiting_reconnect.insert(key.clone());
                }
            } else {
                summary.tasks_gone += run.live_tasks();
                info!(framework = %run.framework_id, executor = %run.executor_id, container = %key,
                    pid = cp.pid, "{what} ended while the agent was down");
            }
            // Until the runtime says what it adopted, the run stands as checkpointed.
            run.container = Some(super::ContainerInfo {
                pid: cp.pid,
                start_time: cp.start_time,
                cgroup_dirs: cp.cgroup_dirs.clone(),
            });
            self.effects.push(Effect::Adopt {
                container: key.clone(),
                spec: RecoverSpec {
                    container_id: key.clone(),
                    pid: cp.pid,
                    start_time: cp.start_time,
                    cgroup_dirs: cp.cgroup_dirs,
                    memory_limit_mib: cp.memory_limit_mib,
                    exit_status_file: None,
                },
                supervised: is_command,
            });
            self.active.insert(
                (run.framework_id.clone(), run.executor_id.clone()),
                key.clone(),
            );
            self.runs.insert(key, run);
        }
        // Only a crash between removing a run file and logging the run's removal leaves these.
        for (key, tasks) in logged {
            warn!(container = %key, tasks = tasks.len(),
                "the update log lists tasks of a run with no run file; forgetting them");
            self.task_changes
                .push(TaskChange::RunRemoved { container: key });
        }
        if self.awaiting_reconnect.is_empty() {
            self.recovery_began = None;
        }
        if summary.runs == 0 {
            return (summary, self.take_effects());
        }
        info!(
            runs = summary.runs,
            adopted = summary.adopted,
            executors = summary.executors,
            tasks_gone = summary.tasks_gone,
            "recovered checkpointed runs"
        );
        (summary, self.take_effects())
    }

    /// A run's tasks from the log: handed ones as tasks, the rest queued. A task that ended and
    /// whose updates are all acknowledged is over (its removal was not written before the
    /// agent stopped): it is forgotten now rather than kept until its executor ends.
    fn tasks_from_log(
        &mut self,
        key: &ContainerKey,
        fw: &FrameworkId,
        list: Vec<LoggedTask>,
    ) -> (HashMap<TaskId, TaskRun>, Vec<TaskInfo>) {
        let (handed, queued): (Vec<LoggedTask>, Vec<LoggedTask>) =
            list.into_iter().partition(|t| t.handed);
        let mut tasks = self.task_runs(fw, handed.into_iter().map(|t| (t.info, t.state)));
        let over: Vec<TaskId> = tasks
            .values()
            .filter(|t| t.terminal && !self.awaiting_ack(fw, &t.info.task_id))
            .map(|t| t.info.task_id.clone())
            .collect();
        for task_id in over {
            tasks.remove(&task_id);
            self.task_changes.push(TaskChange::TaskRemoved {
                container: key.clone(),
                task_id,
            });
        }
        (tasks, queued.into_iter().map(|t| t.info).collect())
    }

    /// Tasks as recovered, each in the newer of its checkpointed state and its newest
    /// unacknowledged update's.
    fn task_runs(
        &self,
        fw: &FrameworkId,
        checkpointed: impl Iterator<Item = (TaskInfo, TaskState)>,
    ) -> HashMap<TaskId, TaskRun> {
        checkpointed
            .map(|(info, checkpointed)| {
                let pending = self
                    .unacknowledged
                    .get(&(fw.clone(), info.task_id.clone()))
                    .copied();
                let state = match pending {
                    Some(p) if checkpointed.can_move_to(p) => p,
                    _ => checkpointed,
                };
                let mut task = TaskRun::staging(info);
                task.state = state;
                task.terminal = state.is_terminal();
                (task.info.task_id.clone(), task)
            })
            .collect()
    }

    /// After a reboot: every unfinished task of `run` is LOST, and no pid it names is touched.
    /// Returns how many tasks were reported.
    fn lose_run(&mut self, key: &ContainerKey, mut run: Run, why: &str) -> usize {
        run.exited = true;
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        let mut lost: Vec<TaskId> = run
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        let dropped: Vec<TaskId> = run.queued.drain(..).map(|t| t.task_id).collect();
        if matches!(run.kind, Kind::Custom { .. }) {
            self.exited_while_down
                .push((fw.clone(), executor_id.clone()));
        }
        warn!(framework = %fw, executor = %executor_id, container = %key, tasks = lost.len(),
            "{why}: reporting the run's tasks LOST");
        self.runs.insert(key.clone(), run);
        for task_id in &dropped {
            self.task_left(key, task_id);
        }
        lost.extend(dropped);
        for task_id in &lost {
            self.set_task_state(key, task_id, TaskState::Lost);
            let status = self
                .agent_status(&fw, Some(&executor_id), task_id, TaskState::Lost)
                .with_reason(TaskReason::HostRebooted, why.to_string());
            self.report(status);
        }
        if self.run_is_over(key) {
            self.remove_run(key);
        } else {
            // Rewritten without its pid: in this boot that pid means nothing.
            self.dirty.insert(key.clone());
        }
        lost.len()
    }
}
