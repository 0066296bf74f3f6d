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

use crate::offers;
use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_sdk::{
    async_trait, AgentId, Filters, FrameworkId, Offer, Resources, Scheduler, SchedulerConfig,
    SchedulerDriver, SdkError, TaskId, TaskReason, TaskState, TaskStatus,
};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, info, warn};

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

/// What happened, as it happens: `main.rs` prints these, tests watch them.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceEvent {
    Registered {
        framework_id: FrameworkId,
    },
    /// No offer fits yet (reported when the reason changes, not for every offer).
    NoFit {
        reason: String,
    },
    Launched {
        task_id: TaskId,
        hostname: String,
        port: Option<u16>,
    },
    Running {
        framework_id: Option<FrameworkId>,
        task_id: TaskId,
        agent_id: AgentId,
        hostname: String,
        port: Option<u16>,
    },
    Relaunching {
        task_id: TaskId,
        state: TaskState,
        message: String,
    },
    Killing {
        task_id: TaskId,
    },
    Ended {
        task_id: TaskId,
        state: TaskState,
        message: String,
    },
}

impl fmt::Display for ServiceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceEvent::Registered { framework_id } => {
                write!(f, "framework {framework_id} registered; waiting for an offer")
            }
            ServiceEvent::NoFit { reason } => write!(f, "no offer fits yet: {reason}"),
            ServiceEvent::Launched {
                task_id, hostname, ..
            } => write!(f, "launching {task_id} on {hostname}"),
            ServiceEvent::Running {
                task_id,
                hostname,
                port: Some(port),
                ..
            } => write!(
                f,
                "{task_id} is RUNNING on {hostname}: serving http://{hostname}:{port}/ (Ctrl-C stops it)"
            ),
            ServiceEvent::Running {
                task_id, hostname, ..
            } => write!(
                f,
                "{task_id} is RUNNING on {hostname}; watch it with `bramble logs {task_id} --follow` (Ctrl-C stops it)"
            ),
            ServiceEvent::Relaunching {
                task_id,
                state,
                message,
            } => write!(f, "{task_id} ended {state} ({message}); launching it again"),
            ServiceEvent::Killing { task_id } => write!(f, "killing {task_id}"),
            ServiceEvent::Ended {
                task_id,
                state,
                message,
            } => {
                write!(f, "{task_id} ended {state}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// How the service ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceOutcome {
    pub framework_id: Option<FrameworkId>,
    /// The last task launched; `None` when no offer ever fitted.
    pub task_id: Option<TaskId>,
    pub agent_id: Option<AgentId>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    /// Whether the task was ever seen RUNNING.
    pub was_running: bool,
    /// The last task's terminal state; `None` if it never ended (or never started).
    pub final_state: Option<TaskState>,
    pub message: String,
    pub relaunches: u32,
}

impl ServiceOutcome {
    /// The service's address, for a task that was given a port.
    pub fn url(&self) -> Option<String> {
        Some(format!(
            "http://{}:{}/",
            self.hostname.as_deref()?,
            self.port?
        ))
    }
}

type Reporter = Box<dyn FnMut(&ServiceEvent) + Send>;

struct Shared {
    /// The caller asked to stop: launch nothing more.
    stopping: bool,
    /// The task to kill on stop.
    current: Option<TaskId>,
    report: Reporter,
    last_no_fit: Option<String>,
    /// Tears the framework down if the killed task never reports its end.
    watchdog: Option<tokio::task::AbortHandle>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Plain flags and a reporter: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct Placement {
    task_id: TaskId,
    agent_id: AgentId,
    hostname: String,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Waiting for an offer that fits.
    Waiting,
    /// Launched, not yet RUNNING.
    Launched(Placement),
    Running(Placement),
    Ended,
}

/// What to do with a task's terminal update; pure, so the policy is tested on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterEnd {
    Relaunch,
    Finish,
}

fn after_end(status: &TaskStatus, stopping: bool, relaunches: u32) -> AfterEnd {
    let transient = match status.state {
        TaskState::Lost => true,
        // The offer went away between our accept and the master's check.
        TaskState::Error => matches!(
            status.reason,
            Some(TaskReason::InvalidOffer | TaskReason::ResourcesNotInOffer)
        ),
        _ => false,
    };
    if !stopping && transient && relaunches < MAX_RELAUNCHES {
        AfterEnd::Relaunch
    } else {
        AfterEnd::Finish
    }
}

/// The scheduler behind [`run_service`]; crate-private, built with [`ServiceScheduler::new`]
/// (which the unit tests use too).
pub(crate) struct ServiceScheduler {
    spec: ServiceSpec,
    shared: Arc<Mutex<Shared>>,
    attempt: u32,
    phase: Phase,
    outcome: ServiceOutcome,
}

/// How the caller stops a running service: see [`StopHandle::stop`].
#[derive(Clone)]
pub(crate) struct StopHandle {
    shared: Arc<Mutex<Shared>>,
}

impl StopHandle {
    /// Stops the service run by `driver`: launch nothing more and kill the current task; the
    /// run then ends on the task's terminal update, or — when none comes within
    /// [`KILL_TIMEOUT`] — by tearing the framework down (the master kills what is left). With
    /// no task live the framework is torn down at once (which also kills a launch that raced
    /// the stop).
    pub(crate) fn stop(&self, driver: &SchedulerDriver) {
        let current = {
            let mut s = lock(&self.shared);
            s.stopping = true;
            s.current.clone()
        };
        let Some(task_id) = current else {
            driver.stop(false);
            return;
        };
        let event = ServiceEvent::Killing {
            task_id: task_id.clone(),
        };
        info!("{event}");
        (lock(&self.shared).report)(&event);
        if let Err(e) = driver.kill_task(task_id) {
            warn!("cannot ask for the kill ({e}); tearing the framework down instead");
            driver.stop(false);
            return;
        }
        let driver = driver.clone();
        let shared = self.shared.clone();
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep(KILL_TIMEOUT).await;
            // The terminal update clears `current` and stops the driver itself.
            if lock(&shared).current.is_some() {
                warn!("no terminal update within {KILL_TIMEOUT:?} of the kill; tearing the framework down (the master kills its tasks)");
                driver.stop(false);
            }
        });
        lock(&self.shared).watchdog = Some(watchdog.abort_handle());
    }

    /// The run is over: a pending kill timeout has nothing left to do.
    fn finished(&self) {
        if let Some(watchdog) = lock(&self.shared).watchdog.take() {
            watchdog.abort();
        }
    }
}

impl ServiceScheduler {
    /// A scheduler running `spec`, reporting each step to `report`, and the handle that
    /// stops it.
    pub(crate) fn new(
        spec: ServiceSpec,
        report: impl FnMut(&ServiceEvent) + Send + 'static,
    ) -> (Self, StopHandle) {
        let shared = Arc::new(Mutex::new(Shared {
            stopping: false,
            current: None,
            report: Box::new(report),
            last_no_fit: None,
            watchdog: None,
        }));
        let scheduler = ServiceScheduler {
            spec,
            shared: shared.clone(),
            attempt: 0,
            phase: Phase::Waiting,
            outcome: ServiceOutcome::default(),
        };
        (scheduler, StopHandle { shared })
    }

    fn emit(&self, event: ServiceEvent) {
        info!(service = %self.spec.name, "{event}");
        (lock(&self.shared).report)(&event);
    }

    fn placement(&self) -> Option<&Placement> {
        match &self.phase {
            Phase::Launched(p) | Phase::Running(p) => Some(p),
            Phase::Waiting | Phase::Ended => None,
        }
    }

    /// Tries to launch on `offer`; declines it otherwise.
    fn offer(&mut self, driver: &SchedulerDriver, offer: Offer) {
        let mut shared = lock(&self.shared);
        if shared.stopping || !matches!(self.phase, Phase::Waiting) {
            drop(shared);
            offers::decline(driver, offer.id, REFUSE_UNUSED_SECS);
            return;
        }
        let task_id = TaskId::from(format!("{}-{}", self.spec.name, self.attempt + 1));
        let launch = match (self.spec.build)(&offer, task_id.clone()) {
            Ok(launch) => launch,
            Err(reason) => {
                offers::decline(driver, offer.id, REFUSE_UNFIT_SECS);
                if shared.last_no_fit.as_ref() != Some(&reason) {
                    shared.last_no_fit = Some(reason.clone());
                    drop(shared);
                    self.emit(ServiceEvent::NoFit { reason });
                }
                return;
            }
        };
        let placement = Placement {
            task_id: task_id.clone(),
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            port: launch.port,
        };
        if let Err(e) = driver.launch_tasks(
            vec![offer.id],
            vec![launch.task],
            Filters {
                refuse_seconds: REFUSE_UNUSED_SECS,
            },
        ) {
            // Offers die with the connection; the next one after re-registration will do.
            warn!(task = %task_id, "launching failed: {e}; waiting for another offer");
            return;
        }
        self.attempt += 1;
        shared.current = Some(task_id.clone());
        drop(shared);
        self.outcome.task_id = Some(task_id.clone());
        self.outcome.agent_id = Some(placement.agent_id.clone());
        self.outcome.hostname = Some(placement.hostname.clone());
        self.outcome.port = placement.port;
        self.phase = Phase::Launched(placement.clone());
        // One task is all we want: stop the offers until a relaunch revives them.
        let _ = driver.suppress_offers();
        self.emit(ServiceEvent::Launched {
            task_id,
            hostname: placement.hostname,
            port: placement.port,
        });
    }
}

#[async_trait]
impl Scheduler for ServiceScheduler {
    async fn registered(
        &mut self,
        driver: &SchedulerDriver,
        framework_id: &FrameworkId,
        reregistered: bool,
    ) {
        self.outcome.framework_id = Some(framework_id.clone());
        if reregistered {
            // Updates sent while we were away are resent by the agents; ask anyway.
            if let Some(p) = self.placement() {
                let _ = driver.reconcile_tasks(vec![p.task_id.clone()]);
            }
        } else {
            self.emit(ServiceEvent::Registered {
                framework_id: framework_id.clone(),
            });
        }
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            self.offer(driver, offer);
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let Some(placement) = self.placement().cloned() else {
            debug!(task = %status.task_id, state = %status.state, "update with no live task; ignored");
            return;
        };
        if status.task_id != placement.task_id {
            debug!(task = %status.task_id, state = %status.state, "update for an earlier attempt; ignored");
            return;
        }
        match status.state {
            TaskState::Running => {
                if matches!(self.phase, Phase::Launched(_)) {
                    self.phase = Phase::Running(placement.clone());
                    self.outcome.was_running = true;
                    // A service with a port is a web server: the master's web UI links to it.
                    if let Some(url) = self.outcome.url() {
                        let _ = driver.set_webui_url(Some(url));
                    }
                    self.emit(ServiceEvent::Running {
                        framework_id: driver.framework_id(),
                        task_id: placement.task_id,
                        agent_id: placement.agent_id,
                        hostname: placement.hostname,
                        port: placement.port,
                    });
                }
            }
            state if state.is_terminal() => {
                let stopping = {
                    let mut shared = lock(&self.shared);
                    shared.current = None;
                    shared.stopping
                };
                self.outcome.final_state = Some(state);
                self.outcome.message = status.message.clone();
                match after_end(status, stopping, self.outcome.relaunches) {
                    AfterEnd::Relaunch => {
                        self.outcome.relaunches += 1;
                        if placement.port.is_some() {
                            // Nothing serves there any more; the relaunch publishes anew.
                            let _ = driver.set_webui_url(None);
                        }
                        self.phase = Phase::Waiting;
                        self.emit(ServiceEvent::Relaunching {
                            task_id: placement.task_id,
                            state,
                            message: status.message.clone(),
                        });
                        let _ = driver.revive_offers();
                    }
                    AfterEnd::Finish => {
                        self.phase = Phase::Ended;
                        self.emit(ServiceEvent::Ended {
                            task_id: placement.task_id,
                            state,
                            message: status.message.clone(),
                        });
                        driver.stop(false);
                    }
                }
            }
            _ => {}
        }
    }

    async fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        warn!(service = %self.spec.name, "the master reported: {message}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::{status, TaskStatusExt};

    fn ended(state: TaskState) -> TaskStatus {
        status(&TaskId::from("svc-1"), state)
    }

    #[test]
    fn lost_tasks_are_relaunched_a_bounded_number_of_times() {
        let lost = ended(TaskState::Lost).reason(TaskReason::AgentRemoved);
        assert_eq!(after_end(&lost, false, 0), AfterEnd::Relaunch);
        assert_eq!(
            after_end(&lost, false, MAX_RELAUNCHES - 1),
            AfterEnd::Relaunch
        );
        assert_eq!(after_end(&lost, false, MAX_RELAUNCHES), AfterEnd::Finish);
    }

    #[test]
    fn nothing_is_relaunched_once_stopping() {
        let lost = ended(TaskState::Lost);
        assert_eq!(after_end(&lost, true, 0), AfterEnd::Finish);
    }

    #[test]
    fn failures_and_kills_end_the_service() {
        for state in [TaskState::Failed, TaskState::Killed, TaskState::Finished] {
            assert_eq!(after_end(&ended(state), false, 0), AfterEnd::Finish);
        }
        let refused = ended(TaskState::Error).reason(TaskReason::InvalidTask);
        assert_eq!(after_end(&refused, false, 0), AfterEnd::Finish);
        let raced = ended(TaskState::Error).reason(TaskReason::InvalidOffer);
        assert_eq!(after_end(&raced, false, 0), AfterEnd::Relaunch);
    }

    #[test]
    fn events_read_as_instructions() {
        let running = ServiceEvent::Running {
            framework_id: None,
            task_id: "hello-1".into(),
            agent_id: "a".into(),
            hostname: "pi-a".into(),
            port: None,
        };
        assert!(running
            .to_string()
            .contains("bramble logs hello-1 --follow"));
        let serving = ServiceEvent::Running {
            framework_id: None,
            task_id: "http-1".into(),
            agent_id: "a".into(),
            hostname: "pi-a".into(),
            port: Some(31000),
        };
        assert!(serving.to_string().contains("http://pi-a:31000/"));
        let outcome = ServiceOutcome {
            hostname: Some("pi-a".into()),
            port: Some(31000),
            ..ServiceOutcome::default()
        };
        assert_eq!(outcome.url().as_deref(), Some("http://pi-a:31000/"));
    }
}

/// A service under the SDK's test kit, for this module's tests and `hello`'s and `http`'s:
/// the scheduler, the handle that stops it, and the events it reported.
#[cfg(test)]
pub(crate) mod kit {
    use super::*;
    use bramble_sdk::testing::SchedulerTest;

    pub(crate) struct Service {
        pub(crate) t: SchedulerTest<ServiceScheduler>,
        stop: StopHandle,
        events: Arc<Mutex<Vec<ServiceEvent>>>,
    }

    /// `spec` registered as framework `fw-test`.
    pub(crate) async fn service(spec: ServiceSpec) -> Service {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let (scheduler, stop) = ServiceScheduler::new(spec, move |e: &ServiceEvent| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(e.clone())
        });
        let mut t = SchedulerTest::new(scheduler);
        t.register("fw-test").await;
        Service { t, stop, events }
    }

    impl Service {
        /// What the caller's `until` resolving does.
        pub(crate) fn stop(&mut self) {
            self.stop.stop(self.t.driver());
        }

        pub(crate) fn events(&self) -> Vec<ServiceEvent> {
            self.events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }

        pub(crate) fn outcome(&self) -> &ServiceOutcome {
            &self.t.scheduler().outcome
        }
    }
}

/// The service scheduler driven by the SDK's test kit: every call it makes, checked in order.
#[cfg(test)]
mod kit_tests {
    use super::kit::{service, Service};
    use super::*;
    use bramble_proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update};
    use bramble_sdk::OfferId;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "svc".into(),
            build: Box::new(|offer, task_id| {
                let task = command_task(
                    offer,
                    task_id,
                    "svc",
                    "the service",
                    Resources::new(0.5, 64),
                    CommandInfo::shell("serve"),
                )?;
                Ok(Launch { task, port: None })
            }),
        }
    }

    fn big(id: &str, agent: &str) -> Offer {
        offer(id, agent, Resources::new(1.0, 256))
    }

    fn lost(task: &str, agent: &str) -> TaskStatus {
        let mut s = update(task, agent, TaskState::Lost);
        s.reason = Some(TaskReason::AgentRemoved);
        s
    }

    fn refuse(secs: f64) -> Filters {
        Filters {
            refuse_seconds: secs,
        }
    }

    /// The service with its first task launched on `a1` and RUNNING; calls so far taken.
    async fn running() -> Service {
        let mut s = service(spec()).await;
        s.t.offers(vec![big("o1", "a1")]).await;
        s.t.update(update("svc-1", "a1", TaskState::Running)).await;
        s.t.take_calls();
        s
    }

    fn revives(s: &mut Service) -> usize {
        s.t.count(|c| matches!(c, SchedulerCall::Revive))
    }

    #[tokio::test]
    async fn the_first_fitting_offer_launches_one_task_then_offers_are_suppressed() {
        let mut s = service(spec()).await;
        s.t.offers(vec![
            offer("small", "a0", Resources::new(0.1, 256)),
            big("o1", "a1"),
        ])
        .await;
        let calls = s.t.take_calls();
        let [SchedulerCall::Decline { offer_ids, filters }, SchedulerCall::Accept {
            offer_ids: accepted,
            tasks,
            filters: rest,
        }, SchedulerCall::Suppress] = calls.as_slice()
        else {
            panic!("decline, accept, suppress expected: {calls:?}");
        };
        assert_eq!(
            (offer_ids.as_slice(), *filters),
            (&[OfferId::from("small")][..], refuse(REFUSE_UNFIT_SECS))
        );
        assert_eq!(accepted, &[OfferId::from("o1")]);
        assert_eq!(
            *rest,
            refuse(REFUSE_UNUSED_SECS),
            "the unused rest stays out while we run"
        );
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task_id.as_str(), "svc-1");
        assert_eq!(tasks[0].agent_id.as_str(), "a1");
        // One task is all it wants: later offers go back, for a minute.
        s.t.offers(vec![big("o2", "a2")]).await;
        assert_eq!(
            s.t.declines(),
            vec![("o2".into(), refuse(REFUSE_UNUSED_SECS))]
        );
        assert!(s.t.launched().is_empty());
        let events = s.events();
        assert!(
            matches!(&events[0], ServiceEvent::Registered { .. }),
            "{events:?}"
        );
        assert!(
            matches!(&events[1], ServiceEvent::NoFit { reason } if reason.starts_with("a0 is too small")),
            "{events:?}"
        );
        assert!(
            matches!(&events[2], ServiceEvent::Launched { task_id, .. } if task_id.as_str() == "svc-1"),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn an_unfit_offer_is_reported_once_per_reason() {
        let mut s = service(spec()).await;
        for id in ["o1", "o2", "o3"] {
            s.t.offers(vec![offer(id, "a0", Resources::new(0.1, 256))])
                .await;
        }
        let no_fits = s
            .events()
            .iter()
            .filter(|e| matches!(e, ServiceEvent::NoFit { .. }))
            .count();
        assert_eq!(no_fits, 1, "{:?}", s.events());
        assert_eq!(s.t.declined().len(), 3);
    }

    #[tokio::test]
    async fn a_lost_agent_relaunches_the_task_on_another() {
        let mut s = running().await;
        assert!(s.outcome().was_running);
        s.t.update(lost("svc-1", "a1")).await;
        assert_eq!(
            revives(&mut s),
            1,
            "offers revived for the relaunch: {:?}",
            s.t.calls()
        );
        assert_eq!(s.t.stopped(), None);
        s.t.offers(vec![big("o2", "a2")]).await;
        let launched = s.t.launched();
        assert_eq!(launched.len(), 1);
        assert_eq!(launched[0].task_id.as_str(), "svc-2");
        assert_eq!(launched[0].agent_id.as_str(), "a2");
        // A late word about the first attempt changes nothing.
        s.t.take_calls();
        s.t.update(update("svc-1", "a1", TaskState::Failed)).await;
        assert_eq!(revives(&mut s), 0);
        assert_eq!(s.t.stopped(), None);
        assert_eq!(s.outcome().relaunches, 1);
        assert_eq!(
            s.outcome().agent_id.as_ref().map(|a| a.as_str()),
            Some("a2")
        );
    }

    #[tokio::test]
    async fn relaunches_are_bounded() {
        let mut s = running().await;
        for attempt in 1..=MAX_RELAUNCHES {
            s.t.update(lost(&format!("svc-{attempt}"), "a1")).await;
            assert_eq!(s.t.stopped(), None, "relaunch {attempt} allowed");
            s.t.offers(vec![big(&format!("o{attempt}"), "a1")]).await;
        }
        let last = format!("svc-{}", MAX_RELAUNCHES + 1);
        assert_eq!(
            s.t.launched().last().map(|t| t.task_id.to_string()),
            Some(last.clone())
        );
        s.t.update(lost(&last, "a1")).await;
        assert_eq!(s.t.stopped(), Some(false), "gives up and tears down");
        assert_eq!(s.outcome().final_state, Some(TaskState::Lost));
        assert_eq!(s.outcome().relaunches, MAX_RELAUNCHES);
    }

    #[tokio::test]
    async fn a_failed_task_ends_the_service() {
        let mut s = running().await;
        let mut failed = update("svc-1", "a1", TaskState::Failed);
        failed.message = "exit status 3".into();
        s.t.update(failed).await;
        assert_eq!(s.t.stopped(), Some(false));
        assert_eq!(revives(&mut s), 0);
        assert_eq!(s.outcome().final_state, Some(TaskState::Failed));
        assert_eq!(s.outcome().message, "exit status 3");
        assert!(matches!(
            s.events().last(),
            Some(ServiceEvent::Ended {
                state: TaskState::Failed,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn stopping_kills_the_task_and_the_end_tears_down() {
        let mut s = running().await;
        s.stop();
        assert_eq!(s.t.killed(), vec![TaskId::from("svc-1")]);
        assert_eq!(s.t.stopped(), None, "waits for the task's end");
        s.t.offers(vec![big("o2", "a2")]).await;
        assert!(s.t.launched().is_empty(), "nothing launched once stopping");
        assert_eq!(s.t.declined(), vec![OfferId::from("o2")]);
        // Even a LOST is final once stopping.
        s.t.update(lost("svc-1", "a1")).await;
        assert_eq!(revives(&mut s), 0);
        assert_eq!(s.t.stopped(), Some(false));
        assert!(
            matches!(
                s.events().iter().rev().nth(1),
                Some(ServiceEvent::Killing { .. })
            ),
            "{:?}",
            s.events()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_kill_with_no_answer_tears_down_after_the_timeout() {
        let mut s = running().await;
        s.stop();
        assert_eq!(s.t.killed(), vec![TaskId::from("svc-1")]);
        s.t.advance(KILL_TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(s.t.stopped(), None, "too early");
        s.t.advance(Duration::from_millis(1)).await;
        assert_eq!(s.t.stopped(), Some(false));
    }

    #[tokio::test]
    async fn stopping_before_any_launch_tears_down_at_once() {
        let mut s = service(spec()).await;
        s.stop();
        assert_eq!(s.t.stopped(), Some(false));
        assert!(s.t.killed().is_empty());
    }

    #[tokio::test]
    async fn reregistering_reconciles_the_live_task() {
        let mut s = running().await;
        s.t.disconnect().await;
        s.t.register("fw-test").await;
        assert_eq!(
            s.t.calls(),
            [SchedulerCall::Reconcile {
                task_ids: vec![TaskId::from("svc-1")]
            }]
        );
    }
}
