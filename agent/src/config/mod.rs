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
//!
//! Here: the file's top level (`AgentConfig`) and what the agent reads from it; the `[...]`
//! sections are in `sections.rs`, the checks serde cannot make in `checks.rs`.

mod checks;
mod sections;
#[cfg(test)]
mod tests;

pub use checks::parse_ports;
pub use sections::{ContainersConfig, FetchConfig, GcConfig, MesosConfig, RecoveryConfig};

use crate::containerizer::{TaskUser, TaskUsers, UidRange};
use crate::gc::GcPolicy;
use crate::resources::ResourceOverrides;
pub use bramble_proto::config::{load_toml, read_optional, ConfigError};
use bramble_proto::discovery::DiscoveryConfig;
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
