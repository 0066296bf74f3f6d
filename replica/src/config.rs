//! A replica's typed configuration: who it is, who its peers are, and the timing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::types::NodeId;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("peer {0:?} is not ID=HOST:PORT")]
    PeerSyntax(String),
    #[error("peer {peer:?}: {reason}")]
    PeerAddress { peer: String, reason: String },
    #[error("peer id {0} is listed twice")]
    DuplicatePeer(NodeId),
    #[error("this node's id {0} is not among the peers (its own address is taken from there)")]
    SelfMissing(NodeId),
    #[error("election timeouts must satisfy heartbeat < election_min < election_max ({0})")]
    Timing(String),
}

/// One replica's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaConfig {
    /// This node's id (`[ha] id`).
    pub id: NodeId,
    /// Every voter's address, this node's included (it listens on its own).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Form a new group from `peers` on a fresh store: only for the very first start of a new
    /// group (every initial member may do so: the same membership proposed twice is
    /// harmless), an explicit operator step. Otherwise (`false`, what [`Self::from_peers`]
    /// gives) a node with an empty store — a new one, or one whose directory was wiped —
    /// initializes nothing and waits to be added as a learner (`add_learner`, then promoted):
    /// a wiped node bootstrapping again would rejoin as a voter with an empty log, and two of
    /// them could outvote the node that holds acknowledged writes.
    pub bootstrap: bool,
    pub tuning: Tuning,
}

impl ReplicaConfig {
    /// A config from `[ha]`-style peers, `["1=HOST:PORT", ...]`, not bootstrapping (see
    /// [`Self::bootstrap`]).
    pub fn from_peers(id: NodeId, peers: &[String]) -> Result<Self, ConfigError> {
        let mut map = BTreeMap::new();
        for p in peers {
            let (pid, addr) = parse_peer(p)?;
            if map.insert(pid, addr).is_some() {
                return Err(ConfigError::DuplicatePeer(pid));
            }
        }
        let config = Self {
            id,
            peers: map,
            bootstrap: false,
            tuning: Tuning::default(),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.peers.contains_key(&self.id) {
            return Err(ConfigError::SelfMissing(self.id));
        }
        self.tuning.validate()
    }

    /// The address this node listens on.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.peers.get(&self.id).copied()
    }
}

/// `ID=HOST:PORT`, the host resolved now (its first address).
pub fn parse_peer(s: &str) -> Result<(NodeId, SocketAddr), ConfigError> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| ConfigError::PeerSyntax(s.to_string()))?;
    let id: NodeId = id
        .trim()
        .parse()
        .map_err(|_| ConfigError::PeerSyntax(s.to_string()))?;
    let addr = addr
        .trim()
        .to_socket_addrs()
        .map_err(|e| ConfigError::PeerAddress {
            peer: s.to_string(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ConfigError::PeerAddress {
            peer: s.to_string(),
            reason: "the name has no address".into(),
        })?;
    Ok((id, addr))
}

/// Timing and log retention. The defaults suit Pis on a LAN: a heartbeat every 100 ms and an
/// election timeout of 300–400 ms. A follower stands once the leader's lease
/// (`election_max`: voters refuse to elect anyone else before it ends) plus `election_min`
/// plus a random spread have passed without a heartbeat (`election_watchdog` in
/// replica/election.rs), so a dead leader is replaced after 0.7–0.9 s, ~1.5 s when two candidates
/// collide: inside the 2 s the masters promise. Wider ranges cost failover time directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuning {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// A snapshot after this many entries since the last one; the log before it is purged.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot, so a briefly absent follower catches up from the log
    /// rather than by a whole snapshot.
    pub keep_logs: u64,
    /// How long a write or a linearizable read may wait for a majority before it fails (the
    /// write's outcome is then unknown: it may still commit).
    pub request_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(400),
            snapshot_every: 5000,
            keep_logs: 1000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl Tuning {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.heartbeat < self.election_min && self.election_min < self.election_max) {
            return Err(ConfigError::Timing(format!(
                "heartbeat {:?}, election {:?}..{:?}",
                self.heartbeat, self.election_min, self.election_max
            )));
        }
        Ok(())
    }

    pub(crate) fn openraft(&self, cluster: &str) -> openraft::Config {
        openraft::Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            // Entries per append: with MAX_COMMAND_BYTES each, a batch fits one frame.
            max_payload_entries: 32,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            snapshot_max_chunk_size: crate::types::SNAPSHOT_CHUNK_BYTES as u64,
            install_snapshot_timeout: 2000,
            // Our election timer stands instead (see `election_watchdog` in replica/election.rs).
            enable_elect: false,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_are_checked() {
        let c =
            ReplicaConfig::from_peers(2, &["1=127.0.0.1:7001".into(), "2=127.0.0.1:7002".into()])
                .unwrap();
        assert_eq!(c.listen(), Some("127.0.0.1:7002".parse().unwrap()));
        // Forming a group is an explicit step, never what a config from peers does.
        assert!(!c.bootstrap);
        assert_eq!(
            ReplicaConfig::from_peers(3, &["1=127.0.0.1:7001".into()]),
            Err(ConfigError::SelfMissing(3))
        );
        assert!(matches!(
            ReplicaConfig::from_peers(1, &["1:127.0.0.1:7001".into()]),
            Err(ConfigError::PeerSyntax(_))
        ));
        assert_eq!(
            ReplicaConfig::from_peers(1, &["1=127.0.0.1:1".into(), "1=127.0.0.1:2".into()]),
            Err(ConfigError::DuplicatePeer(1))
        );
        let mut t = Tuning::default();
        t.election_min = t.heartbeat;
        assert!(t.validate().is_err());
    }
}
