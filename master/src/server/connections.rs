//! One task per connection: the handshake within its deadline and budget, the hello, then
//! an admitted agent's, scheduler's or operator's reader and writer.

use super::PEER_QUEUE;
use crate::admission;
use crate::admission::NotAdmitted;
use crate::certificates::CertificateChecks;
use crate::display::PanelFeed;
use crate::handshakes::{Admissions, Budget, HeldTicket, Slot, Verdict, REGISTRATION_HOLD};
use crate::state::{ConnId, Input, PeerHandle, PeerTx};
use bramble_proto::codec::{
    CodecError, FrameReader, FrameWriter, MAX_BATCH, MAX_FRAME_BYTES, MAX_INPUT_BYTES,
};
use bramble_proto::messages::{
    AgentToMaster, MasterEvent, MasterToAgent, OperatorCall, OperatorReply, PeerKind, SchedulerCall,
};
use bramble_proto::queue::{self, QueueTx};
use bramble_proto::transport::{peer_certificate, peer_identity, PeerIdentity};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, warn};

/// Connections served at once, counted from the end of their handshake; more are refused.
/// Sized for 50,000 agents on one master (issue 17's target) with room for frameworks and
/// operators: a QUIC connection holds no file descriptor, only memory (a few KiB when idle,
/// measured by `bench/scale.sh`), so the bound is there to cap memory, not descriptors.
const MAX_CONNECTIONS: usize = 60_000;
/// How long a TLS/QUIC handshake may take: a stalled one holds a handshake slot (see
/// `handshakes.rs`) no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes queued per peer before it counts as too slow (beside `PEER_QUEUE` messages): a few
/// frames' worth, or a peer that stops reading makes the master hold thousands of large
/// messages (see `bramble_proto::queue`).
const PEER_QUEUE_BYTES: usize = 8 << 20;
/// Most bytes one write to a peer carries (its batch is encoded into one buffer).
const MAX_BATCH_BYTES: usize = 2 << 20;

pub(super) async fn accept_loop(
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
                if msg.may_be_dropped() {
                    if let Err(mpsc::error::TrySendError::Closed(_)) =
                        inputs.try_send(wrap(conn_id, msg))
                    {
                        break CodecError::Closed;
                    }
                } else if inputs.send(wrap(conn_id, msg)).await.is_err() {
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
pub(super) struct Edge {
    pub(super) panel: PanelFeed,
    pub(super) uploads: crate::images::Uploads,
    pub(super) artifacts: crate::artifacts::ArtifactsDir,
    /// A replicated leader's `bramble masters` calls (`None`: a single master).
    pub(super) masters: Option<crate::ha::Membership>,
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
    /// Whether the state task may miss this message when its inputs are full, rather than
    /// the connection stop reading (and answering) until they drain.
    fn may_be_dropped(&self) -> bool {
        false
    }
}

/// What an agent's connection answers itself: its artifact reads, and its heartbeats.
pub(super) struct AgentEdge {
    reads: crate::artifacts::AgentReads,
    tx: QueueTx<MasterToAgent>,
}

impl AtTheEdge<MasterToAgent> for AgentToMaster {
    type Here = AgentEdge;
    fn at_edge(edge: &Edge, tx: &QueueTx<MasterToAgent>) -> Self::Here {
        AgentEdge {
            reads: crate::artifacts::AgentReads::new(edge.artifacts.clone(), tx.clone()),
            tx: tx.clone(),
        }
    }
    fn answer_here(self, here: &mut Self::Here) -> Option<Self> {
        match self {
            AgentToMaster::ArtifactRead {
                request,
                name,
                offset,
            } => {
                here.reads.read(request, name, offset);
                None
            }
            // Acknowledged here, at once: the agent's heartbeat asks whether this master is
            // alive, and a state task busy with a long commit (a large task record through
            // the replicated log, a slow SD card) is alive. Acknowledged after the commit,
            // such a stall made agents drop a healthy link and re-register, and a task
            // launched in that commit was declared lost. The state still hears the
            // heartbeat, for the agent's timeout. A full queue: the state drops the peer.
            AgentToMaster::Heartbeat => {
                let _ = here.tx.try_send(MasterToAgent::HeartbeatAck);
                Some(AgentToMaster::Heartbeat)
            }
            other => Some(other),
        }
    }
    // A heartbeat only refreshes the agent's timeout, and the next one does that as well:
    // blocking on a full input queue would stop this connection's acknowledgements too.
    fn may_be_dropped(&self) -> bool {
        matches!(self, AgentToMaster::Heartbeat)
    }
}

impl AtTheEdge<MasterEvent> for SchedulerCall {
    type Here = QueueTx<MasterEvent>;
    fn at_edge(_: &Edge, tx: &QueueTx<MasterEvent>) -> Self::Here {
        tx.clone()
    }
    fn answer_here(self, tx: &mut Self::Here) -> Option<Self> {
        match self {
            // As an agent's (above): the scheduler asks whether this master is alive.
            SchedulerCall::Heartbeat => {
                let _ = tx.try_send(MasterEvent::HeartbeatAck);
                None
            }
            other => Some(other),
        }
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
