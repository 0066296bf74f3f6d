//! Agent health: an agent whose custom executors keep failing to register is marked unhealthy
//! and gets no offers until it has served its cooldown (Mesos's agent health checks, scaled
//! down). Without this, an agent that is "up" but cannot run executors (its socket replaced,
//! its disk full) wins every offer because it is the idlest one, and a framework relaunches
//! the same work on it forever while the healthy agents sit idle.
//!
//! The evidence is the agent's own updates: a task failed with
//! `ExecutorRegistrationTimeout` counts against the agent, once per executor (one executor
//! with ten queued tasks is one failure, not ten); a task an executor reports RUNNING proves
//! executors work there and clears the record. After the cooldown the agent is on probation:
//! offered again, but its next failure marks it unhealthy at once, for twice as long (capped).
//! Kept in memory only: a restarted master gives every agent a fresh start.

use super::feed::ClusterEvent;
use super::Master;
use bramble_proto::task::{TaskReason, TaskStatus, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskState};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Failures in a row (distinct executors) that make an agent unhealthy.
pub(super) const FAILURES_BEFORE_UNHEALTHY: u32 = 3;
/// The first time out; doubled each time the agent fails again on probation.
pub(super) const FIRST_COOLDOWN: Duration = Duration::from_secs(60);
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// One agent's record of agent-caused failures.
#[derive(Debug, Clone)]
pub(super) struct AgentHealth {
    failures: u32,
    /// The executor the last failure came from, so its other tasks do not count again.
    last_executor: Option<(FrameworkId, ExecutorId)>,
    unhealthy: Option<Unhealthy>,
    next_cooldown: Duration,
}

#[derive(Debug, Clone)]
struct Unhealthy {
    until: Instant,
    reason: String,
}

/// What a piece of evidence changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    BecameUnhealthy,
    Recovered,
}

impl Default for AgentHealth {
    fn default() -> Self {
        Self {
            failures: 0,
            last_executor: None,
            unhealthy: None,
            next_cooldown: FIRST_COOLDOWN,
        }
    }
}

impl AgentHealth {
    /// Why the agent gets no offers, while it gets none.
    pub(super) fn unhealthy_reason(&self) -> Option<&str> {
        self.unhealthy.as_ref().map(|u| u.reason.as_str())
    }

    /// An executor of `framework` failed to register there.
    pub(super) fn failure(
        &mut self,
        executor: (FrameworkId, ExecutorId),
        message: &str,
        now: Instant,
    ) -> Change {
        if self.last_executor.as_ref() == Some(&executor) {
            return Change::None;
        }
        self.last_executor = Some(executor);
        self.failures = self.failures.saturating_add(1);
        if self.unhealthy.is_some() || self.failures < FAILURES_BEFORE_UNHEALTHY {
            return Change::None;
        }
        let cooldown = self.next_cooldown;
        self.next_cooldown = (cooldown * 2).min(MAX_COOLDOWN);
        self.unhealthy = Some(Unhealthy {
            until: now + cooldown,
            reason: format!(
                "{} executors in a row failed to register (last: {message}); no offers for {}s",
                self.failures,
                cooldown.as_secs()
            ),
        });
        Change::BecameUnhealthy
    }

    /// An executor registered and ran a task there.
    pub(super) fn success(&mut self) -> Change {
        let was_unhealthy = self.unhealthy.is_some();
        *self = Self::default();
        if was_unhealthy {
            Change::Recovered
        } else {
            Change::None
        }
    }

    /// The cooldown is over: offered again, on probation (one more failure and it is out).
    pub(super) fn expire(&mut self, now: Instant) -> Change {
        match &self.unhealthy {
            Some(u) if u.until <= now => {
                self.unhealthy = None;
                self.failures = FAILURES_BEFORE_UNHEALTHY - 1;
                self.last_executor = None;
                Change::Recovered
            }
            _ => Change::None,
        }
    }
}

/// Whether `status` is evidence about the agent's health: `Some(false)` for an executor that
/// did not register, `Some(true)` for a task an executor reports running.
fn evidence(status: &TaskStatus) -> Option<bool> {
    if status.state == TaskState::Running && status.source == UpdateSource::Executor {
        return Some(true);
    }
    (status.reason == Some(TaskReason::ExecutorRegistrationTimeout)).then_some(false)
}

impl Master {
    /// Counts an agent's status update for or against its health.
    pub(super) fn health_evidence(
        &mut self,
        agent_id: &AgentId,
        status: &TaskStatus,
        now: Instant,
    ) {
        let Some(ok) = evidence(status) else {
            return;
        };
        let health = self.health.entry(agent_id.clone()).or_default();
        let change = if ok {
            health.success()
        } else {
            let executor = status
                .executor_id
                .clone()
                .unwrap_or_else(|| ExecutorId(status.task_id.as_str().to_string()));
            health.failure(
                (status.framework_id.clone(), executor),
                &status.message,
                now,
            )
        };
        self.apply_health_change(agent_id, change);
    }

    /// Agents whose cooldown is over are offered again.
    pub(super) fn expire_unhealthy(&mut self, now: Instant) {
        let recovered: Vec<AgentId> = self
            .health
            .iter_mut()
            .filter_map(|(id, h)| (h.expire(now) == Change::Recovered).then(|| id.clone()))
            .collect();
        for id in recovered {
            info!(agent = %id, "agent's cooldown is over: offered again, on probation");
            self.apply_health_change(&id, Change::Recovered);
        }
    }

    /// Why `agent` gets no offers, if it is unhealthy.
    pub(super) fn unhealthy_reason(&self, agent: &AgentId) -> Option<String> {
        self.health
            .get(agent)
            .and_then(|h| h.unhealthy_reason())
            .map(str::to_string)
    }

    /// Puts the allocator in line with the agent's health and drain (also after a
    /// re-registration, which re-adds the agent to the allocator as offerable).
    pub(super) fn sync_offerable(&mut self, agent: &AgentId) {
        let offerable = self.unhealthy_reason(agent).is_none() && !self.draining.contains(agent);
        self.allocator.set_agent_offerable(agent, offerable);
    }

    fn apply_health_change(&mut self, agent: &AgentId, change: Change) {
        match change {
            Change::None => return,
            Change::BecameUnhealthy => {
                let reason = self.unhealthy_reason(agent).unwrap_or_default();
                let hostname = self
                    .agents
                    .get(agent)
                    .map(|a| a.hostname.clone())
                    .unwrap_or_default();
                warn!(agent = %agent, %hostname, "agent marked unhealthy: {reason}");
                self.rescind_agent_offers(agent);
            }
            Change::Recovered => {
                info!(agent = %agent, "agent healthy again");
                self.allocation_due = true;
            }
        }
        self.sync_offerable(agent);
        let unhealthy = self.unhealthy_reason(agent);
        self.feed.emit(|| ClusterEvent::AgentHealth {
            agent_id: agent.clone(),
            unhealthy,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::*;
    use bramble_proto::messages::{AgentToMaster, MasterEvent};
    use bramble_proto::task::{ExecutorInfo, TaskInfo};
    use bramble_proto::TaskId;
    use uuid::Uuid;

    fn exec(n: u32) -> (FrameworkId, ExecutorId) {
        (FrameworkId("fw1".into()), ExecutorId(format!("e{n}")))
    }

    #[test]
    fn three_executors_failing_in_a_row_make_an_agent_unhealthy_until_its_cooldown_ends() {
        let t0 = Instant::now();
        let mut h = AgentHealth::default();
        assert_eq!(h.failure(exec(1), "x", t0), Change::None);
        assert_eq!(h.failure(exec(1), "x", t0), Change::None, "same executor");
        assert_eq!(h.failure(exec(2), "x", t0), Change::None);
        assert!(h.unhealthy_reason().is_none());
        assert_eq!(h.failure(exec(3), "timed out", t0), Change::BecameUnhealthy);
        let reason = h.unhealthy_reason().expect("unhealthy");
        assert!(reason.contains("3 executors in a row") && reason.contains("timed out"));
        assert_eq!(h.expire(t0 + FIRST_COOLDOWN / 2), Change::None);
        assert_eq!(h.expire(t0 + FIRST_COOLDOWN), Change::Recovered);
        // On probation: the next failure is enough, and the cooldown doubles.
        let t1 = t0 + FIRST_COOLDOWN;
        assert_eq!(h.failure(exec(4), "x", t1), Change::BecameUnhealthy);
        assert_eq!(h.expire(t1 + FIRST_COOLDOWN), Change::None);
        assert_eq!(h.expire(t1 + FIRST_COOLDOWN * 2), Change::Recovered);
    }

    #[test]
    fn a_running_executor_clears_the_record() {
        let t0 = Instant::now();
        let mut h = AgentHealth::default();
        h.failure(exec(1), "x", t0);
        h.failure(exec(2), "x", t0);
        assert_eq!(h.success(), Change::None);
        assert_eq!(
            h.failure(exec(3), "x", t0),
            Change::None,
            "counting from zero"
        );
    }

    fn executor_task(id: &str) -> TaskInfo {
        let mut t = task_info(id);
        t.command = None;
        t.executor = Some(ExecutorInfo {
            executor_id: ExecutorId(format!("exec-{id}")),
            name: "exec".into(),
            command: bramble_proto::task::CommandInfo::shell("true"),
            resources: bramble_proto::Resources::default(),
        });
        t
    }

    fn registration_timeout(task: &str) -> AgentToMaster {
        let mut s = TaskStatus::new(
            FrameworkId("fw1".into()),
            TaskId(task.into()),
            TaskState::Failed,
            UpdateSource::Agent,
        )
        .with_reason(
            TaskReason::ExecutorRegistrationTimeout,
            "executor did not register within 30s",
        );
        s.executor_id = Some(ExecutorId(format!("exec-{task}")));
        s.uuid = Some(Uuid::new_v4());
        AgentToMaster::StatusUpdate(s)
    }

    /// Issue 22: an agent whose executors kept timing out kept winning every offer.
    #[test]
    fn an_agent_whose_executors_keep_failing_to_register_gets_no_offers_and_says_why() {
        let now = Instant::now();
        let mut m = master(now);
        let (mut agent, mut fw) = agent_and_framework(&mut m, now);
        for (i, task) in ["t1", "t2", "t3"].into_iter().enumerate() {
            let offer = offers(&drain(&mut fw))
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("offer {i} before the agent is unhealthy"));
            accept(&mut m, &offer, vec![executor_task(task)], now);
            drain(&mut agent);
            m.handle(
                Input::FromAgent {
                    conn: 1,
                    msg: registration_timeout(task),
                },
                now,
            );
            settle(&mut m, now);
        }
        let snapshot = m.snapshot();
        let reason = snapshot.agents[0].unhealthy.clone().expect("unhealthy");
        assert!(reason.contains("failed to register"), "{reason}");
        assert!(m.summary().agents[0].unhealthy);
        let later = now + Duration::from_secs(1);
        m.tick(later);
        settle(&mut m, later);
        assert!(
            offers(&drain(&mut fw)).is_empty(),
            "no offers for an unhealthy agent"
        );
        // Heartbeats keep the agent (test agent timeout: 2 s) across the cooldown.
        let after = now + FIRST_COOLDOWN + Duration::from_secs(1);
        let mut t = later;
        while t < after {
            t += Duration::from_secs(1);
            m.handle(
                Input::FromAgent {
                    conn: 1,
                    msg: AgentToMaster::Heartbeat,
                },
                t,
            );
            m.tick(t);
            settle(&mut m, t);
            drain(&mut agent);
        }
        settle(&mut m, after);
        let events = drain(&mut fw);
        assert!(
            events.iter().any(|e| matches!(e, MasterEvent::Offers(_))),
            "offered again after the cooldown: {events:?}"
        );
        assert!(m.snapshot().agents[0].unhealthy.is_none());
    }

    use crate::state::Input;
}
