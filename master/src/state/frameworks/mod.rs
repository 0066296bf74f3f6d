//! Frameworks: subscription and failover under a known id, the scheduler calls that are not
//! about one offer or task, disconnection (tasks keep running for the failover timeout) and
//! removal (tasks killed, executors shut down).
//!
//! Ownership: a framework belongs to the principal that registered it (from its certificate,
//! or the Mesos API's HTTP Basic principal), recorded in its stored `FrameworkInfo` so a
//! restarted master keeps it. Every scheduler call acts on the framework its connection
//! subscribed as, so refusing a subscription from anyone but the owner or an operator is what
//! keeps a framework's tasks, updates and teardown its own.
//!
//! `subscribe.rs`: subscription, failover and disconnection; `removal.rs`: the failover
//! timeout and removal.

mod removal;
mod subscribe;
#[cfg(test)]
mod tests;

use super::feed::ClusterEvent;
use super::peers::Bound;
use super::tasks::TaskEntry;
use super::{ConnId, Master};
use bramble_proto::messages::{FrameworkInfo, MasterEvent, MasterToAgent, SchedulerCall};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId};
use std::collections::HashMap;
use std::time::Instant;
use tracing::info;

/// A framework the master knows, connected or within its failover timeout, and its tasks.
pub(super) struct FrameworkEntry {
    pub(super) info: FrameworkInfo,
    pub(super) conn: Option<ConnId>,
    pub(super) disconnected_at: Option<Instant>,
    pub(super) tasks: HashMap<TaskId, TaskEntry>,
    /// The fencing epoch (`election.rs`): raised each time an instance becomes the active
    /// scheduler; 0 until the first subscription under this master's store.
    pub(super) epoch: u64,
}

/// The longest web UI URL a framework may publish; a longer one is dropped.
const MAX_WEBUI_URL_BYTES: usize = 2048;

/// A framework's web UI URL as the master keeps it: empty means none (Mesos frameworks send
/// `""`), and one that is too long or holds control characters (which would rewrite an
/// operator's terminal in `bramble frameworks`) is dropped with a log line. Whether it is
/// safe to link to is the web UI's business (only `http(s)://` becomes a link).
fn checked_webui_url(fw: &FrameworkId, url: Option<String>) -> Option<String> {
    let url = url.filter(|u| !u.trim().is_empty())?;
    if url.len() > MAX_WEBUI_URL_BYTES || url.chars().any(char::is_control) {
        info!(framework = %fw, bytes = url.len(),
            "dropping the framework's web UI URL: longer than {MAX_WEBUI_URL_BYTES} bytes or holding control characters");
        return None;
    }
    Some(url)
}

impl Master {
    pub(super) fn scheduler_call(&mut self, conn: ConnId, call: SchedulerCall, now: Instant) {
        let bound = self.conns.get(&conn).and_then(|c| c.bound.clone());
        let fw = match (&call, bound) {
            (SchedulerCall::Subscribe(info), None) => {
                self.subscribe(conn, info.clone(), now);
                return;
            }
            (SchedulerCall::Campaign(info), None) => {
                self.campaign(conn, info.clone(), now);
                return;
            }
            (SchedulerCall::Subscribe(_) | SchedulerCall::Campaign(_), Some(_)) => {
                self.close_conn(conn, "subscribed twice on one connection");
                return;
            }
            (_, Some(Bound::Framework(fw))) => fw,
            (_, Some(Bound::Standby(_))) => {
                self.close_conn(conn, "scheduler call from a standby instance");
                return;
            }
            _ => {
                self.close_conn(conn, "scheduler call before subscribing");
                return;
            }
        };
        match call {
            SchedulerCall::Subscribe(_) | SchedulerCall::Campaign(_) => {}
            SchedulerCall::Accept {
                offer_ids,
                tasks,
                filters,
            } => self.accept(&fw, offer_ids, tasks, filters, now),
            SchedulerCall::Decline { offer_ids, filters } => {
                for id in offer_ids {
                    self.answer_offer(&fw, &id, filters, now);
                }
            }
            SchedulerCall::Revive => {
                self.allocator.revive(&fw);
                self.allocation_due = true;
            }
            SchedulerCall::Suppress => {
                self.allocator.suppress(&fw);
                self.rescind_framework_offers(&fw);
            }
            SchedulerCall::Kill { task_id } => self.kill(&fw, &task_id),
            SchedulerCall::ShutdownExecutor {
                agent_id,
                executor_id,
            } => self.shutdown_executor(&fw, &agent_id, executor_id),
            SchedulerCall::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => self.acknowledge(&fw, agent_id, task_id, uuid),
            SchedulerCall::Reconcile { task_ids } => self.reconcile(&fw, task_ids),
            SchedulerCall::Message {
                agent_id,
                executor_id,
                data,
            } => {
                if self.agents.get(&agent_id).and_then(|a| a.conn).is_some() {
                    self.send_agent(
                        &agent_id,
                        MasterToAgent::FrameworkMessage {
                            framework_id: fw,
                            executor_id,
                            data,
                        },
                    );
                } else {
                    self.send_framework(
                        &fw,
                        MasterEvent::Error {
                            message: format!(
                                "message not delivered: agent {agent_id} is not connected"
                            ),
                            fatal: false,
                        },
                    );
                }
            }
            SchedulerCall::Teardown => {
                info!(framework = %fw, "framework tore itself down");
                self.remove_framework(&fw, "framework teardown");
            }
            // Acknowledged at the connection (`server/connections.rs`); nothing to do here.
            SchedulerCall::Heartbeat => {}
            SchedulerCall::PublishProgress(progress) => {
                self.feed.emit(|| ClusterEvent::Progress {
                    framework_id: fw.clone(),
                    progress: progress.clone(),
                });
                self.progress.insert(fw, progress);
            }
            SchedulerCall::SetWebuiUrl(url) => {
                let url = checked_webui_url(&fw, url);
                if let Some(entry) = self.frameworks.get_mut(&fw) {
                    if entry.info.webui_url != url {
                        info!(framework = %fw, webui_url = ?url, "framework published its web UI");
                        entry.info.webui_url = url;
                        self.dirty_frameworks.insert(fw);
                    }
                }
            }
            SchedulerCall::WriteState(write) => self.scheduler_state_write(&fw, write, None),
            SchedulerCall::WriteStateFenced { write, fence } => {
                self.scheduler_state_write(&fw, write, Some(fence))
            }
        }
    }

    /// A state write from `fw`'s scheduler: a refusal is told to it, the connection stays.
    fn scheduler_state_write(
        &mut self,
        fw: &FrameworkId,
        write: bramble_proto::framework_state::StateWrite,
        fence: Option<u64>,
    ) {
        if let Err(why) = self.write_framework_state(fw, write, fence) {
            self.send_framework(
                fw,
                MasterEvent::Error {
                    message: format!("state write refused: {why}"),
                    fatal: false,
                },
            );
        }
    }

    /// Mesos's SHUTDOWN call: the agent tells the executor to stop and kills it after its
    /// grace period; its tasks end with their own updates and the agent's `ExecutorExited`
    /// frees its resources. Unknown executors are reported back, never guessed at.
    fn shutdown_executor(&mut self, fw: &FrameworkId, agent_id: &AgentId, executor_id: ExecutorId) {
        let known = self
            .agents
            .get(agent_id)
            .is_some_and(|a| a.executors.contains_key(&(fw.clone(), executor_id.clone())));
        let connected = self.agents.get(agent_id).and_then(|a| a.conn).is_some();
        if known && connected {
            info!(framework = %fw, agent = %agent_id, executor = %executor_id, "shutting an executor down at the framework's request");
            self.send_agent(
                agent_id,
                MasterToAgent::ShutdownExecutor {
                    framework_id: fw.clone(),
                    executor_id,
                },
            );
        } else {
            let why = if known {
                "is not connected"
            } else {
                "runs no such executor of this framework"
            };
            self.send_framework(
                fw,
                MasterEvent::Error {
                    message: format!(
                        "shutdown of executor {executor_id} not delivered: agent {agent_id} {why}"
                    ),
                    fatal: false,
                },
            );
        }
    }
}
