//! The store's tables and records: what a burst writes ([`Batch`]) and what a restarted
//! master reads back ([`Recovered`]), postcard-encoded wire types.

use bramble_proto::framework_state::StateEntry;
use bramble_proto::messages::FrameworkInfo;
use bramble_proto::task::TaskInfo;
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskReason, TaskState, TaskStatus,
};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
pub(super) const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
pub(super) const TASKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tasks");
/// (framework id, key) → entry. Added after format 1 without a format bump: a store written
/// before it simply lacks the table, read as empty and created by the first write.
pub(super) const FRAMEWORK_STATE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("framework_state");
/// Agent id → nothing: the agents an operator drained. Added like `framework_state`, without
/// a format bump (a store without it has no drained agent). Not a field of the agent's
/// record: postcard is positional, so older records would not decode, and a drain outlives
/// the record (an agent unplugged for maintenance is removed, and still drained when back).
pub(super) const DRAINING: TableDefinition<&str, ()> = TableDefinition::new("draining");
/// (framework id, task id) → nothing: tasks whose kill was asked for and that have not ended,
/// so a restarted master (or the next leader) sends the kill again when the agent
/// re-registers still running them. Added like `draining`, without a format bump (a store
/// without it has no kill pending); not a field of the task's record, which would not decode
/// in older stores and would rewrite a whole (possibly large) record for a kill.
pub(super) const KILLS: TableDefinition<(&str, &str), ()> = TableDefinition::new("kills");

pub(super) const META_CLUSTER_ID: &str = "cluster_id";
pub(super) const META_FORMAT: &str = "format";

/// A framework the master has admitted (its info carries its id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
}

/// An agent the master has admitted, as it last registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub address: SocketAddr,
    pub total: Resources,
    pub attributes: BTreeMap<String, String>,
    /// Custom executors launched there, with the resources charged for them.
    pub executors: Vec<(FrameworkId, ExecutorId, Resources)>,
}

/// A task that is not yet terminal-and-acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub framework_id: FrameworkId,
    pub info: TaskInfo,
    pub state: TaskState,
    pub message: String,
    pub reason: Option<TaskReason>,
    pub launched_at: f64,
    pub started_at: Option<f64>,
    pub ended_at: Option<f64>,
    /// The terminal update forwarded to the framework, until it is acknowledged.
    pub terminal: Option<TaskStatus>,
    /// Whether the master (not the agent) resends `terminal` until it is acknowledged: LOST
    /// updates the master made itself, and those of an agent that was removed.
    pub resend_by_master: bool,
}

/// What changed during one burst of inputs: `Some` puts a record, `None` deletes it.
#[derive(Debug, Default)]
pub struct Batch {
    pub frameworks: Vec<(FrameworkId, Option<FrameworkRecord>)>,
    pub agents: Vec<(AgentId, Option<AgentRecord>)>,
    pub tasks: Vec<((FrameworkId, TaskId), Option<TaskRecord>)>,
    pub framework_state: Vec<((FrameworkId, String), Option<StateEntry>)>,
    /// Agents drained (`true`) or undrained.
    pub draining: Vec<(AgentId, bool)>,
    /// Frameworks' fencing epochs (`None`: the framework is gone).
    pub fences: Vec<(FrameworkId, Option<u64>)>,
    /// The highest fencing epoch given, when it rose.
    pub fence_high: Option<u64>,
    /// Kills asked for (`true`), or no longer pending (the task ended or is gone).
    pub kills: Vec<((FrameworkId, TaskId), bool)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.frameworks.len()
            + self.agents.len()
            + self.tasks.len()
            + self.framework_state.len()
            + self.draining.len()
            + self.fences.len()
            + usize::from(self.fence_high.is_some())
            + self.kills.len()
    }
}

/// Everything the store held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    pub frameworks: Vec<FrameworkRecord>,
    pub agents: Vec<AgentRecord>,
    pub tasks: Vec<TaskRecord>,
    pub framework_state: Vec<(FrameworkId, StateEntry)>,
    pub draining: Vec<AgentId>,
    /// Frameworks' fencing epochs.
    pub fences: Vec<(FrameworkId, u64)>,
    /// The highest fencing epoch ever given (0 in a store from before fencing).
    pub fence_high: u64,
    /// Tasks whose kill was asked for and not yet seen to end.
    pub kills: Vec<(FrameworkId, TaskId)>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.frameworks.is_empty()
            && self.agents.is_empty()
            && self.tasks.is_empty()
            && self.framework_state.is_empty()
            && self.draining.is_empty()
            && self.fences.is_empty()
            && self.fence_high == 0
            && self.kills.is_empty()
    }
}

pub(super) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail: postcard errors only on unsupported serde
    // features (none of our types use them) or a full fixed-size buffer (not used here).
    postcard::to_allocvec(record).unwrap_or_default()
}
