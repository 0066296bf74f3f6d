//! What the scheduler tells operators (and its own next run) about a service, kept next to
//! its spec in the framework's key/value state:
//!
//! - `status/<name>`: each instance's agent, host, ports and health, the last kills and why,
//!   and the rollout (written by the scheduler when it changes; `bramble service
//!   show`/`endpoints` and the master read it, and a restarted scheduler learns its adopted
//!   instances' ports from it). Its format is `bramble_proto::service_status`, shared with
//!   the master;
//! - `history/<name>`: the specs the service ran before, newest last (at most
//!   [`MAX_HISTORY`]); a rollout that fails goes back to the newest.
//!
//! Both are JSON; a record that does not parse is treated as absent (it is only advice).

use serde::{Deserialize, Serialize};

pub use bramble_proto::service_status::{
    status_key, InstanceStatus, KillRecord, RolloutState, RolloutStatus, ServiceStatus,
    STATUS_PREFIX,
};

pub const HISTORY_PREFIX: &str = "history/";
/// Specs kept in a service's history.
pub const MAX_HISTORY: usize = 10;
/// Kills remembered in a service's status.
pub const MAX_KILLS: usize = 10;

pub fn history_key(name: &str) -> String {
    format!("{HISTORY_PREFIX}{name}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Stored specs (TOML), newest last.
    pub specs: Vec<String>,
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
    fn history_is_bounded() {
        let mut h = History::default();
        for n in 0..15 {
            h.push(n.to_string());
        }
        assert_eq!(h.specs.len(), MAX_HISTORY);
        assert_eq!(h.specs.last().map(String::as_str), Some("14"));
        assert_eq!(History::parse(&h.to_bytes()), Some(h));
    }
}
