//! `bramble-sdk`: what a framework author writes against.
//!
//! Like Mesos, a framework is two pieces of code:
//!
//! - a [`Scheduler`], driven by [`run_scheduler`] (or [`SchedulerDriver::run`]): it is told
//!   when it registers, receives resource offers, launches tasks on them through the
//!   [`SchedulerDriver`], and hears every task's status updates;
//! - optionally an [`Executor`], driven by [`run_executor`]: a program the agent starts for
//!   the framework, which runs the framework's tasks and reports their status through the
//!   [`ExecutorDriver`]. Frameworks that only run shell commands need none: a task with a
//!   `command` is run by the agent's built-in command executor.
//!
//! The drivers own all I/O (QUIC with mutual TLS to the master, a Unix socket to the agent),
//! reconnection, heartbeats and acknowledgements; the traits only see events. Every callback
//! runs on the driver's event loop, one at a time, so a callback that blocks delays the next
//! event: spawn long work and report back through a cloned driver.
//!
//! The wire types are re-exported here so a framework needs no direct dependency on
//! `bramble-proto`.

pub mod blocklist;
mod error;
mod executor;
mod scheduler;
#[cfg(feature = "testing")]
pub mod testing;

pub use blocklist::AgentBlocklist;
pub use error::SdkError;
pub use executor::{
    run_executor, run_executor_with, Executor, ExecutorDriver, DEFAULT_RECOVERY_TIMEOUT,
    RECONNECT_INTERVAL, REFUSALS_TO_GIVE_UP, UPDATE_RESEND_INTERVAL,
};
pub use scheduler::{
    framework_info, run_scheduler, Scheduler, SchedulerConfig, SchedulerDriver,
    DEFAULT_FAILOVER_TIMEOUT_SECS,
};

pub use async_trait::async_trait;
pub use bramble_proto as proto;
pub use bramble_proto::framework_state::{StateEntry, StateWrite};
pub use bramble_proto::identity::{Credentials, Role};
pub use bramble_proto::messages::{Filters, FrameworkInfo, JobProgress, Offer};
pub use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
pub use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskReason, TaskState, TaskStatus,
};

/// Aborts a helper task when its owner goes away, so no reader outlives its connection.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Something a status update can be about: a launched task or just its id.
pub trait StatusSubject {
    fn subject_task_id(&self) -> TaskId;
    fn subject_agent_id(&self) -> Option<AgentId> {
        None
    }
}

impl StatusSubject for TaskInfo {
    fn subject_task_id(&self) -> TaskId {
        self.task_id.clone()
    }
    fn subject_agent_id(&self) -> Option<AgentId> {
        Some(self.agent_id.clone())
    }
}

impl StatusSubject for TaskId {
    fn subject_task_id(&self) -> TaskId {
        self.clone()
    }
}

/// A status update for `task` in `state`, ready for [`ExecutorDriver::send_status_update`],
/// which fills in the framework, executor and agent ids, the uuid and the source.
///
/// ```
/// use bramble_sdk::{status, TaskId, TaskState, TaskStatusExt};
/// let s = status(&TaskId::from("t1"), TaskState::Failed).exit_code(2).message("exited 2");
/// assert_eq!(s.exit_code, Some(2));
/// ```
pub fn status(task: &impl StatusSubject, state: TaskState) -> TaskStatus {
    let mut s = TaskStatus::new(
        FrameworkId(String::new()),
        task.subject_task_id(),
        state,
        UpdateSource::Executor,
    );
    s.agent_id = task.subject_agent_id();
    s
}

/// Builder-style setters for the optional parts of a [`TaskStatus`].
pub trait TaskStatusExt: Sized {
    fn message(self, message: impl Into<String>) -> Self;
    fn reason(self, reason: TaskReason) -> Self;
    fn exit_code(self, code: i32) -> Self;
    fn data(self, data: Vec<u8>) -> Self;
}

impl TaskStatusExt for TaskStatus {
    fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
    fn reason(mut self, reason: TaskReason) -> Self {
        self.reason = Some(reason);
        self
    }
    fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
    fn data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_task_info_carries_its_agent() {
        let task = TaskInfo {
            task_id: "t".into(),
            name: "t".into(),
            agent_id: "a".into(),
            resources: Resources::new(0.1, 32),
            command: Some(CommandInfo::shell("true")),
            executor: None,
            data: vec![],
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        };
        let s = status(&task, TaskState::Running).reason(TaskReason::CommandExited);
        assert_eq!(s.task_id, TaskId::from("t"));
        assert_eq!(s.agent_id, Some(AgentId::from("a")));
        assert_eq!(s.state, TaskState::Running);
        assert_eq!(s.reason, Some(TaskReason::CommandExited));
        assert_eq!(s.uuid, None, "the driver assigns the uuid");
    }
}
