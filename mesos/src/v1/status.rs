//! `TaskStatus` in Mesos's JSON form and its mapping onto the native status: state, source
//! and reason names, base64 `data` and `uuid`, and what an executor's update must satisfy
//! (`common/validation.cpp`, `validateExecutorCall`).

use super::{b64, decode_uuid, encode_uuid, lenient, Id};
use bramble_proto::task::{TaskReason, TaskState, UpdateSource};
use bramble_proto::FrameworkId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: Id,
    /// A `TaskState` name such as `TASK_RUNNING`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// base64
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<Id>,
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<f64>,
    /// base64 of 16 bytes
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<serde_json::Value>,
}

/// Mesos's name for a native state.
pub fn state_name(state: TaskState) -> &'static str {
    state.name()
}

/// A Mesos state name as a native state. Mesos's partition-aware states (DROPPED, GONE, …) and
/// TASK_KILLING have no native counterpart; they are refused with the reason.
pub fn parse_state(name: &str) -> Result<TaskState, String> {
    TaskState::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| match name {
            "TASK_KILLING" | "TASK_DROPPED" | "TASK_UNREACHABLE" | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR" | "TASK_UNKNOWN" => {
                format!("{name} is not supported: Bramble frameworks are not PARTITION_AWARE and have no TASK_KILLING_STATE")
            }
            _ => format!("unknown task state {name:?}"),
        })
}

pub fn source_name(source: UpdateSource) -> &'static str {
    match source {
        UpdateSource::Master => "SOURCE_MASTER",
        UpdateSource::Agent => "SOURCE_AGENT",
        UpdateSource::Executor => "SOURCE_EXECUTOR",
    }
}

/// The Mesos `TaskStatus.Reason` closest to a native reason, given the state it explains
/// (`None` where Mesos sets none, e.g. a command that finished).
pub fn reason_name(reason: TaskReason, state: TaskState) -> Option<&'static str> {
    use TaskReason::*;
    Some(match reason {
        CommandExited if state == TaskState::Failed => "REASON_COMMAND_EXECUTOR_FAILED",
        CommandExited | KilledByRequest => return None,
        MemoryLimit => "REASON_CONTAINER_LIMITATION_MEMORY",
        ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
        ExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
        AgentRemoved => "REASON_AGENT_REMOVED",
        AgentRestarted | HostRebooted => "REASON_AGENT_RESTARTED",
        AgentUnknown => "REASON_AGENT_UNKNOWN",
        FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
        InvalidOffer => "REASON_INVALID_OFFERS",
        ResourcesNotInOffer | TaskTooLarge | DuplicateTaskId | InvalidTask => "REASON_TASK_INVALID",
        Reconciliation => "REASON_RECONCILIATION",
        LaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
    })
}

/// The native reason for a Mesos reason an executor sent, when there is one.
pub fn parse_reason(name: &str) -> Option<TaskReason> {
    use TaskReason::*;
    Some(match name {
        "REASON_COMMAND_EXECUTOR_FAILED" => CommandExited,
        "REASON_CONTAINER_LIMITATION_MEMORY" => MemoryLimit,
        "REASON_EXECUTOR_TERMINATED" => ExecutorTerminated,
        "REASON_EXECUTOR_REGISTRATION_TIMEOUT" => ExecutorRegistrationTimeout,
        "REASON_AGENT_REMOVED" => AgentRemoved,
        "REASON_AGENT_RESTARTED" => AgentRestarted,
        "REASON_AGENT_UNKNOWN" => AgentUnknown,
        "REASON_FRAMEWORK_REMOVED" => FrameworkRemoved,
        "REASON_INVALID_OFFERS" => InvalidOffer,
        "REASON_TASK_INVALID" => InvalidTask,
        "REASON_RECONCILIATION" => Reconciliation,
        "REASON_CONTAINER_LAUNCH_FAILED" => LaunchFailed,
        _ => return None,
    })
}

impl TaskStatus {
    /// A native status as the scheduler sees it. `agent_id` and `executor_id` are always
    /// written when known: pymesos reads `agent_id` from every update with a uuid (pitfall 6).
    pub fn from_native(s: &bramble_proto::TaskStatus) -> Self {
        Self {
            task_id: Id::from(&s.task_id),
            state: state_name(s.state).into(),
            message: (!s.message.is_empty()).then(|| s.message.clone()),
            source: Some(source_name(s.source).into()),
            reason: s
                .reason
                .and_then(|r| reason_name(r, s.state))
                .map(str::to_owned),
            data: (!s.data.is_empty()).then(|| b64::encode(&s.data)),
            agent_id: s.agent_id.as_ref().map(Id::from),
            executor_id: s.executor_id.as_ref().map(Id::from),
            timestamp: Some(s.timestamp),
            uuid: s.uuid.as_ref().map(encode_uuid),
            healthy: None,
            container_status: None,
        }
    }

    /// An executor's UPDATE as a native status, checked as Mesos checks it: a 16-byte uuid,
    /// source SOURCE_EXECUTOR (or none: pymesos fills it, others may not), a state other than
    /// STAGING, and, when given, the executor's own id.
    pub fn executor_update_to_native(
        self,
        framework_id: &FrameworkId,
        executor_id: &bramble_proto::ExecutorId,
    ) -> Result<bramble_proto::TaskStatus, String> {
        let uuid = decode_uuid(self.uuid.as_deref().ok_or("status update has no uuid")?)?;
        if let Some(source) = self.source.as_deref() {
            if source != "SOURCE_EXECUTOR" {
                return Err(format!(
                    "an executor's update must have source SOURCE_EXECUTOR, not {source}"
                ));
            }
        }
        let state = parse_state(&self.state)?;
        if state == TaskState::Staging {
            return Err("an executor may not send TASK_STAGING".into());
        }
        if let Some(id) = &self.executor_id {
            if id.value != executor_id.as_str() {
                return Err(format!(
                    "update's executor_id {:?} is not the caller's {:?}",
                    id.value,
                    executor_id.as_str()
                ));
            }
        }
        let data = match self.data.as_deref() {
            Some(text) => b64::decode(text).map_err(|e| format!("data: {e}"))?,
            None => Vec::new(),
        };
        let mut status = bramble_proto::TaskStatus::new(
            framework_id.clone(),
            self.task_id.into(),
            state,
            UpdateSource::Executor,
        );
        status.executor_id = Some(executor_id.clone());
        status.uuid = Some(uuid);
        status.reason = self.reason.as_deref().and_then(parse_reason);
        status.message = self.message.unwrap_or_default();
        if let Some(t) = self.timestamp.filter(|t| t.is_finite() && *t > 0.0) {
            status.timestamp = t;
        }
        status.data = data;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::{AgentId, ExecutorId, TaskId};

    fn native() -> bramble_proto::TaskStatus {
        let mut s = bramble_proto::TaskStatus::new(
            FrameworkId::from("fw"),
            TaskId::from("t1"),
            TaskState::Failed,
            UpdateSource::Executor,
        )
        .with_reason(TaskReason::CommandExited, "Command exited with status 3");
        s.agent_id = Some(AgentId::from("a1"));
        s.executor_id = Some(ExecutorId::from("t1"));
        s.uuid = Some(uuid::Uuid::from_bytes([7; 16]));
        s.data = b"42".to_vec();
        s.timestamp = 1718000000.5;
        s
    }

    #[test]
    fn scheduler_sees_mesos_names_ids_and_base64() {
        let json = serde_json::to_value(TaskStatus::from_native(&native())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "task_id": {"value": "t1"}, "state": "TASK_FAILED",
                "message": "Command exited with status 3", "source": "SOURCE_EXECUTOR",
                "reason": "REASON_COMMAND_EXECUTOR_FAILED", "data": "NDI=",
                "agent_id": {"value": "a1"}, "executor_id": {"value": "t1"},
                "timestamp": 1718000000.5, "uuid": "BwcHBwcHBwcHBwcHBwcHBw=="
            })
        );
    }

    #[test]
    fn every_native_state_has_a_mesos_name_that_parses_back() {
        for s in TaskState::ALL {
            assert_eq!(parse_state(state_name(s)).unwrap(), s);
            assert!(state_name(s).starts_with("TASK_"));
        }
        assert!(parse_state("TASK_KILLING")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_state("RUNNING").is_err());
    }

    #[test]
    fn executor_updates_are_validated() {
        let fw = FrameworkId::from("fw");
        let ex = ExecutorId::from("pyexec");
        let ok = r#"{"task_id":{"value":"w1"},"state":"TASK_RUNNING","timestamp":1718000100,
                     "uuid":"f1/v8ZHbR/iGfvposZU2KQ==","source":"SOURCE_EXECUTOR","data":"cGluZw=="}"#;
        let s: TaskStatus = serde_json::from_str(ok).unwrap();
        let n = s.executor_update_to_native(&fw, &ex).unwrap();
        assert_eq!(n.state, TaskState::Running);
        assert_eq!(n.executor_id, Some(ex.clone()));
        assert_eq!(n.data, b"ping");
        assert_eq!(n.timestamp, 1718000100.0);

        let bad = [
            (
                r#""uuid":"f1/v8ZHbR/iGfvposZU2KQ==""#,
                r#""uuid":"c2hvcnQ=""#,
            ),
            (
                r#""source":"SOURCE_EXECUTOR""#,
                r#""source":"SOURCE_MASTER""#,
            ),
            (r#""TASK_RUNNING""#, r#""TASK_STAGING""#),
            (r#""TASK_RUNNING""#, r#""TASK_SLEEPING""#),
            (r#""data":"cGluZw==""#, r#""data":"%%%""#),
            (
                r#""source":"SOURCE_EXECUTOR""#,
                r#""source":"SOURCE_EXECUTOR","executor_id":{"value":"other"}"#,
            ),
        ];
        for (from, to) in bad {
            let s: TaskStatus = serde_json::from_str(&ok.replace(from, to)).unwrap();
            assert!(s.executor_update_to_native(&fw, &ex).is_err(), "{to}");
        }
        let no_uuid: TaskStatus =
            serde_json::from_str(r#"{"task_id":{"value":"w1"},"state":"TASK_RUNNING"}"#).unwrap();
        assert!(no_uuid.executor_update_to_native(&fw, &ex).is_err());
    }
}
