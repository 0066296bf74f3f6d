//! `bramble factorial N…`: the Mesos tutorial's factorial framework. One task per number (in
//! input order, duplicates included), run by a custom executor (`bramble executor factorial`,
//! one per agent, like pi's); exact big integers; each result travels back as the decimal
//! string in the task's FINISHED update — the reliable, checkpointed path.
//!
//! Results are kept per input position, so they come out in the order given whatever order
//! tasks finish in, and a task that is lost or fails runs again (a bounded number of times:
//! a number that fails every time is a bug to report, not to retry forever).
//!
//! Inputs are capped at [`MAX_FACTORIAL_INPUT`] because the result must fit in one status
//! update, and every frame on Bramble's wire is at most 1 MiB
//! (`bramble_proto::codec::MAX_FRAME_BYTES`): 100 000! has 456 574 digits, under half of
//! that, and takes well under a second on a Pi 4. Past about 205 000 the digits alone would
//! not fit.

use crate::attempt_id;
use crate::compute_executor::{Computation, ComputeExecutor};
use crate::offers;
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo};
use bramble_sdk::{
    async_trait, JobProgress, Offer, Resources, Scheduler, SchedulerConfig, SchedulerDriver,
    SdkError, TaskId, TaskState, TaskStatus,
};
use num_bigint::BigUint;
use std::collections::{HashSet, VecDeque};
use std::time::Instant;
use tracing::{info, warn};

/// The largest n accepted (see the module docs for why).
pub const MAX_FACTORIAL_INPUT: u64 = 100_000;
/// How many times one number is tried before the job gives up.
pub const MAX_ATTEMPTS: u32 = 5;
const EXECUTOR_ID: &str = "factorial-executor";

/// Why a factorial job did not produce its results.
#[derive(Debug, thiserror::Error)]
pub enum FactorialError {
    /// The input was refused before anything was launched.
    #[error("{0}")]
    Input(String),
    #[error(
        "computing {n}! (number {position} of the list) failed {attempts} times; last: {last}"
    )]
    TaskFailed {
        n: u64,
        position: usize,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("the factorial framework stopped before every number was computed")]
    Incomplete,
}

/// The results, in the order the numbers were given, and how the job went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FactorialReport {
    /// `(n, n!)`, n! in decimal.
    pub results: Vec<(u64, String)>,
    pub relaunches: u64,
    pub agents_used: usize,
    pub wall_s: f64,
}

/// n!, exactly. A product tree keeps the multiplications balanced, so the big ones use
/// num-bigint's sub-quadratic algorithms instead of n small-by-huge steps.
pub fn factorial(n: u64) -> BigUint {
    product(1, n)
}

/// lo · (lo+1) · … · hi (1 when empty).
fn product(lo: u64, hi: u64) -> BigUint {
    if lo > hi {
        return BigUint::from(1u32);
    }
    if hi - lo < 16 {
        return (lo..=hi).fold(BigUint::from(1u32), |acc, k| acc * k);
    }
    let mid = lo + (hi - lo) / 2;
    product(lo, mid) * product(mid + 1, hi)
}

/// Decimal digits of n!, estimated with Stirling's formula (for messages only).
fn approx_digits(n: u64) -> f64 {
    if n < 2 {
        return 1.0;
    }
    let n = n as f64;
    (n * (n / std::f64::consts::E).log10() + 0.5 * (2.0 * std::f64::consts::PI * n).log10()).floor()
        + 1.0
}

/// Refuses inputs the job cannot serve, before anything is launched.
pub fn check_inputs(numbers: &[u64]) -> Result<(), FactorialError> {
    if numbers.is_empty() {
        return Err(FactorialError::Input(
            "no numbers given (example: bramble factorial 5 7 10 70 30)".into(),
        ));
    }
    if let Some(&n) = numbers.iter().find(|&&n| n > MAX_FACTORIAL_INPUT) {
        return Err(FactorialError::Input(format!(
            "{n}! is too large: the limit is {MAX_FACTORIAL_INPUT}, because a result travels \
             in one status update and frames are at most 1 MiB ({n}! has about {:.0} digits)",
            approx_digits(n)
        )));
    }
    Ok(())
}

/// A task's data: n in decimal ASCII, as in the tutorial.
fn parse_number(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.parse().ok()
}

/// A result is a non-empty run of decimal digits.
fn parse_result(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.to_string())
}

// ---------------------------------------------------------------------------------------------
// The executor

/// `bramble executor factorial`: computes each task's n! on tokio's blocking pool and reports
/// it in the FINISHED update. Long-lived: one per agent serves all the job's tasks there.
pub type FactorialExecutor = ComputeExecutor<FactorialOf>;

/// One task's work: n!, n from the task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactorialOf(pub u64);

impl Computation for FactorialOf {
    /// n! in decimal.
    type Output = String;

    fn decode(data: &[u8]) -> Result<Self, String> {
        match parse_number(data) {
            Some(n) if n <= MAX_FACTORIAL_INPUT => Ok(FactorialOf(n)),
            _ => Err(format!(
                "task data {:?} is not a number up to {MAX_FACTORIAL_INPUT}",
                String::from_utf8_lossy(data)
            )),
        }
    }

    fn compute(&self) -> String {
        factorial(self.0).to_str_radix(10)
    }

    fn finished(&self, task: &TaskId, digits: String, secs: f64) -> (Vec<u8>, String) {
        let n = self.0;
        info!(task = %task, n, digits = digits.len(), secs, "factorial done");
        let message = format!("{n}! has {} digits ({secs:.3} s)", digits.len());
        (digits.into_bytes(), message)
    }

    fn failed(&self, error: &str) -> String {
        format!("computing {}! failed: {error}", self.0)
    }

    const ABANDONED: &'static str = "factorial abandoned";
}

// ---------------------------------------------------------------------------------------------
// The scheduler

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Pending,
    Running,
    Done(String),
}

struct FactorialScheduler {
    numbers: Vec<u64>,
    executor: ExecutorInfo,
    task_resources: Resources,
    slots: Vec<Slot>,
    /// Current attempt per position: updates of older attempts are stale.
    attempt: Vec<u32>,
    pending: VecDeque<usize>,
    done: usize,
    relaunches: u64,
    agents: HashSet<String>,
    failure: Option<FactorialError>,
    started: Instant,
}

/// Task ids are `factorial-<position>-<attempt>`.
const JOB: &str = "factorial";

fn task_id(position: usize, attempt: u32) -> TaskId {
    attempt_id::task_id(JOB, position, attempt)
}

fn parse_task_id(id: &str) -> Option<(usize, u32)> {
    attempt_id::parse(JOB, id)
}

impl FactorialScheduler {
    fn new(numbers: Vec<u64>, executor: CommandInfo) -> Self {
        let n = numbers.len();
        Self {
            numbers,
            executor: ExecutorInfo {
                executor_id: EXECUTOR_ID.into(),
                name: "factorial executor".into(),
                command: executor,
                resources: Resources::new(0.0, 32),
            },
            // Small: most factorials take microseconds; 100 000! a few MiB and under a second.
            task_resources: Resources::new(0.25, 16),
            slots: vec![Slot::Pending; n],
            attempt: vec![0; n],
            pending: (0..n).collect(),
            done: 0,
            relaunches: 0,
            agents: HashSet::new(),
            failure: None,
            started: Instant::now(),
        }
    }

    fn progress(&self) -> JobProgress {
        let elapsed = self.started.elapsed().as_secs_f64();
        let total = self.numbers.len() as u64;
        JobProgress {
            waiting_for: None,
            job: "factorial".into(),
            done: self.done as u64,
            total,
            unit: "numbers".into(),
            rate_per_s: if elapsed > 0.0 {
                self.done as f64 / elapsed
            } else {
                0.0
            },
            tasks_done: self.done as u64,
            tasks_total: total,
            estimate: None,
            correct_digits: None,
            elapsed_s: elapsed,
            finished: self.done == self.numbers.len(),
        }
    }

    fn requeue(&mut self, position: usize, driver: &SchedulerDriver) {
        self.slots[position] = Slot::Pending;
        if !self.pending.contains(&position) {
            self.pending.push_back(position);
        }
        let _ = driver.revive_offers();
    }

    /// The current attempt at `position` did not produce a result.
    fn attempt_failed(&mut self, position: usize, status: &TaskStatus, driver: &SchedulerDriver) {
        let attempts = self.attempt[position];
        let last = format!(
            "{} {}{}",
            status.state,
            status
                .reason
                .map(|r| format!("({r:?}) "))
                .unwrap_or_default(),
            status.message
        );
        if attempts >= MAX_ATTEMPTS {
            let n = self.numbers[position];
            warn!(n, attempts, "giving up: {last}");
            self.failure = Some(FactorialError::TaskFailed {
                n,
                position: position + 1,
                attempts,
                last,
            });
            driver.stop(false);
            return;
        }
        info!(
            position,
            n = self.numbers[position],
            "{last}; launching it again"
        );
        self.relaunches += 1;
        self.requeue(position, driver);
    }

    fn report(&self) -> Option<FactorialReport> {
        let results = self
            .numbers
            .iter()
            .zip(&self.slots)
            .map(|(&n, slot)| match slot {
                Slot::Done(value) => Some((n, value.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FactorialReport {
            results,
            relaunches: self.relaunches,
            agents_used: self.agents.len(),
            wall_s: self.started.elapsed().as_secs_f64(),
        })
    }
}

#[async_trait]
impl Scheduler for FactorialScheduler {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offers::room_for_tasks(&offer, &self.executor);
            let mut tasks = Vec::new();
            while let Some(rest) = left.checked_sub(&self.task_resources) {
                let Some(position) = self.pending.pop_front() else {
                    break;
                };
                left = rest;
                self.attempt[position] += 1;
                self.slots[position] = Slot::Running;
                let n = self.numbers[position];
                tasks.push(TaskInfo {
                    task_id: task_id(position, self.attempt[position]),
                    name: format!("{n}!"),
                    agent_id: offer.agent_id.clone(),
                    resources: self.task_resources.clone(),
                    command: None,
                    executor: Some(self.executor.clone()),
                    data: n.to_string().into_bytes(),
                    mesos: None,
                    image: None,
                    artifacts: Vec::new(),
                });
            }
            if tasks.is_empty() {
                // Nothing to run here now; relaunches revive offers.
                offers::decline(driver, offer.id, 5.0);
                continue;
            }
            let launched: Vec<usize> = tasks
                .iter()
                .filter_map(|t| parse_task_id(t.task_id.as_str()).map(|(p, _)| p))
                .collect();
            self.agents.insert(offer.hostname.clone());
            if let Err(e) = offers::launch(driver, offer.id, tasks) {
                warn!("launching factorial tasks failed: {e}; they will be retried");
                for position in launched.into_iter().rev() {
                    self.slots[position] = Slot::Pending;
                    self.pending.push_front(position);
                }
            }
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let Some((position, attempt)) = parse_task_id(status.task_id.as_str()) else {
            warn!(task = %status.task_id, "update for a task that is not a factorial");
            return;
        };
        if position >= self.slots.len() || self.failure.is_some() {
            return;
        }
        let current = attempt == self.attempt[position];
        match status.state {
            TaskState::Finished => {
                if matches!(self.slots[position], Slot::Done(_)) {
                    return; // An earlier attempt's duplicate: counted once.
                }
                let Some(value) = parse_result(&status.data) else {
                    warn!(task = %status.task_id, "FINISHED without a decimal result");
                    if current {
                        self.attempt_failed(position, status, driver);
                    }
                    return;
                };
                // Any attempt's result is right: n! does not depend on where it ran.
                self.slots[position] = Slot::Done(value);
                self.pending.retain(|&p| p != position);
                self.done += 1;
                let _ = driver.publish_progress(self.progress());
                if self.done == self.slots.len() {
                    info!(
                        numbers = self.done,
                        relaunches = self.relaunches,
                        "factorial job complete"
                    );
                    driver.stop(false);
                }
            }
            // Only the current attempt's end matters; a stale one was already replaced.
            state
                if state.is_terminal()
                    && current
                    && !matches!(self.slots[position], Slot::Done(_)) =>
            {
                self.attempt_failed(position, status, driver);
            }
            _ => {}
        }
    }
}

/// Computes n! for every number on the cluster `config` points at; `executor` is how agents
/// start `bramble executor factorial`. Results come back in input order.
pub async fn run_factorial(
    config: SchedulerConfig,
    numbers: Vec<u64>,
    executor: CommandInfo,
) -> Result<FactorialReport, FactorialError> {
    check_inputs(&numbers)?;
    let finished =
        bramble_sdk::run_scheduler(config, FactorialScheduler::new(numbers, executor)).await?;
    if let Some(failure) = finished.failure {
        return Err(failure);
    }
    finished.report().ok_or(FactorialError::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_factorials_are_exact() {
        let expected = [1u64, 1, 2, 6, 24, 120, 720, 5040, 40320, 362880, 3628800];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(factorial(n as u64), BigUint::from(*want), "{n}!");
        }
        assert_eq!(
            factorial(30).to_string(),
            "265252859812191058636308480000000"
        );
        // Product tree and plain loop agree past the tree's leaf size.
        let plain = (1..=200u64).fold(BigUint::from(1u32), |acc, k| acc * k);
        assert_eq!(factorial(200), plain);
    }

    #[test]
    fn the_largest_input_fits_in_one_frame() {
        let digits = factorial(MAX_FACTORIAL_INPUT).to_str_radix(10);
        assert_eq!(digits.len(), 456_574);
        assert!(digits.len() < bramble_proto::codec::MAX_FRAME_BYTES / 2);
        assert_eq!(approx_digits(MAX_FACTORIAL_INPUT), 456_574.0);
    }

    #[test]
    fn absurd_inputs_are_refused_before_launching() {
        assert!(check_inputs(&[5, 7, 10, 70, 30, 5]).is_ok());
        assert!(check_inputs(&[MAX_FACTORIAL_INPUT]).is_ok());
        let err = check_inputs(&[5, MAX_FACTORIAL_INPUT + 1]).unwrap_err();
        assert!(err.to_string().contains("limit is 100000"), "{err}");
        assert!(check_inputs(&[]).is_err());
    }

    #[test]
    fn task_data_and_results_are_checked() {
        assert_eq!(parse_number(b"70"), Some(70));
        assert_eq!(parse_number(b"-1"), None);
        assert_eq!(parse_result(b"120"), Some("120".into()));
        assert_eq!(parse_result(b""), None);
        assert_eq!(parse_result(b"12a"), None);
        assert_eq!(parse_task_id(task_id(4, 2).as_str()), Some((4, 2)));
        assert_eq!(parse_task_id("pi-1-1"), None);
    }

    #[test]
    fn results_come_out_in_input_order_with_duplicates() {
        let mut s = FactorialScheduler::new(vec![5, 3, 5], CommandInfo::shell("true"));
        assert_eq!(s.report(), None);
        s.slots = vec![
            Slot::Done("120".into()),
            Slot::Done("6".into()),
            Slot::Done("120".into()),
        ];
        let report = s.report().expect("complete");
        assert_eq!(
            report.results,
            vec![(5, "120".into()), (3, "6".into()), (5, "120".into())]
        );
    }
}

/// The factorial scheduler driven by the SDK's test kit: no master, every call checked.
#[cfg(test)]
mod kit_tests {
    use super::*;
    use bramble_proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update, SchedulerTest};
    use bramble_sdk::{Filters, OfferId, TaskReason};

    fn scheduler(numbers: &[u64]) -> SchedulerTest<FactorialScheduler> {
        SchedulerTest::new(FactorialScheduler::new(
            numbers.to_vec(),
            CommandInfo::shell("bramble executor factorial"),
        ))
    }

    /// What the executor answers for `task`: FINISHED with n! in decimal.
    fn finished(task: &TaskInfo) -> TaskStatus {
        let n = parse_number(&task.data).expect("a number");
        let mut s = update(
            task.task_id.as_str(),
            task.agent_id.as_str(),
            TaskState::Finished,
        );
        s.data = factorial(n).to_str_radix(10).into_bytes();
        s
    }

    fn ended(task: &TaskInfo, state: TaskState) -> TaskStatus {
        update(task.task_id.as_str(), task.agent_id.as_str(), state)
    }

    fn revives(t: &mut SchedulerTest<FactorialScheduler>) -> usize {
        t.count(|c| matches!(c, SchedulerCall::Revive))
    }

    #[tokio::test]
    async fn each_number_is_a_task_for_the_custom_executor_and_spare_offers_are_declined() {
        let mut t = scheduler(&[5, 3, 5]);
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let calls = t.take_calls();
        let [SchedulerCall::Accept {
            offer_ids,
            tasks,
            filters,
        }] = calls.as_slice()
        else {
            panic!("one accept expected: {calls:?}");
        };
        assert_eq!(offer_ids, &[OfferId::from("o1")]);
        assert_eq!(
            filters.refuse_seconds, 0.0,
            "what is left comes straight back"
        );
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                task_id(0, 1).as_str(),
                task_id(1, 1).as_str(),
                task_id(2, 1).as_str()
            ]
        );
        let data: Vec<&[u8]> = tasks.iter().map(|t| t.data.as_slice()).collect();
        assert_eq!(data, [b"5".as_slice(), b"3", b"5"]);
        for task in tasks {
            let executor = task
                .executor
                .as_ref()
                .expect("run by the factorial executor");
            assert_eq!(executor.executor_id.as_str(), EXECUTOR_ID);
            assert!(task.command.is_none());
        }
        // Everything is running: the next offer goes back for a while.
        t.offers(vec![offer("o2", "a2", Resources::new(1.0, 256))])
            .await;
        assert_eq!(
            t.declines(),
            vec![(
                "o2".into(),
                Filters {
                    refuse_seconds: 5.0
                }
            )]
        );
    }

    #[tokio::test]
    async fn the_executor_is_paid_for_only_where_it_is_not_running_yet() {
        let mut t = scheduler(&[4]);
        t.register("fw-1").await;
        // 16 MiB is room for one task but not for the executor's 32 MiB as well.
        t.offers(vec![offer("o1", "a1", Resources::new(0.5, 16))])
            .await;
        assert!(t.launched().is_empty());
        assert_eq!(t.declined(), vec![OfferId::from("o1")]);
        let mut running_there = offer("o2", "a1", Resources::new(0.5, 16));
        running_there.executor_ids.push(EXECUTOR_ID.into());
        t.offers(vec![running_there]).await;
        assert_eq!(t.launched().len(), 1);
    }

    #[tokio::test]
    async fn results_come_back_in_input_order_whatever_order_tasks_finish_in() {
        let mut t = scheduler(&[5, 3, 5]);
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let tasks = t.launched();
        for i in [2, 0, 1] {
            assert_eq!(t.stopped(), None, "not done before the last number");
            t.update(finished(&tasks[i])).await;
        }
        assert_eq!(t.stopped(), Some(false), "a finished job tears itself down");
        assert_eq!(t.acknowledged().len(), 3);
        let progress: Vec<u64> = t
            .calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::PublishProgress(p) => Some(p.done),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [1, 2, 3]);
        let report = t.into_scheduler().report().expect("complete");
        assert_eq!(
            report.results,
            vec![(5, "120".into()), (3, "6".into()), (5, "120".into())]
        );
        assert_eq!(report.relaunches, 0);
    }

    #[tokio::test]
    async fn a_lost_task_runs_again_and_its_first_attempt_is_then_ignored() {
        let mut t = scheduler(&[7]);
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let first = t.launched().remove(0);
        let mut lost = ended(&first, TaskState::Lost);
        lost.reason = Some(TaskReason::AgentRemoved);
        t.update(lost).await;
        assert_eq!(revives(&mut t), 1, "{:?}", t.calls());
        t.take_calls();
        t.offers(vec![offer("o2", "a2", Resources::new(1.0, 256))])
            .await;
        let second = t.launched().remove(0);
        assert_eq!(second.task_id, task_id(0, 2));
        assert_eq!(second.agent_id.as_str(), "a2");
        // The first attempt's late FAILED neither relaunches nor fails the job.
        t.update(ended(&first, TaskState::Failed)).await;
        assert_eq!(revives(&mut t), 0);
        assert_eq!(t.stopped(), None);
        t.update(finished(&second)).await;
        assert_eq!(t.stopped(), Some(false));
        let report = t.into_scheduler().report().expect("complete");
        assert_eq!(report.results, vec![(7, "5040".into())]);
        assert_eq!(report.relaunches, 1);
    }

    #[tokio::test]
    async fn a_finished_update_without_a_result_is_a_failed_attempt() {
        let mut t = scheduler(&[3]);
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let first = t.launched().remove(0);
        let mut garbage = ended(&first, TaskState::Finished);
        garbage.data = b"six".to_vec();
        t.update(garbage).await;
        assert_eq!(t.stopped(), None);
        assert_eq!(revives(&mut t), 1);
        t.offers(vec![offer("o2", "a1", Resources::new(1.0, 256))])
            .await;
        assert_eq!(
            t.launched().last().map(|t| t.task_id.clone()),
            Some(task_id(0, 2))
        );
    }

    #[tokio::test]
    async fn a_number_that_fails_every_time_gives_up_after_the_last_attempt() {
        let mut t = scheduler(&[9]);
        t.register("fw-1").await;
        for attempt in 1..=MAX_ATTEMPTS {
            t.offers(vec![offer(
                &format!("o{attempt}"),
                "a1",
                Resources::new(0.25, 256),
            )])
            .await;
            let task = t.launched().pop().expect("launched");
            assert_eq!(task.task_id, task_id(0, attempt));
            assert_eq!(t.stopped(), None);
            t.update(ended(&task, TaskState::Failed)).await;
        }
        assert_eq!(t.stopped(), Some(false));
        match t.into_scheduler().failure {
            Some(FactorialError::TaskFailed {
                n,
                position,
                attempts,
                ..
            }) => assert_eq!((n, position, attempts), (9, 1, MAX_ATTEMPTS)),
            other => panic!("TaskFailed expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn tasks_refused_while_disconnected_are_launched_after_reregistering() {
        let mut t = scheduler(&[5, 6]);
        t.register("fw-1").await;
        t.disconnect().await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        assert!(t.calls().is_empty(), "a disconnected driver sends nothing");
        t.register("fw-1").await;
        t.offers(vec![offer("o2", "a1", Resources::new(1.0, 256))])
            .await;
        let data: Vec<Vec<u8>> = t.launched().into_iter().map(|t| t.data).collect();
        assert_eq!(
            data,
            [b"5".to_vec(), b"6".to_vec()],
            "both numbers, in order"
        );
    }
}
