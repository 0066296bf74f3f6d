//! Tasks: what a framework asks to run, the states a task moves through, and the status
//! updates that report those moves.
//!
//! The transition table lives here, in one function, because the agent (which produces updates)
//! and the master (which mirrors them) must agree on it exactly.

pub use crate::artifact::Artifact;
use crate::ids::{AgentId, ExecutorId, FrameworkId, TaskId};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// What to run: a shell command line (`/bin/sh -c VALUE`) or a program with arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub value: String,
    /// When true, `value` is handed to `/bin/sh -c`; otherwise it is the program path and
    /// `arguments` are its argv (without argv[0]).
    pub shell: bool,
    pub arguments: Vec<String>,
    pub environment: BTreeMap<String, String>,
}

impl CommandInfo {
    pub fn shell(line: impl Into<String>) -> Self {
        Self {
            value: line.into(),
            shell: true,
            arguments: Vec::new(),
            environment: BTreeMap::new(),
        }
    }

    pub fn program(path: impl Into<String>, arguments: Vec<String>) -> Self {
        Self {
            value: path.into(),
            shell: false,
            arguments,
            environment: BTreeMap::new(),
        }
    }
}

/// A custom executor: a long-lived program that connects back to its agent and runs any number
/// of the framework's tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorInfo {
    pub executor_id: ExecutorId,
    pub name: String,
    pub command: CommandInfo,
    /// Resources for the executor process itself, on top of its tasks'.
    pub resources: Resources,
}

/// A task as launched by a framework. Exactly one of `command` (run by the agent's built-in
/// command executor) or `executor` (a custom executor) must be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub task_id: TaskId,
    pub name: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub command: Option<CommandInfo>,
    pub executor: Option<ExecutorInfo>,
    /// Opaque bytes for the executor (e.g. the pi chunk's term range).
    pub data: Vec<u8>,
    /// Set for a task launched through the Mesos v1 scheduler API: what the agent needs to
    /// speak the Mesos executor API to its executor. `None` for native tasks.
    pub mesos: Option<Box<MesosTask>>,
    /// The container image a command task runs in (`busybox`, `docker.io/library/alpine:3`),
    /// through the agent's OCI runtime; `None` runs it on the agent's own filesystem. Only
    /// agents advertising [`CONTAINERS_ATTRIBUTE`] can run it.
    #[serde(default)]
    pub image: Option<String>,
    /// Files the agent fetches into the task's sandbox before the task starts (Mesos's
    /// `CommandInfo.uris`); a fetch that fails fails the task. Appended last: the master's
    /// store and the agent's update log read the encodings written before it (postcard is
    /// positional; so no `skip_serializing_if` either).
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// [`TaskInfo`] as it was encoded before `artifacts` was appended (the master's store format 2,
/// the agent's `TaskAddedBeforeArtifacts` update-log records): postcard is positional, so such
/// an encoding decodes only as this, field for field in that order. Both readers turn it into
/// today's shape with `From` (no artifacts); `TryFrom<TaskInfo>` writes one back, for their
/// tests (a task with artifacts has no older form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfoV2 {
    pub task_id: TaskId,
    pub name: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    pub command: Option<CommandInfo>,
    pub executor: Option<ExecutorInfo>,
    pub data: Vec<u8>,
    pub mesos: Option<Box<MesosTask>>,
    pub image: Option<String>,
}

impl From<TaskInfoV2> for TaskInfo {
    fn from(old: TaskInfoV2) -> TaskInfo {
        TaskInfo {
            task_id: old.task_id,
            name: old.name,
            agent_id: old.agent_id,
            resources: old.resources,
            command: old.command,
            executor: old.executor,
            data: old.data,
            mesos: old.mesos,
            image: old.image,
            artifacts: Vec::new(),
        }
    }
}

impl TryFrom<TaskInfo> for TaskInfoV2 {
    /// The task, given back: it has artifacts, which the older form cannot hold.
    type Error = TaskInfo;

    fn try_from(info: TaskInfo) -> Result<TaskInfoV2, TaskInfo> {
        if !info.artifacts.is_empty() {
            return Err(info);
        }
        Ok(TaskInfoV2 {
            task_id: info.task_id,
            name: info.name,
            agent_id: info.agent_id,
            resources: info.resources,
            command: info.command,
            executor: info.executor,
            data: info.data,
            mesos: info.mesos,
            image: info.image,
        })
    }
}

/// The agent attribute saying it can run tasks in container images; its value names the OCI
/// runtime (`crun`). The master refuses an image task on an agent without it.
pub const CONTAINERS_ATTRIBUTE: &str = "containers";

/// What a task launched through the Mesos v1 scheduler API carries beyond a native task. The
/// master's Mesos edge fills it in; the agent's Mesos executor edge reads it. The JSON strings
/// are relayed to the executor as they are, so fields Bramble has no use for (labels,
/// discovery, health checks) still reach a Mesos executor that reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MesosTask {
    /// The task's Mesos `TaskInfo`, compact JSON, `agent_id` filled in: sent in the executor's
    /// LAUNCH or LAUNCH_GROUP event.
    pub task_json: String,
    /// Tasks of one LAUNCH_GROUP operation share a group number (unique within the framework's
    /// accept); `None` for a plain LAUNCH.
    pub group: Option<u32>,
    /// The custom executor's Mesos `ExecutorInfo`, compact JSON with `framework_id` (for the
    /// executor's SUBSCRIBED event); `None` for a command task.
    pub executor_json: Option<String>,
    /// The framework's Mesos `FrameworkInfo`, compact JSON with its `id` (for SUBSCRIBED).
    pub framework_json: String,
    /// `FrameworkInfo.checkpoint`: the executor is told to reconnect to a restarted agent
    /// (`MESOS_CHECKPOINT=1`) rather than exit.
    pub checkpoint: bool,
    /// `ExecutorInfo.shutdown_grace_period` (Mesos's default is 5 s): how long the executor
    /// has between SHUTDOWN and being killed.
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Finished,
    Failed,
    Killed,
    Lost,
    Error,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
        )
    }

    /// The single place that says which moves are legal. A task only moves forward: STAGING →
    /// STARTING → RUNNING, and from any non-terminal state to any terminal one. Repeating the
    /// current non-terminal state is allowed (a resent update); leaving a terminal state never is.
    pub fn can_move_to(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (from, _) if from.is_terminal() => false,
            (_, to) if to.is_terminal() => true,
            (Staging, Staging | Starting | Running) => true,
            (Starting, Starting | Running) => true,
            (Running, Running) => true,
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
        }
    }

    pub const ALL: [TaskState; 8] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
    ];
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a task is in its state, when the state alone does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskReason {
    CommandExited,
    MemoryLimit,
    KilledByRequest,
    ExecutorTerminated,
    ExecutorRegistrationTimeout,
    AgentRemoved,
    AgentRestarted,
    AgentUnknown,
    FrameworkRemoved,
    InvalidOffer,
    ResourcesNotInOffer,
    TaskTooLarge,
    DuplicateTaskId,
    InvalidTask,
    Reconciliation,
    LaunchFailed,
    /// The agent's host rebooted while the agent was down: the task's processes are gone.
    HostRebooted,
}

/// Who produced a status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateSource {
    Master,
    Agent,
    Executor,
}

/// A status update. Updates produced by agents and executors carry a `uuid` and are resent
/// until the framework acknowledges that uuid. Updates the master produces on its own (launch
/// errors, reconciliation answers, LOST for a removed agent) carry none and need no ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub framework_id: FrameworkId,
    pub agent_id: Option<AgentId>,
    pub executor_id: Option<ExecutorId>,
    pub state: TaskState,
    pub reason: Option<TaskReason>,
    pub message: String,
    pub source: UpdateSource,
    pub uuid: Option<Uuid>,
    /// Seconds since the Unix epoch when the update was produced.
    pub timestamp: f64,
    pub exit_code: Option<i32>,
    /// Opaque result bytes (e.g. a pi chunk's partial sum) carried reliably with the update.
    pub data: Vec<u8>,
}

impl TaskStatus {
    pub fn new(
        framework_id: FrameworkId,
        task_id: TaskId,
        state: TaskState,
        source: UpdateSource,
    ) -> Self {
        Self {
            task_id,
            framework_id,
            agent_id: None,
            executor_id: None,
            state,
            reason: None,
            message: String::new(),
            source,
            uuid: None,
            timestamp: crate::unix_now(),
            exit_code: None,
            data: Vec::new(),
        }
    }

    pub fn with_reason(mut self, reason: TaskReason, message: impl Into<String>) -> Self {
        self.reason = Some(reason);
        self.message = message.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::{self, *};
    use super::{Artifact, CommandInfo, TaskInfo, TaskInfoV2};

    #[test]
    fn a_task_encoded_before_artifacts_reads_back_as_todays_without_any() {
        let today = TaskInfo {
            task_id: "t1".into(),
            name: "sleeper".into(),
            agent_id: "a1".into(),
            resources: crate::Resources::new(0.5, 64),
            command: Some(CommandInfo::shell("sleep 100")),
            executor: None,
            data: vec![7, 7],
            mesos: None,
            image: Some("busybox".into()),
            artifacts: Vec::new(),
        };
        let old = TaskInfoV2::try_from(today.clone()).expect("no artifacts: an older form");
        let bytes = postcard::to_allocvec(&old).expect("encode");
        let read: TaskInfoV2 = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(TaskInfo::from(read), today);
        let mut with = today;
        with.artifacts = vec![Artifact::new("http://h/a.tgz")];
        assert_eq!(TaskInfoV2::try_from(with.clone()), Err(with));
    }

    #[test]
    fn terminal_states_never_move() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn live_states_move_forward_only() {
        let expected_allowed = [
            (Staging, Staging),
            (Staging, Starting),
            (Staging, Running),
            (Starting, Starting),
            (Starting, Running),
            (Running, Running),
        ];
        for from in [Staging, Starting, Running] {
            for to in TaskState::ALL {
                let allowed = to.is_terminal() || expected_allowed.contains(&(from, to));
                assert_eq!(from.can_move_to(to), allowed, "{from} -> {to}");
            }
        }
    }
}
