//! What the core does differently for tasks of Mesos-API frameworks (`TaskInfo.mesos` set):
//! the `MESOS_*` environment their executors are started with (contract §3.3, pitfall 7), the
//! updates a Mesos command task reports as Mesos's command executor would (§3.4), and the
//! executor facts checkpointed with the run. Plain functions: the decisions stay in
//! `tasks.rs` and `executors.rs`, beside the native ones they mirror.

use super::Agent;
use crate::checkpoint::MesosExecutor;
use crate::containerizer::ExitReport;
use bramble_proto::task::{MesosTask, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId, TaskState, TaskStatus};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// What a Mesos executor's environment is made of.
pub(super) struct ExecutorEnv<'a> {
    pub framework_id: &'a FrameworkId,
    pub executor_id: &'a ExecutorId,
    pub agent_id: Option<&'a AgentId>,
    /// The executor API's bound address.
    pub endpoint: SocketAddr,
    pub sandbox: &'a Path,
    pub recovery_timeout: Duration,
}

/// The executor facts a run keeps, from its first task.
pub(super) fn executor_of(mesos: &MesosTask) -> MesosExecutor {
    MesosExecutor {
        framework_json: mesos.framework_json.clone(),
        executor_json: mesos.executor_json.clone().unwrap_or_else(|| "{}".into()),
        checkpoint: mesos.checkpoint,
        shutdown_grace_ms: mesos.shutdown_grace_ms,
    }
}

/// The environment Mesos gives an executor (`slave.cpp` `executorEnvironment`), as pymesos
/// and libprocess-era drivers read it. `MESOS_CHECKPOINT` is set only when checkpointing:
/// pymesos reads any non-empty value, even "0", as true (pitfall 7).
pub(super) fn executor_env(e: &ExecutorEnv, executor: &MesosExecutor) -> Vec<(String, String)> {
    let sandbox = e.sandbox.display().to_string();
    let agent_id = e.agent_id.map(|a| a.to_string()).unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        ("MESOS_FRAMEWORK_ID".into(), e.framework_id.to_string()),
        ("MESOS_EXECUTOR_ID".into(), e.executor_id.to_string()),
        ("MESOS_AGENT_ENDPOINT".into(), e.endpoint.to_string()),
        ("MESOS_DIRECTORY".into(), sandbox.clone()),
        ("MESOS_SANDBOX".into(), sandbox),
        ("MESOS_SLAVE_ID".into(), agent_id.clone()),
        ("MESOS_AGENT_ID".into(), agent_id),
        ("MESOS_SLAVE_PID".into(), format!("slave(1)@{}", e.endpoint)),
        (
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(),
            stout_duration(Duration::from_millis(executor.shutdown_grace_ms)),
        ),
        ("MESOS_HTTP_COMMAND_EXECUTOR".into(), "0".into()),
        ("LIBPROCESS_PORT".into(), "0".into()),
    ];
    if executor.checkpoint {
        env.push(("MESOS_CHECKPOINT".into(), "1".into()));
        env.push((
            "MESOS_RECOVERY_TIMEOUT".into(),
            stout_duration(e.recovery_timeout),
        ));
        // Mesos's default `executor_reregistration_retry_interval` bound.
        env.push((
            "MESOS_SUBSCRIPTION_BACKOFF_MAX".into(),
            stout_duration(Duration::from_secs(2)),
        ));
    }
    env
}

/// What a Mesos command task's command sees (Mesos's command executor passes its own
/// environment on to the command).
pub(super) fn command_task_env(
    framework_id: &FrameworkId,
    executor_id: &ExecutorId,
    sandbox: &Path,
) -> Vec<(String, String)> {
    let sandbox = sandbox.display().to_string();
    vec![
        ("MESOS_FRAMEWORK_ID".into(), framework_id.to_string()),
        ("MESOS_EXECUTOR_ID".into(), executor_id.to_string()),
        ("MESOS_DIRECTORY".into(), sandbox.clone()),
        ("MESOS_SANDBOX".into(), sandbox),
    ]
}

/// A duration as stout prints and parses it (`5secs`, `100ms`, `15mins`): the largest unit
/// that divides it exactly, so nothing is rounded. pymesos's `parse_duration` asserts on a
/// bare number.
pub fn stout_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: [(u128, &str); 7] = [
        (7 * 24 * 3600 * 1_000_000_000, "weeks"),
        (24 * 3600 * 1_000_000_000, "days"),
        (3600 * 1_000_000_000, "hrs"),
        (60 * 1_000_000_000, "mins"),
        (1_000_000_000, "secs"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    if ns == 0 {
        return "0secs".into();
    }
    for (size, name) in UNITS {
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of is newer than our MSRV
        if ns % size == 0 {
            return format!("{}{name}", ns / size);
        }
    }
    format!("{ns}ns")
}

/// A Mesos command task's terminal message, in Mesos's command executor's words.
pub(super) fn command_outcome(report: &ExitReport) -> String {
    match (report.code, report.signal) {
        (_, Some(sig)) => format!("Command terminated with signal {}", signal_text(sig)),
        (Some(code), None) => format!("Command exited with status {code}"),
        (None, None) => report.describe(),
    }
}

/// `strsignal(3)`'s text for the signals a task usually dies of.
fn signal_text(sig: i32) -> String {
    let text = match sig {
        1 => "Hangup",
        2 => "Interrupt",
        3 => "Quit",
        4 => "Illegal instruction",
        6 => "Aborted",
        7 => "Bus error",
        8 => "Floating point exception",
        9 => "Killed",
        11 => "Segmentation fault",
        13 => "Broken pipe",
        14 => "Alarm clock",
        15 => "Terminated",
        _ => return format!("Unknown signal {sig}"),
    };
    text.to_string()
}

impl Agent {
    /// An update of a Mesos command task: from its executor, whose id is the task id.
    pub(super) fn mesos_command_status(
        &self,
        fw: &FrameworkId,
        executor_id: &ExecutorId,
        task_id: &TaskId,
        state: TaskState,
    ) -> TaskStatus {
        let mut status =
            TaskStatus::new(fw.clone(), task_id.clone(), state, UpdateSource::Executor);
        status.executor_id = Some(executor_id.clone());
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_stout_parses_them() {
        assert_eq!(stout_duration(Duration::from_secs(5)), "5secs");
        assert_eq!(stout_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(stout_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(stout_duration(Duration::from_secs(15 * 60)), "15mins");
        assert_eq!(stout_duration(Duration::from_secs(3600)), "1hrs");
        assert_eq!(stout_duration(Duration::ZERO), "0secs");
        assert_eq!(stout_duration(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn command_outcomes_read_as_mesos_writes_them() {
        let report = |code, signal| ExitReport {
            code,
            signal,
            memory_limit_exceeded: false,
            killed: signal.is_some(),
            memory_limit_mib: 0,
            unobserved: false,
        };
        let exited = report(Some(3), None);
        assert_eq!(command_outcome(&exited), "Command exited with status 3");
        let killed = report(None, Some(15));
        assert_eq!(
            command_outcome(&killed),
            "Command terminated with signal Terminated"
        );
    }
}
