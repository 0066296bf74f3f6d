//! One long-running task, kept up until the caller says stop: the shape `hello` and `http`
//! share (Marathon's job, cut down to a single instance).
//!
//! The task is launched on the first offer that fits, and offers are suppressed while it
//! lives (a framework that wants nothing more should not hold the allocator's attention).
//! If its agent is lost it is launched again elsewhere, a bounded number of times; any other
//! end (FAILED, KILLED by an operator) ends the run and is reported. When the caller's `until`
//! resolves, the task is killed, its KILLED update awaited (bounded), and the framework torn
//! down — teardown also makes the master kill anything a racing launch left behind. A task
//! given a port (`http`) is a web server: once RUNNING its `http://host:port/` is published as
//! the framework's web UI, which the master's web UI and `bramble frameworks` show.
//!
//! The scheduler callbacks run on the driver's loop while `until` is awaited beside it, so
//! the two share a small `Shared` behind a mutex: whether we are stopping, which task is
//! current, and the caller's event reporter. Launch decisions are made holding that lock, so a
//! stop can never miss a task that was just launched. The stop itself (the kill, and the
//! teardown when no terminal update comes in time) is [`StopHandle::stop`], which needs only
//! a driver: the unit tests drive it through `bramble_sdk::testing` under a paused clock.

mod events;
#[cfg(test)]
pub(crate) mod kit;
#[cfg(test)]
mod kit_tests;
mod scheduler;
#[cfg(test)]
mod tests;

pub use events::{ServiceEvent, ServiceOutcome};
pub(crate) use scheduler::ServiceScheduler;

use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_sdk::{Offer, Resources, SchedulerConfig, SchedulerDriver, SdkError, TaskId};
use std::future::Future;
use std::time::Duration;

/// How many times a task whose agent was lost is launched again before giving up.
pub const MAX_RELAUNCHES: u32 = 3;
/// How long to wait for the terminal update after asking for a kill; then the framework is
/// torn down anyway (the master kills what is left).
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// Offers we have no use for come back after this long (offers are suppressed meanwhile).
const REFUSE_UNUSED_SECS: f64 = 60.0;
/// Offers too small for the task: a bigger agent may come, this one may free up.
const REFUSE_UNFIT_SECS: f64 = 5.0;

/// A task to launch, built from an offer, and the port it was given (if it needs one).
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub task: TaskInfo,
    pub port: Option<u16>,
}

/// The command task `name` (run by the agent's built-in command executor) with `resources`
/// on `offer`'s agent, or why the offer cannot hold it: `<host> is too small for <what>
/// (<shortfall>)`.
pub fn command_task(
    offer: &Offer,
    task_id: TaskId,
    name: &str,
    what: &str,
    resources: Resources,
    command: CommandInfo,
) -> Result<TaskInfo, String> {
    if let Some(short) = offer.resources.shortfall(&resources) {
        return Err(format!(
            "{} is too small for {what} ({short})",
            offer.hostname
        ));
    }
    Ok(TaskInfo {
        task_id,
        name: name.into(),
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(command),
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    })
}

/// Turns an offer into the task with the given id, or says why the offer does not fit.
pub type BuildTask = Box<dyn FnMut(&Offer, TaskId) -> Result<Launch, String> + Send>;

/// What the service runs: task ids are `<name>-<attempt>`.
pub struct ServiceSpec {
    pub name: String,
    pub build: BuildTask,
}

/// Runs `spec`'s task until `until` resolves (then kills it) or it ends by itself, reporting
/// each step to `report`. Returns once the framework is torn down.
pub async fn run_service(
    config: SchedulerConfig,
    spec: impl Into<ServiceSpec>,
    until: impl Future<Output = ()> + Send,
    report: impl FnMut(&ServiceEvent) + Send + 'static,
) -> Result<ServiceOutcome, SdkError> {
    let (scheduler, stop) = ServiceScheduler::new(spec.into(), report);
    let driver = SchedulerDriver::new(config);
    let run = driver.run(scheduler);
    tokio::pin!(run);
    tokio::pin!(until);
    let ended_by_itself = tokio::select! {
        result = &mut run => Some(result),
        () = &mut until => None,
    };
    let result = match ended_by_itself {
        Some(result) => result,
        None => {
            stop.stop(&driver);
            run.await
        }
    };
    stop.finished();
    let mut outcome = result?.outcome;
    if outcome.framework_id.is_none() {
        outcome.framework_id = driver.framework_id();
    }
    Ok(outcome)
}
