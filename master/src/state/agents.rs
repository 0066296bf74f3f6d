//! Agents: registration (fresh, returning, or back after a master failover), reconciling
//! what a (re-)registering agent runs with what the master expects there, heartbeats and the
//! agent timeout, disconnection and removal. The master's picture wins: tasks it does not
//! expect are killed, tasks it expected and the agent lacks become LOST.

use super::counters::AgentEvent;
use super::feed::ClusterEvent;
use super::peers::Bound;
use super::{ConnId, Master};
use bramble_proto::messages::{
    AgentToMaster, MasterEvent, MasterToAgent, OperatorReply, RunningTask,
};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskReason, TaskState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;
use tracing::{info, warn};

/// An agent the master knows: registered now, or recovered from the store and expected back.
pub(super) struct AgentEntry {
    pub(super) hostname: String,
    pub(super) address: SocketAddr,
    pub(super) total: Resources,
    pub(super) attributes: BTreeMap<String, String>,
    pub(super) conn: Option<ConnId>,
    pub(super) last_seen: Instant,
    /// Executors running there, per framework, with the resources charged for them.
    pub(super) executors: HashMap<(FrameworkId, ExecutorId), Resources>,
    /// Known from the store and not back since the master started: removed (its tasks LOST)
    /// if it has not re-registered by then.
    pub(super) reregister_by: Option<Instant>,
}

impl Master {
    pub(super) fn agent_message(&mut self, conn: ConnId, msg: AgentToMaster, now: Instant) {
        let bound = self.conns.get(&conn).and_then(|c| c.bound.clone());
        match (msg, bound) {
            (
                AgentToMaster::Register {
                    agent_id,
                    hostname,
                    resources,
                    attributes,
                    tasks,
                },
                None,
            ) => self.register_agent(conn, agent_id, hostname, resources, attributes, tasks, now),
            (AgentToMaster::Register { .. }, Some(_)) => {
                self.close_conn(conn, "agent registered twice on one connection")
            }
            (_, None) | (_, Some(Bound::Framework(_) | Bound::Standby(_))) => {
                self.close_conn(conn, "agent message before registration")
            }
            // Acknowledged at the connection (`server/connections.rs`), before the state
            // task sees it: here it only keeps the agent from timing out.
            (AgentToMaster::Heartbeat, Some(Bound::Agent(id))) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.last_seen = now;
                }
            }
            (AgentToMaster::StatusUpdate(status), Some(Bound::Agent(id))) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.last_seen = now;
                }
                // A resent update counts once: failures per executor, success is idempotent.
                self.health_evidence(&id, &status, now);
                self.status_update(&id, status);
            }
            (
                AgentToMaster::ExecutorMessage {
                    framework_id,
                    executor_id,
                    data,
                },
                Some(Bound::Agent(id)),
            ) => self.send_framework(
                &framework_id,
                MasterEvent::Message {
                    agent_id: id,
                    executor_id,
                    data,
                },
            ),
            (AgentToMaster::SandboxData { request, result }, Some(Bound::Agent(id))) => {
                self.sandbox_answer(&id, request, result.map(OperatorReply::Sandbox))
            }
            (AgentToMaster::SandboxListing { request, result }, Some(Bound::Agent(id))) => {
                self.sandbox_answer(&id, request, result.map(OperatorReply::SandboxListing))
            }
            (AgentToMaster::ImageReply { request, result }, Some(Bound::Agent(id))) => {
                self.image_answer(&id, request, result)
            }
            // Answered at the edge (`server/connections.rs`, `artifacts.rs`): the state never reads files.
            (AgentToMaster::ArtifactRead { request, .. }, Some(Bound::Agent(id))) => {
                tracing::debug!(agent = %id, request, "artifact read reached the state; ignored")
            }
            (
                AgentToMaster::ExecutorExited {
                    framework_id,
                    executor_id,
                    status,
                },
                Some(Bound::Agent(id)),
            ) => {
                let freed = self.agents.get_mut(&id).and_then(|a| {
                    a.executors
                        .remove(&(framework_id.clone(), executor_id.clone()))
                });
                if let Some(res) = freed {
                    self.dirty_agents.insert(id.clone());
                    self.allocator.recover(&id, &framework_id, &res);
                    self.allocation_due = true;
                    // Best effort, as Mesos's FAILURE event: a framework that is away misses it.
                    self.send_framework(
                        &framework_id,
                        MasterEvent::ExecutorLost {
                            agent_id: id,
                            executor_id,
                            status,
                        },
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register_agent(
        &mut self,
        conn: ConnId,
        agent_id: Option<AgentId>,
        hostname: String,
        total: Resources,
        attributes: BTreeMap<String, String>,
        tasks: Vec<RunningTask>,
        now: Instant,
    ) {
        let Some(address) = self.conns.get(&conn).map(|c| c.identity.address) else {
            return;
        };
        let claimed = agent_id.is_some();
        let id = agent_id.unwrap_or_else(|| AgentId(bramble_proto::ids::fresh("agent")));
        if let Err(e) = id.check() {
            return self.close_conn(conn, &format!("refusing registration: {e}"));
        }
        let returning = self.agents.contains_key(&id);
        let after_failover = self
            .agents
            .get(&id)
            .is_some_and(|a| a.reregister_by.is_some());
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn) {
            if old != conn {
                // The agent restarted faster than its old connection timed out.
                self.close_conn(old, "replaced by a newer connection from the same agent");
                if let Some(c) = self.conns.get_mut(&old) {
                    c.bound = None;
                }
            }
        }
        self.rescind_agent_offers(&id);
        self.allocator.remove_agent(&id);
        self.allocator.add_agent(id.clone(), total.clone());
        self.sync_offerable(&id);
        let executors = self
            .agents
            .remove(&id)
            .map(|a| a.executors)
            .unwrap_or_default();
        self.agents.insert(
            id.clone(),
            AgentEntry {
                hostname: hostname.clone(),
                address,
                total: total.clone(),
                attributes,
                conn: Some(conn),
                last_seen: now,
                executors,
                reregister_by: None,
            },
        );
        self.dirty_agents.insert(id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Agent(id.clone()));
        }
        self.send_conn_agent(
            conn,
            MasterToAgent::Registered {
                agent_id: id.clone(),
                heartbeat_interval_ms: self.timeouts.heartbeat_interval.as_millis() as u64,
            },
        );
        let how = match (returning, after_failover, claimed) {
            (true, true, _) => "re-registered after master failover",
            (true, false, _) => "re-registered",
            (false, _, true) => "registered (new agent: its id is not known to this master)",
            (false, _, false) => "registered (new agent)",
        };
        info!(agent = %id, %hostname, %address, resources = %total,
            live_tasks = tasks.len(), "agent {how}");
        self.feed.counters().agent(if returning {
            AgentEvent::Reregistered
        } else {
            AgentEvent::Registered
        });
        self.feed.emit(|| ClusterEvent::AgentRegistered {
            agent_id: id.clone(),
            hostname: hostname.clone(),
            returning,
        });
        self.reconcile_agent_tasks(&id, tasks);
        self.allocation_due = true;
    }

    /// Compares what a (re-)registering agent runs with what the master believes runs there
    /// (after a master restart: what the store says). The master's picture wins: tasks it does
    /// not know (or already declared LOST, so their framework has launched replacements) are
    /// killed; tasks it expected but the agent no longer has are LOST.
    fn reconcile_agent_tasks(&mut self, agent_id: &AgentId, reported: Vec<RunningTask>) {
        let mut seen: HashSet<(FrameworkId, TaskId)> = HashSet::new();
        for rt in reported {
            let key = (rt.framework_id.clone(), rt.task.task_id.clone());
            let known = self
                .frameworks
                .get(&rt.framework_id)
                .and_then(|f| f.tasks.get(&rt.task.task_id))
                .filter(|t| !t.state.is_terminal() && &t.info.agent_id == agent_id);
            let kill_pending = known.is_some_and(|t| t.kill_requested);
            if known.is_some() {
                if kill_pending {
                    info!(agent = %agent_id, framework = %rt.framework_id, task = %rt.task.task_id,
                        "agent still runs a task whose kill was requested; sending the kill again");
                    self.send_agent(
                        agent_id,
                        MasterToAgent::KillTask {
                            framework_id: rt.framework_id.clone(),
                            task_id: rt.task.task_id.clone(),
                        },
                    );
                }
                let res = rt.task.resources.clone();
                if let Err(e) = self
                    .allocator
                    .allocate_existing(agent_id, &rt.framework_id, &res)
                {
                    warn!(agent = %agent_id, task = %rt.task.task_id, "re-registered task does not fit the agent's resources: {e}");
                }
                seen.insert(key);
            } else {
                info!(agent = %agent_id, framework = %rt.framework_id, task = %rt.task.task_id,
                    "agent reports a task the master does not expect there; killing it");
                self.send_agent(
                    agent_id,
                    MasterToAgent::KillTask {
                        framework_id: rt.framework_id,
                        task_id: rt.task.task_id,
                    },
                );
            }
        }
        // Re-charge executors still recorded for this agent.
        let executors: Vec<((FrameworkId, ExecutorId), Resources)> = self
            .agents
            .get(agent_id)
            .map(|a| {
                a.executors
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for ((fw, _), res) in executors {
            let _ = self.allocator.allocate_existing(agent_id, &fw, &res);
        }
        let missing: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == agent_id && !t.state.is_terminal())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .filter(|k| !seen.contains(k))
            .collect();
        for (fw, task) in missing {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRestarted,
                "agent re-registered without this task",
            );
        }
    }

    pub(super) fn expire_agents(&mut self, now: Instant) {
        let timeout = self.timeouts.agent_timeout;
        let expired: Vec<(AgentId, &'static str)> = self
            .agents
            .iter()
            .filter_map(|(id, a)| match a.reregister_by {
                Some(by) => (now > by).then_some((
                    id.clone(),
                    "it did not re-register within the agent re-registration timeout after the master restarted",
                )),
                None => (now.duration_since(a.last_seen) > timeout)
                    .then_some((id.clone(), "no heartbeat within the agent timeout")),
            })
            .collect();
        for (id, why) in expired {
            self.remove_agent(&id, why);
        }
    }

    pub(super) fn remove_agent(&mut self, id: &AgentId, why: &str) {
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        self.health.remove(id);
        warn!(agent = %id, hostname = %agent.hostname, "removing agent: {why}; its tasks become LOST");
        self.feed.counters().agent(AgentEvent::Removed);
        self.dirty_agents.insert(id.clone());
        self.feed.emit(|| ClusterEvent::AgentRemoved {
            agent_id: id.clone(),
            reason: why.to_string(),
        });
        if let Some(conn) = agent.conn {
            self.close_conn(conn, "agent removed");
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
        }
        self.rescind_agent_offers(id);
        self.allocator.remove_agent(id);
        let lost: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == id && !t.state.is_terminal())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .collect();
        for (fw, task) in lost {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRemoved,
                &format!("agent {id} ({}) removed: {why}", agent.hostname),
            );
        }
        // Ended tasks whose update the agent was still resending: nobody else will now.
        let orphaned: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == id && !t.resend_by_master)
                    .filter(|(_, t)| t.terminal.is_some())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .collect();
        for (fw, task) in orphaned {
            if let Some(t) = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.get_mut(&task))
            {
                t.resend_by_master = true;
            }
            self.dirty_task(&fw, &task);
        }
        let fws: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for fw in fws {
            self.send_framework(
                &fw,
                MasterEvent::AgentLost {
                    agent_id: id.clone(),
                },
            );
        }
    }

    /// The agent's connection `conn` ended: no offers until it re-registers; its tasks stay
    /// until the agent timeout removes it.
    pub(super) fn agent_disconnected(
        &mut self,
        id: &AgentId,
        conn: ConnId,
        reason: &str,
        graceful: bool,
    ) {
        let Some(a) = self.agents.get_mut(id).filter(|a| a.conn == Some(conn)) else {
            return; // a connection the agent has already replaced
        };
        a.conn = None;
        if graceful {
            info!(agent = %id, hostname = %a.hostname, "agent left (it is shutting down); removed if not back within the agent timeout");
        } else {
            warn!(agent = %id, hostname = %a.hostname, "agent disconnected: {reason}; removed if not back within the agent timeout");
        }
        self.feed.emit(|| ClusterEvent::AgentDisconnected {
            agent_id: id.clone(),
        });
        self.rescind_agent_offers(id);
        // No offers for a disconnected agent: take it out of the pool until it re-registers
        // (which re-adds it with its live tasks).
        self.allocator.remove_agent(id);
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Input;
    use bramble_proto::messages::{MasterEvent, MasterToAgent, SchedulerCall};
    use bramble_proto::{TaskId, TaskReason, TaskState};
    use std::time::{Duration, Instant};

    /// Issue 16: an agent names its own id when it comes back; one that is not a valid id is
    /// not taken as a key.
    #[test]
    fn an_agent_registering_with_an_invalid_id_is_refused() {
        let now = Instant::now();
        let mut m = master(now);
        for (conn, bad) in [(1, "../x"), (2, ""), (3, "nul\0")] {
            let _agent = connect_agent(&mut m, conn, now);
            register(&mut m, conn, bad, Vec::new(), now);
        }
        settle(&mut m, now);
        assert!(m.snapshot().agents.is_empty());
        let _agent = connect_agent(&mut m, 4, now);
        register(&mut m, 4, "agent-1", Vec::new(), now);
        assert_eq!(m.snapshot().agents.len(), 1);
    }

    #[test]
    fn a_kill_lost_with_the_agents_connection_is_sent_again_when_it_re_registers() {
        let now = Instant::now();
        let mut m = master(now);
        m.recover(recovered(&["sleeper", "other"]), now);
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        let mut agent = join(
            &mut m,
            1,
            "a1",
            vec![running("sleeper"), running("other")],
            now,
        );
        drain(&mut agent);

        // The kill goes out on a connection that is already dead (the agent never sees it).
        m.handle(
            Input::FromScheduler {
                conn: 2,
                call: SchedulerCall::Kill {
                    task_id: TaskId("sleeper".into()),
                },
            },
            now,
        );
        settle(&mut m, now);
        let lost_with_link = drain(&mut agent);
        assert!(
            lost_with_link.iter().any(|msg| matches!(msg, MasterToAgent::KillTask { task_id, .. } if task_id.as_str() == "sleeper")),
            "{lost_with_link:?}"
        );
        drop(agent);
        disconnect(&mut m, 1, now);

        // Back on a new connection, still running it: the kill is sent again, and only it.
        let mut agent = join(
            &mut m,
            3,
            "a1",
            vec![running("sleeper"), running("other")],
            now,
        );
        let kills: Vec<String> = drain(&mut agent)
            .into_iter()
            .filter_map(|msg| match msg {
                MasterToAgent::KillTask { task_id, .. } => Some(task_id.as_str().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(kills, vec!["sleeper".to_string()]);
    }

    #[test]
    fn a_recovered_agent_that_does_not_return_is_removed_after_the_reregistration_timeout() {
        let now = Instant::now();
        let mut m = master(now);
        m.recover(recovered(&["t"]), now);
        // Longer than the agent timeout, shorter than the re-registration timeout: kept.
        m.tick(now + Duration::from_secs(3));
        assert_eq!(m.snapshot().agents.len(), 1);
        m.tick(now + Duration::from_secs(6));
        let s = m.snapshot();
        assert!(s.agents.is_empty(), "{:?}", s.agents);
        let t = s.tasks.iter().find(|t| t.id.as_str() == "t").expect("task");
        assert_eq!(t.state, TaskState::Lost);
        assert_eq!(t.reason, Some(TaskReason::AgentRemoved));
        let batch = m.take_writes();
        assert!(batch.agents.iter().any(|(_, r)| r.is_none()));
    }

    #[test]
    fn an_agent_silent_past_the_agent_timeout_is_removed_and_its_tasks_are_lost() {
        let now = Instant::now();
        let mut m = master(now);
        m.recover(recovered(&["t"]), now);
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        let _agent = join(&mut m, 1, "a1", vec![running("t")], now);
        drain(&mut fw);
        // Registered again, so the (shorter) agent timeout applies: 2 s without a heartbeat.
        m.tick(now + Duration::from_secs(1));
        assert_eq!(m.snapshot().agents.len(), 1);
        m.tick(now + Duration::from_secs(3));
        m.take_writes();
        m.flush_outbox();
        let s = m.snapshot();
        assert!(s.agents.is_empty(), "{:?}", s.agents);
        let events = drain(&mut fw);
        assert_eq!(updates(&events), vec![("t".to_string(), TaskState::Lost)]);
        assert!(
            events.iter().any(
                |e| matches!(e, MasterEvent::AgentLost { agent_id } if agent_id.as_str() == "a1")
            ),
            "{events:?}"
        );
        let t = s.tasks.iter().find(|t| t.id.as_str() == "t").expect("task");
        assert_eq!(t.reason, Some(TaskReason::AgentRemoved));
    }

    #[test]
    fn a_task_the_master_does_not_expect_on_a_registering_agent_is_killed() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = join(&mut m, 1, "a1", vec![running("stray")], now);
        let sent = drain(&mut agent);
        assert!(
            matches!(sent.first(), Some(MasterToAgent::Registered { .. })),
            "{sent:?}"
        );
        assert!(
            sent.iter().any(|msg| matches!(msg, MasterToAgent::KillTask { task_id, .. } if task_id.as_str() == "stray")),
            "{sent:?}"
        );
    }
}
