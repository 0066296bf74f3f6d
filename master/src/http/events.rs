//! Change events: what the state task tells the web UI, and the SSE endpoint that carries them.
//!
//! The state task must never wait for a browser, so it publishes into a bounded
//! `tokio::sync::broadcast` channel and moves on: a subscriber that falls behind loses the
//! oldest events and is sent a `resync` event instead (the page then refetches
//! `/api/v1/state`). Nothing a client does — reading slowly, vanishing — reaches the master.
//! Every stream ends when the master shuts down, because an open SSE stream would otherwise
//! hold axum's graceful shutdown forever.

use super::{AppState, StreamPermit};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bramble_proto::messages::{JobProgress, TaskSummary};
use bramble_proto::{AgentId, FrameworkId};
use futures_util::stream::Stream;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Events buffered per subscriber before a slow one is told to resync.
const EVENT_BUFFER: usize = 1024;

/// One change in the cluster, as the web UI sees it. Serialized as JSON with a `type` tag that
/// is also the SSE event name.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    AgentRegistered {
        agent_id: AgentId,
        hostname: String,
        returning: bool,
    },
    AgentDisconnected {
        agent_id: AgentId,
    },
    AgentRemoved {
        agent_id: AgentId,
        reason: String,
    },
    FrameworkSubscribed {
        framework_id: FrameworkId,
        name: String,
    },
    FrameworkDisconnected {
        framework_id: FrameworkId,
    },
    FrameworkRemoved {
        framework_id: FrameworkId,
        reason: String,
    },
    /// A task was launched or changed state (the summary is the task as it is now).
    Task(TaskSummary),
    Progress {
        framework_id: FrameworkId,
        progress: JobProgress,
    },
}

impl ClusterEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ClusterEvent::AgentRegistered { .. } => "agent_registered",
            ClusterEvent::AgentDisconnected { .. } => "agent_disconnected",
            ClusterEvent::AgentRemoved { .. } => "agent_removed",
            ClusterEvent::FrameworkSubscribed { .. } => "framework_subscribed",
            ClusterEvent::FrameworkDisconnected { .. } => "framework_disconnected",
            ClusterEvent::FrameworkRemoved { .. } => "framework_removed",
            ClusterEvent::Task(_) => "task",
            ClusterEvent::Progress { .. } => "progress",
        }
    }
}

/// The state task's side: publish events, record status-update latency. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: broadcast::Sender<ClusterEvent>,
    update_latency: Histogram,
}

impl Default for EventSink {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            tx,
            // 1 ms .. ~16 s
            update_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }

    /// Publishes `event` to whoever listens; costs nothing when nobody does.
    pub fn emit(&self, event: impl FnOnce() -> ClusterEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event());
        }
    }

    /// Records how long an agent's status update took from being produced (its `timestamp`,
    /// the agent's clock) to being forwarded by the master. Clock skew can make it negative;
    /// that is clamped to zero.
    pub fn observe_update_latency(&self, produced_at: f64) {
        let latency = (bramble_proto::unix_now() - produced_at).max(0.0);
        self.update_latency.observe(latency);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.tx.subscribe()
    }

    pub fn update_latency(&self) -> Histogram {
        self.update_latency.clone()
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// `GET /api/v1/events`: `hello` first (fetch the state after it), then one event per change,
/// `resync` after losing events, keep-alive comments in between.
pub async fn stream(State(app): State<AppState>) -> Response {
    let Some(permit) = app.stream_permit() else {
        return super::api::error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many open event streams",
        );
    };
    let rx = app.api.events.subscribe();
    let hello = Event::default().event("hello").data(format!(
        "{{\"cluster_id\":{:?},\"version\":{:?}}}",
        app.api.cluster_id,
        bramble_proto::SOFTWARE_VERSION
    ));
    Sse::new(event_stream(rx, app.api.shutdown.clone(), hello, permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn event_stream(
    rx: broadcast::Receiver<ClusterEvent>,
    shutdown: watch::Receiver<bool>,
    hello: Event,
    permit: StreamPermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        rx: broadcast::Receiver<ClusterEvent>,
        shutdown: watch::Receiver<bool>,
        hello: Option<Event>,
        _permit: StreamPermit,
    }
    let st = St {
        rx,
        shutdown,
        hello: Some(hello),
        _permit: permit,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if let Some(hello) = st.hello.take() {
            return Some((Ok(hello), st));
        }
        if *st.shutdown.borrow() {
            return None;
        }
        let event = tokio::select! {
            // A closed watch (the master handle is gone) ends the stream too.
            _ = st.shutdown.changed() => return None,
            r = st.rx.recv() => match r {
                Ok(ev) => Event::default()
                    .event(ev.name())
                    .json_data(&ev)
                    .unwrap_or_else(|_| Event::default().event("resync").data("encode")),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("resync").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), st))
    })
}
