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
