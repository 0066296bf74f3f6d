//! The master's durable side, without touching the store: loading what a previous master
//! committed ([`Master::recover`]) and collecting each burst's changed facts into one
//! [`Batch`] for the server to commit ([`Master::take_writes`]). Everything that changes a
//! durable fact marks it dirty; this module turns the marks into records.

use super::agents::AgentEntry;
use super::frameworks::FrameworkEntry;
use super::tasks::TaskEntry;
use super::Master;
use crate::store::{AgentRecord, Batch, FrameworkRecord, Recovered};
use bramble_proto::{FrameworkId, TaskId, TaskReason, TaskState};
use std::collections::HashMap;
use std::time::Instant;
use tracing::{info, warn};

impl Master {
    /// Loads what a previous master committed. Agents are known but disconnected (and not
    /// offered) until they re-register; frameworks count as disconnected since `now`, so their
    /// failover timeout runs from the master's start.
    pub fn recover(&mut self, recovered: Recovered, now: Instant) {
        if recovered.is_empty() {
            return;
        }
        let deadline = now + self.timeouts.agent_reregistration_timeout;
        for r in recovered.agents {
            self.agents.insert(
                r.id.clone(),
                AgentEntry {
                    hostname: r.hostname,
                    address: r.address,
                    total: r.total,
                    attributes: r.attributes,
                    conn: None,
                    last_seen: now,
                    executors: r
                        .executors
                        .into_iter()
                        .map(|(fw, ex, res)| ((fw, ex), res))
                        .collect(),
                    reregister_by: Some(deadline),
                },
            );
        }
        for r in recovered.frameworks {
            // Their tasks' resources count towards their share, but nothing is offered to
            // them before they come back.
            self.allocator.add_framework(r.id.clone(), 1.0);
            self.allocator.deactivate_framework(&r.id);
            self.frameworks.insert(
                r.id,
                FrameworkEntry {
                    info: r.info,
                    conn: None,
                    disconnected_at: Some(now),
                    tasks: HashMap::new(),
                    epoch: 0,
                },
            );
        }
        self.fence_high = self.fence_high.max(recovered.fence_high);
        for (fw, epoch) in recovered.fences {
            match self.frameworks.get_mut(&fw) {
                Some(f) => f.epoch = epoch,
                // A framework the store no longer holds: its row goes.
                None => {
                    self.dirty_frameworks.insert(fw);
                }
            }
        }
        let mut orphans = Vec::new();
        let task_count = recovered.tasks.len();
        for r in recovered.tasks {
            let fw = r.framework_id.clone();
            let id = r.info.task_id.clone();
            let agent = r.info.agent_id.clone();
            match self.frameworks.get_mut(&fw) {
                Some(f) => {
                    let entry = TaskEntry::from_record(r);
                    if !entry.state.is_terminal() && !self.agents.contains_key(&agent) {
                        orphans.push((fw.clone(), id.clone()));
                    }
                    f.tasks.insert(id, entry);
                }
                None => {
                    warn!(framework = %fw, task = %id, "store holds a task of an unknown framework; dropping it");
                    self.dirty_tasks.insert((fw, id));
                }
            }
        }
        for (fw, entry) in recovered.framework_state {
            self.recover_state_entry(fw, entry);
        }
        self.draining.extend(recovered.draining);
        for (fw, task) in recovered.kills {
            let entry = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.get_mut(&task))
                .filter(|t| !t.state.is_terminal());
            match entry {
                // Sent again when its agent re-registers still running it.
                Some(t) => t.kill_requested = true,
                // Ended or gone: the row goes with the next commit.
                None => {
                    self.dirty_kills.insert((fw.clone(), task.clone()));
                }
            }
            self.stored_kills.insert((fw, task));
        }
        for (fw, task) in orphans {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRemoved,
                "its agent is not among the agents the master recovered",
            );
        }
        info!(
            agents = self.agents.len(),
            frameworks = self.frameworks.len(),
            tasks = task_count,
            reregistration_timeout_secs = self.timeouts.agent_reregistration_timeout.as_secs_f64(),
            "recovered the master's state from its store; waiting for agents to re-register and frameworks to fail over"
        );
    }

    /// The durable facts changed since the last call, as one batch for the store.
    pub fn take_writes(&mut self) -> Batch {
        let mut batch = Batch::default();
        for id in std::mem::take(&mut self.dirty_frameworks) {
            let record = self.frameworks.get(&id).map(|f| FrameworkRecord {
                id: id.clone(),
                info: f.info.clone(),
            });
            // The fencing epoch is written with the record (a u64 beside it; see the store).
            let epoch = self.frameworks.get(&id).map(|f| f.epoch);
            batch.fences.push((id.clone(), epoch));
            batch.frameworks.push((id, record));
        }
        if std::mem::take(&mut self.fence_high_dirty) {
            batch.fence_high = Some(self.fence_high);
        }
        for id in std::mem::take(&mut self.dirty_agents) {
            let record = self.agents.get(&id).map(|a| AgentRecord {
                id: id.clone(),
                hostname: a.hostname.clone(),
                address: a.address,
                total: a.total.clone(),
                attributes: a.attributes.clone(),
                executors: a
                    .executors
                    .iter()
                    .map(|((fw, ex), res)| (fw.clone(), ex.clone(), res.clone()))
                    .collect(),
            });
            batch.agents.push((id, record));
        }
        for (fw, task) in std::mem::take(&mut self.dirty_tasks) {
            let record = self
                .frameworks
                .get(&fw)
                .and_then(|f| f.tasks.get(&task))
                .map(|t| t.record(&fw));
            if self.stored_kills.contains(&(fw.clone(), task.clone())) {
                // It may have ended or gone: its pending kill with it.
                self.dirty_kills.insert((fw.clone(), task.clone()));
            }
            batch.tasks.push(((fw, task), record));
        }
        for key in std::mem::take(&mut self.dirty_kills) {
            let pending = self
                .frameworks
                .get(&key.0)
                .and_then(|f| f.tasks.get(&key.1))
                .is_some_and(|t| t.kill_requested && !t.state.is_terminal());
            let stored = if pending {
                !self.stored_kills.insert(key.clone())
            } else {
                self.stored_kills.remove(&key)
            };
            if pending != stored {
                batch.kills.push((key, pending));
            }
        }
        batch.framework_state = self.take_state_writes();
        batch.draining = std::mem::take(&mut self.dirty_draining)
            .into_iter()
            .map(|id| {
                let drained = self.draining.contains(&id);
                (id, drained)
            })
            .collect();
        batch
    }

    pub(super) fn dirty_task(&mut self, fw: &FrameworkId, task: &TaskId) {
        self.dirty_tasks.insert((fw.clone(), task.clone()));
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::Input;
    use bramble_proto::messages::{MasterEvent, MasterToAgent, SchedulerCall};
    use bramble_proto::{AgentId, FrameworkId, TaskId, TaskState};
    use std::time::{Duration, Instant};

    #[test]
    fn a_recovered_agent_keeps_the_tasks_it_reports_and_the_missing_one_is_lost_until_acked() {
        let now = Instant::now();
        let mut m = master(now);
        m.recover(recovered(&["kept", "gone"]), now);
        assert!(m.take_writes().is_empty(), "recovery itself writes nothing");
        // No offers from an agent that has not re-registered.
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        m.tick(now + Duration::from_secs(1));
        m.take_writes();
        m.flush_outbox();
        let events = drain(&mut fw);
        assert!(
            matches!(events.first(), Some(MasterEvent::Subscribed { .. })),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, MasterEvent::Offers(_))),
            "{events:?}"
        );

        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", vec![running("kept")], now);
        m.end_burst(now);
        let batch = m.take_writes();
        let lost = batch
            .tasks
            .iter()
            .find(|((_, t), _)| t.as_str() == "gone")
            .and_then(|(_, r)| r.clone())
            .expect("the missing task is written");
        assert_eq!(lost.state, TaskState::Lost);
        assert!(lost.resend_by_master);
        m.flush_outbox();
        let to_agent = drain(&mut agent);
        assert!(
            !to_agent
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::KillTask { .. })),
            "{to_agent:?}"
        );
        let update = drain(&mut fw)
            .into_iter()
            .find_map(|e| match e {
                MasterEvent::Update(s) if s.task_id.as_str() == "gone" => Some(s),
                _ => None,
            })
            .expect("LOST forwarded");
        assert_eq!(update.state, TaskState::Lost);
        let uuid = update.uuid.expect("a uuid to acknowledge");

        // Resent on the framework's next subscription, until acknowledged.
        disconnect(&mut m, 2, now);
        let mut fw = connect_framework(&mut m, 3, Some("fw1"), now);
        m.take_writes();
        m.flush_outbox();
        assert!(drain(&mut fw)
            .iter()
            .any(|e| matches!(e, MasterEvent::Update(s) if s.uuid == Some(uuid))));
        m.handle(
            Input::FromScheduler {
                conn: 3,
                call: SchedulerCall::Acknowledge {
                    agent_id: AgentId("a1".into()),
                    task_id: TaskId("gone".into()),
                    uuid,
                },
            },
            now,
        );
        let batch = m.take_writes();
        assert!(
            batch
                .tasks
                .iter()
                .any(|((_, t), r)| t.as_str() == "gone" && r.is_none()),
            "{batch:?}"
        );
        m.flush_outbox();
        // The agent never made that update, so it is not told about its acknowledgement.
        assert!(drain(&mut agent).is_empty());
        assert!(m.snapshot().tasks.iter().any(|t| t.id.as_str() == "kept"));
    }

    fn kills_sent(agent: &mut bramble_proto::queue::QueueRx<MasterToAgent>) -> Vec<String> {
        drain(agent)
            .into_iter()
            .filter_map(|msg| match msg {
                MasterToAgent::KillTask { task_id, .. } => Some(task_id.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_requested_kill_is_stored_resent_by_a_restarted_master_and_dropped_once_the_task_ends() {
        let now = Instant::now();
        let mut m = master(now);
        m.recover(recovered(&["sleeper", "other"]), now);
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        m.take_writes();
        // Asked for while the agent is away: the kill is written, once.
        for _ in 0..2 {
            m.handle(
                Input::FromScheduler {
                    conn: 2,
                    call: SchedulerCall::Kill {
                        task_id: TaskId("sleeper".into()),
                    },
                },
                now,
            );
        }
        let batch = m.take_writes();
        let kill = (FrameworkId("fw1".into()), TaskId("sleeper".into()));
        assert_eq!(batch.kills, vec![(kill.clone(), true)]);

        // A master restarted from the store (the kill and a stale one of an ended task) sends
        // it when the agent re-registers still running the task, and only it.
        let mut stored = recovered(&["sleeper", "other"]);
        stored.kills = vec![
            kill.clone(),
            (FrameworkId("fw1".into()), TaskId("long-gone".into())),
        ];
        let mut m = master(now);
        m.recover(stored, now);
        let batch = m.take_writes();
        assert_eq!(
            batch.kills,
            vec![(
                (FrameworkId("fw1".into()), TaskId("long-gone".into())),
                false
            )],
            "the stale kill is deleted"
        );
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        let mut agent = join(
            &mut m,
            1,
            "a1",
            vec![running("sleeper"), running("other")],
            now,
        );
        assert_eq!(kills_sent(&mut agent), vec!["sleeper".to_string()]);
        m.take_writes();

        // The task ends: its kill is deleted with its record.
        let mut killed = bramble_proto::TaskStatus::new(
            FrameworkId("fw1".into()),
            TaskId("sleeper".into()),
            TaskState::Killed,
            bramble_proto::task::UpdateSource::Agent,
        );
        killed.uuid = Some(uuid::Uuid::new_v4());
        m.handle(
            Input::FromAgent {
                conn: 1,
                msg: bramble_proto::messages::AgentToMaster::StatusUpdate(killed),
            },
            now,
        );
        let batch = m.take_writes();
        assert_eq!(batch.kills, vec![(kill, false)]);
        assert!(m.take_writes().kills.is_empty(), "deleted once");
    }

    #[test]
    fn a_stored_task_of_an_unknown_framework_is_dropped_from_the_store() {
        let now = Instant::now();
        let mut m = master(now);
        let mut stored = recovered(&["orphan"]);
        stored.tasks[0].framework_id = FrameworkId("gone".into());
        m.recover(stored, now);
        let batch = m.take_writes();
        assert!(
            batch
                .tasks
                .iter()
                .any(|((fw, t), r)| fw.as_str() == "gone" && t.as_str() == "orphan" && r.is_none()),
            "{batch:?}"
        );
        assert!(m.snapshot().tasks.is_empty());
    }
}
