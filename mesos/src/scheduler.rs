//! The v1 scheduler API's calls and events (`scheduler.proto`, contract §2): a call's JSON
//! read leniently and checked as Mesos checks it (a refusal carries the 400 and its reason),
//! and the native [`MasterEvent`]s written as Mesos events. The master's edge
//! (`master/src/http/mesos/`) does the HTTP; everything here is pure and unit-tested.
//!
//! Every event is `{"type":T,"<lowercase t>":{...}}` with the payload nested the way the
//! proto nests it (`offers.offers`, `error.message`), HEARTBEAT alone without a payload:
//! pymesos drops events without their payload key (pitfall 10).

use crate::http::Refusal;
use crate::offer;
use crate::v1::{b64, decode_uuid, lenient, Id, TaskStatus};
use bramble_proto::messages::MasterEvent;
use bramble_proto::task::UpdateSource;
use bramble_proto::{TaskReason, TaskState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Mesos sends a heartbeat every 15 s (`DEFAULT_HEARTBEAT_INTERVAL`).
pub const HEARTBEAT_INTERVAL_SECS: u64 = 15;
/// Mesos caps `Filters.refuse_seconds` at 365 days; pymesos sends 0xFFFFFFFF.
pub const MAX_REFUSE_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// `Filters.refuse_seconds`'s proto default.
pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

/// A scheduler call, read and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The top-level `framework_id` (required on every call but SUBSCRIBE).
    pub framework_id: Option<String>,
    pub kind: CallKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    Subscribe(Box<Subscribe>),
    Teardown,
    Accept(offer::Accept),
    Decline {
        offer_ids: Vec<String>,
        refuse_seconds: f64,
    },
    Revive,
    Suppress,
    Kill {
        task_id: String,
    },
    Shutdown {
        executor_id: String,
        agent_id: String,
    },
    Acknowledge {
        agent_id: String,
        task_id: String,
        uuid: uuid::Uuid,
    },
    /// Explicit (the listed tasks) or implicit (an empty list: every task).
    Reconcile {
        task_ids: Vec<String>,
    },
    Message {
        agent_id: String,
        executor_id: String,
        data: Vec<u8>,
    },
    /// A well-formed call Bramble answers with 202 and does nothing about (REQUEST, inverse
    /// offers, operation acknowledgements and reconciliation): the type, for the log.
    Ignored(String),
}

/// SUBSCRIBE's `framework_info`, as Bramble uses it, and the JSON as the framework sent it
/// (relayed to its executors with the id filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub framework_info: Value,
    pub id: Option<String>,
    pub user: String,
    pub name: String,
    pub failover_timeout: f64,
    pub checkpoint: bool,
    pub role: String,
    pub principal: Option<String>,
    pub webui_url: Option<String>,
}

impl Subscribe {
    /// `framework_info` with `id` set, compact ASCII JSON (for `MesosTask.framework_json`).
    pub fn framework_json(&self, id: &str) -> String {
        let mut info = self.framework_info.clone();
        if let Value::Object(map) = &mut info {
            map.insert("id".into(), json!({ "value": id }));
        }
        crate::json::to_ascii_string(&info).unwrap_or_else(|_| "{}".into())
    }
}

#[derive(Deserialize)]
struct RawCall {
    #[serde(rename = "type")]
    kind: Option<String>,
    framework_id: Option<Id>,
    #[serde(flatten)]
    payloads: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawFrameworkInfo {
    user: Option<String>,
    name: Option<String>,
    id: Option<Id>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    failover_timeout: Option<f64>,
    #[serde(default)]
    checkpoint: Option<bool>,
    role: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    principal: Option<String>,
    webui_url: Option<String>,
}

#[derive(Deserialize)]
struct RawFilters {
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    refuse_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct RawDecline {
    #[serde(default, deserialize_with = "offer::one_or_many")]
    offer_ids: Vec<Id>,
    filters: Option<RawFilters>,
}

#[derive(Deserialize)]
struct RawKill {
    task_id: Id,
}

#[derive(Deserialize)]
struct RawShutdown {
    executor_id: Id,
    agent_id: Option<Id>,
    slave_id: Option<Id>,
}

#[derive(Deserialize)]
struct RawAcknowledge {
    agent_id: Option<Id>,
    slave_id: Option<Id>,
    task_id: Id,
    uuid: String,
}

#[derive(Deserialize)]
struct RawReconcile {
    #[serde(default)]
    tasks: Vec<RawReconcileTask>,
}

#[derive(Deserialize)]
struct RawReconcileTask {
    task_id: Id,
}

#[derive(Deserialize)]
struct RawMessage {
    agent_id: Option<Id>,
    slave_id: Option<Id>,
    executor_id: Id,
    #[serde(default)]
    data: String,
}

/// A refuse filter as Bramble applies it: the default when absent, negative or not a number,
/// capped at 365 days.
pub fn refuse_seconds(given: Option<f64>) -> f64 {
    match given {
        Some(s) if s.is_nan() || s < 0.0 => DEFAULT_REFUSE_SECONDS,
        Some(s) => s.min(MAX_REFUSE_SECONDS),
        None => DEFAULT_REFUSE_SECONDS,
    }
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::bad_request(message)
}

/// The payload `key` of a call, parsed; `None` when absent.
fn payload<T: DeserializeOwned>(
    payloads: &Map<String, Value>,
    key: &str,
) -> Result<Option<T>, Refusal> {
    match payloads.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| {
            bad(format!(
                "Failed to convert JSON into Call protobuf: '{key}': {e}"
            ))
        }),
    }
}

/// The payload `key`, which the call's type requires (400 "Expecting 'key' to be present").
fn required<T: DeserializeOwned>(payloads: &Map<String, Value>, key: &str) -> Result<T, Refusal> {
    payload(payloads, key)?.ok_or_else(|| bad(format!("Expecting '{key}' to be present")))
}

fn agent_of(agent_id: Option<Id>, slave_id: Option<Id>, what: &str) -> Result<String, Refusal> {
    agent_id
        .or(slave_id)
        .map(|id| id.value)
        .ok_or_else(|| bad(format!("Missing required fields: {what}.agent_id")))
}

/// Reads a call's body: JSON that does not parse, or a call Mesos would refuse in validation,
/// is a [`Refusal`] (400 with the reason).
pub fn parse_call(body: &[u8]) -> Result<Call, Refusal> {
    let raw: RawCall = serde_json::from_slice(body)
        .map_err(|e| bad(format!("Failed to parse body into JSON: {e}")))?;
    let kind = raw
        .kind
        .ok_or_else(|| bad("Expecting 'type' to be present"))?;
    let framework_id = raw.framework_id.map(|id| id.value);
    let p = &raw.payloads;
    let call_kind = match kind.as_str() {
        "SUBSCRIBE" => CallKind::Subscribe(Box::new(subscribe(p, framework_id.as_deref())?)),
        "TEARDOWN" => CallKind::Teardown,
        "ACCEPT" => CallKind::Accept(offer::parse_accept(required(p, "accept")?)?),
        "DECLINE" => {
            let d: RawDecline = required(p, "decline")?;
            CallKind::Decline {
                offer_ids: d.offer_ids.into_iter().map(|id| id.value).collect(),
                refuse_seconds: refuse_seconds(d.filters.and_then(|f| f.refuse_seconds)),
            }
        }
        "REVIVE" => CallKind::Revive,
        "SUPPRESS" => CallKind::Suppress,
        "KILL" => CallKind::Kill {
            task_id: required::<RawKill>(p, "kill")?.task_id.value,
        },
        "SHUTDOWN" => {
            let s: RawShutdown = required(p, "shutdown")?;
            CallKind::Shutdown {
                agent_id: agent_of(s.agent_id, s.slave_id, "shutdown")?,
                executor_id: s.executor_id.value,
            }
        }
        "ACKNOWLEDGE" => {
            let a: RawAcknowledge = required(p, "acknowledge")?;
            CallKind::Acknowledge {
                agent_id: agent_of(a.agent_id, a.slave_id, "acknowledge")?,
                task_id: a.task_id.value,
                uuid: decode_uuid(&a.uuid).map_err(|e| bad(format!("acknowledge.uuid: {e}")))?,
            }
        }
        "RECONCILE" => {
            let r: Option<RawReconcile> = payload(p, "reconcile")?;
            CallKind::Reconcile {
                task_ids: r
                    .map(|r| r.tasks.into_iter().map(|t| t.task_id.value).collect())
                    .unwrap_or_default(),
            }
        }
        "MESSAGE" => {
            let m: RawMessage = required(p, "message")?;
            CallKind::Message {
                agent_id: agent_of(m.agent_id, m.slave_id, "message")?,
                executor_id: m.executor_id.value,
                data: b64::decode(&m.data).map_err(|e| bad(format!("message.data: {e}")))?,
            }
        }
        "REQUEST"
        | "ACCEPT_INVERSE_OFFERS"
        | "DECLINE_INVERSE_OFFERS"
        | "ACKNOWLEDGE_OPERATION_STATUS"
        | "RECONCILE_OPERATIONS" => CallKind::Ignored(kind.clone()),
        "UPDATE_FRAMEWORK" => return Err(bad(
            "UPDATE_FRAMEWORK is not supported by Bramble; re-subscribe to change the framework",
        )),
        other => {
            return Err(bad(format!(
                "Failed to convert JSON into Call protobuf: unknown call type {other:?}"
            )))
        }
    };
    if !matches!(call_kind, CallKind::Subscribe(_)) && framework_id.is_none() {
        return Err(bad("Expecting 'framework_id' to be present"));
    }
    Ok(Call {
        framework_id,
        kind: call_kind,
    })
}

fn subscribe(p: &Map<String, Value>, framework_id: Option<&str>) -> Result<Subscribe, Refusal> {
    let sub: Map<String, Value> = required(p, "subscribe")?;
    let info_json = sub
        .get("framework_info")
        .filter(|v| v.is_object())
        .cloned()
        .ok_or_else(|| bad("Missing required fields: subscribe.framework_info"))?;
    let info: RawFrameworkInfo = RawFrameworkInfo::deserialize(&info_json).map_err(|e| {
        bad(format!(
            "Failed to convert JSON into Call protobuf: 'subscribe.framework_info': {e}"
        ))
    })?;
    let mut missing = Vec::new();
    if info.user.is_none() {
        missing.push("framework_info.user");
    }
    if info.name.is_none() {
        missing.push("framework_info.name");
    }
    if !missing.is_empty() {
        return Err(bad(format!(
            "Missing required fields: {}",
            missing.join(", ")
        )));
    }
    let id = info.id.map(|id| id.value);
    if id.as_deref() != framework_id {
        return Err(bad(
            "'framework_id' differs from 'subscribe.framework_info.id'",
        ));
    }
    let failover_timeout = info
        .failover_timeout
        .filter(|t| t.is_finite() && *t >= 0.0)
        .unwrap_or(0.0);
    Ok(Subscribe {
        id,
        user: info.user.unwrap_or_default(),
        name: info.name.unwrap_or_default(),
        failover_timeout,
        checkpoint: info.checkpoint.unwrap_or(false),
        role: info
            .roles
            .into_iter()
            .next()
            .or(info.role)
            .unwrap_or_else(|| crate::v1::resources::DEFAULT_ROLE.into()),
        principal: info.principal,
        webui_url: info.webui_url.filter(|u| !u.is_empty()),
        framework_info: info_json,
    })
}

// ---------------------------------------------------------------------------------------------
// Events

/// What SUBSCRIBED says about the master (`MasterInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct MasterInfo {
    pub id: String,
    pub hostname: String,
    pub ip: std::net::Ipv4Addr,
    pub port: u16,
}

impl MasterInfo {
    pub fn to_json(&self) -> Value {
        let ip = self.ip.to_string();
        json!({
            "id": self.id,
            // `s_addr` in network byte order read as a little-endian u32 (127.0.0.1 → 16777343).
            "ip": u32::from_le_bytes(self.ip.octets()),
            "port": self.port,
            "pid": format!("master@{ip}:{}", self.port),
            "hostname": self.hostname,
            "version": crate::MESOS_VERSION,
            "address": {"hostname": self.hostname, "ip": ip, "port": self.port},
        })
    }
}

fn event(kind: &str, payload: Value) -> Value {
    let mut map = Map::new();
    map.insert("type".into(), json!(kind));
    map.insert(kind.to_ascii_lowercase(), payload);
    Value::Object(map)
}

pub fn heartbeat() -> Value {
    json!({"type": "HEARTBEAT"})
}

pub fn subscribed(framework_id: &str, master: &MasterInfo) -> Value {
    event(
        "SUBSCRIBED",
        json!({
            "framework_id": {"value": framework_id},
            "heartbeat_interval_seconds": HEARTBEAT_INTERVAL_SECS as f64,
            "master_info": master.to_json(),
        }),
    )
}

pub fn error(message: &str) -> Value {
    event("ERROR", json!({ "message": message }))
}

/// An UPDATE the master's edge makes itself (a task it could not translate): no uuid.
pub fn task_error(task_id: &str, message: &str) -> Value {
    event(
        "UPDATE",
        json!({"status": {
            "task_id": {"value": task_id},
            "state": "TASK_ERROR",
            "source": "SOURCE_MASTER",
            "reason": "REASON_TASK_INVALID",
            "message": message,
            "timestamp": bramble_proto::unix_now(),
        }}),
    )
}

/// An operation Bramble does not perform (RESERVE, CREATE, …) that carried an id.
pub fn operation_error(operation_id: &str, agent_id: Option<&str>, message: &str) -> Value {
    let mut status = json!({
        "operation_id": {"value": operation_id},
        "state": "OPERATION_ERROR",
        "message": message,
    });
    if let Some(agent) = agent_id {
        status["agent_id"] = json!({ "value": agent });
    }
    event("UPDATE_OPERATION_STATUS", json!({ "status": status }))
}

/// A native status as the scheduler's UPDATE. An update with a uuid always names its agent
/// and executor (pymesos and mesoshttp read them to acknowledge; a command task's executor
/// is the task itself, as in Mesos). A task the master refused for invalid offers is
/// TASK_LOST, as Mesos reports it.
pub fn update(status: &bramble_proto::TaskStatus) -> Value {
    let mut mesos = TaskStatus::from_native(status);
    if status.uuid.is_some() && mesos.executor_id.is_none() {
        mesos.executor_id = Some(Id::new(status.task_id.as_str()));
    }
    if status.source == UpdateSource::Master
        && status.state == TaskState::Error
        && status.reason == Some(TaskReason::InvalidOffer)
    {
        mesos.state = TaskState::Lost.name().into();
    }
    event("UPDATE", json!({ "status": mesos }))
}

/// A native event as Mesos events: `None` for what a Mesos scheduler never sees
/// (SUBSCRIBED is written by the edge, which knows the master's info; heartbeat acks).
/// An OFFERS event lists the offers nested (`offers.offers`).
pub fn from_native(ev: &MasterEvent) -> Option<Value> {
    Some(match ev {
        // Mesos has no framework state store: a Mesos framework never writes one.
        MasterEvent::Subscribed { .. }
        | MasterEvent::HeartbeatAck
        | MasterEvent::State { .. }
        | MasterEvent::StateChanged { .. }
        // Nor campaigns: the edge subscribes, never campaigns.
        | MasterEvent::Standby { .. }
        // Mesos tells schedulers of a drain only by killing their tasks.
        | MasterEvent::AgentDraining { .. } => return None,
        MasterEvent::Offers(offers) => event(
            "OFFERS",
            json!({ "offers": offers.iter().map(offer::to_mesos).collect::<Vec<_>>() }),
        ),
        MasterEvent::Rescind { offer_id } => {
            event("RESCIND", json!({"offer_id": {"value": offer_id.as_str()}}))
        }
        MasterEvent::Update(status) => update(status),
        MasterEvent::Message {
            agent_id,
            executor_id,
            data,
        } => event(
            "MESSAGE",
            json!({
                "agent_id": {"value": agent_id.as_str()},
                "executor_id": {"value": executor_id.as_str()},
                "data": b64::encode(data),
            }),
        ),
        MasterEvent::AgentLost { agent_id } => {
            event("FAILURE", json!({"agent_id": {"value": agent_id.as_str()}}))
        }
        // pymesos reads `status` whenever `executor_id` is there (pitfall 10): an unknown wait
        // status is written as -1 rather than left out.
        MasterEvent::ExecutorLost {
            agent_id,
            executor_id,
            status,
        } => event(
            "FAILURE",
            json!({
                "agent_id": {"value": agent_id.as_str()},
                "executor_id": {"value": executor_id.as_str()},
                "status": status.unwrap_or(-1),
            }),
        ),
        MasterEvent::Error { message, .. } => error(message),
    })
}
