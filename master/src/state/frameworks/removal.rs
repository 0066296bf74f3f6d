//! Removal: a framework not back within its failover timeout, or torn down, goes with its
//! tasks and executors.

use crate::state::counters::FrameworkEvent;
use crate::state::feed::ClusterEvent;
use crate::state::Master;
use bramble_proto::messages::{MasterEvent, MasterToAgent};
use bramble_proto::{AgentId, FrameworkId, TaskState};
use std::collections::HashSet;
use std::time::Instant;
use tracing::info;

impl Master {
    pub(in crate::state) fn expire_frameworks(&mut self, now: Instant) {
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

    pub(in crate::state) fn remove_framework(&mut self, id: &FrameworkId, why: &str) {
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
            let mut summary = crate::state::tasks::task_summary(id, task, entry);
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
}
