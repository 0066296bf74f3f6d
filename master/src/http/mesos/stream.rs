//! A Mesos framework's event stream: SUBSCRIBE makes it a connection of the state task (as a
//! QUIC scheduler is), and a writer task drains that connection's bounded queue into the
//! chunked HTTP response as RecordIO events, one flushed chunk per event.
//!
//! The writer owns the stream's life. It ends when the client goes away, when the state
//! closes it (queue full: the reader is too slow; or a protocol error), after a fatal ERROR
//! (failed over, removed, refused), or at shutdown; then it tells the state the connection is
//! gone, which starts the framework's failover timer as for any disconnected scheduler.
//! Backpressure is explicit: the body channel is small, and while the client does not read,
//! events pile up in the state's bounded queue for this connection only, until it is cut.

use super::{Authenticated, MesosEdge};
use crate::state::{ConnId, Input, PeerHandle, PeerTx};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_mesos::scheduler::{self, MasterInfo, Subscribe, HEARTBEAT_INTERVAL_SECS};
use bramble_proto::identity::Role;
use bramble_proto::messages::{FrameworkApi, FrameworkInfo, MasterEvent, SchedulerCall};
use bramble_proto::queue::{self, QueueRx};
use bramble_proto::transport::PeerIdentity;
use bramble_proto::FrameworkId;
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Events queued for one Mesos stream before its reader counts as too slow.
const STREAM_QUEUE: usize = 1024;
/// ...and bytes (see `bramble_proto::queue`).
const STREAM_QUEUE_BYTES: usize = 8 << 20;
/// Encoded events between the writer and hyper (the socket's own buffers come after).
const BODY_QUEUE: usize = 8;
/// Events the edge itself adds (TASK_ERROR for a task it could not translate, …).
const EDGE_QUEUE: usize = 256;
/// Offers remembered per stream (to fill in a task's missing `agent_id`); the oldest go first.
const MAX_REMEMBERED_OFFERS: usize = 10_000;

/// One SUBSCRIBE's stream, as the call handlers see it.
pub(super) struct Subscription {
    pub(super) stream_id: String,
    pub(super) conn: ConnId,
    /// The authenticated principal that opened it (`None` without credentials).
    pub(super) principal: Option<String>,
    pub(super) subscribe: Subscribe,
    pub(super) framework_id: OnceLock<FrameworkId>,
    /// Offers sent on this stream and their agents, until used or rescinded.
    pub(super) offers: Mutex<HashMap<String, String>>,
    /// Events the edge adds to this stream itself (never blocks: dropped when full).
    pub(super) edge_events: mpsc::Sender<Value>,
    /// The framework asked for TEARDOWN: the removal's ERROR is not sent, the stream just ends
    /// (as in Mesos).
    pub(super) tearing_down: AtomicBool,
}

impl Subscription {
    pub(super) fn offer_agent(&self, offer_id: &str) -> Option<String> {
        self.offers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(offer_id)
            .cloned()
    }

    pub(super) fn forget_offers<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut offers = self.offers.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            offers.remove(id);
        }
    }

    /// The framework's `FrameworkInfo` JSON with its id (for its executors).
    pub(super) fn framework_json(&self) -> String {
        let id = self
            .framework_id
            .get()
            .map(|f| f.as_str())
            .unwrap_or_default();
        self.subscribe.framework_json(id)
    }
}

/// Opens the stream: the response is sent at once (200, chunked), its first event is the
/// state's answer (SUBSCRIBED, or an ERROR refusing the subscription).
pub(super) async fn subscribe(
    edge: Arc<MesosEdge>,
    subscribe: Subscribe,
    authenticated: Authenticated,
    remote: SocketAddr,
    master: MasterInfo,
) -> Response {
    let stream_id = uuid::Uuid::new_v4().to_string();
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_QUEUE);
    let response = stream_response(&stream_id, body_rx);
    let principal = authenticated.principal().map(str::to_string);
    // A framework may name its principal; with credentials it must be the one it proved.
    if let (Some(proved), Some(claimed)) = (&principal, &subscribe.principal) {
        if proved != claimed {
            let message = format!(
                "Framework principal '{claimed}' does not match authenticated principal '{proved}'"
            );
            info!(%remote, "refusing a Mesos subscription: {message}");
            tokio::spawn(async move {
                let _ = body_tx.send(Ok(record(&scheduler::error(&message)))).await;
            });
            return response;
        }
    }
    let conn = edge.fresh_conn();
    let (events_tx, events_rx) = queue::channel(STREAM_QUEUE, STREAM_QUEUE_BYTES);
    let (edge_tx, edge_rx) = mpsc::channel(EDGE_QUEUE);
    let (end_tx, end_rx) = watch::channel(None);
    let info = FrameworkInfo {
        framework_id: subscribe.id.clone().map(FrameworkId),
        name: subscribe.name.clone(),
        role: subscribe.role.clone(),
        failover_timeout_secs: subscribe.failover_timeout,
        principal: principal.clone(),
        user: subscribe.user.clone(),
        webui_url: subscribe.webui_url.clone(),
        api: FrameworkApi::MesosV1,
    };
    let sub = Arc::new(Subscription {
        stream_id,
        conn,
        principal: principal.clone(),
        subscribe,
        framework_id: OnceLock::new(),
        offers: Mutex::new(HashMap::new()),
        edge_events: edge_tx,
        tearing_down: AtomicBool::new(false),
    });
    let connected = Input::Connected {
        conn,
        identity: PeerIdentity {
            role: Role::Framework,
            subject: principal.clone().unwrap_or_else(|| "mesos-http".into()),
            principal,
            address: remote,
        },
        tx: PeerTx::Scheduler(events_tx),
        handle: Some(PeerHandle::Stream(end_tx)),
    };
    let subscribe_call = Input::FromScheduler {
        conn,
        call: SchedulerCall::Subscribe(info),
    };
    if edge.inputs.send(connected).await.is_err() || edge.inputs.send(subscribe_call).await.is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        )
            .into_response();
    }
    debug!(%remote, conn, "Mesos scheduler subscribing");
    let writer = Writer {
        edge,
        sub,
        body: body_tx,
        end: end_rx,
        master,
    };
    tokio::spawn(writer.run(events_rx, edge_rx));
    response
}

fn stream_response(stream_id: &str, body: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let chunks = futures_util::stream::unfold(body, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        [(super::STREAM_ID, stream_id.to_string())],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// One event as a RecordIO record of compact ASCII JSON.
fn record(event: &Value) -> Bytes {
    let json = bramble_mesos::json::to_ascii_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    Bytes::from(bramble_mesos::recordio::encode(&json))
}

struct Writer {
    edge: Arc<MesosEdge>,
    sub: Arc<Subscription>,
    body: mpsc::Sender<Result<Bytes, Infallible>>,
    end: watch::Receiver<Option<String>>,
    master: MasterInfo,
}

/// What the writer does with a native event.
enum Next {
    Send(Vec<Value>),
    /// Send these, then end the stream.
    Last(Vec<Value>),
    Skip,
}

impl Writer {
    async fn run(
        mut self,
        mut events: QueueRx<MasterEvent>,
        mut edge_events: mpsc::Receiver<Value>,
    ) {
        let period = Duration::from_secs(HEARTBEAT_INTERVAL_SECS);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut subscribed = false;
        let mut shutdown = self.edge.shutdown.clone();
        let reason = loop {
            let next = tokio::select! {
                _ = self.end.changed() => {
                    break self.end.borrow().clone().unwrap_or_else(|| "closed by the master".into());
                }
                _ = shutdown.wait_for(|stop| *stop) => break "the master is shutting down".into(),
                // hyper drops the body when the connection ends (it watches for EOF while a
                // response streams): notice it now, not at the next heartbeat 15 s later, so
                // the failover timer starts when the framework actually left.
                _ = self.body.closed() => break "the client went away".into(),
                ev = events.recv() => match ev {
                    Some(ev) => self.translate(ev, &mut subscribed, &mut heartbeat),
                    None => break "the master dropped the stream".into(),
                },
                Some(v) = edge_events.recv() => Next::Send(vec![v]),
                _ = heartbeat.tick(), if subscribed => Next::Send(vec![scheduler::heartbeat()]),
            };
            let (out, last) = match next {
                Next::Send(v) => (v, false),
                Next::Last(v) => (v, true),
                Next::Skip => continue,
            };
            let mut sent = true;
            for event in &out {
                if !self.push(event).await {
                    sent = false;
                    break;
                }
            }
            if !sent {
                break "the client went away".to_string();
            }
            if last {
                break "the framework's stream ended with an error".into();
            }
        };
        self.finish(&reason).await;
    }

    fn translate(
        &mut self,
        ev: MasterEvent,
        subscribed: &mut bool,
        heartbeat: &mut tokio::time::Interval,
    ) -> Next {
        match ev {
            MasterEvent::Subscribed { framework_id, .. } => {
                let _ = self.sub.framework_id.set(framework_id.clone());
                self.edge
                    .subscriptions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(framework_id.clone(), self.sub.clone());
                info!(framework = %framework_id, stream = %self.sub.stream_id, principal = ?self.sub.principal,
                    "Mesos framework subscribed");
                *subscribed = true;
                heartbeat.reset();
                // The heartbeat right away: mesoshttp handles a record only once the next
                // one starts (pitfall 4).
                Next::Send(vec![
                    scheduler::subscribed(framework_id.as_str(), &self.master),
                    scheduler::heartbeat(),
                ])
            }
            MasterEvent::Error {
                message,
                fatal: true,
            } => {
                if self.sub.tearing_down.load(Ordering::Relaxed) {
                    Next::Last(Vec::new())
                } else {
                    Next::Last(vec![scheduler::error(&message)])
                }
            }
            MasterEvent::Offers(offers) => {
                let mut known = self.sub.offers.lock().unwrap_or_else(|e| e.into_inner());
                if known.len() + offers.len() > MAX_REMEMBERED_OFFERS {
                    known.clear();
                }
                for o in &offers {
                    known.insert(o.id.0.clone(), o.agent_id.0.clone());
                }
                drop(known);
                Next::Send(vec![
                    scheduler::from_native(&MasterEvent::Offers(offers)).unwrap_or(Value::Null)
                ])
            }
            MasterEvent::Rescind { offer_id } => {
                self.sub.forget_offers([&offer_id.0]);
                Next::Send(vec![scheduler::from_native(&MasterEvent::Rescind {
                    offer_id,
                })
                .unwrap_or(Value::Null)])
            }
            other => match scheduler::from_native(&other) {
                Some(v) => Next::Send(vec![v]),
                None => Next::Skip,
            },
        }
    }

    /// Writes one event (hyper flushes each chunk as it comes); false when the stream is over
    /// (client gone, closed by the master, shutdown).
    async fn push(&mut self, event: &Value) -> bool {
        let bytes = record(event);
        tokio::select! {
            sent = self.body.send(Ok(bytes)) => sent.is_ok(),
            _ = self.end.changed() => false,
        }
    }

    /// The stream is over: forget it (unless a newer stream took the framework over) and tell
    /// the state, which starts the failover timer if this was the framework's stream.
    async fn finish(self, reason: &str) {
        if let Some(fw) = self.sub.framework_id.get() {
            let mut subs = self
                .edge
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if subs.get(fw).is_some_and(|s| Arc::ptr_eq(s, &self.sub)) {
                subs.remove(fw);
            }
            drop(subs);
            info!(framework = %fw, stream = %self.sub.stream_id, "Mesos event stream ended: {reason}");
        } else {
            debug!(stream = %self.sub.stream_id, "Mesos event stream ended before subscribing: {reason}");
        }
        let disconnected = Input::Disconnected {
            conn: self.sub.conn,
            reason: format!("Mesos event stream: {reason}"),
            graceful: false,
        };
        if self.edge.inputs.send(disconnected).await.is_err() {
            warn!("the master stopped before a Mesos stream's end reached it");
        }
    }
}
