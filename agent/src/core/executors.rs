//! Custom executors' connections over the agent's Unix socket: registration (by the one-time
//! token the agent gave the executor), the updates and messages they send, and their going
//! away. A connection is known to the core by its serial number only; the runtime holds the
//! socket.

use super::{Agent, ContainerKey, Effect, Kind, TaskRun};
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, ExecutorToAgent};
use bramble_proto::task::UpdateSource;
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskState};
use std::time::Instant;
use tracing::{debug, info, warn};

impl Agent {
    /// An executor says who it is: accepted (with its container) when it was launched here
    /// with this token and is not connected already. Its queued tasks go to it at once.
    pub(super) fn executor_connected(
        &mut self,
        serial: u64,
        fw: FrameworkId,
        executor_id: ExecutorId,
        token: String,
        now: Instant,
    ) -> Result<ContainerKey, String> {
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
        let run = self.runs.get_mut(&key).ok_or("executor run vanished")?;
        if run.token != token {
            return Err("wrong executor token".into());
        }
        if run.conn.is_some() {
            return Err("executor already registered".into());
        }
        let Kind::Custom { info } = &run.kind else {
            return Err("not a custom executor".into());
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
        for task in run.queued.drain(..) {
            run.tasks
                .insert(task.task_id.clone(), TaskRun::staging(task.clone()));
            let msg = AgentToExecutor::LaunchTask(task);
            self.effects.push(Effect::ToExecutor { serial, msg });
        }
        run.conn = Some(serial);
        let recovered = run.recovered;
        self.dirty.insert(key.clone());
        if recovered {
            info!(framework = %fw, executor = %executor_id, container = %key, "recovered executor reconnected");
        } else {
            info!(framework = %fw, executor = %executor_id, container = %key, "executor registered");
        }
        self.reconnected(&key, now);
        Ok(key)
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
            ExecutorToAgent::Register { .. } => {
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
    /// (its tasks then fail when its container ends).
    pub(super) fn executor_disconnected(&mut self, key: &ContainerKey, serial: u64) {
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
        } else {
            warn!(container = %key, executor = %run.executor_id, "executor closed its connection; killing it");
            run.shutting_down = true;
        }
        self.kill_container(key);
    }
}
