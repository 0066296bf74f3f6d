//! The agent file's `[fetch]`, `[containers]`, `[mesos]`, `[gc]` and `[recovery]` sections.

use crate::gc::GcPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

// ----- [gc] -----

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

impl RecoveryConfig {
    pub fn executor_reconnect_timeout(&self) -> Duration {
        Duration::from_secs(self.executor_reconnect_timeout_secs)
    }
}
