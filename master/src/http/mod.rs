//! The master's HTTP side: a JSON API, a server-sent-events stream of changes, Prometheus
//! metrics and the web UI, all on `MasterConfig::http` (default `0.0.0.0:5050`).
//!
//! It owns no cluster state. Every answer comes from the state task through the same
//! [`Input::Operator`] calls the CLI makes over QUIC (sandbox files included: the state task
//! forwards those to the task's agent), change events arrive through the state's non-blocking
//! [`Feed`], and the panel's picture is read from the [`PanelFeed`] the display fills. A browser therefore cannot slow the master down: a slow event
//! reader loses events and is told to resync; long-lived streams are capped by a semaphore.
//!
//! Access: read-only and open by default. With `http_token` configured every endpoint except
//! the static page and the login needs the token (`Authorization: Bearer …` or the session
//! cookie the login form sets), and only then does the one state-changing endpoint exist
//! (killing a task). Sessions, guess limits and the cross-origin check are `auth/`'s.
//!
//! Shutdown: the server stops with the master's shutdown signal; every SSE stream watches the
//! same signal and ends, so graceful shutdown is not held open by a browser tab.

pub mod api;
pub(crate) mod auth;
pub mod events;
pub mod mesos;
mod metrics;
mod pages;
mod task_list;
mod ui;

use crate::display::PanelFeed;
use crate::state::feed::Feed;
use crate::state::Input;
use axum::routing::{any, get, post};
use axum::Router;
use bramble_proto::messages::{OperatorCall, OperatorReply};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Open SSE streams (events and file follows) served at once; more get 503.
const MAX_STREAMS: usize = 64;
/// How long graceful shutdown may take before open connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// An operator call that takes longer than this (a sandbox read from a stuck agent) fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
pub use auth::AccessConfig;

/// What the HTTP server needs from a running master. Built by `server::start`.
pub struct MasterApi {
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) events: Feed,
    pub(crate) panel: PanelFeed,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) cluster_id: String,
    pub(crate) name: String,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The Mesos scheduler API's principals and secrets (`[mesos] credentials`); `None`: open.
    pub(crate) mesos_credentials: Option<mesos::Credentials>,
    /// Certificates close to expiry, for `/health`.
    pub(crate) certificates: std::sync::Arc<crate::certificates::CertificateChecks>,
    /// With `[ha]`: the masters of the group, for `/api/v1/state`.
    pub(crate) ha: Option<watch::Receiver<crate::ha::HaStatus>>,
}

/// Why an operator call got no answer.
#[derive(Debug)]
pub enum CallError {
    Stopped,
    TimedOut,
}

impl MasterApi {
    /// Asks the state task, as an operator would.
    pub async fn call(&self, call: OperatorCall) -> Result<OperatorReply, CallError> {
        let (reply, rx) = oneshot::channel();
        self.inputs
            .send(Input::Operator { call, reply })
            .await
            .map_err(|_| CallError::Stopped)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(CallError::Stopped),
            Err(_) => Err(CallError::TimedOut),
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) api: Arc<MasterApi>,
    /// Access control (sessions, guess limits), when a token is configured.
    auth: Option<Arc<auth::Auth>>,
    streams: Arc<Semaphore>,
    /// The Mesos v1 scheduler API's shared state (subscriptions, credentials).
    pub(crate) mesos: Arc<mesos::MesosEdge>,
}

pub(crate) type StreamPermit = OwnedSemaphorePermit;

impl AppState {
    pub(crate) fn stream_permit(&self) -> Option<StreamPermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    pub(crate) fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }
}

/// Binds `listen` and serves until `api.shutdown` turns true. Returns the bound address and
/// the server's task (which ends within [`SHUTDOWN_GRACE`] of the signal). `access` is `None`
/// without `http_token`: read-only and open.
pub async fn serve(
    listen: SocketAddr,
    access: Option<AccessConfig>,
    api: MasterApi,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut shutdown = api.shutdown.clone();
    let auth = access.map(|a| Arc::new(auth::Auth::new(a)));
    let mesos = Arc::new(mesos::MesosEdge::new(
        api.inputs.clone(),
        api.mesos_credentials.clone(),
        api.cluster_id.clone(),
        addr,
        api.shutdown.clone(),
    ));
    let state = AppState {
        api: Arc::new(api),
        auth,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        mesos,
    };
    let app = router(state.clone());
    info!(%addr, auth = state.auth_enabled(), "master listening (HTTP API and web UI)");
    let task = tokio::spawn(async move {
        let mut signal = shutdown.clone();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let graceful = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        });
        let mut serving = std::pin::pin!(graceful.into_future());
        tokio::select! {
            r = &mut serving => {
                if let Err(e) = r {
                    warn!("HTTP server stopped: {e}");
                }
                return;
            }
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        // Streams end on the signal by themselves; this bounds anything else still open.
        if tokio::time::timeout(SHUTDOWN_GRACE, serving).await.is_err() {
            warn!("HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown; dropping them");
        }
    });
    Ok((addr, task))
}

fn router(state: AppState) -> Router {
    let mut api = Router::new()
        .route("/api/v1/state", get(api::state))
        .route("/api/v1/summary", get(pages::summary))
        .route("/api/v1/agents", get(pages::agents))
        .route("/api/v1/tasks", get(pages::tasks))
        .route("/api/v1/services", get(api::services))
        .route("/api/v1/events", get(events::stream))
        .route(
            "/api/v1/tasks/{framework}/{task}/files",
            get(api::list_files),
        )
        .route(
            "/api/v1/tasks/{framework}/{task}/files/read",
            get(api::read_file),
        )
        .route(
            "/api/v1/tasks/{framework}/{task}/files/follow",
            get(api::follow_file),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/panel.png", get(api::panel))
        .route("/master/state", get(mesos::readonly::state))
        .route("/state", get(mesos::readonly::state))
        .route("/master/state-summary", get(mesos::readonly::state_summary))
        .route("/metrics/snapshot", get(mesos::readonly::metrics_snapshot));
    if state.auth_enabled() {
        // No token, no way to change anything: the route does not even exist then.
        api = api.route("/api/v1/tasks/{framework}/{task}/kill", post(api::kill));
    }
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    // Open to all: pymesos reads /version without credentials, health checks and leader
    // lookups carry none.
    let open = Router::new()
        .route("/health", get(api::health))
        .route("/master/health", get(mesos::readonly::health))
        .route("/version", get(api::version))
        .route("/redirect", get(mesos::readonly::redirect))
        .route("/master/redirect", get(mesos::readonly::redirect));
    let browser = Router::new()
        .merge(ui::routes())
        .merge(open)
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .merge(api)
        .layer(axum::middleware::from_fn(auth::refuse_cross_site));
    // The Mesos scheduler API checks HTTP Basic itself and is outside the cross-origin check
    // (why: `auth/mod.rs`): it is merged after that layer.
    browser
        .route("/api/v1/scheduler", any(mesos::scheduler))
        .with_state(state)
}
