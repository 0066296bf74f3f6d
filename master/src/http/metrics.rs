//! `GET /metrics`: Prometheus (OpenMetrics text) exposition with `prometheus-client`.
//!
//! Gauges are read off a fresh state snapshot at scrape time and put in a registry built for
//! that scrape, so an agent or state that disappears disappears from the output too (no stale
//! label sets). The metrics the state task accumulates, status-update latency and the
//! allocation cycle's duration, are histograms shared with it through the state's
//! [`crate::state::feed::Feed`], as are the event counters (`state/counters.rs`: tasks
//! launched and ended by framework, offers, status updates, agents, frameworks). The service
//! framework's instances by health are read off the feed's services view.

use super::AppState;
use crate::state::services::{Health, ServicesView};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_proto::messages::{ClusterState, OperatorCall, OperatorReply};
use bramble_proto::{Resources, TaskState};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(State(app): State<AppState>) -> Response {
    let state = match app.api.call(OperatorCall::GetState).await {
        Ok(OperatorReply::State(s)) => s,
        _ => return super::api::error(StatusCode::SERVICE_UNAVAILABLE, "master not answering"),
    };
    let mut registry = Registry::with_prefix("bramble");
    register_state(&mut registry, &state);
    register_services(&mut registry, &app.api.events.services());
    let quic = app.api.endpoint.open_connections();
    let help = "QUIC connections open on the master's endpoint";
    registry.register("quic_connections", help, gauge(quic as i64));
    let streams = app.api.events.subscribers();
    let help = "Web clients subscribed to the event stream";
    registry.register("http_event_streams", help, gauge(streams as i64));
    registry.register(
        "status_update_latency_seconds",
        "From an agent producing a status update to the master forwarding it",
        app.api.events.update_latency(),
    );
    registry.register(
        "allocation_cycle_seconds",
        "How long each allocation pass took: the allocator and the offers it became",
        app.api.events.allocation_cycle(),
    );
    app.api.events.counters().register(&mut registry);
    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        return super::api::error(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics");
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

/// A count per `connected="true"|"false"` label, both present even when zero.
fn by_connected(connected: impl Iterator<Item = bool>) -> Family<Labels, Gauge> {
    let (up, down) = connected.fold(
        (0, 0),
        |(up, down), c| if c { (up + 1, down) } else { (up, down + 1) },
    );
    let family = Family::<Labels, Gauge>::default();
    for (value, n) in [("true", up), ("false", down)] {
        family
            .get_or_create(&labels(&[("connected", value)]))
            .set(n);
    }
    family
}

fn register_state(registry: &mut Registry, state: &ClusterState) {
    let agents = by_connected(state.agents.iter().map(|a| a.connected));
    registry.register("agents", "Agents known to the master", agents);

    let resources = Family::<Labels, FloatGauge>::default();
    let mut total = Resources::default();
    let mut allocated = Resources::default();
    for a in state.agents.iter().filter(|a| a.connected) {
        total.add(&a.total);
        allocated.add(&a.allocated);
    }
    for (kind, r) in [("total", &total), ("allocated", &allocated)] {
        for (name, v) in [
            ("cpus", r.cpus_milli as f64 / 1000.0),
            ("mem_mib", r.mem_mib as f64),
            ("disk_mib", r.disk_mib as f64),
        ] {
            resources
                .get_or_create(&labels(&[("resource", name), ("kind", kind)]))
                .set(v);
        }
    }
    registry.register(
        "resources",
        "Resources of connected agents: total, and allocated to frameworks",
        resources,
    );

    let tasks = Family::<Labels, Gauge>::default();
    for s in TaskState::ALL {
        let n = state.tasks.iter().filter(|t| t.state == s).count();
        tasks
            .get_or_create(&labels(&[("state", s.name())]))
            .set(n as i64);
    }
    registry.register("tasks", "Tasks the master tracks, by state", tasks);

    let frameworks = by_connected(state.frameworks.iter().map(|f| f.connected));
    registry.register("frameworks", "Frameworks subscribed", frameworks);

    let offers = gauge(state.offers_outstanding as i64);
    registry.register("offers_outstanding", "Offers not yet answered", offers);

    let progress = Family::<Labels, FloatGauge>::default();
    for j in &state.jobs {
        let ratio = if j.progress.total == 0 {
            0.0
        } else {
            j.progress.done as f64 / j.progress.total as f64
        };
        progress
            .get_or_create(&labels(&[
                ("framework", j.framework_id.as_str()),
                ("job", &j.progress.job),
            ]))
            .set(ratio);
    }
    registry.register(
        "job_progress_ratio",
        "Published job progress, done/total",
        progress,
    );
}

/// `bramble_service_instances{service, health}`: every health label of every service, zero
/// included, so a dashboard's "unhealthy" line exists before the first failure.
fn register_services(registry: &mut Registry, view: &ServicesView) {
    let family = Family::<Labels, Gauge>::default();
    for service in &view.services {
        for health in Health::ALL {
            family
                .get_or_create(&labels(&[
                    ("service", &service.name),
                    ("health", health.as_str()),
                ]))
                .inc_by(service.count(health) as i64);
        }
    }
    registry.register(
        "service_instances",
        "Instances of the service framework's services, by health",
        family,
    );
}
