//! `[executor]`: a custom executor each instance runs under, instead of `cmd`.

use serde::{Deserialize, Serialize};

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

impl ExecutorSpec {
    /// The executor process's own resources.
    pub fn resources(&self) -> bramble_proto::Resources {
        bramble_proto::Resources::new(self.cpus, self.mem)
    }

    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
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
