//! Task state: status updates from agents (moved only as `TaskState::can_move_to` allows,
//! forwarded to the framework either way), terminal updates the master makes itself (LOST),
//! acknowledgements (a task is forgotten once its terminal update is acknowledged), kills and
//! reconciliation.

use super::feed::ClusterEvent;
use super::{Master, RECENT_COMPLETED};
use crate::store::TaskRecord;
use bramble_proto::messages::{MasterEvent, MasterToAgent, TaskSummary};
use bramble_proto::task::{TaskInfo, UpdateSource};
use bramble_proto::{AgentId, FrameworkId, TaskId, TaskReason, TaskState, TaskStatus};
use tracing::{debug, info, warn};
use uuid::Uuid;

/// A task the master tracks, from launch until its terminal update is acknowledged.
pub(super) struct TaskEntry {
    pub(super) info: TaskInfo,
    pub(super) state: TaskState,
    pub(super) message: String,
    /// The terminal update, once seen: the task is forgotten when its uuid is acknowledged.
    pub(super) terminal: Option<TaskStatus>,
    /// The master (not the agent) resends `terminal` until it is acknowledged: a LOST the
    /// master made itself, or the unacknowledged end of a task whose agent was removed.
    pub(super) resend_by_master: bool,
    /// A kill was asked for: resent whenever the agent (re-)registers still running the task,
    /// since a KillTask sent while its link was dropping is lost with the connection. Kept in
    /// the store's `kills` table until the task ends, so a restarted master or the next
    /// leader resends it too.
    pub(super) kill_requested: bool,
    pub(super) reason: Option<TaskReason>,
    /// Unix times, for operators: launched by the master, RUNNING and terminal on the agent.
    pub(super) launched_at: f64,
    pub(super) started_at: Option<f64>,
    pub(super) ended_at: Option<f64>,
}

impl TaskEntry {
    fn terminal_uuid(&self) -> Option<Uuid> {
        self.terminal.as_ref().and_then(|s| s.uuid)
    }

    pub(super) fn record(&self, fw: &FrameworkId) -> TaskRecord {
        TaskRecord {
            framework_id: fw.clone(),
            info: self.info.clone(),
            state: self.state,
            message: self.message.clone(),
            reason: self.reason,
            launched_at: self.launched_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            terminal: self.terminal.clone(),
            resend_by_master: self.resend_by_master,
        }
    }

    pub(super) fn from_record(r: TaskRecord) -> Self {
        Self {
            info: r.info,
            state: r.state,
            message: r.message,
            terminal: r.terminal,
            resend_by_master: r.resend_by_master,
            kill_requested: false,
            reason: r.reason,
            launched_at: r.launched_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

impl Master {
    pub(super) fn status_update(&mut self, agent_id: &AgentId, mut status: TaskStatus) {
        // Schedulers acknowledge by agent (Mesos clients read it from every update).
        status.agent_id.get_or_insert_with(|| agent_id.clone());
        let fw = status.framework_id.clone();
        let Some(uuid) = status.uuid else {
            warn!(agent = %agent_id, task = %status.task_id, "agent sent a status update without uuid; ignoring");
            return;
        };
        let framework_connected = self.frameworks.get(&fw).is_some_and(|f| f.conn.is_some());
        let Some(task) = self
            .frameworks
            .get_mut(&fw)
            .and_then(|f| f.tasks.get_mut(&status.task_id))
        else {
            // Nobody will ever acknowledge it: acknowledge on the framework's behalf so the
            // agent stops resending.
            debug!(agent = %agent_id, framework = %fw, task = %status.task_id, "update for an unknown task; acknowledging it");
            self.send_agent(
                agent_id,
                MasterToAgent::Acknowledge {
                    framework_id: fw,
                    task_id: status.task_id,
                    uuid,
                },
            );
            return;
        };
        let previous = task.state;
        self.feed.observe_update_latency(status.timestamp);
        self.feed.counters().status_update();
        let moved = previous.can_move_to(status.state);
        if moved {
            task.state = status.state;
            task.message = status.message.clone();
            task.reason = status.reason;
            if status.state == TaskState::Running && task.started_at.is_none() {
                task.started_at = Some(status.timestamp);
            }
            if status.state.is_terminal() {
                task.ended_at = Some(status.timestamp);
            }
            if previous != status.state {
                let summary = task_summary(&fw, &status.task_id, task);
                self.feed.emit(|| ClusterEvent::Task(summary));
            }
            if status.state.is_terminal() {
                self.feed.counters().task_ended(&fw, status.state);
                task.terminal = Some(status.clone());
                let res = task.info.resources.clone();
                let task_agent = task.info.agent_id.clone();
                // A task that finished is routine (debug: tiny tasks end thousands of times a
                // second); one that failed, was killed or lost is what an operator looks for.
                if status.state == TaskState::Finished {
                    debug!(framework = %fw, task = %status.task_id, "task finished");
                } else {
                    info!(framework = %fw, task = %status.task_id, state = %status.state, reason = ?status.reason, message = %status.message, "task ended");
                }
                self.allocator.recover(&task_agent, &fw, &res);
                self.allocation_due = true;
            } else if previous != status.state {
                debug!(framework = %fw, task = %status.task_id, state = %status.state, "task state");
            }
        } else if !(previous.is_terminal() && task.terminal_uuid() == Some(uuid))
            && previous != status.state
        {
            debug!(framework = %fw, task = %status.task_id, from = %previous, to = %status.state,
                "out-of-order update: master keeps {previous}, framework still gets it");
        }
        if moved {
            self.dirty_task(&fw, &status.task_id);
        }
        if framework_connected {
            // Before the commit: the agent's record is what is durable (see `state/mod.rs`).
            self.relay_update(&fw, status);
        }
    }

    /// A terminal update the master makes itself (LOST tasks of a removed agent, or of an
    /// agent that came back without them). It carries a uuid and, like an agent's, is kept
    /// (durably) and resent by the master until the framework acknowledges it.
    pub(super) fn master_terminal_update(
        &mut self,
        fw: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: TaskReason,
        message: &str,
    ) {
        let Some(task) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
        else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        let agent = task.info.agent_id.clone();
        let resources = task.info.resources.clone();
        let mut status = TaskStatus::new(fw.clone(), task_id.clone(), state, UpdateSource::Master)
            .with_reason(reason, message);
        status.agent_id = Some(agent.clone());
        status.uuid = Some(Uuid::new_v4());
        task.state = state;
        task.reason = Some(reason);
        task.message = message.to_string();
        task.ended_at = Some(status.timestamp);
        task.terminal = Some(status.clone());
        task.resend_by_master = true;
        self.feed.counters().task_ended(fw, state);
        let summary = task_summary(fw, task_id, task);
        self.feed.emit(|| ClusterEvent::Task(summary));
        self.dirty_task(fw, task_id);
        self.allocator.recover(&agent, fw, &resources);
        self.allocation_due = true;
        info!(framework = %fw, task = %task_id, %state, ?reason, "{message}");
        self.send_framework(fw, MasterEvent::Update(status));
    }

    pub(super) fn acknowledge(
        &mut self,
        fw: &FrameworkId,
        agent_id: AgentId,
        task_id: TaskId,
        uuid: Uuid,
    ) {
        let (forget, master_held) = self
            .frameworks
            .get(fw)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| (t.terminal_uuid() == Some(uuid), t.resend_by_master))
            .unwrap_or((false, false));
        if forget {
            let removed = self
                .frameworks
                .get_mut(fw)
                .and_then(|f| f.tasks.remove(&task_id));
            if let Some(t) = removed {
                self.remember_completed(task_summary(fw, &task_id, &t));
            }
            // The agent hears of the acknowledgement only once the task is forgotten on disk;
            // before that, its resend is what carries the update across a master crash.
            self.dirty_task(fw, &task_id);
        }
        if forget && master_held {
            // The master made this update; no agent is waiting for its acknowledgement.
            return;
        }
        self.send_agent(
            &agent_id,
            MasterToAgent::Acknowledge {
                framework_id: fw.clone(),
                task_id,
                uuid,
            },
        );
    }

    pub(super) fn kill(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        let target = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
            .map(|t| {
                let newly = !t.state.is_terminal() && !t.kill_requested;
                if !t.state.is_terminal() {
                    t.kill_requested = true;
                }
                (t.info.agent_id.clone(), t.state, newly)
            });
        let target = target.map(|(agent, state, newly)| {
            if newly {
                self.dirty_kills.insert((fw.clone(), task_id.clone()));
            }
            (agent, state)
        });
        match target {
            Some((agent, state)) if !state.is_terminal() => {
                info!(framework = %fw, task = %task_id, agent = %agent, "killing task");
                self.send_agent(
                    &agent,
                    MasterToAgent::KillTask {
                        framework_id: fw.clone(),
                        task_id: task_id.clone(),
                    },
                );
            }
            Some(_) => {}
            None => {
                // Mesos answers a kill of an unknown task with TASK_LOST so the framework's
                // view converges; a framework asking for another framework's task lands here
                // too, and learns nothing about it.
                let status = TaskStatus::new(
                    fw.clone(),
                    task_id.clone(),
                    TaskState::Lost,
                    UpdateSource::Master,
                )
                .with_reason(
                    TaskReason::Reconciliation,
                    "kill of a task unknown to this framework",
                );
                self.send_framework(fw, MasterEvent::Update(status));
            }
        }
    }

    pub(super) fn reconcile(&mut self, fw: &FrameworkId, task_ids: Vec<TaskId>) {
        let Some(f) = self.frameworks.get(fw) else {
            return;
        };
        let status_of = |id: &TaskId, t: &TaskEntry| {
            let mut s = TaskStatus::new(fw.clone(), id.clone(), t.state, UpdateSource::Master)
                .with_reason(TaskReason::Reconciliation, t.message.clone());
            s.agent_id = Some(t.info.agent_id.clone());
            s
        };
        let updates: Vec<TaskStatus> = if task_ids.is_empty() {
            f.tasks
                .iter()
                .filter(|(_, t)| !t.state.is_terminal())
                .map(|(id, t)| status_of(id, t))
                .collect()
        } else {
            task_ids
                .iter()
                .map(|id| match f.tasks.get(id) {
                    Some(t) => status_of(id, t),
                    None => TaskStatus::new(
                        fw.clone(),
                        id.clone(),
                        TaskState::Lost,
                        UpdateSource::Master,
                    )
                    .with_reason(TaskReason::Reconciliation, "task unknown to the master"),
                })
                .collect()
        };
        for u in updates {
            self.send_framework(fw, MasterEvent::Update(u));
        }
    }

    /// Where a task runs or ran: a live task's agent, else a recently completed one's (as
    /// far back as the operator views keep them, `RECENT_COMPLETED`, as Mesos keeps
    /// `max_completed_tasks_per_framework`). Nothing is kept per task beyond those.
    pub(super) fn task_agent(&self, fw: &FrameworkId, task: &TaskId) -> Option<AgentId> {
        if let Some(t) = self.frameworks.get(fw).and_then(|f| f.tasks.get(task)) {
            return Some(t.info.agent_id.clone());
        }
        self.completed
            .iter()
            .rev()
            .find(|s| &s.framework_id == fw && &s.id == task)
            .map(|s| s.agent_id.clone())
    }

    pub(super) fn remember_completed(&mut self, summary: TaskSummary) {
        if self.completed.len() >= RECENT_COMPLETED {
            self.completed.pop_front();
            self.completed_dropped += 1;
        }
        self.completed.push_back(summary);
    }

    pub(super) fn emit_task(&self, fw: &FrameworkId, task_id: &TaskId) {
        if let Some(t) = self.frameworks.get(fw).and_then(|f| f.tasks.get(task_id)) {
            self.feed
                .emit(|| ClusterEvent::Task(task_summary(fw, task_id, t)));
        }
    }
}

pub(super) fn task_summary(fw: &FrameworkId, id: &TaskId, t: &TaskEntry) -> TaskSummary {
    TaskSummary {
        id: id.clone(),
        name: t.info.name.clone(),
        framework_id: fw.clone(),
        agent_id: t.info.agent_id.clone(),
        state: t.state,
        message: t.message.clone(),
        resources: t.info.resources.clone(),
        reason: t.reason,
        launched_at: t.launched_at,
        started_at: t.started_at,
        ended_at: t.ended_at,
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Input;
    use bramble_proto::messages::{AgentToMaster, MasterEvent, MasterToAgent, SchedulerCall};
    use bramble_proto::task::{TaskStatus, UpdateSource};
    use bramble_proto::{AgentId, FrameworkId, TaskId, TaskReason, TaskState};
    use std::time::Instant;
    use uuid::Uuid;

    #[test]
    fn a_finished_task_is_forgotten_once_its_update_is_acknowledged() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = launched(&mut m, vec![task_info("t1")], now);
        let uuid = Uuid::new_v4();
        let mut finished = TaskStatus::new(
            FrameworkId("fw1".into()),
            TaskId("t1".into()),
            TaskState::Finished,
            UpdateSource::Agent,
        );
        finished.uuid = Some(uuid);
        let update = AgentToMaster::StatusUpdate(finished);
        m.handle(
            Input::FromAgent {
                conn: 1,
                msg: update,
            },
            now,
        );
        settle(&mut m, now);
        assert_eq!(
            updates(&drain(&mut fw)),
            vec![("t1".to_string(), TaskState::Finished)]
        );
        assert_eq!(m.snapshot().tasks.len(), 1, "kept until acknowledged");

        let ack = SchedulerCall::Acknowledge {
            agent_id: AgentId("a1".into()),
            task_id: TaskId("t1".into()),
            uuid,
        };
        call(&mut m, 2, ack, now);
        let batch = m.take_writes();
        assert!(batch.tasks.iter().any(|(_, r)| r.is_none()), "{batch:?}");
        m.flush_outbox();
        assert!(
            drain(&mut agent)
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::Acknowledge { uuid: u, .. } if *u == uuid)),
            "the agent stops resending"
        );
        let s = m.snapshot();
        assert!(s.tasks.is_empty());
        assert_eq!(s.completed_tasks.len(), 1);
        assert_eq!(s.completed_tasks[0].state, TaskState::Finished);
    }

    #[test]
    fn an_agents_update_reaches_the_framework_before_the_commit_but_its_ack_only_after() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = launched(&mut m, vec![task_info("t1")], now);
        let uuid = Uuid::new_v4();
        let mut finished = TaskStatus::new(
            FrameworkId("fw1".into()),
            TaskId("t1".into()),
            TaskState::Finished,
            UpdateSource::Agent,
        );
        finished.uuid = Some(uuid);
        let msg = AgentToMaster::StatusUpdate(finished);
        m.handle(Input::FromAgent { conn: 1, msg }, now);
        m.end_burst(now);
        m.flush_early();
        assert_eq!(
            updates(&drain(&mut fw)),
            vec![("t1".to_string(), TaskState::Finished)],
            "relayed before the burst is committed"
        );
        let batch = m.take_writes();
        assert!(
            !batch.tasks.is_empty(),
            "the new state is in this burst's commit"
        );
        m.flush_outbox();
        assert!(updates(&drain(&mut fw)).is_empty(), "relayed once");

        let ack = SchedulerCall::Acknowledge {
            agent_id: AgentId("a1".into()),
            task_id: TaskId("t1".into()),
            uuid,
        };
        call(&mut m, 2, ack, now);
        m.end_burst(now);
        m.flush_early();
        assert!(
            drain(&mut agent).is_empty(),
            "the agent keeps its record until the master has committed the ack's effect"
        );
        m.take_writes();
        m.flush_outbox();
        assert!(drain(&mut agent)
            .iter()
            .any(|msg| matches!(msg, MasterToAgent::Acknowledge { uuid: u, .. } if *u == uuid)));
    }

    #[test]
    fn a_relayed_update_never_overtakes_what_is_held_for_the_same_framework() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = launched(&mut m, vec![task_info("t1")], now);
        // A kill of an unknown task is answered by the master itself (held for the commit);
        // the agent's update that follows in the same burst must queue behind it.
        let kill = SchedulerCall::Kill {
            task_id: TaskId("ghost".into()),
        };
        call(&mut m, 2, kill, now);
        let mut running = TaskStatus::new(
            FrameworkId("fw1".into()),
            TaskId("t1".into()),
            TaskState::Running,
            UpdateSource::Executor,
        );
        running.uuid = Some(Uuid::new_v4());
        let msg = AgentToMaster::StatusUpdate(running);
        m.handle(Input::FromAgent { conn: 1, msg }, now);
        m.end_burst(now);
        m.flush_early();
        assert!(
            drain(&mut fw).is_empty(),
            "held behind the master's own answer"
        );
        m.take_writes();
        m.flush_outbox();
        assert_eq!(
            updates(&drain(&mut fw)),
            vec![
                ("ghost".to_string(), TaskState::Lost),
                ("t1".to_string(), TaskState::Running)
            ]
        );
    }

    #[test]
    fn a_kill_of_a_task_the_framework_does_not_have_answers_lost() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        drain(&mut fw);
        let kill = SchedulerCall::Kill {
            task_id: TaskId("nobody".into()),
        };
        call(&mut m, 2, kill, now);
        settle(&mut m, now);
        let lost = drain(&mut fw)
            .into_iter()
            .find_map(|e| match e {
                MasterEvent::Update(s) => Some(s),
                _ => None,
            })
            .expect("an answer");
        assert_eq!(lost.state, TaskState::Lost);
        assert_eq!(lost.reason, Some(TaskReason::Reconciliation));
    }
}
