//! `GET /api/v1/events`: the state's change events (see `state/feed.rs`) as server-sent events.
//!
//! The state task never waits for a browser: it publishes into the feed's bounded broadcast and
//! moves on, and a subscriber that falls behind is sent a `resync` event instead of what it
//! lost (the page then refetches `/api/v1/state`). Nothing a client does — reading slowly,
//! vanishing — reaches the master. Every stream ends when the master shuts down, because an
//! open SSE stream would otherwise hold axum's graceful shutdown forever.

use super::{AppState, StreamPermit};
use crate::state::feed::ClusterEvent;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
                Ok(ev) => sse_event(&ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Event::default().event("resync").data(n.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), st))
    })
}

/// An event named by its JSON `type` tag, so each variant's name is said once (in serde's).
fn sse_event(event: &ClusterEvent) -> Event {
    let encoded = serde_json::to_value(event).ok().and_then(|json| {
        let name = json.get("type")?.as_str()?.to_string();
        Event::default().event(name).json_data(json).ok()
    });
    encoded.unwrap_or_else(|| Event::default().event("resync").data("encode"))
}
