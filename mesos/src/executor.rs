//! The v1 **executor** API's calls and events in their JSON form (`executor/executor.proto`,
//! contract §3): what an executor POSTs to `/api/v1/executor` and what the agent streams back.
//!
//! Every call and event is `{"type": T, "<lowercase t>": {...}}`; the payload key is always
//! written (pymesos drops an event without it), HEARTBEAT and SHUTDOWN have none. Task infos
//! and the executor's and framework's infos are relayed as the master's Mesos edge wrote them
//! (`TaskInfo.mesos` JSON), so they are [`serde_json::Value`]s here, never re-shaped.

use crate::v1::{Id, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A call from an executor. Unknown fields are ignored; the lowercase payload of the call's
/// type must be present (checked by [`Call::validate`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Call {
    #[serde(rename = "type")]
    pub kind: String,
    pub executor_id: Id,
    pub framework_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct Subscribe {
    /// TaskInfos the executor was given (LAUNCH) and has not seen acknowledged.
    #[serde(default)]
    pub unacknowledged_tasks: Vec<Value>,
    /// Updates the executor sent and has not seen acknowledged.
    #[serde(default)]
    pub unacknowledged_updates: Vec<Update>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Update {
    pub status: TaskStatus,
}

/// `data` is base64 and is relayed as it is.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Message {
    pub data: String,
}

/// A call, checked: its type known and its payload present. Lives for one request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CallKind {
    Subscribe(Subscribe),
    Update(Update),
    Message(Message),
    Heartbeat,
}

impl Call {
    /// Parses a call body: invalid JSON or a call missing required fields is an error with the
    /// reason (400).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("Failed to parse body into Call: {e}"))
    }

    /// The call's type with its payload, or why it is invalid (400).
    pub fn validate(&self) -> Result<CallKind, String> {
        let missing = |what: &str| format!("Expecting '{what}' to be present");
        Ok(match self.kind.as_str() {
            "SUBSCRIBE" => CallKind::Subscribe(self.subscribe.clone().unwrap_or_default()),
            "UPDATE" => CallKind::Update(self.update.clone().ok_or_else(|| missing("update"))?),
            "MESSAGE" => {
                let m = self.message.clone().ok_or_else(|| missing("message"))?;
                crate::v1::b64::decode(&m.data).map_err(|e| format!("message.data: {e}"))?;
                CallKind::Message(m)
            }
            "HEARTBEAT" => CallKind::Heartbeat,
            "UNKNOWN" => return Err("Received 'UNKNOWN' call".into()),
            other => return Err(format!("Unknown call type {other:?}")),
        })
    }
}

/// The agent's facts in SUBSCRIBED (`AgentInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: Id,
    pub hostname: String,
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub executor_info: Value,
    pub framework_info: Value,
    pub agent_info: AgentInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<Id>,
}

/// An event to an executor.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Subscribed(Subscribed),
    /// One TaskInfo, as relayed.
    Launch(Value),
    /// The TaskInfos of one group.
    LaunchGroup(Vec<Value>),
    Kill {
        task_id: Id,
    },
    Acknowledged {
        task_id: Id,
        uuid: String,
    },
    /// base64 data.
    Message {
        data: String,
    },
    Shutdown,
    Error {
        message: String,
    },
    Heartbeat,
}

impl Event {
    /// The event as Mesos writes it; serialize with `json::to_ascii_vec`.
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Event::Subscribed(s) => json!({"type": "SUBSCRIBED", "subscribed": s}),
            Event::Launch(task) => json!({"type": "LAUNCH", "launch": {"task": task}}),
            Event::LaunchGroup(tasks) => json!({"type": "LAUNCH_GROUP",
                "launch_group": {"task_group": {"tasks": tasks}}}),
            Event::Kill { task_id } => json!({"type": "KILL", "kill": {"task_id": task_id}}),
            Event::Acknowledged { task_id, uuid } => json!({"type": "ACKNOWLEDGED",
                "acknowledged": {"task_id": task_id, "uuid": uuid}}),
            Event::Message { data } => json!({"type": "MESSAGE", "message": {"data": data}}),
            Event::Shutdown => json!({"type": "SHUTDOWN"}),
            Event::Error { message } => json!({"type": "ERROR", "error": {"message": message}}),
            Event::Heartbeat => json!({"type": "HEARTBEAT"}),
        }
    }

    /// The event as one RecordIO record of compact ASCII JSON.
    pub fn to_record(&self) -> Vec<u8> {
        // A `Value` always serializes; the fallback only keeps this total.
        let json = crate::json::to_ascii_vec(&self.to_json())
            .unwrap_or_else(|_| br#"{"type":"HEARTBEAT"}"#.to_vec());
        crate::recordio::encode(&json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pymesos_subscribe_and_update_parse() {
        let sub = br#"{"type": "SUBSCRIBE", "framework_id": {"value": "M1-0000"},
            "executor_id": {"value": "pyexec"},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []}}"#;
        let call = Call::parse(sub).unwrap();
        assert_eq!(call.framework_id, Id::new("M1-0000"));
        assert_eq!(
            call.validate().unwrap(),
            CallKind::Subscribe(Subscribe::default())
        );
        let upd = br#"{"type":"UPDATE","executor_id":{"value":"pyexec"},"framework_id":{"value":"M1-0000"},
            "update":{"status":{"task_id":{"value":"work-1"},"state":"TASK_RUNNING","timestamp":1718000100,
            "uuid":"f1/v8ZHbR/iGfvposZU2KQ==","source":"SOURCE_EXECUTOR"}}}"#;
        let CallKind::Update(u) = Call::parse(upd).unwrap().validate().unwrap() else {
            panic!("not an update")
        };
        assert_eq!(u.status.state, "TASK_RUNNING");
        assert_eq!(u.status.uuid.as_deref(), Some("f1/v8ZHbR/iGfvposZU2KQ=="));
    }

    #[test]
    fn calls_missing_their_payload_or_ids_are_refused() {
        assert!(Call::parse(br#"{"type":"UPDATE","framework_id":{"value":"f"}}"#).is_err());
        let no_payload = Call::parse(
            br#"{"type":"UPDATE","executor_id":{"value":"e"},"framework_id":{"value":"f"}}"#,
        )
        .unwrap();
        assert!(no_payload.validate().unwrap_err().contains("'update'"));
        let bad_b64 = Call::parse(
            br#"{"type":"MESSAGE","executor_id":{"value":"e"},
            "framework_id":{"value":"f"},"message":{"data":"!!"}}"#,
        )
        .unwrap();
        assert!(bad_b64.validate().is_err());
        let unknown = Call::parse(
            br#"{"type":"DANCE","executor_id":{"value":"e"},"framework_id":{"value":"f"}}"#,
        )
        .unwrap();
        assert!(unknown.validate().is_err());
        assert!(Call::parse(b"not json").is_err());
    }

    #[test]
    fn events_have_their_nested_payload_keys() {
        let task = json!({"name": "t", "task_id": {"value": "t1"}});
        let cases = [
            (
                Event::Launch(task.clone()),
                json!({"type":"LAUNCH","launch":{"task":task}}),
            ),
            (
                Event::LaunchGroup(vec![task.clone()]),
                json!({"type":"LAUNCH_GROUP","launch_group":{"task_group":{"tasks":[task]}}}),
            ),
            (
                Event::Kill {
                    task_id: Id::new("t1"),
                },
                json!({"type":"KILL","kill":{"task_id":{"value":"t1"}}}),
            ),
            (
                Event::Acknowledged {
                    task_id: Id::new("t1"),
                    uuid: "AAAAAAAAAAAAAAAAAAAAAA==".into(),
                },
                json!({"type":"ACKNOWLEDGED","acknowledged":{"task_id":{"value":"t1"},"uuid":"AAAAAAAAAAAAAAAAAAAAAA=="}}),
            ),
            (
                Event::Message {
                    data: "cGluZw==".into(),
                },
                json!({"type":"MESSAGE","message":{"data":"cGluZw=="}}),
            ),
            (Event::Shutdown, json!({"type":"SHUTDOWN"})),
            (
                Event::Error {
                    message: "x".into(),
                },
                json!({"type":"ERROR","error":{"message":"x"}}),
            ),
            (Event::Heartbeat, json!({"type":"HEARTBEAT"})),
        ];
        for (event, want) in cases {
            assert_eq!(event.to_json(), want);
        }
    }

    #[test]
    fn subscribed_ids_are_exactly_value_objects_and_records_are_framed() {
        let event = Event::Subscribed(Subscribed {
            executor_info: json!({"executor_id": {"value": "pyexec"}, "name": "π"}),
            framework_info: json!({"id": {"value": "M1-0000"}, "user": "pi", "name": "demo"}),
            agent_info: AgentInfo {
                id: Id::new("M1-S0"),
                hostname: "pi-1".into(),
                port: 5051,
            },
            container_id: Some(Id::new("c0ffee")),
        });
        let v = event.to_json();
        assert_eq!(
            v["subscribed"]["executor_info"]["executor_id"],
            json!({"value": "pyexec"})
        );
        assert_eq!(
            v["subscribed"]["framework_info"]["id"],
            json!({"value": "M1-0000"})
        );
        assert_eq!(
            v["subscribed"]["agent_info"],
            json!({"id":{"value":"M1-S0"},"hostname":"pi-1","port":5051})
        );
        let record = event.to_record();
        let text = String::from_utf8(record).unwrap();
        let (len, json) = text.split_once('\n').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), json.len());
        assert!(json.is_ascii() && json.contains("\\u03c0"));
    }
}
