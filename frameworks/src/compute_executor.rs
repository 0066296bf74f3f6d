//! The executor shape the pi and factorial jobs share: long-lived (one per agent serves all
//! the job's tasks there), each task one pure computation decoded from the task's data.
//!
//! The computation runs on tokio's blocking pool (one core per task, as the task's `cpus`
//! promise) while the executor keeps serving kills and new launches. The result goes back in
//! the FINISHED update's data — the reliable, checkpointed path — never in a best-effort
//! framework message. A task killed while computing reports KILLED at once and its result is
//! dropped when it arrives.

use bramble_sdk::{
    async_trait, status, Executor, ExecutorDriver, TaskId, TaskInfo, TaskReason, TaskState,
    TaskStatusExt,
};
use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::warn;

/// One task's work: how it is read from the task's data, computed, and reported.
pub trait Computation: Clone + Send + 'static {
    /// What [`Computation::compute`] produces.
    type Output: Send + 'static;
    /// The work in a task's data, or why the data is not (the task fails as an invalid task
    /// with that message).
    fn decode(data: &[u8]) -> Result<Self, String>;
    /// The computation itself; runs on the blocking pool.
    fn compute(&self) -> Self::Output;
    /// The FINISHED update's data and message for `output`, computed in `secs`.
    fn finished(&self, task: &TaskId, output: Self::Output, secs: f64) -> (Vec<u8>, String);
    /// The FAILED update's message when the computation died (`error` says how).
    fn failed(&self, error: &str) -> String;
    /// The KILLED update's message.
    const ABANDONED: &'static str;
}

/// Runs each task's [`Computation`] `W`.
pub struct ComputeExecutor<W> {
    /// Tasks killed while computing: their result is dropped.
    killed: Arc<Mutex<HashSet<TaskId>>>,
    work: PhantomData<fn() -> W>,
}

impl<W> Default for ComputeExecutor<W> {
    fn default() -> Self {
        Self {
            killed: Arc::default(),
            work: PhantomData,
        }
    }
}

#[async_trait]
impl<W: Computation> Executor for ComputeExecutor<W> {
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        let work = match W::decode(&task.data) {
            Ok(work) => work,
            Err(why) => {
                let failed = status(&task, TaskState::Failed)
                    .reason(TaskReason::InvalidTask)
                    .message(why);
                let _ = driver.send_status_update(failed);
                return;
            }
        };
        let _ = driver.send_status_update(status(&task, TaskState::Running));
        let driver = driver.clone();
        let killed = self.killed.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let computing = work.clone();
            let computed = tokio::task::spawn_blocking(move || computing.compute()).await;
            let was_killed = killed
                .lock()
                .map(|mut k| k.remove(&task.task_id))
                .unwrap_or(false);
            if was_killed {
                return;
            }
            let update = match computed {
                Ok(output) => {
                    let secs = started.elapsed().as_secs_f64();
                    let (data, message) = work.finished(&task.task_id, output, secs);
                    status(&task, TaskState::Finished)
                        .data(data)
                        .message(message)
                }
                Err(e) => {
                    let message = work.failed(&e.to_string());
                    warn!(task = %task.task_id, "{message}");
                    status(&task, TaskState::Failed).message(message)
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
                .message(W::ABANDONED),
        );
    }
}
