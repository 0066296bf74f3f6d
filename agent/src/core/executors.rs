//! Custom executors' connections, over the agent's Unix socket or as subscriptions to the
//! Mesos executor HTTP API (`agent/src/mesos/`): registration (by the one-time token the agent
//! gave a native executor; by the connecting process's session for a Mesos one), the updates
//! and messages they send, and their going away. A connection is known to the core by its
//! serial number only; the edges hold the sockets and translate for Mesos executors, so both
//! kinds share everything here: acknowledgements, timeouts, recovery.

use super::{Admission, Agent, ContainerKey, Effect, ExecutorAuth, Kind, TaskRun};
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, ExecutorToAgent};
use bramble_proto::task::UpdateSource;
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskReason, TaskState};
use std::time::Instant;
use tracing::{debug, info, warn};

impl Agent {
    /// An executor says who it is: accepted (with its container) when it was launched here
    /// and proves it (see [`ExecutorAuth`]). A native executor may connect once; a Mesos
    /// executor may subscribe again, the new subscription replacing the old (the edge closes
    /// the old stream). Its queued tasks go to it at once.
    pub(super) fn executor_connected(
        &mut self,
        serial: u64,
        fw: FrameworkId,
        executor_id: ExecutorId,
        auth: ExecutorAuth,
        now: Instant,
    ) -> Result<Admission, String> {
        let key = self
            .active
            .get(&(fw.clone(), executor_id.clone()))
            .cloned()
            .ok_or_else(|| {
                format!("no executor {executor_id} of framework {fw} was launched here")
            })?;
        let agent_id = self
            .agent_id
            .clone()
            .unwrap_or_else(|| AgentId(String::new()));
        let run = self.runs.get(&key).ok_or("executor run vanished")?;
        let Kind::Custom { mesos, .. } = &run.kind else {
            return Err("not a custom executor".into());
        };
        let mut unknown_to_executor = Vec::new();
        match (&auth, mesos) {
            (ExecutorAuth::Token { token, known_tasks }, None) => {
                if &run.token != token {
                    return Err("wrong executor token".into());
                }
                if run.conn.is_some() {
                    return Err("executor already registered".into());
                }
                // A recovered executor coming back: what it does not know of what this
                // agent handed it never got there (see `ExecutorToAgent::Reregister`).
                if let (Some(known), true) = (known_tasks, run.recovered) {
                    unknown_to_executor = self.never_delivered(run, known);
                }
            }
            (
                ExecutorAuth::Mesos {
                    session,
                    unacknowledged_tasks,
                },
                Some(_),
            ) => {
                let leader = run.container.as_ref().map(|c| c.pid);
                match (session, leader) {
                    (Some(sid), Some(pid)) if *sid == pid => {}
                    (Some(sid), Some(pid)) => {
                        return Err(format!(
                            "the subscribing process is in session {sid}, not in the executor's session {pid}"
                        ))
                    }
                    (None, _) => {
                        return Err("could not tell which process opened the connection".into())
                    }
                    (_, None) => return Err("the executor's process is not running".into()),
                }
                // On a re-subscription: a task this agent handed over that is still STAGING,
                // has no update recorded and that the executor does not know, never reached it
                // (its LAUNCH was on a stream that broke).
                unknown_to_executor = self.never_delivered(run, unacknowledged_tasks);
            }
            (ExecutorAuth::Token { .. }, Some(_)) => {
                return Err(
                    "this executor speaks the Mesos executor API; subscribe over HTTP".into(),
                )
            }
            (ExecutorAuth::Mesos { .. }, None) => {
                return Err("this executor was not launched for a Mesos task".into())
            }
        }
        let run = self.runs.get_mut(&key).ok_or("executor run vanished")?;
        let Kind::Custom { info, mesos } = &run.kind else {
            return Err("not a custom executor".into());
        };
        let admission = Admission {
            container: key.clone(),
            mesos: mesos.clone(),
        };
        let registered = AgentToExecutor::Registered {
            agent_id,
            framework_id: fw.clone(),
            executor: info.clone(),
        };
        self.effects.push(Effect::ToExecutor {
            serial,
            msg: registered,
        });
        let mut handed = Vec::with_capacity(run.queued.len());
        for task in run.queued.drain(..) {
            handed.push(task.task_id.clone());
            run.tasks
                .insert(task.task_id.clone(), TaskRun::staging(task.clone()));
            let msg = AgentToExecutor::LaunchTask(task);
            self.effects.push(Effect::ToExecutor { serial, msg });
        }
        let resubscribed = run.conn.replace(serial).is_some() || run.disconnected_at.is_some();
        run.disconnected_at = None;
        let recovered = run.recovered;
        for task_id in &handed {
            self.task_joined(&key, task_id);
        }
        if recovered {
            info!(framework = %fw, executor = %executor_id, container = %key, "recovered executor reconnected");
        } else if resubscribed {
            info!(framework = %fw, executor = %executor_id, container = %key, "executor subscribed again");
        } else {
            info!(framework = %fw, executor = %executor_id, container = %key, "executor registered");
        }
        for task_id in unknown_to_executor {
            warn!(framework = %fw, executor = %executor_id, task = %task_id, "task never reached its executor (unknown to it on re-subscription); reporting it LOST");
            self.set_task_state(&key, &task_id, TaskState::Lost);
            let status = self
                .agent_status(&fw, Some(&executor_id), &task_id, TaskState::Lost)
                .with_reason(
                    TaskReason::AgentRestarted,
                    "task launched while the executor's connection broke; unknown to the executor",
                );
            self.report(status);
        }
        self.reconnected(&key, now);
        Ok(admission)
    }

    /// The tasks this agent handed to `run`'s executor that never reached it: still STAGING
    /// here, no update recorded, and not among those the executor says it `knows`.
    fn never_delivered(
        &self,
        run: &super::Run,
        knows: &[bramble_proto::TaskId],
    ) -> Vec<bramble_proto::TaskId> {
        run.tasks
            .values()
            .filter(|t| t.state == TaskState::Staging)
            .map(|t| t.info.task_id.clone())
            .filter(|id| !knows.contains(id))
            .filter(|id| !self.awaiting_ack(&run.framework_id, id))
            .collect()
    }

    /// A re-adopted executor reconnected (or ended): recovery is over once none is awaited.
    pub(super) fn reconnected(&mut self, key: &ContainerKey, now: Instant) {
        if !self.awaiting_reconnect.remove(key) || !self.awaiting_reconnect.is_empty() {
            return;
        }
        if let Some(began) = self.recovery_began.take() {
            info!(
                took_ms = now.saturating_duration_since(began).as_millis() as u64,
                "recovery complete: every re-adopted executor has reconnected or ended"
            );
        }
    }

    pub(super) fn executor_message(&mut self, key: &ContainerKey, msg: ExecutorToAgent) {
        let Some(run) = self.runs.get(key) else {
            return;
        };
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        match msg {
            ExecutorToAgent::Register { .. } | ExecutorToAgent::Reregister { .. } => {
                warn!(container = %key, "executor registered twice; ignoring");
            }
            ExecutorToAgent::Message(data) => {
                self.send_master(AgentToMaster::ExecutorMessage {
                    framework_id: fw,
                    executor_id,
                    data,
                });
            }
            ExecutorToAgent::Update(mut status) => {
                let conn = run.conn;
                let Some(task) = run.tasks.get(&status.task_id) else {
                    warn!(container = %key, task = %status.task_id, "executor reported a task it does not run; ignoring");
                    return;
                };
                let Some(uuid) = status.uuid else {
                    warn!(container = %key, task = %status.task_id, "executor update without uuid; ignoring");
                    return;
                };
                // The agent, not the executor, vouches for whose task this is.
                status.framework_id = fw;
                status.executor_id = Some(executor_id);
                status.source = UpdateSource::Executor;
                let task_id = status.task_id.clone();
                let state = status.state;
                if task.state.can_move_to(state) {
                    if task.kill_requested && state.is_terminal() && state != TaskState::Killed {
                        debug!(task = %task_id, "killed task ended as {state}");
                    }
                    // Acknowledged to the executor by `committed`, once durable.
                    self.report_for_executor(status, key, uuid);
                    self.set_task_state(key, &task_id, state);
                } else {
                    debug!(task = %task_id, from = %task.state, to = %state, "executor sent an illegal transition; acknowledged and dropped");
                    if let Some(serial) = conn {
                        let msg = AgentToExecutor::UpdateAck(uuid);
                        self.effects.push(Effect::ToExecutor { serial, msg });
                    }
                }
            }
        }
    }

    /// An executor's connection closed: unless it is already ending, the executor is killed
    /// (its tasks then fail when its container ends). A checkpointing Mesos executor is given
    /// the recovery timeout to subscribe again instead (see `tick`), as Mesos's
    /// `MESOS_CHECKPOINT` executors reconnect.
    pub(super) fn executor_disconnected(&mut self, key: &ContainerKey, serial: u64, now: Instant) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        if run.conn != Some(serial) {
            return;
        }
        run.conn = None;
        if run.exited {
            return;
        }
        if run.shutting_down {
            debug!(container = %key, executor = %run.executor_id, "executor disconnected while shutting down");
        } else if run.kind.mesos().is_some_and(|m| m.checkpoint) {
            info!(container = %key, executor = %run.executor_id, "Mesos executor's subscription closed; waiting for it to subscribe again");
            run.disconnected_at = Some(now);
            return;
        } else {
            warn!(container = %key, executor = %run.executor_id, "executor closed its connection; killing it");
            run.shutting_down = true;
        }
        self.kill_container(key);
    }
}
