//! [`SchedulerDriver`]: the cheap, cloneable handle a framework acts through. Calls are checked
//! against the connection state (refused while disconnected or stopped) and queued for the run
//! loop in `runner.rs`/`session.rs`, which is the only place that writes to the master.

use super::runner::Runner;
use super::{Scheduler, SchedulerConfig};
use crate::error::SdkError;
use bramble_proto::framework_state::StateWrite;
use bramble_proto::masters::MasterList;
use bramble_proto::messages::{Filters, JobProgress, SchedulerCall};
use bramble_proto::task::TaskInfo;
use bramble_proto::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, TaskStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// A cheap, cloneable handle to the scheduler's connection. Calls are non-blocking: they are
/// queued for the run loop, which writes them in order.
#[derive(Clone)]
pub struct SchedulerDriver {
    inner: Arc<Inner>,
}

struct Inner {
    calls: mpsc::UnboundedSender<SchedulerCall>,
    /// `Some(failover)` once `stop` was called.
    stop: watch::Sender<Option<bool>>,
    status: Mutex<DriverStatus>,
    implicit_acknowledgements: bool,
    /// Whether `put_state`/`delete_state` carry the fencing token (leader election on).
    fence_writes: bool,
    /// Taken by `run`.
    parts: Mutex<Option<RunParts>>,
}

#[derive(Default)]
struct DriverStatus {
    framework_id: Option<FrameworkId>,
    connected: bool,
    stopped: bool,
    /// From the latest `Subscribed`.
    fencing_token: Option<u64>,
}

struct RunParts {
    config: SchedulerConfig,
    calls: mpsc::UnboundedReceiver<SchedulerCall>,
    stop: watch::Receiver<Option<bool>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is plain flags; a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SchedulerDriver {
    /// A driver for `config`, not yet connected: clone it, then call [`SchedulerDriver::run`].
    pub fn new(config: SchedulerConfig) -> Self {
        let (driver, calls, stop) = Self::unattached(
            config.framework.framework_id.clone(),
            config.implicit_acknowledgements,
            config.leader_election,
        );
        *lock(&driver.inner.parts) = Some(RunParts {
            config,
            calls,
            stop,
        });
        driver
    }

    /// A connected driver with no run loop: its calls are handed to the returned receiver
    /// instead of a master. For `crate::testing`, which plays the master.
    #[cfg(feature = "testing")]
    pub(crate) fn detached(
        framework_id: Option<FrameworkId>,
        implicit_acknowledgements: bool,
    ) -> (Self, mpsc::UnboundedReceiver<SchedulerCall>) {
        let (driver, calls, _) = Self::unattached(framework_id, implicit_acknowledgements, false);
        (driver, calls)
    }

    /// A driver with nothing to run it yet, and the ends its run loop reads.
    fn unattached(
        framework_id: Option<FrameworkId>,
        implicit_acknowledgements: bool,
        fence_writes: bool,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<SchedulerCall>,
        watch::Receiver<Option<bool>>,
    ) {
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(None);
        let driver = Self {
            inner: Arc::new(Inner {
                calls: calls_tx,
                stop: stop_tx,
                status: Mutex::new(DriverStatus {
                    framework_id,
                    ..DriverStatus::default()
                }),
                implicit_acknowledgements,
                fence_writes,
                parts: Mutex::new(None),
            }),
        };
        (driver, calls_rx, stop_rx)
    }

    /// Whether `stop` was called, and with `failover` set.
    #[cfg(feature = "testing")]
    pub(crate) fn stop_requested(&self) -> Option<bool> {
        *self.inner.stop.borrow()
    }

    /// Runs the driver (see [`run_scheduler`]). May be called once per driver.
    pub async fn run<S: Scheduler>(&self, mut scheduler: S) -> Result<S, SdkError> {
        let parts = lock(&self.inner.parts)
            .take()
            .ok_or(SdkError::AlreadyRunning)?;
        let mut masters = vec![parts.config.master];
        masters.extend(parts.config.other_masters.iter().copied());
        let masters =
            MasterList::new(masters).unwrap_or_else(|| MasterList::single(parts.config.master));
        let mut runner = Runner {
            driver: self.clone(),
            addr: parts.config.master,
            masters,
            info: parts.config.framework.clone(),
            config: parts.config,
            calls: parts.calls,
            stop: parts.stop,
        };
        let result = runner.run(&mut scheduler).await;
        {
            let mut st = lock(&self.inner.status);
            st.connected = false;
            st.stopped = true;
        }
        result.map(|()| scheduler)
    }

    /// Launches `tasks` on the resources of `offer_ids` (all from one agent). Resources left
    /// over are declined with `filters`. An empty `tasks` declines the offers.
    pub fn launch_tasks(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskInfo>,
        filters: Filters,
    ) -> Result<(), SdkError> {
        self.call(SchedulerCall::Accept {
            offer_ids,
            tasks,
            filters,
        })
    }

    /// Declines an offer; the master does not re-offer its resources for `filters.refuse_seconds`.
    pub fn decline_offer(&self, offer_id: OfferId, filters: Filters) -> Result<(), SdkError> {
        self.call(SchedulerCall::Decline {
            offer_ids: vec![offer_id],
            filters,
        })
    }

    /// Clears refuse filters and resumes offers after `suppress_offers`.
    pub fn revive_offers(&self) -> Result<(), SdkError> {
        self.call(SchedulerCall::Revive)
    }

    /// Asks the master to stop sending offers (outstanding ones are rescinded).
    pub fn suppress_offers(&self) -> Result<(), SdkError> {
        self.call(SchedulerCall::Suppress)
    }

    /// Kills a task; its terminal update arrives through `status_update`. Killing a task the
    /// master does not know yields a LOST update.
    pub fn kill_task(&self, task_id: TaskId) -> Result<(), SdkError> {
        self.call(SchedulerCall::Kill { task_id })
    }

    /// Stops one of the framework's executors on `agent_id`: it is told to shut down and
    /// killed after its grace period; `executor_lost` follows.
    pub fn shutdown_executor(
        &self,
        agent_id: AgentId,
        executor_id: ExecutorId,
    ) -> Result<(), SdkError> {
        self.call(SchedulerCall::ShutdownExecutor {
            agent_id,
            executor_id,
        })
    }

    /// Acknowledges an update when implicit acknowledgements are off. Updates without a uuid
    /// (the master's own) need no acknowledgement and are ignored.
    pub fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        if self.inner.implicit_acknowledgements {
            return Err(SdkError::InvalidCall(
                "acknowledge() is for explicit acknowledgements, but this driver acknowledges \
                 implicitly (set SchedulerConfig::implicit_acknowledgements = false)"
                    .into(),
            ));
        }
        match ack_call(status) {
            Ok(Some(call)) => self.call(call),
            Ok(None) => Ok(()),
            Err(why) => Err(SdkError::InvalidCall(why)),
        }
    }

    /// Asks for the current state of `task_ids`, or of all the framework's live tasks when
    /// empty. Answers arrive as status updates (unknown tasks come back LOST).
    pub fn reconcile_tasks(&self, task_ids: Vec<TaskId>) -> Result<(), SdkError> {
        self.call(SchedulerCall::Reconcile { task_ids })
    }

    /// Sends bytes to one of the framework's executors (best effort).
    pub fn send_framework_message(
        &self,
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), SdkError> {
        self.call(SchedulerCall::Message {
            agent_id,
            executor_id,
            data,
        })
    }

    /// Tells the master how far the framework's job has got, for the CLI, the web UI and the
    /// front panel. Best effort: the latest one wins.
    pub fn publish_progress(&self, progress: JobProgress) -> Result<(), SdkError> {
        self.call(SchedulerCall::PublishProgress(progress))
    }

    /// Publishes (or, with `None`, withdraws) the framework's own web UI, which the master's
    /// web UI links to from the framework's entry (Mesos's `webui_url`). A URL known before
    /// subscribing goes in `FrameworkInfo::webui_url` instead; this is for one learnt later,
    /// e.g. a service's port. The master keeps it with the framework (durably) and it is
    /// sent again on every re-subscription. It shows as a link only when it is `http(s)://`.
    pub fn set_webui_url(&self, url: Option<String>) -> Result<(), SdkError> {
        self.call(SchedulerCall::SetWebuiUrl(url))
    }

    /// Sets `key` in the framework's key/value state, kept by the master across the
    /// scheduler's restarts (limits in `bramble_proto::framework_state`). With
    /// `expected_version`, only if the entry is at that version now (`Some(0)`: only if it does
    /// not exist). The outcome arrives as `Scheduler::state_changed`, or a refusal through
    /// `Scheduler::error`. With [`SchedulerConfig::leader_election`] the write carries this
    /// instance's [`fencing_token`](Self::fencing_token), so it is refused if another
    /// instance has become the active scheduler since.
    pub fn put_state(
        &self,
        key: impl Into<String>,
        value: Vec<u8>,
        expected_version: Option<u64>,
    ) -> Result<(), SdkError> {
        self.write_state(StateWrite::Put {
            key: key.into(),
            value,
            expected_version,
        })
    }

    /// The fencing token of this instance's latest subscription (`None` before the first):
    /// the framework's epoch, which the master raises each time an instance becomes the
    /// active scheduler (subscription, failover, a standby taking over) and keeps across its
    /// own restarts. A token older than the framework's current one belongs to a deposed
    /// leader. Hand it to what acts on the scheduler's behalf and check it there, or pass it to
    /// [`write_state_fenced`](Self::write_state_fenced).
    pub fn fencing_token(&self) -> Option<u64> {
        lock(&self.inner.status).fencing_token
    }

    /// Writes the framework's state only if `fence` is still the framework's current fencing
    /// token; otherwise the master refuses it (through `Scheduler::error`, a "fenced" message
    /// naming both tokens) and nothing changes. For work begun under one subscription and
    /// finished later, possibly after this instance lost and regained the lead.
    pub fn write_state_fenced(&self, write: StateWrite, fence: u64) -> Result<(), SdkError> {
        self.call(SchedulerCall::WriteStateFenced { write, fence })
    }

    /// A write fenced with the current token when leader election is on, else unfenced. The
    /// token is read with the connection's state, under one lock: a write sent on a session
    /// carries that session's token (`set_subscribed` sets both at once).
    fn write_state(&self, write: StateWrite) -> Result<(), SdkError> {
        let fence = {
            let st = lock(&self.inner.status);
            Self::open(&st)?;
            st.fencing_token.filter(|_| self.inner.fence_writes)
        };
        let call = match fence {
            Some(fence) => SchedulerCall::WriteStateFenced { write, fence },
            None => SchedulerCall::WriteState(write),
        };
        self.send(call)
    }

    /// Deletes `key` from the framework's state (see [`SchedulerDriver::put_state`]).
    pub fn delete_state(
        &self,
        key: impl Into<String>,
        expected_version: Option<u64>,
    ) -> Result<(), SdkError> {
        self.write_state(StateWrite::Delete {
            key: key.into(),
            expected_version,
        })
    }

    /// Stops the driver; its run returns once this is done. `failover = false`: the framework
    /// is finished — the master kills its tasks and forgets it (Teardown). `failover = true`:
    /// just disconnect; the tasks keep running for the failover timeout, during which a new
    /// driver with the same `framework_id` can take over. Calls queued before `stop` are sent
    /// first. Idempotent: the first call decides.
    pub fn stop(&self, failover: bool) {
        lock(&self.inner.status).stopped = true;
        self.inner.stop.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(failover);
                true
            } else {
                false
            }
        });
    }

    /// The framework's id, once the master assigned one (or the configured failover id).
    pub fn framework_id(&self) -> Option<FrameworkId> {
        lock(&self.inner.status).framework_id.clone()
    }

    /// Whether the driver currently has a subscribed connection.
    pub fn is_connected(&self) -> bool {
        lock(&self.inner.status).connected
    }

    fn call(&self, call: SchedulerCall) -> Result<(), SdkError> {
        Self::open(&lock(&self.inner.status))?;
        self.send(call)
    }

    /// Whether calls may be made now.
    fn open(st: &DriverStatus) -> Result<(), SdkError> {
        if st.stopped {
            return Err(SdkError::Stopped);
        }
        if !st.connected {
            return Err(SdkError::Disconnected);
        }
        Ok(())
    }

    fn send(&self, call: SchedulerCall) -> Result<(), SdkError> {
        // Refused here, to the caller: the master would close a connection that sent it.
        SdkError::check_size("the call", &call)?;
        self.inner.calls.send(call).map_err(|_| SdkError::Stopped)
    }

    pub(crate) fn acknowledges_implicitly(&self) -> bool {
        self.inner.implicit_acknowledgements
    }

    /// A new session: its framework id and fencing token, and connected, all at once (a write
    /// from another thread never sees the new session with the previous one's token).
    pub(crate) fn set_subscribed(&self, framework_id: FrameworkId, fencing_token: u64) {
        let mut st = lock(&self.inner.status);
        st.framework_id = Some(framework_id);
        st.fencing_token = Some(fencing_token);
        st.connected = true;
    }

    pub(crate) fn set_connected(&self, framework_id: Option<FrameworkId>, connected: bool) {
        let mut st = lock(&self.inner.status);
        if framework_id.is_some() {
            st.framework_id = framework_id;
        }
        st.connected = connected;
    }
}

/// The acknowledgement for `status`, `None` when it needs none.
pub(crate) fn ack_call(status: &TaskStatus) -> Result<Option<SchedulerCall>, String> {
    let Some(uuid) = status.uuid else {
        return Ok(None);
    };
    let Some(agent_id) = status.agent_id.clone() else {
        return Err(format!(
            "update {uuid} for task {} carries no agent id and cannot be acknowledged",
            status.task_id
        ));
    };
    Ok(Some(SchedulerCall::Acknowledge {
        agent_id,
        task_id: status.task_id.clone(),
        uuid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::UpdateSource;
    use bramble_proto::TaskState;

    #[test]
    fn state_writes_carry_the_token_of_the_session_they_are_sent_on() {
        let (driver, mut calls, _stop) = SchedulerDriver::unattached(None, true, true);
        let fenced = |calls: &mut mpsc::UnboundedReceiver<SchedulerCall>| match calls.try_recv() {
            Ok(SchedulerCall::WriteStateFenced { fence, .. }) => fence,
            other => panic!("expected a fenced write, got {other:?}"),
        };
        assert!(matches!(
            driver.put_state("k", b"v".to_vec(), None),
            Err(SdkError::Disconnected)
        ));
        driver.set_subscribed("fw".into(), 1);
        driver.put_state("k", b"v".to_vec(), None).unwrap();
        assert_eq!(fenced(&mut calls), 1);
        driver.set_connected(None, false);
        assert!(driver.delete_state("k", None).is_err());
        driver.set_subscribed("fw".into(), 2);
        assert!(driver.is_connected());
        assert_eq!(driver.framework_id(), Some("fw".into()));
        driver.delete_state("k", None).unwrap();
        assert_eq!(fenced(&mut calls), 2);
    }

    #[test]
    fn only_updates_with_a_uuid_are_acknowledged() {
        let mut s = TaskStatus::new(
            "fw".into(),
            "t".into(),
            TaskState::Lost,
            UpdateSource::Master,
        );
        assert!(
            matches!(ack_call(&s), Ok(None)),
            "master updates need no ack"
        );
        s.uuid = Some(uuid::Uuid::new_v4());
        assert!(ack_call(&s).is_err(), "no agent id: cannot ack");
        s.agent_id = Some("a".into());
        match ack_call(&s) {
            Ok(Some(SchedulerCall::Acknowledge {
                agent_id,
                task_id,
                uuid,
            })) => {
                assert_eq!(agent_id, AgentId::from("a"));
                assert_eq!(task_id, TaskId::from("t"));
                assert_eq!(Some(uuid), s.uuid);
            }
            _ => panic!("expected an Acknowledge"),
        }
    }
}
