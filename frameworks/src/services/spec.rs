//! A service's spec: the TOML an operator writes and `bramble service apply` stores, read and
//! checked in one place so the CLI refuses a bad file before storing it and the scheduler
//! reads back exactly what was checked.
//!
//! ```toml
//! name = "web"                  # a DNS label: it names the tasks and, later, the mDNS advert
//! instances = 3
//! cmd = "exec python3 -m http.server $PORT0"
//! cpus = 0.1
//! mem = 64                      # MiB
//! ports = 1                     # ports taken from offers, given to the task as PORT0, PORT1…
//!
//! [env]
//! GREETING = "hello"
//!
//! [constraints]
//! unique_hostname = true        # at most one instance per host
//! hostname_like = "bramble-*"   # glob over the agent's hostname ('*' and '?')
//! max_per_agent = 2
//! attributes = { rack = "a" }   # agent attributes that must match exactly
//!
//! image = "docker.io/library/python:3-alpine"   # optional: run cmd (by /bin/sh -c) in this
//!                               # container image, only on agents that run images
//! service_type = "_http._tcp"   # optional: the mDNS type healthy instances are advertised
//!                               # under by the master, as web, web-2… (default _http._tcp)
//!
//! [executor]                    # optional, instead of `cmd`: each instance is a task of its
//! cmd = "exec ./my-executor"    #   own custom executor (Marathon's `executor`), this program
//!                               #   run by /bin/sh -c in the sandbox with env and PORT0…;
//! cpus = 0.05                   #   the executor's own share, on top of the task's cpus/mem
//! mem = 32                      #   (MiB);
//! data = "anything"             #   handed to each task as its data (UTF-8)
//!
//! [[artifacts]]                 # any number of files fetched into each instance's sandbox
//! uri = "https://example.org/app-1.2.tgz"   # before it starts: http(s):// or master:NAME
//!                               #   (a file of the master's artifacts directory)
//! extract = true                #   unpack .tar, .tar.gz, .tgz into the sandbox (default true)
//! executable = false            #   chmod 0755 once fetched (default false)
//! sha256 = "9f86d0…"            #   optional: a different download fails the instance
//! cache = true                  #   keep it in the agent's fetch cache (default false)
//! output = "app.tgz"            #   optional: the name in the sandbox (default: the uri's last
//!                               #   segment)
//!
//! [[health]]                    # any number of checks, run by the scheduler:
//! protocol = "http"             #   "http" (GET path, expect status), "tcp" (port connects)
//! path = "/healthz"             #   or "command" (exits 0; HOST and PORT0… in its env)
//! status = 200                  #   http: the status expected (default: any 2xx or 3xx)
//! port_index = 0                #   http/tcp: which of the instance's ports (PORT0…)
//! grace_secs = 15.0             #   failures this soon after RUNNING do not count,
//! interval_secs = 5.0           #   a check this often,
//! timeout_secs = 2.0            #   each given this long,
//! max_failures = 3              #   and this many failures in a row kill the instance
//!
//! [rollout]                     # how a changed spec replaces the instances:
//! min_healthy = 1.0             #   a fraction of `instances` (1.0) or a count (2) kept healthy
//! max_surge = 1                 #   instances started above `instances` meanwhile
//! rollback_after = 2            #   new-version failures that roll back to the previous spec
//!
//! [restart]                     # an instance that ends is replaced after a backoff:
//! backoff_secs = 1.0            #   first delay,
//! backoff_factor = 2.0          #   times this per consecutive failure,
//! max_backoff_secs = 60.0       #   up to this;
//! min_uptime_secs = 10.0        #   an instance that ran this long resets the count
//! ```
//!
//! Errors name the file and the key: `web.toml: key "constraints.max_per_agent": must be at
//! least 1`.

use bramble_proto::task::Artifact;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest service name: it is a DNS label with room for suffixes.
pub const MAX_NAME_LEN: usize = 40;
/// Most instances one service may ask for.
pub const MAX_INSTANCES: u32 = 1000;
/// Most ports one instance may take.
pub const MAX_PORTS: u32 = 16;
/// Most artifacts one service may fetch into each instance's sandbox.
pub const MAX_ARTIFACTS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub instances: u32,
    /// Run by `/bin/sh -c` in the task's sandbox. Empty (absent) exactly when `executor` is
    /// set: the instance is then a task of that executor.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmd: String,
    pub cpus: f64,
    /// MiB.
    pub mem: u64,
    #[serde(default)]
    pub ports: u32,
    /// Bumped by `bramble service restart`: instances of an older generation are replaced.
    #[serde(default)]
    pub restart_generation: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// A container image to run `cmd` in (by `/bin/sh -c`); `None`: on the agent's own
    /// filesystem. Only agents advertising the containers attribute are offered such an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The mDNS service type (`_http._tcp`) the master advertises the healthy instances
    /// under; `None`: [`bramble_proto::service_status::DEFAULT_SERVICE_TYPE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    /// Health checks, run by the scheduler against every RUNNING instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// How a changed spec replaces the instances.
    #[serde(default)]
    pub rollout: Rollout,
    /// A custom executor each instance runs under, instead of `cmd`; `None`: a command task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorSpec>,
    /// Files fetched into each instance's sandbox before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactSpec>,
}

/// A file fetched into each instance's sandbox before it starts (`[[artifacts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    /// `http://…`, `https://…` or `master:NAME` (a file of the master's artifacts directory).
    pub uri: String,
    /// Unpack `.tar`, `.tar.gz` and `.tgz` files into the sandbox.
    #[serde(default = "default_extract")]
    pub extract: bool,
    /// `chmod 0755` once fetched.
    #[serde(default)]
    pub executable: bool,
    /// The expected SHA-256 (hex); a different download fails the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Keep it in the agent's fetch cache, keyed by uri and sha256.
    #[serde(default)]
    pub cache: bool,
    /// The file's name in the sandbox; `None`: the uri's last segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn default_extract() -> bool {
    true
}

impl ArtifactSpec {
    /// What the task carries.
    pub fn to_artifact(&self) -> Artifact {
        Artifact {
            uri: self.uri.clone(),
            executable: self.executable,
            extract: self.extract,
            cache: self.cache,
            sha256: self.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            output_file: self.output.clone(),
        }
    }
}

/// A service's custom executor (`[executor]`): one started per instance, in the instance's
/// sandbox, with the instance's environment and ports; the instance is its one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    /// The executor program, run by `/bin/sh -c` in the sandbox (`exec` it, so a kill reaches
    /// it); it connects back to its agent with `bramble-sdk`'s `run_executor`.
    pub cmd: String,
    /// The executor process's own share, on top of the task's `cpus`.
    #[serde(default = "default_executor_cpus")]
    pub cpus: f64,
    /// MiB, on top of the task's `mem`.
    #[serde(default = "default_executor_mem")]
    pub mem: u64,
    /// Handed to each task as its data (UTF-8 text; what it means is the executor's business).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
}

fn default_executor_cpus() -> f64 {
    0.05
}
fn default_executor_mem() -> u64 {
    32
}

/// Most bytes of `executor.data`: it travels in every launch.
pub const MAX_EXECUTOR_DATA: usize = 64 * 1024;

/// What a health check asks of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `GET path` on the instance's port answers with the expected status.
    Http,
    /// The instance's port accepts a connection.
    Tcp,
    /// A command run by the scheduler (`/bin/sh -c`, with `HOST` and `PORT0`… of the
    /// instance) exits 0.
    Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub protocol: Protocol,
    /// HTTP: the path asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP: the status expected; `None`: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// HTTP and TCP: which of the instance's ports (0 is `PORT0`).
    #[serde(default)]
    pub port_index: u32,
    /// Command: the line run by `/bin/sh -c` on the scheduler's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default = "default_grace")]
    pub grace_secs: f64,
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
}

fn default_grace() -> f64 {
    15.0
}
fn default_interval() -> f64 {
    5.0
}
fn default_timeout() -> f64 {
    2.0
}
fn default_max_failures() -> u32 {
    3
}

impl HealthCheck {
    /// How the check is named in logs and kill reasons: `http GET /healthz on PORT0`.
    pub fn describe(&self) -> String {
        match self.protocol {
            Protocol::Http => format!(
                "http GET {} on PORT{}",
                self.path.as_deref().unwrap_or("/"),
                self.port_index
            ),
            Protocol::Tcp => format!("tcp connect to PORT{}", self.port_index),
            Protocol::Command => format!("command {:?}", self.command.as_deref().unwrap_or("")),
        }
    }

    fn check(&self, ports: u32) -> Result<(), (&'static str, String)> {
        let secs = |v: f64| v.is_finite() && (0.0..=86_400.0).contains(&v);
        if !secs(self.grace_secs) {
            return Err(("health.grace_secs", "must be between 0 and 86400".into()));
        }
        if !(secs(self.interval_secs) && self.interval_secs >= 0.1) {
            return Err((
                "health.interval_secs",
                "must be between 0.1 and 86400".into(),
            ));
        }
        if !(secs(self.timeout_secs) && self.timeout_secs >= 0.01) {
            return Err((
                "health.timeout_secs",
                "must be between 0.01 and 86400".into(),
            ));
        }
        if self.max_failures == 0 {
            return Err(("health.max_failures", "must be at least 1".into()));
        }
        match self.protocol {
            Protocol::Http | Protocol::Tcp => {
                if self.port_index >= ports {
                    return Err((
                        "health.port_index",
                        format!(
                            "the instance has {ports} port(s) (`ports`), so PORT{} does not exist",
                            self.port_index
                        ),
                    ));
                }
                if self.command.is_some() {
                    return Err(("health.command", "only for protocol = \"command\"".into()));
                }
            }
            Protocol::Command => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    return Err((
                        "health.command",
                        "protocol = \"command\" needs a command".into(),
                    ));
                }
            }
        }
        if self.protocol != Protocol::Http && (self.path.is_some() || self.status.is_some()) {
            return Err((
                "health.path",
                "path and status are for protocol = \"http\"".into(),
            ));
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((
                    "health.path",
                    format!("{path:?} must start with '/' and hold no spaces"),
                ));
            }
        }
        if self.status.is_some_and(|s| !(100..=599).contains(&s)) {
            return Err((
                "health.status",
                "must be an HTTP status (100 to 599)".into(),
            ));
        }
        Ok(())
    }
}

/// How many instances a rollout keeps healthy: a fraction of `instances` or a count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MinHealthy {
    Count(u32),
    Fraction(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    #[serde(default = "default_min_healthy")]
    pub min_healthy: MinHealthy,
    #[serde(default = "default_max_surge")]
    pub max_surge: u32,
    /// New-version instances that fail (health checks, or ending by themselves) before the
    /// service is rolled back to its previous spec.
    #[serde(default = "default_rollback_after")]
    pub rollback_after: u32,
}

fn default_min_healthy() -> MinHealthy {
    MinHealthy::Fraction(1.0)
}
fn default_max_surge() -> u32 {
    1
}
fn default_rollback_after() -> u32 {
    2
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            min_healthy: default_min_healthy(),
            max_surge: default_max_surge(),
            rollback_after: default_rollback_after(),
        }
    }
}

impl Rollout {
    /// How many of `instances` stay healthy while a rollout replaces them.
    pub fn min_healthy_count(&self, instances: u32) -> u32 {
        match self.min_healthy {
            MinHealthy::Count(n) => n.min(instances),
            MinHealthy::Fraction(f) => ((f * f64::from(instances)).ceil() as u32).min(instances),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default)]
    pub unique_hostname: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_like: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_agent: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default = "default_backoff")]
    pub backoff_secs: f64,
    #[serde(default = "default_factor")]
    pub backoff_factor: f64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: f64,
    #[serde(default = "default_min_uptime")]
    pub min_uptime_secs: f64,
}

fn default_backoff() -> f64 {
    1.0
}
fn default_factor() -> f64 {
    2.0
}
fn default_max_backoff() -> f64 {
    60.0
}
fn default_min_uptime() -> f64 {
    10.0
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff_secs: default_backoff(),
            backoff_factor: default_factor(),
            max_backoff_secs: default_max_backoff(),
            min_uptime_secs: default_min_uptime(),
        }
    }
}

impl RestartPolicy {
    /// The delay before replacing an instance after `failures` consecutive ends (≥ 1).
    pub fn delay(&self, failures: u32) -> std::time::Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let secs = (self.backoff_secs * self.backoff_factor.powi(exponent))
            .min(self.max_backoff_secs)
            .max(0.0);
        std::time::Duration::from_secs_f64(secs)
    }
}

/// What is wrong with a spec, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecError {
    /// The file (or other source) the spec came from.
    pub source_name: String,
    /// The key at fault, dotted (`constraints.max_per_agent`); empty for a parse error, whose
    /// message carries the line.
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source_name, self.message)
        } else {
            write!(
                f,
                "{}: key \"{}\": {}",
                self.source_name, self.key, self.message
            )
        }
    }
}

impl Spec {
    /// Reads and checks a spec; `source_name` (a file name) is what errors name.
    pub fn parse(source_name: &str, text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError {
            source_name: source_name.to_string(),
            key: String::new(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        spec.check().map_err(|(key, message)| SpecError {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        })?;
        Ok(spec)
    }

    /// The spec as stored: TOML that [`Spec::parse`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// What an instance runs, without how many there are: instances started from specs with
    /// the same fingerprint are interchangeable, so scaling replaces none of them.
    pub fn fingerprint(&self) -> String {
        let mut body = self.clone();
        body.instances = 0;
        // How to roll out, or to be advertised, is not what runs.
        body.rollout = Rollout::default();
        body.service_type = None;
        format!("{:08x}", crc32fast::hash(body.to_toml().as_bytes()))
    }

    /// The artifacts every instance's task fetches (`[[artifacts]]`).
    pub fn task_artifacts(&self) -> Vec<Artifact> {
        self.artifacts
            .iter()
            .map(ArtifactSpec::to_artifact)
            .collect()
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        check_name(&self.name).map_err(|m| ("name", m))?;
        if self.instances > MAX_INSTANCES {
            return Err((
                "instances",
                format!("at most {MAX_INSTANCES} instances per service"),
            ));
        }
        match &self.executor {
            None if self.cmd.trim().is_empty() => {
                return Err((
                    "cmd",
                    "must not be empty (or give an [executor] instead)".into(),
                ));
            }
            None => {}
            Some(e) => {
                if !self.cmd.is_empty() {
                    return Err((
                        "cmd",
                        "a service with an [executor] runs executor.cmd; put what each task needs in executor.data".into(),
                    ));
                }
                e.check()?;
                if self.image.is_some() {
                    return Err((
                        "image",
                        "a container image is for command tasks only, not an [executor]".into(),
                    ));
                }
            }
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            return Err(("cpus", "must be a number above 0 (e.g. 0.1)".into()));
        }
        if self.mem == 0 {
            return Err(("mem", "must be at least 1 (MiB)".into()));
        }
        if self.ports > MAX_PORTS {
            return Err(("ports", format!("at most {MAX_PORTS} ports per instance")));
        }
        for key in self.env.keys() {
            let valid = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err((
                    "env",
                    format!("{key:?} is not a variable name (letters, digits, '_')"),
                ));
            }
            if is_reserved_env(key) {
                return Err((
                    "env",
                    format!(
                        "{key} is set by the scheduler (the instance's ports); pick another name"
                    ),
                ));
            }
        }
        let c = &self.constraints;
        if c.max_per_agent == Some(0) {
            return Err(("constraints.max_per_agent", "must be at least 1".into()));
        }
        if c.hostname_like.as_deref().is_some_and(str::is_empty) {
            return Err((
                "constraints.hostname_like",
                "must not be empty (e.g. \"bramble-*\")".into(),
            ));
        }
        let r = &self.restart;
        let positive = |v: f64| v.is_finite() && v >= 0.0;
        if !positive(r.backoff_secs) || r.backoff_secs > 3600.0 {
            return Err(("restart.backoff_secs", "must be between 0 and 3600".into()));
        }
        if !(r.backoff_factor.is_finite() && (1.0..=10.0).contains(&r.backoff_factor)) {
            return Err(("restart.backoff_factor", "must be between 1 and 10".into()));
        }
        if !positive(r.max_backoff_secs) || r.max_backoff_secs < r.backoff_secs {
            return Err((
                "restart.max_backoff_secs",
                "must be at least restart.backoff_secs".into(),
            ));
        }
        if !positive(r.min_uptime_secs) {
            return Err(("restart.min_uptime_secs", "must be 0 or more".into()));
        }
        if let Some(t) = &self.service_type {
            bramble_proto::service_status::check_service_type(t)
                .map_err(|m| ("service_type", m))?;
        }
        if let Some(image) = &self.image {
            if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(("image", format!("{image:?} is not an image reference")));
            }
        }
        for check in &self.health {
            check.check(self.ports)?;
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err((
                "artifacts",
                format!("at most {MAX_ARTIFACTS} artifacts per service"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for artifact in &self.artifacts {
            let task = artifact.to_artifact();
            task.check().map_err(|e| {
                let key = match e.field {
                    "sha256" => "artifacts.sha256",
                    "output_file" => "artifacts.output",
                    _ => "artifacts.uri",
                };
                (key, e.message)
            })?;
            // Checked above: a name can be derived.
            let name = task.file_name().unwrap_or_default();
            if task.unpacks().ok().flatten().is_none() && !names.insert(name.clone()) {
                return Err((
                    "artifacts.output",
                    format!(
                        "two artifacts would both be saved as {name:?}: give one an output name"
                    ),
                ));
            }
        }
        let ro = &self.rollout;
        if let MinHealthy::Fraction(f) = ro.min_healthy {
            if !(f.is_finite() && (0.0..=1.0).contains(&f)) {
                return Err((
                    "rollout.min_healthy",
                    "a fraction between 0.0 and 1.0, or a whole count".into(),
                ));
            }
        }
        if ro.max_surge > MAX_INSTANCES {
            return Err(("rollout.max_surge", format!("at most {MAX_INSTANCES}")));
        }
        if ro.max_surge == 0
            && ro.min_healthy_count(self.instances) >= self.instances
            && self.instances > 0
        {
            return Err((
                "rollout.max_surge",
                "with no surge, min_healthy must leave room to replace an instance (e.g. max_surge = 1 or min_healthy = 0.5)".into(),
            ));
        }
        if ro.rollback_after == 0 {
            return Err(("rollout.rollback_after", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl ExecutorSpec {
    /// The executor process's own resources.
    pub fn resources(&self) -> bramble_proto::Resources {
        bramble_proto::Resources::new(self.cpus, self.mem)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.cmd.trim().is_empty() {
            return Err(("executor.cmd", "must not be empty".into()));
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            return Err((
                "executor.cpus",
                "must be a number above 0 (e.g. 0.05)".into(),
            ));
        }
        if self.mem == 0 {
            return Err(("executor.mem", "must be at least 1 (MiB)".into()));
        }
        if self.data.len() > MAX_EXECUTOR_DATA {
            return Err((
                "executor.data",
                format!("at most {MAX_EXECUTOR_DATA} bytes"),
            ));
        }
        Ok(())
    }
}

impl Spec {
    /// What one instance takes from an offer, ports aside: its task's cpus and memory plus,
    /// with an `[executor]`, the executor's (each instance starts its own).
    pub fn footprint(&self) -> bramble_proto::Resources {
        let mut resources = bramble_proto::Resources::new(self.cpus, self.mem);
        if let Some(e) = &self.executor {
            resources.add(&e.resources());
        }
        resources
    }
}

/// `PORT` and `PORT0`… are the scheduler's to set.
fn is_reserved_env(key: &str) -> bool {
    key == "PORT"
        || key
            .strip_prefix("PORT")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A DNS label (lowercase letters, digits, '-', not at either end): the name is part of task
/// ids and of the service's mDNS name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "{name:?} is not a valid name: lowercase letters, digits and '-' (not first or last)"
        ));
    }
    Ok(())
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer glob with backtracking to the last '*'.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
name = "web"
instances = 3
cmd = "exec sleep 100"
cpus = 0.1
mem = 32
ports = 2
[env]
GREETING = "hi"
[constraints]
unique_hostname = true
hostname_like = "pi-*"
max_per_agent = 1
attributes = { rack = "a" }
[restart]
backoff_secs = 0.5
"#;

    #[test]
    fn a_full_spec_reads_and_round_trips_through_its_stored_form() {
        let spec = Spec::parse("web.toml", WEB).expect("valid");
        assert_eq!(spec.instances, 3);
        assert_eq!(spec.ports, 2);
        assert_eq!(spec.constraints.hostname_like.as_deref(), Some("pi-*"));
        assert_eq!(spec.restart.backoff_secs, 0.5);
        assert_eq!(spec.restart.max_backoff_secs, 60.0, "defaults fill in");
        let again = Spec::parse("stored", &spec.to_toml()).expect("stored form reads back");
        assert_eq!(again, spec);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                WEB.replace("max_per_agent = 1", "max_per_agent = 0"),
                "constraints.max_per_agent",
            ),
            (WEB.replace("name = \"web\"", "name = \"Web_1\""), "name"),
            (WEB.replace("cpus = 0.1", "cpus = 0.0"), "cpus"),
            (WEB.replace("GREETING", "PORT0"), "env"),
            (
                WEB.replace("backoff_secs = 0.5", "backoff_secs = -1.0"),
                "restart.backoff_secs",
            ),
            (WEB.replace("ports = 2", "ports = 99"), "ports"),
            (
                WEB.replace("ports = 2", "ports = 2\nservice_type = \"http\""),
                "service_type",
            ),
        ];
        for (text, key) in cases {
            let e = Spec::parse("web.toml", &text).expect_err(key);
            assert_eq!(e.key, key, "{e}");
            let shown = e.to_string();
            assert!(shown.starts_with("web.toml: key \""), "{shown}");
        }
        // An unknown key is a parse error that names it and its line.
        let e = Spec::parse("web.toml", &WEB.replace("cpus =", "cpu =")).expect_err("unknown");
        let shown = e.to_string();
        assert!(shown.starts_with("web.toml: "), "{shown}");
        assert!(shown.contains("cpu"), "{shown}");
        assert!(shown.contains("line"), "{shown}");
        let e = Spec::parse("web.toml", "name = \"web\"").expect_err("missing keys");
        assert!(e.to_string().contains("instances"), "{e}");
    }

    #[test]
    fn an_executor_stands_in_for_cmd_and_is_checked_key_by_key() {
        let base = "name = \"web\"\ninstances = 2\ncpus = 0.1\nmem = 16\nports = 1\n";
        let ok = format!("{base}[executor]\ncmd = \"exec ./serve\"\ndata = \".\"\n");
        let spec = Spec::parse("web.toml", &ok).expect("valid");
        let e = spec.executor.as_ref().expect("an executor");
        assert_eq!((e.cpus, e.mem), (0.05, 32), "defaults fill in");
        assert_eq!(e.data, ".");
        assert!(spec.cmd.is_empty());
        let stored = spec.to_toml();
        assert!(
            !stored.contains("\ncmd = \"\""),
            "no empty cmd stored: {stored}"
        );
        assert_eq!(Spec::parse("stored", &stored).expect("round trip"), spec);
        let mut other = spec.clone();
        other.executor.as_mut().unwrap().data = "docs".into();
        assert_ne!(
            spec.fingerprint(),
            other.fingerprint(),
            "the executor is what runs"
        );
        let cases = [
            (base.to_string(), "cmd"),
            (
                format!("cmd = \"x\"\n{base}[executor]\ncmd = \"y\"\n"),
                "cmd",
            ),
            (format!("{base}[executor]\ncmd = \" \"\n"), "executor.cmd"),
            (
                format!("{base}[executor]\ncmd = \"y\"\ncpus = 0.0\n"),
                "executor.cpus",
            ),
            (
                format!("{base}[executor]\ncmd = \"y\"\nmem = 0\n"),
                "executor.mem",
            ),
            (
                format!(
                    "{base}[executor]\ncmd = \"y\"\ndata = \"{}\"\n",
                    "x".repeat(MAX_EXECUTOR_DATA + 1)
                ),
                "executor.data",
            ),
            (
                format!("image = \"busybox\"\n{base}[executor]\ncmd = \"y\"\n"),
                "image",
            ),
        ];
        for (text, key) in cases {
            let e = Spec::parse("web.toml", &text).expect_err(key);
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().starts_with("web.toml: key \""), "{e}");
        }
        // An unknown key inside [executor] is a parse error naming it.
        let e = Spec::parse(
            "web.toml",
            &format!("{base}[executor]\ncmd = \"y\"\ncpu = 1\n"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("cpu"), "{e}");
    }

    #[test]
    fn a_spec_stored_before_executors_reads_back_with_the_same_fingerprint() {
        // Stored by the scheduler of the release before `[executor]`: this exact text and its
        // fingerprint, so no instance is replaced by an upgrade.
        let stored = "name = \"web\"\ninstances = 2\ncmd = \"exec sleep 100\"\ncpus = 0.1\nmem = 32\nports = 0\nrestart_generation = 0\n";
        let spec = Spec::parse("stored", stored).expect("old stored spec");
        assert!(spec.executor.is_none());
        assert!(spec.to_toml().starts_with(stored), "{}", spec.to_toml());
    }

    #[test]
    fn the_fingerprint_ignores_the_instance_count_only() {
        let spec = Spec::parse("web.toml", WEB).expect("valid");
        let mut scaled = spec.clone();
        scaled.instances = 7;
        assert_eq!(spec.fingerprint(), scaled.fingerprint());
        let mut restarted = spec.clone();
        restarted.restart_generation += 1;
        assert_ne!(spec.fingerprint(), restarted.fingerprint());
        let mut changed = spec.clone();
        changed.cmd = "exec sleep 200".into();
        assert_ne!(spec.fingerprint(), changed.fingerprint());
        // How it is advertised is not what runs: no rollout for it.
        let typed = WEB.replace("ports = 2", "ports = 2\nservice_type = \"_ipp._tcp\"");
        let typed = Spec::parse("web.toml", &typed).expect("valid");
        assert_eq!(typed.service_type.as_deref(), Some("_ipp._tcp"));
        assert_eq!(spec.fingerprint(), typed.fingerprint());
    }

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_cap() {
        let policy = RestartPolicy {
            backoff_secs: 1.0,
            backoff_factor: 2.0,
            max_backoff_secs: 5.0,
            min_uptime_secs: 10.0,
        };
        let secs: Vec<f64> = (1..=5).map(|n| policy.delay(n).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 5.0, 5.0]);
        assert!(policy.delay(u32::MAX).as_secs_f64() <= 5.0);
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let text = include_str!("../../../examples/services/web.toml");
        let spec = Spec::parse("examples/services/web.toml", text).expect("valid example");
        assert_eq!(spec.name, "web");
        assert!(spec.constraints.unique_hostname);
        let text = include_str!("../../../examples/services/served.toml");
        let spec = Spec::parse("examples/services/served.toml", text).expect("valid example");
        assert!(spec.executor.is_some() && spec.cmd.is_empty());
    }

    #[test]
    fn artifacts_read_with_mesos_defaults_and_are_checked() {
        let base = "name = \"web\"\ninstances = 1\ncmd = \"./run.sh\"\ncpus = 0.1\nmem = 16\n";
        let ok = format!(
            "{base}[[artifacts]]\nuri = \"http://10.0.0.1/app.tgz\"\n[[artifacts]]\nuri = \"master:tools/run.sh\"\nexecutable = true\ncache = true\nsha256 = \"{}\"\n",
            "AB".repeat(32)
        );
        let spec = Spec::parse("web.toml", &ok).expect("valid");
        let tasks = spec.task_artifacts();
        assert_eq!(tasks.len(), 2);
        assert!(tasks[0].extract && !tasks[0].executable && !tasks[0].cache);
        assert!(tasks[1].executable && tasks[1].cache);
        assert_eq!(
            tasks[1].sha256.as_deref(),
            Some("ab".repeat(32).as_str()),
            "stored lowercase, as digests are compared"
        );
        assert_eq!(
            Spec::parse("again", &spec.to_toml()).expect("round trip"),
            spec
        );
        let mut changed = spec.clone();
        changed.artifacts[0].uri = "http://10.0.0.1/app-2.tgz".into();
        assert_ne!(
            changed.fingerprint(),
            spec.fingerprint(),
            "other artifacts are another version"
        );
        let cases = [
            ("uri = \"file:///etc/passwd\"\n", "artifacts.uri"),
            ("uri = \"master:../secret\"\n", "artifacts.uri"),
            ("uri = \"http://h/\"\n", "artifacts.uri"),
            (
                "uri = \"http://h/x\"\nsha256 = \"12\"\n",
                "artifacts.sha256",
            ),
            (
                "uri = \"http://h/x\"\noutput = \"../x\"\n",
                "artifacts.output",
            ),
            (
                "uri = \"http://h/x\"\n[[artifacts]]\nuri = \"http://g/x\"\n",
                "artifacts.output",
            ),
        ];
        for (extra, key) in cases {
            let text = format!("{base}[[artifacts]]\n{extra}");
            let e = Spec::parse("web.toml", &text).expect_err(key);
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.to_string().starts_with("web.toml: key \"artifacts."),
                "{e}"
            );
        }
        let e = Spec::parse(
            "web.toml",
            &format!("{base}[[artifacts]]\nuri = \"http://h/x\"\nunpack = true\n"),
        )
        .expect_err("unknown key");
        assert!(e.to_string().contains("unpack"), "{e}");
    }

    #[test]
    fn globs_match_hostnames() {
        assert!(glob_matches("bramble-*", "bramble-1a2b"));
        assert!(glob_matches("*-a?", "rack-a1"));
        assert!(!glob_matches("bramble-*", "pi-1"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("pi-1", "pi-1"));
    }
    #[test]
    fn health_checks_and_rollouts_are_checked() {
        let base = "name = \"web\"\ninstances = 2\ncmd = \"x\"\ncpus = 0.1\nmem = 16\nports = 1\n";
        let ok = format!("{base}[[health]]\nprotocol = \"tcp\"\n[[health]]\nprotocol = \"command\"\ncommand = \"true\"\n[rollout]\nmin_healthy = 1\nmax_surge = 0\n");
        let spec = Spec::parse("web.toml", &ok).expect("valid");
        assert_eq!(spec.health.len(), 2);
        assert_eq!(spec.health[0].max_failures, 3, "defaults fill in");
        assert_eq!(spec.rollout.min_healthy, MinHealthy::Count(1));
        assert_eq!(
            Spec::parse("again", &spec.to_toml()).expect("round trip"),
            spec
        );
        let mut rolled = spec.clone();
        rolled.rollout.max_surge = 2;
        assert_eq!(
            rolled.fingerprint(),
            spec.fingerprint(),
            "how to roll out is not what runs"
        );
        let cases = [
            (
                "[[health]]\nprotocol = \"http\"\nport_index = 1\n",
                "health.port_index",
            ),
            ("[[health]]\nprotocol = \"command\"\n", "health.command"),
            (
                "[[health]]\nprotocol = \"tcp\"\npath = \"/\"\n",
                "health.path",
            ),
            (
                "[[health]]\nprotocol = \"http\"\npath = \"x\"\n",
                "health.path",
            ),
            (
                "[[health]]\nprotocol = \"http\"\nmax_failures = 0\n",
                "health.max_failures",
            ),
            (
                "[[health]]\nprotocol = \"http\"\ninterval_secs = 0.0\n",
                "health.interval_secs",
            ),
            ("[rollout]\nmin_healthy = 1.5\n", "rollout.min_healthy"),
            (
                "[rollout]\nmin_healthy = 1.0\nmax_surge = 0\n",
                "rollout.max_surge",
            ),
            ("[rollout]\nrollback_after = 0\n", "rollout.rollback_after"),
        ];
        for (extra, key) in cases {
            let e = Spec::parse("web.toml", &format!("{base}{extra}")).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
        let e = Spec::parse("web.toml", &format!("image = \"a b\"\n{base}")).expect_err("image");
        assert_eq!(e.key, "image");
        assert_eq!(Rollout::default().min_healthy_count(3), 3);
        let half = Rollout {
            min_healthy: MinHealthy::Fraction(0.5),
            ..Rollout::default()
        };
        assert_eq!(half.min_healthy_count(3), 2);
    }
}
