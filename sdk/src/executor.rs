//! The executor side: the [`Executor`] trait a framework's executor program implements and
//! the [`ExecutorDriver`] that connects it to its agent over the Unix socket the agent names
//! in the environment.
//!
//! Shape: a reader task reads the agent's frames, settles `UpdateAck`s itself (so updates get
//! acknowledged even while a callback runs) and forwards everything else to the run loop,
//! which calls the executor one event at a time. A writer task owns the socket's write half;
//! driver calls queue frames for it, so they never block and can be made from any task.
//!
//! Callbacks must return promptly. `launch_task` in particular should start the work (spawn
//! a tokio task or a child process, keep a handle to kill it) and return: while a callback
//! runs, a `KillTask` for that very task waits behind it. The driver logs a warning when a
//! callback takes longer than a second.
//!
//! Reliability: each update gets a uuid and stays pending until the agent answers
//! `UpdateAck(uuid)` (after checkpointing it). Updates pending for longer than
//! [`UPDATE_RESEND_INTERVAL`] are sent again with the same uuid, so the agent must treat a
//! uuid it has already checkpointed as a duplicate. On `Shutdown` the driver waits briefly for
//! the acknowledgements of what `shutdown()` reported before returning.
//!
//! Agent restarts: the executor outlives its agent. When the connection drops without a
//! `Shutdown`, the driver keeps trying to connect to the same socket path and register with
//! the same token (every [`RECONNECT_INTERVAL`]) for the recovery timeout the agent put in the
//! environment (`BRAMBLE_RECOVERY_TIMEOUT_SECS`, default [`DEFAULT_RECOVERY_TIMEOUT`]); the
//! restarted agent, having re-adopted this process, answers `Registered` again, and the driver
//! resends every unacknowledged update in order and calls [`Executor::reregistered`]. While
//! disconnected, `send_status_update` still queues (the update is sent on reconnection);
//! callbacks are not called. An agent that accepts the connection and then closes it without
//! answering [`REFUSALS_TO_GIVE_UP`] times in a row does not know this executor (it refused the
//! token): the executor ends. (Once is not enough: an agent being killed can take a connection
//! into its dying listener and drop it.)

use crate::error::SdkError;
use crate::AbortOnDrop;
use async_trait::async_trait;
use bramble_proto::codec::{CodecError, FrameReader, FrameWriter, MAX_BATCH};
use bramble_proto::executor_env;
use bramble_proto::messages::{AgentToExecutor, ExecutorToAgent};
use bramble_proto::task::{ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId, TaskStatus};
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};
use uuid::Uuid;

/// How long the agent has to answer `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between attempts to reach a restarting agent.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Closes-without-an-answer in a row that count as the agent refusing this executor.
pub const REFUSALS_TO_GIVE_UP: u32 = 3;
/// How long an executor waits for its agent to come back when the agent says nothing.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// An update unacknowledged for this long is sent again.
pub const UPDATE_RESEND_INTERVAL: Duration = Duration::from_secs(10);
/// A callback slower than this is logged: it holds up kills.
const SLOW_CALLBACK: Duration = Duration::from_secs(1);
/// Bounds for flushing queued frames and awaiting final acks when the executor ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
const FINAL_ACK_GRACE: Duration = Duration::from_secs(2);

/// What a framework's executor implements. Every method runs on the driver's event loop, one
/// at a time: return promptly and spawn long work (see the module docs).
#[async_trait]
pub trait Executor: Send {
    /// The restarted agent took this executor back after a disconnection; unacknowledged
    /// updates have been resent already.
    async fn reregistered(&mut self, _driver: &ExecutorDriver, _agent_id: &AgentId) {}

    /// The agent accepted the executor.
    async fn registered(
        &mut self,
        _driver: &ExecutorDriver,
        _executor: &ExecutorInfo,
        _agent_id: &AgentId,
    ) {
    }

    /// Run `task`. Report RUNNING, then a terminal state, with `driver.send_status_update`.
    /// Start the work and return: a kill for this task cannot be delivered until this returns.
    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo);

    /// Kill the task and report KILLED (or whichever terminal state it reached first).
    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId);

    /// Bytes from the scheduler (`SchedulerDriver::send_framework_message`).
    async fn framework_message(&mut self, _driver: &ExecutorDriver, _data: &[u8]) {}

    /// The agent asks the executor to end: kill what still runs and report it. The driver
    /// returns from `run_executor` after this.
    async fn shutdown(&mut self, _driver: &ExecutorDriver) {}
}

/// Runs `executor` with the socket and ids the agent put in the environment
/// (`BRAMBLE_AGENT_SOCKET`, `BRAMBLE_FRAMEWORK_ID`, `BRAMBLE_EXECUTOR_ID`,
/// `BRAMBLE_EXECUTOR_TOKEN`). Returns the executor after the agent's `Shutdown` (or
/// `ExecutorDriver::stop`), or an error when the agent goes away.
pub async fn run_executor<E: Executor>(executor: E) -> Result<E, SdkError> {
    let var = |var: &'static str| std::env::var(var).map_err(|_| SdkError::MissingEnv { var });
    let socket = var(executor_env::AGENT_SOCKET)?;
    let framework_id = var(executor_env::FRAMEWORK_ID)?;
    let executor_id = var(executor_env::EXECUTOR_ID)?;
    let token = var(executor_env::EXECUTOR_TOKEN)?;
    run_executor_with(
        socket,
        framework_id.into(),
        executor_id.into(),
        token,
        executor,
    )
    .await
}

/// [`run_executor`] with explicit parameters, for tests and custom launchers. The recovery
/// timeout comes from the environment as for [`run_executor`].
pub async fn run_executor_with<E: Executor>(
    socket_path: impl AsRef<Path>,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    token: String,
    mut executor: E,
) -> Result<E, SdkError> {
    let path: PathBuf = socket_path.as_ref().to_path_buf();
    let recovery_timeout = std::env::var(executor_env::RECOVERY_TIMEOUT_SECS)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RECOVERY_TIMEOUT);
    let hello = Hello {
        path: path.clone(),
        framework_id: framework_id.clone(),
        executor_id: executor_id.clone(),
        token,
    };
    // The agent may be restarting right now: the first connection is retried like a
    // reconnection.
    let (reader, writer, agent_id, info) = hello.connect(recovery_timeout, None).await?;
    info!(framework = %framework_id, executor = %executor_id, agent = %agent_id, "executor registered with its agent");

    let (driver, out_rx, mut stop_rx) = ExecutorDriver::new(framework_id, executor_id, agent_id);
    let (writers_tx, writers_rx) = mpsc::unbounded_channel();
    let _ = writers_tx.send(writer);
    let _writer_task = AbortOnDrop(tokio::spawn(write_frames(writers_rx, out_rx)));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut reader_task = AbortOnDrop(tokio::spawn(read_frames(
        reader,
        driver.clone(),
        events_tx.clone(),
    )));

    timed(
        "registered",
        executor.registered(&driver, &info, &driver.inner.agent_id),
    )
    .await;
    let mut resend = tokio::time::interval(UPDATE_RESEND_INTERVAL);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: Result<(), SdkError> = loop {
        tokio::select! {
            biased;
            Ok(()) = stop_rx.changed() => {
                if *stop_rx.borrow_and_update() {
                    info!("executor stopped by its driver");
                    break Ok(());
                }
            }
            event = events.recv() => match event {
                Some(Ok(AgentToExecutor::LaunchTask(task))) => {
                    debug!(task = %task.task_id, "launching task");
                    lock(&driver.inner.known).insert(task.task_id.clone());
                    timed("launch_task", executor.launch_task(&driver, task)).await;
                }
                Some(Ok(AgentToExecutor::KillTask(task_id))) => {
                    info!(task = %task_id, "kill requested");
                    timed("kill_task", executor.kill_task(&driver, &task_id)).await;
                }
                Some(Ok(AgentToExecutor::Message(data))) => {
                    timed("framework_message", executor.framework_message(&driver, &data)).await;
                }
                Some(Ok(AgentToExecutor::Shutdown)) => {
                    info!("agent asked the executor to shut down");
                    timed("shutdown", executor.shutdown(&driver)).await;
                    break Ok(());
                }
                Some(Ok(AgentToExecutor::Registered { .. })) => {
                    warn!("agent sent Registered again; ignored");
                }
                // Settled by the reader; never forwarded.
                Some(Ok(AgentToExecutor::UpdateAck(_))) => {}
                Some(Err(e)) => {
                    let why = agent_gone(&driver, Some(e));
                    // Nothing is acknowledged while disconnected, so what this executor
                    // knows cannot shrink meanwhile.
                    let known: Vec<TaskId> = lock(&driver.inner.known).iter().cloned().collect();
                    let reconnected = tokio::select! {
                        r = hello.connect(recovery_timeout, Some(known)) => r,
                        Ok(()) = stop_rx.changed() => {
                            info!("executor stopped by its driver while reconnecting");
                            break Ok(());
                        }
                    };
                    match reconnected {
                        Ok((reader, writer, agent_id, _)) => {
                            // The writer task takes the new connection before anything queued
                            // after this point; then everything unacknowledged goes again.
                            let _ = writers_tx.send(writer);
                            reader_task = AbortOnDrop(tokio::spawn(read_frames(
                                reader,
                                driver.clone(),
                                events_tx.clone(),
                            )));
                            let resent = driver.resend_stale(Duration::ZERO);
                            info!(agent = %agent_id, resent, "reconnected to the restarted agent");
                            timed("reregistered", executor.reregistered(&driver, &agent_id)).await;
                        }
                        Err(e) => {
                            warn!("giving up on the agent: {e}");
                            break Err(SdkError::Agent(format!("{why}; and then: {e}")));
                        }
                    }
                }
                // The run loop holds a sender itself: never reached.
                None => break Err(agent_gone(&driver, None)),
            },
            _ = resend.tick() => {
                driver.resend_stale(UPDATE_RESEND_INTERVAL);
            }
        }
    };
    drop(reader_task);
    if outcome.is_ok() {
        driver.drain(&mut events).await;
    }
    *lock(&driver.inner.stopped) = true;
    outcome.map(|()| executor)
}

/// What the executor presents to its agent, on the first connection and every reconnection.
struct Hello {
    path: PathBuf,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    token: String,
}

type Connected = (
    FrameReader<OwnedReadHalf>,
    FrameWriter<OwnedWriteHalf>,
    AgentId,
    ExecutorInfo,
);

/// Why one attempt to register failed, and whether another attempt may succeed.
enum Attempt {
    /// Nobody listening yet (agent restarting) or no answer in time: try again.
    Retry(SdkError),
    /// Accepted, then closed without an answer: a refusal, or an agent dying right then.
    Closed(SdkError),
    /// The agent answered but refused, or spoke nonsense: give up.
    Fatal(SdkError),
}

impl Hello {
    /// Connects and registers, retrying every [`RECONNECT_INTERVAL`] while the agent is not
    /// there, for at most `timeout`. `known`: on a reconnection, the tasks this executor
    /// still knows (sent as `Reregister`); `None` on the first connection.
    async fn connect(
        &self,
        timeout: Duration,
        known: Option<Vec<TaskId>>,
    ) -> Result<Connected, SdkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts = 0u32;
        let mut closed_in_a_row = 0u32;
        loop {
            attempts += 1;
            let last = match self.attempt(known.as_deref()).await {
                Ok(connected) => return Ok(connected),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Closed(e)) => {
                    closed_in_a_row += 1;
                    if closed_in_a_row >= REFUSALS_TO_GIVE_UP {
                        return Err(e);
                    }
                    e
                }
                Err(Attempt::Retry(e)) => {
                    closed_in_a_row = 0;
                    e
                }
            };
            if tokio::time::Instant::now() + RECONNECT_INTERVAL > deadline {
                return Err(SdkError::Agent(format!(
                    "the agent at {} did not take this executor back within {timeout:?} ({attempts} attempts); last error: {last}",
                    self.path.display()
                )));
            }
            // A retry interval, not a stand-in for an event: a Unix socket that does not
            // exist yet cannot be waited on.
            tokio::time::sleep(RECONNECT_INTERVAL).await;
        }
    }

    async fn attempt(&self, known: Option<&[TaskId]>) -> Result<Connected, Attempt> {
        let stream = UnixStream::connect(&self.path).await.map_err(|source| {
            Attempt::Retry(SdkError::AgentSocket {
                path: self.path.clone(),
                source,
            })
        })?;
        let (read_half, write_half) = stream.into_split();
        let mut reader = FrameReader::new(read_half);
        let mut writer = FrameWriter::new(write_half);
        let hello = match known {
            None => ExecutorToAgent::Register {
                framework_id: self.framework_id.clone(),
                executor_id: self.executor_id.clone(),
                token: self.token.clone(),
            },
            Some(known) => ExecutorToAgent::Reregister {
                framework_id: self.framework_id.clone(),
                executor_id: self.executor_id.clone(),
                token: self.token.clone(),
                known_tasks: known.to_vec(),
            },
        };
        writer.send(&hello).await.map_err(|e| {
            Attempt::Retry(SdkError::protocol(
                format!("sending Register to the agent at {}", self.path.display()),
                e,
            ))
        })?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, reader.recv::<AgentToExecutor>())
            .await
            .map_err(|_| {
                Attempt::Retry(SdkError::Agent(format!(
                    "no answer to Register from {} within {REGISTER_TIMEOUT:?}",
                    self.path.display()
                )))
            })?
            .map_err(|e| {
                Attempt::Closed(SdkError::protocol(
                    "the agent closed the connection instead of answering Register (it does not know this executor or its token)",
                    e,
                ))
            })?;
        match reply {
            AgentToExecutor::Registered {
                agent_id,
                framework_id,
                executor,
            } => {
                if framework_id != self.framework_id {
                    warn!(expected = %self.framework_id, got = %framework_id, "agent registered us under another framework id");
                }
                Ok((reader, writer, agent_id, executor))
            }
            other => Err(Attempt::Fatal(SdkError::Agent(format!(
                "expected Registered in answer to Register, got {}",
                message_name(&other)
            )))),
        }
    }
}

fn agent_gone(driver: &ExecutorDriver, error: Option<CodecError>) -> SdkError {
    let why = match error {
        None | Some(CodecError::Closed) => "the agent closed the connection".to_string(),
        Some(e) => format!("reading from the agent: {e}"),
    };
    let pending = lock(&driver.inner.pending).len();
    warn!(pending_updates = pending, "{why}; executor ending");
    SdkError::Agent(format!(
        "{why} without a Shutdown ({pending} status updates unacknowledged)"
    ))
}

/// Runs one callback, warning when it holds the event loop for long.
async fn timed(what: &str, callback: impl Future<Output = ()>) {
    let started = Instant::now();
    callback.await;
    let took = started.elapsed();
    if took > SLOW_CALLBACK {
        warn!("{what} took {took:.1?}: kills and messages wait while a callback runs; spawn long work and return");
    }
}

/// A cheap, cloneable handle for reporting to the agent, usable from any task.
#[derive(Clone)]
pub struct ExecutorDriver {
    inner: Arc<Inner>,
}

struct Inner {
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    agent_id: AgentId,
    out: mpsc::UnboundedSender<Outbound>,
    /// Updates sent and not yet acknowledged, oldest first.
    pending: Mutex<Vec<Pending>>,
    /// Tasks handed to this executor whose terminal update the agent has not acknowledged:
    /// what it tells a restarted agent it knows (`ExecutorToAgent::Reregister`).
    known: Mutex<HashSet<TaskId>>,
    acked: Notify,
    stopped: Mutex<bool>,
    stop: watch::Sender<bool>,
}

struct Pending {
    status: TaskStatus,
    sent_at: Instant,
}

pub(crate) enum Outbound {
    Frame(ExecutorToAgent),
    /// Frames that leave in the same write (`send_status_updates`).
    Frames(Vec<ExecutorToAgent>),
    /// Answered once every frame queued before it is written.
    Flush(oneshot::Sender<()>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panic elsewhere cannot leave it half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExecutorDriver {
    /// A driver for the executor `executor_id`, and the ends its writer and run loop read.
    fn new(
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        agent_id: AgentId,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<Outbound>,
        watch::Receiver<bool>,
    ) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = ExecutorDriver {
            inner: Arc::new(Inner {
                framework_id,
                executor_id,
                agent_id,
                out: out_tx,
                pending: Mutex::new(Vec::new()),
                known: Mutex::new(HashSet::new()),
                acked: Notify::new(),
                stopped: Mutex::new(false),
                stop: stop_tx,
            }),
        };
        (driver, out_rx, stop_rx)
    }

    /// A driver with no agent: what it sends goes to the returned receiver. For
    /// `crate::testing`, which plays the agent.
    #[cfg(feature = "testing")]
    pub(crate) fn detached(
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        agent_id: AgentId,
    ) -> (Self, mpsc::UnboundedReceiver<Outbound>) {
        let (driver, out_rx, _) = Self::new(framework_id, executor_id, agent_id);
        (driver, out_rx)
    }

    /// Whether `stop` was called.
    #[cfg(feature = "testing")]
    pub(crate) fn stop_requested(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// The agent acknowledged the update with `uuid` (see `settle`).
    #[cfg(feature = "testing")]
    pub(crate) fn acknowledge(&self, uuid: Uuid) {
        self.settle(uuid);
    }

    /// Sends a status update to the agent, which checkpoints it and relays it to the
    /// scheduler. Fills in the framework, executor and agent ids, sets `source = Executor` and
    /// a fresh v4 uuid when none is set. Returns the uuid; the update stays in
    /// [`ExecutorDriver::pending_updates`] until the agent acknowledges it. An update over the
    /// cluster's input limit (`data` near 1 MiB) is [`SdkError::TooLarge`] and is not sent.
    pub fn send_status_update(&self, status: TaskStatus) -> Result<Uuid, SdkError> {
        self.check_running()?;
        let (status, update) = self.prepare(status)?;
        let uuid = status.uuid.unwrap_or_default();
        // Queue while holding the lock so that pending order is wire order.
        let mut pending = lock(&self.inner.pending);
        self.send(update)?;
        pending.push(Pending {
            status,
            sent_at: Instant::now(),
        });
        Ok(uuid)
    }

    /// Sends several status updates in one write, in order, each as
    /// [`send_status_update`](Self::send_status_update) would. For a task that ended before
    /// its RUNNING went out: its RUNNING and its terminal update reach the agent together, and
    /// the agent records both in one commit (one fsync instead of two) before relaying either.
    /// Nothing is sent if any of them is refused (too large).
    pub fn send_status_updates(&self, statuses: Vec<TaskStatus>) -> Result<Vec<Uuid>, SdkError> {
        self.check_running()?;
        let prepared = statuses
            .into_iter()
            .map(|s| self.prepare(s))
            .collect::<Result<Vec<_>, _>>()?;
        let uuids = prepared
            .iter()
            .map(|(s, _)| s.uuid.unwrap_or_default())
            .collect();
        let (statuses, frames): (Vec<TaskStatus>, Vec<ExecutorToAgent>) =
            prepared.into_iter().unzip();
        let mut pending = lock(&self.inner.pending);
        self.inner
            .out
            .send(Outbound::Frames(frames))
            .map_err(|_| SdkError::Agent("the connection to the agent is closed".into()))?;
        let now = Instant::now();
        pending.extend(statuses.into_iter().map(|status| Pending {
            status,
            sent_at: now,
        }));
        Ok(uuids)
    }

    /// Fills in what the driver sets on every update and checks its size: the update to keep
    /// pending and the frame to send.
    fn prepare(&self, mut status: TaskStatus) -> Result<(TaskStatus, ExecutorToAgent), SdkError> {
        let uuid = *status.uuid.get_or_insert_with(Uuid::new_v4);
        status.source = UpdateSource::Executor;
        status.framework_id = self.inner.framework_id.clone();
        status
            .executor_id
            .get_or_insert_with(|| self.inner.executor_id.clone());
        status
            .agent_id
            .get_or_insert_with(|| self.inner.agent_id.clone());
        debug!(task = %status.task_id, state = %status.state, %uuid, "sending status update");
        let update = ExecutorToAgent::Update(status.clone());
        SdkError::check_size("the status update", &update)?;
        Ok((status, update))
    }

    /// Sends bytes to the scheduler (best effort: not checkpointed, not resent).
    pub fn send_framework_message(&self, data: Vec<u8>) -> Result<(), SdkError> {
        self.check_running()?;
        let message = ExecutorToAgent::Message(data);
        SdkError::check_size("the framework message", &message)?;
        self.send(message)
    }

    /// Updates sent but not yet acknowledged by the agent, oldest first.
    pub fn pending_updates(&self) -> Vec<TaskStatus> {
        lock(&self.inner.pending)
            .iter()
            .map(|p| p.status.clone())
            .collect()
    }

    /// Ends the executor: `run_executor` flushes what was sent and returns. Usually the agent
    /// decides (with `Shutdown`); this is for executors that finish on their own.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    pub fn framework_id(&self) -> &FrameworkId {
        &self.inner.framework_id
    }

    pub fn executor_id(&self) -> &ExecutorId {
        &self.inner.executor_id
    }

    pub fn agent_id(&self) -> &AgentId {
        &self.inner.agent_id
    }

    fn check_running(&self) -> Result<(), SdkError> {
        if *lock(&self.inner.stopped) {
            Err(SdkError::Stopped)
        } else {
            Ok(())
        }
    }

    fn send(&self, msg: ExecutorToAgent) -> Result<(), SdkError> {
        self.inner
            .out
            .send(Outbound::Frame(msg))
            .map_err(|_| SdkError::Agent("the connection to the agent is closed".into()))
    }

    fn settle(&self, uuid: Uuid) {
        let mut pending = lock(&self.inner.pending);
        let Some(at) = pending.iter().position(|p| p.status.uuid == Some(uuid)) else {
            debug!(%uuid, "acknowledgement for an update not pending (duplicate ack?)");
            self.inner.acked.notify_one();
            return;
        };
        let settled = pending.remove(at);
        drop(pending);
        if settled.status.state.is_terminal() {
            lock(&self.inner.known).remove(&settled.status.task_id);
        }
        self.inner.acked.notify_one();
    }

    /// Sends again, in order, every update unacknowledged for at least `older_than`.
    /// Returns how many.
    fn resend_stale(&self, older_than: Duration) -> usize {
        let mut pending = lock(&self.inner.pending);
        let mut resent = 0;
        for p in pending
            .iter_mut()
            .filter(|p| p.sent_at.elapsed() >= older_than)
        {
            info!(task = %p.status.task_id, uuid = ?p.status.uuid, "resending unacknowledged status update");
            if self
                .send(ExecutorToAgent::Update(p.status.clone()))
                .is_err()
            {
                break;
            }
            p.sent_at = Instant::now();
            resent += 1;
        }
        resent
    }

    /// Before returning normally: write everything queued, then give the agent a moment to
    /// acknowledge the last updates.
    async fn drain(
        &self,
        events: &mut mpsc::UnboundedReceiver<Result<AgentToExecutor, CodecError>>,
    ) {
        let (flushed_tx, flushed) = oneshot::channel();
        if self.inner.out.send(Outbound::Flush(flushed_tx)).is_ok()
            && tokio::time::timeout(FLUSH_TIMEOUT, flushed).await.is_err()
        {
            warn!("queued messages not written to the agent within {FLUSH_TIMEOUT:?}");
        }
        let deadline = tokio::time::Instant::now() + FINAL_ACK_GRACE;
        loop {
            let acked = self.inner.acked.notified();
            if lock(&self.inner.pending).is_empty() {
                return;
            }
            tokio::select! {
                _ = acked => {}
                event = events.recv() => match event {
                    Some(Ok(_)) => {}
                    // The agent is gone; nothing more can be acknowledged.
                    Some(Err(_)) | None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let left = lock(&self.inner.pending).len();
        if left > 0 {
            warn!(
                pending_updates = left,
                "ending with unacknowledged status updates"
            );
        }
    }
}

/// Owns the connection's write half; a reconnection hands it a new one through `writers`.
/// Frames queued while there is no working connection are dropped: updates among them stay
/// pending and are resent after the reconnection, framework messages are best effort.
async fn write_frames(
    mut writers: mpsc::UnboundedReceiver<FrameWriter<OwnedWriteHalf>>,
    mut out: mpsc::UnboundedReceiver<Outbound>,
) {
    let mut writer: Option<FrameWriter<OwnedWriteHalf>> = None;
    let mut items = Vec::with_capacity(MAX_BATCH);
    let mut frames = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            // A new connection first, so frames queued after it was made go out on it.
            biased;
            w = writers.recv() => match w {
                Some(w) => writer = Some(w),
                None => return,
            },
            n = out.recv_many(&mut items, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                // Everything queued so far leaves in one write; a flush is answered once the
                // frames queued before it are written.
                for item in items.drain(..) {
                    match item {
                        Outbound::Frame(msg) => frames.push(msg),
                        Outbound::Frames(msgs) => frames.extend(msgs),
                        Outbound::Flush(done) => {
                            write_batch(&mut writer, &mut frames).await;
                            let _ = done.send(());
                        }
                    }
                }
                write_batch(&mut writer, &mut frames).await;
            }
        }
    }
}

/// Writes `frames` (emptying it) if there is a working connection; a failed write drops the
/// connection until the next one comes.
async fn write_batch(
    writer: &mut Option<FrameWriter<OwnedWriteHalf>>,
    frames: &mut Vec<ExecutorToAgent>,
) {
    if frames.is_empty() {
        return;
    }
    if let Some(w) = writer.as_mut() {
        if let Err(e) = w.send_batch(frames).await {
            warn!("writing to the agent failed: {e}");
            *writer = None;
        }
    }
    frames.clear();
}

async fn read_frames(
    mut reader: FrameReader<OwnedReadHalf>,
    driver: ExecutorDriver,
    events: mpsc::UnboundedSender<Result<AgentToExecutor, CodecError>>,
) {
    loop {
        match reader.recv::<AgentToExecutor>().await {
            Ok(AgentToExecutor::UpdateAck(uuid)) => driver.settle(uuid),
            Ok(msg) => {
                if events.send(Ok(msg)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = events.send(Err(e));
                return;
            }
        }
    }
}

fn message_name(msg: &AgentToExecutor) -> &'static str {
    match msg {
        AgentToExecutor::Registered { .. } => "Registered",
        AgentToExecutor::LaunchTask(_) => "LaunchTask",
        AgentToExecutor::KillTask(_) => "KillTask",
        AgentToExecutor::UpdateAck(_) => "UpdateAck",
        AgentToExecutor::Message(_) => "Message",
        AgentToExecutor::Shutdown => "Shutdown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::TaskState;

    fn driver() -> (ExecutorDriver, mpsc::UnboundedReceiver<Outbound>) {
        let (driver, out, _stop) = ExecutorDriver::new(
            FrameworkId::from("fw"),
            ExecutorId::from("exec"),
            AgentId::from("agent"),
        );
        (driver, out)
    }

    fn update(task: &str, state: TaskState) -> TaskStatus {
        crate::status(&TaskId::from(task), state)
    }

    #[test]
    fn updates_sent_together_are_one_item_for_the_writer_in_order_and_pending() {
        let (driver, mut out) = driver();
        let uuids = driver
            .send_status_updates(vec![
                update("t1", TaskState::Running),
                update("t1", TaskState::Finished),
            ])
            .unwrap();
        let Ok(Outbound::Frames(frames)) = out.try_recv() else {
            panic!("one item holding both frames");
        };
        assert!(out.try_recv().is_err(), "nothing else queued");
        let sent: Vec<_> = frames
            .iter()
            .map(|f| match f {
                ExecutorToAgent::Update(s) => (s.state, s.uuid),
                other => panic!("not an update: {other:?}"),
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                (TaskState::Running, Some(uuids[0])),
                (TaskState::Finished, Some(uuids[1]))
            ]
        );
        let pending: Vec<_> = driver.pending_updates().iter().map(|s| s.uuid).collect();
        assert_eq!(pending, vec![Some(uuids[0]), Some(uuids[1])]);
        // Acknowledged one by one, like any update.
        driver.settle(uuids[0]);
        driver.settle(uuids[1]);
        assert!(driver.pending_updates().is_empty());
    }

    #[test]
    fn updates_sent_together_are_all_or_nothing() {
        let (driver, mut out) = driver();
        let mut huge = update("t1", TaskState::Finished);
        huge.data = vec![0; bramble_proto::codec::MAX_FRAME_BYTES + 1];
        let err = driver
            .send_status_updates(vec![update("t1", TaskState::Running), huge])
            .unwrap_err();
        assert!(matches!(err, SdkError::TooLarge { .. }), "{err}");
        assert!(out.try_recv().is_err(), "nothing sent");
        assert!(driver.pending_updates().is_empty());
    }
}
