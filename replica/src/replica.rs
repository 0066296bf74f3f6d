//! [`Replica`]: one node of the group, its store, its endpoint and its Raft, behind a small
//! API: `write` (acknowledged once a majority has it), `read`/`list` (linearizable through the
//! leader), who leads, membership, shutdown.

use bramble_proto::identity::Credentials;
use bramble_proto::transport::TransportError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft, RaftMetrics};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The largest snapshot a node accepts: snapshots are held in memory, and the master's
/// state is megabytes.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// How far above our term a peer's may be. Terms grow by one an election (a few a second
/// at most, even for a node cut off and standing alone: centuries to cover this); a term
/// beyond it is hostile, and near `u64::MAX` openraft's `term + 1` would overflow.
const MAX_TERM_AHEAD: u64 = 1 << 32;

/// Checks a Raft RPC's sender before openraft sees it: the leader or candidate it names must
/// be a member (of the effective or the committed membership, so a leader committing its own
/// removal is still heard; a node with no membership yet, waiting to be added, hears
/// anyone), and its term not absurdly ahead. A partial defence: any node certificate may
/// claim any node id (certificates carry none yet; see ARCHITECTURE.md).
async fn admit_sender(
    inner: &Inner,
    vote: &openraft::Vote<NodeId>,
    empty_ok: bool,
) -> Result<(), String> {
    let term = vote.leader_id().term;
    let ours = inner.raft.metrics().borrow().current_term;
    if term > ours.saturating_add(MAX_TERM_AHEAD) {
        return Err(format!(
            "term {term} is absurdly far ahead of ours ({ours})"
        ));
    }
    let Some(id) = vote.leader_id().voted_for() else {
        return Err("no node named".into());
    };
    let member = inner
        .raft
        .with_raft_state(move |st| {
            let ms = &st.membership_state;
            let (eff, com) = (ms.effective().membership(), ms.committed().membership());
            (empty_ok && eff.nodes().next().is_none())
                || eff.get_node(&id).is_some()
                || com.get_node(&id).is_some()
        })
        .await
        .unwrap_or(false);
    if member {
        Ok(())
    } else {
        Err(format!("node {id} is not a member"))
    }
}

/// Checks a snapshot chunk: its offset must be within what this node has received of that
/// snapshot (a resent chunk is fine; a gap is not: openraft would grow its buffer to the
/// offset), and the total under [`MAX_SNAPSHOT_BYTES`].
fn admit_chunk(
    inner: &Inner,
    rpc: &openraft::raft::InstallSnapshotRequest<TypeConfig>,
) -> Result<(), String> {
    let id = &rpc.meta.snapshot_id;
    let mut receiving = lock(&inner.receiving);
    let received = match &*receiving {
        _ if rpc.offset == 0 => 0,
        Some((rid, n)) if rid == id => *n,
        _ => return Err(format!("chunk at {} of a snapshot not begun", rpc.offset)),
    };
    if rpc.offset > received {
        return Err(format!(
            "chunk at {} while {received} bytes were received",
            rpc.offset
        ));
    }
    let end = rpc.offset.saturating_add(rpc.data.len() as u64);
    if end > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "a snapshot over the {MAX_SNAPSHOT_BYTES}-byte limit"
        ));
    }
    *receiving = Some((id.clone(), received.max(end)));
    Ok(())
}

/// Keeps the network admitting every member of the group's membership as it changes (a
/// member added elsewhere, then elected, must reach this node), for as long as the replica
/// lives.
async fn admit_members(inner: std::sync::Weak<Inner>) {
    let mut metrics = match inner.upgrade() {
        Some(i) => i.raft.metrics(),
        None => return,
    };
    loop {
        let members: Vec<std::net::IpAddr> = metrics
            .borrow_and_update()
            .membership_config
            .nodes()
            .filter_map(|(_, node)| node.addr.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .collect();
        {
            let Some(inner) = inner.upgrade() else { return };
            // The configured peers, the membership as it is now (a member removed is no
            // longer admitted, unless configured), and learners still being added.
            let mut adding = lock(&inner.adding);
            adding.retain(|ip| !members.contains(ip));
            let admitted: Vec<std::net::IpAddr> = inner
                .configured
                .iter()
                .chain(&members)
                .chain(adding.iter())
                .copied()
                .collect();
            drop(adding);
            inner.net.admit_only(admitted);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Answers one request from a peer; `None`: refused (the stream is reset, a warning logged).
async fn handle(inner: &Inner, req: Request) -> Option<Reply> {
    let check = match &req {
        Request::AppendEntries(rpc) => admit_sender(inner, &rpc.vote, true).await,
        Request::InstallSnapshot(rpc) => match admit_sender(inner, &rpc.vote, true).await {
            Ok(()) => admit_chunk(inner, rpc),
            e => e,
        },
        Request::Vote(rpc) => admit_sender(inner, &rpc.vote, false).await,
        _ => Ok(()),
    };
    if let Err(reason) = check {
        tracing::warn!(id = inner.id, %reason, "replica: refusing a peer's request");
        return None;
    }
    Some(answer(inner, req).await)
}

async fn answer(inner: &Inner, req: Request) -> Reply {
    let raft = &inner.raft;
    let tuning = &inner.tuning;
    let stopped = || Refusal::Failed("the replica is shutting down".into());
    match req {
        Request::AppendEntries(rpc) => {
            let reply = raft.append_entries(rpc).await;
            if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                *lock(&inner.leader_contact) = Some(Instant::now());
            }
            Reply::AppendEntries(reply)
        }
        Request::Vote(rpc) => {
            let reply = raft.vote(rpc.clone()).await;
            if let Ok(resp) = &reply {
                stand_if_better(inner, &rpc, resp);
            }
            if matches!(&reply, Ok(r) if r.vote_granted) {
                // Granting a vote restarts the election timer, as in Raft.
                *lock(&inner.leader_contact) = Some(Instant::now());
            }
            Reply::Vote(reply)
        }
        Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        Request::Write(cmd) => Reply::Write(write_local(raft, tuning, cmd).await),
        Request::Read { table, key } => {
            Reply::Read(match ensure_linearizable(raft, tuning).await {
                Ok(()) => match inner.sm() {
                    Ok(sm) => sm
                        .get(&table, &key)
                        .await
                        .map_err(|e| Refusal::Failed(e.to_string())),
                    Err(_) => Err(stopped()),
                },
                Err(e) => Err(e),
            })
        }
        Request::List { table, prefix } => {
            Reply::List(match ensure_linearizable(raft, tuning).await {
                Ok(()) => match inner.sm() {
                    Ok(sm) => sm
                        .list(&table, &prefix)
                        .await
                        .map_err(|e| Refusal::Failed(e.to_string())),
                    Err(_) => Err(stopped()),
                },
                Err(e) => Err(e),
            })
        }
    }
}

/// Speeds up a failover openraft would make slowly. A candidate whose log is shorter than
/// ours cannot win; openraft then makes every node wait out the dead leader's lease and its
/// own timeout again, and our first campaign lands in the candidate's term, where it has
/// already voted for itself: two more rounds, over 2 s. So when such a candidate asks us
/// while we have not heard from a leader for an election timeout (the leader is gone for us
/// too), we stand at once, in a term above the candidate's. Standing is always safe in Raft;
/// this only moves forward an election our own timer would start a moment later.
fn stand_if_better(inner: &Inner, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
    if resp.vote_granted || resp.last_log_id <= req.last_log_id {
        return;
    }
    let quiet = match *lock(&inner.leader_contact) {
        Some(at) => at.elapsed() >= inner.tuning.election_min,
        None => true,
    };
    let leading = inner.raft.metrics().borrow().state == openraft::ServerState::Leader;
    if !quiet || leading || inner.standing.swap(true, Ordering::SeqCst) {
        return;
    }
    let raft = inner.raft.clone();
    let their_term = req.vote.leader_id().term;
    let id = inner.id;
    let standing = inner.standing.clone();
    tokio::spawn(async move {
        tracing::info!(
            id,
            their_term,
            "replica: a candidate with a shorter log is campaigning; standing at once"
        );
        for _ in 0..2 {
            let term = raft.metrics().borrow().current_term;
            if term > their_term {
                break;
            }
            if raft.trigger().elect().await.is_err() {
                break;
            }
            let _ = raft
                .wait(Some(Duration::from_millis(200)))
                .metrics(|m| m.current_term > term, "campaign started")
                .await;
        }
        standing.store(false, Ordering::SeqCst);
    });
}

/// The election timer. openraft's own is switched off (`enable_elect: false`): it waits the
/// leader's lease plus its timeout since the last heartbeat, and `2 × election_max` more on a
/// node that once lost an election to a longer log, a flag that stays set until that node
/// next stands: measured, 1.65 s failovers on a quiet group. This one stands once the lease
/// (`election_max`) plus `election_min` plus a random spread below `election_max -
/// election_min` has passed without a leader's append or a granted vote; a candidate that
/// did not win stands again after `election_min` plus a spread; a node just started gives
/// the leader one lease more to find it. A node with a shorter log that stands early is
/// refused, and the node with the longer log then stands at once ([`stand_if_better`]).
async fn election_watchdog(inner: std::sync::Weak<Inner>) {
    let started = Instant::now();
    let mut stood = false;
    let Some(mut metrics) = inner.upgrade().map(|i| i.raft.metrics()) else {
        return;
    };
    // The spread is drawn once per timer period (at start, on a reset, after standing), not
    // on every metrics change: redrawing on each would bias the timer towards its minimum.
    let mut spread = inner
        .upgrade()
        .map_or(Duration::ZERO, |i| draw_spread(&i.tuning));
    let (mut leading, mut leader) = (false, None);
    loop {
        let (due, wait) = {
            let Some(inner) = inner.upgrade() else { return };
            let t = &inner.tuning;
            let contact = *lock(&inner.leader_contact);
            let (since, wait) = match contact {
                _ if stood => (contact.unwrap_or(started), t.election_min + spread),
                Some(at) => (at, t.election_max + t.election_min + spread),
                None => (started, 2 * t.election_max + t.election_min + spread),
            };
            (since + wait, wait)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                // The timer starts again only when this node becomes leader or a leader
                // (another one, or one newly elected) becomes known: not when this node
                // turns candidate or loses an election, or a candidate retrying would wait
                // out the whole lease again.
                let (now_leading, now_leader) = {
                    let m = metrics.borrow();
                    (m.state == openraft::ServerState::Leader, m.current_leader)
                };
                let became_leader = now_leading && !leading;
                let new_leader = now_leader.is_some() && now_leader != leader;
                (leading, leader) = (now_leading, now_leader);
                if became_leader || new_leader {
                    if let Some(inner) = inner.upgrade() {
                        *lock(&inner.leader_contact) = Some(Instant::now());
                        spread = draw_spread(&inner.tuning);
                    }
                    stood = false;
                }
                continue;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if lock(&inner.store).is_none() {
            return;
        }
        spread = draw_spread(&inner.tuning);
        let contact = *lock(&inner.leader_contact);
        if contact.is_some_and(|at| at.elapsed() < wait) {
            stood = false;
            continue;
        }
        let m = inner.raft.metrics().borrow().clone();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == inner.id);
        if m.state == openraft::ServerState::Leader || !voter {
            *lock(&inner.leader_contact) = Some(Instant::now());
            stood = false;
            continue;
        }
        tracing::info!(
            id = inner.id,
            term = m.current_term,
            "replica: no word from a leader for {wait:?}; standing for election"
        );
        if inner.raft.trigger().elect().await.is_err() {
            return;
        }
        *lock(&inner.leader_contact) = Some(Instant::now());
        stood = true;
    }
}

/// The election timer's random part, below `election_max - election_min`.
fn draw_spread(t: &Tuning) -> Duration {
    let range = t
        .election_max
        .saturating_sub(t.election_min)
        .as_millis()
        .max(1) as u64;
    Duration::from_millis(random() % range)
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

/// A random number for the election timer's spread (std's hasher keys are random).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}
