//! Operator ⇄ master

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorCall {
    GetState,
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// Reads part of a file in a task's sandbox (`stdout`, `stderr`, or another relative path).
    ReadSandbox(SandboxRead),
    /// What the master's front panel shows right now.
    GetPanel,
    /// Lists a directory of a task's sandbox (recursively, up to [`MAX_SANDBOX_ENTRIES`]).
    ListSandbox(SandboxList),
    /// A framework's key/value state, the keys starting with `prefix`.
    ReadFrameworkState {
        framework_id: FrameworkId,
        prefix: String,
    },
    /// Changes a framework's key/value state on its behalf (e.g. while its scheduler is down);
    /// a connected framework is told with `StateChanged`.
    WriteFrameworkState {
        framework_id: FrameworkId,
        write: StateWrite,
    },
    /// Ends a framework now, as its own `Teardown` would: its tasks are killed and it is
    /// removed durably (its id cannot subscribe again). Operators only.
    TeardownFramework {
        framework_id: FrameworkId,
    },
    /// A page of the cluster's state: up to `limit` items after `after` (`None`: the first
    /// page, which also carries the rest of the state); see [`crate::state_page`].
    GetStatePage {
        after: Option<StateCursor>,
        limit: u32,
    },
    /// A piece of an image upload (`bramble images import|load`): the master keeps it in a
    /// temporary file, checks its size and digest, then streams it to the agents.
    ImageUpload(ImageUpload),
    /// A page of tasks in some states, live and recently completed ([`crate::task_list`]);
    /// answered with `Tasks`.
    GetTasks(TasksQuery),
    /// Drains the agent (`drain`: it is offered no more, durably, and frameworks are told so
    /// they move what runs there) or undrains it (offered again). Operators only.
    DrainAgent {
        agent_id: AgentId,
        drain: bool,
    },
    /// The replicated group's masters (`bramble masters`): answered with `Masters`, or an
    /// error from a single master. Appended: an older master does not decode it.
    GetMasters,
    /// Adds master `id` at its replication address `address` (`HOST:PORT`) to the group: the
    /// leader adds it as a learner, waits until it has caught up, then makes it a voter.
    /// Refused while `id` is still a voter (a wiped master rejoins through `RemoveMaster`
    /// first). Answered with `Masters` once it votes. Operators only; appended.
    AddMaster {
        id: u64,
        address: String,
    },
    /// Removes master `id` from the group (a voter or a learner). Refused for the last voter,
    /// and when the masters left voting would not have a majority alive. Answered with
    /// `Masters`. Operators only; appended.
    RemoveMaster {
        id: u64,
    },
}

/// A byte range of a file in a task's sandbox. The agent refuses paths that leave the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRead {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub path: String,
    pub offset: u64,
    pub max_bytes: u32,
}

/// What a sandbox read found: the bytes from `offset`, and the file's size now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxChunk {
    pub offset: u64,
    pub data: Vec<u8>,
    pub size: u64,
    /// The task has ended: the file will not grow any more.
    pub task_ended: bool,
}

/// Largest sandbox read answered in one message (it rides the control stream).
pub const MAX_SANDBOX_READ: u32 = 256 * 1024;

/// A directory of a task's sandbox to list; `path` is relative (`.` for the sandbox itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxList {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub path: String,
}

/// One file or directory in a sandbox listing; `path` is relative to the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxEntry {
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    /// Last modification, seconds since the Unix epoch.
    pub modified: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxListing {
    pub entries: Vec<SandboxEntry>,
    /// More entries exist than [`MAX_SANDBOX_ENTRIES`].
    pub truncated: bool,
    pub task_ended: bool,
}

/// Most entries one sandbox listing returns (it rides the control stream too).
pub const MAX_SANDBOX_ENTRIES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorReply {
    State(ClusterState),
    Done,
    Sandbox(SandboxChunk),
    /// The panel as a PNG, and the panel state it shows as JSON (for offline re-rendering).
    Panel {
        png: Vec<u8>,
        state_json: String,
    },
    Error {
        message: String,
    },
    SandboxListing(SandboxListing),
    FrameworkState(Vec<StateEntry>),
    /// The entry as written (`None` once deleted).
    StateWritten(Option<StateEntry>),
    StatePage(Box<StatePage>),
    /// An upload chunk was written: bytes received so far.
    ImageReceived {
        offset: u64,
    },
    /// The upload reached each target agent: one result per agent.
    ImagePushed(Vec<ImagePushResult>),
    /// The answer to `GetTasks`.
    Tasks(Box<TaskList>),
    /// The replicated group as its leader sees it (`GetMasters`, `AddMaster`,
    /// `RemoveMaster`). Appended.
    Masters(MastersView),
}

/// A replicated group of masters as its leader sees it (`OperatorReply::Masters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MastersView {
    /// The leader's `[ha] id` (the master that answered).
    pub leader: u64,
    /// The leader's Raft term.
    pub term: u64,
    /// The leader's last log index (`None`: an empty log).
    pub last_log: Option<u64>,
    /// Every member, voters and learners, by id.
    pub masters: Vec<MasterMember>,
}

/// One member of a replicated group of masters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterMember {
    pub id: u64,
    /// Its replication address (`[ha] peers`' `HOST:PORT`).
    pub replication: String,
    /// Its QUIC address for agents, frameworks and operators, once it has recorded it.
    pub address: Option<String>,
    /// Its HTTP address, once recorded.
    pub http: Option<String>,
    /// `leader`, `follower` or `learner` (a member that does not vote, e.g. one being added).
    pub role: String,
    /// Votes (a learner does not).
    pub voter: bool,
    /// The last log index the leader knows it holds (the leader: its own last index).
    pub matched: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub cluster_id: String,
    pub agents: Vec<AgentSummary>,
    pub frameworks: Vec<FrameworkSummary>,
    pub tasks: Vec<TaskSummary>,
    /// Progress published by frameworks with a job in flight.
    pub jobs: Vec<JobSummary>,
    /// Offers made and not yet answered, rescinded or expired.
    pub offers_outstanding: u64,
    /// Recently ended tasks the master has already forgotten (bounded, oldest first).
    pub completed_tasks: Vec<TaskSummary>,
    /// The outstanding offers themselves (for Mesos's `/master/state`).
    pub offers: Vec<OfferSummary>,
}

/// An offer made and not yet answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferSummary {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
}

/// A custom executor the master charges an agent for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorSummary {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub framework_id: FrameworkId,
    pub framework_name: String,
    pub progress: JobProgress,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: AgentId,
    pub hostname: String,
    pub address: String,
    pub connected: bool,
    pub total: Resources,
    pub allocated: Resources,
    pub attributes: BTreeMap<String, String>,
    /// When the agent was last heard from, seconds since the Unix epoch.
    pub last_heartbeat: f64,
    /// Custom executors running there.
    pub executors: Vec<ExecutorSummary>,
    /// Why the agent gets no offers for now (its executors keep failing to register), while
    /// it is marked unhealthy.
    #[serde(default)]
    pub unhealthy: Option<String>,
    /// Drained by an operator (`bramble agent drain`): offered nothing until undrained.
    #[serde(default)]
    pub draining: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkSummary {
    pub id: FrameworkId,
    pub name: String,
    pub role: String,
    pub connected: bool,
    pub allocated: Resources,
    /// The framework's tasks (live and recently completed) counted by state.
    pub tasks_by_state: BTreeMap<TaskState, u64>,
    /// Which API it speaks (Bramble's or Mesos's v1 HTTP API).
    pub api: FrameworkApi,
    pub user: String,
    pub principal: Option<String>,
    pub webui_url: Option<String>,
    pub failover_timeout_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub state: TaskState,
    pub message: String,
    pub resources: Resources,
    pub reason: Option<TaskReason>,
    /// When the master launched it, seconds since the Unix epoch.
    pub launched_at: f64,
    /// When it reached RUNNING, by the agent's clock.
    pub started_at: Option<f64>,
    /// When it reached a terminal state, by the clock of whoever reported it.
    pub ended_at: Option<f64>,
}
