//! [`AgentBlocklist`]: which agents a framework should stay away from for a while, because
//! its tasks failed there repeatedly for the agent's reasons (an executor that never
//! registered, a launch the agent could not carry out, an agent that restarted or was
//! removed). Mesos frameworks keep such a list themselves (Spark's and Aurora's blacklists);
//! this is that list, so a framework author does not write it again. The master's own agent
//! health is the cluster-wide version; this one is per framework and reacts to what this
//! framework saw.
//!
//! Pure bookkeeping with explicit times: feed it every status update and ask it about offers.
//! Failures the task brought on itself (its command exited non-zero, it ran out of memory, it
//! was killed) never count: another agent would not do better.

use bramble_proto::{AgentId, TaskReason, TaskState, TaskStatus};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Agent-caused failures in a row on one agent before it is avoided.
pub const DEFAULT_FAILURES_TO_BLOCK: u32 = 2;
/// How long an agent is avoided once blocked.
pub const DEFAULT_BLOCK_FOR: Duration = Duration::from_secs(60);

/// Agents to avoid, and how much evidence there is against the others.
#[derive(Debug, Clone)]
pub struct AgentBlocklist {
    failures_to_block: u32,
    block_for: Duration,
    agents: HashMap<AgentId, Record>,
}

#[derive(Debug, Clone, Default)]
struct Record {
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Default for AgentBlocklist {
    fn default() -> Self {
        Self::new(DEFAULT_FAILURES_TO_BLOCK, DEFAULT_BLOCK_FOR)
    }
}

impl AgentBlocklist {
    /// Blocks an agent for `block_for` after `failures_to_block` agent-caused failures in a
    /// row there (at least 1).
    pub fn new(failures_to_block: u32, block_for: Duration) -> Self {
        Self {
            failures_to_block: failures_to_block.max(1),
            block_for,
            agents: HashMap::new(),
        }
    }

    /// Whether `status` blames the agent rather than the task.
    pub fn is_agent_failure(status: &TaskStatus) -> bool {
        status.state.is_terminal()
            && matches!(
                status.reason,
                Some(
                    TaskReason::ExecutorRegistrationTimeout
                        | TaskReason::LaunchFailed
                        | TaskReason::AgentRemoved
                        | TaskReason::AgentRestarted
                        | TaskReason::HostRebooted
                )
            )
    }

    /// Takes one status update into account. Returns true when it blocked its agent.
    pub fn observe(&mut self, status: &TaskStatus, now: Instant) -> bool {
        let Some(agent) = &status.agent_id else {
            return false;
        };
        if Self::is_agent_failure(status) {
            let record = self.agents.entry(agent.clone()).or_default();
            record.failures = record.failures.saturating_add(1);
            if record.failures >= self.failures_to_block && !is_blocked(record, now) {
                record.blocked_until = Some(now + self.block_for);
                return true;
            }
        } else if matches!(status.state, TaskState::Running | TaskState::Finished) {
            // The agent runs tasks again: the slate is clean.
            self.agents.remove(agent);
        }
        false
    }

    /// Whether offers from `agent` should be declined now.
    pub fn is_blocked(&self, agent: &AgentId, now: Instant) -> bool {
        self.agents.get(agent).is_some_and(|r| is_blocked(r, now))
    }

    /// How long `agent` stays blocked from `now` (zero when it is not): a good refuse time
    /// when declining its offers.
    pub fn blocked_for(&self, agent: &AgentId, now: Instant) -> Duration {
        self.agents
            .get(agent)
            .and_then(|r| r.blocked_until)
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// How many agent-caused failures in a row `agent` has (reset by a task that runs there).
    pub fn failures(&self, agent: &AgentId) -> u32 {
        self.agents.get(agent).map_or(0, |r| r.failures)
    }
}

fn is_blocked(record: &Record, now: Instant) -> bool {
    record.blocked_until.is_some_and(|until| now < until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::UpdateSource;
    use bramble_proto::{FrameworkId, TaskId};

    fn status(agent: &str, state: TaskState, reason: Option<TaskReason>) -> TaskStatus {
        let mut s = TaskStatus::new(
            FrameworkId("fw".into()),
            TaskId("t".into()),
            state,
            UpdateSource::Agent,
        );
        s.agent_id = Some(AgentId(agent.into()));
        s.reason = reason;
        s
    }

    #[test]
    fn repeated_agent_failures_block_the_agent_for_a_while() {
        let t0 = Instant::now();
        let mut list = AgentBlocklist::new(2, Duration::from_secs(30));
        let timeout = status(
            "a1",
            TaskState::Failed,
            Some(TaskReason::ExecutorRegistrationTimeout),
        );
        assert!(!list.observe(&timeout, t0));
        assert!(!list.is_blocked(&AgentId("a1".into()), t0));
        assert!(list.observe(&timeout, t0), "the second one blocks");
        let a1 = AgentId("a1".into());
        assert!(list.is_blocked(&a1, t0 + Duration::from_secs(29)));
        assert_eq!(list.blocked_for(&a1, t0), Duration::from_secs(30));
        assert!(!list.is_blocked(&AgentId("a2".into()), t0));
        assert!(!list.is_blocked(&a1, t0 + Duration::from_secs(30)));
    }

    #[test]
    fn the_tasks_own_failures_never_count_and_a_running_task_clears_the_record() {
        let t0 = Instant::now();
        let mut list = AgentBlocklist::new(1, Duration::from_secs(30));
        let exited = status("a1", TaskState::Failed, Some(TaskReason::CommandExited));
        let oom = status("a1", TaskState::Failed, Some(TaskReason::MemoryLimit));
        let killed = status("a1", TaskState::Killed, Some(TaskReason::KilledByRequest));
        for s in [&exited, &oom, &killed] {
            assert!(!list.observe(s, t0));
        }
        assert_eq!(list.failures(&AgentId("a1".into())), 0);
        let mut list = AgentBlocklist::new(2, Duration::from_secs(30));
        list.observe(
            &status("a1", TaskState::Lost, Some(TaskReason::AgentRemoved)),
            t0,
        );
        list.observe(&status("a1", TaskState::Running, None), t0);
        assert_eq!(list.failures(&AgentId("a1".into())), 0);
    }
}
