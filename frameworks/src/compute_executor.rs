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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
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
        let running = status(&task, TaskState::Running);
        let driver = driver.clone();
        let killed = self.killed.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let computing = work.clone();
            let mut computation = tokio::task::spawn_blocking(move || computing.compute());
            // A computation over within RUNNING_WITHIN reports RUNNING with its end, in one
            // write (one commit on the agent); a longer one reports RUNNING now.
            let quick = match tokio::time::timeout(RUNNING_WITHIN, &mut computation).await {
                Ok(computed) => Some(computed),
                Err(_) => {
                    if lock(&killed).remove(&task.task_id) {
                        return; // KILLED went out instead
                    }
                    let _ = driver.send_status_update(running.clone());
                    None
                }
            };
            let together = quick.is_some();
            let computed = match quick {
                Some(computed) => computed,
                None => computation.await,
            };
            // Under the lock: a kill from now on finds the task's end already sent.
            let mut killed = lock(&killed);
            if killed.remove(&task.task_id) {
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
            if together {
                let _ = driver.send_status_updates(vec![running, update]);
            } else {
                let _ = driver.send_status_update(update);
            }
            drop(killed);
        });
    }

    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
        // Under the lock, so a task's RUNNING or end is never sent after its KILLED.
        let mut killed = lock(&self.killed);
        killed.insert(task_id.clone());
        let _ = driver.send_status_update(
            status(task_id, TaskState::Killed)
                .reason(TaskReason::KilledByRequest)
                .message(W::ABANDONED),
        );
    }
}

/// How long a task's computation may take and still report RUNNING together with its end.
pub const RUNNING_WITHIN: Duration = Duration::from_millis(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
