//! `[[health]]`: the checks the scheduler runs against every RUNNING instance.

use serde::{Deserialize, Serialize};

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

    pub(super) fn check(&self, ports: u32) -> Result<(), (&'static str, String)> {
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
