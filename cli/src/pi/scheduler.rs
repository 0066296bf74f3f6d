//! The pi framework's scheduler: cuts the series into chunks, launches them on offers, counts
//! each chunk once, relaunches what was lost, and publishes progress as it goes.
//!
//! Results are collected per chunk index and combined in chunk order at the end, so the final
//! estimate is bit-identical whatever the number of agents, the order tasks finish in, and
//! however many were lost and run again.

use super::book::{ChunkBook, Recorded};
use super::kernel::{chunks, correct_digits, Sum};
use super::PiChunk;
use bramble_sdk::{
    async_trait, CommandInfo, ExecutorInfo, Filters, JobProgress, Offer, Resources, Scheduler,
    SchedulerConfig, SchedulerDriver, SdkError, TaskInfo, TaskState, TaskStatus,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// What to compute and with what.
#[derive(Debug, Clone)]
pub struct PiJob {
    pub terms: u64,
    pub tasks: u64,
    /// How agents start the executor, e.g. `/usr/bin/bramble executor pi`.
    pub executor: CommandInfo,
    /// Resources per chunk: one core, a little memory.
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
            task_resources: Resources::new(1.0, 16),
            executor_resources: Resources::new(0.0, 32),
        }
    }
}

/// The job's result and how it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PiResult {
    pub pi: f64,
    pub abs_error: f64,
    pub correct_digits: u32,
    pub terms: u64,
    pub tasks: u64,
    pub wall_s: f64,
    pub terms_per_s: f64,
    pub relaunches: u64,
    pub duplicate_results: u64,
    pub agents_used: usize,
}

const EXECUTOR_ID: &str = "pi-executor";
/// Progress is published to the master at most this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

struct PiScheduler {
    job: PiJob,
    book: ChunkBook,
    relaunches: u64,
    duplicates: u64,
    agents: HashSet<String>,
    started: Instant,
    last_publish: Option<Instant>,
    progress: watch::Sender<JobProgress>,
    result: Option<PiResult>,
}

impl PiScheduler {
    fn new(job: PiJob, progress: watch::Sender<JobProgress>) -> Self {
        Self {
            book: ChunkBook::new(job.terms, job.tasks),
            job,
            relaunches: 0,
            duplicates: 0,
            agents: HashSet::new(),
            started: Instant::now(),
            last_publish: None,
            progress,
            result: None,
        }
    }

    fn executor_info(&self) -> ExecutorInfo {
        ExecutorInfo {
            executor_id: EXECUTOR_ID.into(),
            name: "pi executor".into(),
            command: self.job.executor.clone(),
            resources: self.job.executor_resources.clone(),
        }
    }

    fn snapshot(&self, finished: bool) -> JobProgress {
        let elapsed = self.started.elapsed().as_secs_f64();
        let estimate = self.book.estimate();
        JobProgress {
            job: "pi".into(),
            done: self.book.terms_done(),
            total: self.job.terms,
            unit: "terms".into(),
            rate_per_s: if elapsed > 0.0 {
                self.book.terms_done() as f64 / elapsed
            } else {
                0.0
            },
            tasks_done: self.book.done() as u64,
            tasks_total: self.book.len() as u64,
            estimate,
            correct_digits: estimate.map(correct_digits),
            elapsed_s: elapsed,
            finished,
        }
    }

    fn publish(&mut self, driver: &SchedulerDriver, force: bool) {
        let now = Instant::now();
        if !force && self.last_publish.is_some_and(|t| now - t < PUBLISH_EVERY) {
            return;
        }
        self.last_publish = Some(now);
        let snapshot = self.snapshot(self.book.is_complete());
        self.progress.send_replace(snapshot.clone());
        // Best effort: a disconnected driver simply misses one publication.
        let _ = driver.publish_progress(snapshot);
    }

    fn finish(&mut self, driver: &SchedulerDriver) {
        let wall = self.started.elapsed().as_secs_f64();
        let pi = self.book.estimate().unwrap_or(0.0);
        self.result = Some(PiResult {
            pi,
            abs_error: (pi - std::f64::consts::PI).abs(),
            correct_digits: correct_digits(pi),
            terms: self.job.terms,
            tasks: self.book.len() as u64,
            wall_s: wall,
            terms_per_s: self.job.terms as f64 / wall,
            relaunches: self.relaunches,
            duplicate_results: self.duplicates,
            agents_used: self.agents.len(),
        });
        info!(
            pi,
            wall_s = wall,
            relaunches = self.relaunches,
            "pi job complete"
        );
        self.publish(driver, true);
        driver.stop(false);
    }
}

/// Task ids are `pi-<chunk>-<attempt>`.
fn parse_task_id(id: &str) -> Option<(usize, u32)> {
    let rest = id.strip_prefix("pi-")?;
    let (chunk, attempt) = rest.split_once('-')?;
    Some((chunk.parse().ok()?, attempt.parse().ok()?))
}

#[async_trait]
impl Scheduler for PiScheduler {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            if !self.book.has_pending() {
                // Nothing to run now; relaunches revive offers.
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 5.0,
                    },
                );
                continue;
            }
            let mut left = offer.resources.clone();
            let executor = self.executor_info();
            if !offer.executor_ids.contains(&executor.executor_id) {
                left = left.checked_sub(&executor.resources).unwrap_or_default();
            }
            let mut tasks = Vec::new();
            while let Some(rest) = left.checked_sub(&self.job.task_resources) {
                let Some((index, attempt, (begin, end))) = self.book.launch_next() else {
                    break;
                };
                left = rest;
                let chunk = PiChunk {
                    index: index as u32,
                    begin,
                    end,
                };
                tasks.push(TaskInfo {
                    task_id: format!("pi-{index}-{attempt}").into(),
                    name: format!("pi chunk {index}"),
                    agent_id: offer.agent_id.clone(),
                    resources: self.job.task_resources.clone(),
                    command: None,
                    executor: Some(executor.clone()),
                    data: chunk.to_bytes(),
                });
            }
            if tasks.is_empty() {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 1.0,
                    },
                );
                continue;
            }
            self.agents.insert(offer.agent_id.to_string());
            let launched: Vec<usize> = tasks
                .iter()
                .filter_map(|t| parse_task_id(t.task_id.as_str()).map(|(i, _)| i))
                .collect();
            // Unused resources come straight back: another chunk may finish any moment.
            if let Err(e) = driver.launch_tasks(
                vec![offer.id],
                tasks,
                Filters {
                    refuse_seconds: 0.0,
                },
            ) {
                warn!("launching pi chunks failed: {e}; they will be retried");
                for index in launched {
                    self.book.unlaunch(index);
                }
            }
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let Some((index, attempt)) = parse_task_id(status.task_id.as_str()) else {
            warn!(task = %status.task_id, "update for a task that is not a pi chunk");
            return;
        };
        match status.state {
            TaskState::Finished => {
                let Some(sum) = Sum::from_bytes(&status.data) else {
                    warn!(task = %status.task_id, "FINISHED without a valid result; running the chunk again");
                    if self.book.lost(index, attempt) {
                        self.relaunches += 1;
                        let _ = driver.revive_offers();
                    }
                    return;
                };
                match self.book.finished(index, sum) {
                    Some(Recorded::Counted) => {
                        self.publish(driver, false);
                        if self.book.is_complete() {
                            self.finish(driver);
                        }
                    }
                    Some(Recorded::Duplicate { agrees }) => {
                        // A chunk that reports twice counts once.
                        self.duplicates += 1;
                        if !agrees {
                            warn!(
                                chunk = index,
                                "a repeated chunk gave a different result; keeping the first"
                            );
                        }
                    }
                    None => {
                        warn!(task = %status.task_id, "result for a chunk this job does not have")
                    }
                }
            }
            // Only the current attempt's loss matters; a stale one was already replaced.
            state if state.is_terminal() && self.book.lost(index, attempt) => {
                info!(chunk = index, %state, reason = ?status.reason, message = %status.message, "chunk lost; launching it again");
                self.relaunches += 1;
                let _ = driver.revive_offers();
            }
            _ => {}
        }
    }
}

/// Runs a pi job to completion on the cluster `config` points at. `progress` receives a
/// snapshot after every finished chunk (for a progress bar).
pub async fn run_pi(
    config: SchedulerConfig,
    job: PiJob,
    progress: watch::Sender<JobProgress>,
) -> Result<PiResult, SdkError> {
    let scheduler = PiScheduler::new(job, progress);
    let done = bramble_sdk::run_scheduler(config, scheduler).await?;
    done.result.ok_or_else(|| {
        SdkError::InvalidCall("the pi framework stopped before every chunk finished".into())
    })
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
    }
}

#[cfg(test)]
mod tests {
    use super::parse_task_id;

    #[test]
    fn task_ids_name_chunk_and_attempt() {
        assert_eq!(parse_task_id("pi-12-3"), Some((12, 3)));
        assert_eq!(parse_task_id("pi-x-3"), None);
        assert_eq!(parse_task_id("hello"), None);
    }
}
