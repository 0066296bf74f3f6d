//! The Mesos v1 scheduler API on the master's HTTP port (`POST /api/v1/scheduler`), and the
//! read-only endpoints Mesos tools read (`/version`, `/master/state`, `/metrics/snapshot`, …).
//! The wire rules are `../shared/mesos-v1-http-api.md`; the JSON forms live in
//! `bramble-mesos` so they are tested without sockets.
//!
//! A Mesos framework is a real framework of the master: its SUBSCRIBE opens a connection to
//! the state task exactly as a QUIC scheduler does (`Input::Connected` with a bounded queue,
//! then `SchedulerCall::Subscribe`), so it shares the allocator, failover and removal with
//! native frameworks. The queue is drained by the HTTP stream's writer (`stream.rs`), which
//! turns `MasterEvent`s into RecordIO Mesos events; when the reader is too slow the queue
//! fills, the state closes the stream like a slow QUIC peer, and the framework is
//! disconnected (its failover timer runs). Calls arrive on other requests (`calls.rs`): they
//! are checked here (framework, stream id, principal) and sent as native calls on the
//! framework's current connection.
//!
//! Access: `/api/v1/scheduler` uses HTTP Basic with the `[mesos] credentials` file only (a
//! Mesos client knows nothing of Bramble's `http_token`); `/version`, `/health`,
//! `/master/health` and the redirects are open (pymesos reads `/version` without
//! credentials); `/master/state`, `/state`, `/master/state-summary` and `/metrics/snapshot`
//! honour `http_token` like the rest of the HTTP API.

mod auth;
mod calls;
pub mod readonly;
mod stream;

pub use auth::{Authenticated, Credentials, CredentialsError};

use crate::state::{ConnId, Input};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_mesos::http::{check_accept, check_content_type, check_length, check_method, Refusal};
use bramble_mesos::scheduler::{parse_call, CallKind, MasterInfo};
use bramble_proto::messages::{OperatorCall, OperatorReply};
use bramble_proto::FrameworkId;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stream::Subscription;
use tokio::sync::{mpsc, oneshot, watch};

/// The header naming a scheduler's event stream.
pub const STREAM_ID: &str = "mesos-stream-id";
/// HTTP subscriptions get connection ids from here up, apart from the QUIC accept loop's.
const FIRST_HTTP_CONN: ConnId = 1 << 48;

/// What the scheduler API shares between requests: the state task's inputs, the
/// credentials, and the live subscriptions by framework id.
pub struct MesosEdge {
    inputs: mpsc::Sender<Input>,
    credentials: Option<Credentials>,
    subscriptions: Mutex<HashMap<FrameworkId, Arc<Subscription>>>,
    next_conn: AtomicU64,
    cluster_id: String,
    http_addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    /// Unix time the master started (for `/master/state` and `/metrics/snapshot`).
    pub(crate) started: f64,
}

impl MesosEdge {
    pub fn new(
        inputs: mpsc::Sender<Input>,
        credentials: Option<Credentials>,
        cluster_id: String,
        http_addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        match &credentials {
            Some(c) => tracing::info!(
                principals = c.len(),
                "Mesos scheduler API: HTTP Basic authentication required"
            ),
            None => tracing::warn!(
                "Mesos scheduler API: no [mesos] credentials configured; any client may register frameworks (as in Mesos without --authenticate_frameworks)"
            ),
        }
        Self {
            inputs,
            credentials,
            subscriptions: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(FIRST_HTTP_CONN),
            cluster_id,
            http_addr,
            shutdown,
            started: bramble_proto::unix_now(),
        }
    }

    fn subscription(&self, fw: &FrameworkId) -> Option<Arc<Subscription>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fw)
            .cloned()
    }

    /// Whether the master knows the framework at all (connected or not): asked only when a
    /// call names a framework without a live stream, to tell 403 from 400.
    async fn framework_known(&self, fw: &FrameworkId) -> bool {
        let (reply, rx) = oneshot::channel();
        let asked = self
            .inputs
            .send(Input::Operator {
                call: OperatorCall::GetState,
                reply,
            })
            .await;
        if asked.is_err() {
            return false;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
            Ok(Ok(OperatorReply::State(s))) => s.frameworks.iter().any(|f| &f.id == fw),
            _ => false,
        }
    }

    /// `MasterInfo` as the client reached us: the address in its `Host` header when that is
    /// an IPv4 address, else the bound one (loopback when bound to every interface).
    fn master_info(&self, headers: &HeaderMap) -> MasterInfo {
        let host_ip = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .or(Some(h.to_string()))
            })
            .and_then(|h| h.parse::<Ipv4Addr>().ok());
        let bound = match self.http_addr.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        MasterInfo {
            id: self.cluster_id.clone(),
            hostname: bramble_proto::discovery::local_hostname(),
            ip: host_ip.or(bound).unwrap_or(Ipv4Addr::LOCALHOST),
            port: self.http_addr.port(),
        }
    }
}

/// A refusal as Mesos answers it: the status and the reason as plain text.
pub(crate) fn refuse(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        r.message,
    )
        .into_response()
}

/// `202 Accepted` with `Content-Length: 0`: pymesos's keep-alive connection waits for a body
/// otherwise (pitfall 5).
pub(crate) fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_LENGTH, "0")],
        Body::empty(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"Mesos master\""),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "Authentication required: HTTP Basic with a principal and secret from the master's credentials",
    )
        .into_response()
}

/// `POST /api/v1/scheduler`: the contract's checks in Mesos's order, then SUBSCRIBE opens a
/// stream and every other call is answered 202 once handed to the state task.
pub async fn scheduler(State(app): State<crate::http::AppState>, req: Request) -> Response {
    let edge = app.mesos.clone();
    let (parts, body) = req.into_parts();
    if let Err(r) = check_method(parts.method.as_str()) {
        return refuse(r);
    }
    let authenticated = match &edge.credentials {
        None => Authenticated::Open,
        Some(c) => match c.check(&parts.headers) {
            Some(principal) => Authenticated::Principal(principal),
            None => return unauthorized(),
        },
    };
    let header_str = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(r) = check_content_type(header_str(header::CONTENT_TYPE)) {
        return refuse(r);
    }
    let declared = header_str(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    if let Err(r) = check_length(declared, bramble_mesos::http::MAX_CALL_BYTES) {
        return refuse(r);
    }
    let bytes = match axum::body::to_bytes(body, bramble_mesos::http::MAX_CALL_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(Refusal::new(
                413,
                format!(
                    "request body is over the {}-byte limit (or was cut off)",
                    bramble_mesos::http::MAX_CALL_BYTES
                ),
            ))
        }
    };
    let call = match parse_call(&bytes) {
        Ok(c) => c,
        Err(r) => return refuse(r),
    };
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    match call.kind {
        CallKind::Subscribe(subscribe) => {
            if let Err(r) = check_accept(header_str(header::ACCEPT)) {
                return refuse(r);
            }
            if parts.headers.contains_key(STREAM_ID) {
                return refuse(Refusal::bad_request(
                    "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                ));
            }
            let info = edge.master_info(&parts.headers);
            stream::subscribe(edge, *subscribe, authenticated, remote, info).await
        }
        kind => {
            let fw = FrameworkId(call.framework_id.unwrap_or_default());
            calls::handle(&edge, &parts.headers, &authenticated, fw, kind).await
        }
    }
}

impl MesosEdge {
    fn fresh_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
