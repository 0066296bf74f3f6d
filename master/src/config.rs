//! The master's configuration: `/etc/bramble/master.toml`, overridden by flags.
//!
//! Every key has a default so an empty file (or none at the default path) is a working
//! master. Unknown keys are errors that name the file and line, because a typo such as
//! `agent_timout_secs` silently ignored would be found at 2 a.m.

use bramble_proto::config::{load_optional, ConfigError};
use bramble_proto::discovery::DiscoveryConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/bramble/master.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Directory holding the cluster CA certificate and the node certificate and key.
    pub cluster: PathBuf,
    /// QUIC listen address (UDP).
    pub listen: SocketAddr,
    /// HTTP listen address of the API and web UI (TCP).
    pub http: SocketAddr,
    /// When set, every HTTP endpoint needs this token (`Authorization: Bearer TOKEN`, or the
    /// cookie the web UI's login sets), and operators may kill tasks over HTTP. Unset, the
    /// HTTP side is read-only and open to anyone who can reach `http`.
    pub http_token: Option<String>,
    /// With `http_token`: a web UI login session unused for this long ends (default 8 h).
    pub http_session_idle_secs: u64,
    /// With `http_token`: a login session ends at this age however busy (default 7 days).
    /// Sessions live in memory: restarting the master logs every browser out.
    pub http_session_lifetime_secs: u64,
    /// Mark the login cookie `Secure`. The master speaks plain HTTP; set this when browsers
    /// reach it over HTTPS through a reverse proxy (a proxy sending `X-Forwarded-Proto: https`
    /// gets `Secure` without it).
    pub http_cookie_secure: bool,
    /// Where the master keeps durable state: `master.redb` (frameworks, admitted agents, tasks
    /// not yet terminal-and-acknowledged), which a restarted master recovers from.
    pub state_dir: PathBuf,
    /// Files tasks fetch as `master:NAME` artifacts, served to agents over their connections
    /// (`artifacts.rs`); default `<state_dir>/artifacts`. Every agent may read all of it.
    pub artifacts_dir: Option<PathBuf>,
    /// A human name for the cluster, shown on the display and in logs.
    pub name: String,
    /// How often agents are asked to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// An agent silent for this long is removed and its tasks become LOST.
    pub agent_timeout_secs: f64,
    /// After a restart, how long agents known from the store have to re-register before they
    /// are removed and their tasks become LOST. Long enough for a Pi to reboot.
    pub agent_reregistration_timeout_secs: f64,
    /// An offer unanswered for this long is rescinded.
    pub offer_timeout_secs: f64,
    /// Period of the allocation pass (also run promptly after resources free up).
    pub allocation_interval_ms: u64,
    /// tracing filter, e.g. "info" or "bramble_master=debug".
    pub log: Option<String>,
    /// `[discovery]`: which interfaces the mDNS advertisement uses.
    pub discovery: DiscoveryConfig,
    /// The SSD1306 front panel (`[display]`): enabled = "auto" | "on" | "off", bus, address,
    /// size, rotation.
    pub display: bramble_firmware::DisplayConfig,
    /// `[mesos]`: the Mesos v1 scheduler API on the HTTP port.
    pub mesos: MesosConfig,
    /// `[ha]`: one of several replicated masters (absent: the single master, its store in
    /// `state_dir`).
    pub ha: Option<HaConfig>,
}

/// `[ha]` in master.toml: this master is one of a replicated group (`ha/`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// This master's id in the group, one of `peers`. With `peers = "mdns"` it may be left out
    /// (0): it is then derived once from the card (`/etc/machine-id`) and kept in the state dir.
    #[serde(default)]
    pub id: u64,
    /// Every master's replication address, `"ID=HOST:PORT"` (this one's included: it listens
    /// there, UDP, ALPN `bramble-raft/1`); or `"mdns"` (held as `[HA_MDNS]`): the masters
    /// find each other on mDNS (`ha/mdns.rs`).
    #[serde(deserialize_with = "peers_or_mdns")]
    pub peers: Vec<String>,
    /// Form the group from `peers` on this first start (an empty replica store). Only for the
    /// very first start of a new group: a master whose replica directory was wiped must be
    /// added back (`bramble masters add`), never bootstrap again. Not with `peers = "mdns"`,
    /// where the group is formed by the rule in `ha/mdns.rs`.
    #[serde(default)]
    pub bootstrap: bool,
    /// `peers = "mdns"`: how many candidates form the group (default 3; at most 5). The
    /// lowest id of the first `expect` seen forms it with exactly those; later ones are added.
    #[serde(default)]
    pub expect: Option<usize>,
    /// `peers = "mdns"`: the UDP port this master replicates on (default 5052).
    #[serde(default)]
    pub port: Option<u16>,
}

/// `peers = "mdns"` as held in [`HaConfig::peers`].
pub const HA_MDNS: &str = "mdns";
/// Default `[ha] expect` with `peers = "mdns"`.
pub const HA_DEFAULT_EXPECT: usize = 3;
/// The most voters an mDNS group forms or grows to.
pub const HA_MAX_VOTERS: usize = 5;
/// Default `[ha] port` with `peers = "mdns"`.
pub const HA_DEFAULT_PORT: u16 = 5052;

/// `peers`: a list of `ID=HOST:PORT`, or the string `"mdns"`.
fn peers_or_mdns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Peers {
        List(Vec<String>),
        Word(String),
    }
    match Peers::deserialize(d)? {
        Peers::List(list) => Ok(list),
        Peers::Word(w) if w == HA_MDNS => Ok(vec![HA_MDNS.to_string()]),
        Peers::Word(w) => Err(serde::de::Error::custom(format!(
            "{w:?}: use a list of \"ID=HOST:PORT\" or \"mdns\""
        ))),
    }
}

impl HaConfig {
    /// `peers = "mdns"`: the masters find each other on mDNS.
    pub fn mdns(&self) -> bool {
        self.peers.len() == 1 && self.peers[0] == HA_MDNS
    }

    /// With `peers = "mdns"`: the group size to form.
    pub fn expect(&self) -> usize {
        self.expect.unwrap_or(HA_DEFAULT_EXPECT)
    }

    /// With `peers = "mdns"`: the replication port.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(HA_DEFAULT_PORT)
    }

    /// Checks `[ha]`: which key is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.mdns() {
            if self.expect.is_some() || self.port.is_some() {
                return Err((
                    "ha.expect",
                    "expect and port are for peers = \"mdns\" only".into(),
                ));
            }
            return self.replica_config().map(|_| ());
        }
        if self.bootstrap {
            return Err((
                "ha.bootstrap",
                "not with peers = \"mdns\": the candidates seen decide who forms the group".into(),
            ));
        }
        if !(1..=HA_MAX_VOTERS).contains(&self.expect()) {
            return Err((
                "ha.expect",
                format!("must be 1..={HA_MAX_VOTERS} (3 or 5 tolerate one or two failures)"),
            ));
        }
        if self.port() == 0 {
            return Err(("ha.port", "must be a port, not 0".into()));
        }
        Ok(())
    }

    /// The replica's configuration for configured peers, or which key is wrong and why.
    pub fn replica_config(&self) -> Result<bramble_replica::ReplicaConfig, (&'static str, String)> {
        if self.mdns() {
            return Err((
                "ha.peers",
                "\"mdns\": the peers are found at run time, not configured".into(),
            ));
        }
        if self.id == 0 {
            return Err(("ha.id", "must be > 0".into()));
        }
        if self.peers.is_empty() {
            return Err((
                "ha.peers",
                "must list every master as \"ID=HOST:PORT\", this one's included".into(),
            ));
        }
        let mut config = bramble_replica::ReplicaConfig::from_peers(self.id, &self.peers)
            .map_err(|e| match e {
                bramble_replica::ConfigError::SelfMissing(id) => (
                    "ha.id",
                    format!("{id} is not among ha.peers (this master's own address is taken from there)"),
                ),
                e => ("ha.peers", e.to_string()),
            })?;
        config.bootstrap = self.bootstrap;
        Ok(config)
    }
}

/// `[mesos]` in master.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MesosConfig {
    /// A credentials file as Mesos's `--credentials` takes it (JSON
    /// `{"credentials":[{"principal":..,"secret":..}]}` or `principal secret` lines). With it,
    /// `/api/v1/scheduler` needs HTTP Basic authentication and each framework is bound to the
    /// principal that registered it; without it the API is open to anyone, as in Mesos.
    pub credentials: Option<PathBuf>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            cluster: PathBuf::from("/etc/bramble/cluster"),
            listen: SocketAddr::from(([0, 0, 0, 0], bramble_proto::DEFAULT_QUIC_PORT)),
            http: SocketAddr::from(([0, 0, 0, 0], bramble_proto::DEFAULT_HTTP_PORT)),
            http_token: None,
            http_session_idle_secs: 8 * 3600,
            http_session_lifetime_secs: 7 * 24 * 3600,
            http_cookie_secure: false,
            state_dir: PathBuf::from("/var/lib/bramble/master"),
            artifacts_dir: None,
            name: "bramble".into(),
            heartbeat_interval_ms: 1000,
            agent_timeout_secs: 15.0,
            agent_reregistration_timeout_secs: 120.0,
            offer_timeout_secs: 30.0,
            allocation_interval_ms: 1000,
            log: None,
            discovery: DiscoveryConfig::default(),
            display: bramble_firmware::DisplayConfig::default(),
            mesos: MesosConfig::default(),
            ha: None,
        }
    }
}

impl MasterConfig {
    /// Where `master:` artifacts are served from.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.artifacts_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("artifacts"))
    }

    /// Reads `path` (defaults when it is the default path and absent) and validates it.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let (cfg, text): (MasterConfig, String) = load_optional(path, explicit)?;
        cfg.validate(path, &text)?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense. `text` is the file's contents, used to
    /// point at the offending line (empty when checking values that came from flags).
    pub fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let positive = |key: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    path,
                    text,
                    key,
                    format!("must be > 0, got {v}"),
                ))
            }
        };
        positive("agent_timeout_secs", self.agent_timeout_secs)?;
        positive(
            "agent_reregistration_timeout_secs",
            self.agent_reregistration_timeout_secs,
        )?;
        positive("offer_timeout_secs", self.offer_timeout_secs)?;
        positive("heartbeat_interval_ms", self.heartbeat_interval_ms as f64)?;
        positive("allocation_interval_ms", self.allocation_interval_ms as f64)?;
        positive("http_session_idle_secs", self.http_session_idle_secs as f64)?;
        positive(
            "http_session_lifetime_secs",
            self.http_session_lifetime_secs as f64,
        )?;
        if self.agent_timeout_secs * 1000.0 <= self.heartbeat_interval_ms as f64 {
            return Err(ConfigError::invalid(
                path,
                text,
                "agent_timeout_secs",
                "must be longer than heartbeat_interval_ms".to_string(),
            ));
        }
        if let Some(token) = &self.http_token {
            if token.trim().len() < 8 || token.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::invalid(
                    path,
                    text,
                    "http_token",
                    "must be at least 8 characters, without spaces (e.g. `openssl rand -hex 16`)"
                        .to_string(),
                ));
            }
        }
        if let Err((key, message)) = self.discovery.validate() {
            return Err(ConfigError::invalid(path, text, key, message));
        }
        if let Some(ha) = &self.ha {
            ha.validate()
                .map_err(|(key, message)| ConfigError::invalid(path, text, key, message))?;
        }
        Ok(())
    }

    pub fn agent_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.agent_timeout_secs)
    }

    pub fn agent_reregistration_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.agent_reregistration_timeout_secs)
    }

    pub fn offer_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.offer_timeout_secs)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn allocation_interval(&self) -> Duration {
        Duration::from_millis(self.allocation_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_in_a_key_names_file_line_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(&path, "name = \"pis\"\nagent_timout_secs = 3\n").expect("write");
        let err = MasterConfig::load(&path, true).expect_err("typo must fail");
        let msg = err.to_string();
        assert!(msg.contains("master.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("agent_timout_secs"), "{msg}");
    }

    #[test]
    fn mesos_credentials_path_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(
            &path,
            "[mesos]\ncredentials = \"/etc/bramble/mesos.json\"\n",
        )
        .expect("write");
        let cfg = MasterConfig::load(&path, true).expect("valid");
        assert_eq!(
            cfg.mesos.credentials.as_deref(),
            Some(Path::new("/etc/bramble/mesos.json"))
        );
        std::fs::write(&path, "[mesos]\ncredential = \"x\"\n").expect("write");
        assert!(MasterConfig::load(&path, true).is_err(), "typo refused");
    }

    #[test]
    fn timeout_shorter_than_heartbeat_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(
            &path,
            "agent_timeout_secs = 0.5\nheartbeat_interval_ms = 1000\n",
        )
        .expect("write");
        let err = MasterConfig::load(&path, true).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("line 1: key \"agent_timeout_secs\""), "{msg}");
    }

    #[test]
    fn discovery_interfaces_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(&path, "[discovery]\ninterfaces = [\"eth0\", \"wlan0\"]\n").expect("write");
        let cfg = MasterConfig::load(&path, true).expect("valid");
        assert_eq!(cfg.discovery.interfaces, vec!["eth0", "wlan0"]);
        std::fs::write(&path, "[discovery]\ninterfaces = [\"\"]\n").expect("write");
        let msg = MasterConfig::load(&path, true)
            .expect_err("empty name")
            .to_string();
        assert!(msg.contains("discovery.interfaces"), "{msg}");
        std::fs::write(&path, "[discovery]\ninterface = [\"eth0\"]\n").expect("write");
        let msg = MasterConfig::load(&path, true)
            .expect_err("typo")
            .to_string();
        assert!(msg.contains("interface"), "{msg}");
    }

    #[test]
    fn ha_is_read_and_bad_values_name_the_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(
            &path,
            "[ha]\nid = 2\npeers = [\"1=127.0.0.1:7001\", \"2=127.0.0.1:7002\", \"3=127.0.0.1:7003\"]\n",
        )
        .expect("write");
        let cfg = MasterConfig::load(&path, true).expect("valid");
        let ha = cfg.ha.expect("[ha]");
        let replica = ha.replica_config().expect("replica config");
        assert_eq!(replica.id, 2);
        assert_eq!(replica.peers.len(), 3);
        assert!(!replica.bootstrap);
        for (toml, key) in [
            ("[ha]\nid = 4\npeers = [\"1=127.0.0.1:7001\"]\n", "ha.id"),
            ("[ha]\nid = 0\npeers = [\"0=127.0.0.1:7001\"]\n", "ha.id"),
            ("[ha]\nid = 1\npeers = [\"1:127.0.0.1:7001\"]\n", "ha.peers"),
            (
                "[ha]\nid = 1\npeers = [\"1=127.0.0.1:7001\", \"1=127.0.0.1:7002\"]\n",
                "ha.peers",
            ),
            ("[ha]\nid = 1\npeers = []\n", "ha.peers"),
        ] {
            std::fs::write(&path, toml).expect("write");
            let msg = MasterConfig::load(&path, true).expect_err(toml).to_string();
            assert!(
                msg.contains("master.toml") && msg.contains(key),
                "{toml}: {msg}"
            );
        }
        std::fs::write(&path, "[ha]\nid = 1\npeer = []\n").expect("write");
        let msg = MasterConfig::load(&path, true)
            .expect_err("typo")
            .to_string();
        assert!(msg.contains("peer"), "{msg}");
        // Absent: the single master.
        std::fs::write(&path, "name = \"x\"\n").expect("write");
        assert!(MasterConfig::load(&path, true).expect("valid").ha.is_none());
    }

    #[test]
    fn ha_peers_mdns_needs_no_addresses_and_its_bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.toml");
        std::fs::write(&path, "[ha]\npeers = \"mdns\"\n").expect("write");
        let ha = MasterConfig::load(&path, true)
            .expect("valid")
            .ha
            .expect("[ha]");
        assert!(ha.mdns());
        assert_eq!((ha.id, ha.expect(), ha.port()), (0, 3, HA_DEFAULT_PORT));
        std::fs::write(
            &path,
            "[ha]\npeers = \"mdns\"\nid = 7\nexpect = 5\nport = 6000\n",
        )
        .expect("write");
        let ha = MasterConfig::load(&path, true)
            .expect("valid")
            .ha
            .expect("[ha]");
        assert_eq!((ha.id, ha.expect(), ha.port()), (7, 5, 6000));
        for (toml, key) in [
            ("[ha]\npeers = \"mdns\"\nexpect = 0\n", "ha.expect"),
            ("[ha]\npeers = \"mdns\"\nexpect = 6\n", "ha.expect"),
            ("[ha]\npeers = \"mdns\"\nport = 0\n", "ha.port"),
            ("[ha]\npeers = \"mdns\"\nbootstrap = true\n", "ha.bootstrap"),
            ("[ha]\npeers = \"dns\"\n", "mdns"),
            (
                "[ha]\nid = 1\npeers = [\"1=127.0.0.1:7001\"]\nexpect = 3\n",
                "ha.expect",
            ),
        ] {
            std::fs::write(&path, toml).expect("write");
            let msg = MasterConfig::load(&path, true).expect_err(toml).to_string();
            assert!(msg.contains(key), "{toml}: {msg}");
        }
    }

    #[test]
    fn missing_default_file_gives_defaults_but_missing_explicit_file_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.toml");
        let cfg = MasterConfig::load(&path, false).expect("defaults");
        assert_eq!(cfg.listen.port(), 5051);
        assert!(MasterConfig::load(&path, true).is_err());
    }
}
