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

mod artifacts;
mod executor;
mod health;
mod rollout;
#[cfg(test)]
mod tests;

pub use artifacts::ArtifactSpec;
pub use executor::{ExecutorSpec, MAX_EXECUTOR_DATA};
pub use health::{HealthCheck, Protocol};
pub use rollout::{MinHealthy, Rollout};

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
        artifacts::check(&self.artifacts)?;
        self.rollout.check(self.instances)?;
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
