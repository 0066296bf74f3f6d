//! Every message that crosses a Bramble connection, grouped by who sends it to whom.
//!
//! A connection starts with [`Hello`] from the dialing side and [`HelloReply`] from the master;
//! only after a `Welcome` does the peer count as admitted. After that each side speaks the
//! enum for its direction on the same control stream. Keeping one enum per direction means an
//! agent sending a scheduler's call is a decode error, which closes that peer.

use crate::framework_state::{StateEntry, StateWrite};
use crate::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use crate::resources::Resources;
pub use crate::state_page::{ClusterCounts, StateCursor, StatePage};
use crate::task::{ExecutorInfo, TaskInfo, TaskReason, TaskState, TaskStatus};
pub use crate::task_list::{TaskCursor, TaskList, TasksQuery};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What the dialing peer intends to be on this connection. The master checks it against the
/// role in the peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Agent,
    Scheduler,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub software_version: String,
    pub kind: PeerKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        protocol_version: u32,
        software_version: String,
        cluster_id: String,
    },
    Refused {
        reason: String,
    },
    /// This master is a follower (or a candidate) of a replicated group: it serves no one.
    /// `leader` is where the elected leader listens, if this master knows one; a dialer
    /// reconnects there (or, with no leader known yet, retries its master list after a pause).
    /// Appended: older peers never see it from a single master.
    NotLeader {
        leader: Option<LeaderHint>,
    },
    /// The master is admitting as many peers as it can at once: dial again in
    /// `retry_after_ms` (an appointment the master spreads, so returning peers arrive at the
    /// pace it admits them; add a little jitter). Nothing is wrong with the peer. Appended:
    /// older peers read it as an unknown reply and retry with their backoff.
    Busy {
        retry_after_ms: u32,
    },
}

/// Where a replicated group's leader serves, as a follower knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's `[ha] id`.
    pub id: u64,
    /// The leader's QUIC address (`HOST:PORT`) for agents, schedulers and operators.
    pub address: String,
    /// The leader's HTTP address (`HOST:PORT`), if it serves HTTP.
    pub http: Option<String>,
    /// The Raft term the leader was elected in.
    pub term: u64,
}

// ---------------------------------------------------------------------------------------------
// Agent ⇄ master

/// A task an agent reports as alive when it (re-)registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningTask {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToMaster {
    /// First message after the hello. `agent_id` is set when the agent has registered before
    /// and wants its old identity (and its running tasks) back.
    Register {
        agent_id: Option<AgentId>,
        hostname: String,
        resources: Resources,
        attributes: BTreeMap<String, String>,
        tasks: Vec<RunningTask>,
    },
    Heartbeat,
    /// A checkpointed update; the agent resends it until the master relays an ack.
    StatusUpdate(TaskStatus),
    /// A custom executor ended; the resources charged for it are free again.
    ExecutorExited {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        /// The executor process's wait status (exit code, or 128 + signal), when known.
        status: Option<i32>,
    },
    /// Answer to `MasterToAgent::ReadSandbox`.
    SandboxData {
        request: u64,
        result: Result<SandboxChunk, String>,
    },
    /// Opaque bytes from an executor to its scheduler (best effort).
    ExecutorMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// Answer to `MasterToAgent::ListSandbox`.
    SandboxListing {
        request: u64,
        result: Result<SandboxListing, String>,
    },
    /// Answer to `MasterToAgent::Image`: the piece was taken (or why not).
    ImageReply {
        request: u64,
        result: Result<ImageAck, String>,
    },
    /// Read a file of the master's artifacts directory from `offset` (an artifact
    /// `master:NAME` a task fetches, `bramble_proto::artifact`); answered with
    /// `MasterToAgent::ArtifactData`, the next request only after the answer.
    ArtifactRead {
        request: u64,
        name: String,
        offset: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterToAgent {
    Registered {
        agent_id: AgentId,
        heartbeat_interval_ms: u64,
    },
    HeartbeatAck,
    RunTasks {
        framework_id: FrameworkId,
        framework_name: String,
        tasks: Vec<TaskInfo>,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
    },
    /// The framework acknowledged this update: the agent may forget it.
    Acknowledge {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: Uuid,
    },
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// Stop one executor (a scheduler's SHUTDOWN call): it is told to shut down and killed
    /// after its grace period.
    ShutdownExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// The framework is gone: kill its tasks and executors.
    ShutdownFramework {
        framework_id: FrameworkId,
    },
    /// Read part of a sandbox file for an operator; answered with `SandboxData`.
    ReadSandbox {
        request: u64,
        read: SandboxRead,
    },
    /// List a directory of a task's sandbox for an operator; answered with `SandboxListing`.
    ListSandbox {
        request: u64,
        list: SandboxList,
    },
    /// A piece of an image the master streams to the agent (`bramble images import|load`);
    /// answered with `ImageReply`, the next chunk only after the answer (flow control).
    Image {
        request: u64,
        piece: ImagePiece,
    },
    /// Answer to `AgentToMaster::ArtifactRead`.
    ArtifactData {
        request: u64,
        result: Result<ArtifactChunk, String>,
    },
}

/// A piece of a file of the master's artifacts directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactChunk {
    /// The whole file's size when this piece was read (a file that changes size while it is
    /// fetched fails the fetch).
    pub size: u64,
    /// At most [`crate::image_transfer::CHUNK_BYTES`] from the requested offset; empty at the
    /// end of the file.
    pub data: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Scheduler ⇄ master

/// Mesos-style refuse filter: do not re-offer these resources for this long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    pub refuse_seconds: f64,
}

impl Default for Filters {
    /// Mesos's default: five seconds.
    fn default() -> Self {
        Self {
            refuse_seconds: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// Set when resubscribing after a disconnect (failover).
    pub framework_id: Option<FrameworkId>,
    pub name: String,
    pub role: String,
    pub failover_timeout_secs: f64,
    /// Who registered the framework, when the edge authenticated one (the Mesos API's HTTP
    /// Basic principal). A framework bound to a principal can only be failed over by it.
    pub principal: Option<String>,
    /// The user the framework asked its tasks to run as (Mesos's `FrameworkInfo.user`); shown,
    /// not obeyed: tasks run as the agent's task user.
    pub user: String,
    /// The framework's own web UI, linked from the master's (Mesos's `webui_url`).
    pub webui_url: Option<String>,
    /// Which API the framework speaks.
    pub api: FrameworkApi,
}

/// The API a framework speaks to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FrameworkApi {
    /// Bramble's own: QUIC with mutual TLS, through `bramble-sdk`.
    #[default]
    Bramble,
    /// The Mesos v1 scheduler HTTP API (`POST /api/v1/scheduler`).
    MesosV1,
}

impl FrameworkApi {
    pub fn name(self) -> &'static str {
        match self {
            FrameworkApi::Bramble => "bramble",
            FrameworkApi::MesosV1 => "mesos-v1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    /// Executors of this framework already running on the agent.
    pub executor_ids: Vec<ExecutorId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SchedulerCall {
    Subscribe(FrameworkInfo),
    /// Launch `tasks` on the resources of `offer_ids` (all on one agent). Unused resources are
    /// declined with `filters`.
    Accept {
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        filters: Filters,
    },
    Revive,
    Suppress,
    Kill {
        task_id: TaskId,
    },
    /// Stop one of the framework's executors on one agent (Mesos's SHUTDOWN call).
    ShutdownExecutor {
        agent_id: AgentId,
        executor_id: ExecutorId,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: Uuid,
    },
    /// Explicit reconciliation for the listed tasks, or implicit (all of the framework's
    /// tasks) when the list is empty.
    Reconcile {
        task_ids: Vec<TaskId>,
    },
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// The framework is done: kill its tasks and forget it.
    Teardown,
    Heartbeat,
    /// The framework's own account of how far its job has got, for the CLI, web UI and the
    /// front-panel display. The latest one replaces the previous.
    PublishProgress(JobProgress),
    /// The framework's own web UI moved (or went away: `None`), e.g. once a service knows the
    /// port it was given: replaces `FrameworkInfo::webui_url` (the part of Mesos's
    /// UPDATE_FRAMEWORK Bramble takes).
    SetWebuiUrl(Option<String>),
    /// Changes the framework's own key/value state (`framework_state.rs`); the master answers
    /// with `StateChanged`, or a non-fatal `Error` saying why it refused.
    WriteState(StateWrite),
    /// Subscribe as one of several instances of a framework (same principal, same name; or
    /// the `framework_id` given): the master makes one the active scheduler (`Subscribed`)
    /// and answers the others `Standby` until the active one goes away.
    Campaign(FrameworkInfo),
    /// `WriteState` fenced: refused (`StateRefusal::Fenced`) unless `fence` is the
    /// framework's current epoch, the fencing token its active scheduler got in `Subscribed`.
    WriteStateFenced {
        write: StateWrite,
        fence: u64,
    },
}

/// How far a framework's job has got, in the framework's own units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// What is being computed, e.g. "pi".
    pub job: String,
    pub done: u64,
    pub total: u64,
    /// Unit of `done`/`total`, e.g. "terms".
    pub unit: String,
    pub rate_per_s: f64,
    pub tasks_done: u64,
    pub tasks_total: u64,
    /// The current result, when the job has a numeric one (the pi estimate).
    pub estimate: Option<f64>,
    /// Correct decimal digits of `estimate`, when known.
    pub correct_digits: Option<u32>,
    pub elapsed_s: f64,
    pub finished: bool,
    /// What the job is waiting for when it is not finished, in words ("an offer for 1
    /// chunk", "chunk 31 attempt 3 on agent pi-2"), so a stalled progress bar can say it.
    #[serde(default)]
    pub waiting_for: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterEvent {
    Subscribed {
        framework_id: FrameworkId,
        heartbeat_interval_ms: u64,
        /// The fencing token: the framework's epoch, raised each time an instance becomes its
        /// active scheduler (subscription, failover, a standby's takeover) and durable in the
        /// master's store, so a deposed instance's token is always older. Appended last: an
        /// older SDK decoding this frame stops before it (postcard leaves trailing bytes).
        fencing_token: u64,
    },
    Offers(Vec<Offer>),
    Rescind {
        offer_id: OfferId,
    },
    Update(TaskStatus),
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    AgentLost {
        agent_id: AgentId,
    },
    /// One of the framework's custom executors ended (Mesos's FAILURE with an executor id);
    /// `status` is its wait status when the agent knows it.
    ExecutorLost {
        agent_id: AgentId,
        executor_id: ExecutorId,
        status: Option<i32>,
    },
    /// A call was refused; the connection stays up unless the error is fatal.
    Error {
        message: String,
        fatal: bool,
    },
    HeartbeatAck,
    /// The framework's whole key/value state, sent right after `Subscribed`.
    State {
        entries: Vec<StateEntry>,
    },
    /// One key of the framework's state changed (by the framework or an operator); `None`:
    /// it was deleted.
    StateChanged {
        key: String,
        entry: Option<StateEntry>,
    },
    /// The answer to a `Campaign` while another instance is the framework's active
    /// scheduler (at `leader`, its address): wait; `Subscribed` follows if this one takes
    /// over.
    Standby {
        framework_id: FrameworkId,
        leader: String,
    },
    /// An operator drained the agent (`bramble agent drain`; `draining`: nothing more is
    /// offered from it, and what runs there should move) or undrained it. Sent for every
    /// draining agent after `Subscribed`, then on each change.
    AgentDraining {
        agent_id: AgentId,
        draining: bool,
    },
}

// ---------------------------------------------------------------------------------------------
// Operator ⇄ master

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

// ---------------------------------------------------------------------------------------------
// Executor ⇄ agent (Unix socket in the executor's run directory)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExecutorToAgent {
    /// First message: the ids and the one-time token come from the environment the agent
    /// gave the executor (`BRAMBLE_FRAMEWORK_ID`, `BRAMBLE_EXECUTOR_ID`,
    /// `BRAMBLE_EXECUTOR_TOKEN`); the token stops one task's process from posing as another
    /// executor on the agent's socket.
    Register {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        token: String,
    },
    /// The agent checkpoints it, answers `UpdateAck` with the update's uuid (set by the
    /// executor), and relays it to the framework.
    Update(TaskStatus),
    Message(Vec<u8>),
    /// First message on a *reconnection* (the agent restarted): `Register`'s fields plus the
    /// tasks this executor was handed and has not seen the end of acknowledged. A task the
    /// agent recovered as handed over (STAGING, no update recorded) that is not listed never
    /// reached the executor (its LaunchTask died with the agent): it is reported LOST rather
    /// than left STAGING forever, as Mesos does on executor re-registration. Last in the enum
    /// so that an older executor's `Register` still decodes.
    Reregister {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        token: String,
        known_tasks: Vec<TaskId>,
    },
}

// `LaunchTask` carries a whole `TaskInfo`; messages are encoded as soon as they are made and
// never held in bulk, so boxing it would only cost an allocation per launch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToExecutor {
    Registered {
        agent_id: AgentId,
        framework_id: FrameworkId,
        executor: ExecutorInfo,
    },
    LaunchTask(TaskInfo),
    KillTask(TaskId),
    UpdateAck(Uuid),
    Message(Vec<u8>),
    Shutdown,
}

// ---------------------------------------------------------------------------------------------
// Images streamed operator → master → agents (`bramble images import|load`)

/// What an uploaded image file is and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub format: ImageFormat,
    /// The image's name: required for a root filesystem, else the archive's own tag.
    pub name: Option<String>,
    /// A root filesystem's architecture (OCI name); an archive says its own.
    pub architecture: Option<String>,
    /// The file's exact size in bytes.
    pub size: u64,
    /// The file's SHA-256, lowercase hex: checked where it arrives.
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    /// A plain root filesystem tarball (`podman import`).
    Rootfs,
    /// An OCI or docker-archive tarball (`docker save`).
    Archive,
}

/// An operator's upload, one call per piece; every piece is answered before the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageUpload {
    /// Starts an upload on this connection (one at a time); `agent`: only to that agent.
    Begin {
        spec: ImageSpec,
        agent: Option<AgentId>,
    },
    Chunk {
        offset: u64,
        data: Vec<u8>,
    },
    /// All bytes sent: check them, stream them to the agents, answer `ImagePushed`.
    End,
}

/// A piece of an image the master streams to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImagePiece {
    Begin {
        transfer: u64,
        spec: ImageSpec,
    },
    Chunk {
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// All bytes sent: check the digest and install the image.
    End {
        transfer: u64,
    },
    /// The master gave up on this transfer: drop what arrived.
    Abort {
        transfer: u64,
    },
}

/// What an agent answers to an image piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ImageAck {
    /// Bytes received so far.
    Received { offset: u64 },
    /// The image is installed.
    Installed(ImageSummary),
}

/// An image in an agent's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub name: String,
    pub architecture: String,
    pub size_bytes: u64,
}

/// How an upload fared on one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePushResult {
    pub agent_id: AgentId,
    pub hostname: String,
    pub result: Result<ImageSummary, String>,
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    /// `MasterEvent` as SDKs before fencing tokens knew its first variant.
    #[derive(Debug, Deserialize)]
    enum OldMasterEvent {
        Subscribed {
            framework_id: FrameworkId,
            heartbeat_interval_ms: u64,
        },
    }

    #[test]
    fn an_older_sdk_still_reads_subscribed_with_the_fencing_token_appended() {
        let event = MasterEvent::Subscribed {
            framework_id: FrameworkId("fw-1".into()),
            heartbeat_interval_ms: 1500,
            fencing_token: 42,
        };
        let bytes = postcard::to_allocvec(&event).expect("encode");
        let old: OldMasterEvent = crate::codec::decode_payload(&bytes).expect("old decode");
        let OldMasterEvent::Subscribed {
            framework_id,
            heartbeat_interval_ms,
        } = old;
        assert_eq!(framework_id.as_str(), "fw-1");
        assert_eq!(heartbeat_interval_ms, 1500);
        let new: MasterEvent = crate::codec::decode_payload(&bytes).expect("new decode");
        assert_eq!(new, event);
    }
}
