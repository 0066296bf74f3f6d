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

use super::spec::Spec;
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
    fn history_is_bounded() {
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
