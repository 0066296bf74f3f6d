//! `bramble executor pi`: the long-lived custom executor that computes pi chunks on an agent.
//! Each task is one [`PiChunk`]; the executor's shape (blocking pool, kills, the result in the
//! FINISHED update) is [`ComputeExecutor`]'s.

use super::kernel::{leibniz_range, Sum};
use super::PiChunk;
use crate::compute_executor::{Computation, ComputeExecutor};
use bramble_sdk::TaskId;
use tracing::info;

/// The pi job's executor.
pub type PiExecutor = ComputeExecutor<PiChunk>;

impl Computation for PiChunk {
    type Output = Sum;

    fn decode(data: &[u8]) -> Result<Self, String> {
        PiChunk::from_bytes(data).ok_or_else(|| "task data is not a pi chunk".to_string())
    }

    fn compute(&self) -> Sum {
        leibniz_range(self.begin, self.end)
    }

    fn finished(&self, task: &TaskId, sum: Sum, secs: f64) -> (Vec<u8>, String) {
        let terms = self.end - self.begin;
        info!(task = %task, terms, secs, "chunk done");
        (
            sum.to_bytes().to_vec(),
            format!("{terms} terms in {secs:.3} s"),
        )
    }

    fn failed(&self, error: &str) -> String {
        format!("computation failed: {error}")
    }

    const ABANDONED: &'static str = "chunk abandoned";
}

/// The pi executor driven by the SDK's executor test kit: no agent, no socket.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::pi::kernel::Sum;
    use bramble_sdk::testing::{task, ExecutorTest};
    use bramble_sdk::TaskState;

    #[tokio::test]
    async fn a_chunk_reports_running_then_its_exact_sum() {
        let mut t = ExecutorTest::new(PiExecutor::default());
        let chunk = PiChunk {
            index: 3,
            begin: 1_000,
            end: 51_000,
        };
        t.launch(task("pi-3-1", chunk.to_bytes())).await;
        assert_eq!(t.next_update().await.state, TaskState::Running);
        let done = t.update_in("pi-3-1", TaskState::Finished).await;
        let sum = Sum::from_bytes(&done.data).expect("a sum in the update");
        assert_eq!(sum.value(), leibniz_range(1_000, 51_000).value());
        assert!(done.message.contains("50000 terms"), "{}", done.message);
    }

    #[tokio::test]
    async fn data_that_is_not_a_chunk_fails_the_task_with_the_reason() {
        let mut t = ExecutorTest::new(PiExecutor::default());
        t.launch(task("pi-0-1", b"garbage".to_vec())).await;
        let failed = t.update_in("pi-0-1", TaskState::Failed).await;
        assert!(
            failed.message.contains("not a pi chunk"),
            "{}",
            failed.message
        );
    }
}
