//! Reporting task states, and the group commit that makes them durable before anything is
//! sent: [`Agent::take_writes`] hands the runtime one burst's run files, task list changes
//! (`membership.rs`) and updates, [`Agent::committed`] takes what became of them. Also what an
//! acknowledgement frees: a task whose terminal update is acknowledged is forgotten, and a run
//! with nothing left is removed.

use super::{Agent, ContainerKey, Effect, Recorded, Writes};
use bramble_proto::messages::AgentToExecutor;
use bramble_proto::{FrameworkId, TaskId, TaskReason, TaskState, TaskStatus};
use tracing::{debug, error};

impl Agent {
    /// Collects `status` for the next commit. Every state change the agent itself decides
    /// goes through here; nothing is sent before it is durable.
    pub(super) fn report(&mut self, mut status: TaskStatus) {
        status.agent_id = self.agent_id.clone();
        self.uncommitted.push((status, None));
    }

    /// Like `report` for an executor's update, which the executor gets acknowledged (by
    /// `uuid`) once it is durable.
    pub(super) fn report_for_executor(
        &mut self,
        mut status: TaskStatus,
        key: &ContainerKey,
        uuid: uuid::Uuid,
    ) {
        status.agent_id = self.agent_id.clone();
        self.uncommitted.push((status, Some((key.clone(), uuid))));
    }

    /// Whether an update of this task is still unacknowledged, counting the ones reported in
    /// this burst and not yet committed.
    pub(super) fn awaiting_ack(&self, fw: &FrameworkId, task_id: &TaskId) -> bool {
        let same = |(u, _): &(TaskStatus, _)| &u.framework_id == fw && &u.task_id == task_id;
        self.unacknowledged
            .contains_key(&(fw.clone(), task_id.clone()))
            || self.uncommitted.iter().any(same)
            || self.committing.iter().any(same)
    }

    /// Every task of the run has ended and been acknowledged: nothing is left to remember.
    pub(super) fn run_is_over(&self, key: &ContainerKey) -> bool {
        self.runs.get(key).is_some_and(|r| {
            r.tasks.values().all(|t| t.terminal)
                && r.tasks
                    .keys()
                    .all(|tid| !self.awaiting_ack(&r.framework_id, tid))
        })
    }

    /// The burst's durable writes (see [`Writes`]). Call [`Agent::committed`] with what became
    /// of its updates before taking the next.
    pub fn take_writes(&mut self) -> Writes {
        let removed_runs = std::mem::take(&mut self.removed).into_iter().collect();
        let (runs, changes) = self.take_run_writes();
        self.committing_changes = changes;
        self.committing.append(&mut self.uncommitted);
        Writes {
            agent_id: self.new_agent_id.take(),
            removed_runs,
            runs,
            task_changes: self.committing_changes.clone(),
            updates: self.committing.iter().map(|(s, _)| s.clone()).collect(),
        }
    }

    /// What became of the last [`Writes`]: of its task list changes (`changes`, all together)
    /// and of its updates (`outcomes`, in their order). Durable updates are awaited
    /// acknowledgements now (and executors' are acknowledged to them); unwritten changes and
    /// updates are kept, in order, for the next commit.
    pub fn committed(&mut self, outcomes: &[Recorded], changes: Recorded) -> Vec<Effect> {
        let written = std::mem::take(&mut self.committing_changes);
        match changes {
            Recorded::Durable => self.task_changes_durable(&written),
            Recorded::NotWritten => {
                self.task_changes.splice(0..0, written);
            }
            // The runtime has said why; nothing to retry.
            Recorded::Refused => {}
        }
        let batch = std::mem::take(&mut self.committing);
        if batch.len() != outcomes.len() {
            error!(
                updates = batch.len(),
                outcomes = outcomes.len(),
                "commit outcome does not match its updates; keeping them all for the next commit"
            );
            self.uncommitted.splice(0..0, batch);
            return self.take_effects();
        }
        let mut retry = Vec::new();
        for ((status, ack), outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Recorded::NotWritten => {
                    retry.push((status, ack));
                    continue;
                }
                Recorded::Refused => {}
                Recorded::Durable => {
                    self.unacknowledged.insert(
                        (status.framework_id.clone(), status.task_id.clone()),
                        status.state,
                    );
                    // An executor's update is acknowledged only once durable; unrecorded, it
                    // resends.
                    let conn = ack.and_then(|(key, uuid)| {
                        self.runs.get(&key).and_then(|r| r.conn).map(|s| (s, uuid))
                    });
                    if let Some((serial, uuid)) = conn {
                        let msg = AgentToExecutor::UpdateAck(uuid);
                        self.effects.push(Effect::ToExecutor { serial, msg });
                    }
                }
            }
            debug!(task = %status.task_id, state = %status.state, recorded = (*outcome == Recorded::Durable), "status update");
        }
        // Behind an update that failed to write, its task's later updates wait too.
        retry.append(&mut self.uncommitted);
        self.uncommitted = retry;
        self.take_effects()
    }

    /// The runtime could not write this burst's run files (those of [`Writes::runs`] named by
    /// `keys`); `why` says what failed. A run whose first checkpoint this was could not be
    /// recovered by a restarted agent, so its launch fails: its container is killed and its
    /// tasks are FAILED with the reason, in place of what this burst said about them (the
    /// RUNNING of a command task). A run checkpointed before keeps its older file. Returns the
    /// burst's updates to record, in place of [`Writes::updates`]; call before recording.
    pub fn runs_not_checkpointed(&mut self, keys: &[ContainerKey], why: &str) -> Vec<TaskStatus> {
        for key in keys {
            if !self.first_checkpoints.remove(key) {
                error!(container = %key, "could not rewrite a run's checkpoint; a restarted agent recovers it from the older one: {why}");
                continue;
            }
            let Some(run) = self.runs.get_mut(key) else {
                continue;
            };
            error!(framework = %run.framework_id, executor = %run.executor_id, container = %key, "could not checkpoint a new run; failing its launch: {why}");
            run.shutting_down = true;
            let fw = run.framework_id.clone();
            let executor_id = run.executor_id.clone();
            let handed: Vec<TaskId> = run
                .tasks
                .iter()
                .filter(|(_, t)| !t.state.is_terminal())
                .map(|(id, _)| id.clone())
                .collect();
            let queued: Vec<TaskId> = run.queued.drain(..).map(|t| t.task_id).collect();
            let message = format!(
                "launch failed: could not checkpoint the run, so no restarted agent could \
                 recover it: {why}"
            );
            for task_id in &queued {
                self.task_left(key, task_id);
            }
            for task_id in handed.iter().chain(&queued) {
                // Nothing said about the task in this burst goes out (its RUNNING).
                self.committing
                    .retain(|(s, _)| !(s.framework_id == fw && &s.task_id == task_id));
                self.set_task_state(key, task_id, TaskState::Failed);
                let status = self
                    .agent_status(&fw, Some(&executor_id), task_id, TaskState::Failed)
                    .with_reason(TaskReason::LaunchFailed, message.clone());
                let status = TaskStatus {
                    agent_id: self.agent_id.clone(),
                    ..status
                };
                self.committing.push((status, None));
            }
            self.kill_container(key);
        }
        self.committing.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The update log removed an acknowledged head update (see `Effect::AcknowledgeUpdate`).
    pub(super) fn update_acknowledged(
        &mut self,
        fw: &FrameworkId,
        task_id: &TaskId,
        settled: bool,
    ) {
        if settled {
            self.unacknowledged.remove(&(fw.clone(), task_id.clone()));
        }
        self.forget_acknowledged(fw, task_id);
    }

    /// A task whose terminal update was acknowledged is forgotten; a run with nothing left
    /// and no process is removed.
    fn forget_acknowledged(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        if self.awaiting_ack(fw, task_id) {
            return;
        }
        let found = self.runs.iter_mut().find(|(_, run)| {
            &run.framework_id == fw && run.tasks.get(task_id).is_some_and(|t| t.terminal)
        });
        let Some((key, run)) = found else {
            return;
        };
        let key = key.clone();
        run.tasks.remove(task_id);
        let sandbox = run.sandbox.clone();
        let empty = run.exited && run.tasks.is_empty() && run.queued.is_empty();
        self.finished_sandboxes
            .insert((fw.clone(), task_id.clone()), sandbox);
        if empty {
            self.remove_run(&key);
        } else {
            // Or a restarted agent would bring the task back, with no update left to say it
            // ended.
            self.task_left(&key, task_id);
        }
    }

    /// The framework is gone for good: its unacknowledged updates are dropped.
    pub(super) fn forget_framework_updates(&mut self, fw: &FrameworkId) {
        self.unacknowledged.retain(|(f, _), _| f != fw);
        self.effects.push(Effect::ForgetFrameworkUpdates {
            framework_id: fw.clone(),
        });
    }

    /// Forgets a run; its checkpoint is removed in the next commit.
    pub(super) fn remove_run(&mut self, key: &ContainerKey) {
        self.dirty.remove(key);
        self.removed.insert(key.clone());
        if let Some(run) = self.runs.remove(key) {
            self.task_list_removed(key, &run);
            // However the run ends, its tasks' sandboxes stay readable for operators.
            for task_id in run.tasks.keys() {
                self.finished_sandboxes.insert(
                    (run.framework_id.clone(), task_id.clone()),
                    run.sandbox.clone(),
                );
            }
            let id = (run.framework_id, run.executor_id);
            if self.active.get(&id) == Some(key) {
                self.active.remove(&id);
            }
        }
    }
}
