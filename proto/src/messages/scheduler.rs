//! Scheduler ⇄ master

use super::*;

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
