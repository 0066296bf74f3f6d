//! The pi framework's scheduler: cuts the series into chunks, launches them on offers, counts
//! each chunk once, relaunches what was lost, and publishes progress as it goes.
//!
//! Results are collected per chunk index and combined in chunk order at the end, so the final
//! estimate is bit-identical whatever the number of agents, the order tasks finish in, and
//! however many were lost and run again.
//!
//! Restarts: with a [`Journal`] the scheduler survives being killed mid-job. It records its
//! framework id, every launch (before sending it) and every counted result (before
//! acknowledging the update that carried it — acknowledgements are explicit for exactly this
//! reason); a new process opens the same journal, fails over to the same framework id,
//! reconciles the attempts that were in flight and goes on. A result the agents resend after
//! the restart finds its chunk already done and is ignored; an attempt the master no longer
//! knows comes back LOST and is launched again.

mod job;
#[cfg(test)]
mod kit_tests;

pub use job::{initial_progress, PiError, PiJob, PiResult};

use super::book::{ChunkBook, Recorded};
use super::journal::{Journal, JournalError, Recovered};
use super::kernel::{correct_digits, Sum};
use super::placement::ChunkPlaces;
use super::PiChunk;
use crate::{attempt_id, offers};
use bramble_sdk::{
    async_trait, ExecutorInfo, Filters, FrameworkId, JobProgress, Offer, Scheduler,
    SchedulerConfig, SchedulerDriver, SdkError, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// The durable side of a job: the journal and what it held when opened.
pub struct Durable {
    pub journal: Journal,
    pub recovered: Option<Recovered>,
}

const EXECUTOR_ID: &str = "pi-executor";
/// Progress is published to the master at most this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

struct PiScheduler {
    job: PiJob,
    book: ChunkBook,
    places: ChunkPlaces,
    started: Instant,
    /// Terms already done when this run started (restored from the journal).
    terms_at_start: u64,
    last_publish: Option<Instant>,
    progress: watch::Sender<JobProgress>,
    result: Option<PiResult>,
    /// Taken out while a blocking write runs; `journaled` says whether there is one at all.
    journal: Option<Journal>,
    journaled: bool,
    /// The framework id the journal holds.
    journal_framework: Option<FrameworkId>,
    resumed: bool,
    failure: Option<JournalError>,
}

impl PiScheduler {
    fn new(job: PiJob, progress: watch::Sender<JobProgress>, durable: Option<Durable>) -> Self {
        let mut book = ChunkBook::new(job.terms, job.tasks);
        let mut journal_framework = None;
        let mut resumed = false;
        let journaled = durable.is_some();
        let journal = durable.map(|d| {
            if let Some(r) = d.recovered {
                resumed = true;
                journal_framework = r.framework_id;
                for (chunk, attempt) in r.launches {
                    book.restore_launch(chunk, attempt);
                }
                for (chunk, sum) in r.results {
                    book.restore_result(chunk, sum);
                }
            }
            d.journal
        });
        Self {
            terms_at_start: book.terms_done(),
            book,
            job,
            places: ChunkPlaces::default(),
            started: Instant::now(),
            last_publish: None,
            progress,
            result: None,
            journal,
            journaled,
            journal_framework,
            resumed,
            failure: None,
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

    fn rate(&self, elapsed: f64) -> f64 {
        if elapsed > 0.0 {
            (self.book.terms_done() - self.terms_at_start) as f64 / elapsed
        } else {
            0.0
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
            rate_per_s: self.rate(elapsed),
            tasks_done: self.book.done() as u64,
            tasks_total: self.book.len() as u64,
            estimate,
            correct_digits: estimate.map(correct_digits),
            elapsed_s: elapsed,
            finished,
            waiting_for: (!finished).then(|| self.waiting_for()),
        }
    }

    /// What the job waits for, in words: the latest relaunch in flight, else offers for the
    /// pending chunks, else the chunks running.
    fn waiting_for(&self) -> String {
        let relaunch = self
            .book
            .running()
            .into_iter()
            .filter(|&(_, attempt)| attempt > 1)
            .max_by_key(|&(index, attempt)| (attempt, index));
        if let Some((index, attempt)) = relaunch {
            let on = self
                .places
                .running_on(index)
                .map(|a| format!(" on agent {a}"))
                .unwrap_or_default();
            return format!("chunk {index} attempt {attempt}{on}");
        }
        let pending = self.book.pending_count();
        if pending > 0 {
            let s = if pending == 1 { "" } else { "s" };
            return format!("an offer for {pending} chunk{s}");
        }
        let running = self.book.running().len();
        let agents = self.places.agents_running();
        let s = if running == 1 { "" } else { "s" };
        let a = if agents == 1 { "" } else { "s" };
        format!("{running} chunk{s} running on {agents} agent{a}")
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

    /// Runs `write` on the journal off the event loop (it fsyncs) and waits for it: whatever
    /// the caller does next happens only once the record is durable. A no-op without a journal.
    async fn journal_write<F>(&mut self, write: F) -> Result<(), JournalError>
    where
        F: FnOnce(&mut Journal) -> Result<(), JournalError> + Send + 'static,
    {
        if !self.journaled {
            return Ok(());
        }
        let Some(mut journal) = self.journal.take() else {
            return Err(JournalError::Poisoned {
                path: "the pi journal".into(),
            });
        };
        let path = journal.path().to_path_buf();
        match tokio::task::spawn_blocking(move || {
            let result = write(&mut journal);
            (journal, result)
        })
        .await
        {
            Ok((journal, result)) => {
                self.journal = Some(journal);
                result
            }
            Err(e) => {
                error!("journal write did not complete: {e}");
                Err(JournalError::Poisoned { path })
            }
        }
    }

    /// The journal cannot be trusted any more: stop without a teardown, so the tasks keep
    /// running and a rerun (once the disk is fixed) resumes from what is durable.
    fn fail(&mut self, driver: &SchedulerDriver, e: JournalError) {
        error!("{e}; stopping (failover) without acknowledging anything more");
        self.failure = Some(e);
        driver.stop(true);
    }

    async fn finish(&mut self, driver: &SchedulerDriver) {
        let wall = self.started.elapsed().as_secs_f64();
        let pi = self.book.estimate().unwrap_or(0.0);
        let counts = self.book.counts();
        self.result = Some(PiResult {
            pi,
            pi_bits: format!("{:016x}", pi.to_bits()),
            abs_error: (pi - std::f64::consts::PI).abs(),
            correct_digits: correct_digits(pi),
            terms: self.job.terms,
            tasks: self.book.len() as u64,
            wall_s: wall,
            terms_per_s: self.rate(wall),
            relaunches: counts.relaunched,
            duplicate_results: counts.duplicates_ignored,
            agents_used: self.places.agents_used(),
            chunks_counted: counts.restored + counts.counted,
            chunks: counts,
            framework_id: driver.framework_id().map(|f| f.to_string()),
            resumed: self.resumed,
        });
        info!(
            pi,
            wall_s = wall,
            relaunches = counts.relaunched,
            restored = counts.restored,
            counted = counts.counted,
            duplicates_ignored = counts.duplicates_ignored,
            "pi job complete"
        );
        // The answer stands even if this record is lost: a rerun finds every result in the
        // journal and finishes at once.
        if let Err(e) = self.journal_write(move |j| j.record_finished(pi)).await {
            warn!("could not mark the journal finished: {e}");
        }
        self.publish(driver, true);
        driver.stop(false);
    }

    async fn launch_on(&mut self, driver: &SchedulerDriver, offer: Offer) {
        if !self.book.has_pending() {
            // Nothing to run now; relaunches revive offers.
            offers::decline(driver, offer.id, 5.0);
            return;
        }
        let now = Instant::now();
        if self.places.blocklist.is_blocked(&offer.agent_id, now) {
            let refuse = self.places.blocklist.blocked_for(&offer.agent_id, now);
            debug!(agent = %offer.agent_id, "declining an offer from a blocked agent");
            offers::decline(driver, offer.id, refuse.as_secs_f64().max(1.0));
            return;
        }
        let executor = self.executor_info();
        let mut left = offers::room_for_tasks(&offer, &executor);
        let mut tasks = Vec::new();
        let mut launched = Vec::new();
        // Chunks that failed here last time wait for another agent.
        let avoid = self.places.avoided_on(&offer.agent_id, now);
        while let Some(rest) = left.checked_sub(&self.job.task_resources) {
            let Some((index, attempt, (begin, end))) =
                self.book.launch_next_where(|i| !avoid.contains(&i))
            else {
                break;
            };
            left = rest;
            let chunk = PiChunk {
                index: index as u32,
                begin,
                end,
            };
            launched.push((index, attempt));
            tasks.push(TaskInfo {
                task_id: task_id(index, attempt),
                name: format!("pi chunk {index}"),
                agent_id: offer.agent_id.clone(),
                resources: self.job.task_resources.clone(),
                command: None,
                executor: Some(executor.clone()),
                data: chunk.to_bytes(),
                mesos: None,
                image: None,
                artifacts: Vec::new(),
            });
        }
        if tasks.is_empty() {
            offers::decline(driver, offer.id, 1.0);
            return;
        }
        // Recorded before sent: after a restart every task id that may exist is known.
        let record = launched.clone();
        if let Err(e) = self
            .journal_write(move |j| j.record_launches(&record))
            .await
        {
            for (index, _) in launched {
                self.book.unlaunch(index);
            }
            self.fail(driver, e);
            return;
        }
        self.places.launched(&offer.agent_id, &launched);
        if let Err(e) = offers::launch(driver, offer.id, tasks) {
            warn!("launching pi chunks failed: {e}; they will be retried");
            for (index, _) in launched {
                self.book.unlaunch(index);
            }
        }
        self.publish(driver, false);
    }

    /// Handles one update. `false` when it must not be acknowledged (the journal failed).
    async fn update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) -> bool {
        let Some((index, attempt)) = parse_task_id(status.task_id.as_str()) else {
            warn!(task = %status.task_id, "update for a task that is not a pi chunk");
            return true;
        };
        let now = Instant::now();
        if self.places.blocklist.observe(status, now) {
            if let Some(agent) = &status.agent_id {
                warn!(%agent, for_s = self.places.blocklist.blocked_for(agent, now).as_secs(), "chunks keep failing there for the agent's reasons ({}); avoiding it for a while", status.message);
            }
        }
        match status.state {
            TaskState::Finished => {
                let Some(sum) = Sum::from_bytes(&status.data) else {
                    // Also what a reconciliation says of a finished, unacknowledged task: its
                    // result is still on the way from the agent, but running the chunk again
                    // bounds the wait; whichever result comes first counts.
                    warn!(task = %status.task_id, reason = ?status.reason, "FINISHED without a result; running the chunk again");
                    if self.book.lost(index, attempt) {
                        let _ = driver.revive_offers();
                    }
                    return true;
                };
                if self.book.would_count(index) {
                    if let Err(e) = self
                        .journal_write(move |j| j.record_result(index, sum))
                        .await
                    {
                        self.fail(driver, e);
                        return false;
                    }
                }
                self.places.finished(index);
                match self.book.finished(index, sum) {
                    // Completion is handled once this update is acknowledged.
                    Some(Recorded::Counted) => self.publish(driver, false),
                    Some(Recorded::Duplicate { agrees }) => {
                        // A chunk that reports twice counts once.
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
                info!(chunk = index, %state, reason = ?status.reason, message = %status.message, "chunk lost; launching it again, on another agent if there is one");
                self.places.lost(index, status.agent_id.as_ref());
                let _ = driver.revive_offers();
                self.publish(driver, true);
            }
            _ => {}
        }
        true
    }
}

/// Task ids are `pi-<chunk>-<attempt>`.
const JOB: &str = "pi";

fn task_id(index: usize, attempt: u32) -> TaskId {
    attempt_id::task_id(JOB, index, attempt)
}

fn parse_task_id(id: &str) -> Option<(usize, u32)> {
    attempt_id::parse(JOB, id)
}

#[async_trait]
impl Scheduler for PiScheduler {
    async fn registered(
        &mut self,
        driver: &SchedulerDriver,
        framework_id: &FrameworkId,
        reregistered: bool,
    ) {
        if self.failure.is_some() {
            return;
        }
        if self.journal_framework.as_ref() != Some(framework_id) {
            // Before any launch: a restart must fail over to the framework owning the tasks.
            let id = framework_id.clone();
            if let Err(e) = self.journal_write(move |j| j.record_framework(&id)).await {
                self.fail(driver, e);
                return;
            }
            self.journal_framework = Some(framework_id.clone());
        }
        if self.book.is_complete() {
            // Every result was already durable (the previous run died before finishing up).
            self.finish(driver).await;
            return;
        }
        let running = self.book.running();
        if reregistered && !running.is_empty() {
            info!(
                in_flight = running.len(),
                "reconciling the chunks that were in flight"
            );
            let ids = running.iter().map(|&(i, a)| task_id(i, a)).collect();
            let _ = driver.reconcile_tasks(ids);
        }
        self.publish(driver, true);
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            if self.failure.is_some() || self.result.is_some() {
                let _ = driver.decline_offer(offer.id, Filters::default());
                continue;
            }
            self.launch_on(driver, offer).await;
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        if self.failure.is_some() {
            return;
        }
        let acknowledge = self.update(driver, status).await;
        // With a journal, acknowledgements are explicit and come only now, after the result
        // is durable; without one the driver acknowledges once this returns.
        if acknowledge && self.journaled {
            if let Err(e) = driver.acknowledge(status) {
                // The agent resends it; the chunk is already counted and will not count twice.
                warn!(task = %status.task_id, "could not acknowledge: {e}");
            }
        }
        // After the acknowledgement: once stopped, the driver takes no more calls.
        if self.book.is_complete() && self.result.is_none() && self.failure.is_none() {
            self.finish(driver).await;
        }
    }
}

/// Runs a pi job to completion on the cluster `config` points at. `progress` receives a
/// snapshot after every finished chunk (for a progress bar). Nothing is journaled: a restart
/// starts over.
pub async fn run_pi(
    config: SchedulerConfig,
    job: PiJob,
    progress: watch::Sender<JobProgress>,
) -> Result<PiResult, SdkError> {
    run_pi_durable(config, job, None, progress)
        .await
        .map_err(|e| match e {
            PiError::Sdk(e) => e,
            other => SdkError::InvalidCall(other.to_string()),
        })
}

/// Runs a pi job with a journal when `durable` is given: fails over to the journal's framework
/// id (overriding `config`'s), acknowledges updates explicitly once their results are
/// durable, and marks the journal finished at the end.
pub async fn run_pi_durable(
    mut config: SchedulerConfig,
    job: PiJob,
    durable: Option<Durable>,
    progress: watch::Sender<JobProgress>,
) -> Result<PiResult, PiError> {
    if let Some(d) = &durable {
        config.implicit_acknowledgements = false;
        if let Some(id) = d.recovered.as_ref().and_then(|r| r.framework_id.clone()) {
            config.framework.framework_id = Some(id);
        }
    }
    let scheduler = PiScheduler::new(job, progress, durable);
    let done = bramble_sdk::run_scheduler(config, scheduler).await?;
    if let Some(e) = done.failure {
        return Err(PiError::Journal(e));
    }
    done.result.ok_or(PiError::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::{parse_task_id, PiJob};
    use bramble_sdk::CommandInfo;

    #[test]
    fn task_ids_name_chunk_and_attempt() {
        assert_eq!(parse_task_id("pi-12-3"), Some((12, 3)));
        assert_eq!(parse_task_id("pi-x-3"), None);
        assert_eq!(parse_task_id("hello"), None);
    }

    #[test]
    fn a_job_is_named_by_its_terms_as_typed() {
        let name = |terms| PiJob::new(terms, 4, CommandInfo::shell("true")).name();
        assert_eq!(name(20_000_000_000), "pi 2e10");
        assert_eq!(name(25_000_000), "pi 25e6");
        assert_eq!(name(1000), "pi 1e3");
        assert_eq!(name(12_345), "pi 12345");
        assert_eq!(name(100), "pi 100");
        assert_eq!(name(0), "pi 0");
    }
}
