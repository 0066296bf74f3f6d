//! Operator calls: the state, kills, tearing a framework down, frameworks' key/value state, and sandbox reads and listings, which are relayed to the
//! agent the task ran on and answered when it replies (or fails after a timeout). The front
//! panel's picture is not here: the edge that holds it answers `GetPanel` itself.

use super::Master;
use bramble_proto::messages::{MasterToAgent, OperatorCall, OperatorReply};
use bramble_proto::{AgentId, FrameworkId, TaskId};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::info;

/// How long an agent has to answer a sandbox read.
const SANDBOX_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Master {
    pub(super) fn operator_call(
        &mut self,
        call: OperatorCall,
        reply: oneshot::Sender<OperatorReply>,
        now: Instant,
    ) {
        let answer = match call {
            OperatorCall::GetState => OperatorReply::State(self.snapshot()),
            OperatorCall::KillTask {
                framework_id,
                task_id,
            } => {
                let known = self
                    .frameworks
                    .get(&framework_id)
                    .is_some_and(|f| f.tasks.contains_key(&task_id));
                if known {
                    self.kill(&framework_id, &task_id);
                    OperatorReply::Done
                } else {
                    OperatorReply::Error {
                        message: format!("no task {task_id} in framework {framework_id}"),
                    }
                }
            }
            // The panel's picture lives at the edge, which answers this call itself.
            OperatorCall::GetPanel => OperatorReply::Error {
                message: "the front panel is not served by the master's state".into(),
            },
            // Uploads are kept at the operator connection's edge (`crate::images`).
            OperatorCall::ImageUpload(_) => OperatorReply::Error {
                message: "image uploads are taken over an operator connection only".into(),
            },
            OperatorCall::ReadSandbox(read) => {
                let (fw, task) = (read.framework_id.clone(), read.task_id.clone());
                let ask = move |request| MasterToAgent::ReadSandbox { request, read };
                return self.ask_task_agent(&fw, &task, reply, now, ask);
            }
            OperatorCall::ListSandbox(list) => {
                let (fw, task) = (list.framework_id.clone(), list.task_id.clone());
                let ask = move |request| MasterToAgent::ListSandbox { request, list };
                return self.ask_task_agent(&fw, &task, reply, now, ask);
            }
            OperatorCall::ReadFrameworkState {
                framework_id,
                prefix,
            } => match self.read_framework_state(&framework_id, &prefix) {
                Ok(entries) => OperatorReply::FrameworkState(entries),
                Err(message) => OperatorReply::Error { message },
            },
            OperatorCall::WriteFrameworkState {
                framework_id,
                write,
            } => match self.write_framework_state(&framework_id, write, None) {
                Ok(entry) => OperatorReply::StateWritten(entry),
                Err(message) => OperatorReply::Error { message },
            },
            OperatorCall::TeardownFramework { framework_id } => {
                if self.frameworks.contains_key(&framework_id) {
                    info!(framework = %framework_id, "an operator tore the framework down");
                    self.remove_framework(&framework_id, "torn down by an operator");
                    OperatorReply::Done
                } else {
                    OperatorReply::Error {
                        message: format!(
                            "no framework {framework_id} is registered with this master"
                        ),
                    }
                }
            }
            OperatorCall::DrainAgent { agent_id, drain } => match self.drain(&agent_id, drain) {
                Ok(()) => OperatorReply::Done,
                Err(message) => OperatorReply::Error { message },
            },
            OperatorCall::GetStatePage { after, limit } => {
                OperatorReply::StatePage(Box::new(self.state_page(after, limit)))
            }
            OperatorCall::GetTasks(query) => OperatorReply::Tasks(Box::new(self.task_list(&query))),
            // Membership is answered at the operator connection's edge, with the replica
            // (`crate::ha::membership`).
            OperatorCall::GetMasters
            | OperatorCall::AddMaster { .. }
            | OperatorCall::RemoveMaster { .. } => OperatorReply::Error {
                message: "the group's masters are answered by the leader's operator connection"
                    .into(),
            },
        };
        self.reply(reply, answer);
    }

    /// Sends a sandbox request to the agent a task ran on; its answer goes to `reply` (see
    /// `sandbox_answer`), as does an error when that agent cannot be asked.
    fn ask_task_agent(
        &mut self,
        fw: &FrameworkId,
        task: &TaskId,
        reply: oneshot::Sender<OperatorReply>,
        now: Instant,
        ask: impl FnOnce(u64) -> MasterToAgent,
    ) {
        let message = match self.task_agent(fw, task) {
            Some(agent) if self.agents.get(&agent).is_some_and(|a| a.conn.is_some()) => {
                self.next_request += 1;
                let request = self.next_request;
                self.sandbox_reads.insert(
                    request,
                    agent.clone(),
                    reply,
                    now + SANDBOX_READ_TIMEOUT,
                );
                self.send_agent(&agent, ask(request));
                return;
            }
            Some(agent) => format!("task {task} ran on agent {agent}, which is not connected"),
            None => format!("no task {task} of framework {fw} is known to this master"),
        };
        self.reply(reply, OperatorReply::Error { message });
    }

    pub(super) fn sandbox_answer(
        &mut self,
        agent: &AgentId,
        request: u64,
        result: Result<OperatorReply, String>,
    ) {
        if let Some(reply) = self.sandbox_reads.answer(agent, request) {
            let answer = match result {
                Ok(answer) => answer,
                Err(message) => OperatorReply::Error { message },
            };
            self.reply(reply, answer);
        }
    }

    pub(super) fn expire_sandbox_reads(&mut self, now: Instant) {
        let agents = &self.agents;
        let connected = |id: &AgentId| agents.get(id).is_some_and(|a| a.conn.is_some());
        for ended in self.sandbox_reads.take_unanswered(now, connected) {
            let message = format!("agent {} did not answer the sandbox read", ended.agent);
            self.reply(ended.reply, OperatorReply::Error { message });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::{Input, Master};
    use bramble_proto::messages::{
        MasterToAgent, OperatorCall, OperatorReply, SandboxRead, SchedulerCall,
    };
    use bramble_proto::{FrameworkId, TaskId};
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    /// Asks `call` as an operator and settles; the answer, if there is one yet.
    fn ask(m: &mut Master, call: OperatorCall, now: Instant) -> oneshot::Receiver<OperatorReply> {
        let (reply, rx) = oneshot::channel();
        m.handle(Input::Operator { call, reply }, now);
        settle(m, now);
        rx
    }

    fn read(task: &str) -> OperatorCall {
        OperatorCall::ReadSandbox(SandboxRead {
            framework_id: FrameworkId("fw1".into()),
            task_id: TaskId(task.into()),
            path: "stdout".into(),
            offset: 0,
            max_bytes: 100,
        })
    }

    #[test]
    fn operators_get_an_error_for_a_task_the_master_does_not_know() {
        let now = Instant::now();
        let mut m = master(now);
        let kill = OperatorCall::KillTask {
            framework_id: FrameworkId("fw1".into()),
            task_id: TaskId("nobody".into()),
        };
        let answer = ask(&mut m, kill, now).try_recv();
        assert!(
            matches!(answer, Ok(OperatorReply::Error { .. })),
            "{answer:?}"
        );
        let answer = ask(&mut m, read("nobody"), now).try_recv();
        assert!(
            matches!(&answer, Ok(OperatorReply::Error { message }) if message.contains("is known to this master")),
            "{answer:?}"
        );
    }

    #[test]
    fn a_sandbox_read_goes_to_the_tasks_agent_and_fails_if_it_never_answers() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, _fw) = launched(&mut m, vec![task_info("t1")], now);
        let mut answer = ask(&mut m, read("t1"), now);
        assert!(
            drain(&mut agent)
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::ReadSandbox { .. })),
            "relayed to the agent"
        );
        assert!(answer.try_recv().is_err(), "no answer before the agent's");
        m.tick(now + Duration::from_secs(11));
        m.flush_outbox();
        let answer = answer.try_recv();
        assert!(
            matches!(&answer, Ok(OperatorReply::Error { message }) if message.contains("did not answer")),
            "{answer:?}"
        );
    }

    #[test]
    fn a_removed_frameworks_task_is_listed_killed_and_its_sandbox_stays_readable() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, _fw) = launched(&mut m, vec![task_info("t1")], now);
        call(&mut m, 2, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        drain(&mut agent);
        let s = m.snapshot();
        assert!(s.tasks.is_empty());
        assert_eq!(s.completed_tasks.len(), 1);
        assert_eq!(s.completed_tasks[0].state, bramble_proto::TaskState::Killed);
        let _answer = ask(&mut m, read("t1"), now);
        assert!(
            drain(&mut agent)
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::ReadSandbox { .. })),
            "relayed to the agent the task ran on"
        );
    }

    #[test]
    fn an_operator_tears_a_framework_down_killing_its_tasks_for_good() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, _fw) = launched(&mut m, vec![task_info("t1")], now);
        let teardown = OperatorCall::TeardownFramework {
            framework_id: FrameworkId("fw1".into()),
        };
        let (reply, mut answer) = oneshot::channel();
        m.handle(
            Input::Operator {
                call: teardown.clone(),
                reply,
            },
            now,
        );
        m.end_burst(now);
        // Durably: the store batch records the removal.
        let batch = m.take_writes();
        m.flush_outbox();
        let answer = answer.try_recv();
        assert!(matches!(answer, Ok(OperatorReply::Done)), "{answer:?}");
        assert!(
            drain(&mut agent).iter().any(|msg| matches!(
                msg,
                MasterToAgent::ShutdownFramework { framework_id } if framework_id.0 == "fw1"
            )),
            "the agent is told to end its tasks"
        );
        let s = m.snapshot();
        assert!(s.frameworks.is_empty(), "{:?}", s.frameworks);
        assert_eq!(s.completed_tasks.len(), 1);
        assert_eq!(s.completed_tasks[0].state, bramble_proto::TaskState::Killed);
        assert!(
            batch
                .frameworks
                .iter()
                .any(|(id, record)| id.0 == "fw1" && record.is_none()),
            "{:?}",
            batch.frameworks
        );
        // A second teardown finds nothing.
        let again = ask(&mut m, teardown, now).try_recv();
        assert!(
            matches!(&again, Ok(OperatorReply::Error { message }) if message.contains("no framework fw1")),
            "{again:?}"
        );
    }

    #[test]
    fn the_panel_is_not_the_states_to_answer() {
        let now = Instant::now();
        let mut m = master(now);
        let answer = ask(&mut m, OperatorCall::GetPanel, now).try_recv();
        assert!(
            matches!(answer, Ok(OperatorReply::Error { .. })),
            "{answer:?}"
        );
    }
}
