//! The scheduler side: the [`Scheduler`] trait a framework implements and the
//! [`SchedulerDriver`] that connects it to the master.
//!
//! Shape: one run loop owns the QUIC connection. A reader task turns frames into events (the
//! codec's reads are not cancel-safe, so they never sit inside a `select!`), the loop hands
//! events to the scheduler one at a time, and driver calls made from callbacks or from other
//! tasks arrive over a channel and are written by the loop. Connection loss is a state, not an
//! error: the loop calls `disconnected`, re-subscribes with the same framework id (failover)
//! with exponential backoff, and only gives up once the framework's failover timeout — the
//! time the master keeps its tasks — has passed.
//!
//! Calls while disconnected: driver calls made while there is no subscribed connection return
//! [`SdkError::Disconnected`] instead of being queued. Offers die with the connection, and a
//! kill or launch decided before a disconnect is better decided again after
//! `registered(.., reregistered = true)`, with a reconciliation. A call accepted just before a
//! connection drops waits in the queue and is sent after the re-subscription.

use crate::error::SdkError;
use crate::AbortOnDrop;
use async_trait::async_trait;
use bramble_proto::codec::{CodecError, FrameReader, FrameWriter};
use bramble_proto::identity::Credentials;
use bramble_proto::messages::{
    Filters, FrameworkInfo, Hello, HelloReply, JobProgress, MasterEvent, Offer, PeerKind,
    SchedulerCall,
};
use bramble_proto::task::TaskInfo;
use bramble_proto::transport::{self, ControlStream, TransportError};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, TaskId, TaskStatus, PROTOCOL_VERSION,
    SOFTWARE_VERSION,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// Failover timeout used by [`framework_info`]: how long the master keeps a disconnected
/// framework's tasks running, and how long the driver keeps trying to get back.
pub const DEFAULT_FAILOVER_TIMEOUT_SECS: f64 = 60.0;

/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Upper bound for one connect + hello + subscribe attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lower bound for a reconnect attempt even when little failover time is left.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop(false)` waits for the master to confirm the teardown.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Events read ahead of the scheduler. Bounded so that a scheduler that cannot keep up
/// pushes back on the master (which then drops it as too slow) instead of buffering forever.
const EVENT_QUEUE: usize = 256;
/// Used when the master announces a zero heartbeat interval.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(1);
/// QUIC close code for a deliberate close by this side.
const CLOSE_OK: u32 = 0;
/// QUIC close code the master uses when it refuses a peer.
const CLOSE_REFUSED: u32 = 1;

/// What a framework implements to schedule work. Every method runs on the driver's event
/// loop, one at a time: a callback that takes long delays all later events (offers, status
/// updates, heartbeats are still sent). Use the `driver` to act; clone it to act from other
/// tasks.
#[async_trait]
pub trait Scheduler: Send {
    /// The master accepted the subscription. `reregistered` is true when the subscription
    /// re-used a framework id: after a reconnect, or when `FrameworkInfo::framework_id` was
    /// set for a failover. A good moment to reconcile.
    async fn registered(
        &mut self,
        _driver: &SchedulerDriver,
        _framework_id: &FrameworkId,
        _reregistered: bool,
    ) {
    }

    /// Resources offered to this framework. Answer each offer with `launch_tasks` or
    /// `decline_offer`; an unanswered offer is rescinded after the master's offer timeout.
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>);

    /// The offer is no longer valid (agent lost, timeout, framework suppressed).
    async fn offer_rescinded(&mut self, _driver: &SchedulerDriver, _offer_id: &OfferId) {}

    /// A task changed state. With implicit acknowledgements (the default) the driver
    /// acknowledges the update only after this returns, so the agent stops resending it:
    /// whatever this awaits (e.g. writing the update to disk) happens before the
    /// acknowledgement. Work spawned elsewhere does not; use explicit acknowledgements then.
    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus);

    /// Bytes an executor sent with `ExecutorDriver::send_framework_message` (best effort).
    async fn framework_message(
        &mut self,
        _driver: &SchedulerDriver,
        _agent_id: &AgentId,
        _executor_id: &ExecutorId,
        _data: &[u8],
    ) {
    }

    /// The agent was removed; its tasks are reported LOST separately.
    async fn agent_lost(&mut self, _driver: &SchedulerDriver, _agent_id: &AgentId) {}

    /// The connection to the master dropped; the driver is reconnecting. Driver calls return
    /// `SdkError::Disconnected` until `registered` is called again.
    async fn disconnected(&mut self, _driver: &SchedulerDriver) {}

    /// The master reported an error. After a fatal one the driver's run returns
    /// `SdkError::Fatal` with the same message.
    async fn error(&mut self, _driver: &SchedulerDriver, _message: &str) {}
}

/// What the driver needs to subscribe.
pub struct SchedulerConfig {
    /// The master's QUIC address.
    pub master: SocketAddr,
    /// A framework or operator certificate of the cluster (`Credentials::load(dir, Role::Framework)`).
    pub credentials: Credentials,
    /// Name, role and failover timeout; set `framework_id` to fail over from an earlier run.
    pub framework: FrameworkInfo,
    /// When true (the default) the driver acknowledges each update that carries a uuid after
    /// `status_update` returns. When false the framework calls
    /// [`SchedulerDriver::acknowledge`] itself, e.g. after persisting the update.
    pub implicit_acknowledgements: bool,
}

impl SchedulerConfig {
    pub fn new(master: SocketAddr, credentials: Credentials, framework: FrameworkInfo) -> Self {
        Self {
            master,
            credentials,
            framework,
            implicit_acknowledgements: true,
        }
    }
}

/// A new framework's info: role `*`, failover timeout [`DEFAULT_FAILOVER_TIMEOUT_SECS`].
pub fn framework_info(name: impl Into<String>) -> FrameworkInfo {
    FrameworkInfo {
        framework_id: None,
        name: name.into(),
        role: "*".into(),
        failover_timeout_secs: DEFAULT_FAILOVER_TIMEOUT_SECS,
    }
}

/// Connects `scheduler` to the master and runs it until [`SchedulerDriver::stop`] is called
/// (returns the scheduler) or the framework cannot go on (returns why).
pub async fn run_scheduler<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
) -> Result<S, SdkError> {
    SchedulerDriver::new(config).run(scheduler).await
}

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
    /// Taken by `run`.
    parts: Mutex<Option<RunParts>>,
}

#[derive(Default)]
struct DriverStatus {
    framework_id: Option<FrameworkId>,
    connected: bool,
    stopped: bool,
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
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(None);
        let implicit_acknowledgements = config.implicit_acknowledgements;
        let framework_id = config.framework.framework_id.clone();
        Self {
            inner: Arc::new(Inner {
                calls: calls_tx,
                stop: stop_tx,
                status: Mutex::new(DriverStatus {
                    framework_id,
                    ..DriverStatus::default()
                }),
                implicit_acknowledgements,
                parts: Mutex::new(Some(RunParts {
                    config,
                    calls: calls_rx,
                    stop: stop_rx,
                })),
            }),
        }
    }

    /// Runs the driver (see [`run_scheduler`]). May be called once per driver.
    pub async fn run<S: Scheduler>(&self, mut scheduler: S) -> Result<S, SdkError> {
        let parts = lock(&self.inner.parts)
            .take()
            .ok_or(SdkError::AlreadyRunning)?;
        let mut runner = Runner {
            driver: self.clone(),
            addr: parts.config.master,
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
        {
            let st = lock(&self.inner.status);
            if st.stopped {
                return Err(SdkError::Stopped);
            }
            if !st.connected {
                return Err(SdkError::Disconnected);
            }
        }
        self.inner.calls.send(call).map_err(|_| SdkError::Stopped)
    }

    fn set_connected(&self, framework_id: Option<FrameworkId>, connected: bool) {
        let mut st = lock(&self.inner.status);
        if framework_id.is_some() {
            st.framework_id = framework_id;
        }
        st.connected = connected;
    }
}

/// The acknowledgement for `status`, `None` when it needs none.
fn ack_call(status: &TaskStatus) -> Result<Option<SchedulerCall>, String> {
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

/// Reconnect delays: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: INITIAL_BACKOFF,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }
}

/// A subscribed connection.
struct Session {
    conn: quinn::Connection,
    reader: FrameReader<quinn::RecvStream>,
    writer: FrameWriter<quinn::SendStream>,
    framework_id: FrameworkId,
    heartbeat: Duration,
}

/// Why one attempt to subscribe failed.
enum AttemptError {
    /// Retrying cannot help.
    Fatal(SdkError),
    Retry(String),
}

/// How a subscribed session ended.
enum SessionEnd {
    Stopped,
    Fatal(String),
    Lost(String),
}

type EventResult = Result<MasterEvent, CodecError>;

struct Runner {
    driver: SchedulerDriver,
    config: SchedulerConfig,
    addr: SocketAddr,
    /// What the next Subscribe sends: carries the framework id once assigned.
    info: FrameworkInfo,
    calls: mpsc::UnboundedReceiver<SchedulerCall>,
    stop: watch::Receiver<Option<bool>>,
}

impl Runner {
    async fn run<S: Scheduler>(&mut self, scheduler: &mut S) -> Result<(), SdkError> {
        let endpoint = transport::client_endpoint(
            &self.config.credentials,
            transport::unspecified_for(self.addr),
        )
        .map_err(SdkError::Endpoint)?;
        let result = self.run_sessions(&endpoint, scheduler).await;
        endpoint.close(quinn::VarInt::from_u32(CLOSE_OK), b"scheduler stopped");
        // Lets the CONNECTION_CLOSE reach the master; bounded in case it never answers.
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        result
    }

    async fn run_sessions<S: Scheduler>(
        &mut self,
        endpoint: &quinn::Endpoint,
        scheduler: &mut S,
    ) -> Result<(), SdkError> {
        let mut down_since = Instant::now();
        let mut first = true;
        loop {
            let Some(session) = self.establish(endpoint, down_since, first).await? else {
                info!("scheduler stopped while disconnected (failover): the master keeps the framework until its failover timeout");
                return Ok(());
            };
            first = false;
            let reregistered = self.info.framework_id.is_some();
            let id = session.framework_id.clone();
            self.info.framework_id = Some(id.clone());
            self.driver.set_connected(Some(id.clone()), true);
            let stop_requested = *self.stop.borrow();
            if let Some(failover) = stop_requested {
                // stop() was called while reconnecting: finish what it asked for.
                return self.finish(session, failover).await;
            }
            info!(framework = %id, master = %self.addr, name = %self.info.name, reregistered,
                "framework {}", if reregistered { "re-registered" } else { "registered" });
            scheduler.registered(&self.driver, &id, reregistered).await;
            match self.serve(session, scheduler).await? {
                SessionEnd::Stopped => return Ok(()),
                SessionEnd::Fatal(message) => return Err(SdkError::Fatal(message)),
                SessionEnd::Lost(reason) => {
                    self.driver.set_connected(None, false);
                    warn!(framework = %id, master = %self.addr, "disconnected from the master: {reason}; reconnecting");
                    scheduler.disconnected(&self.driver).await;
                    down_since = Instant::now();
                }
            }
        }
    }

    /// Connects and subscribes, retrying with backoff until the failover timeout has passed
    /// since `down_since`. `None` when `stop(true)` was called meanwhile.
    async fn establish(
        &mut self,
        endpoint: &quinn::Endpoint,
        down_since: Instant,
        first: bool,
    ) -> Result<Option<Session>, SdkError> {
        let failover_timeout_secs = self.info.failover_timeout_secs;
        let failover_timeout =
            Duration::try_from_secs_f64(failover_timeout_secs.max(0.0)).unwrap_or(Duration::MAX);
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let stop_requested = *self.stop.borrow();
            if stop_requested == Some(true) {
                return Ok(None);
            }
            attempts += 1;
            let remaining = failover_timeout.saturating_sub(down_since.elapsed());
            let attempt_timeout = if first {
                ATTEMPT_TIMEOUT
            } else {
                remaining.clamp(MIN_ATTEMPT_TIMEOUT, ATTEMPT_TIMEOUT)
            };
            let last_error =
                match tokio::time::timeout(attempt_timeout, self.attempt(endpoint)).await {
                    Ok(Ok(session)) => return Ok(Some(session)),
                    Ok(Err(AttemptError::Fatal(e))) => {
                        error!(master = %self.addr, "cannot subscribe: {e}");
                        return Err(e);
                    }
                    Ok(Err(AttemptError::Retry(why))) => why,
                    Err(_) => format!("no answer within {attempt_timeout:?}"),
                };
            if stop_requested == Some(false) {
                return Err(SdkError::TeardownNotDelivered {
                    addr: self.addr,
                    reason: last_error,
                });
            }
            let waited = down_since.elapsed();
            if waited >= failover_timeout {
                let e = SdkError::FailoverTimeout {
                    addr: self.addr,
                    waited,
                    failover_timeout_secs,
                    attempts,
                    last_error,
                };
                error!("giving up: {e}");
                return Err(e);
            }
            let delay = backoff
                .next_delay()
                .min(failover_timeout.saturating_sub(waited));
            warn!(master = %self.addr, attempt = attempts, "subscribing failed: {last_error}; retrying in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // stop() interrupts the wait; the loop head decides what it means.
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    /// One connect + hello + subscribe.
    async fn attempt(&self, endpoint: &quinn::Endpoint) -> Result<Session, AttemptError> {
        let addr = self.addr;
        let conn = transport::connect(endpoint, addr)
            .await
            .map_err(|e| match e {
                TransportError::NotANode { .. }
                | TransportError::PeerCertificate(_)
                | TransportError::NoPeerCertificate => {
                    AttemptError::Fatal(SdkError::Connect { addr, source: e })
                }
                other => AttemptError::Retry(other.to_string()),
            })?;
        // A refused peer can see connect() succeed and fail only on the stream, with the
        // master's reason in the close frame: check for that on every failure below.
        let failed = |what: String| refusal_or_retry(&conn, what);
        let mut ctl = ControlStream::open(&conn)
            .await
            .map_err(|e| failed(format!("opening the control stream: {e}")))?;
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: SOFTWARE_VERSION.to_string(),
            kind: PeerKind::Scheduler,
        };
        ctl.send(&hello)
            .await
            .map_err(|e| failed(format!("sending hello: {e}")))?;
        match ctl.recv::<HelloReply>().await {
            Ok(HelloReply::Welcome {
                software_version,
                cluster_id,
                ..
            }) => {
                debug!(master = %addr, %software_version, %cluster_id, "welcomed by the master")
            }
            Ok(HelloReply::Refused { reason }) => {
                return Err(AttemptError::Fatal(SdkError::Refused(reason)))
            }
            Err(e) => return Err(failed(format!("reading the hello reply: {e}"))),
        }
        ctl.send(&SchedulerCall::Subscribe(self.info.clone()))
            .await
            .map_err(|e| failed(format!("sending subscribe: {e}")))?;
        loop {
            match ctl.recv::<MasterEvent>().await {
                Ok(MasterEvent::Subscribed {
                    framework_id,
                    heartbeat_interval_ms,
                }) => {
                    let heartbeat = match heartbeat_interval_ms {
                        0 => FALLBACK_HEARTBEAT,
                        ms => Duration::from_millis(ms),
                    };
                    let (reader, writer) = ctl.split();
                    return Ok(Session {
                        conn,
                        reader,
                        writer,
                        framework_id,
                        heartbeat,
                    });
                }
                Ok(MasterEvent::Error {
                    message,
                    fatal: true,
                }) => return Err(AttemptError::Fatal(SdkError::Fatal(message))),
                Ok(other) => debug!(?other, "ignoring an event before Subscribed"),
                Err(e) => return Err(failed(format!("waiting for Subscribed: {e}"))),
            }
        }
    }

    /// The event loop of one subscribed connection.
    async fn serve<S: Scheduler>(
        &mut self,
        session: Session,
        scheduler: &mut S,
    ) -> Result<SessionEnd, SdkError> {
        let Session {
            conn,
            reader,
            mut writer,
            heartbeat,
            ..
        } = session;
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let _reader_task = AbortOnDrop(tokio::spawn(read_events(reader, events_tx)));
        let mut heartbeats =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        heartbeats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = |conn: &quinn::Connection, what: String| {
            SessionEnd::Lost(match conn.close_reason() {
                Some(reason) => format!("{what} (connection closed: {reason})"),
                None => what,
            })
        };
        loop {
            let stop_requested = *self.stop.borrow_and_update();
            if let Some(failover) = stop_requested {
                // The reader stays up: a teardown waits for the master's confirmation.
                return self
                    .stop_session(conn, writer, &mut events, failover)
                    .await
                    .map(|()| SessionEnd::Stopped);
            }
            tokio::select! {
                biased;
                Ok(()) = self.stop.changed() => {}
                Some(call) = self.calls.recv() => {
                    if let Err(e) = writer.send(&call).await {
                        return Ok(lost(&conn, format!("sending {}: {e}", call_name(&call))));
                    }
                }
                event = events.recv() => match event {
                    Some(Ok(event)) => {
                        if let Some(end) = self.dispatch(event, scheduler, &mut writer, &conn).await {
                            return Ok(end);
                        }
                    }
                    Some(Err(CodecError::Closed)) | None => {
                        return Ok(lost(&conn, "the master closed the control stream".into()));
                    }
                    Some(Err(e)) => return Ok(lost(&conn, format!("reading from the master: {e}"))),
                },
                _ = heartbeats.tick() => {
                    if let Err(e) = writer.send(&SchedulerCall::Heartbeat).await {
                        return Ok(lost(&conn, format!("sending heartbeat: {e}")));
                    }
                }
            }
        }
    }

    /// Hands one event to the scheduler. `Some` ends the session.
    async fn dispatch<S: Scheduler>(
        &self,
        event: MasterEvent,
        scheduler: &mut S,
        writer: &mut FrameWriter<quinn::SendStream>,
        conn: &quinn::Connection,
    ) -> Option<SessionEnd> {
        let driver = &self.driver;
        match event {
            MasterEvent::Offers(offers) => {
                debug!(count = offers.len(), "offers received");
                scheduler.resource_offers(driver, offers).await;
            }
            MasterEvent::Rescind { offer_id } => {
                debug!(offer = %offer_id, "offer rescinded");
                scheduler.offer_rescinded(driver, &offer_id).await;
            }
            MasterEvent::Update(status) => {
                debug!(task = %status.task_id, state = %status.state, uuid = ?status.uuid, "status update");
                scheduler.status_update(driver, &status).await;
                if driver.inner.implicit_acknowledgements {
                    match ack_call(&status) {
                        Ok(Some(ack)) => {
                            if let Err(e) = writer.send(&ack).await {
                                return Some(SessionEnd::Lost(format!(
                                    "sending acknowledgement: {e} ({})",
                                    conn.close_reason().map_or_else(
                                        || "connection open".into(),
                                        |r| r.to_string()
                                    )
                                )));
                            }
                        }
                        Ok(None) => {}
                        Err(why) => warn!("{why}"),
                    }
                }
            }
            MasterEvent::Message {
                agent_id,
                executor_id,
                data,
            } => {
                scheduler
                    .framework_message(driver, &agent_id, &executor_id, &data)
                    .await;
            }
            MasterEvent::AgentLost { agent_id } => {
                info!(agent = %agent_id, "agent lost");
                scheduler.agent_lost(driver, &agent_id).await;
            }
            MasterEvent::Error {
                message,
                fatal: false,
            } => {
                warn!("master reported an error: {message}");
                scheduler.error(driver, &message).await;
            }
            MasterEvent::Error {
                message,
                fatal: true,
            } => {
                error!("master ended the framework: {message}");
                scheduler.error(driver, &message).await;
                conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"fatal error");
                return Some(SessionEnd::Fatal(message));
            }
            MasterEvent::Subscribed { framework_id, .. } => {
                warn!(framework = %framework_id, "unexpected second Subscribed; ignored");
            }
            MasterEvent::HeartbeatAck => {}
        }
        None
    }

    /// Ends a subscribed session for `stop(failover)`: sends the calls queued before the stop,
    /// then either tears the framework down (waiting for the master to confirm) or just
    /// closes the connection.
    async fn stop_session(
        &mut self,
        conn: quinn::Connection,
        mut writer: FrameWriter<quinn::SendStream>,
        events: &mut mpsc::Receiver<EventResult>,
        failover: bool,
    ) -> Result<(), SdkError> {
        let mut write_error = None;
        while let Ok(call) = self.calls.try_recv() {
            if let Err(e) = writer.send(&call).await {
                write_error = Some(format!("sending {}: {e}", call_name(&call)));
                break;
            }
        }
        let framework = self
            .info
            .framework_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if failover {
            info!(framework = %framework, failover_timeout_secs = self.info.failover_timeout_secs,
                "scheduler stopped (failover): its tasks keep running until the failover timeout");
        } else {
            if write_error.is_none() {
                if let Err(e) = writer.send(&SchedulerCall::Teardown).await {
                    write_error = Some(format!("sending Teardown: {e}"));
                }
            }
            if let Some(reason) = write_error {
                return Err(SdkError::TeardownNotDelivered {
                    addr: self.addr,
                    reason,
                });
            }
            // The master answers a teardown by removing the framework and telling us with a
            // fatal error (or by closing); either means the teardown is done. Our send side
            // stays open until then: the master stops writing to a peer whose stream ended.
            let confirmed = tokio::time::timeout(TEARDOWN_TIMEOUT, async {
                loop {
                    match events.recv().await {
                        Some(Ok(MasterEvent::Error { fatal: true, .. })) => return true,
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return false,
                    }
                }
            })
            .await;
            match confirmed {
                Ok(true) => info!(framework = %framework, "framework torn down"),
                Ok(false) => {
                    info!(framework = %framework, "teardown sent; the master closed the connection")
                }
                Err(_) => {
                    warn!(framework = %framework, "teardown sent but not confirmed within {TEARDOWN_TIMEOUT:?}")
                }
            }
            let _ = writer.get_mut().finish();
        }
        conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"scheduler stopped");
        Ok(())
    }

    /// `stop()` was called while reconnecting and the new session just came up.
    async fn finish(&mut self, session: Session, failover: bool) -> Result<(), SdkError> {
        let Session {
            conn,
            reader,
            writer,
            ..
        } = session;
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let _reader_task = AbortOnDrop(tokio::spawn(read_events(reader, events_tx)));
        self.stop_session(conn, writer, &mut events, failover).await
    }
}

/// A handshake-phase failure: a close with the master's refusal code carries the reason the
/// master gave; anything else is worth retrying.
fn refusal_or_retry(conn: &quinn::Connection, what: String) -> AttemptError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(CLOSE_REFUSED) =>
        {
            AttemptError::Fatal(SdkError::Refused(
                String::from_utf8_lossy(&close.reason).into_owned(),
            ))
        }
        _ => AttemptError::Retry(what),
    }
}

async fn read_events(
    mut reader: FrameReader<quinn::RecvStream>,
    events: mpsc::Sender<EventResult>,
) {
    loop {
        let event = reader.recv::<MasterEvent>().await;
        let end = event.is_err();
        if events.send(event).await.is_err() || end {
            return;
        }
    }
}

fn call_name(call: &SchedulerCall) -> &'static str {
    match call {
        SchedulerCall::Subscribe(_) => "Subscribe",
        SchedulerCall::Accept { .. } => "Accept",
        SchedulerCall::Decline { .. } => "Decline",
        SchedulerCall::Revive => "Revive",
        SchedulerCall::Suppress => "Suppress",
        SchedulerCall::Kill { .. } => "Kill",
        SchedulerCall::Acknowledge { .. } => "Acknowledge",
        SchedulerCall::Reconcile { .. } => "Reconcile",
        SchedulerCall::Message { .. } => "Message",
        SchedulerCall::Teardown => "Teardown",
        SchedulerCall::Heartbeat => "Heartbeat",
        SchedulerCall::PublishProgress(_) => "PublishProgress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::UpdateSource;
    use bramble_proto::TaskState;

    #[test]
    fn backoff_doubles_from_100ms_to_5s() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
            "delays"
        );
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
