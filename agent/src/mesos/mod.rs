//! The Mesos v1 executor HTTP API (`POST /api/v1/executor`, contract §3): the edge through
//! which executors written for Mesos (pymesos, any v1 HTTP client) run on a Bramble agent.
//!
//! It plugs into the agent exactly as `executor_socket.rs` does for native executors: a
//! SUBSCRIBE becomes [`Input::ExecutorConnected`] (proved by the connecting process's session,
//! `peer.rs`, instead of a token), UPDATE and MESSAGE become the core's `FromExecutor`, a closed
//! stream becomes `ExecutorDisconnected`; what the core sends an executor comes back as
//! Mesos events (`stream.rs`). So acknowledgements (ACKNOWLEDGED only once the update is
//! durable), registration and recovery timeouts, kills, reaping and gc are the native ones.
//!
//! HTTP contract (§1.3, via `bramble_mesos::http`): POST only (405), `Content-Type` JSON (400
//! missing, 415 otherwise; a charset parameter is fine), bodies over
//! [`MAX_CALL_BYTES`](bramble_mesos::http::MAX_CALL_BYTES) refused from their Content-Length
//! before they are read (413), unparseable or invalid calls 400 with the reason, unknown
//! framework or executor 400, a call before SUBSCRIBE 403, accepted calls 202 with an empty
//! body. Nothing a client sends can panic the agent or disturb another executor's stream.

mod peer;
mod stream;

use crate::core;
use crate::runtime::{ExecutorTx, Input};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bramble_mesos::executor::{Call, CallKind};
use bramble_mesos::http::{self as contract, Refusal, MAX_CALL_BYTES};
use bramble_proto::{ExecutorId, FrameworkId, TaskId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use stream::HEARTBEAT_INTERVAL;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("binding the Mesos executor API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Mesos executor API's bound address: {0}")]
    LocalAddr(#[from] std::io::Error),
}

/// Binds the API's listener. The default address is loopback (`127.0.0.1:5051`, Mesos's
/// agent port): Mesos executors run on this host, and an API that launches nothing but
/// accepts status updates and messages has no business on the network, where any host could
/// try to pass for an executor.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })
}

/// Connection serials of Mesos executors start here, far above the Unix socket's (which count
/// from 1), so the core never sees two connections under one number.
const FIRST_SERIAL: u64 = 1 << 62;

/// The edge's state, shared by its request handlers and stream tasks. It holds only what the
/// HTTP side needs (which stream serves which executor, which uuid belongs to which task);
/// every decision about executors and tasks stays in the core.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<Shared>,
}

struct Shared {
    inputs: mpsc::Sender<Input>,
    hostname: String,
    serials: AtomicU64,
    subs: Mutex<HashMap<(FrameworkId, ExecutorId), Subscription>>,
    /// Client socket inode → session, for connections already looked up (a new connection,
    /// even on a reused port, has a new inode).
    sessions: Mutex<HashMap<u64, u32>>,
}

/// One executor's current subscription.
struct Subscription {
    serial: u64,
    container: core::ContainerKey,
    session: u32,
    /// Dropping it ends the stream (a newer SUBSCRIBE replaces this one).
    _close: oneshot::Sender<()>,
    /// Updates received and not yet acknowledged to the executor: ACKNOWLEDGED names the
    /// task, the core's acknowledgement only the uuid.
    pending_acks: HashMap<uuid::Uuid, TaskId>,
}

impl Edge {
    pub fn new(inputs: mpsc::Sender<Input>, hostname: String) -> Self {
        Self {
            inner: Arc::new(Shared {
                inputs,
                hostname,
                serials: AtomicU64::new(FIRST_SERIAL),
                subs: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<(FrameworkId, ExecutorId), Subscription>> {
        // A poisoned lock means a handler panicked mid-update; the map is still usable.
        self.inner.subs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves the API until shutdown.
pub async fn serve(listener: TcpListener, edge: Edge, mut shutdown: watch::Receiver<bool>) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!("Mesos executor API: no local address: {e}");
            return;
        }
    };
    info!(%local, "Mesos executor API listening");
    let app = Router::new()
        .route("/api/v1/executor", post(executor_call).fallback(not_post))
        .layer(DefaultBodyLimit::max(MAX_CALL_BYTES))
        .with_state((edge, local, shutdown.clone()));
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await;
    if let Err(e) = served {
        warn!("Mesos executor API stopped: {e}");
    }
}

type AppState = (Edge, SocketAddr, watch::Receiver<bool>);

async fn not_post(method: axum::http::Method) -> Response {
    refuse(
        contract::check_method(method.as_str())
            .err()
            .unwrap_or_else(|| Refusal::new(405, "")),
    )
}

fn refuse(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, r.message).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn executor_call(
    State((edge, local, shutdown)): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(r) = contract::check_content_type(header(&headers, "content-type")) {
        return refuse(r);
    }
    // Refused from its declared length, before a byte of it is read.
    let declared = header(&headers, "content-length").and_then(|v| v.trim().parse().ok());
    if let Err(r) = contract::check_length(declared, MAX_CALL_BYTES) {
        return refuse(r);
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_CALL_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(Refusal::new(413, format!("reading the request body: {e}")));
        }
    };
    let call = match Call::parse(&body) {
        Ok(c) => c,
        Err(e) => return refuse(Refusal::bad_request(e)),
    };
    let kind = match call.validate() {
        Ok(k) => k,
        Err(e) => return refuse(Refusal::bad_request(e)),
    };
    let fw = FrameworkId::from(call.framework_id);
    let executor = ExecutorId::from(call.executor_id);
    let result = match kind {
        CallKind::Subscribe(sub) => {
            if let Err(r) = contract::check_accept(header(&headers, "accept")) {
                return refuse(r);
            }
            return match stream::subscribe(&edge, local, peer, fw, executor, sub, shutdown).await {
                Ok(response) => response,
                Err(r) => refuse(r),
            };
        }
        CallKind::Heartbeat => Ok(()),
        CallKind::Update(update) => edge.update(local, peer, &fw, &executor, update).await,
        CallKind::Message(message) => edge.message(local, peer, &fw, &executor, message).await,
    };
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(r) => refuse(r),
    }
}

impl Edge {
    /// The subscription a call belongs to, once its connection is shown to come from the
    /// executor's session: (container, serial). 400 for an executor unknown here, 403 for one
    /// not subscribed or a caller from another session.
    async fn caller(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        fw: &FrameworkId,
        executor: &ExecutorId,
    ) -> Result<core::ContainerKey, Refusal> {
        let found = self
            .subs()
            .get(&(fw.clone(), executor.clone()))
            .map(|s| (s.container.clone(), s.session));
        let Some((container, session)) = found else {
            let (reply, known) = oneshot::channel();
            let ask = Input::ExecutorKnown {
                framework_id: fw.clone(),
                executor_id: executor.clone(),
                reply,
            };
            let known = match self.inner.inputs.send(ask).await {
                Ok(()) => known.await.unwrap_or(Ok(())),
                Err(_) => Ok(()),
            };
            return Err(match known {
                Err(why) => Refusal::bad_request(why),
                Ok(()) => Refusal::new(403, "Executor is not subscribed"),
            });
        };
        match self.peer_session(local, peer).await {
            Some(s) if s == session => Ok(container),
            _ => Err(Refusal::new(
                403,
                "the call does not come from the executor's process session",
            )),
        }
    }

    /// The session of the process on the other end (`peer.rs`), cached by socket inode.
    async fn peer_session(&self, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
        let inner = Arc::clone(&self.inner);
        let found = tokio::task::spawn_blocking(move || {
            let inode = peer::client_socket_inode(local, peer).ok().flatten()?;
            let cached = inner
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&inode)
                .copied();
            if let Some(s) = cached {
                return Some(s);
            }
            let session = peer::session_of_peer(local, peer)
                .map_err(|e| warn!(%peer, "Mesos executor API: cannot tell who connected: {e}"))
                .ok()?;
            let mut sessions = inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if sessions.len() > 4096 {
                sessions.clear();
            }
            sessions.insert(inode, session);
            Some(session)
        })
        .await;
        found.ok().flatten()
    }

    async fn update(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        fw: &FrameworkId,
        executor: &ExecutorId,
        update: bramble_mesos::executor::Update,
    ) -> Result<(), Refusal> {
        let container = self.caller(local, peer, fw, executor).await?;
        self.forward_update(&container, fw, executor, update).await
    }

    /// Hands a checked update to the core (which records it, acknowledges it to the executor
    /// once durable and sends it on to the master) and remembers which task its uuid names.
    async fn forward_update(
        &self,
        container: &core::ContainerKey,
        fw: &FrameworkId,
        executor: &ExecutorId,
        update: bramble_mesos::executor::Update,
    ) -> Result<(), Refusal> {
        let status = update
            .status
            .executor_update_to_native(fw, executor)
            .map_err(Refusal::bad_request)?;
        if let (Some(uuid), Some(sub)) = (
            status.uuid,
            self.subs().get_mut(&(fw.clone(), executor.clone())),
        ) {
            if sub.pending_acks.len() < 100_000 {
                sub.pending_acks.insert(uuid, status.task_id.clone());
            }
        }
        let msg = bramble_proto::messages::ExecutorToAgent::Update(status);
        self.to_core(container, msg).await
    }

    async fn message(
        &self,
        local: SocketAddr,
        peer: SocketAddr,
        fw: &FrameworkId,
        executor: &ExecutorId,
        message: bramble_mesos::executor::Message,
    ) -> Result<(), Refusal> {
        let container = self.caller(local, peer, fw, executor).await?;
        let data = bramble_mesos::v1::b64::decode(&message.data).map_err(Refusal::bad_request)?;
        let msg = bramble_proto::messages::ExecutorToAgent::Message(data);
        self.to_core(&container, msg).await
    }

    async fn to_core(
        &self,
        container: &core::ContainerKey,
        msg: bramble_proto::messages::ExecutorToAgent,
    ) -> Result<(), Refusal> {
        // Refused to the executor here: relayed, it would not fit the master link's frame.
        if let Err(e) = bramble_proto::codec::check_input(&msg) {
            return Err(Refusal::new(413, format!("the call is too large: {e}")));
        }
        let input = Input::Core(core::Input::FromExecutor {
            container: container.clone(),
            msg,
        });
        self.inner
            .inputs
            .send(input)
            .await
            .map_err(|_| Refusal::new(503, "the agent is shutting down"))
    }
}

/// The messages of one connection go to its stream task in batches (see [`ExecutorTx`]).
fn new_connection() -> (
    ExecutorTx,
    mpsc::Receiver<Vec<bramble_proto::messages::AgentToExecutor>>,
) {
    let (tx, rx) = mpsc::channel(1024);
    (ExecutorTx::Mesos(tx), rx)
}
