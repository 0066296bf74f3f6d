//! The master's network side: the QUIC accept loop, one task per connection, and the single
//! task that owns the [`Master`] state.
//!
//! A connection is admitted in three steps, each of which can drop it with a logged reason:
//! the TLS handshake (cluster CA, client certificate required; within a deadline, on a
//! pre-handshake budget with QUIC retry under pressure: `handshakes.rs`), the hello (protocol
//! version, and a peer kind the certificate's role allows; within a deadline, in a small frame),
//! then the role's own first message. A connection permit is taken only after the handshake. After
//! that its reader turns frames into [`Input`]s and its writer drains the peer's outbound queue.
//! A frame that is too large or does not decode closes that one connection; nothing a peer
//! sends can panic the master or hold up other peers.
//!
//! The state task works in bursts: it handles every input already waiting (up to
//! `MAX_BURST`), commits what the burst changed to the store in one transaction, and only then
//! lets the burst's messages out (group commit; see `state/mod.rs`). A store that cannot be written
//! stops the master: answering without durability would break what peers were promised.
//! Once a large burst is over, the state task gives the memory it freed back to the OS
//! (`bramble_proto::memory`), so the master's RSS falls back towards its working set.

use crate::admission;
use crate::admission::NotAdmitted;
use crate::certificates::{self, CertificateChecks};
use crate::config::MasterConfig;
use crate::display::PanelFeed;
use crate::handshakes::{Admissions, Budget, HeldTicket, Slot, Verdict, REGISTRATION_HOLD};
use crate::state::feed::Feed;
use crate::state::{ConnId, Input, Master, PeerHandle, PeerTx, Timeouts};
use crate::store::replicated::Replicated;
use crate::store::{Batch, Recovered, Store, StoreError};
use bramble_proto::codec::{
    CodecError, FrameReader, FrameWriter, MAX_BATCH, MAX_FRAME_BYTES, MAX_INPUT_BYTES,
};
use bramble_proto::identity::Credentials;
use bramble_proto::memory;
use bramble_proto::messages::{
    AgentToMaster, ClusterState, MasterEvent, MasterToAgent, OperatorCall, OperatorReply, PeerKind,
    SchedulerCall,
};
use bramble_proto::queue::{self, QueueTx};
use bramble_proto::transport::{peer_certificate, peer_identity, server_endpoint, PeerIdentity};
use bramble_proto::SOFTWARE_VERSION;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// How long a TLS/QUIC handshake may take: a stalled one holds a handshake slot (see
/// `handshakes.rs`) no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound messages queued per peer before it counts as too slow...
const PEER_QUEUE: usize = 4096;
/// ...and bytes: a few frames' worth, or a peer that stops reading makes the master hold
/// thousands of large messages (see `bramble_proto::queue`).
const PEER_QUEUE_BYTES: usize = 8 << 20;
/// Most bytes one write to a peer carries (its batch is encoded into one buffer).
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Connections served at once, counted from the end of their handshake; more are refused.
/// Sized for 50,000 agents on one master (issue 17's target) with room for frameworks and
/// operators: a QUIC connection holds no file descriptor, only memory (a few KiB when idle,
/// measured by `bench/scale.sh`), so the bound is there to cap memory, not descriptors.
const MAX_CONNECTIONS: usize = 60_000;
/// How often timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
/// Inputs handled before a commit at most; more wait for the next burst.
const MAX_BURST: usize = 1024;
/// A commit slower than this is worth telling the operator about (a dying SD card).
const SLOW_COMMIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Transport(#[from] bramble_proto::transport::TransportError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the master has stopped")]
    Stopped,
    #[error("{0}")]
    Credentials(#[from] crate::http::mesos::CredentialsError),
    #[error("the deny list: {0}")]
    DenyList(String),
}

/// A running master. Dropping it does not stop it; call [`MasterHandle::shutdown`].
pub struct MasterHandle {
    pub addr: SocketAddr,
    /// Where the HTTP API and web UI listen (TCP); `None` if the address could not be bound.
    pub http_addr: Option<SocketAddr>,
    pub cluster_id: String,
    inputs: mpsc::Sender<Input>,
    shutdown: watch::Sender<bool>,
    /// Tells the state task to stop as if the power went: no flush, no goodbye.
    crash: watch::Sender<bool>,
    /// Set by the state task when it stopped because the store could not be written.
    failure: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
    /// Ends once the store is closed (see [`OpenStore`]).
    store_closed: oneshot::Receiver<()>,
    endpoint: quinn::Endpoint,
    feed: Feed,
    panel: PanelFeed,
    certificates: Arc<CertificateChecks>,
}

/// The open store, with a sender whose drop tells [`MasterHandle::kill`] the store is
/// closed: a commit in flight on the blocking pool outlives an aborted state task by a few
/// milliseconds, and a master restarted in the same process must not find the directory
/// still locked.
struct OpenStore {
    store: Backend,
    _closed: oneshot::Sender<()>,
}

/// Where a burst's batch is made durable: the local redb file (a single master), or the
/// replicated log (`[ha]`: durable meaning a majority of masters has it).
pub enum Backend {
    Local(Store),
    Replicated(Replicated),
}

impl MasterHandle {
    /// QUIC connections open on the master's endpoint, handshakes in progress included (what
    /// `/metrics` reports as `bramble_quic_connections`).
    pub fn quic_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// The master's current picture of the cluster.
    pub async fn state(&self) -> Result<ClusterState, ServerError> {
        let (reply, rx) = oneshot::channel();
        self.inputs
            .send(Input::Operator {
                call: OperatorCall::GetState,
                reply,
            })
            .await
            .map_err(|_| ServerError::Stopped)?;
        match rx.await {
            Ok(OperatorReply::State(s)) => Ok(s),
            _ => Err(ServerError::Stopped),
        }
    }

    /// What the state publishes: change events, the cluster summary, update latencies.
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// The deny list and the certificates close to expiry (for the front panel).
    pub fn certificates(&self) -> Arc<CertificateChecks> {
        self.certificates.clone()
    }

    /// Where the front panel leaves its current picture (the display fills it; operators'
    /// `GetPanel` and the web UI read it).
    pub fn panel_feed(&self) -> PanelFeed {
        self.panel.clone()
    }

    /// Resolves (with the reason) if the master stopped on its own because its store could
    /// not be written; never resolves otherwise.
    pub async fn failed(&self) -> String {
        let mut failure = self.failure.clone();
        loop {
            if let Some(reason) = failure.borrow_and_update().clone() {
                return reason;
            }
            if failure.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops like a power cut, for tests of recovery: the state task stops between bursts
    /// (what it committed stays committed, what it had not yet sent is never sent), and
    /// nothing is said to peers. The endpoint moves to a throwaway socket first so that the
    /// connections' last words leave from an address their peers ignore, and the listen
    /// address is free for a new master when this returns.
    pub async fn kill(self) {
        let listen = self.addr;
        let throwaway = |_| std::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0));
        // quinn keeps reading the previous socket until traffic arrives on the new one:
        // rebinding twice lets go of the listen socket itself.
        for step in 0..2 {
            match throwaway(step).and_then(|s| self.endpoint.rebind(s)) {
                Ok(()) => {}
                Err(e) => warn!("killing the master: moving off {listen}: {e}"),
            }
        }
        let _ = self.crash.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        // The store's lock goes with the last commit in flight, if any.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.store_closed).await;
        // Connections drop their handle on the old socket as they notice the rebind.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::UdpSocket::bind(listen).is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting, closes every connection and waits for the master's tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"master shutting down");
        for t in self.tasks {
            let _ = t.await;
        }
        self.endpoint.wait_idle().await;
    }
}

/// Starts a master: binds its QUIC endpoint and spawns the state task and the accept loop.
pub async fn start(creds: &Credentials, cfg: &MasterConfig) -> Result<MasterHandle, ServerError> {
    // The store first: a state dir of another cluster, or one in use, stops us before we bind.
    let (store, recovered) = Store::open(&cfg.state_dir, &creds.cluster_id)?;
    info!(store = %store.path().display(), frameworks = recovered.frameworks.len(),
        agents = recovered.agents.len(), tasks = recovered.tasks.len(), "master store opened");
    start_with(creds, cfg, Backend::Local(store), recovered, None).await
}

/// Starts a master on an open store and what it held: the single master's (`start`), or the
/// replicated one of a master that just became leader (`ha/`), which also gives its
/// group's picture for `/api/v1/state`.
pub async fn start_with(
    creds: &Credentials,
    cfg: &MasterConfig,
    store: Backend,
    recovered: Recovered,
    ha: Option<watch::Receiver<crate::ha::HaStatus>>,
) -> Result<MasterHandle, ServerError> {
    let cluster_id = creds.cluster_id.clone();
    // A credentials file that does not read stops the master: running open by mistake would
    // let any client register frameworks.
    let mesos_credentials = match &cfg.mesos.credentials {
        Some(path) => Some(crate::http::mesos::Credentials::load(path)?),
        None => None,
    };
    // Like the credentials: a deny list that does not read must not let revoked principals in.
    let checks =
        CertificateChecks::load(&cfg.cluster, &creds.cert).map_err(ServerError::DenyList)?;
    let endpoint = server_endpoint(creds, cfg.listen)?;
    let addr = endpoint.local_addr().unwrap_or(cfg.listen);
    let timeouts = Timeouts {
        heartbeat_interval: cfg.heartbeat_interval(),
        agent_timeout: cfg.agent_timeout(),
        offer_timeout: cfg.offer_timeout(),
        allocation_interval: cfg.allocation_interval(),
        agent_reregistration_timeout: cfg.agent_reregistration_timeout(),
    };
    let (inputs, input_rx) = mpsc::channel(PEER_QUEUE);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (crash, crash_rx) = watch::channel(false);
    let (failed, failure) = watch::channel(None);
    let panel = PanelFeed::default();
    let now = Instant::now();
    let mut master = Master::new(cluster_id.clone(), timeouts, now);
    master.recover(recovered, now);
    let feed = master.feed();
    let api = crate::http::MasterApi {
        inputs: inputs.clone(),
        events: feed.clone(),
        panel: panel.clone(),
        endpoint: endpoint.clone(),
        cluster_id: cluster_id.clone(),
        name: cfg.name.clone(),
        shutdown: shutdown_rx.clone(),
        mesos_credentials,
        certificates: checks.clone(),
        ha,
    };
    // Like mDNS, the web side is a convenience: a master that cannot bind it still runs the
    // cluster, and says why loudly.
    let (http_addr, http_task) = match crate::http::serve(
        cfg.http,
        crate::http::AccessConfig::from_config(cfg),
        api,
    )
    .await
    {
        Ok((addr, task)) => (Some(addr), Some(task)),
        Err(e) => {
            tracing::error!(addr = %cfg.http, "not serving the HTTP API and web UI (and not advertising an HTTP port on mDNS): binding {}: {e}; set `http` in the master config (or --http) to a free address", cfg.http);
            (None, None)
        }
    };
    let masters = match &store {
        Backend::Replicated(r) => Some(crate::ha::Membership::new(r.replica().clone())),
        Backend::Local(_) => None,
    };
    let (closed_tx, store_closed) = oneshot::channel();
    let store = OpenStore {
        store,
        _closed: closed_tx,
    };
    let state_task = tokio::spawn(run_state(
        master,
        store,
        input_rx,
        shutdown_rx.clone(),
        crash_rx,
        failed,
    ));
    let checks_task = tokio::spawn(certificates::watch(checks.clone(), shutdown_rx.clone()));
    let checks_for_handle = checks.clone();
    let accept_task = tokio::spawn(accept_loop(
        endpoint.clone(),
        inputs.clone(),
        cluster_id.clone(),
        Edge {
            panel: panel.clone(),
            uploads: crate::images::Uploads::new(&cfg.state_dir),
            artifacts: crate::artifacts::ArtifactsDir::new(&cfg.artifacts_dir()),
            masters,
        },
        checks,
        shutdown_rx,
    ));
    info!(%addr, cluster_id = %cluster_id, version = SOFTWARE_VERSION, "master listening (QUIC)");
    Ok(MasterHandle {
        addr,
        http_addr,
        cluster_id,
        inputs,
        shutdown,
        crash,
        failure,
        store_closed,
        tasks: [
            Some(accept_task),
            Some(state_task),
            Some(checks_task),
            http_task,
        ]
        .into_iter()
        .flatten()
        .collect(),
        endpoint,
        feed,
        panel,
        certificates: checks_for_handle,
    })
}

async fn run_state(
    mut master: Master,
    store: OpenStore,
    mut inputs: mpsc::Receiver<Input>,
    mut shutdown: watch::Receiver<bool>,
    mut crash: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) {
    let mut store = Some(store);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_burst = memory::AfterBurst::new(Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = crash.changed() => return,
            input = inputs.recv() => match input {
                Some(input) => {
                    master.handle(input, Instant::now());
                    let mut handled = 1;
                    for _ in 1..MAX_BURST {
                        match inputs.try_recv() {
                            Ok(input) => master.handle(input, Instant::now()),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                    after_burst.worked(handled);
                    master.end_burst(Instant::now());
                    // Relayed status updates rest on the agents' records, not on this commit.
                    master.flush_early();
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                master.tick(now);
                if after_burst.due(now) {
                    memory::trim_after_burst();
                }
            }
        }
        let batch = master.take_writes();
        if !batch.is_empty() {
            let Some(open) = store.take() else { break };
            match commit(open, batch).await {
                Ok(open) => store = Some(open),
                Err(e) => {
                    error!("stopping the master: {e}; nothing more is sent, so no peer is told anything that is not on disk");
                    let _ = failed.send(Some(e));
                    return;
                }
            }
        }
        if *crash.borrow() {
            return;
        }
        master.flush_outbox();
    }
    debug!("master state task stopped");
}

/// Writes one burst's changes: to the local file off the async threads (a commit waits for
/// fsync), or through the replicated log.
async fn commit(mut open: OpenStore, batch: Batch) -> Result<OpenStore, String> {
    let started = Instant::now();
    let records = batch.len();
    let done = match open.store {
        Backend::Local(_) => tokio::task::spawn_blocking(move || {
            let result = match &mut open.store {
                Backend::Local(store) => store.commit(&batch).map_err(|e| e.to_string()),
                Backend::Replicated(_) => Ok(()),
            };
            (open, result)
        })
        .await
        .map_err(|e| format!("the master store's commit task failed: {e}")),
        Backend::Replicated(ref store) => {
            let result = store.commit(&batch).await.map_err(|e| e.to_string());
            Ok((open, result))
        }
    };
    match done {
        Ok((open, Ok(()))) => {
            let took = started.elapsed();
            if took > SLOW_COMMIT {
                warn!(?took, records, store = %open.store.describe(), "slow commit to the master store (failing storage?)");
            } else {
                debug!(?took, records, "committed");
            }
            Ok(open)
        }
        Ok((_, Err(e))) => Err(e),
        Err(e) => Err(e),
    }
}

impl Backend {
    fn describe(&self) -> String {
        match self {
            Backend::Local(store) => store.path().display().to_string(),
            Backend::Replicated(_) => "replicated".into(),
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    inputs: mpsc::Sender<Input>,
    cluster_id: String,
    edge: Edge,
    checks: Arc<CertificateChecks>,
    mut shutdown: watch::Receiver<bool>,
) {
    let next_id = Arc::new(AtomicU64::new(1));
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshakes = Budget::default();
    let admissions = Admissions::from_env();
    let mut refusals = Refusals::default();
    loop {
        let incoming = tokio::select! {
            _ = shutdown.changed() => break,
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
        };
        // The loop never waits on a peer: each attempt is admitted, retried or refused now.
        let remote = incoming.remote_address();
        let slot = match handshakes.admit(remote.ip(), incoming.remote_address_validated()) {
            Verdict::Handshake(slot) => slot,
            Verdict::Retry => {
                debug!(peer = %remote, "many handshakes in flight: asking an unvalidated address to retry");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            Verdict::Refuse(why) => {
                incoming.refuse();
                refusals.refused(remote, why, handshakes.in_flight());
                continue;
            }
        };
        let conn_id = next_id.fetch_add(1, Ordering::Relaxed);
        let inputs = inputs.clone();
        let cluster_id = cluster_id.clone();
        let edge = edge.clone();
        let checks = checks.clone();
        let limit = limit.clone();
        let admissions = admissions.clone();
        tokio::spawn(async move {
            let Some(conn) = handshake(incoming, slot).await else {
                return;
            };
            // Permits count admitted connections, taken only once the handshake is over.
            let Ok(permit) = limit.try_acquire_owned() else {
                warn!(peer = %remote, "refusing peer: the master serves {MAX_CONNECTIONS} connections already");
                conn.close(quinn::VarInt::from_u32(1), b"too many connections");
                return;
            };
            serve_connection(conn, conn_id, inputs, cluster_id, edge, checks, admissions).await;
            drop(permit);
        });
    }
}

/// Says that connection attempts are being refused, at most once a second: a flood is one
/// event to an operator, not one line per packet.
#[derive(Default)]
struct Refusals {
    last_said: Option<Instant>,
    unsaid: u64,
}

impl Refusals {
    fn refused(&mut self, peer: SocketAddr, why: &str, in_flight: usize) {
        self.unsaid += 1;
        let now = Instant::now();
        if self
            .last_said
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        warn!(%peer, in_flight, refused = self.unsaid, "refusing connection attempts: {why}");
        self.last_said = Some(now);
        self.unsaid = 0;
    }
}

/// Runs the TLS/QUIC handshake within [`HANDSHAKE_TIMEOUT`], holding `slot` until it is over.
async fn handshake(incoming: quinn::Incoming, slot: Slot) -> Option<quinn::Connection> {
    let remote = incoming.remote_address();
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await;
    drop(slot);
    match result {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            warn!(peer = %remote, "TLS/QUIC handshake failed: {e}");
            None
        }
        // Dropping the unfinished handshake abandons the connection.
        Err(_) => {
            warn!(peer = %remote, "TLS/QUIC handshake not done within {HANDSHAKE_TIMEOUT:?}; dropping it");
            None
        }
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    conn_id: ConnId,
    inputs: mpsc::Sender<Input>,
    cluster_id: String,
    edge: Edge,
    checks: Arc<CertificateChecks>,
    admissions: Admissions,
) {
    let remote = conn.remote_address();
    let identity = match peer_identity(&conn) {
        Ok(id) => id,
        Err(e) => {
            warn!(peer = %remote, "refusing peer: {e}");
            conn.close(quinn::VarInt::from_u32(1), b"no usable certificate");
            return;
        }
    };
    // The deny list and expiry warnings; the guard keeps this connection closable on revocation.
    let admitted = peer_certificate(&conn)
        .map_err(|e| e.to_string())
        .and_then(|cert| checks.admit(conn_id, &conn, &identity, &cert));
    let _admitted = match admitted {
        Ok(guard) => guard,
        Err(reason) => {
            warn!(peer = %remote, subject = %identity.subject, "refusing peer: {reason}");
            conn.close(quinn::VarInt::from_u32(1), reason.as_bytes());
            return;
        }
    };
    let (kind, ctl, admission) = match admission::admit(&conn, &identity, &cluster_id, &admissions)
        .await
    {
        Ok(admitted) => admitted,
        // Told when to come back (`handshakes.rs` logs the busy answers, once a second).
        Err(NotAdmitted::Busy) => {
            conn.close(quinn::VarInt::from_u32(0), b"busy");
            return;
        }
        Err(NotAdmitted::Refused(reason)) => {
            warn!(peer = %remote, subject = %identity.subject, role = %identity.role, "refusing peer: {reason}");
            conn.close(quinn::VarInt::from_u32(1), reason.as_bytes());
            return;
        }
    };
    debug!(peer = %remote, subject = %identity.subject, ?kind, "peer admitted");
    let (mut reader, writer) = ctl.split();
    // Schedulers' and operators' calls are input entering the cluster: held to the input
    // limit, so what the master relays from them always fits a frame. Agents relay what
    // their executors sent, already checked at the agent.
    reader.set_limit(match kind {
        PeerKind::Agent => MAX_FRAME_BYTES,
        PeerKind::Scheduler | PeerKind::Operator => MAX_INPUT_BYTES,
    });
    let peer = Peer {
        conn: &conn,
        conn_id,
        identity: identity.clone(),
        inputs: &inputs,
        admission: admission.map(|ticket| ticket.held_at_most(REGISTRATION_HOLD)),
    };
    let reason = match kind {
        PeerKind::Agent => {
            let wrap = |conn, msg| Input::FromAgent { conn, msg };
            serve_peer::<AgentToMaster, MasterToAgent>(
                peer,
                reader,
                writer,
                (PeerTx::Agent, wrap),
                &edge,
            )
            .await
        }
        PeerKind::Scheduler => {
            let wrap = |conn, call| Input::FromScheduler { conn, call };
            serve_peer::<SchedulerCall, MasterEvent>(
                peer,
                reader,
                writer,
                (PeerTx::Scheduler, wrap),
                &edge,
            )
            .await
        }
        PeerKind::Operator => serve_operator(reader, writer, &inputs, &edge).await,
    };
    match &reason {
        CodecError::Closed => debug!(peer = %remote, "peer closed its control stream"),
        e => {
            if conn.close_reason().is_none() {
                warn!(peer = %remote, subject = %identity.subject, "closing peer: {e}");
                let why = e.to_string();
                conn.close(
                    quinn::VarInt::from_u32(1),
                    &why.as_bytes()[..why.len().min(200)],
                );
            }
        }
    }
    if kind != PeerKind::Operator {
        let graceful = matches!(
            conn.close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(0)
        );
        let _ = inputs
            .send(Input::Disconnected {
                conn: conn_id,
                reason: reason.to_string(),
                graceful,
            })
            .await;
    }
}

/// An admitted agent or scheduler connection, and where its inputs go.
struct Peer<'a> {
    conn: &'a quinn::Connection,
    conn_id: ConnId,
    identity: PeerIdentity,
    inputs: &'a mpsc::Sender<Input>,
    /// An agent's admission, given back once its first message (the registration) is with
    /// the state task.
    admission: Option<HeldTicket>,
}

/// Runs an admitted agent or scheduler: a writer task drains its queue (made into a
/// [`PeerTx`] by `make_tx`) while this task reads its messages (made into [`Input`]s by
/// `wrap`). Returns why the connection ended.
async fn serve_peer<In, Out>(
    peer: Peer<'_>,
    mut reader: FrameReader<quinn::RecvStream>,
    mut writer: FrameWriter<quinn::SendStream>,
    (make_tx, wrap): Wiring<In, Out>,
    edge: &Edge,
) -> CodecError
where
    In: DeserializeOwned + AtTheEdge<Out>,
    Out: Serialize + Send + Sync + 'static,
{
    let Peer {
        conn,
        conn_id,
        identity,
        inputs,
        mut admission,
    } = peer;
    let (tx, mut rx) = queue::channel::<Out>(PEER_QUEUE, PEER_QUEUE_BYTES);
    let mut at_edge = In::at_edge(edge, &tx);
    let connected = Input::Connected {
        conn: conn_id,
        identity,
        tx: make_tx(tx),
        handle: Some(PeerHandle::Quic(conn.clone())),
    };
    if inputs.send(connected).await.is_err() {
        return CodecError::Closed;
    }
    let writer_conn = conn.clone();
    let writer_task = tokio::spawn(async move {
        // A burst's messages for this peer leave in one write (see `codec`).
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH, MAX_BATCH_BYTES).await > 0 {
            let sent = writer.send_batch(&batch).await;
            batch.clear();
            if let Err(e) = sent {
                debug!(peer = %writer_conn.remote_address(), "write failed: {e}");
                writer_conn.close(quinn::VarInt::from_u32(1), b"write failed");
                return;
            }
        }
        // The master dropped this peer: finish the stream so the peer sees a clean end.
        let _ = writer.get_mut().finish();
    });
    let reason = loop {
        match reader.recv::<In>().await {
            Ok(msg) => {
                let Some(msg) = msg.answer_here(&mut at_edge) else {
                    continue;
                };
                if inputs.send(wrap(conn_id, msg)).await.is_err() {
                    break CodecError::Closed;
                }
                drop(admission.take());
            }
            Err(e) => break e,
        }
    };
    writer_task.abort();
    reason
}

/// What is answered at the edge needs: the front panel's picture and where image uploads
/// are kept (operator calls), and the artifacts directory (agents' reads).
#[derive(Clone)]
struct Edge {
    panel: PanelFeed,
    uploads: crate::images::Uploads,
    artifacts: crate::artifacts::ArtifactsDir,
    /// A replicated leader's `bramble masters` calls (`None`: a single master).
    masters: Option<crate::ha::Membership>,
}

/// How a peer's queue and messages are wired to the state task: its queue made into a
/// [`PeerTx`], its messages into [`Input`]s.
type Wiring<In, Out> = (fn(QueueTx<Out>) -> PeerTx, fn(ConnId, In) -> Input);

/// Messages a peer's connection answers itself, before (instead of) the state task.
trait AtTheEdge<Out>: Sized {
    /// What one connection keeps to answer them (dropped with the connection).
    type Here;
    fn at_edge(edge: &Edge, tx: &QueueTx<Out>) -> Self::Here;
    /// `None`: answered here; `Some`: for the state task.
    fn answer_here(self, here: &mut Self::Here) -> Option<Self>;
}

impl AtTheEdge<MasterToAgent> for AgentToMaster {
    type Here = crate::artifacts::AgentReads;
    fn at_edge(edge: &Edge, tx: &QueueTx<MasterToAgent>) -> Self::Here {
        crate::artifacts::AgentReads::new(edge.artifacts.clone(), tx.clone())
    }
    fn answer_here(self, reads: &mut Self::Here) -> Option<Self> {
        match self {
            AgentToMaster::ArtifactRead {
                request,
                name,
                offset,
            } => {
                reads.read(request, name, offset);
                None
            }
            other => Some(other),
        }
    }
}

impl AtTheEdge<MasterEvent> for SchedulerCall {
    type Here = ();
    fn at_edge(_: &Edge, _: &QueueTx<MasterEvent>) {}
    fn answer_here(self, _: &mut ()) -> Option<Self> {
        Some(self)
    }
}

/// Operators make request/response calls; each is answered from the state task, except the
/// front panel's picture and image uploads, which live here at the edge (`edge`).
async fn serve_operator(
    mut reader: FrameReader<quinn::RecvStream>,
    mut writer: FrameWriter<quinn::SendStream>,
    inputs: &mpsc::Sender<Input>,
    edge: &Edge,
) -> CodecError {
    // This connection's image upload in progress; dropped (and its file removed) with it.
    let mut upload = None;
    loop {
        let call: OperatorCall = match reader.recv().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let answer = match call {
            OperatorCall::GetPanel => edge.panel.reply(),
            OperatorCall::ImageUpload(piece) => {
                crate::images::handle(&edge.uploads, &mut upload, piece, inputs).await
            }
            call @ (OperatorCall::GetMasters
            | OperatorCall::AddMaster { .. }
            | OperatorCall::RemoveMaster { .. }) => {
                crate::ha::Membership::answer(edge.masters.as_ref(), call).await
            }
            call => {
                let (reply, rx) = oneshot::channel();
                if inputs.send(Input::Operator { call, reply }).await.is_err() {
                    return CodecError::Closed;
                }
                rx.await.unwrap_or(OperatorReply::Error {
                    message: "master is shutting down".into(),
                })
            }
        };
        if let Err(e) = writer.send(&answer).await {
            return e;
        }
    }
}
