//! A standby master's client side: on its QUIC port every hello is answered with
//! `HelloReply::NotLeader` naming the leader; on its HTTP port `/api/v1/state` is answered
//! here (the group's picture: `masters`, `leader`), `/master/redirect` (`/redirect`) is Mesos's
//! 307 to the leader, and every other request is a 307 to the same path on the leader's HTTP
//! address (503 while no leader is known).
//!
//! With `http_token` set, `/api/v1/state` needs it as on the leader (`Authorization: Bearer`;
//! a standby holds no login sessions): the group's picture names every master's addresses.
//! The redirects carry nothing and stay open, as the leader's `/master/redirect` is.

use super::HaStatus;
use crate::config::MasterConfig;
use crate::http::auth::Auth;
use crate::http::AccessConfig;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bramble_proto::identity::Credentials;
use bramble_proto::transport::server_endpoint;
use bramble_proto::SOFTWARE_VERSION;
use serde_json::json;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How long a standby's endpoint gets to say its last words when it stops.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long a standby waits before trying again to bind an HTTP port still held.
const HTTP_REBIND_PAUSE: Duration = Duration::from_millis(100);
/// How often a standby that still cannot bind its HTTP port says so.
const HTTP_REBIND_SAY_EVERY: Duration = Duration::from_secs(30);
/// How long a TLS/QUIC handshake with a standby may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The standby side while it runs; [`Standby::stop`] frees its ports for the leader side.
pub(super) struct Standby {
    endpoint: Option<quinn::Endpoint>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the client ports and answers there as a standby. A QUIC port that cannot be bound
/// is logged and left unserved (the replica still runs; the master may yet lead); the HTTP
/// port is retried until bound.
pub(super) async fn start(
    creds: &Credentials,
    cfg: &MasterConfig,
    status: watch::Receiver<HaStatus>,
) -> Standby {
    let mut tasks = Vec::new();
    let endpoint = match server_endpoint(creds, cfg.listen) {
        Ok(endpoint) => {
            tasks.push(tokio::spawn(accept_loop(endpoint.clone(), status.clone())));
            Some(endpoint)
        }
        Err(e) => {
            warn!(listen = %cfg.listen, "standby: not answering on QUIC: {e}");
            None
        }
    };
    let auth = AccessConfig::from_config(cfg).map(|a| Arc::new(Auth::new(a)));
    let app = Router::new()
        .route("/api/v1/state", get(state))
        .route("/master/redirect", get(mesos_redirect))
        .route("/redirect", get(mesos_redirect))
        .fallback(redirect)
        .with_state(Side { status, auth });
    tasks.push(tokio::spawn(serve_http(cfg.http, app)));
    info!(listen = %cfg.listen, http = %cfg.http, "standing by: answering clients with the leader's address");
    Standby { endpoint, tasks }
}

/// Binds `addr` and serves `app` there. The port may still be held for a moment by the leader
/// side this master just stepped down from, so a refused bind is retried (logged once) until
/// it succeeds or the standby stops: a standby deaf on HTTP until the next election would send
/// its operators nowhere.
async fn serve_http(addr: SocketAddr, app: Router) {
    // Said at once, then every half minute: a port that never frees (another program on
    // it, a wrong address) should not fill the log, nor go unmentioned.
    let mut said: Option<std::time::Instant> = None;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                if said.is_none_or(|t| t.elapsed() >= HTTP_REBIND_SAY_EVERY) {
                    warn!(http = %addr, "standby: cannot bind HTTP yet: {e} (retrying)");
                    said = Some(std::time::Instant::now());
                }
                tokio::time::sleep(HTTP_REBIND_PAUSE).await;
            }
        }
    };
    if said.is_some() {
        info!(http = %addr, "standby: answering on HTTP");
    }
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).into_future().await {
        warn!("standby HTTP stopped: {e}");
    }
}

impl Standby {
    /// Stops answering and lets go of both ports.
    pub(super) async fn stop(mut self) {
        if let Some(endpoint) = self.endpoint.take() {
            let listen = endpoint.local_addr().ok();
            // Off the listen socket first (as `MasterHandle::kill` does): quinn keeps reading
            // the old socket until traffic reaches the new one, so rebind twice.
            if let Some(listen) = listen {
                for _ in 0..2 {
                    let throwaway = std::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0));
                    if let Err(e) = throwaway.and_then(|s| endpoint.rebind(s)) {
                        warn!("standby: moving off {listen}: {e}");
                    }
                }
            }
            endpoint.close(quinn::VarInt::from_u32(0), b"standby stopping");
            let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, status: watch::Receiver<HaStatus>) {
    while let Some(incoming) = endpoint.accept().await {
        let status = status.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    debug!(peer = %remote, "standby: handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let leader = status.borrow().leader.clone();
            match crate::admission::refer(&conn, leader.clone()).await {
                Ok(kind) => {
                    debug!(peer = %remote, ?kind, leader = ?leader.map(|l| l.address), "standby: told a peer where the leader is")
                }
                Err(e) => debug!(peer = %remote, "standby: {e}"),
            }
        });
    }
}

/// What the standby's HTTP handlers share.
#[derive(Clone)]
struct Side {
    status: watch::Receiver<HaStatus>,
    /// `None` without `http_token`: open, as the leader's API is then.
    auth: Option<Arc<Auth>>,
}

/// `GET /api/v1/state` on a standby: who it is and the group, no cluster state (the leader has
/// it: `leader`). Behind the token when one is set.
async fn state(State(side): State<Side>, req: Request) -> Response {
    if let Some(auth) = &side.auth {
        if let Some(refused) = auth.refusal(&req) {
            return refused;
        }
    }
    let s = side.status.borrow().clone();
    Json(json!({
        "version": SOFTWARE_VERSION,
        "now": bramble_proto::unix_now(),
        "standby": true,
        "id": s.id,
        "role": s.role.to_string(),
        "term": s.term,
        "masters": s.masters,
        "leader": s.leader.as_ref().map(|l| l.id),
        "leader_address": s.leader.as_ref().map(|l| l.address.clone()),
        "leader_http": s.leader.as_ref().and_then(|l| l.http.clone()),
    }))
    .into_response()
}

fn leader_http(status: &watch::Receiver<HaStatus>) -> Option<String> {
    status.borrow().leader.as_ref().and_then(|l| l.http.clone())
}

fn no_leader() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "no leading master is known yet (an election is under way); try again shortly\n",
    )
        .into_response()
}

/// Mesos's `/master/redirect`: always a 307 to the leader (`http://HOST:PORT`, the form both
/// pymesos and mesoshttp follow), 503 while none is known.
async fn mesos_redirect(State(side): State<Side>) -> Response {
    match leader_http(&side.status) {
        Some(http) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("http://{http}"))],
        )
            .into_response(),
        None => no_leader(),
    }
}

/// Everything else: the same request at the leader (307 keeps the method and body).
async fn redirect(State(side): State<Side>, uri: Uri) -> Response {
    match leader_http(&side.status) {
        Some(http) => {
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("http://{http}{path}"))],
            )
                .into_response()
        }
        None => no_leader(),
    }
}
