//! The scheduler behind [`run_service`](super::run_service): launch on the first fitting
//! offer, relaunch after a lost agent (bounded), and the handle that stops it.

use super::{
    ServiceEvent, ServiceOutcome, ServiceSpec, KILL_TIMEOUT, MAX_RELAUNCHES, REFUSE_UNFIT_SECS,
    REFUSE_UNUSED_SECS,
};
use crate::offers;
use bramble_sdk::{
    async_trait, AgentId, Filters, FrameworkId, Offer, Scheduler, SchedulerDriver, TaskId,
    TaskReason, TaskState, TaskStatus,
};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, info, warn};

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
pub(super) enum AfterEnd {
    Relaunch,
    Finish,
}

pub(super) fn after_end(status: &TaskStatus, stopping: bool, relaunches: u32) -> AfterEnd {
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
    pub(super) outcome: ServiceOutcome,
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
    pub(super) fn finished(&self) {
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
