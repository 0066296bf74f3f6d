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

use super::spec::Spec;
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

    /// The newest spec whose fingerprint is not `current`'s: what `bramble service rollback`
    /// goes back to (`source` names the record in errors).
    pub fn previous(&self, source: &str, current: &str) -> Option<Spec> {
        self.specs
            .iter()
            .rev()
            .filter_map(|text| Spec::parse(source, text).ok())
            .find(|spec| spec.fingerprint() != current)
    }

    /// Drops the newest specs while they have fingerprint `current` (a version that is the
    /// service's spec again is no longer history).
    pub fn forget_newest_if(&mut self, source: &str, current: &str) {
        while self
            .specs
            .last()
            .and_then(|text| Spec::parse(source, text).ok())
            .is_some_and(|spec| spec.fingerprint() == current)
        {
            self.specs.pop();
        }
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

    #[test]
    fn the_previous_version_skips_the_current_one_and_a_restored_version_leaves_history() {
        let spec = |cmd: &str| {
            Spec::parse(
                "t",
                &format!("name = \"web\"\ninstances = 1\ncmd = \"{cmd}\"\ncpus = 0.1\nmem = 16\n"),
            )
            .expect("valid")
        };
        let (v1, v2, v3) = (spec("sleep 1"), spec("sleep 2"), spec("sleep 3"));
        let mut h = History::default();
        assert_eq!(h.previous("h", &v1.fingerprint()), None);
        h.push(v1.to_toml());
        h.push(v2.to_toml());
        assert_eq!(h.previous("h", &v3.fingerprint()), Some(v2.clone()));
        // v2 is current again (a rollback to it stored it): the one before is v1.
        assert_eq!(h.previous("h", &v2.fingerprint()), Some(v1.clone()));
        h.forget_newest_if("h", &v3.fingerprint());
        assert_eq!(h.specs.len(), 2, "v3 is not in the history");
        h.forget_newest_if("h", &v2.fingerprint());
        assert_eq!(h.specs, vec![v1.to_toml()]);
        h.push("not a spec".into());
        h.forget_newest_if("h", &v1.fingerprint());
        assert_eq!(h.specs.len(), 2, "an unreadable entry is kept");
        assert_eq!(h.previous("h", &v3.fingerprint()), Some(v1));
    }
}
