//! A custom executor for tests, built on the SDK. Each task's `data` says what to do:
//! `sleep` runs until killed, `echo:TEXT` finishes with TEXT as its result, `fail` fails,
//! `wait:PATH` finishes once the file PATH exists (reporting first, then removing the file, so
//! a test that sees the file gone knows the update was produced), `big:N` tries to finish with
//! N bytes of result and, if the SDK refuses that, fails saying why (`big:N;ANYTHING` too: the
//! rest only makes the task's own data large).
//! Framework messages are echoed back prefixed with `echo:` (`big:N` is answered with N bytes,
//! or with why the SDK refused them). RUNNING updates carry the
//! executor's pid so tests can see that tasks share one executor process.

use async_trait::async_trait;
use bramble_proto::task::TaskInfo;
use bramble_proto::{TaskId, TaskState};
use bramble_sdk::{run_executor, status, Executor, ExecutorDriver, TaskStatusExt};

struct TestExecutor;

#[async_trait]
impl Executor for TestExecutor {
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        let pid = std::process::id();
        let _ = driver
            .send_status_update(status(&task, TaskState::Running).message(format!("pid {pid}")));
        let what = String::from_utf8_lossy(&task.data).to_string();
        if let Some(path) = what.strip_prefix("wait:") {
            let (driver, path) = (driver.clone(), std::path::PathBuf::from(path));
            let finished = status(&task, TaskState::Finished).message("released");
            tokio::spawn(async move {
                // A test fixture polling a file it was told to wait for.
                while !path.exists() {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                let _ = driver.send_status_update(finished);
                let _ = std::fs::remove_file(&path);
            });
            return;
        }
        // `big:N;PADDING`: the padding only makes the task's own data large.
        if let Some(n) = what
            .strip_prefix("big:")
            .and_then(|n| n.split(';').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            let big = status(&task, TaskState::Finished).data(vec![7; n]);
            if let Err(e) = driver.send_status_update(big) {
                let _ = driver.send_status_update(
                    status(&task, TaskState::Failed).message(format!("refused: {e}")),
                );
            }
            return;
        }
        let done = if let Some(text) = what.strip_prefix("echo:") {
            Some(status(&task, TaskState::Finished).data(text.as_bytes().to_vec()))
        } else if what == "fail" {
            Some(status(&task, TaskState::Failed).message("asked to fail"))
        } else {
            None // "sleep": runs until killed
        };
        if let Some(s) = done {
            let _ = driver.send_status_update(s);
        }
    }

    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
        let _ = driver.send_status_update(
            status(task_id, TaskState::Killed).message("killed by the test executor"),
        );
    }

    async fn framework_message(&mut self, driver: &ExecutorDriver, data: &[u8]) {
        let asked = String::from_utf8_lossy(data);
        if let Some(n) = asked
            .strip_prefix("big:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if let Err(e) = driver.send_framework_message(vec![7; n]) {
                let _ = driver.send_framework_message(format!("refused: {e}").into_bytes());
            }
            return;
        }
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(data);
        let _ = driver.send_framework_message(reply);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run_executor(TestExecutor).await {
        eprintln!("test-executor: {e}");
        std::process::exit(1);
    }
}
