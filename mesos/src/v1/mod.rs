//! Mesos's v1 messages in their JSON form (`include/mesos/v1/mesos.proto`), the pieces both
//! APIs share: ids, bytes, lenient numbers, task statuses and resources. The scheduler's and
//! the executor's calls and events build on these.

pub mod lenient;
pub mod resources;
pub mod status;

use serde::{Deserialize, Serialize};

pub use resources::{Resource, Scalar};
pub use status::TaskStatus;

/// Every Mesos id (FrameworkID, AgentID, OfferID, TaskID, ExecutorID, ContainerID) is an
/// object with one field. It has no other keys: pymesos's executor compares whole dicts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub value: String,
}

impl Id {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
        }
    }
}

macro_rules! native_id {
    ($($t:ident),*) => {$(
        impl From<&bramble_proto::$t> for Id {
            fn from(id: &bramble_proto::$t) -> Self {
                Id::new(id.as_str())
            }
        }
        impl From<Id> for bramble_proto::$t {
            fn from(id: Id) -> Self {
                bramble_proto::$t(id.value)
            }
        }
    )*};
}
native_id!(AgentId, ExecutorId, FrameworkId, OfferId, TaskId);

/// Mesos `bytes` travel as standard base64 with padding.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not standard base64: {e}"))
    }
}

/// A status uuid: 16 raw bytes, so 24 base64 characters (pitfall 6). Anything else is refused.
pub fn decode_uuid(text: &str) -> Result<uuid::Uuid, String> {
    let bytes = b64::decode(text)?;
    uuid::Uuid::from_slice(&bytes)
        .map_err(|_| format!("uuid must be 16 bytes, got {}", bytes.len()))
}

pub fn encode_uuid(uuid: &uuid::Uuid) -> String {
    b64::encode(uuid.as_bytes())
}

/// `{"nanoseconds": N}` (DurationInfo).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DurationInfo {
    #[serde(deserialize_with = "lenient::i64")]
    pub nanoseconds: i64,
}

/// A labels list (`{"labels":[{"key":..,"value":..}]}`), kept as Mesos sent it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `AgentInfo`, as the executor's SUBSCRIBED carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// Mesos writes the proto default (5051) when unset.
    pub port: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    pub id: Id,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_objects_with_one_field() {
        let id = Id::from(&bramble_proto::TaskId::from("t-1"));
        assert_eq!(serde_json::to_string(&id).unwrap(), r#"{"value":"t-1"}"#);
        let back: bramble_proto::TaskId = id.into();
        assert_eq!(back.as_str(), "t-1");
    }

    #[test]
    fn uuids_must_be_sixteen_bytes() {
        let u = uuid::Uuid::new_v4();
        let text = encode_uuid(&u);
        assert_eq!(text.len(), 24);
        assert_eq!(decode_uuid(&text).unwrap(), u);
        assert!(decode_uuid(&b64::encode(b"short")).is_err());
        assert!(decode_uuid("!!not base64!!").is_err());
    }
}
