//! The master's brain: agents, frameworks, offers and tasks, driven one event at a time.
//!
//! Everything the master knows lives in [`Master`], owned by a single task (see `server/burst.rs`),
//! so there are no locks and every decision sees one consistent picture. Connections feed it
//! [`Input`]s; what it says back goes into an outbox, not onto the wire; what it wants the
//! world to see (change events, a summary for the front panel) goes into its [`feed::Feed`].
//! It does no I/O and knows nothing of the network, the store, the panel or the web.
//!
//! Nothing is acknowledged before it is durable. Every change to a durable fact (a framework,
//! an admitted agent, a task not yet terminal-and-acknowledged) marks that fact dirty; after a
//! burst of inputs the server takes the dirty facts as one [`Batch`](crate::store::Batch) ([`Master::take_writes`]),
//! commits it to the store, and only then releases the outbox ([`Master::flush_outbox`]) into
//! each peer's bounded queue. So a Subscribed, a Registered, a RunTasks or the agent's
//! acknowledgement of an update never leaves before the fact it rests on is on disk, and a
//! burst of a thousand updates costs one fsync. One message rests on no fact of the master's:
//! an agent's status update relayed to its framework is the agent's durable record, which the
//! agent resends until the acknowledgement comes back, and that acknowledgement reaches the
//! agent only after the master committed the task's new state. So relayed updates leave
//! before the commit ([`Master::flush_early`]), taking the master's fsync off the path from a
//! task's end to its framework. A peer whose queue
//! is full is too slow to keep up and is disconnected rather than allowed to make the master
//! buffer without limit or stall everyone else.
//!
//! A restarted master starts from the store ([`Master::recover`]): its agents are known but
//! disconnected until they re-register (within `agent_reregistration_timeout`, else they are
//! removed and their tasks become LOST), its frameworks are disconnected since the start and
//! may fail over within their failover timeout.
//!
//! Policy (who gets offered what) is the allocator's job; these modules do the bookkeeping
//! around it, one concern each, every one an `impl Master` block over the fields below:
//! - `peers.rs`: connections, the outbox, who may connect as what;
//! - `durable.rs`: recovery from the store and the batch of writes per burst;
//! - `agents.rs`: registration, reconciliation, heartbeats, removal;
//! - `health.rs`: agents whose executors keep failing to register get no offers for a while;
//! - `drain.rs`: agents an operator drained get no offers, durably, and frameworks are told;
//! - `frameworks.rs`: subscription, failover, scheduler calls, removal;
//! - `offers.rs`: allocation passes, declines and refuse filters, rescinds;
//! - `launch.rs`: accepting offers, validating tasks, sending them to agents;
//! - `tasks.rs`: status updates, acknowledgements, kills, reconciliation;
//! - `operator.rs`: operator calls, sandbox reads relayed to agents;
//! - `images.rs`: image pieces the edge streams to agents, answered per piece;
//! - `framework_state.rs`: each framework's own key/value state, written by it or an operator;
//! - `services.rs`: the service framework's status records, shown and advertised;
//! - `snapshot.rs`: the operator's picture of the cluster and the feed's summary;
//! - `feed.rs`: the events and summary the edges subscribe to.

mod agent_requests;
mod agents;
pub mod counters;
mod drain;
mod durable;
mod election;
pub mod feed;
mod framework_state;
mod frameworks;
mod health;
mod images;
mod launch;
mod offers;
mod operator;
mod paging;
mod peers;
pub mod services;
mod snapshot;
mod task_list;
mod tasks;
#[cfg(test)]
mod testing;

use crate::allocator::Allocator;
use agent_requests::AgentRequests;
use agents::AgentEntry;
use bramble_proto::bounded::BoundedMap;
use bramble_proto::framework_state::FrameworkState;
use bramble_proto::messages::{
    AgentToMaster, ImageAck, ImagePiece, JobProgress, MasterEvent, MasterToAgent, OperatorCall,
    OperatorReply, SchedulerCall, TaskSummary,
};
use bramble_proto::queue::QueueTx;
use bramble_proto::transport::PeerIdentity;
use bramble_proto::{AgentId, FrameworkId, OfferId, TaskId};
use feed::Feed;
use frameworks::FrameworkEntry;
use offers::OfferEntry;
pub use peers::PeerHandle;
use peers::{Conn, Outgoing};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub type ConnId = u64;

/// Timing knobs the state machine needs (a subset of the master's config).
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub heartbeat_interval: Duration,
    pub agent_timeout: Duration,
    pub offer_timeout: Duration,
    pub allocation_interval: Duration,
    /// How long an agent known from the store has to re-register after a master restart.
    pub agent_reregistration_timeout: Duration,
}

/// Where to send a peer's messages.
#[derive(Debug, Clone)]
pub enum PeerTx {
    Agent(QueueTx<MasterToAgent>),
    Scheduler(QueueTx<MasterEvent>),
}

/// What connections tell the master.
#[derive(Debug)]
pub enum Input {
    /// A peer passed the TLS handshake and its hello was accepted.
    Connected {
        conn: ConnId,
        identity: PeerIdentity,
        tx: PeerTx,
        handle: Option<PeerHandle>,
    },
    FromAgent {
        conn: ConnId,
        msg: AgentToMaster,
    },
    FromScheduler {
        conn: ConnId,
        call: SchedulerCall,
    },
    Operator {
        call: OperatorCall,
        reply: oneshot::Sender<OperatorReply>,
    },
    Disconnected {
        conn: ConnId,
        reason: String,
        /// The peer said goodbye (closed with code 0), e.g. an agent shutting down.
        graceful: bool,
    },
    /// A piece of an image for an agent (from the edge's upload, `crate::images`); the
    /// agent's answer, or why there is none, goes to `reply`.
    ImageToAgent {
        agent: AgentId,
        piece: ImagePiece,
        timeout: Duration,
        reply: oneshot::Sender<Result<ImageAck, String>>,
    },
}

/// Everything the master knows, owned by the state task and changed only through the
/// `impl Master` blocks of this module's children.
pub struct Master {
    cluster_id: String,
    timeouts: Timeouts,
    conns: HashMap<ConnId, Conn>,
    agents: HashMap<AgentId, AgentEntry>,
    /// Agent-caused failures per agent; an unhealthy agent gets no offers (`health.rs`).
    health: HashMap<AgentId, health::AgentHealth>,
    /// Agents an operator drained (`drain.rs`): durable, and kept for an agent the master
    /// removed meanwhile (a drained Pi unplugged for maintenance stays drained when back).
    draining: BTreeSet<AgentId>,
    frameworks: HashMap<FrameworkId, FrameworkEntry>,
    /// Scheduler instances standing by for a framework's active one (`election.rs`).
    standbys: HashMap<FrameworkId, election::Standbys>,
    offers: HashMap<OfferId, OfferEntry>,
    allocator: Allocator,
    allocation_due: bool,
    next_allocation: Instant,
    /// Where recent tasks ran, kept after they are forgotten so their sandboxes stay readable.
    /// Frameworks removed (torn down, or not back within their failover timeout): a Mesos
    /// framework re-subscribing under one of these ids is told "Framework has been removed".
    /// In memory only, like Mesos's completed frameworks.
    removed_frameworks: BoundedMap<FrameworkId, ()>,
    /// Sandbox reads and listings relayed to agents (`operator.rs`).
    sandbox_reads: AgentRequests<OperatorReply>,
    /// Image pieces sent to agents and not yet answered (`images.rs`).
    image_requests: AgentRequests<Result<ImageAck, String>>,
    next_request: u64,
    /// The latest progress each framework published.
    progress: HashMap<FrameworkId, JobProgress>,
    /// Change events and the summary, for whoever watches (never blocks; see `feed.rs`).
    feed: Feed,
    /// When the summary may next be rebuilt for its watchers.
    next_summary: Instant,
    /// Recently forgotten tasks, for operators (oldest first, at most `RECENT_COMPLETED`).
    completed: VecDeque<TaskSummary>,
    /// How many entries have left the front of `completed`: the sequence number of its first
    /// (a completed task's cursor in `task_list.rs`).
    completed_dropped: u64,
    /// What this burst of inputs says, released by `flush_outbox` after the commit.
    outbox: Vec<Outgoing>,
    /// Agents' status updates relayed to their frameworks, released by `flush_early` before
    /// the commit (see `peers.rs`).
    early: Vec<Outgoing>,
    /// Connections with a message in `outbox`: what follows for them waits too, in order.
    held: HashSet<ConnId>,
    /// Durable facts changed since the last `take_writes`.
    dirty_frameworks: HashSet<FrameworkId>,
    dirty_agents: HashSet<AgentId>,
    dirty_draining: HashSet<AgentId>,
    dirty_tasks: HashSet<(FrameworkId, TaskId)>,
    /// Tasks whose kill was asked for since the last `take_writes`.
    dirty_kills: HashSet<(FrameworkId, TaskId)>,
    /// Tasks whose pending kill the store holds (`durable.rs` deletes it once they end).
    stored_kills: HashSet<(FrameworkId, TaskId)>,
    /// The highest fencing epoch this master (or its store) ever gave a framework; the next
    /// active scheduler of any framework gets one more (`election.rs`).
    fence_high: u64,
    fence_high_dirty: bool,
    /// Each framework's own key/value state (only frameworks that wrote some have an entry).
    framework_state: HashMap<FrameworkId, FrameworkState>,
    dirty_state: HashSet<(FrameworkId, String)>,
    /// The service framework's status records, parsed (`services.rs`), by framework and service.
    service_records: HashMap<(FrameworkId, String), bramble_proto::service_status::ServiceStatus>,
    /// Frameworks that took the service framework's name without its credentials, already
    /// logged (their records are ignored; one warning each, not one per write).
    service_impostors: HashSet<FrameworkId>,
    /// When the services' view may next be rebuilt.
    next_services: Instant,
    /// When terminal updates the master holds are next resent to connected frameworks.
    next_resend: Instant,
}

/// How many forgotten tasks the operator views keep.
const RECENT_COMPLETED: usize = 1000;

/// How many removed frameworks' ids are remembered (to refuse their re-subscription).
const RECENT_REMOVED_FRAMEWORKS: usize = 1000;

/// How often terminal updates the master holds (LOST it made itself) are resent until
/// acknowledged; they are also resent at once whenever their framework subscribes.
const MASTER_RESEND_INTERVAL: Duration = Duration::from_secs(10);

impl Master {
    pub fn new(cluster_id: String, timeouts: Timeouts, now: Instant) -> Self {
        Self {
            cluster_id,
            timeouts,
            conns: HashMap::new(),
            agents: HashMap::new(),
            health: HashMap::new(),
            draining: BTreeSet::new(),
            frameworks: HashMap::new(),
            standbys: HashMap::new(),
            offers: HashMap::new(),
            allocator: Allocator::new(Default::default()),
            allocation_due: false,
            next_allocation: now,
            removed_frameworks: BoundedMap::new(RECENT_REMOVED_FRAMEWORKS),
            sandbox_reads: AgentRequests::new("sandbox read"),
            image_requests: AgentRequests::new("image piece"),
            next_request: 0,
            progress: HashMap::new(),
            feed: Feed::new(),
            next_summary: now,
            completed: VecDeque::new(),
            completed_dropped: 0,
            outbox: Vec::new(),
            early: Vec::new(),
            held: HashSet::new(),
            dirty_frameworks: HashSet::new(),
            dirty_agents: HashSet::new(),
            dirty_draining: HashSet::new(),
            dirty_tasks: HashSet::new(),
            dirty_kills: HashSet::new(),
            stored_kills: HashSet::new(),
            fence_high: 0,
            fence_high_dirty: false,
            framework_state: HashMap::new(),
            dirty_state: HashSet::new(),
            service_records: HashMap::new(),
            service_impostors: HashSet::new(),
            next_services: now,
            next_resend: now + MASTER_RESEND_INTERVAL,
        }
    }

    /// Where this master publishes change events, its summary and update latencies.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// One input, as it arrives; what it makes the master say waits in the outbox.
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Connected {
                conn,
                identity,
                tx,
                handle,
            } => {
                self.conns.insert(
                    conn,
                    Conn {
                        identity,
                        tx,
                        handle,
                        bound: None,
                    },
                );
            }
            Input::FromAgent { conn, msg } => self.agent_message(conn, msg, now),
            Input::FromScheduler { conn, call } => {
                match self.node_scheduler_may_call(conn, &call) {
                    Ok(()) => self.scheduler_call(conn, call, now),
                    Err(why) => self.close_conn(conn, &why),
                }
            }
            Input::Operator { call, reply } => self.operator_call(call, reply, now),
            Input::Disconnected {
                conn,
                reason,
                graceful,
            } => self.disconnected(conn, &reason, graceful, now),
            Input::ImageToAgent {
                agent,
                piece,
                timeout,
                reply,
            } => self.image_to_agent(agent, piece, timeout, reply, now),
        }
    }

    /// After a burst of inputs: one allocation pass if anything freed or asked for resources
    /// (rather than one per input).
    pub fn end_burst(&mut self, now: Instant) {
        if self.allocation_due {
            self.allocate(now);
        }
        self.publish_summary(now);
        self.publish_services(now);
    }

    /// Periodic work: timeouts, failover expiry, resends, the allocation pass.
    pub fn tick(&mut self, now: Instant) {
        self.expire_agents(now);
        self.expire_unhealthy(now);
        self.expire_frameworks(now);
        self.expire_offers(now);
        self.expire_sandbox_reads(now);
        self.expire_image_requests(now);
        if now >= self.next_resend {
            self.next_resend = now + MASTER_RESEND_INTERVAL;
            let connected: Vec<FrameworkId> = self
                .frameworks
                .iter()
                .filter(|(_, f)| f.conn.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            for fw in connected {
                self.resend_master_updates(&fw);
            }
        }
        if now >= self.next_allocation {
            self.allocation_due = true;
        }
        self.end_burst(now);
    }
}
