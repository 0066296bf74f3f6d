//! How a container ended, and the one-line wording status updates and logs use for it.
//!
//! Kept apart from the process plumbing so the wording is a pure function with its own tests.

use nix::sys::signal::Signal;

/// The end of a container: its leader's exit plus what the containerizer knows about why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// Exit status, when the leader exited normally.
    pub code: Option<i32>,
    /// Terminating signal number, when the leader was killed by a signal.
    pub signal: Option<i32>,
    /// The kernel OOM killer acted inside the container's cgroup (always false without
    /// cgroups or without a memory limit).
    pub memory_limit_exceeded: bool,
    /// The agent asked for it to die (`Killer::kill`) while it was running.
    pub killed: bool,
    /// The memory limit it ran under, in MiB (0: unlimited); lets `describe` say it.
    pub memory_limit_mib: u64,
    /// It ended while no agent watched it (re-adopted after an agent restart, or found dead
    /// on recovery) and left no recorded exit status.
    pub unobserved: bool,
}

impl ExitReport {
    /// The leader's status as `waitpid` reports it (exit code in the high byte, or the
    /// terminating signal): what Mesos's FAILURE event carries. `None` when nobody saw it end.
    pub fn wait_status(&self) -> Option<i32> {
        match (self.code, self.signal) {
            (Some(code), _) => Some((code & 0xff) << 8),
            (None, Some(signal)) => Some(signal & 0x7f),
            (None, None) => None,
        }
    }

    /// True for a clean `exit 0` that nobody asked for and no limit caused.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.killed && !self.memory_limit_exceeded
    }

    /// E.g. "exited with status 3", "killed by signal 9 (SIGKILL)",
    /// "memory limit of 64 MiB exceeded (killed by signal 9 (SIGKILL))".
    pub fn describe(&self) -> String {
        let how = match (self.code, self.signal) {
            (_, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
            (Some(code), None) => format!("exited with status {code}"),
            (None, None) if self.unobserved => {
                "ended while the agent was down; its exit status was not recorded".to_string()
            }
            (None, None) => "ended with an unknown status".to_string(),
        };
        if self.memory_limit_exceeded {
            format!(
                "memory limit of {} MiB exceeded ({how})",
                self.memory_limit_mib
            )
        } else if self.killed {
            format!("killed on request ({how})")
        } else {
            how
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(code: Option<i32>, signal: Option<i32>) -> ExitReport {
        ExitReport {
            code,
            signal,
            memory_limit_exceeded: false,
            killed: false,
            memory_limit_mib: 0,
            unobserved: false,
        }
    }

    #[test]
    fn describe_names_status_signal_and_cause() {
        assert_eq!(report(Some(3), None).describe(), "exited with status 3");
        assert_eq!(
            report(None, Some(9)).describe(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            report(None, None).describe(),
            "ended with an unknown status"
        );
        assert_eq!(
            ExitReport {
                unobserved: true,
                ..report(None, None)
            }
            .describe(),
            "ended while the agent was down; its exit status was not recorded"
        );
        assert_eq!(
            report(None, Some(200)).describe(),
            "killed by signal 200 (unknown signal)"
        );

        let oom = ExitReport {
            memory_limit_exceeded: true,
            memory_limit_mib: 64,
            ..report(None, Some(9))
        };
        assert_eq!(
            oom.describe(),
            "memory limit of 64 MiB exceeded (killed by signal 9 (SIGKILL))"
        );
        let oom_in_pipeline = ExitReport {
            memory_limit_exceeded: true,
            memory_limit_mib: 64,
            ..report(Some(137), None)
        };
        assert_eq!(
            oom_in_pipeline.describe(),
            "memory limit of 64 MiB exceeded (exited with status 137)"
        );

        let killed = ExitReport {
            killed: true,
            ..report(None, Some(15))
        };
        assert_eq!(
            killed.describe(),
            "killed on request (killed by signal 15 (SIGTERM))"
        );
    }

    #[test]
    fn success_only_for_a_clean_unprovoked_exit() {
        assert!(report(Some(0), None).success());
        assert!(!report(Some(1), None).success());
        assert!(!ExitReport {
            killed: true,
            ..report(Some(0), None)
        }
        .success());
        assert!(!report(None, Some(15)).success());
    }
}
