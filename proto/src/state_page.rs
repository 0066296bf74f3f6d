//! The cluster's state in pages, for clusters too big for one reply: at 10,000 agents the
//! whole `ClusterState` is several MiB, over a frame's limit, and costs the state task one
//! long pause to build. A page lists up to `limit` items (agents by id, then live tasks by
//! framework and task id, then outstanding offers by id) after a cursor, and every page
//! carries [`ClusterCounts`], the few numbers a summary needs. Pages are taken at different
//! moments, so a listing is not one consistent snapshot; but cursors are keys, not offsets,
//! so an item that stays is listed exactly once.

use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::messages::{AgentSummary, ClusterState, OfferSummary, TaskSummary};
use crate::resources::Resources;
use crate::task::TaskState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most items a page holds, whatever the caller asks (a page must also fit a frame: the
/// master stops one early when its items would not).
pub const MAX_PAGE_ITEMS: u32 = 5000;

/// Where a page of the cluster's state starts. The parts come in this order; a page that
/// finishes one part goes on with the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateCursor {
    /// Agents, by id: from the first (`None`) or after this one.
    Agents(Option<AgentId>),
    /// Live tasks, by framework id then task id.
    Tasks(Option<(FrameworkId, TaskId)>),
    /// Outstanding offers, by id.
    Offers(Option<OfferId>),
}

/// One page of the cluster's state (the answer to `OperatorCall::GetStatePage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatePage {
    pub counts: ClusterCounts,
    /// On the first page only (asked with no cursor): the cluster without its agents, live
    /// tasks and offers (those come in the pages): frameworks, jobs, recently completed tasks.
    pub head: Option<ClusterState>,
    pub agents: Vec<AgentSummary>,
    pub tasks: Vec<TaskSummary>,
    pub offers: Vec<OfferSummary>,
    /// Where the next page starts; `None` once every part has been listed.
    pub next: Option<StateCursor>,
}

/// Most unhealthy agents [`ClusterCounts`] names (the count is always exact).
pub const MAX_UNHEALTHY_LISTED: usize = 20;

/// The cluster in numbers: what `bramble status`, `/api/v1/summary` and a page's header show,
/// cheap to build and small at any size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterCounts {
    pub agents: u64,
    pub agents_connected: u64,
    pub agents_unhealthy: u64,
    /// Up to [`MAX_UNHEALTHY_LISTED`] connected unhealthy agents: id, hostname, why.
    pub unhealthy: Vec<(AgentId, String, String)>,
    pub frameworks: u64,
    pub frameworks_connected: u64,
    /// Live tasks (those the master still tracks) by state.
    pub tasks_by_state: BTreeMap<TaskState, u64>,
    pub offers_outstanding: u64,
    /// What connected agents have, and what of it frameworks hold (ports left out).
    pub total: Resources,
    pub allocated: Resources,
    /// Agents an operator drained (connected or not): how many, and up to
    /// [`MAX_UNHEALTHY_LISTED`] of them by id and hostname.
    #[serde(default)]
    pub agents_draining: u64,
    #[serde(default)]
    pub draining: Vec<(AgentId, String)>,
}

impl ClusterCounts {
    /// Tasks the master tracks, whatever their state.
    pub fn tasks(&self) -> u64 {
        self.tasks_by_state.values().sum()
    }
}

impl StatePage {
    /// Puts this page's items into `state` (which started as the first page's head).
    pub fn append_to(self, state: &mut ClusterState) {
        state.agents.extend(self.agents);
        state.tasks.extend(self.tasks);
        state.offers.extend(self.offers);
    }
}
