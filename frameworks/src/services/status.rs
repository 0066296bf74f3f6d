//! What the scheduler tells operators (and its own next run) about a service, kept next to
//! its spec in the framework's key/value state:
//!
//! - `status/<name>`: each instance's host, ports and health, the last kills and why, and the
//!   rollout (written by the scheduler when it changes; `bramble service show`/`endpoints`
//!   read it, and a restarted scheduler learns its adopted instances' ports from it);
//! - `history/<name>`: the specs the service ran before, newest last (at most
//!   [`MAX_HISTORY`]); a rollout that fails goes back to the newest.
//!
//! Both are JSON; a record that does not parse is treated as absent (it is only advice).

use serde::{Deserialize, Serialize};

pub const STATUS_PREFIX: &str = "status/";
pub const HISTORY_PREFIX: &str = "history/";
/// Specs kept in a service's history.
pub const MAX_HISTORY: usize = 10;
/// Kills remembered in a service's status.
pub const MAX_KILLS: usize = 10;

pub fn status_key(name: &str) -> String {
    format!("{STATUS_PREFIX}{name}")
}

pub fn history_key(name: &str) -> String {
    format!("{HISTORY_PREFIX}{name}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub instances: Vec<InstanceStatus>,
    /// The last kills the scheduler decided, oldest first.
    #[serde(default)]
    pub kills: Vec<KillRecord>,
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub task_id: String,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Stored specs (TOML), newest last.
    pub specs: Vec<String>,
}

impl ServiceStatus {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl History {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Appends a spec, keeping the newest [`MAX_HISTORY`].
    pub fn push(&mut self, spec_toml: String) {
        self.specs.push(spec_toml);
        let extra = self.specs.len().saturating_sub(MAX_HISTORY);
        self.specs.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_history_is_bounded() {
        let s = ServiceStatus {
            instances: vec![InstanceStatus {
                task_id: "web.1.a".into(),
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
        };
        assert_eq!(ServiceStatus::parse(&s.to_bytes()), Some(s));
        assert_eq!(ServiceStatus::parse(b"not json"), None);
        let mut h = History::default();
        for n in 0..15 {
            h.push(n.to_string());
        }
        assert_eq!(h.specs.len(), MAX_HISTORY);
        assert_eq!(h.specs.last().map(String::as_str), Some("14"));
        assert_eq!(History::parse(&h.to_bytes()), Some(h));
    }
}
