//! The core's vocabulary: the [`Input`]s it is driven by and the [`Effect`]s it answers with.
//!
//! Everything here is plain data. No channel, process handle or file is in sight: the runtime
//! (`runtime.rs`) turns the edges' messages into `Input`s and carries the `Effect`s out, so
//! the core can be driven by a unit test exactly as by a real agent. Inputs that answer an
//! effect (`Launched`, `Adopted`, `UpdateAcknowledged`) are fed back by the runtime before it
//! takes the next input from the edges.

use crate::containerizer::{ContainerError, ExitReport, LaunchSpec, RecoverSpec};
use bramble_proto::messages::{
    AgentToExecutor, AgentToMaster, ExecutorToAgent, MasterToAgent, SandboxList, SandboxRead,
};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId, TaskStatus};
use std::path::PathBuf;

/// Names one container (one executor run) on this agent; also its cgroup and checkpoint name.
pub type ContainerKey = String;

/// Something that happened at an edge, or the outcome of an [`Effect`].
#[derive(Debug)]
pub enum Input {
    /// The master link registered with a master under this id.
    MasterConnected {
        agent_id: AgentId,
    },
    MasterDisconnected,
    FromMaster(MasterToAgent),
    /// Answers [`Effect::Launch`].
    Launched {
        container: ContainerKey,
        result: Result<ContainerInfo, ContainerError>,
    },
    /// Answers [`Effect::Adopt`]: the re-adopted container as the containerizer found it.
    Adopted {
        container: ContainerKey,
        info: ContainerInfo,
    },
    /// A launched or adopted container ended (also after [`Effect::Kill`]).
    ContainerExited {
        container: ContainerKey,
        report: ExitReport,
    },
    /// A custom executor connected (to the socket, or subscribed over the Mesos executor
    /// API) and says who it is. Answered with [`Effect::AnswerExecutor`] for the same
    /// `serial` (the connection's number).
    ExecutorConnected {
        serial: u64,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        auth: ExecutorAuth,
    },
    FromExecutor {
        container: ContainerKey,
        msg: ExecutorToAgent,
    },
    ExecutorDisconnected {
        container: ContainerKey,
        serial: u64,
    },
    /// Answers [`Effect::AcknowledgeUpdate`] when the acknowledged update was the head of its
    /// task's queue; `settled`: no update of that task is left unacknowledged.
    UpdateAcknowledged {
        framework_id: FrameworkId,
        task_id: TaskId,
        settled: bool,
    },
}

/// How a connecting executor proves it is the one the agent launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorAuth {
    /// A native executor: the one-time token the agent put in its environment, and on a
    /// reconnection the tasks it knows (`ExecutorToAgent::Reregister`; `None` from a first
    /// `Register`, or from an executor older than that message).
    Token {
        token: String,
        known_tasks: Option<Vec<TaskId>>,
    },
    /// A Mesos executor's SUBSCRIBE. Mesos executors carry no token, so the edge names the
    /// session of the process that opened the connection (`None`: it could not tell) and the
    /// core checks it is the session of that executor's container (its leader ran `setsid`,
    /// so the session id is the leader's pid). `unacknowledged_tasks`: what the executor says
    /// it was given and has not seen acknowledged; on a re-subscription, a task still STAGING
    /// here and missing from it never reached the executor.
    Mesos {
        session: Option<u32>,
        unacknowledged_tasks: Vec<TaskId>,
    },
}

/// An accepted executor connection: its container, and for a Mesos executor what its
/// SUBSCRIBED event needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub container: ContainerKey,
    pub mesos: Option<crate::checkpoint::MesosExecutor>,
}

/// What a launched (or re-adopted) container is, as far as checkpoints and views need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub pid: u32,
    /// With `pid`, the process's identity across an agent restart.
    pub start_time: u64,
    pub cgroup_dirs: Vec<PathBuf>,
}

/// What the core asks of the world. Messages (`ToMaster`, `ToExecutor`, `AnswerExecutor`) are
/// released only after the burst's [`Writes`] are durable; the rest are carried out at once.
// Effects live for one burst and are moved, not copied: boxing the big messages would buy
// nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Effect {
    /// Start a container; answer with [`Input::Launched`], then watch it until it ends.
    /// `supervised`: a command task, run under the exit-status supervisor so its status
    /// survives the agent (the runtime names the status file).
    Launch {
        container: ContainerKey,
        spec: LaunchSpec,
        supervised: bool,
    },
    /// Take over a container a previous agent process left; answer with [`Input::Adopted`],
    /// then watch it until it ends (dead or alive, its end comes as `ContainerExited`).
    Adopt {
        container: ContainerKey,
        spec: RecoverSpec,
        supervised: bool,
    },
    /// Change a running container's cpu and memory limits (a custom executor's, as its tasks
    /// come and go: `limits.rs`).
    Resize {
        container: ContainerKey,
        limits: crate::containerizer::Limits,
    },
    /// Stop a container: after `after` (a Mesos executor's shutdown grace period, else
    /// zero), SIGTERM, then SIGKILL after the kill grace. Its end comes as usual.
    Kill {
        container: ContainerKey,
        after: std::time::Duration,
    },
    /// The framework acknowledged this update: delete it from the update log; answer with
    /// [`Input::UpdateAcknowledged`] if it was its task's head.
    AcknowledgeUpdate {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: uuid::Uuid,
    },
    /// The framework is gone for good: drop its unacknowledged updates from the log.
    ForgetFrameworkUpdates {
        framework_id: FrameworkId,
    },
    ToMaster(AgentToMaster),
    /// To the executor connection numbered `serial`.
    ToExecutor {
        serial: u64,
        msg: AgentToExecutor,
    },
    /// Accept (with its container) or refuse an executor connection.
    AnswerExecutor {
        serial: u64,
        result: Result<Admission, String>,
    },
    /// This sandbox is finished: remove it when the gc policy says so.
    ScheduleGc {
        sandbox: PathBuf,
    },
    /// The disk is full: sweep finished sandboxes now.
    SweepGcNow,
    /// Answer an operator's sandbox request off the state task. `sandbox`: the task's
    /// sandbox and whether the task has ended, or `None` when this agent has none for it.
    ServeSandbox {
        framework_id: FrameworkId,
        task_id: TaskId,
        sandbox: Option<(PathBuf, bool)>,
        request: SandboxRequest,
    },
}

/// An operator's sandbox request, as the master relayed it.
#[derive(Debug, Clone)]
pub enum SandboxRequest {
    Read { request: u64, read: SandboxRead },
    List { request: u64, list: SandboxList },
}

/// One burst's durable writes ([`super::Agent::take_writes`]): the runtime makes them durable
/// in this order (the task list changes and the updates in one write to the update log),
/// reports what became of them ([`super::Agent::committed`]), and only then releases the
/// burst's messages.
#[derive(Debug, Default)]
pub struct Writes {
    /// A new agent id, to persist.
    pub agent_id: Option<AgentId>,
    /// Run checkpoints to remove (their runs are over).
    pub removed_runs: Vec<ContainerKey>,
    /// Run files to (re)write: runs launched or changed at the run level in this burst, so a
    /// RUNNING sent out always has its run on disk. A run file lists its tasks only until the
    /// update log holds them (see `checkpoint.rs`).
    pub runs: Vec<crate::checkpoint::RunCheckpoint>,
    /// Changes to runs' task lists, in order: recorded in the update log ahead of `updates`,
    /// in the same durable write (so a task is in its run before anything about it is sent).
    /// Their outcome is reported as one.
    pub task_changes: Vec<crate::checkpoint::TaskChange>,
    /// Status updates to record, in order.
    pub updates: Vec<TaskStatus>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.agent_id.is_none()
            && self.removed_runs.is_empty()
            && self.runs.is_empty()
            && self.task_changes.is_empty()
            && self.updates.is_empty()
    }
}

/// What became of one update of [`Writes::updates`] (or of all of [`Writes::task_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Durable and queued for sending.
    Durable,
    /// Refused for good (e.g. an update after its task's terminal one): dropped.
    Refused,
    /// Not written (full disk, I/O error): kept, in order, for the next commit.
    NotWritten,
}
