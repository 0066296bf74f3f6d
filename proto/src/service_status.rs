//! The record a service scheduler keeps about each service in its key/value state
//! (`status/<name>`, JSON): each instance's agent, host, ports and health, the last kills and
//! the rollout. One format, three readers: the scheduler that writes it
//! (`bramble-frameworks`' `services/`), the CLI (`bramble service show|endpoints`) and the
//! master, which shows it on `/api/v1/services`, the web UI and `/metrics` and advertises the
//! healthy instances on mDNS. A record that does not parse is treated as absent (it is only
//! advice); fields added later carry `#[serde(default)]` so older records still read.

use serde::{Deserialize, Serialize};

/// The built-in service framework's name: the master reads the status records of frameworks
/// of this name, the CLI finds the scheduler's state by it.
pub const SERVICES_FRAMEWORK: &str = "bramble-services";
/// Where the status records live in that framework's state: `status/<service name>`.
pub const STATUS_PREFIX: &str = "status/";
/// The mDNS service type a service is advertised under unless its spec names another.
pub const DEFAULT_SERVICE_TYPE: &str = "_http._tcp";

pub fn status_key(name: &str) -> String {
    format!("{STATUS_PREFIX}{name}")
}

/// Checks an mDNS service type without its domain: `_name._tcp` or `_name._udp`, the name
/// 1 to 15 letters, digits and '-' (RFC 6335), not starting or ending with '-'.
pub fn check_service_type(t: &str) -> Result<(), String> {
    let bad = || format!("{t:?} is not an mDNS service type like \"_http._tcp\" or \"_ipp._udp\"");
    let (name, proto) = t.rsplit_once('.').ok_or_else(bad)?;
    let name = name.strip_prefix('_').ok_or_else(bad)?;
    let ok_name = (1..=15).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok_name && matches!(proto, "_tcp" | "_udp") {
        Ok(())
    } else {
        Err(bad())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub instances: Vec<InstanceStatus>,
    /// The last kills the scheduler decided, oldest first.
    #[serde(default)]
    pub kills: Vec<KillRecord>,
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
    /// The mDNS service type its healthy instances are advertised under (`_http._tcp`);
    /// `None` in records written before it was kept: [`DEFAULT_SERVICE_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub task_id: String,
    /// The agent it runs on (empty in records written before it was kept).
    #[serde(default)]
    pub agent_id: String,
    pub host: String,
    pub ports: Vec<u16>,
    /// RUNNING (not just launched).
    pub running: bool,
    /// Passed every health check last time (true for a RUNNING instance with no checks).
    pub healthy: bool,
    /// The last failure of a check that is not passing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRecord {
    pub task_id: String,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    InProgress,
    Done,
    RolledBack,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Fingerprints: the version replaced and the one rolled out.
    pub from: String,
    pub to: String,
    pub state: RolloutState,
    /// Instances of the new version that are healthy, of those wanted.
    pub healthy: u32,
    pub wanted: u32,
    /// Why it was rolled back, or what it waits for.
    #[serde(default)]
    pub message: String,
}

impl ServiceStatus {
    /// The mDNS service type, e.g. `_http._tcp`.
    pub fn service_type(&self) -> &str {
        self.service_type.as_deref().unwrap_or(DEFAULT_SERVICE_TYPE)
    }

    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_older_records_still_read() {
        let s = ServiceStatus {
            instances: vec![InstanceStatus {
                task_id: "web.1.a".into(),
                agent_id: "a-1".into(),
                host: "pi-1".into(),
                ports: vec![31000],
                running: true,
                healthy: false,
                last_failure: Some("x".into()),
            }],
            kills: vec![],
            rollout: Some(RolloutStatus {
                from: "a".into(),
                to: "b".into(),
                state: RolloutState::InProgress,
                healthy: 1,
                wanted: 2,
                message: String::new(),
            }),
            service_type: Some("_ipp._tcp".into()),
        };
        assert_eq!(ServiceStatus::parse(&s.to_bytes()), Some(s));
        assert_eq!(ServiceStatus::parse(b"not json"), None);
        let old = br#"{"instances":[{"task_id":"t","host":"h","ports":[1],"running":true,"healthy":true}]}"#;
        let old = ServiceStatus::parse(old).expect("an older record reads");
        assert_eq!(old.instances[0].agent_id, "");
        assert_eq!(old.service_type(), DEFAULT_SERVICE_TYPE);
    }

    #[test]
    fn service_types_are_checked() {
        for good in ["_http._tcp", "_ipp._udp", "_home-assistant._tcp"] {
            assert_eq!(check_service_type(good), Ok(()), "{good}");
        }
        for bad in [
            "http",
            "_http",
            "_http._sctp",
            "http._tcp",
            "_._tcp",
            "_-x._tcp",
            "_a.b._tcp",
            "_sixteen-chars-xx._tcp",
            "_http._tcp.local.",
        ] {
            assert!(check_service_type(bad).is_err(), "{bad}");
        }
    }
}
