//! A custom executor: runs each task's `data` (a UTF-8 shell line) with `sh -c`, reports
//! RUNNING, then FINISHED or FAILED with the exit code; a kill kills the child and reports
//! KILLED. The agent starts it for a framework whose tasks name it:
//!
//! ```text
//! ExecutorInfo { command: CommandInfo::program("/path/to/shell_executor", vec![]), .. }
//! ```
//!
//! Each child is awaited in its own tokio task, so `launch_task` returns at once and kills
//! are delivered while commands run.

use bramble_sdk::{
    async_trait, run_executor, status, Executor, ExecutorDriver, TaskId, TaskInfo, TaskReason,
    TaskState, TaskStatusExt,
};
use std::collections::HashMap;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Default)]
struct ShellExecutor {
    /// Per running task: how to kill it, and the task reporting its end.
    running: HashMap<TaskId, (oneshot::Sender<()>, JoinHandle<()>)>,
}

#[async_trait]
impl Executor for ShellExecutor {
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        self.running
            .retain(|_, (_, watcher)| !watcher.is_finished());
        let report = |s| {
            if let Err(e) = driver.send_status_update(s) {
                eprintln!("reporting {}: {e}", task.task_id);
            }
        };
        let Ok(line) = String::from_utf8(task.data.clone()) else {
            return report(status(&task, TaskState::Failed).message("task data is not UTF-8"));
        };
        let mut child = match Command::new("sh")
            .arg("-c")
            .arg(&line)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return report(status(&task, TaskState::Failed).message(format!("sh: {e}"))),
        };
        report(status(&task, TaskState::Running));
        let (kill, killed) = oneshot::channel();
        let driver = driver.clone();
        let id = task.task_id.clone();
        let watcher = tokio::spawn(async move {
            let end = tokio::select! {
                exit = child.wait() => match exit {
                    Ok(s) if s.success() => status(&task, TaskState::Finished).exit_code(0),
                    Ok(s) => status(&task, TaskState::Failed)
                        .reason(TaskReason::CommandExited)
                        .exit_code(s.code().unwrap_or(-1))
                        .message(format!("`{line}` {s}")),
                    Err(e) => status(&task, TaskState::Failed).message(format!("waiting: {e}")),
                },
                _ = killed => {
                    let _ = child.kill().await;
                    status(&task, TaskState::Killed).reason(TaskReason::KilledByRequest)
                }
            };
            let _ = driver.send_status_update(end);
        });
        self.running.insert(id, (kill, watcher));
    }

    async fn kill_task(&mut self, _driver: &ExecutorDriver, task_id: &TaskId) {
        if let Some((kill, _)) = self.running.remove(task_id) {
            let _ = kill.send(());
        }
    }

    async fn shutdown(&mut self, _driver: &ExecutorDriver) {
        // Kill everything and wait for the KILLED reports to be queued before returning.
        for (_, (kill, watcher)) in self.running.drain() {
            let _ = kill.send(());
            let _ = watcher.await;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), bramble_sdk::SdkError> {
    bramble_sdk::proto::logging::init(None);
    run_executor(ShellExecutor::default()).await.map(|_| ())
}
