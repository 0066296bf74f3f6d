//! What a pi job is (terms, tasks, executor), what it ends with, and how it can fail.

use super::JOB;
use crate::pi::book::BookCounts;
use crate::pi::journal::JournalError;
use crate::pi::kernel::chunks;
use bramble_sdk::{CommandInfo, JobProgress, Resources, SdkError};

/// What to compute and with what.
#[derive(Debug, Clone)]
pub struct PiJob {
    pub terms: u64,
    pub tasks: u64,
    /// How agents start the executor, e.g. `/usr/bin/bramble executor pi`.
    pub executor: CommandInfo,
    /// Resources per chunk: half a core, a little memory. Each core's worth of an offer so
    /// holds two chunks and the executor always has the next one in hand when a chunk ends:
    /// the FINISHED → offer → launch round trip is hidden behind computing instead of leaving
    /// the core idle once per chunk (Ray and Dask pipeline tasks to their workers the same
    /// way). The two share the core, so the allocation stays honest.
    pub task_resources: Resources,
    /// The executor's own resources, charged once per agent.
    pub executor_resources: Resources,
}

impl PiJob {
    pub fn new(terms: u64, tasks: u64, executor: CommandInfo) -> Self {
        Self {
            terms,
            tasks,
            executor,
            task_resources: Resources::new(0.5, 16),
            executor_resources: Resources::new(0.0, 32),
        }
    }

    /// The job's name, which its framework is called by (so `bramble frameworks`, the web UI
    /// and the front panel's pi screen say which job it is): `pi 2e10`.
    pub fn name(&self) -> String {
        format!("{JOB} {}", compact_count(self.terms))
    }
}

/// `n` as the operator would type it: `2e10`, `25e6` when it ends in three zeros or more,
/// else its digits.
fn compact_count(n: u64) -> String {
    let (mut m, mut k) = (n, 0);
    while m != 0 && m % 10 == 0 {
        m /= 10;
        k += 1;
    }
    if k >= 3 {
        format!("{m}e{k}")
    } else {
        n.to_string()
    }
}

/// The job's result and how it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PiResult {
    pub pi: f64,
    /// `pi`'s IEEE-754 bit pattern in hex: what "bit-identical" compares.
    pub pi_bits: String,
    pub abs_error: f64,
    pub correct_digits: u32,
    pub terms: u64,
    pub tasks: u64,
    /// Wall time of this run (a resumed job's earlier runs not included).
    pub wall_s: f64,
    /// Terms computed by this run per second of it.
    pub terms_per_s: f64,
    pub relaunches: u64,
    pub duplicate_results: u64,
    pub agents_used: usize,
    /// Chunks counted over the job's life, this run and those it resumed (`restored +
    /// counted`): equal to `tasks` unless a chunk was counted twice or never.
    pub chunks_counted: u64,
    /// How every chunk was accounted for; `restored + counted == chunks`.
    pub chunks: BookCounts,
    pub framework_id: Option<String>,
    /// This run continued a journal left by an earlier one.
    pub resumed: bool,
}

/// Why a pi job did not produce its answer.
#[derive(Debug, thiserror::Error)]
pub enum PiError {
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("the job's journal failed, so it was stopped without tearing it down (its tasks keep running for the failover timeout; rerun to resume): {0}")]
    Journal(#[from] JournalError),
    #[error("the pi framework stopped before every chunk finished")]
    Incomplete,
}

/// An empty progress snapshot for a job about to start.
pub fn initial_progress(job: &PiJob) -> JobProgress {
    JobProgress {
        job: "pi".into(),
        done: 0,
        total: job.terms,
        unit: "terms".into(),
        rate_per_s: 0.0,
        tasks_done: 0,
        tasks_total: chunks(job.terms, job.tasks).len() as u64,
        estimate: None,
        correct_digits: None,
        elapsed_s: 0.0,
        finished: false,
        waiting_for: Some("the framework to register".into()),
    }
}
