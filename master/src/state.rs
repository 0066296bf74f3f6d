//! The master's brain: agents, frameworks, offers and tasks, driven one event at a time.
//!
//! Everything the master knows lives in [`Master`], owned by a single task (see `server.rs`),
//! so there are no locks and every decision sees one consistent picture. Connections feed it
//! [`Input`]s; what it says back goes into an outbox, not onto the wire.
//!
//! Nothing is acknowledged before it is durable. Every change to a durable fact (a framework,
//! an admitted agent, a task not yet terminal-and-acknowledged) marks that fact dirty; after a
//! burst of inputs the server takes the dirty facts as one [`Batch`] ([`Master::take_writes`]),
//! commits it to the store, and only then releases the outbox ([`Master::flush_outbox`]) into
//! each peer's bounded queue. So a Subscribed, a Registered, a RunTasks, a forwarded status
//! update or the agent's acknowledgement of a forgotten task never leaves before the fact it
//! rests on is on disk, and a burst of a thousand updates costs one fsync. A peer whose queue
//! is full is too slow to keep up and is disconnected rather than allowed to make the master
//! buffer without limit or stall everyone else.
//!
//! A restarted master starts from the store ([`Master::recover`]): its agents are known but
//! disconnected until they re-register (within `agent_reregistration_timeout`, else they are
//! removed and their tasks become LOST), its frameworks are disconnected since the start and
//! may fail over within their failover timeout.
//!
//! Policy (who gets offered what) is the allocator's job; this module does the bookkeeping
//! around it: offers outstanding, tasks and their states, timeouts, validation.

pub mod feed;

use crate::allocator::Allocator;
use crate::store::{AgentRecord, Batch, FrameworkRecord, Recovered, TaskRecord};
use bramble_proto::bounded::BoundedMap;
use bramble_proto::messages::{
    AgentSummary, AgentToMaster, ClusterState, Filters, FrameworkInfo, FrameworkSummary,
    JobProgress, JobSummary, MasterEvent, MasterToAgent, Offer, OperatorCall, OperatorReply,
    PeerKind, RunningTask, SchedulerCall, TaskSummary,
};
use bramble_proto::task::{TaskInfo, UpdateSource};
use bramble_proto::transport::PeerIdentity;
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskReason, TaskState, TaskStatus,
};
use feed::{AgentLoad, ClusterEvent, ClusterSummary, Feed};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use uuid::Uuid;

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
    Agent(mpsc::Sender<MasterToAgent>),
    Scheduler(mpsc::Sender<MasterEvent>),
}

/// What connections tell the master.
#[derive(Debug)]
pub enum Input {
    /// A peer passed the TLS handshake and its hello was accepted.
    Connected {
        conn: ConnId,
        identity: PeerIdentity,
        tx: PeerTx,
        handle: Option<quinn::Connection>,
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
}

struct Conn {
    identity: PeerIdentity,
    tx: PeerTx,
    handle: Option<quinn::Connection>,
    bound: Option<Bound>,
}

#[derive(Debug, Clone)]
enum Bound {
    Agent(AgentId),
    Framework(FrameworkId),
}

struct AgentEntry {
    hostname: String,
    address: SocketAddr,
    total: Resources,
    attributes: BTreeMap<String, String>,
    conn: Option<ConnId>,
    last_seen: Instant,
    /// Executors running there, per framework, with the resources charged for them.
    executors: HashMap<(FrameworkId, ExecutorId), Resources>,
    /// Known from the store and not back since the master started: removed (its tasks LOST)
    /// if it has not re-registered by then.
    reregister_by: Option<Instant>,
}

struct FrameworkEntry {
    info: FrameworkInfo,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    tasks: HashMap<TaskId, TaskEntry>,
}

struct TaskEntry {
    info: TaskInfo,
    state: TaskState,
    message: String,
    /// The terminal update, once seen: the task is forgotten when its uuid is acknowledged.
    terminal: Option<TaskStatus>,
    /// The master (not the agent) resends `terminal` until it is acknowledged: a LOST the
    /// master made itself, or the unacknowledged end of a task whose agent was removed.
    resend_by_master: bool,
    /// A kill was asked for: resent whenever the agent (re-)registers still running the task,
    /// since a KillTask sent while its link was dropping is lost with the connection. In
    /// memory only: a master restart forgets it (the store's format is unchanged).
    kill_requested: bool,
    reason: Option<TaskReason>,
    /// Unix times, for operators: launched by the master, RUNNING and terminal on the agent.
    launched_at: f64,
    started_at: Option<f64>,
    ended_at: Option<f64>,
}

impl TaskEntry {
    fn terminal_uuid(&self) -> Option<Uuid> {
        self.terminal.as_ref().and_then(|s| s.uuid)
    }

    fn record(&self, fw: &FrameworkId) -> TaskRecord {
        TaskRecord {
            framework_id: fw.clone(),
            info: self.info.clone(),
            state: self.state,
            message: self.message.clone(),
            reason: self.reason,
            launched_at: self.launched_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            terminal: self.terminal.clone(),
            resend_by_master: self.resend_by_master,
        }
    }

    fn from_record(r: TaskRecord) -> Self {
        Self {
            info: r.info,
            state: r.state,
            message: r.message,
            terminal: r.terminal,
            resend_by_master: r.resend_by_master,
            kill_requested: false,
            reason: r.reason,
            launched_at: r.launched_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

/// A message held until the burst that produced it is committed.
enum Outgoing {
    Agent(ConnId, MasterToAgent),
    Scheduler(ConnId, MasterEvent),
    Reply(oneshot::Sender<OperatorReply>, OperatorReply),
}

struct OfferEntry {
    framework_id: FrameworkId,
    agent_id: AgentId,
    resources: Resources,
    expires: Instant,
}

pub struct Master {
    cluster_id: String,
    timeouts: Timeouts,
    conns: HashMap<ConnId, Conn>,
    agents: HashMap<AgentId, AgentEntry>,
    frameworks: HashMap<FrameworkId, FrameworkEntry>,
    offers: HashMap<OfferId, OfferEntry>,
    allocator: Allocator,
    allocation_due: bool,
    next_allocation: Instant,
    /// Where recent tasks ran, kept after they are forgotten so their sandboxes stay readable.
    task_locations: BoundedMap<(FrameworkId, TaskId), AgentId>,
    sandbox_reads: HashMap<u64, PendingRead>,
    next_request: u64,
    /// The latest progress each framework published.
    progress: HashMap<FrameworkId, JobProgress>,
    /// Change events and the summary, for whoever watches (never blocks; see `feed.rs`).
    events: Feed,
    /// When the summary may next be rebuilt for its watchers.
    next_summary: Instant,
    /// Recently forgotten tasks, for operators (oldest first, at most `RECENT_COMPLETED`).
    completed: VecDeque<TaskSummary>,
    /// What this burst of inputs says, released by `flush_outbox` after the commit.
    outbox: Vec<Outgoing>,
    /// Durable facts changed since the last `take_writes`.
    dirty_frameworks: HashSet<FrameworkId>,
    dirty_agents: HashSet<AgentId>,
    dirty_tasks: HashSet<(FrameworkId, TaskId)>,
    /// When terminal updates the master holds are next resent to connected frameworks.
    next_resend: Instant,
}

/// How many forgotten tasks the operator views keep.
const RECENT_COMPLETED: usize = 1000;

/// How long an agent has to answer a sandbox read.
const SANDBOX_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many finished tasks' locations are remembered for `bramble logs`.
const RECENT_TASKS: usize = 10_000;
/// How often terminal updates the master holds (LOST it made itself) are resent until
/// acknowledged; they are also resent at once whenever their framework subscribes.
const MASTER_RESEND_INTERVAL: Duration = Duration::from_secs(10);

struct PendingRead {
    agent: AgentId,
    reply: oneshot::Sender<OperatorReply>,
    deadline: Instant,
}

impl Master {
    pub fn new(cluster_id: String, timeouts: Timeouts, now: Instant) -> Self {
        Self {
            cluster_id,
            timeouts,
            conns: HashMap::new(),
            agents: HashMap::new(),
            frameworks: HashMap::new(),
            offers: HashMap::new(),
            allocator: Allocator::new(Default::default()),
            allocation_due: false,
            next_allocation: now,
            task_locations: BoundedMap::new(RECENT_TASKS),
            sandbox_reads: HashMap::new(),
            next_request: 0,
            progress: HashMap::new(),
            events: Feed::new(),
            next_summary: now,
            completed: VecDeque::new(),
            outbox: Vec::new(),
            dirty_frameworks: HashSet::new(),
            dirty_agents: HashSet::new(),
            dirty_tasks: HashSet::new(),
            next_resend: now + MASTER_RESEND_INTERVAL,
        }
    }

    /// Loads what a previous master committed. Agents are known but disconnected (and not
    /// offered) until they re-register; frameworks count as disconnected since `now`, so their
    /// failover timeout runs from the master's start.
    pub fn recover(&mut self, recovered: Recovered, now: Instant) {
        if recovered.is_empty() {
            return;
        }
        let deadline = now + self.timeouts.agent_reregistration_timeout;
        for r in recovered.agents {
            self.agents.insert(
                r.id.clone(),
                AgentEntry {
                    hostname: r.hostname,
                    address: r.address,
                    total: r.total,
                    attributes: r.attributes,
                    conn: None,
                    last_seen: now,
                    executors: r
                        .executors
                        .into_iter()
                        .map(|(fw, ex, res)| ((fw, ex), res))
                        .collect(),
                    reregister_by: Some(deadline),
                },
            );
        }
        for r in recovered.frameworks {
            // Their tasks' resources count towards their share, but nothing is offered to
            // them before they come back.
            self.allocator.add_framework(r.id.clone(), 1.0);
            self.allocator.deactivate_framework(&r.id);
            self.frameworks.insert(
                r.id,
                FrameworkEntry {
                    info: r.info,
                    conn: None,
                    disconnected_at: Some(now),
                    tasks: HashMap::new(),
                },
            );
        }
        let mut orphans = Vec::new();
        let task_count = recovered.tasks.len();
        for r in recovered.tasks {
            let fw = r.framework_id.clone();
            let id = r.info.task_id.clone();
            let agent = r.info.agent_id.clone();
            match self.frameworks.get_mut(&fw) {
                Some(f) => {
                    let entry = TaskEntry::from_record(r);
                    if !entry.state.is_terminal() && !self.agents.contains_key(&agent) {
                        orphans.push((fw.clone(), id.clone()));
                    }
                    self.task_locations.insert((fw, id.clone()), agent);
                    f.tasks.insert(id, entry);
                }
                None => {
                    warn!(framework = %fw, task = %id, "store holds a task of an unknown framework; dropping it");
                    self.dirty_tasks.insert((fw, id));
                }
            }
        }
        for (fw, task) in orphans {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRemoved,
                "its agent is not among the agents the master recovered",
            );
        }
        info!(
            agents = self.agents.len(),
            frameworks = self.frameworks.len(),
            tasks = task_count,
            reregistration_timeout_secs = self.timeouts.agent_reregistration_timeout.as_secs_f64(),
            "recovered the master's state from its store; waiting for agents to re-register and frameworks to fail over"
        );
    }

    /// The durable facts changed since the last call, as one batch for the store.
    pub fn take_writes(&mut self) -> Batch {
        let mut batch = Batch::default();
        for id in std::mem::take(&mut self.dirty_frameworks) {
            let record = self.frameworks.get(&id).map(|f| FrameworkRecord {
                id: id.clone(),
                info: f.info.clone(),
            });
            batch.frameworks.push((id, record));
        }
        for id in std::mem::take(&mut self.dirty_agents) {
            let record = self.agents.get(&id).map(|a| AgentRecord {
                id: id.clone(),
                hostname: a.hostname.clone(),
                address: a.address,
                total: a.total.clone(),
                attributes: a.attributes.clone(),
                executors: a
                    .executors
                    .iter()
                    .map(|((fw, ex), res)| (fw.clone(), ex.clone(), res.clone()))
                    .collect(),
            });
            batch.agents.push((id, record));
        }
        for (fw, task) in std::mem::take(&mut self.dirty_tasks) {
            let record = self
                .frameworks
                .get(&fw)
                .and_then(|f| f.tasks.get(&task))
                .map(|t| t.record(&fw));
            batch.tasks.push(((fw, task), record));
        }
        batch
    }

    /// Releases what the committed burst said: into each peer's queue (a full queue drops
    /// that peer), and operators' answers.
    pub fn flush_outbox(&mut self) {
        for out in std::mem::take(&mut self.outbox) {
            let full = match out {
                Outgoing::Agent(conn, msg) => match self.conns.get(&conn).map(|c| &c.tx) {
                    Some(PeerTx::Agent(tx)) => tx.try_send(msg).is_err().then_some(conn),
                    _ => None,
                },
                Outgoing::Scheduler(conn, event) => match self.conns.get(&conn).map(|c| &c.tx) {
                    Some(PeerTx::Scheduler(tx)) => tx.try_send(event).is_err().then_some(conn),
                    _ => None,
                },
                Outgoing::Reply(reply, answer) => {
                    // The operator may have hung up; nothing to do then.
                    let _ = reply.send(answer);
                    None
                }
            };
            if let Some(conn) = full {
                self.drop_slow_peer(conn);
            }
        }
    }

    fn reply(&mut self, reply: oneshot::Sender<OperatorReply>, answer: OperatorReply) {
        self.outbox.push(Outgoing::Reply(reply, answer));
    }

    fn dirty_task(&mut self, fw: &FrameworkId, task: &TaskId) {
        self.dirty_tasks.insert((fw.clone(), task.clone()));
    }

    /// Where this master publishes change events, its summary and update latencies.
    pub fn feed(&self) -> Feed {
        self.events.clone()
    }

    fn remember_completed(&mut self, summary: TaskSummary) {
        if self.completed.len() >= RECENT_COMPLETED {
            self.completed.pop_front();
        }
        self.completed.push_back(summary);
    }

    fn emit_task(&self, fw: &FrameworkId, task_id: &TaskId) {
        if let Some(t) = self.frameworks.get(fw).and_then(|f| f.tasks.get(task_id)) {
            self.events
                .emit(|| ClusterEvent::Task(task_summary(fw, task_id, t)));
        }
    }

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
            Input::FromScheduler { conn, call } => self.scheduler_call(conn, call, now),
            Input::Operator { call, reply } => self.operator_call(call, reply, now),
            Input::Disconnected {
                conn,
                reason,
                graceful,
            } => self.disconnected(conn, &reason, graceful, now),
        }
    }

    /// After a burst of inputs: one allocation pass if anything freed or asked for resources
    /// (rather than one per input).
    pub fn end_burst(&mut self, now: Instant) {
        if self.allocation_due {
            self.allocate(now);
        }
        self.publish_summary(now);
    }

    /// Periodic work: timeouts, failover expiry, resends, the allocation pass.
    pub fn tick(&mut self, now: Instant) {
        self.expire_agents(now);
        self.expire_frameworks(now);
        self.expire_offers(now);
        self.expire_sandbox_reads(now);
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

    // -----------------------------------------------------------------------------------------
    // Sending

    fn send_agent(&mut self, agent_id: &AgentId, msg: MasterToAgent) {
        let Some(conn) = self.agents.get(agent_id).and_then(|a| a.conn) else {
            debug!(agent = %agent_id, "agent not connected; dropping {}", msg_kind_agent(&msg));
            return;
        };
        self.send_conn_agent(conn, msg);
    }

    fn send_conn_agent(&mut self, conn: ConnId, msg: MasterToAgent) {
        self.outbox.push(Outgoing::Agent(conn, msg));
    }

    fn send_framework(&mut self, framework_id: &FrameworkId, event: MasterEvent) {
        let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) else {
            return;
        };
        self.send_conn_scheduler(conn, event);
    }

    fn send_conn_scheduler(&mut self, conn: ConnId, event: MasterEvent) {
        self.outbox.push(Outgoing::Scheduler(conn, event));
    }

    fn drop_slow_peer(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            warn!(peer = %c.identity.address, subject = %c.identity.subject,
                "closing peer: its outbound queue is full (too slow or stuck)");
            if let Some(h) = &c.handle {
                h.close(quinn::VarInt::from_u32(2), b"outbound queue full");
            }
        }
    }

    fn close_conn(&mut self, conn: ConnId, reason: &str) {
        if let Some(c) = self.conns.get(&conn) {
            warn!(peer = %c.identity.address, subject = %c.identity.subject, "closing peer: {reason}");
            if let Some(h) = &c.handle {
                h.close(quinn::VarInt::from_u32(1), reason.as_bytes());
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Agents

    fn agent_message(&mut self, conn: ConnId, msg: AgentToMaster, now: Instant) {
        let bound = self.conns.get(&conn).and_then(|c| c.bound.clone());
        match (msg, bound) {
            (
                AgentToMaster::Register {
                    agent_id,
                    hostname,
                    resources,
                    attributes,
                    tasks,
                },
                None,
            ) => self.register_agent(conn, agent_id, hostname, resources, attributes, tasks, now),
            (AgentToMaster::Register { .. }, Some(_)) => {
                self.close_conn(conn, "agent registered twice on one connection")
            }
            (_, None) | (_, Some(Bound::Framework(_))) => {
                self.close_conn(conn, "agent message before registration")
            }
            (AgentToMaster::Heartbeat, Some(Bound::Agent(id))) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.last_seen = now;
                }
                self.send_conn_agent(conn, MasterToAgent::HeartbeatAck);
            }
            (AgentToMaster::StatusUpdate(status), Some(Bound::Agent(id))) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.last_seen = now;
                }
                self.status_update(&id, status);
            }
            (
                AgentToMaster::ExecutorMessage {
                    framework_id,
                    executor_id,
                    data,
                },
                Some(Bound::Agent(id)),
            ) => self.send_framework(
                &framework_id,
                MasterEvent::Message {
                    agent_id: id,
                    executor_id,
                    data,
                },
            ),
            (AgentToMaster::SandboxData { request, result }, Some(Bound::Agent(id))) => {
                self.sandbox_answer(&id, request, result.map(OperatorReply::Sandbox))
            }
            (AgentToMaster::SandboxListing { request, result }, Some(Bound::Agent(id))) => {
                self.sandbox_answer(&id, request, result.map(OperatorReply::SandboxListing))
            }
            (
                AgentToMaster::ExecutorExited {
                    framework_id,
                    executor_id,
                },
                Some(Bound::Agent(id)),
            ) => {
                let freed = self
                    .agents
                    .get_mut(&id)
                    .and_then(|a| a.executors.remove(&(framework_id.clone(), executor_id)));
                if let Some(res) = freed {
                    self.dirty_agents.insert(id.clone());
                    self.allocator.recover(&id, &framework_id, &res);
                    self.allocation_due = true;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register_agent(
        &mut self,
        conn: ConnId,
        agent_id: Option<AgentId>,
        hostname: String,
        total: Resources,
        attributes: BTreeMap<String, String>,
        tasks: Vec<RunningTask>,
        now: Instant,
    ) {
        let Some(address) = self.conns.get(&conn).map(|c| c.identity.address) else {
            return;
        };
        let claimed = agent_id.is_some();
        let id = agent_id.unwrap_or_else(|| AgentId(bramble_proto::ids::fresh("agent")));
        let returning = self.agents.contains_key(&id);
        let after_failover = self
            .agents
            .get(&id)
            .is_some_and(|a| a.reregister_by.is_some());
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn) {
            if old != conn {
                // The agent restarted faster than its old connection timed out.
                self.close_conn(old, "replaced by a newer connection from the same agent");
                if let Some(c) = self.conns.get_mut(&old) {
                    c.bound = None;
                }
            }
        }
        self.rescind_agent_offers(&id);
        self.allocator.remove_agent(&id);
        self.allocator.add_agent(id.clone(), total.clone());
        let executors = self
            .agents
            .remove(&id)
            .map(|a| a.executors)
            .unwrap_or_default();
        self.agents.insert(
            id.clone(),
            AgentEntry {
                hostname: hostname.clone(),
                address,
                total: total.clone(),
                attributes,
                conn: Some(conn),
                last_seen: now,
                executors,
                reregister_by: None,
            },
        );
        self.dirty_agents.insert(id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Agent(id.clone()));
        }
        self.send_conn_agent(
            conn,
            MasterToAgent::Registered {
                agent_id: id.clone(),
                heartbeat_interval_ms: self.timeouts.heartbeat_interval.as_millis() as u64,
            },
        );
        let how = match (returning, after_failover, claimed) {
            (true, true, _) => "re-registered after master failover",
            (true, false, _) => "re-registered",
            (false, _, true) => "registered (new agent: its id is not known to this master)",
            (false, _, false) => "registered (new agent)",
        };
        info!(agent = %id, %hostname, %address, resources = %total,
            live_tasks = tasks.len(), "agent {how}");
        self.events.emit(|| ClusterEvent::AgentRegistered {
            agent_id: id.clone(),
            hostname: hostname.clone(),
            returning,
        });
        self.reconcile_agent_tasks(&id, tasks);
        self.allocation_due = true;
    }

    /// Compares what a (re-)registering agent runs with what the master believes runs there
    /// (after a master restart: what the store says). The master's picture wins: tasks it does
    /// not know (or already declared LOST, so their framework has launched replacements) are
    /// killed; tasks it expected but the agent no longer has are LOST.
    fn reconcile_agent_tasks(&mut self, agent_id: &AgentId, reported: Vec<RunningTask>) {
        let mut seen: HashSet<(FrameworkId, TaskId)> = HashSet::new();
        for rt in reported {
            let key = (rt.framework_id.clone(), rt.task.task_id.clone());
            let known = self
                .frameworks
                .get(&rt.framework_id)
                .and_then(|f| f.tasks.get(&rt.task.task_id))
                .filter(|t| !t.state.is_terminal() && &t.info.agent_id == agent_id);
            let kill_pending = known.is_some_and(|t| t.kill_requested);
            if known.is_some() {
                if kill_pending {
                    info!(agent = %agent_id, framework = %rt.framework_id, task = %rt.task.task_id,
                        "agent still runs a task whose kill was requested; sending the kill again");
                    self.send_agent(
                        agent_id,
                        MasterToAgent::KillTask {
                            framework_id: rt.framework_id.clone(),
                            task_id: rt.task.task_id.clone(),
                        },
                    );
                }
                let res = rt.task.resources.clone();
                if let Err(e) = self
                    .allocator
                    .allocate_existing(agent_id, &rt.framework_id, &res)
                {
                    warn!(agent = %agent_id, task = %rt.task.task_id, "re-registered task does not fit the agent's resources: {e}");
                }
                seen.insert(key);
            } else {
                info!(agent = %agent_id, framework = %rt.framework_id, task = %rt.task.task_id,
                    "agent reports a task the master does not expect there; killing it");
                self.send_agent(
                    agent_id,
                    MasterToAgent::KillTask {
                        framework_id: rt.framework_id,
                        task_id: rt.task.task_id,
                    },
                );
            }
        }
        // Re-charge executors still recorded for this agent.
        let executors: Vec<((FrameworkId, ExecutorId), Resources)> = self
            .agents
            .get(agent_id)
            .map(|a| {
                a.executors
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for ((fw, _), res) in executors {
            let _ = self.allocator.allocate_existing(agent_id, &fw, &res);
        }
        let missing: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == agent_id && !t.state.is_terminal())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .filter(|k| !seen.contains(k))
            .collect();
        for (fw, task) in missing {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRestarted,
                "agent re-registered without this task",
            );
        }
    }

    fn expire_agents(&mut self, now: Instant) {
        let timeout = self.timeouts.agent_timeout;
        let expired: Vec<(AgentId, &'static str)> = self
            .agents
            .iter()
            .filter_map(|(id, a)| match a.reregister_by {
                Some(by) => (now > by).then_some((
                    id.clone(),
                    "it did not re-register within the agent re-registration timeout after the master restarted",
                )),
                None => (now.duration_since(a.last_seen) > timeout)
                    .then_some((id.clone(), "no heartbeat within the agent timeout")),
            })
            .collect();
        for (id, why) in expired {
            self.remove_agent(&id, why);
        }
    }

    fn remove_agent(&mut self, id: &AgentId, why: &str) {
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        warn!(agent = %id, hostname = %agent.hostname, "removing agent: {why}; its tasks become LOST");
        self.dirty_agents.insert(id.clone());
        self.events.emit(|| ClusterEvent::AgentRemoved {
            agent_id: id.clone(),
            reason: why.to_string(),
        });
        if let Some(conn) = agent.conn {
            self.close_conn(conn, "agent removed");
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
        }
        self.rescind_agent_offers(id);
        self.allocator.remove_agent(id);
        let lost: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == id && !t.state.is_terminal())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .collect();
        for (fw, task) in lost {
            self.master_terminal_update(
                &fw,
                &task,
                TaskState::Lost,
                TaskReason::AgentRemoved,
                &format!("agent {id} ({}) removed: {why}", agent.hostname),
            );
        }
        // Ended tasks whose update the agent was still resending: nobody else will now.
        let orphaned: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .filter(|(_, t)| &t.info.agent_id == id && !t.resend_by_master)
                    .filter(|(_, t)| t.terminal.is_some())
                    .map(move |(tid, _)| (fid.clone(), tid.clone()))
            })
            .collect();
        for (fw, task) in orphaned {
            if let Some(t) = self
                .frameworks
                .get_mut(&fw)
                .and_then(|f| f.tasks.get_mut(&task))
            {
                t.resend_by_master = true;
            }
            self.dirty_task(&fw, &task);
        }
        let fws: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for fw in fws {
            self.send_framework(
                &fw,
                MasterEvent::AgentLost {
                    agent_id: id.clone(),
                },
            );
        }
    }

    // -----------------------------------------------------------------------------------------
    // Frameworks

    fn scheduler_call(&mut self, conn: ConnId, call: SchedulerCall, now: Instant) {
        let bound = self.conns.get(&conn).and_then(|c| c.bound.clone());
        let fw = match (&call, bound) {
            (SchedulerCall::Subscribe(info), None) => {
                self.subscribe(conn, info.clone(), now);
                return;
            }
            (SchedulerCall::Subscribe(_), Some(_)) => {
                self.close_conn(conn, "subscribed twice on one connection");
                return;
            }
            (_, Some(Bound::Framework(fw))) => fw,
            _ => {
                self.close_conn(conn, "scheduler call before subscribing");
                return;
            }
        };
        match call {
            SchedulerCall::Subscribe(_) => {}
            SchedulerCall::Accept {
                offer_ids,
                tasks,
                filters,
            } => self.accept(&fw, offer_ids, tasks, filters, now),
            SchedulerCall::Decline { offer_ids, filters } => {
                for id in offer_ids {
                    self.answer_offer(&fw, &id, filters, now);
                }
            }
            SchedulerCall::Revive => {
                self.allocator.revive(&fw);
                self.allocation_due = true;
            }
            SchedulerCall::Suppress => {
                self.allocator.suppress(&fw);
                self.rescind_framework_offers(&fw);
            }
            SchedulerCall::Kill { task_id } => self.kill(&fw, &task_id),
            SchedulerCall::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => self.acknowledge(&fw, agent_id, task_id, uuid),
            SchedulerCall::Reconcile { task_ids } => self.reconcile(&fw, task_ids),
            SchedulerCall::Message {
                agent_id,
                executor_id,
                data,
            } => {
                if self.agents.get(&agent_id).and_then(|a| a.conn).is_some() {
                    self.send_agent(
                        &agent_id,
                        MasterToAgent::FrameworkMessage {
                            framework_id: fw,
                            executor_id,
                            data,
                        },
                    );
                } else {
                    self.send_framework(
                        &fw,
                        MasterEvent::Error {
                            message: format!(
                                "message not delivered: agent {agent_id} is not connected"
                            ),
                            fatal: false,
                        },
                    );
                }
            }
            SchedulerCall::Teardown => {
                info!(framework = %fw, "framework tore itself down");
                self.remove_framework(&fw, "framework teardown");
            }
            SchedulerCall::Heartbeat => self.send_conn_scheduler(conn, MasterEvent::HeartbeatAck),
            SchedulerCall::PublishProgress(progress) => {
                self.events.emit(|| ClusterEvent::Progress {
                    framework_id: fw.clone(),
                    progress: progress.clone(),
                });
                self.progress.insert(fw, progress);
            }
        }
    }

    fn subscribe(&mut self, conn: ConnId, info: FrameworkInfo, now: Instant) {
        let id = info
            .framework_id
            .clone()
            .unwrap_or_else(|| FrameworkId(bramble_proto::ids::fresh("fw")));
        let failover = self.frameworks.contains_key(&id);
        if let Some(old) = self.frameworks.get(&id).and_then(|f| f.conn) {
            if old != conn {
                self.send_conn_scheduler(
                    old,
                    MasterEvent::Error {
                        message: "framework failed over to a new connection".into(),
                        fatal: true,
                    },
                );
                if let Some(c) = self.conns.get_mut(&old) {
                    c.bound = None;
                }
            }
        }
        if failover {
            // Offers made to the previous connection are unknown to the new scheduler: take
            // them back now instead of leaving the resources out until the offer timeout.
            self.rescind_framework_offers(&id);
        }
        let mut info = info;
        info.framework_id = Some(id.clone());
        let entry = self
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| FrameworkEntry {
                info: info.clone(),
                conn: None,
                disconnected_at: None,
                tasks: HashMap::new(),
            });
        entry.info = info.clone();
        entry.conn = Some(conn);
        entry.disconnected_at = None;
        self.dirty_frameworks.insert(id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Framework(id.clone()));
        }
        if !failover {
            self.allocator.add_framework(id.clone(), 1.0);
        }
        self.allocator.activate_framework(&id);
        info!(framework = %id, name = %info.name, role = %info.role,
            "framework {}", if failover { "re-subscribed (failover)" } else { "subscribed" });
        self.events.emit(|| ClusterEvent::FrameworkSubscribed {
            framework_id: id.clone(),
            name: info.name.clone(),
        });
        self.send_conn_scheduler(
            conn,
            MasterEvent::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_ms: self.timeouts.heartbeat_interval.as_millis() as u64,
            },
        );
        self.resend_master_updates(&id);
        let _ = now;
        self.allocation_due = true;
    }

    /// Sends the framework the terminal updates only the master resends (until acknowledged).
    fn resend_master_updates(&mut self, fw: &FrameworkId) {
        let pending: Vec<TaskStatus> = self
            .frameworks
            .get(fw)
            .map(|f| {
                f.tasks
                    .values()
                    .filter(|t| t.resend_by_master)
                    .filter_map(|t| t.terminal.clone())
                    .collect()
            })
            .unwrap_or_default();
        for status in pending {
            self.send_framework(fw, MasterEvent::Update(status));
        }
    }

    fn expire_frameworks(&mut self, now: Instant) {
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.disconnected_at.is_some_and(|t| {
                    now.duration_since(t).as_secs_f64() > f.info.failover_timeout_secs.max(0.0)
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "failover timeout passed without re-subscription");
        }
    }

    fn remove_framework(&mut self, id: &FrameworkId, why: &str) {
        self.rescind_framework_offers(id);
        let Some(fw) = self.frameworks.remove(id) else {
            return;
        };
        self.dirty_frameworks.insert(id.clone());
        for task in fw.tasks.keys() {
            self.dirty_tasks.insert((id.clone(), task.clone()));
        }
        info!(framework = %id, name = %fw.info.name, live_tasks = fw.tasks.values().filter(|t| !t.state.is_terminal()).count(),
            "removing framework: {why}; killing its tasks");
        self.events.emit(|| ClusterEvent::FrameworkRemoved {
            framework_id: id.clone(),
            reason: why.to_string(),
        });
        let agents: HashSet<AgentId> = fw.tasks.values().map(|t| t.info.agent_id.clone()).collect();
        let agents: HashSet<AgentId> = agents
            .into_iter()
            .chain(
                self.agents
                    .iter()
                    .filter(|(_, a)| a.executors.keys().any(|(f, _)| f == id))
                    .map(|(aid, _)| aid.clone()),
            )
            .collect();
        for agent in agents {
            if let Some(a) = self.agents.get_mut(&agent) {
                let before = a.executors.len();
                a.executors.retain(|(f, _), _| f != id);
                if a.executors.len() != before {
                    self.dirty_agents.insert(agent.clone());
                }
            }
            self.send_agent(
                &agent,
                MasterToAgent::ShutdownFramework {
                    framework_id: id.clone(),
                },
            );
        }
        self.allocator.remove_framework(id);
        self.progress.remove(id);
        if let Some(conn) = fw.conn {
            self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: format!("framework removed: {why}"),
                    fatal: true,
                },
            );
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
        }
        self.allocation_due = true;
    }

    // -----------------------------------------------------------------------------------------
    // Offers

    fn allocate(&mut self, now: Instant) {
        self.allocation_due = false;
        self.next_allocation = now + self.timeouts.allocation_interval;
        let mut by_framework: HashMap<FrameworkId, Vec<Offer>> = HashMap::new();
        for a in self.allocator.allocate(now) {
            let Some(agent) = self.agents.get(&a.agent_id) else {
                self.allocator
                    .recover(&a.agent_id, &a.framework_id, &a.resources);
                continue;
            };
            let id = OfferId(bramble_proto::ids::fresh("offer"));
            let executor_ids = agent
                .executors
                .keys()
                .filter(|(f, _)| f == &a.framework_id)
                .map(|(_, e)| e.clone())
                .collect();
            let offer = Offer {
                id: id.clone(),
                framework_id: a.framework_id.clone(),
                agent_id: a.agent_id.clone(),
                hostname: agent.hostname.clone(),
                resources: a.resources.clone(),
                attributes: agent.attributes.clone(),
                executor_ids,
            };
            self.offers.insert(
                id,
                OfferEntry {
                    framework_id: a.framework_id.clone(),
                    agent_id: a.agent_id.clone(),
                    resources: a.resources,
                    expires: now + self.timeouts.offer_timeout,
                },
            );
            by_framework.entry(a.framework_id).or_default().push(offer);
        }
        for (fw, offers) in by_framework {
            debug!(framework = %fw, count = offers.len(), "sending offers");
            self.send_framework(&fw, MasterEvent::Offers(offers));
        }
    }

    /// Declines one offer: its resources go back to the pool behind a refuse filter.
    fn answer_offer(&mut self, fw: &FrameworkId, id: &OfferId, filters: Filters, now: Instant) {
        match self.offers.get(id) {
            Some(o) if &o.framework_id == fw => {}
            _ => return, // already gone (rescinded/expired) or not theirs: nothing to give back
        }
        if let Some(o) = self.offers.remove(id) {
            self.release_with_filter(fw, &o.agent_id, &o.resources, filters, now);
        }
    }

    fn release_with_filter(
        &mut self,
        fw: &FrameworkId,
        agent: &AgentId,
        resources: &Resources,
        filters: Filters,
        now: Instant,
    ) {
        if resources.is_empty() {
            return;
        }
        self.allocator.recover(agent, fw, resources);
        let refuse_for = crate::allocator::refuse_duration(filters.refuse_seconds);
        if refuse_for.is_zero() {
            self.allocation_due = true;
        } else {
            self.allocator
                .add_refuse_filter(fw, agent, resources.clone(), now, refuse_for);
        }
    }

    fn expire_offers(&mut self, now: Instant) {
        let expired: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            debug!(offer = %id, "offer timed out; rescinding");
            self.rescind(&id);
        }
    }

    fn rescind(&mut self, id: &OfferId) {
        if let Some(o) = self.offers.remove(id) {
            self.allocator
                .recover(&o.agent_id, &o.framework_id, &o.resources);
            self.send_framework(
                &o.framework_id,
                MasterEvent::Rescind {
                    offer_id: id.clone(),
                },
            );
            self.allocation_due = true;
        }
    }

    fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.agent_id == agent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    fn rescind_framework_offers(&mut self, fw: &FrameworkId) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| &o.framework_id == fw)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Launching

    fn accept(
        &mut self,
        fw: &FrameworkId,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
        now: Instant,
    ) {
        // All offers must exist, be this framework's, and be on one agent.
        let mut problem: Option<String> = None;
        let mut agent: Option<AgentId> = None;
        let mut pool = Resources::default();
        if offer_ids.is_empty() {
            problem = Some("accept names no offers".into());
        }
        for id in &offer_ids {
            match self.offers.get(id) {
                None => {
                    problem = Some(format!(
                    "offer {id} is unknown or no longer valid (rescinded, expired or already used)"
                ))
                }
                Some(o) if &o.framework_id != fw => {
                    problem = Some(format!("offer {id} was made to another framework"))
                }
                Some(o) => {
                    if agent.as_ref().is_some_and(|a| a != &o.agent_id) {
                        problem = Some("offers in one accept must be on the same agent".into());
                    }
                    agent = Some(o.agent_id.clone());
                    pool.add(&o.resources);
                }
            }
        }
        let (agent_id, problem) = match (agent, problem) {
            (Some(a), None) => (a, None),
            (_, p) => (AgentId(String::new()), p.or(Some("no valid offer".into()))),
        };
        if let Some(why) = problem {
            // Valid offers among the bad ones are left outstanding for the framework to reuse.
            for t in tasks {
                self.task_error(fw, &t, TaskReason::InvalidOffer, &why);
            }
            return;
        }
        for id in &offer_ids {
            self.offers.remove(id);
        }

        let offered = pool.clone();
        let mut remaining = pool;
        let mut launched = Vec::new();
        let mut ids_in_accept: HashSet<TaskId> = HashSet::new();
        let mut new_executors: HashMap<ExecutorId, Resources> = HashMap::new();
        for task in tasks {
            let needed = self.resources_needed(fw, &agent_id, &task, &new_executors);
            let verdict = self.validate_task(
                fw,
                &agent_id,
                &task,
                &ids_in_accept,
                &offered,
                &remaining,
                &needed,
            );
            match verdict {
                Err((reason, why)) => self.task_error(fw, &task, reason, &why),
                Ok(()) => {
                    // `validate_task` checked that `needed` fits in `remaining`.
                    remaining = remaining.checked_sub(&needed).unwrap_or_default();
                    if let Some(e) = &task.executor {
                        let already = self.agents.get(&agent_id).is_some_and(|a| {
                            a.executors
                                .contains_key(&(fw.clone(), e.executor_id.clone()))
                        });
                        if !already && !new_executors.contains_key(&e.executor_id) {
                            new_executors.insert(e.executor_id.clone(), e.resources.clone());
                        }
                    }
                    ids_in_accept.insert(task.task_id.clone());
                    launched.push(task);
                }
            }
        }
        if let Some(a) = self.agents.get_mut(&agent_id) {
            if !new_executors.is_empty() {
                self.dirty_agents.insert(agent_id.clone());
            }
            for (eid, res) in new_executors {
                a.executors.insert((fw.clone(), eid), res);
            }
        }
        self.release_with_filter(fw, &agent_id, &remaining, filters, now);
        if launched.is_empty() {
            return;
        }
        let name = self
            .frameworks
            .get(fw)
            .map(|f| f.info.name.clone())
            .unwrap_or_default();
        if let Some(f) = self.frameworks.get_mut(fw) {
            for t in &launched {
                self.task_locations
                    .insert((fw.clone(), t.task_id.clone()), agent_id.clone());
                info!(framework = %fw, task = %t.task_id, agent = %agent_id, resources = %t.resources, "launching task");
                f.tasks.insert(
                    t.task_id.clone(),
                    TaskEntry {
                        info: t.clone(),
                        state: TaskState::Staging,
                        message: String::new(),
                        terminal: None,
                        resend_by_master: false,
                        kill_requested: false,
                        reason: None,
                        launched_at: bramble_proto::unix_now(),
                        started_at: None,
                        ended_at: None,
                    },
                );
            }
        }
        for t in &launched {
            self.dirty_task(fw, &t.task_id);
            self.emit_task(fw, &t.task_id);
        }
        self.send_agent(
            &agent_id,
            MasterToAgent::RunTasks {
                framework_id: fw.clone(),
                framework_name: name,
                tasks: launched,
            },
        );
    }

    /// Task resources plus, for a custom executor not yet running there, the executor's own.
    fn resources_needed(
        &self,
        fw: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        new_executors: &HashMap<ExecutorId, Resources>,
    ) -> Resources {
        let mut needed = task.resources.clone();
        if let Some(e) = &task.executor {
            let running = self.agents.get(agent).is_some_and(|a| {
                a.executors
                    .contains_key(&(fw.clone(), e.executor_id.clone()))
            });
            if !running && !new_executors.contains_key(&e.executor_id) {
                needed.add(&e.resources);
            }
        }
        needed
    }

    #[allow(clippy::too_many_arguments)]
    fn validate_task(
        &self,
        fw: &FrameworkId,
        agent: &AgentId,
        task: &TaskInfo,
        ids_in_accept: &HashSet<TaskId>,
        offered: &Resources,
        remaining: &Resources,
        needed: &Resources,
    ) -> Result<(), (TaskReason, String)> {
        if task.task_id.as_str().is_empty() {
            return Err((TaskReason::InvalidTask, "task id is empty".into()));
        }
        if task.task_id.as_str().len() > 200
            || task.task_id.as_str().contains('/')
            || task.task_id.as_str().starts_with('.')
        {
            return Err((
                TaskReason::InvalidTask,
                "task id must be under 200 characters, without '/', not starting with '.'".into(),
            ));
        }
        let duplicate = ids_in_accept.contains(&task.task_id)
            || self
                .frameworks
                .get(fw)
                .and_then(|f| f.tasks.get(&task.task_id))
                .is_some();
        if duplicate {
            return Err((
                TaskReason::DuplicateTaskId,
                format!(
                    "task id {} is already in use by this framework",
                    task.task_id
                ),
            ));
        }
        if task.command.is_some() == task.executor.is_some() {
            return Err((
                TaskReason::InvalidTask,
                "a task needs exactly one of a command or an executor".into(),
            ));
        }
        if let Some(e) = &task.executor {
            if e.executor_id.as_str().is_empty() || e.executor_id.as_str().contains('/') {
                return Err((
                    TaskReason::InvalidTask,
                    "executor id is empty or contains '/'".into(),
                ));
            }
        }
        if &task.agent_id != agent {
            return Err((
                TaskReason::InvalidOffer,
                format!(
                    "task names agent {} but the offer is for {agent}",
                    task.agent_id
                ),
            ));
        }
        if task.resources.cpus_milli == 0 && task.resources.mem_mib == 0 {
            return Err((
                TaskReason::InvalidTask,
                "a task must ask for some cpus or mem".into(),
            ));
        }
        if !offered.contains(needed) {
            let shortfall = offered.shortfall(needed).unwrap_or_default();
            let reason = if offered
                .checked_sub(&Resources {
                    ports: Vec::new(),
                    ..needed.clone()
                })
                .is_some()
            {
                TaskReason::ResourcesNotInOffer
            } else {
                TaskReason::TaskTooLarge
            };
            return Err((
                reason,
                format!("task needs more than its offer has: {shortfall}"),
            ));
        }
        if !remaining.contains(needed) {
            let shortfall = remaining.shortfall(needed).unwrap_or_default();
            return Err((
                TaskReason::ResourcesNotInOffer,
                format!(
                    "offer's resources already used by earlier tasks in this accept: {shortfall}"
                ),
            ));
        }
        Ok(())
    }

    fn task_error(&mut self, fw: &FrameworkId, task: &TaskInfo, reason: TaskReason, why: &str) {
        info!(framework = %fw, task = %task.task_id, ?reason, "refusing task: {why}");
        let mut status = TaskStatus::new(
            fw.clone(),
            task.task_id.clone(),
            TaskState::Error,
            UpdateSource::Master,
        )
        .with_reason(reason, why);
        status.agent_id = Some(task.agent_id.clone());
        self.events.emit(|| {
            ClusterEvent::Task(TaskSummary {
                id: task.task_id.clone(),
                name: task.name.clone(),
                framework_id: fw.clone(),
                agent_id: task.agent_id.clone(),
                state: TaskState::Error,
                message: why.to_string(),
                resources: task.resources.clone(),
                reason: Some(reason),
                launched_at: status.timestamp,
                started_at: None,
                ended_at: Some(status.timestamp),
            })
        });
        self.send_framework(fw, MasterEvent::Update(status));
    }

    // -----------------------------------------------------------------------------------------
    // Task state

    fn status_update(&mut self, agent_id: &AgentId, status: TaskStatus) {
        let fw = status.framework_id.clone();
        let Some(uuid) = status.uuid else {
            warn!(agent = %agent_id, task = %status.task_id, "agent sent a status update without uuid; ignoring");
            return;
        };
        let framework_connected = self.frameworks.get(&fw).is_some_and(|f| f.conn.is_some());
        let Some(task) = self
            .frameworks
            .get_mut(&fw)
            .and_then(|f| f.tasks.get_mut(&status.task_id))
        else {
            // Nobody will ever acknowledge it: acknowledge on the framework's behalf so the
            // agent stops resending.
            debug!(agent = %agent_id, framework = %fw, task = %status.task_id, "update for an unknown task; acknowledging it");
            self.send_agent(
                agent_id,
                MasterToAgent::Acknowledge {
                    framework_id: fw,
                    task_id: status.task_id,
                    uuid,
                },
            );
            return;
        };
        let previous = task.state;
        self.events.observe_update_latency(status.timestamp);
        let moved = previous.can_move_to(status.state);
        if moved {
            task.state = status.state;
            task.message = status.message.clone();
            task.reason = status.reason;
            if status.state == TaskState::Running && task.started_at.is_none() {
                task.started_at = Some(status.timestamp);
            }
            if status.state.is_terminal() {
                task.ended_at = Some(status.timestamp);
            }
            if previous != status.state {
                let summary = task_summary(&fw, &status.task_id, task);
                self.events.emit(|| ClusterEvent::Task(summary));
            }
            if status.state.is_terminal() {
                task.terminal = Some(status.clone());
                let res = task.info.resources.clone();
                let task_agent = task.info.agent_id.clone();
                info!(framework = %fw, task = %status.task_id, state = %status.state, reason = ?status.reason, message = %status.message, "task ended");
                self.allocator.recover(&task_agent, &fw, &res);
                self.allocation_due = true;
            } else if previous != status.state {
                debug!(framework = %fw, task = %status.task_id, state = %status.state, "task state");
            }
        } else if !(previous.is_terminal() && task.terminal_uuid() == Some(uuid))
            && previous != status.state
        {
            debug!(framework = %fw, task = %status.task_id, from = %previous, to = %status.state,
                "out-of-order update: master keeps {previous}, framework still gets it");
        }
        if moved {
            // Forwarded (below) only once this is committed.
            self.dirty_task(&fw, &status.task_id);
        }
        if framework_connected {
            self.send_framework(&fw, MasterEvent::Update(status));
        }
    }

    /// A terminal update the master makes itself (LOST tasks of a removed agent, or of an
    /// agent that came back without them). It carries a uuid and, like an agent's, is kept
    /// (durably) and resent by the master until the framework acknowledges it.
    fn master_terminal_update(
        &mut self,
        fw: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: TaskReason,
        message: &str,
    ) {
        let Some(task) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
        else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        let agent = task.info.agent_id.clone();
        let resources = task.info.resources.clone();
        let mut status = TaskStatus::new(fw.clone(), task_id.clone(), state, UpdateSource::Master)
            .with_reason(reason, message);
        status.agent_id = Some(agent.clone());
        status.uuid = Some(Uuid::new_v4());
        task.state = state;
        task.reason = Some(reason);
        task.message = message.to_string();
        task.ended_at = Some(status.timestamp);
        task.terminal = Some(status.clone());
        task.resend_by_master = true;
        let summary = task_summary(fw, task_id, task);
        self.events.emit(|| ClusterEvent::Task(summary));
        self.dirty_task(fw, task_id);
        self.allocator.recover(&agent, fw, &resources);
        self.allocation_due = true;
        info!(framework = %fw, task = %task_id, %state, ?reason, "{message}");
        self.send_framework(fw, MasterEvent::Update(status));
    }

    fn acknowledge(&mut self, fw: &FrameworkId, agent_id: AgentId, task_id: TaskId, uuid: Uuid) {
        let (forget, master_held) = self
            .frameworks
            .get(fw)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| (t.terminal_uuid() == Some(uuid), t.resend_by_master))
            .unwrap_or((false, false));
        if forget {
            let removed = self
                .frameworks
                .get_mut(fw)
                .and_then(|f| f.tasks.remove(&task_id));
            if let Some(t) = removed {
                self.remember_completed(task_summary(fw, &task_id, &t));
            }
            // The agent hears of the acknowledgement only once the task is forgotten on disk;
            // before that, its resend is what carries the update across a master crash.
            self.dirty_task(fw, &task_id);
        }
        if forget && master_held {
            // The master made this update; no agent is waiting for its acknowledgement.
            return;
        }
        self.send_agent(
            &agent_id,
            MasterToAgent::Acknowledge {
                framework_id: fw.clone(),
                task_id,
                uuid,
            },
        );
    }

    fn kill(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        let target = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
            .map(|t| {
                if !t.state.is_terminal() {
                    t.kill_requested = true;
                }
                (t.info.agent_id.clone(), t.state)
            });
        match target {
            Some((agent, state)) if !state.is_terminal() => {
                info!(framework = %fw, task = %task_id, agent = %agent, "killing task");
                self.send_agent(
                    &agent,
                    MasterToAgent::KillTask {
                        framework_id: fw.clone(),
                        task_id: task_id.clone(),
                    },
                );
            }
            Some(_) => {}
            None => {
                // Mesos answers a kill of an unknown task with TASK_LOST so the framework's
                // view converges; a framework asking for another framework's task lands here
                // too, and learns nothing about it.
                let status = TaskStatus::new(
                    fw.clone(),
                    task_id.clone(),
                    TaskState::Lost,
                    UpdateSource::Master,
                )
                .with_reason(
                    TaskReason::Reconciliation,
                    "kill of a task unknown to this framework",
                );
                self.send_framework(fw, MasterEvent::Update(status));
            }
        }
    }

    fn reconcile(&mut self, fw: &FrameworkId, task_ids: Vec<TaskId>) {
        let Some(f) = self.frameworks.get(fw) else {
            return;
        };
        let status_of = |id: &TaskId, t: &TaskEntry| {
            let mut s = TaskStatus::new(fw.clone(), id.clone(), t.state, UpdateSource::Master)
                .with_reason(TaskReason::Reconciliation, t.message.clone());
            s.agent_id = Some(t.info.agent_id.clone());
            s
        };
        let updates: Vec<TaskStatus> = if task_ids.is_empty() {
            f.tasks
                .iter()
                .filter(|(_, t)| !t.state.is_terminal())
                .map(|(id, t)| status_of(id, t))
                .collect()
        } else {
            task_ids
                .iter()
                .map(|id| match f.tasks.get(id) {
                    Some(t) => status_of(id, t),
                    None => TaskStatus::new(
                        fw.clone(),
                        id.clone(),
                        TaskState::Lost,
                        UpdateSource::Master,
                    )
                    .with_reason(TaskReason::Reconciliation, "task unknown to the master"),
                })
                .collect()
        };
        for u in updates {
            self.send_framework(fw, MasterEvent::Update(u));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Disconnects and the operator

    fn disconnected(&mut self, conn: ConnId, reason: &str, graceful: bool, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.bound {
            Some(Bound::Agent(id)) => {
                if let Some(a) = self.agents.get_mut(&id) {
                    if a.conn == Some(conn) {
                        a.conn = None;
                        if graceful {
                            info!(agent = %id, hostname = %a.hostname, "agent left (it is shutting down); removed if not back within the agent timeout");
                        } else {
                            warn!(agent = %id, hostname = %a.hostname, "agent disconnected: {reason}; removed if not back within the agent timeout");
                        }
                        self.events.emit(|| ClusterEvent::AgentDisconnected {
                            agent_id: id.clone(),
                        });
                        self.rescind_agent_offers(&id);
                        // No offers for a disconnected agent: take it out of the pool until
                        // it re-registers (which re-adds it with its live tasks).
                        self.allocator.remove_agent(&id);
                    }
                }
            }
            Some(Bound::Framework(id)) => {
                if let Some(f) = self.frameworks.get_mut(&id) {
                    if f.conn == Some(conn) {
                        f.conn = None;
                        f.disconnected_at = Some(now);
                        info!(framework = %id, failover_timeout_secs = f.info.failover_timeout_secs,
                            "framework disconnected: {reason}; its tasks keep running until the failover timeout");
                        self.events.emit(|| ClusterEvent::FrameworkDisconnected {
                            framework_id: id.clone(),
                        });
                        self.allocator.deactivate_framework(&id);
                        self.rescind_framework_offers(&id);
                    }
                }
            }
            None => debug!(peer = %c.identity.address, "unregistered peer disconnected: {reason}"),
        }
    }

    fn operator_call(
        &mut self,
        call: OperatorCall,
        reply: oneshot::Sender<OperatorReply>,
        now: Instant,
    ) {
        let answer = match call {
            OperatorCall::GetState => OperatorReply::State(self.snapshot()),
            OperatorCall::KillTask {
                framework_id,
                task_id,
            } => {
                let known = self
                    .frameworks
                    .get(&framework_id)
                    .is_some_and(|f| f.tasks.contains_key(&task_id));
                if known {
                    self.kill(&framework_id, &task_id);
                    OperatorReply::Done
                } else {
                    OperatorReply::Error {
                        message: format!("no task {task_id} in framework {framework_id}"),
                    }
                }
            }
            // The panel's picture lives at the edge, which answers this call itself.
            OperatorCall::GetPanel => OperatorReply::Error {
                message: "the front panel is not served by the master's state".into(),
            },
            OperatorCall::ReadSandbox(read) => {
                let (fw, task) = (read.framework_id.clone(), read.task_id.clone());
                let ask = move |request| MasterToAgent::ReadSandbox { request, read };
                return self.ask_task_agent(&fw, &task, reply, now, ask);
            }
            OperatorCall::ListSandbox(list) => {
                let (fw, task) = (list.framework_id.clone(), list.task_id.clone());
                let ask = move |request| MasterToAgent::ListSandbox { request, list };
                return self.ask_task_agent(&fw, &task, reply, now, ask);
            }
        };
        self.reply(reply, answer);
    }

    /// Sends a sandbox request to the agent a task ran on; its answer goes to `reply` (see
    /// `sandbox_answer`), as does an error when that agent cannot be asked.
    fn ask_task_agent(
        &mut self,
        fw: &FrameworkId,
        task: &TaskId,
        reply: oneshot::Sender<OperatorReply>,
        now: Instant,
        ask: impl FnOnce(u64) -> MasterToAgent,
    ) {
        let key = (fw.clone(), task.clone());
        let message = match self.task_locations.get(&key).cloned() {
            Some(agent) if self.agents.get(&agent).is_some_and(|a| a.conn.is_some()) => {
                self.next_request += 1;
                let request = self.next_request;
                self.sandbox_reads.insert(
                    request,
                    PendingRead {
                        agent: agent.clone(),
                        reply,
                        deadline: now + SANDBOX_READ_TIMEOUT,
                    },
                );
                self.send_agent(&agent, ask(request));
                return;
            }
            Some(agent) => format!("task {task} ran on agent {agent}, which is not connected"),
            None => format!("no task {task} of framework {fw} is known to this master"),
        };
        self.reply(reply, OperatorReply::Error { message });
    }

    fn sandbox_answer(
        &mut self,
        agent: &AgentId,
        request: u64,
        result: Result<OperatorReply, String>,
    ) {
        match self.sandbox_reads.remove(&request) {
            Some(p) if &p.agent == agent => {
                let answer = match result {
                    Ok(answer) => answer,
                    Err(message) => OperatorReply::Error { message },
                };
                self.reply(p.reply, answer);
            }
            Some(p) => {
                warn!(agent = %agent, "agent answered another agent's sandbox read; ignoring");
                self.sandbox_reads.insert(request, p);
            }
            None => debug!(agent = %agent, request, "late sandbox answer dropped"),
        }
    }

    fn expire_sandbox_reads(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .sandbox_reads
            .iter()
            .filter(|(_, p)| {
                p.deadline <= now || self.agents.get(&p.agent).is_none_or(|a| a.conn.is_none())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.sandbox_reads.remove(&id) {
                let message = format!("agent {} did not answer the sandbox read", p.agent);
                self.reply(p.reply, OperatorReply::Error { message });
            }
        }
    }

    /// Rebuilds the summary for its watchers, if anyone watches and it is time.
    fn publish_summary(&mut self, now: Instant) {
        if now < self.next_summary || !self.events.summary_watched() {
            return;
        }
        self.next_summary = now + feed::SUMMARY_EVERY;
        self.events.publish_summary(self.summary());
    }

    /// Agents' loads and jobs' progress: what the front panel draws, without the tasks.
    pub fn summary(&self) -> ClusterSummary {
        let mut agents: Vec<AgentLoad> = self
            .agents
            .iter()
            .map(|(id, a)| AgentLoad {
                id: id.clone(),
                hostname: a.hostname.clone(),
                connected: a.conn.is_some(),
                total: a.total.clone(),
                allocated: self.allocated_on(id, &a.total),
            })
            .collect();
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        ClusterSummary {
            agents,
            jobs: self.jobs(),
        }
    }

    /// What frameworks hold on an agent with `total` resources.
    fn allocated_on(&self, id: &AgentId, total: &Resources) -> Resources {
        let free = self.allocator.agent_free(id);
        total.saturating_sub(free.as_ref().unwrap_or(total))
    }

    fn jobs(&self) -> Vec<JobSummary> {
        let mut jobs: Vec<JobSummary> = self
            .progress
            .iter()
            .map(|(id, p)| JobSummary {
                framework_id: id.clone(),
                framework_name: self
                    .frameworks
                    .get(id)
                    .map(|f| f.info.name.clone())
                    .unwrap_or_default(),
                progress: p.clone(),
            })
            .collect();
        jobs.sort_by(|a, b| a.framework_id.cmp(&b.framework_id));
        jobs
    }

    pub fn snapshot(&self) -> ClusterState {
        let mut agents: Vec<AgentSummary> = self
            .agents
            .iter()
            .map(|(id, a)| AgentSummary {
                id: id.clone(),
                hostname: a.hostname.clone(),
                address: a.address.to_string(),
                connected: a.conn.is_some(),
                total: a.total.clone(),
                allocated: self.allocated_on(id, &a.total),
                attributes: a.attributes.clone(),
                last_heartbeat: bramble_proto::unix_now() - a.last_seen.elapsed().as_secs_f64(),
            })
            .collect();
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        let mut frameworks: Vec<FrameworkSummary> = self
            .frameworks
            .iter()
            .map(|(id, f)| FrameworkSummary {
                id: id.clone(),
                name: f.info.name.clone(),
                role: f.info.role.clone(),
                connected: f.conn.is_some(),
                allocated: self.allocator.framework_allocation(id),
                tasks_by_state: f
                    .tasks
                    .values()
                    .map(|t| t.state)
                    .chain(
                        self.completed
                            .iter()
                            .filter(|t| &t.framework_id == id && !f.tasks.contains_key(&t.id))
                            .map(|t| t.state),
                    )
                    .fold(BTreeMap::new(), |mut m, s| {
                        *m.entry(s).or_insert(0) += 1;
                        m
                    }),
            })
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        let mut tasks: Vec<TaskSummary> = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .map(move |(tid, t)| task_summary(fid, tid, t))
            })
            .collect();
        tasks.sort_by(|a, b| a.framework_id.cmp(&b.framework_id).then(a.id.cmp(&b.id)));
        ClusterState {
            cluster_id: self.cluster_id.clone(),
            agents,
            frameworks,
            tasks,
            jobs: self.jobs(),
            offers_outstanding: self.offers.len() as u64,
            completed_tasks: self
                .completed
                .iter()
                .filter(|t| {
                    self.frameworks
                        .get(&t.framework_id)
                        .is_none_or(|f| !f.tasks.contains_key(&t.id))
                })
                .cloned()
                .collect(),
        }
    }

    /// Whether a hello of `kind` is allowed for a certificate of `role`.
    pub fn admits(kind: PeerKind, role: bramble_proto::identity::Role) -> Result<(), String> {
        use bramble_proto::identity::Role;
        match (kind, role) {
            (PeerKind::Agent, Role::Node) => Ok(()),
            (PeerKind::Scheduler, Role::Framework | Role::Operator) => Ok(()),
            (PeerKind::Operator, Role::Operator) => Ok(()),
            (kind, role) => Err(format!(
                "a {role} certificate may not connect as {}",
                match kind {
                    PeerKind::Agent => "an agent (needs a node certificate)",
                    PeerKind::Scheduler =>
                        "a scheduler (needs a framework or operator certificate)",
                    PeerKind::Operator => "an operator (needs an operator certificate)",
                }
            )),
        }
    }
}

fn task_summary(fw: &FrameworkId, id: &TaskId, t: &TaskEntry) -> TaskSummary {
    TaskSummary {
        id: id.clone(),
        name: t.info.name.clone(),
        framework_id: fw.clone(),
        agent_id: t.info.agent_id.clone(),
        state: t.state,
        message: t.message.clone(),
        resources: t.info.resources.clone(),
        reason: t.reason,
        launched_at: t.launched_at,
        started_at: t.started_at,
        ended_at: t.ended_at,
    }
}

fn msg_kind_agent(msg: &MasterToAgent) -> &'static str {
    match msg {
        MasterToAgent::Registered { .. } => "Registered",
        MasterToAgent::HeartbeatAck => "HeartbeatAck",
        MasterToAgent::RunTasks { .. } => "RunTasks",
        MasterToAgent::KillTask { .. } => "KillTask",
        MasterToAgent::Acknowledge { .. } => "Acknowledge",
        MasterToAgent::FrameworkMessage { .. } => "FrameworkMessage",
        MasterToAgent::ShutdownFramework { .. } => "ShutdownFramework",
        MasterToAgent::ReadSandbox { .. } => "ReadSandbox",
        MasterToAgent::ListSandbox { .. } => "ListSandbox",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::identity::Role;
    use bramble_proto::task::CommandInfo;
    use tokio::sync::mpsc::error::TryRecvError;

    fn timeouts() -> Timeouts {
        Timeouts {
            heartbeat_interval: Duration::from_millis(200),
            agent_timeout: Duration::from_secs(2),
            offer_timeout: Duration::from_secs(30),
            allocation_interval: Duration::from_millis(200),
            agent_reregistration_timeout: Duration::from_secs(5),
        }
    }

    fn identity(role: Role) -> PeerIdentity {
        PeerIdentity {
            role,
            subject: "test".into(),
            address: "127.0.0.1:9".parse().expect("addr"),
        }
    }

    fn connect_agent(m: &mut Master, conn: ConnId, now: Instant) -> mpsc::Receiver<MasterToAgent> {
        let (tx, rx) = mpsc::channel(64);
        m.handle(
            Input::Connected {
                conn,
                identity: identity(Role::Node),
                tx: PeerTx::Agent(tx),
                handle: None,
            },
            now,
        );
        rx
    }

    fn connect_framework(
        m: &mut Master,
        conn: ConnId,
        id: Option<&str>,
        now: Instant,
    ) -> mpsc::Receiver<MasterEvent> {
        let (tx, rx) = mpsc::channel(64);
        m.handle(
            Input::Connected {
                conn,
                identity: identity(Role::Framework),
                tx: PeerTx::Scheduler(tx),
                handle: None,
            },
            now,
        );
        let info = FrameworkInfo {
            framework_id: id.map(|i| FrameworkId(i.into())),
            name: "fw".into(),
            role: "*".into(),
            failover_timeout_secs: 60.0,
        };
        m.handle(
            Input::FromScheduler {
                conn,
                call: SchedulerCall::Subscribe(info),
            },
            now,
        );
        rx
    }

    fn register(m: &mut Master, conn: ConnId, id: &str, tasks: Vec<RunningTask>, now: Instant) {
        m.handle(
            Input::FromAgent {
                conn,
                msg: AgentToMaster::Register {
                    agent_id: Some(AgentId(id.into())),
                    hostname: id.into(),
                    resources: Resources::new(2.0, 1024),
                    attributes: BTreeMap::new(),
                    tasks,
                },
            },
            now,
        );
    }

    fn task_info(id: &str) -> TaskInfo {
        TaskInfo {
            task_id: TaskId(id.into()),
            name: id.into(),
            agent_id: AgentId("a1".into()),
            resources: Resources::new(0.5, 64),
            command: Some(CommandInfo::shell("sleep 600")),
            executor: None,
            data: Vec::new(),
        }
    }

    fn recovered(tasks: &[&str]) -> Recovered {
        Recovered {
            frameworks: vec![FrameworkRecord {
                id: FrameworkId("fw1".into()),
                info: FrameworkInfo {
                    framework_id: Some(FrameworkId("fw1".into())),
                    name: "fw".into(),
                    role: "*".into(),
                    failover_timeout_secs: 60.0,
                },
            }],
            agents: vec![AgentRecord {
                id: AgentId("a1".into()),
                hostname: "a1".into(),
                address: "127.0.0.1:9".parse().expect("addr"),
                total: Resources::new(2.0, 1024),
                attributes: BTreeMap::new(),
                executors: Vec::new(),
            }],
            tasks: tasks
                .iter()
                .map(|t| TaskRecord {
                    framework_id: FrameworkId("fw1".into()),
                    info: task_info(t),
                    state: TaskState::Running,
                    message: String::new(),
                    reason: None,
                    launched_at: 0.0,
                    started_at: Some(0.0),
                    ended_at: None,
                    terminal: None,
                    resend_by_master: false,
                })
                .collect(),
        }
    }

    fn drain<T>(rx: &mut mpsc::Receiver<T>) -> Vec<T> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        out
    }

    #[test]
    fn replies_wait_in_the_outbox_until_the_burst_is_taken_for_commit() {
        let now = Instant::now();
        let mut m = Master::new("c".into(), timeouts(), now);
        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        let mut fw = connect_framework(&mut m, 2, None, now);
        m.end_burst(now);
        assert!(matches!(agent.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(fw.try_recv(), Err(TryRecvError::Empty)));
        let batch = m.take_writes();
        assert_eq!(batch.agents.len(), 1);
        assert!(batch.agents[0].1.is_some());
        assert_eq!(batch.frameworks.len(), 1);
        m.flush_outbox();
        assert!(matches!(
            agent.try_recv(),
            Ok(MasterToAgent::Registered { .. })
        ));
        assert!(matches!(fw.try_recv(), Ok(MasterEvent::Subscribed { .. })));
        // Nothing changed since: the next batch is empty.
        assert!(m.take_writes().is_empty());
    }

    #[test]
    fn a_kill_lost_with_the_agents_connection_is_sent_again_when_it_re_registers() {
        let now = Instant::now();
        let mut m = Master::new("c".into(), timeouts(), now);
        m.recover(recovered(&["sleeper", "other"]), now);
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        let running = |id: &str| RunningTask {
            framework_id: FrameworkId("fw1".into()),
            task: task_info(id),
            state: TaskState::Running,
        };
        let mut agent = connect_agent(&mut m, 1, now);
        register(
            &mut m,
            1,
            "a1",
            vec![running("sleeper"), running("other")],
            now,
        );
        m.end_burst(now);
        m.take_writes();
        m.flush_outbox();
        drain(&mut agent);

        // The kill goes out on a connection that is already dead (the agent never sees it).
        m.handle(
            Input::FromScheduler {
                conn: 2,
                call: SchedulerCall::Kill {
                    task_id: TaskId("sleeper".into()),
                },
            },
            now,
        );
        m.end_burst(now);
        m.take_writes();
        m.flush_outbox();
        let lost_with_link = drain(&mut agent);
        assert!(
            lost_with_link.iter().any(|msg| matches!(msg, MasterToAgent::KillTask { task_id, .. } if task_id.as_str() == "sleeper")),
            "{lost_with_link:?}"
        );
        drop(agent);
        m.handle(
            Input::Disconnected {
                conn: 1,
                reason: "link dropped".into(),
                graceful: false,
            },
            now,
        );

        // Back on a new connection, still running it: the kill is sent again, and only it.
        let mut agent = connect_agent(&mut m, 3, now);
        register(
            &mut m,
            3,
            "a1",
            vec![running("sleeper"), running("other")],
            now,
        );
        m.end_burst(now);
        m.take_writes();
        m.flush_outbox();
        let kills: Vec<String> = drain(&mut agent)
            .into_iter()
            .filter_map(|msg| match msg {
                MasterToAgent::KillTask { task_id, .. } => Some(task_id.as_str().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(kills, vec!["sleeper".to_string()]);
    }

    #[test]
    fn a_recovered_agent_keeps_the_tasks_it_reports_and_the_missing_one_is_lost_until_acked() {
        let now = Instant::now();
        let mut m = Master::new("c".into(), timeouts(), now);
        m.recover(recovered(&["kept", "gone"]), now);
        assert!(m.take_writes().is_empty(), "recovery itself writes nothing");
        // No offers from an agent that has not re-registered.
        let mut fw = connect_framework(&mut m, 2, Some("fw1"), now);
        m.tick(now + Duration::from_secs(1));
        m.take_writes();
        m.flush_outbox();
        let events = drain(&mut fw);
        assert!(
            matches!(events.first(), Some(MasterEvent::Subscribed { .. })),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, MasterEvent::Offers(_))),
            "{events:?}"
        );

        let mut agent = connect_agent(&mut m, 1, now);
        let kept = RunningTask {
            framework_id: FrameworkId("fw1".into()),
            task: task_info("kept"),
            state: TaskState::Running,
        };
        register(&mut m, 1, "a1", vec![kept], now);
        m.end_burst(now);
        let batch = m.take_writes();
        let lost = batch
            .tasks
            .iter()
            .find(|((_, t), _)| t.as_str() == "gone")
            .and_then(|(_, r)| r.clone())
            .expect("the missing task is written");
        assert_eq!(lost.state, TaskState::Lost);
        assert!(lost.resend_by_master);
        m.flush_outbox();
        let to_agent = drain(&mut agent);
        assert!(
            !to_agent
                .iter()
                .any(|msg| matches!(msg, MasterToAgent::KillTask { .. })),
            "{to_agent:?}"
        );
        let update = drain(&mut fw)
            .into_iter()
            .find_map(|e| match e {
                MasterEvent::Update(s) if s.task_id.as_str() == "gone" => Some(s),
                _ => None,
            })
            .expect("LOST forwarded");
        assert_eq!(update.state, TaskState::Lost);
        let uuid = update.uuid.expect("a uuid to acknowledge");

        // Resent on the framework's next subscription, until acknowledged.
        m.handle(
            Input::Disconnected {
                conn: 2,
                reason: "test".into(),
                graceful: false,
            },
            now,
        );
        let mut fw = connect_framework(&mut m, 3, Some("fw1"), now);
        m.take_writes();
        m.flush_outbox();
        assert!(drain(&mut fw)
            .iter()
            .any(|e| matches!(e, MasterEvent::Update(s) if s.uuid == Some(uuid))));
        m.handle(
            Input::FromScheduler {
                conn: 3,
                call: SchedulerCall::Acknowledge {
                    agent_id: AgentId("a1".into()),
                    task_id: TaskId("gone".into()),
                    uuid,
                },
            },
            now,
        );
        let batch = m.take_writes();
        assert!(
            batch
                .tasks
                .iter()
                .any(|((_, t), r)| t.as_str() == "gone" && r.is_none()),
            "{batch:?}"
        );
        m.flush_outbox();
        // The agent never made that update, so it is not told about its acknowledgement.
        assert!(drain(&mut agent).is_empty());
        assert!(m.snapshot().tasks.iter().any(|t| t.id.as_str() == "kept"));
    }

    #[test]
    fn a_recovered_agent_that_does_not_return_is_removed_after_the_reregistration_timeout() {
        let now = Instant::now();
        let mut m = Master::new("c".into(), timeouts(), now);
        m.recover(recovered(&["t"]), now);
        // Longer than the agent timeout, shorter than the re-registration timeout: kept.
        m.tick(now + Duration::from_secs(3));
        assert_eq!(m.snapshot().agents.len(), 1);
        m.tick(now + Duration::from_secs(6));
        let s = m.snapshot();
        assert!(s.agents.is_empty(), "{:?}", s.agents);
        let t = s.tasks.iter().find(|t| t.id.as_str() == "t").expect("task");
        assert_eq!(t.state, TaskState::Lost);
        assert_eq!(t.reason, Some(TaskReason::AgentRemoved));
        let batch = m.take_writes();
        assert!(batch.agents.iter().any(|(_, r)| r.is_none()));
    }
}
