//! Frameworks: subscription and failover under a known id, the scheduler calls that are not
//! about one offer or task, disconnection (tasks keep running for the failover timeout) and
//! removal (tasks killed, executors shut down).
//!
//! Ownership: a framework belongs to the principal that registered it (from its certificate,
//! or the Mesos API's HTTP Basic principal), recorded in its stored `FrameworkInfo` so a
//! restarted master keeps it. Every scheduler call acts on the framework its connection
//! subscribed as, so refusing a subscription from anyone but the owner or an operator is what
//! keeps a framework's tasks, updates and teardown its own.

use super::counters::FrameworkEvent;
use super::feed::ClusterEvent;
use super::peers::Bound;
use super::tasks::TaskEntry;
use super::{ConnId, Master};
use bramble_proto::identity::Role;
use bramble_proto::messages::{
    FrameworkApi, FrameworkInfo, MasterEvent, MasterToAgent, SchedulerCall,
};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId, TaskState, TaskStatus};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tracing::info;

/// What the old connection of a framework that failed over is told (Mesos's words).
pub const FAILED_OVER: &str = "Framework failed over";
/// What a Mesos framework re-subscribing under a removed id is told (Mesos's words).
pub const FRAMEWORK_REMOVED: &str = "Framework has been removed";

/// Who is subscribing, as its connection proved it.
pub(super) struct Caller {
    principal: Option<String>,
    /// Operators may fail over (and so kill and tear down) any framework.
    operator: bool,
}

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
            SchedulerCall::Heartbeat => self.send_conn_scheduler(conn, MasterEvent::HeartbeatAck),
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

    pub(super) fn subscribe(&mut self, conn: ConnId, info: FrameworkInfo, now: Instant) {
        let id = info
            .framework_id
            .clone()
            .unwrap_or_else(|| FrameworkId(bramble_proto::ids::fresh("fw")));
        // A named id becomes a key here and a directory on every agent it runs tasks on.
        if let Err(e) = id.check() {
            info!("refusing a subscription: {e}");
            let message = e.to_string();
            let event = MasterEvent::Error {
                message,
                fatal: true,
            };
            return self.send_conn_scheduler(conn, event);
        }
        let caller = self.caller_of(conn);
        if let Some(refusal) = self.subscription_refusal(&id, &caller, &info) {
            info!(framework = %id, principal = ?caller.principal, "refusing a subscription: {refusal}");
            self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: refusal,
                    fatal: true,
                },
            );
            return;
        }
        let failover = self.frameworks.contains_key(&id);
        if let Some(old) = self.frameworks.get(&id).and_then(|f| f.conn) {
            if old != conn {
                self.send_conn_scheduler(
                    old,
                    MasterEvent::Error {
                        message: FAILED_OVER.into(),
                        fatal: true,
                    },
                );
                if let Some(c) = self.conns.get_mut(&old) {
                    c.bound = None;
                }
            }
        }
        if failover {
            // Offers made to the previous connection are unknown to the new scheduler: take
            // them back now instead of leaving the resources out until the offer timeout.
            self.rescind_framework_offers(&id);
        }
        let mut info = info;
        info.framework_id = Some(id.clone());
        info.webui_url = checked_webui_url(&id, info.webui_url.take());
        // A framework belongs to the principal that registered it, and stays theirs when an
        // operator fails it over; one registered before principals existed (none recorded)
        // becomes its next subscriber's.
        info.principal = self
            .frameworks
            .get(&id)
            .and_then(|f| f.info.principal.clone())
            .or(caller.principal);
        let entry = self
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| FrameworkEntry {
                info: info.clone(),
                conn: None,
                disconnected_at: None,
                tasks: HashMap::new(),
                epoch: 0,
            });
        entry.info = info.clone();
        entry.conn = Some(conn);
        entry.disconnected_at = None;
        // A new active scheduler: a new fencing epoch, above any this master ever gave, so
        // whatever the previous instance still sends with its token is refused.
        self.fence_high += 1;
        entry.epoch = self.fence_high;
        let epoch = entry.epoch;
        self.fence_high_dirty = true;
        self.dirty_frameworks.insert(id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Framework(id.clone()));
        }
        if !failover {
            self.allocator.add_framework(id.clone(), 1.0);
        }
        self.allocator.activate_framework(&id);
        info!(framework = %id, name = %info.name, role = %info.role, fencing_token = epoch,
            "framework {}", if failover { "re-subscribed (failover)" } else { "subscribed" });
        self.feed.counters().framework(
            &id,
            if failover {
                FrameworkEvent::Resubscribed
            } else {
                FrameworkEvent::Subscribed
            },
        );
        self.feed.emit(|| ClusterEvent::FrameworkSubscribed {
            framework_id: id.clone(),
            name: info.name.clone(),
        });
        self.send_conn_scheduler(
            conn,
            MasterEvent::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_ms: self.timeouts.heartbeat_interval.as_millis() as u64,
                fencing_token: epoch,
            },
        );
        let state = self.framework_state_event(&id);
        self.send_conn_scheduler(conn, state);
        self.tell_draining(conn);
        self.resend_master_updates(&id);
        let _ = now;
        self.allocation_due = true;
    }

    /// Who subscribes on `conn`: what the connection proved (certificate, or HTTP Basic at
    /// the Mesos edge), never what the scheduler's info claims.
    pub(super) fn caller_of(&self, conn: ConnId) -> Caller {
        let caller = self.conns.get(&conn).map(|c| Caller {
            principal: c.identity.principal.clone(),
            operator: c.identity.role == Role::Operator,
        });
        caller.unwrap_or(Caller {
            principal: None,
            operator: false,
        })
    }

    /// Why a subscription under `id` must be refused, if it must: a framework bound to a
    /// principal is failed over only by that principal or an operator (which is what makes
    /// its tasks, its updates and its teardown its own: every scheduler call acts on the
    /// framework its connection subscribed as), and (as in Mesos) a Mesos framework that was
    /// removed stays removed. Native frameworks keep re-subscribing under a removed id as a new
    /// framework, as they always have.
    pub(super) fn subscription_refusal(
        &self,
        id: &FrameworkId,
        caller: &Caller,
        info: &FrameworkInfo,
    ) -> Option<String> {
        if let Some(bound) = self
            .frameworks
            .get(id)
            .and_then(|f| f.info.principal.as_ref())
        {
            if caller.principal.as_ref() != Some(bound) && !caller.operator {
                return Some(format!(
                    "Framework {id} is bound to principal '{bound}'; {} may not fail it over (only '{bound}' or an operator may)",
                    match &caller.principal {
                        Some(p) => format!("principal '{p}'"),
                        None => "an unauthenticated scheduler".to_string(),
                    }
                ));
            }
        }
        let removed =
            !self.frameworks.contains_key(id) && self.removed_frameworks.get(id).is_some();
        (removed && info.api == FrameworkApi::MesosV1).then(|| FRAMEWORK_REMOVED.to_string())
    }

    /// Sends the framework the terminal updates only the master resends (until acknowledged).
    pub(super) fn resend_master_updates(&mut self, fw: &FrameworkId) {
        let pending: Vec<TaskStatus> = self
            .frameworks
            .get(fw)
            .map(|f| {
                f.tasks
                    .values()
                    .filter(|t| t.resend_by_master)
                    .filter_map(|t| t.terminal.clone())
                    .collect()
            })
            .unwrap_or_default();
        for status in pending {
            self.send_framework(fw, MasterEvent::Update(status));
        }
    }

    pub(super) fn expire_frameworks(&mut self, now: Instant) {
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.disconnected_at.is_some_and(|t| {
                    now.duration_since(t).as_secs_f64() > f.info.failover_timeout_secs.max(0.0)
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "failover timeout passed without re-subscription");
        }
    }

    pub(super) fn remove_framework(&mut self, id: &FrameworkId, why: &str) {
        self.rescind_framework_offers(id);
        let Some(fw) = self.frameworks.remove(id) else {
            return;
        };
        self.removed_frameworks.insert(id.clone(), ());
        self.feed.counters().framework(id, FrameworkEvent::Removed);
        self.dirty_frameworks.insert(id.clone());
        for (task, entry) in &fw.tasks {
            self.dirty_tasks.insert((id.clone(), task.clone()));
            // Its sandboxes stay readable (`bramble logs`) like any completed task's; a task
            // still live is being killed with its framework, and is listed so (as Mesos lists
            // a removed framework's tasks).
            let mut summary = super::tasks::task_summary(id, task, entry);
            if !summary.state.is_terminal() {
                summary.state = TaskState::Killed;
                summary.message = format!("framework removed: {why}");
            }
            self.remember_completed(summary);
        }
        info!(framework = %id, name = %fw.info.name, live_tasks = fw.tasks.values().filter(|t| !t.state.is_terminal()).count(),
            "removing framework: {why}; killing its tasks");
        self.feed.emit(|| ClusterEvent::FrameworkRemoved {
            framework_id: id.clone(),
            reason: why.to_string(),
        });
        let agents: HashSet<AgentId> = fw.tasks.values().map(|t| t.info.agent_id.clone()).collect();
        let agents: HashSet<AgentId> = agents
            .into_iter()
            .chain(
                self.agents
                    .iter()
                    .filter(|(_, a)| a.executors.keys().any(|(f, _)| f == id))
                    .map(|(aid, _)| aid.clone()),
            )
            .collect();
        for agent in agents {
            if let Some(a) = self.agents.get_mut(&agent) {
                let before = a.executors.len();
                a.executors.retain(|(f, _), _| f != id);
                if a.executors.len() != before {
                    self.dirty_agents.insert(agent.clone());
                }
            }
            self.send_agent(
                &agent,
                MasterToAgent::ShutdownFramework {
                    framework_id: id.clone(),
                },
            );
        }
        self.allocator.remove_framework(id);
        self.progress.remove(id);
        self.forget_framework_state(id);
        self.dismiss_standbys(id, why);
        if let Some(conn) = fw.conn {
            self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: format!("framework removed: {why}"),
                    fatal: true,
                },
            );
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
        }
        self.allocation_due = true;
    }

    /// The framework's connection `conn` ended: no offers, and its failover timeout starts.
    pub(super) fn framework_disconnected(
        &mut self,
        id: &FrameworkId,
        conn: ConnId,
        reason: &str,
        now: Instant,
    ) {
        let Some(f) = self.frameworks.get_mut(id).filter(|f| f.conn == Some(conn)) else {
            return; // a connection the framework has already replaced
        };
        f.conn = None;
        f.disconnected_at = Some(now);
        info!(framework = %id, failover_timeout_secs = f.info.failover_timeout_secs,
            "framework disconnected: {reason}; its tasks keep running until the failover timeout");
        self.feed.emit(|| ClusterEvent::FrameworkDisconnected {
            framework_id: id.clone(),
        });
        self.allocator.deactivate_framework(id);
        self.rescind_framework_offers(id);
        self.promote_standby(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::{FAILED_OVER, FRAMEWORK_REMOVED};
    use crate::state::testing::*;
    use bramble_proto::identity::Role;
    use bramble_proto::messages::{
        FrameworkApi, FrameworkInfo, MasterEvent, MasterToAgent, SchedulerCall,
    };
    use bramble_proto::{TaskId, TaskState};
    use std::time::{Duration, Instant};

    #[test]
    fn a_framework_web_ui_is_kept_durably_replaced_when_published_and_dropped_when_hostile() {
        let now = Instant::now();
        let mut m = master(now);
        let info = FrameworkInfo {
            webui_url: Some("http://pi-a:31000/".into()),
            ..framework_info(Some("fw1"))
        };
        let _fw = connect_framework_as(&mut m, 2, info, now);
        let writes = m.take_writes();
        let stored = |w: &crate::store::Batch| {
            w.frameworks
                .iter()
                .find_map(|(_, r)| r.as_ref().map(|r| r.info.webui_url.clone()))
        };
        assert_eq!(stored(&writes), Some(Some("http://pi-a:31000/".into())));
        settle(&mut m, now);
        let shown = |m: &crate::state::Master| m.snapshot().frameworks[0].webui_url.clone();
        assert_eq!(shown(&m).as_deref(), Some("http://pi-a:31000/"));

        // Published later (a service learning its port): replaces it, durably.
        call(
            &mut m,
            2,
            SchedulerCall::SetWebuiUrl(Some("https://pi-b/ui".into())),
            now,
        );
        let writes = m.take_writes();
        assert_eq!(stored(&writes), Some(Some("https://pi-b/ui".into())));
        assert_eq!(shown(&m).as_deref(), Some("https://pi-b/ui"));
        // A master restarted from its store shows it again.
        let mut restarted = master(now);
        restarted.recover(
            crate::store::Recovered {
                frameworks: writes
                    .frameworks
                    .iter()
                    .filter_map(|(_, r)| r.clone())
                    .collect(),
                agents: Vec::new(),
                tasks: Vec::new(),
                framework_state: Vec::new(),
                draining: Vec::new(),
                fences: Vec::new(),
                fence_high: 0,
            },
            now,
        );
        assert_eq!(shown(&restarted).as_deref(), Some("https://pi-b/ui"));

        // Terminal escapes, absurd lengths and Mesos's "" for none are not kept.
        let long = format!("http://x/{}", "a".repeat(4096));
        for hostile in ["http://x/\u{1b}[2J\u{1b}]0;owned\u{7}", &long, "", "  "] {
            call(
                &mut m,
                2,
                SchedulerCall::SetWebuiUrl(Some("http://ok/".into())),
                now,
            );
            call(
                &mut m,
                2,
                SchedulerCall::SetWebuiUrl(Some(hostile.to_string())),
                now,
            );
            assert_eq!(shown(&m), None, "{hostile:?}");
        }
        let escaping = FrameworkInfo {
            webui_url: Some("http://x/\n".into()),
            ..framework_info(Some("fw2"))
        };
        let _fw2 = connect_framework_as(&mut m, 3, escaping, now);
        settle(&mut m, now);
        let fw2 = m
            .snapshot()
            .frameworks
            .into_iter()
            .find(|f| f.id.as_str() == "fw2");
        assert_eq!(fw2.map(|f| f.webui_url), Some(None));
    }

    #[test]
    fn a_framework_failing_over_keeps_its_id_and_its_old_connection_is_told_fatally() {
        let now = Instant::now();
        let mut m = master(now);
        let mut old = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        drain(&mut old);
        let mut new = connect_framework(&mut m, 3, Some("fw1"), now);
        settle(&mut m, now);
        let told = drain(&mut old);
        assert!(
            told.iter()
                .any(|e| matches!(e, MasterEvent::Error { fatal: true, .. })),
            "{told:?}"
        );
        let events = drain(&mut new);
        assert!(
            matches!(events.first(), Some(MasterEvent::Subscribed { framework_id, .. }) if framework_id.as_str() == "fw1"),
            "{events:?}"
        );
        assert_eq!(m.snapshot().frameworks.len(), 1);
    }

    #[test]
    fn a_framework_not_back_within_its_failover_timeout_is_removed() {
        let now = Instant::now();
        let mut m = master(now);
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        disconnect(&mut m, 2, now);
        // The test frameworks' failover timeout is 60 s.
        m.tick(now + Duration::from_secs(59));
        assert_eq!(m.snapshot().frameworks.len(), 1);
        m.tick(now + Duration::from_secs(61));
        assert!(m.snapshot().frameworks.is_empty());
        let batch = m.take_writes();
        assert!(
            batch
                .frameworks
                .iter()
                .any(|(id, r)| id.as_str() == "fw1" && r.is_none()),
            "{batch:?}"
        );
    }

    fn mesos_info(id: Option<&str>, principal: Option<&str>) -> FrameworkInfo {
        FrameworkInfo {
            principal: principal.map(str::to_string),
            api: FrameworkApi::MesosV1,
            ..framework_info(id)
        }
    }

    fn fatal_errors(events: &[MasterEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                MasterEvent::Error {
                    message,
                    fatal: true,
                } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Issue 16: a framework id a scheduler names becomes a directory on agents.
    #[test]
    fn a_subscription_naming_an_id_that_cannot_be_a_directory_is_refused() {
        let now = Instant::now();
        let mut m = master(now);
        let long = "f".repeat(10 * 1024);
        for (conn, bad) in [
            (2, "../../etc"),
            (3, "a/b"),
            (4, ".."),
            (5, "nul\0"),
            (6, &long),
        ] {
            let mut fw = connect_framework(&mut m, conn, Some(bad), now);
            settle(&mut m, now);
            let errors = fatal_errors(&drain(&mut fw));
            assert!(
                errors.len() == 1 && errors[0].contains("framework id"),
                "{bad:?}: {errors:?}"
            );
        }
        assert!(m.snapshot().frameworks.is_empty());
    }

    #[test]
    fn a_framework_bound_to_a_principal_is_not_failed_over_by_another() {
        let now = Instant::now();
        let mut m = master(now);
        let mut owner =
            connect_framework_as(&mut m, 2, mesos_info(Some("fw1"), Some("alice")), now);
        settle(&mut m, now);
        drain(&mut owner);
        for (conn, intruder) in [(3, Some("mallory")), (4, None)] {
            let mut other =
                connect_framework_as(&mut m, conn, mesos_info(Some("fw1"), intruder), now);
            settle(&mut m, now);
            let told = drain(&mut other);
            assert_eq!(fatal_errors(&told).len(), 1, "{told:?}");
            assert!(
                fatal_errors(&told)[0].contains("bound to principal 'alice'"),
                "{told:?}"
            );
            assert!(
                !told
                    .iter()
                    .any(|e| matches!(e, MasterEvent::Subscribed { .. })),
                "{told:?}"
            );
            assert!(drain(&mut owner).is_empty(), "the owner keeps its stream");
        }
        // The owner itself may fail over.
        let mut again =
            connect_framework_as(&mut m, 5, mesos_info(Some("fw1"), Some("alice")), now);
        settle(&mut m, now);
        assert!(matches!(
            drain(&mut again).first(),
            Some(MasterEvent::Subscribed { .. })
        ));
        assert_eq!(
            fatal_errors(&drain(&mut owner)),
            vec![FAILED_OVER.to_string()]
        );
    }

    /// Finding 1 of issue 16: every framework used to share one certificate, and `subscribe`
    /// handed a framework to whoever named its id.
    #[test]
    fn another_principal_can_neither_take_over_nor_kill_nor_tear_down_a_framework() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        let alice = identity_of(Role::Framework, Some("alice"));
        let mut owner = connect_scheduler(&mut m, 2, alice, framework_info(Some("fw1")), now);
        settle(&mut m, now);
        let offer = offers(&drain(&mut owner)).remove(0);
        accept(&mut m, &offer, vec![task_info("t1")], now);
        drain(&mut agent);
        drain(&mut owner);
        // What reaches the agent against alice's task or framework.
        let kills = |msgs: &[MasterToAgent]| {
            msgs.iter()
                .filter(|msg| match msg {
                    MasterToAgent::KillTask { task_id, .. } => task_id.as_str() == "t1",
                    MasterToAgent::ShutdownFramework { framework_id } => {
                        framework_id.as_str() == "fw1"
                    }
                    _ => false,
                })
                .count()
        };

        // Bob names alice's framework, and even claims her principal in his info.
        let bob = identity_of(Role::Framework, Some("bob"));
        let claim = FrameworkInfo {
            principal: Some("alice".into()),
            ..framework_info(Some("fw1"))
        };
        let mut intruder = connect_scheduler(&mut m, 3, bob.clone(), claim, now);
        settle(&mut m, now);
        let told = drain(&mut intruder);
        let refusal = fatal_errors(&told);
        assert_eq!(refusal.len(), 1, "{told:?}");
        assert!(
            refusal[0].contains("bound to principal 'alice'")
                && refusal[0].contains("principal 'bob' may not"),
            "{refusal:?}"
        );
        assert!(
            !told
                .iter()
                .any(|e| matches!(e, MasterEvent::Subscribed { .. })),
            "{told:?}"
        );
        call(
            &mut m,
            3,
            SchedulerCall::Kill {
                task_id: TaskId("t1".into()),
            },
            now,
        );
        call(&mut m, 3, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        assert!(drain(&mut owner).is_empty(), "the owner keeps its stream");

        // As a framework of his own, bob still cannot reach alice's task or framework.
        let mut own = connect_scheduler(&mut m, 4, bob, framework_info(Some("fw2")), now);
        call(
            &mut m,
            4,
            SchedulerCall::Kill {
                task_id: TaskId("t1".into()),
            },
            now,
        );
        call(&mut m, 4, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        assert_eq!(
            updates(&drain(&mut own)),
            vec![("t1".to_string(), TaskState::Lost)],
            "a kill of another framework's task is answered as unknown"
        );
        assert_eq!(kills(&drain(&mut agent)), 0, "nothing reaches alice's task");
        let state = m.snapshot();
        assert_eq!(state.frameworks.len(), 1);
        assert_eq!(state.frameworks[0].principal.as_deref(), Some("alice"));
        assert_eq!(state.tasks.len(), 1);

        // An operator may fail it over and kill its tasks; the framework stays alice's.
        let operator = identity_of(Role::Operator, Some("operator"));
        let mut op = connect_scheduler(&mut m, 5, operator, framework_info(Some("fw1")), now);
        settle(&mut m, now);
        assert!(matches!(
            drain(&mut op).first(),
            Some(MasterEvent::Subscribed { .. })
        ));
        assert_eq!(
            fatal_errors(&drain(&mut owner)),
            vec![FAILED_OVER.to_string()]
        );
        call(
            &mut m,
            5,
            SchedulerCall::Kill {
                task_id: TaskId("t1".into()),
            },
            now,
        );
        settle(&mut m, now);
        assert_eq!(
            kills(&drain(&mut agent)),
            1,
            "the operator's kill reaches the agent"
        );
        assert_eq!(
            m.snapshot().frameworks[0].principal.as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn a_framework_stays_bound_to_its_principal_across_a_master_restart() {
        let now = Instant::now();
        let mut m = master(now);
        let alice = identity_of(Role::Framework, Some("alice"));
        let _owner = connect_scheduler(&mut m, 2, alice.clone(), framework_info(Some("fw1")), now);
        settle(&mut m, now);
        disconnect(&mut m, 2, now);
        settle(&mut m, now);
        // What the store would hold (the subscription wrote it).
        let mut rec = recovered(&[]);
        rec.frameworks[0].info.principal = Some("alice".into());
        let mut restarted = master(now);
        restarted.recover(rec, now);
        let bob = identity_of(Role::Framework, Some("bob"));
        let mut intruder =
            connect_scheduler(&mut restarted, 3, bob, framework_info(Some("fw1")), now);
        settle(&mut restarted, now);
        assert_eq!(fatal_errors(&drain(&mut intruder)).len(), 1);
        let mut back =
            connect_scheduler(&mut restarted, 4, alice, framework_info(Some("fw1")), now);
        settle(&mut restarted, now);
        assert!(matches!(
            drain(&mut back).first(),
            Some(MasterEvent::Subscribed { .. })
        ));
    }

    #[test]
    fn the_principal_a_framework_is_stored_under_is_its_certificates_not_its_claim() {
        let now = Instant::now();
        let mut m = master(now);
        let alice = identity_of(Role::Framework, Some("alice"));
        let claim = FrameworkInfo {
            principal: Some("mallory".into()),
            ..framework_info(Some("fw1"))
        };
        let _owner = connect_scheduler(&mut m, 2, alice, claim, now);
        m.end_burst(now);
        let batch = m.take_writes();
        let stored: Vec<_> = batch
            .frameworks
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .map(|r| r.info.principal.clone())
            .collect();
        assert_eq!(stored, vec![Some("alice".to_string())]);
    }

    #[test]
    fn a_removed_mesos_framework_stays_removed_but_a_native_one_comes_back_new() {
        let now = Instant::now();
        let mut m = master(now);
        let _fw = connect_framework_as(&mut m, 2, mesos_info(Some("fw1"), None), now);
        call(&mut m, 2, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        assert!(m.snapshot().frameworks.is_empty());
        let mut back = connect_framework_as(&mut m, 3, mesos_info(Some("fw1"), None), now);
        settle(&mut m, now);
        assert_eq!(
            fatal_errors(&drain(&mut back)),
            vec![FRAMEWORK_REMOVED.to_string()]
        );
        assert!(m.snapshot().frameworks.is_empty());

        let _native = connect_framework(&mut m, 4, Some("fw2"), now);
        call(&mut m, 4, SchedulerCall::Teardown, now);
        settle(&mut m, now);
        let mut native = connect_framework(&mut m, 5, Some("fw2"), now);
        settle(&mut m, now);
        assert!(matches!(
            drain(&mut native).first(),
            Some(MasterEvent::Subscribed { .. })
        ));
    }
}
