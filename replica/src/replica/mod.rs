//! [`Replica`]: one node of the group, its store, its endpoint and its Raft, behind a small
//! API: `write` (acknowledged once a majority has it), `read`/`list` (linearizable through the
//! leader), who leads, membership, shutdown.

mod election;
mod requests;

use bramble_proto::identity::Credentials;
use bramble_proto::transport::TransportError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, Raft, RaftMetrics};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod membership;

pub use membership::Member;

use crate::config::{ConfigError, ReplicaConfig, Tuning};
use crate::network::{CallError, Net, Network, Refusal, Reply, Request};
use crate::store::{self, Joined, LogStore, StateMachine, StoreError};
use crate::types::{
    Command, NodeId, Response, Role, Row, TypeConfig, Versioned, MAX_COMMAND_BYTES,
};
use election::election_watchdog;
use requests::{admit_members, handle};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("not the leader; the leader is {}", match .leader { Some((id, addr)) => format!("{id} at {addr}"), None => "unknown (an election is under way)".into() })]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error(
        "no majority answered within {0:?} (a write's outcome is unknown: it may still commit)"
    )]
    Timeout(Duration),
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replication endpoint: {0}")]
    Transport(#[from] TransportError),
    /// Forwarding to the leader failed before the request left: nothing was done.
    #[error("forwarding to the leader: {0}")]
    Forward(#[from] CallError),
    /// A forwarded request reached (or may have reached) the leader, and no answer came
    /// back: a write may have committed, or may still commit. Callers re-read (or make the
    /// write a compare-and-set) to learn which; [`ReplicaError::Timeout`] means the same.
    #[error(
        "forwarded to the leader, no answer (the outcome is unknown: it may have committed): {0}"
    )]
    OutcomeUnknown(CallError),
    /// A [`Replica::write_in_term`] made after this node's term `expected` ended (the entry
    /// went into term `now`): nothing was written.
    #[error("the term {expected} this master leads in is over (the write went into term {now}); nothing was written")]
    Fenced { expected: u64, now: u64 },
    #[error("raft: {0}")]
    Raft(String),
    #[error("this replica is shut down")]
    Stopped,
    /// A membership change refused before anything was changed (the reason says why and
    /// what to do instead).
    #[error("{0}")]
    Membership(String),
}

impl ReplicaError {
    /// A write that failed with this may nevertheless have committed (or still commit):
    /// [`ReplicaError::Timeout`] and [`ReplicaError::OutcomeUnknown`]. Every other error
    /// means the write was not made.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ReplicaError::Timeout(_) | ReplicaError::OutcomeUnknown(_)
        )
    }
}

/// One node of the replicated group. Clones share it; [`Replica::shutdown`] stops it for all.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft<TypeConfig>,
    /// Released at shutdown, so a new replica can open the directory.
    store: Mutex<Option<(StateMachine, LogStore)>>,
    net: Net,
    tuning: Tuning,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When a leader's append last reached us (see [`stand_if_better`]).
    leader_contact: Mutex<Option<Instant>>,
    /// A campaign [`stand_if_better`] started is under way.
    standing: Arc<AtomicBool>,
    /// Until when this node does not stand for election: set while it hands its leadership
    /// over ([`Replica::abdicate`]), cleared once another leads.
    hold_until: Mutex<Option<Instant>>,
    /// The snapshot being received, and how many bytes of it (see [`admit_chunk`]).
    receiving: Mutex<Option<(String, u64)>>,
    /// The configured peers' addresses: always admitted (see [`admit_members`]).
    configured: Vec<std::net::IpAddr>,
    /// Addresses of learners being added, admitted until the membership names them.
    adding: Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

impl Inner {
    fn sm(&self) -> Result<StateMachine, ReplicaError> {
        lock(&self.store)
            .as_ref()
            .map(|(sm, _)| sm.clone())
            .ok_or(ReplicaError::Stopped)
    }

    fn log(&self) -> Result<LogStore, ReplicaError> {
        lock(&self.store)
            .as_ref()
            .map(|(_, log)| log.clone())
            .ok_or(ReplicaError::Stopped)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long `shutdown` waits for the endpoint's connections to close.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// The cluster name openraft logs; one group per cluster.
const CLUSTER: &str = "bramble-masters";

fn leader_of(f: &ForwardToLeader<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    match (f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Some((id, node.addr.clone())),
        _ => None,
    }
}

impl Replica {
    /// Opens the store in `dir`, binds the endpoint at this node's address, starts Raft, and on
    /// a fresh store with `config.bootstrap` proposes `config.peers` as the group.
    pub async fn start(
        config: ReplicaConfig,
        dir: &Path,
        tls: &Credentials,
    ) -> Result<Replica, ReplicaError> {
        config.validate()?;
        let listen = config.listen().ok_or(ConfigError::SelfMissing(config.id))?;
        let db = {
            // Off the runtime's threads: `open` may wait for a store this process releases.
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || store::open(&dir))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))??
        };
        let log = LogStore::new(db.clone());
        let sm = StateMachine::new(db);
        let net = Net::bind(tls, listen).await?;
        // Only the group's members may connect: every card holds a node certificate.
        net.admit_only(config.peers.values().map(|a| a.ip()));
        let raft_config = config
            .tuning
            .openraft(CLUSTER)
            .validate()
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            Network { net: net.clone() },
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let mut joined = log.joined().await?;
        if fresh && config.bootstrap {
            let members: BTreeMap<NodeId, BasicNode> = config
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    log.set_joined(Joined::Bootstrapped).await?;
                    joined = Some(Joined::Bootstrapped);
                }
                Err(e) => tracing::debug!(error = %e, "replica: not initializing"),
            }
        } else if fresh {
            tracing::info!(
                id = config.id,
                "replica: empty store and not bootstrapping: waiting to be added as a learner"
            );
        }
        let inner = Arc::new(Inner {
            id: config.id,
            raft,
            store: Mutex::new(Some((sm, log))),
            net: net.clone(),
            tuning: config.tuning,
            server: Mutex::new(None),
            leader_contact: Mutex::new(None),
            standing: Arc::default(),
            hold_until: Mutex::new(None),
            receiving: Mutex::default(),
            configured: config.peers.values().map(|a| a.ip()).collect(),
            adding: Mutex::default(),
        });
        let handler = {
            let inner = inner.clone();
            move |req: Request| {
                let inner = inner.clone();
                async move { handle(&inner, req).await }
            }
        };
        *lock(&inner.server) = Some(tokio::spawn(net.clone().serve(handler)));
        tokio::spawn(admit_members(Arc::downgrade(&inner)));
        tokio::spawn(election_watchdog(Arc::downgrade(&inner)));
        if fresh && joined.is_none() {
            tokio::spawn(record_added(Arc::downgrade(&inner)));
        }
        tracing::info!(id = config.id, %listen, fresh, ?joined, "replica: started");
        Ok(Replica { inner })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// openraft's metrics: watch it to wait for a role, a leader, an applied index.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.inner.raft.metrics()
    }

    /// Waits until the consensus core stops on its own and says why: a storage failure (a
    /// full disk, a damaged store) stops it for good, and this node then neither votes nor
    /// takes entries until it is restarted. Never returns while the core runs; after
    /// [`Replica::shutdown`] it returns too (the core stopped), so race it against what
    /// would shut down instead.
    pub async fn core_stopped(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        while metrics.changed().await.is_ok() {}
        match self.inner.raft.with_raft_state(|_| ()).await {
            Err(fatal) => fatal.to_string(),
            Ok(()) => "the consensus core stopped".to_string(),
        }
    }

    /// Hands the leadership of `term` to another node, for a leader that cannot do its job (its master
    /// service failed to start, or stopped on a failed write): it stops sending heartbeats, so
    /// the others elect one of themselves once the lease runs out (about a second), and this
    /// node stands for no election meanwhile. Once another leads (or the term moves on), the
    /// heartbeats and the election timer are back to normal; if none could be elected within
    /// `hold`, this node leads on. openraft 0.9 has no leadership transfer; this is the same
    /// hand-over through the election timers. A node that does not lead does nothing: holding
    /// it back from the next election would only slow that election.
    pub fn abdicate(&self, term: u64, hold: Duration) {
        let leading = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            m.state == openraft::ServerState::Leader && m.current_term == term
        };
        // Not leading in `term` (deposed, or already leading again in a newer one, which is
        // not the leadership that failed): nothing to hand over.
        if !leading {
            return;
        }
        let until = Instant::now() + hold;
        *lock(&self.inner.hold_until) = Some(until);
        tracing::warn!(
            id = self.inner.id,
            term,
            ?hold,
            "replica: handing the leadership to another node (heartbeats stopped)"
        );
        self.inner.raft.runtime_config().heartbeat(false);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let handed = inner
                .raft
                .wait(Some(hold))
                .metrics(
                    |m| m.state != openraft::ServerState::Leader || m.current_term != term,
                    "another leader elected",
                )
                .await;
            if handed.is_err() {
                tracing::warn!(term, "replica: no other node was elected; leading on");
            }
            // Only this hand-over's hold: a newer one (abdicating again once this hold ran
            // out) keeps the heartbeats off and clears its own.
            let mut held = lock(&inner.hold_until);
            if *held == Some(until) {
                *held = None;
                drop(held);
                inner.raft.runtime_config().heartbeat(true);
            }
        });
    }

    /// How much longer this node holds back from elections after [`Replica::abdicate`];
    /// `None` when it does not.
    pub fn holding_back(&self) -> Option<Duration> {
        lock(&self.inner.hold_until)
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// The underlying Raft, for what this API does not cover (tests wait on `wait()`).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    pub fn role(&self) -> Role {
        self.inner.raft.metrics().borrow().state.into()
    }

    pub fn term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term
    }

    /// The leader this node knows of, and its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    /// Commits `cmd` (on the leader; a follower forwards it there) and answers what applying
    /// it said. Acknowledged only once a majority has the entry.
    pub async fn write(&self, cmd: Command) -> Result<Response, ReplicaError> {
        admit(&cmd).map_err(ReplicaError::Invalid)?;
        match write_local(&self.inner.raft, &self.inner.tuning, cmd.clone()).await {
            Err(Refusal::NotLeader {
                leader: Some((id, addr)),
            }) if id != self.inner.id => {
                let reply = self.forward(&addr, Request::Write(cmd)).await?;
                match reply {
                    Reply::Write(r) => r.map_err(refused),
                    _ => Err(ReplicaError::Raft("unexpected reply to a write".into())),
                }
            }
            r => r.map_err(refused),
        }
    }

    /// Commits `cmd` only if this node leads: never forwarded. A master serving as leader
    /// writes through this, so a master deposed meanwhile gets `NotLeader` (and stops serving)
    /// instead of having its writes land on the new leader's state.
    pub async fn write_as_leader(&self, cmd: Command) -> Result<Response, ReplicaError> {
        write_local(&self.inner.raft, &self.inner.tuning, cmd)
            .await
            .map_err(refused)
    }

    /// Commits `cmd` only if this node leads *in `term`*: as [`Replica::write_as_leader`],
    /// and in a [`Command::InTerm`] fence, so a write proposed after `term` ended (this node
    /// deposed, perhaps elected again since) writes nothing and fails with
    /// [`ReplicaError::Fenced`]. The master serving as leader writes through this with the
    /// term it was elected and loaded its records in.
    pub async fn write_in_term(&self, term: u64, cmd: Command) -> Result<Response, ReplicaError> {
        let fenced = Command::InTerm {
            term,
            command: Box::new(cmd),
        };
        match self.write_as_leader(fenced).await? {
            Response::Fenced { term: now } => Err(ReplicaError::Fenced {
                expected: term,
                now,
            }),
            r => Ok(r),
        }
    }

    /// Returns once this node leads and has applied everything committed before (a heartbeat
    /// round confirms it still leads): what a new leader waits for before reading its state.
    pub async fn read_barrier(&self) -> Result<(), ReplicaError> {
        ensure_linearizable(&self.inner.raft, &self.inner.tuning)
            .await
            .map_err(refused)
    }

    /// `key` of `table` as of now: the leader confirms it still leads (a heartbeat round) and
    /// has applied everything committed before answering. A follower asks the leader.
    pub async fn read(&self, table: &str, key: &str) -> Result<Option<Versioned>, ReplicaError> {
        match ensure_linearizable(&self.inner.raft, &self.inner.tuning).await {
            Ok(()) => Ok(self.inner.sm()?.get(table, key).await?),
            Err(Refusal::NotLeader {
                leader: Some((id, addr)),
            }) if id != self.inner.id => {
                let req = Request::Read {
                    table: table.into(),
                    key: key.into(),
                };
                match self.forward(&addr, req).await? {
                    Reply::Read(r) => r.map_err(refused),
                    _ => Err(ReplicaError::Raft("unexpected reply to a read".into())),
                }
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// The rows of `table` whose key starts with `prefix`, linearizable like [`Self::read`].
    pub async fn list(&self, table: &str, prefix: &str) -> Result<Vec<Row>, ReplicaError> {
        match ensure_linearizable(&self.inner.raft, &self.inner.tuning).await {
            Ok(()) => Ok(self.inner.sm()?.list(table, prefix).await?),
            Err(Refusal::NotLeader {
                leader: Some((id, addr)),
            }) if id != self.inner.id => {
                let req = Request::List {
                    table: table.into(),
                    prefix: prefix.into(),
                };
                match self.forward(&addr, req).await? {
                    Reply::List(r) => r.map_err(refused),
                    _ => Err(ReplicaError::Raft("unexpected reply to a list".into())),
                }
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// `key` as this node has applied it: possibly stale on a follower, never blocked.
    pub async fn read_local(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<Versioned>, ReplicaError> {
        Ok(self.inner.sm()?.get(table, key).await?)
    }

    /// This node's applied rows of `table` under `prefix` (possibly stale).
    pub async fn list_local(&self, table: &str, prefix: &str) -> Result<Vec<Row>, ReplicaError> {
        Ok(self.inner.sm()?.list(table, prefix).await?)
    }

    /// How this node's store joined its group: formed it (`bootstrap`), added by a leader,
    /// or `None` (not yet: an empty store waiting to be added).
    pub async fn joined(&self) -> Result<Option<Joined>, ReplicaError> {
        Ok(self.inner.log()?.joined().await?)
    }

    /// The first and last log index this node still holds (`None`: all purged).
    pub async fn log_range(&self) -> Result<Option<(u64, u64)>, ReplicaError> {
        Ok(self.inner.log()?.index_range().await?)
    }

    async fn forward(&self, addr: &str, req: Request) -> Result<Reply, ReplicaError> {
        // The leader has its own request timeout; allow it plus a round trip.
        let ttl = self.inner.tuning.request_timeout + Duration::from_secs(1);
        match self.inner.net.call(addr, &req, ttl).await {
            Ok(reply) => Ok(reply),
            Err(e) if e.maybe_delivered() => Err(ReplicaError::OutcomeUnknown(e)),
            Err(e) => Err(ReplicaError::Forward(e)),
        }
    }

    /// Adds a node that receives the log but does not vote, and waits until it has caught
    /// up. On the leader only.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), ReplicaError> {
        // Members are known by `IP:PORT` (a config's names are resolved when it is read).
        if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
            lock(&self.inner.adding).insert(a.ip());
            self.inner.net.admit(a.ip());
        }
        self.inner
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }

    /// Makes `voters` the voting members (joint consensus; nodes left out become learners
    /// and are dropped). On the leader only.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), ReplicaError> {
        self.inner
            .raft
            .change_membership(voters, false)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }

    /// Forms a new group of exactly `members` on this node's fresh store: what
    /// [`ReplicaConfig::bootstrap`] does at start, for a node that learnt its peers only after
    /// it started (`[ha] peers = "mdns"`). Refused (`Raft` error) once the store holds a
    /// membership: a group is formed once.
    pub async fn bootstrap(
        &self,
        members: BTreeMap<NodeId, std::net::SocketAddr>,
    ) -> Result<(), ReplicaError> {
        let log = self.inner.log()?;
        if log.joined().await?.is_some() {
            return Err(ReplicaError::Raft(
                "this node already belongs to a group".into(),
            ));
        }
        for addr in members.values() {
            self.inner.net.admit(addr.ip());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.to_string())))
            .collect();
        self.inner
            .raft
            .initialize(nodes)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        log.set_joined(Joined::Bootstrapped).await?;
        tracing::info!(id = self.inner.id, members = ?members, "replica: formed a new group");
        Ok(())
    }

    /// Accepts replication connections from `ip` too: a node that is not yet a member hears
    /// the group's leader only from an address it admits (`[ha] peers = "mdns"`: the
    /// candidates seen).
    pub fn admit(&self, ip: std::net::IpAddr) {
        // Kept admitted until the membership names it (see `admit_members`).
        lock(&self.inner.adding).insert(ip);
        self.inner.net.admit(ip);
    }

    /// Test hook, a network partition: while set, this node neither sends nor accepts any
    /// replication traffic (its Raft keeps running, alone).
    pub fn isolate(&self, isolated: bool) {
        self.inner.net.set_isolated(isolated);
    }

    /// Stops Raft, closes the endpoint (peers see the connections end) and releases the
    /// store: a new `Replica` may then open the same directory.
    pub async fn shutdown(&self) -> Result<(), ReplicaError> {
        let inner = &self.inner;
        let stopped = inner.raft.shutdown().await;
        if let Some(server) = lock(&inner.server).take() {
            server.abort();
        }
        inner.net.close();
        lock(&inner.store).take();
        // Lets the closes reach the peers and frees the port for a restart in this process.
        let idle = tokio::time::timeout(SHUTDOWN_DRAIN, inner.net.wait_idle()).await;
        tracing::info!(id = inner.id, drained = idle.is_ok(), "replica: stopped");
        stopped.map_err(|e| ReplicaError::Raft(e.to_string()))
    }
}

fn refused(r: Refusal) -> ReplicaError {
    match r {
        Refusal::NotLeader { leader } => ReplicaError::NotLeader { leader },
        Refusal::Invalid(s) => ReplicaError::Invalid(s),
        Refusal::Timeout(after) => ReplicaError::Timeout(after),
        Refusal::Failed(s) => ReplicaError::Raft(s),
    }
}

fn client_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ReplicaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ReplicaError::NotLeader {
            leader: leader_of(&f),
        },
        e => ReplicaError::Raft(e.to_string()),
    }
}

/// What the state machine could not refuse once committed: [`Command::validate`], and the
/// encoded size against [`MAX_COMMAND_BYTES`].
fn admit(cmd: &Command) -> Result<(), String> {
    cmd.validate()?;
    let size = bramble_proto::codec::payload_size(cmd).map_err(|e| e.to_string())?;
    if size > MAX_COMMAND_BYTES {
        return Err(format!(
            "a command of {size} bytes is over the {MAX_COMMAND_BYTES}-byte limit"
        ));
    }
    Ok(())
}

/// A write made here, never forwarded.
async fn write_local(
    raft: &Raft<TypeConfig>,
    tuning: &Tuning,
    cmd: Command,
) -> Result<Response, Refusal> {
    // Here too, not only in `Replica::write`: a peer's forwarded write arrives here, and an
    // entry over the limit would make an AppendEntries frame no follower accepts, resent
    // forever.
    admit(&cmd).map_err(Refusal::Invalid)?;
    match tokio::time::timeout(tuning.request_timeout, raft.client_write(cmd)).await {
        Err(_) => Err(Refusal::Timeout(tuning.request_timeout)),
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(Refusal::NotLeader {
                leader: leader_of(&f),
            })
        }
        Ok(Err(e)) => Err(Refusal::Failed(e.to_string())),
    }
}

async fn ensure_linearizable(raft: &Raft<TypeConfig>, tuning: &Tuning) -> Result<(), Refusal> {
    match tokio::time::timeout(tuning.request_timeout, raft.ensure_linearizable()).await {
        Err(_) => Err(Refusal::Timeout(tuning.request_timeout)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(Refusal::NotLeader {
                leader: leader_of(&f),
            })
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(Refusal::Timeout(tuning.request_timeout))
        }
        Ok(Err(e)) => Err(Refusal::Failed(e.to_string())),
    }
}

/// Records [`Joined::Added`] once a fresh store that did not bootstrap receives its first
/// membership from a leader. Holds the replica weakly: shutdown must release the store.
async fn record_added(inner: std::sync::Weak<Inner>) {
    let Some(mut metrics) = inner.upgrade().map(|i| i.raft.metrics()) else {
        return;
    };
    let member = metrics
        .wait_for(|m| m.membership_config.membership().nodes().next().is_some())
        .await
        .is_ok();
    let Some(inner) = inner.upgrade() else { return };
    if !member {
        return;
    }
    let Ok(log) = inner.log() else { return };
    match log.set_joined(Joined::Added).await {
        Ok(()) => tracing::info!(id = inner.id, "replica: added to the group by its leader"),
        Err(e) => tracing::warn!(id = inner.id, error = %e, "replica: recording the join"),
    }
}
