//! `bramble executor pi`: the long-lived custom executor that computes pi chunks on an agent.
//!
//! Each task is one chunk; its sum runs on tokio's blocking pool (one core per task, as the
//! task's `cpus` promise) while the executor keeps serving kills and new launches. The result
//! goes back in the FINISHED update's data — the reliable, checkpointed path — never in a
//! best-effort framework message.

use super::kernel::leibniz_range;
use super::PiChunk;
use bramble_sdk::{
    async_trait, status, Executor, ExecutorDriver, TaskId, TaskInfo, TaskReason, TaskState,
    TaskStatusExt,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

#[derive(Default)]
pub struct PiExecutor {
    /// Tasks killed while their chunk was being computed: their result is dropped.
    killed: Arc<Mutex<HashSet<TaskId>>>,
}

#[async_trait]
impl Executor for PiExecutor {
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        let Some(chunk) = PiChunk::from_bytes(&task.data) else {
            let failed = status(&task, TaskState::Failed)
                .reason(TaskReason::InvalidTask)
                .message("task data is not a pi chunk");
            let _ = driver.send_status_update(failed);
            return;
        };
        let _ = driver.send_status_update(status(&task, TaskState::Running));
        let driver = driver.clone();
        let killed = self.killed.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let computed =
                tokio::task::spawn_blocking(move || leibniz_range(chunk.begin, chunk.end)).await;
            let was_killed = killed
                .lock()
                .map(|mut k| k.remove(&task.task_id))
                .unwrap_or(false);
            if was_killed {
                return;
            }
            let update = match computed {
                Ok(sum) => {
                    let secs = started.elapsed().as_secs_f64();
                    info!(task = %task.task_id, terms = chunk.end - chunk.begin, secs, "chunk done");
                    status(&task, TaskState::Finished)
                        .data(sum.to_bytes().to_vec())
                        .message(format!("{} terms in {secs:.3} s", chunk.end - chunk.begin))
                }
                Err(e) => {
                    warn!(task = %task.task_id, "chunk computation failed: {e}");
                    status(&task, TaskState::Failed).message(format!("computation failed: {e}"))
                }
            };
            let _ = driver.send_status_update(update);
        });
    }

    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
        if let Ok(mut k) = self.killed.lock() {
            k.insert(task_id.clone());
        }
        let _ = driver.send_status_update(
            status(task_id, TaskState::Killed)
                .reason(TaskReason::KilledByRequest)
                .message("chunk abandoned"),
        );
    }
}
