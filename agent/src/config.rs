//! The agent's configuration file (`/etc/bramble/agent.toml`), and a loader whose errors an
//! operator can act on over ssh.
//!
//! Every key is optional: an agent flashed from the image runs with no config file at all.
//! Unknown keys are errors, not warnings, because a misspelt `cpu = 2` that is silently
//! ignored offers the whole machine. Every error names the file, the line when known, and the
//! key: `/etc/bramble/agent.toml: line 4: unknown key "cpu" (expected one of ...)`.
//!
//! The loader itself ([`load_toml`], [`read_optional`]) is generic so the master can read its
//! own file the same way; it is self-contained so it can move to a shared crate unchanged.

use crate::containerizer::{TaskUser, TaskUsers, UidRange};
use crate::gc::GcPolicy;
use crate::resources::ResourceOverrides;
pub use bramble_proto::config::{load_toml, read_optional, ConfigError};
use bramble_proto::discovery::DiscoveryConfig;
use bramble_proto::PortRange;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the agent looks when no `--config` is given. A missing file here means defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bramble/agent.toml";

/// The agent's configuration. See the module header for the file it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory holding the cluster CA certificate and this node's certificate and key.
    pub cluster: PathBuf,
    /// The master's `host:port` (or several, comma-separated: the masters of a replicated
    /// group); absent, with `masters` empty, means find it by mDNS.
    pub master: Option<String>,
    /// The masters of a replicated group, `["a:5050", "b:5050", "c:5050"]`: the agent dials
    /// them in turn and follows a standby's redirect to the leader. Give this or `master`.
    pub masters: Vec<String>,
    /// Sandboxes, checkpoints and unacknowledged status updates live here.
    pub work_dir: PathBuf,
    /// CPUs to offer instead of the detected count.
    pub cpus: Option<f64>,
    /// Memory to offer in MiB instead of the detected amount.
    pub mem: Option<u64>,
    /// Disk to offer in MiB instead of the detected amount.
    pub disk: Option<u64>,
    /// Ports to offer, e.g. `"31000-32000,8080"`; `""` offers none. Default 31000-32000.
    pub ports: Option<String>,
    /// Extra attributes for offers, on top of the detected `arch`, `os`, `pi_model`, `serial`
    /// (a key given here replaces the detected value).
    pub attributes: BTreeMap<String, String>,
    pub heartbeat_interval_ms: u64,
    /// How long a launched custom executor has to connect back before its tasks fail.
    pub executor_registration_timeout_secs: u64,
    /// Time between SIGTERM and SIGKILL when killing a task.
    pub kill_grace_secs: u64,
    /// How long a native custom executor with no tasks left is kept before it is shut down
    /// (a Mesos executor is kept until its framework shuts it down, as in Mesos).
    pub executor_idle_timeout_secs: u64,
    /// A tracing filter such as `info,bramble_agent=debug`; `RUST_LOG` wins when set.
    pub log: Option<String>,
    /// `[discovery]`: which interfaces to browse for the master on when `master` is absent.
    pub discovery: DiscoveryConfig,
    // -- Sandbox lifecycle and the task user (see `gc_and_user` below).
    /// `[gc]`: when finished sandboxes are removed.
    pub gc: GcConfig,
    /// The single-user mode: run every framework's tasks as this one user (needs the agent to
    /// run as root). Tasks of different frameworks can then signal each other and read each
    /// other's files; `task_uids` separates them. Unset (and no `task_uids`): as the agent's user.
    pub task_user: Option<String>,
    /// Run each framework's tasks as its own unprivileged uid from this range, e.g.
    /// `"70000-70999"` (needs the agent to run as root): allocated per framework, kept in the
    /// work dir across restarts, never root nor a uid an account or process of the machine
    /// has. The alternative to `task_user`; give one or neither.
    pub task_uids: Option<String>,
    /// How many processes and threads each task or executor container may have (cgroup
    /// `pids.max`); 0: unlimited.
    pub container_pids_max: u64,
    /// `[recovery]`: what a stopping agent leaves for the next one. See [`RecoveryConfig`].
    pub recovery: RecoveryConfig,
    /// `[mesos]`: the Mesos executor HTTP API. See [`MesosConfig`].
    pub mesos: MesosConfig,
    /// `[containers]`: tasks in container images. See [`ContainersConfig`].
    pub containers: ContainersConfig,
    /// `[fetch]`: artifacts fetched into sandboxes. See [`FetchConfig`].
    pub fetch: FetchConfig,
}

/// `[fetch]`: how tasks' artifacts are fetched into their sandboxes (`fetcher/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Where artifacts asked for with `cache = true` are kept; default
    /// `<work_dir>/fetch-cache`.
    pub cache_dir: Option<PathBuf>,
    /// The cache is kept under this many MiB, least recently used out first.
    pub cache_mb: u64,
    /// The largest artifact fetched, in MiB (an archive unpacks to at most four times this).
    pub max_mb: u64,
    /// How long one artifact may take to download.
    pub timeout_secs: u64,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            cache_mb: crate::fetcher::DEFAULT_CACHE_MB,
            max_mb: crate::fetcher::DEFAULT_MAX_MB,
            timeout_secs: crate::fetcher::DEFAULT_TIMEOUT_SECS,
        }
    }
}

impl FetchConfig {
    /// The fetcher's options for an agent working in `work_dir`.
    pub fn options(&self, work_dir: &Path) -> crate::fetcher::FetchOptions {
        let defaults = crate::fetcher::FetchOptions::new(work_dir);
        crate::fetcher::FetchOptions {
            cache_dir: self.cache_dir.clone().unwrap_or(defaults.cache_dir),
            cache_bytes: self.cache_mb << 20,
            max_bytes: self.max_mb << 20,
            timeout: Duration::from_secs(self.timeout_secs),
        }
    }
}

/// `[containers]`: running tasks in container images through an OCI runtime
/// (`containerizer/oci.rs`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// The OCI runtime, crun (`/usr/bin/crun`). Unset: this agent runs no image tasks and
    /// does not advertise the `containers` attribute.
    pub runtime: Option<PathBuf>,
    /// Where images are kept (`bramble images` writes there); default `<work_dir>/images`.
    pub images: Option<PathBuf>,
    /// A directory of image tarballs imported at each start (those not in the store yet, or
    /// changed since): OCI and docker archives under their own tag, plain root filesystems as
    /// the file's name (`busybox.tar` → `busybox`). How an SD-card image ships images.
    pub preload: Option<PathBuf>,
    /// Keep the image store under this many MiB by removing the least recently used images
    /// no task is using (`image_gc.rs`), after each image streamed in and at start. Unset:
    /// images stay until removed by hand.
    pub images_budget_mb: Option<u64>,
}

/// `[mesos]`: where executors written for Mesos reach the agent (`agent/src/mesos/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MesosConfig {
    /// `ip:port` of the executor API (TCP; Mesos's agent port 5051 by default; port 0 picks a
    /// free one). Loopback by default: Mesos executors run on this host, and nothing else
    /// should be able to pose as one. `""` turns the API off.
    pub listen: String,
}

impl Default for MesosConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5051".into(),
        }
    }
}

impl MesosConfig {
    /// The listen address, `None` when the API is off.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let text = self.listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("must be ip:port such as 127.0.0.1:5051, got {text:?}"))
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            cluster: PathBuf::from("/etc/bramble/cluster"),
            master: None,
            masters: Vec::new(),
            work_dir: PathBuf::from("/var/lib/bramble/agent"),
            cpus: None,
            mem: None,
            disk: None,
            ports: None,
            attributes: BTreeMap::new(),
            heartbeat_interval_ms: 1000,
            executor_registration_timeout_secs: 30,
            kill_grace_secs: 5,
            executor_idle_timeout_secs: 10,
            log: None,
            discovery: DiscoveryConfig::default(),
            gc: GcConfig::default(),
            task_user: None,
            task_uids: None,
            container_pids_max: crate::containerizer::DEFAULT_PIDS_MAX,
            recovery: RecoveryConfig::default(),
            mesos: MesosConfig::default(),
            containers: ContainersConfig::default(),
            fetch: FetchConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Checks values serde cannot: returns the offending key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(c) = self.cpus {
            if !c.is_finite() || c <= 0.0 {
                return Err(("cpus", format!("must be a positive number, got {c}")));
            }
        }
        if self.mem == Some(0) {
            return Err(("mem", "must be at least 1 (MiB)".to_owned()));
        }
        if let Some(ports) = &self.ports {
            parse_ports(ports).map_err(|e| ("ports", e))?;
        }
        if let Some(master) = &self.master {
            if !self.masters.is_empty() {
                return Err(("masters", "give master or masters, not both".to_owned()));
            }
            let list = bramble_proto::masters::split_list(master);
            if list.is_empty() {
                return Err(("master", format!("{master:?} names no master")));
            }
            for m in &list {
                check_host_port(m).map_err(|e| ("master", e))?;
            }
        }
        for m in &self.masters {
            check_host_port(m).map_err(|e| ("masters", e))?;
        }
        self.mesos.listen_addr().map_err(|e| ("mesos.listen", e))?;
        if self.heartbeat_interval_ms == 0 {
            return Err(("heartbeat_interval_ms", "must be at least 1".to_owned()));
        }
        if self.executor_registration_timeout_secs == 0 {
            return Err((
                "executor_registration_timeout_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if let Some(key) = self.attributes.keys().find(|k| k.trim().is_empty()) {
            return Err(("attributes", format!("empty attribute name {key:?}")));
        }
        self.discovery.validate()?;
        self.validate_gc_and_user()?;
        self.recovery.validate()?;
        if self.fetch.max_mb == 0 || self.fetch.max_mb > (1 << 20) {
            return Err(("fetch.max_mb", "must be between 1 and 1048576".to_owned()));
        }
        if self.fetch.cache_mb > (1 << 30) {
            return Err(("fetch.cache_mb", "must be at most 1073741824".to_owned()));
        }
        if self.fetch.timeout_secs == 0 {
            return Err(("fetch.timeout_secs", "must be at least 1".to_owned()));
        }
        if let Some(filter) = &self.log {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| ("log", format!("not a tracing filter: {e}")))?;
        }
        Ok(())
    }

    /// The masters to dial, in order (`masters`, or `master` split at commas); empty: find
    /// the master by mDNS.
    pub fn master_list(&self) -> Vec<String> {
        match &self.master {
            Some(master) => bramble_proto::masters::split_list(master),
            None => self.masters.clone(),
        }
    }

    /// The resource overrides this config asks for.
    pub fn resource_overrides(&self) -> Result<ResourceOverrides, String> {
        Ok(ResourceOverrides {
            cpus: self.cpus,
            mem_mib: self.mem,
            disk_mib: self.disk,
            ports: self.ports.as_deref().map(parse_ports).transpose()?,
        })
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn executor_registration_timeout(&self) -> Duration {
        Duration::from_secs(self.executor_registration_timeout_secs)
    }

    pub fn kill_grace(&self) -> Duration {
        Duration::from_secs(self.kill_grace_secs)
    }

    pub fn executor_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.executor_idle_timeout_secs)
    }
}

// -------------------------------------------------------------------------------------------
// Sandbox lifecycle (`[gc]`) and the task users (`task_uids`, `task_user`).

/// `[gc]`: Mesos's `gc_delay` and `disk_watermark_gc`, see `gc.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How long a finished sandbox is kept on an empty disk (shortened as the disk fills).
    pub max_age_secs: u64,
    /// Fraction of the disk treated as already used when shortening `max_age_secs`.
    pub disk_headroom: f64,
    /// Above this fraction of the disk in use the oldest finished sandboxes go at once.
    pub disk_high_watermark: f64,
    /// Seconds between sweeps.
    pub interval_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        let p = GcPolicy::default();
        Self {
            max_age_secs: p.max_age.as_secs(),
            disk_headroom: p.disk_headroom,
            disk_high_watermark: p.high_watermark,
            interval_secs: p.interval.as_secs(),
        }
    }
}

// ----- [recovery] -----

/// `[recovery]`: agent restarts. Tasks outlive the agent process; a restarted agent re-adopts
/// them from its work dir (see `checkpoint.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// On SIGTERM/SIGINT, kill every task before exiting (true), or leave them running for the
    /// next agent process to re-adopt (false, the default: `systemctl restart bramble-agent`
    /// or an upgrade must not kill the node's tasks).
    pub kill_tasks_on_shutdown: bool,
    /// Mesos's `recovery_timeout`: how long a custom executor whose agent went away keeps
    /// trying to reconnect before it exits (its tasks then end with it), and how long a
    /// command task runs on with no agent before its supervisor ends it. So an agent that
    /// stops and never comes back leaves nothing running for longer than this.
    pub executor_reconnect_timeout_secs: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            kill_tasks_on_shutdown: false,
            executor_reconnect_timeout_secs: 15 * 60,
        }
    }
}

impl AgentConfig {
    fn validate_gc_and_user(&self) -> Result<(), (&'static str, String)> {
        let h = self.gc.disk_headroom;
        if !(0.0..1.0).contains(&h) {
            return Err(("gc.disk_headroom", format!("must be in [0, 1), got {h}")));
        }
        let w = self.gc.disk_high_watermark;
        if !(w > 0.0 && w <= 1.0) {
            return Err((
                "gc.disk_high_watermark",
                format!("must be in (0, 1], got {w}"),
            ));
        }
        if self.gc.interval_secs == 0 {
            return Err(("gc.interval_secs", "must be at least 1".to_owned()));
        }
        self.task_users()?;
        Ok(())
    }

    /// The sandbox gc policy this config asks for.
    pub fn gc_policy(&self) -> GcPolicy {
        GcPolicy {
            max_age: Duration::from_secs(self.gc.max_age_secs),
            disk_headroom: self.gc.disk_headroom,
            high_watermark: self.gc.disk_high_watermark,
            interval: Duration::from_secs(self.gc.interval_secs),
        }
    }

    /// The task user, looked up on this machine (an unknown name is an error).
    pub fn task_user(&self) -> Result<Option<TaskUser>, String> {
        self.task_user.as_deref().map(TaskUser::resolve).transpose()
    }

    /// Who tasks run as: per-framework uids (`task_uids`), one user (`task_user`) or, with
    /// neither, the agent's own user. The key that is wrong comes with the error.
    pub fn task_users(&self) -> Result<Option<TaskUsers>, (&'static str, String)> {
        let one = self.task_user().map_err(|e| ("task_user", e))?;
        let range = self
            .task_uids
            .as_deref()
            .map(str::parse::<UidRange>)
            .transpose()
            .map_err(|e| ("task_uids", e))?;
        match (one, range) {
            (Some(_), Some(_)) => Err((
                "task_uids",
                "task_user and task_uids are alternatives (one user for every framework, or a \
                 uid per framework): remove one"
                    .to_owned(),
            )),
            (Some(user), None) => Ok(Some(TaskUsers::One(user))),
            (None, Some(range)) => Ok(Some(TaskUsers::PerFramework(range))),
            (None, None) => Ok(None),
        }
    }
}

impl RecoveryConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.executor_reconnect_timeout_secs == 0 {
            return Err((
                "recovery.executor_reconnect_timeout_secs",
                "must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    pub fn executor_reconnect_timeout(&self) -> Duration {
        Duration::from_secs(self.executor_reconnect_timeout_secs)
    }
}

/// Loads the agent config from `path`, which is treated as explicitly given (must exist)
/// unless it is [`DEFAULT_CONFIG_PATH`].
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    load_optional(path, path != Path::new(DEFAULT_CONFIG_PATH))
}

/// Loads the agent config from `path`. A missing file is an error when `explicit` (the
/// operator named it), and means all defaults otherwise.
pub fn load_optional(path: &Path, explicit: bool) -> Result<AgentConfig, ConfigError> {
    match read_optional(path, explicit)? {
        Some(text) => parse(path, &text),
        None => Ok(AgentConfig::default()),
    }
}

/// Parses and validates the agent config `text`, read from `path` (used in messages only).
pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
    let config: AgentConfig = load_toml(path, text)?;
    config
        .validate()
        .map_err(|(key, message)| ConfigError::invalid(path, text, key, message))?;
    Ok(config)
}

/// Parses a port list like `"31000-32000,8080"`. Whitespace around entries is ignored; an
/// empty string is an empty list. Port 0 is refused (it means "any port" to the kernel).
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|entry| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("empty entry in port list {s:?}"));
            }
            let (begin, end) = match entry.split_once('-') {
                Some((b, e)) => (parse_port(b.trim(), entry)?, parse_port(e.trim(), entry)?),
                None => {
                    let p = parse_port(entry, entry)?;
                    (p, p)
                }
            };
            if begin > end {
                return Err(format!("port range {entry:?} ends before it begins"));
            }
            Ok(PortRange::new(begin, end))
        })
        .collect()
}

fn parse_port(s: &str, entry: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ if s == entry => Err(format!("{s:?} is not a port number (1-65535)")),
        _ => Err(format!("{s:?} in {entry:?} is not a port number (1-65535)")),
    }
}

/// Checks `host:port` (IPv6 hosts in brackets: `[fd00::1]:5051`).
fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    if host.is_empty() || host == "[]" {
        return Err(format!("{s:?} has no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{s:?}: write IPv6 addresses in brackets, e.g. [fd00::1]:5051"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{s:?} has no valid port after ':'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/bramble/agent.toml";

    fn parse_err(text: &str) -> String {
        parse(Path::new(PATH), text).unwrap_err().to_string()
    }

    #[test]
    fn good_file_sets_every_key() {
        let text = r#"
cluster = "/srv/cluster"
master = "pi-master.local:5051"
work_dir = "/data/agent"
cpus = 3.5
mem = 3000
disk = 20000
ports = "31000-31100, 8080"
heartbeat_interval_ms = 500
executor_registration_timeout_secs = 60
kill_grace_secs = 2
executor_idle_timeout_secs = 0
log = "info,bramble_agent=debug"

[attributes]
rack = "shelf-2"
"#;
        let c = parse(Path::new(PATH), text).unwrap();
        assert_eq!(c.cluster, PathBuf::from("/srv/cluster"));
        assert_eq!(c.master.as_deref(), Some("pi-master.local:5051"));
        assert_eq!(c.work_dir, PathBuf::from("/data/agent"));
        assert_eq!(c.cpus, Some(3.5));
        assert_eq!(c.attributes["rack"], "shelf-2");
        assert_eq!(c.heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(c.kill_grace(), Duration::from_secs(2));
        let o = c.resource_overrides().unwrap();
        assert_eq!(o.mem_mib, Some(3000));
        assert_eq!(o.disk_mib, Some(20000));
        assert_eq!(
            o.ports,
            Some(vec![
                PortRange::new(31000, 31100),
                PortRange::new(8080, 8080)
            ])
        );
    }

    #[test]
    fn empty_file_is_all_defaults_and_integer_cpus_are_accepted() {
        assert_eq!(parse(Path::new(PATH), "").unwrap(), AgentConfig::default());
        assert_eq!(parse(Path::new(PATH), "cpus = 4").unwrap().cpus, Some(4.0));
        let d = AgentConfig::default();
        assert_eq!(d.heartbeat_interval_ms, 1000);
        assert_eq!(d.executor_registration_timeout_secs, 30);
        assert_eq!(d.kill_grace_secs, 5);
        assert_eq!(d.executor_idle_timeout_secs, 10);
        assert_eq!(
            d.resource_overrides().unwrap(),
            ResourceOverrides::default()
        );
    }

    #[test]
    fn unknown_key_names_its_line_and_the_expected_keys() {
        let err = parse_err("# agent\nwork_dir = \"/data\"\n\ncpu = 2\n");
        assert!(
            err.starts_with(r#"/etc/bramble/agent.toml: line 4: unknown key "cpu" (expected one of "cluster", "master""#),
            "{err}"
        );
        assert!(err.ends_with(')'), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let err = parse_err("mem = 512\ncpus = \"four\"\n");
        assert!(
            err.starts_with(
                r#"/etc/bramble/agent.toml: line 2: key "cpus": invalid type: string "four""#
            ),
            "{err}"
        );
        let err = parse_err("[attributes]\nrack = 3\n");
        assert!(
            err.contains(r#"line 2: key "attributes.rack": invalid type"#),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_is_one_line_with_a_line_number() {
        let err = parse_err("mem = 512\nports = \"31000\n");
        assert!(
            err.starts_with("/etc/bramble/agent.toml: line 2: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_after_parsing() {
        assert_eq!(
            parse_err("\n\nports = \"32000-31000\"\n"),
            r#"/etc/bramble/agent.toml: line 3: key "ports": port range "32000-31000" ends before it begins"#
        );
        let err = parse_err("cpus = -1.0\n");
        assert!(
            err.contains(r#"line 1: key "cpus": must be a positive number"#),
            "{err}"
        );
        let err = parse_err("cpus = nan\n");
        assert!(err.contains(r#"key "cpus""#), "{err}");
        let err = parse_err("master = \"pi-master\"\n");
        assert!(err.contains(r#"key "master""#), "{err}");
        let err = parse_err("heartbeat_interval_ms = 0\n");
        assert!(err.contains(r#"key "heartbeat_interval_ms""#), "{err}");
        let err = parse_err("log = \"info,=[\"\n");
        assert!(err.contains(r#"key "log""#), "{err}");
    }

    #[test]
    fn several_masters_are_a_list_or_a_comma_separated_master() {
        assert!(AgentConfig::default().master_list().is_empty());
        let c = parse(Path::new(PATH), "master = \"m:5050\"\n").unwrap();
        assert_eq!(c.master_list(), ["m:5050"]);
        let c = parse(
            Path::new(PATH),
            "masters = [\"a:5050\", \"b:5050\", \"[fd00::3]:5050\"]\n",
        )
        .unwrap();
        assert_eq!(c.master_list(), ["a:5050", "b:5050", "[fd00::3]:5050"]);
        let c = parse(Path::new(PATH), "master = \"a:5050, b:5050\"\n").unwrap();
        assert_eq!(c.master_list(), ["a:5050", "b:5050"]);
    }

    #[test]
    fn a_bad_master_list_names_the_file_line_and_key() {
        assert_eq!(
            parse_err("\nmasters = [\"a:5050\", \"b\"]\n"),
            r#"/etc/bramble/agent.toml: line 2: key "masters": "b" is not host:port"#
        );
        let err = parse_err("master = \"a:5050\"\nmasters = [\"b:5050\"]\n");
        assert!(
            err.contains(r#"line 2: key "masters": give master or masters, not both"#),
            "{err}"
        );
        let err = parse_err("master = \" , \"\n");
        assert!(
            err.contains(r#"line 1: key "master": " , " names no master"#),
            "{err}"
        );
        let err = parse_err("master = \"a:5050,b\"\n");
        assert!(
            err.contains(r#"key "master": "b" is not host:port"#),
            "{err}"
        );
        let err = parse_err("masters = \"a:5050\"\n");
        assert!(err.contains(r#"key "masters": invalid type"#), "{err}");
    }

    #[test]
    fn discovery_interfaces_are_optional_and_checked() {
        assert!(AgentConfig::default().discovery.interfaces.is_empty());
        let c = parse(Path::new(PATH), "[discovery]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(c.discovery.interfaces, vec!["eth0"]);
        let err = parse_err("\n[discovery]\ninterfaces = [\"no/such\"]\n");
        assert!(err.contains(r#"key "discovery.interfaces""#), "{err}");
        let err = parse_err("[discovery]\niface = []\n");
        assert!(err.contains(r#"unknown key "iface""#), "{err}");
    }

    #[test]
    fn gc_keys_default_parse_and_are_checked() {
        let d = AgentConfig::default();
        assert_eq!(d.gc_policy(), GcPolicy::default());
        assert_eq!(d.gc.max_age_secs, 3 * 24 * 3600);
        assert_eq!(d.task_user, None);
        let c = parse(
            Path::new(PATH),
            "[gc]\nmax_age_secs = 60\ndisk_headroom = 0.2\ndisk_high_watermark = 0.8\ninterval_secs = 5\n",
        )
        .unwrap();
        let p = c.gc_policy();
        assert_eq!(p.max_age, Duration::from_secs(60));
        assert_eq!((p.disk_headroom, p.high_watermark), (0.2, 0.8));
        assert_eq!(p.interval, Duration::from_secs(5));
        let err = parse_err("[gc]\ndisk_high_watermark = 1.5\n");
        assert!(
            err.contains(r#"line 2: key "gc.disk_high_watermark": must be in (0, 1]"#),
            "{err}"
        );
        let err = parse_err("[gc]\ndisk_headroom = -0.1\n");
        assert!(err.contains(r#"key "gc.disk_headroom""#), "{err}");
        let err = parse_err("[gc]\nmax_age = 3\n");
        assert!(err.contains(r#"unknown key "max_age""#), "{err}");
    }

    #[test]
    fn task_uids_parse_are_checked_and_exclude_task_user() {
        assert_eq!(AgentConfig::default().task_users().unwrap(), None);
        let c = parse(Path::new(PATH), "task_uids = \"70000-70999\"\n").unwrap();
        assert_eq!(
            c.task_users().unwrap(),
            Some(TaskUsers::PerFramework(
                UidRange::new(70000, 70999).unwrap()
            ))
        );
        let c = parse(Path::new(PATH), "task_user = \"root\"\n").unwrap();
        assert!(matches!(c.task_users().unwrap(), Some(TaskUsers::One(u)) if u.uid.is_root()));
        let err = parse_err("\ntask_uids = \"0-100\"\n");
        assert!(
            err.contains(r#"line 2: key "task_uids": the range may not hold uid 0 (root)"#),
            "{err}"
        );
        let err = parse_err("task_user = \"root\"\ntask_uids = \"70000-70999\"\n");
        assert!(err.contains("alternatives"), "{err}");
    }

    #[test]
    fn container_pids_max_defaults_to_a_cap_and_can_be_lifted() {
        assert_eq!(AgentConfig::default().container_pids_max, 512);
        let c = parse(Path::new(PATH), "container_pids_max = 0\n").unwrap();
        assert_eq!(c.container_pids_max, 0);
    }

    #[test]
    fn task_user_must_exist() {
        let c = parse(Path::new(PATH), "task_user = \"root\"\n").unwrap();
        assert!(c.task_user().unwrap().unwrap().uid.is_root());
        assert_eq!(
            parse_err("\ntask_user = \"no-such-user-bramble\"\n"),
            r#"/etc/bramble/agent.toml: line 2: key "task_user": no user "no-such-user-bramble" on this machine (see /etc/passwd)"#
        );
    }

    #[test]
    fn recovery_section_defaults_to_leaving_tasks_running() {
        let d = AgentConfig::default();
        assert!(!d.recovery.kill_tasks_on_shutdown);
        assert_eq!(
            d.recovery.executor_reconnect_timeout(),
            Duration::from_secs(900)
        );
        let c = parse(
            Path::new(PATH),
            "[recovery]\nkill_tasks_on_shutdown = true\nexecutor_reconnect_timeout_secs = 60\n",
        )
        .unwrap();
        assert!(c.recovery.kill_tasks_on_shutdown);
        assert_eq!(c.recovery.executor_reconnect_timeout_secs, 60);
        let err = parse_err("[recovery]\nexecutor_reconnect_timeout_secs = 0\n");
        assert!(
            err.contains(r#"key "recovery.executor_reconnect_timeout_secs""#),
            "{err}"
        );
        let err = parse_err("[recovery]\nkill_tasks = true\n");
        assert!(err.contains(r#"unknown key "kill_tasks""#), "{err}");
    }

    #[test]
    fn port_lists_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_ports("31000-32000,8080"),
            Ok(vec![
                PortRange::new(31000, 32000),
                PortRange::new(8080, 8080)
            ])
        );
        assert_eq!(parse_ports(" 80 - 81 "), Ok(vec![PortRange::new(80, 81)]));
        assert_eq!(parse_ports(""), Ok(vec![]));
        assert!(parse_ports("70000")
            .unwrap_err()
            .contains("not a port number"));
        assert!(parse_ports("0-10").is_err());
        assert!(parse_ports("80,,90").unwrap_err().contains("empty entry"));
        assert!(parse_ports("a-b").is_err());
        assert!(parse_ports("90-80")
            .unwrap_err()
            .contains("ends before it begins"));
    }

    #[test]
    fn host_port_accepts_names_and_bracketed_ipv6() {
        assert!(check_host_port("pi-master.local:5051").is_ok());
        assert!(check_host_port("[fd00::1]:5051").is_ok());
        assert!(check_host_port("fd00::1:5051").is_err());
        assert!(check_host_port(":5051").is_err());
        assert!(check_host_port("host:0").is_err());
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.toml");
        let err = load_optional(&missing, true).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err
            .to_string()
            .starts_with(&format!("{}: ", missing.display())));
        assert_eq!(
            load_optional(&missing, false).unwrap(),
            AgentConfig::default()
        );
        // `load` treats any path but the default one as explicit.
        assert!(load(&missing).is_err());
    }

    #[test]
    fn load_reads_and_validates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "mem = 300\n").unwrap();
        assert_eq!(load(&path).unwrap().mem, Some(300));
        std::fs::write(&path, "mem = 0\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: line 1: key \"mem\": must be at least 1 (MiB)",
                path.display()
            )
        );
    }

    #[test]
    fn generic_loader_works_for_other_config_types() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Other {
            #[allow(dead_code)]
            port: u16,
        }
        let err = load_toml::<Other>(Path::new("master.toml"), "port = 99999\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"master.toml: line 1: key "port": "#),
            "{err}"
        );
    }
}
