//! The read-only endpoints Mesos tools and UIs read (contract §7), built from the same
//! `ClusterState` operators get: `/master/state` (= `/state`), `/master/state-summary`,
//! `/metrics/snapshot`, `/master/redirect` (= `/redirect`) and `/master/health`. Ids are plain
//! strings here and agents are `slaves`, unlike the v1 API.
//!
//! What Bramble does not track is left out rather than made up: terminal task counters are
//! not in `/metrics/snapshot` (Mesos counts them since start; the master keeps only recent
//! completed tasks), and executors are listed with what the master charges for them.

use crate::http::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bramble_mesos::v1::resources::to_state_map;
use bramble_mesos::MESOS_VERSION;
use bramble_proto::messages::{ClusterState, OperatorCall, OperatorReply, TaskSummary};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskState};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// `build_date`, `build_time` and `build_user` as Mesos's `/version` has them: the time is the
/// master binary's modification time (when it was built or installed), the user the one
/// that compiled it.
pub fn build_info() -> Value {
    let built = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let date = time::OffsetDateTime::from_unix_timestamp(built as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    json!({
        "build_date": date,
        "build_time": built as f64,
        "build_user": option_env!("USER").unwrap_or("bramble"),
    })
}

/// `GET /master/redirect` (and `/redirect`): 307 to ourselves, the only master, as an
/// absolute `http://host:port` (pitfall 13: pymesos takes the netloc, mesoshttp appends the
/// API path). The client's `Host` is echoed only when it is a plain `host:port` naming our
/// HTTP port: anything else (another port, userinfo, a path, a bare name) would make us send
/// clients elsewhere on a request's say, so it gets our own name instead.
pub async fn redirect(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let port = app.mesos.http_addr.port();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| own_authority(h, port))
        .unwrap_or_else(|| format!("{}:{port}", bramble_proto::discovery::local_hostname()));
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("http://{host}"))],
    )
        .into_response()
}

/// `host` when it is exactly an authority `name:port` (or `[v6]:port`) with our `port`.
fn own_authority(host: &str, port: u16) -> Option<String> {
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    let plain = authority.as_str() == host && !host.contains('@');
    (plain && authority.port_u16() == Some(port)).then(|| host.to_string())
}

/// `GET /master/health`: 200 with an empty body, as Mesos answers.
pub async fn health() -> Response {
    (StatusCode::OK, [(header::CONTENT_LENGTH, "0")]).into_response()
}

async fn cluster_state(app: &AppState) -> Result<ClusterState, Response> {
    match app.api.call(OperatorCall::GetState).await {
        Ok(OperatorReply::State(s)) => Ok(s),
        _ => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is not answering",
        )
            .into_response()),
    }
}

/// A JSON answer, wrapped as `cb(...)` when `?jsonp=cb` asks for it.
fn answer(value: Value, query: &HashMap<String, String>) -> Response {
    match query.get("jsonp").filter(|cb| valid_callback(cb)) {
        Some(cb) => (
            [(header::CONTENT_TYPE, "text/javascript")],
            format!("{cb}({value});"),
        )
            .into_response(),
        None => axum::Json(value).into_response(),
    }
}

fn valid_callback(cb: &str) -> bool {
    !cb.is_empty()
        && cb.len() < 100
        && cb
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
}

/// `GET /master/state` (and `/state`).
pub async fn state(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let s = match cluster_state(&app).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let info = app.mesos.master_info(&headers);
    answer(
        master_state(&s, &info_json(&info), app.mesos.started),
        &query,
    )
}

/// `GET /master/state-summary`.
pub async fn state_summary(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let s = match cluster_state(&app).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let info = app.mesos.master_info(&headers);
    let all: Vec<&TaskSummary> = s.tasks.iter().chain(&s.completed_tasks).collect();
    let counts = |pred: &dyn Fn(&TaskSummary) -> bool| -> Map<String, Value> {
        let mut m = Map::new();
        for state in [
            "TASK_STAGING",
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_KILLING",
            "TASK_FINISHED",
            "TASK_KILLED",
            "TASK_FAILED",
            "TASK_LOST",
            "TASK_ERROR",
            "TASK_UNREACHABLE",
        ] {
            let n = all
                .iter()
                .filter(|t| pred(t) && t.state.name() == state)
                .count();
            m.insert(state.into(), json!(n));
        }
        m
    };
    let slaves: Vec<Value> = s
        .agents
        .iter()
        .map(|a| {
            let mut v = slave_json(a, &s);
            let mut fws: Vec<&str> = all
                .iter()
                .filter(|t| t.agent_id == a.id)
                .map(|t| t.framework_id.as_str())
                .collect();
            fws.sort();
            fws.dedup();
            v["framework_ids"] = json!(fws);
            merge(&mut v, counts(&|t| t.agent_id == a.id));
            v
        })
        .collect();
    let frameworks: Vec<Value> = s
        .frameworks
        .iter()
        .map(|f| {
            let mut v = framework_summary_json(f, &s);
            let mut agents: Vec<&str> = all
                .iter()
                .filter(|t| t.framework_id == f.id)
                .map(|t| t.agent_id.as_str())
                .collect();
            agents.sort();
            agents.dedup();
            v["slave_ids"] = json!(agents);
            merge(&mut v, counts(&|t| t.framework_id == f.id));
            v
        })
        .collect();
    answer(
        json!({
            "hostname": info.hostname,
            "cluster": app.api.name,
            "slaves": slaves,
            "frameworks": frameworks,
        }),
        &query,
    )
}

fn merge(v: &mut Value, m: Map<String, Value>) {
    if let Value::Object(obj) = v {
        obj.extend(m);
    }
}

fn info_json(info: &bramble_mesos::scheduler::MasterInfo) -> Value {
    info.to_json()
}

/// The `/master/state` document.
pub fn master_state(s: &ClusterState, master: &Value, started: f64) -> Value {
    let pid = master["pid"].clone();
    let mut doc = json!({
        "version": MESOS_VERSION,
        "bramble_version": bramble_proto::SOFTWARE_VERSION,
        "start_time": started,
        "elected_time": started,
        "id": s.cluster_id,
        "pid": pid,
        "hostname": master["hostname"],
        "capabilities": [],
        "activated_slaves": s.agents.iter().filter(|a| a.connected).count() as f64,
        "deactivated_slaves": s.agents.iter().filter(|a| !a.connected).count() as f64,
        "unreachable_slaves": 0.0,
        "leader": pid,
        "leader_info": {
            "id": s.cluster_id,
            "pid": master["pid"],
            "port": master["port"],
            "hostname": master["hostname"],
        },
        "flags": {},
        "slaves": s.agents.iter().map(|a| slave_json(a, s)).collect::<Vec<_>>(),
        "recovered_slaves": [],
        "frameworks": s.frameworks.iter().map(|f| framework_json(f, s)).collect::<Vec<_>>(),
        "completed_frameworks": [],
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    });
    merge(
        &mut doc,
        build_info().as_object().cloned().unwrap_or_default(),
    );
    doc
}

fn sum<'a>(items: impl Iterator<Item = &'a Resources>) -> Resources {
    let mut total = Resources::default();
    for r in items {
        total.add(r);
    }
    total
}

fn attributes_json(attrs: &std::collections::BTreeMap<String, String>) -> Value {
    let m: Map<String, Value> = attrs
        .iter()
        .map(|(k, v)| {
            let value = match v.parse::<f64>() {
                Ok(n) if n.is_finite() => json!(n),
                _ => json!(v),
            };
            (k.clone(), value)
        })
        .collect();
    Value::Object(m)
}

fn live_on_agent<'a>(
    s: &'a ClusterState,
    agent: &'a AgentId,
) -> impl Iterator<Item = &'a TaskSummary> {
    s.tasks
        .iter()
        .filter(move |t| &t.agent_id == agent && !t.state.is_terminal())
}

fn slave_json(a: &bramble_proto::messages::AgentSummary, s: &ClusterState) -> Value {
    let used = sum(live_on_agent(s, &a.id)
        .map(|t| &t.resources)
        .chain(a.executors.iter().map(|e| &e.resources)));
    let offered = sum(s
        .offers
        .iter()
        .filter(|o| o.agent_id == a.id)
        .map(|o| &o.resources));
    let port = a
        .address
        .parse::<std::net::SocketAddr>()
        .map(|addr| addr.port())
        .unwrap_or(5051);
    json!({
        "id": a.id.as_str(),
        "hostname": a.hostname,
        "port": port,
        "pid": format!("slave(1)@{}", a.address),
        "attributes": attributes_json(&a.attributes),
        "resources": to_state_map(&a.total),
        "used_resources": to_state_map(&used),
        "offered_resources": to_state_map(&offered),
        "reserved_resources": {},
        "unreserved_resources": to_state_map(&a.total),
        "active": a.connected,
        "deactivated": !a.connected,
        "version": MESOS_VERSION,
        "capabilities": [],
        "last_heartbeat": a.last_heartbeat,
    })
}

fn task_json(t: &TaskSummary) -> Value {
    let mut statuses = vec![json!({"state": "TASK_STAGING", "timestamp": t.launched_at})];
    if let Some(at) = t.started_at {
        statuses.push(json!({"state": "TASK_RUNNING", "timestamp": at}));
    }
    if let (Some(at), true) = (t.ended_at, t.state.is_terminal()) {
        statuses.push(json!({"state": t.state.name(), "timestamp": at}));
    }
    json!({
        "id": t.id.as_str(),
        "name": t.name,
        "framework_id": t.framework_id.as_str(),
        "executor_id": "",
        "slave_id": t.agent_id.as_str(),
        "state": t.state.name(),
        "resources": to_state_map(&t.resources),
        "role": "*",
        "statuses": statuses,
    })
}

fn framework_used(f: &FrameworkId, s: &ClusterState) -> Resources {
    sum(s
        .tasks
        .iter()
        .filter(|t| &t.framework_id == f && !t.state.is_terminal())
        .map(|t| &t.resources)
        .chain(
            s.agents
                .iter()
                .flat_map(|a| &a.executors)
                .filter(|e| &e.framework_id == f)
                .map(|e| &e.resources),
        ))
}

fn framework_summary_json(
    f: &bramble_proto::messages::FrameworkSummary,
    s: &ClusterState,
) -> Value {
    let used = framework_used(&f.id, s);
    let offered = sum(s
        .offers
        .iter()
        .filter(|o| o.framework_id == f.id)
        .map(|o| &o.resources));
    json!({
        "id": f.id.as_str(),
        "name": f.name,
        "used_resources": to_state_map(&used),
        "offered_resources": to_state_map(&offered),
        "capabilities": [],
        "hostname": "",
        "webui_url": f.webui_url.clone().unwrap_or_default(),
        "active": f.connected,
        "connected": f.connected,
        "recovered": false,
        "bramble_api": f.api.name(),
    })
}

fn framework_json(f: &bramble_proto::messages::FrameworkSummary, s: &ClusterState) -> Value {
    let mut v = framework_summary_json(f, s);
    let used = framework_used(&f.id, s);
    let offered = sum(s
        .offers
        .iter()
        .filter(|o| o.framework_id == f.id)
        .map(|o| &o.resources));
    let mut held = used.clone();
    held.add(&offered);
    let offers: Vec<Value> = s
        .offers
        .iter()
        .filter(|o| o.framework_id == f.id)
        .map(|o| {
            json!({
                "id": o.id.as_str(),
                "framework_id": o.framework_id.as_str(),
                "slave_id": o.agent_id.as_str(),
                "allocation_info": {"role": f.role},
                "resources": to_state_map(&o.resources),
            })
        })
        .collect();
    let executors: Vec<Value> = s
        .agents
        .iter()
        .flat_map(|a| a.executors.iter().map(move |e| (a, e)))
        .filter(|(_, e)| e.framework_id == f.id)
        .map(|(a, e)| {
            json!({
                "executor_id": e.executor_id.as_str(),
                "name": e.executor_id.as_str(),
                "framework_id": f.id.as_str(),
                "resources": to_state_map(&e.resources),
                "slave_id": a.id.as_str(),
                "type": "CUSTOM",
            })
        })
        .collect();
    let fields = json!({
        "user": f.user,
        "failover_timeout": f.failover_timeout_secs,
        "checkpoint": false,
        "role": f.role,
        "resources": to_state_map(&held),
        "tasks": s.tasks.iter().filter(|t| t.framework_id == f.id).map(task_json).collect::<Vec<_>>(),
        "unreachable_tasks": [],
        "completed_tasks": s.completed_tasks.iter().filter(|t| t.framework_id == f.id).map(task_json).collect::<Vec<_>>(),
        "offers": offers,
        "executors": executors,
    });
    merge(&mut v, fields.as_object().cloned().unwrap_or_default());
    if let Some(p) = &f.principal {
        v["principal"] = json!(p);
    }
    v
}

/// `GET /metrics/snapshot`: Mesos's metric names that Bramble can fill from what it knows
/// now (gauges; the cumulative terminal-task counters are left out).
pub async fn metrics_snapshot(State(app): State<AppState>) -> Response {
    let s = match cluster_state(&app).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut m = snapshot_metrics(&s, bramble_proto::unix_now() - app.mesos.started);
    m.extend(system_metrics());
    axum::Json(Value::Object(m)).into_response()
}

pub fn snapshot_metrics(s: &ClusterState, uptime: f64) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: f64| {
        m.insert(k.to_string(), json!(v));
    };
    put("master/elected", 1.0);
    put("master/uptime_secs", uptime);
    let connected = s.agents.iter().filter(|a| a.connected).count() as f64;
    let agents = s.agents.len() as f64;
    put("master/slaves_active", connected);
    put("master/slaves_connected", connected);
    put("master/slaves_disconnected", agents - connected);
    put("master/slaves_inactive", agents - connected);
    put("master/slaves_unreachable", 0.0);
    let fw_connected = s.frameworks.iter().filter(|f| f.connected).count() as f64;
    let fws = s.frameworks.len() as f64;
    put("master/frameworks_active", fw_connected);
    put("master/frameworks_connected", fw_connected);
    put("master/frameworks_disconnected", fws - fw_connected);
    put("master/frameworks_inactive", fws - fw_connected);
    for (state, name) in [
        (TaskState::Staging, "staging"),
        (TaskState::Starting, "starting"),
        (TaskState::Running, "running"),
    ] {
        let n = s.tasks.iter().filter(|t| t.state == state).count() as f64;
        put(&format!("master/tasks_{name}"), n);
    }
    put("master/tasks_killing", 0.0);
    let total = sum(s.agents.iter().filter(|a| a.connected).map(|a| &a.total));
    let used = sum(s
        .agents
        .iter()
        .filter(|a| a.connected)
        .map(|a| &a.allocated));
    let pct = |u: f64, t: f64| if t > 0.0 { u / t } else { 0.0 };
    let (tc, uc) = (
        total.cpus_milli as f64 / 1000.0,
        used.cpus_milli as f64 / 1000.0,
    );
    let (tm, um) = (total.mem_mib as f64, used.mem_mib as f64);
    let (td, ud) = (total.disk_mib as f64, used.disk_mib as f64);
    for (name, t, u) in [
        ("cpus", tc, uc),
        ("mem", tm, um),
        ("disk", td, ud),
        ("gpus", 0.0, 0.0),
    ] {
        put(&format!("master/{name}_total"), t);
        put(&format!("master/{name}_used"), u);
        put(&format!("master/{name}_percent"), pct(u, t));
    }
    put("master/outstanding_offers", s.offers_outstanding as f64);
    m
}

/// `system/*` from /proc (left out where /proc does not say).
fn system_metrics() -> Map<String, Value> {
    let mut m = Map::new();
    if let Ok(n) = std::thread::available_parallelism() {
        m.insert("system/cpus_total".into(), json!(n.get() as f64));
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let parts: Vec<f64> = load
            .split_whitespace()
            .take(3)
            .filter_map(|p| p.parse().ok())
            .collect();
        if let [one, five, fifteen] = parts[..] {
            m.insert("system/load_1min".into(), json!(one));
            m.insert("system/load_5min".into(), json!(five));
            m.insert("system/load_15min".into(), json!(fifteen));
        }
    }
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib = |key: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(total) = kib("MemTotal:") {
            m.insert("system/mem_total_bytes".into(), json!(total * 1024.0));
        }
        if let Some(free) = kib("MemAvailable:").or_else(|| kib("MemFree:")) {
            m.insert("system/mem_free_bytes".into(), json!(free * 1024.0));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::own_authority;

    #[test]
    fn only_a_plain_authority_on_our_port_is_echoed() {
        assert_eq!(
            own_authority("pi1.local:5050", 5050).as_deref(),
            Some("pi1.local:5050")
        );
        assert_eq!(
            own_authority("10.0.0.2:5050", 5050).as_deref(),
            Some("10.0.0.2:5050")
        );
        assert_eq!(
            own_authority("[::1]:5050", 5050).as_deref(),
            Some("[::1]:5050")
        );
        for hostile in [
            "attacker.test:80",
            "attacker.test",
            "user@attacker.test:5050",
            "attacker.test:5050/x",
            "attacker.test:5050 x",
            "",
        ] {
            assert_eq!(own_authority(hostile, 5050), None, "{hostile:?}");
        }
    }
}
