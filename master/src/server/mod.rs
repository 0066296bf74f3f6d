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

mod burst;
mod connections;

use crate::certificates::{self, CertificateChecks};
use crate::config::MasterConfig;
use crate::display::PanelFeed;
use crate::state::feed::Feed;
use crate::state::{Input, Master, Timeouts};
use crate::store::replicated::Replicated;
use crate::store::{Recovered, Store, StoreError};
use bramble_proto::identity::Credentials;
use bramble_proto::messages::{ClusterState, OperatorCall, OperatorReply};
use bramble_proto::transport::server_endpoint;
use bramble_proto::SOFTWARE_VERSION;
use burst::run_state;
use connections::{accept_loop, Edge};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

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

/// Outbound messages queued per peer before it counts as too slow (bytes: `connections.rs`),
/// and inputs queued for the state task.
const PEER_QUEUE: usize = 4096;

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
