//! The agent's runtime: the one task that owns the core (`core/`) and every piece of I/O it
//! stands for. The edges (`master_link.rs`, `executor_socket.rs`, container watchers) send it
//! [`Input`]s; it hands them to the core as plain data, carries out the [`Effect`]s the core
//! returns — launching and killing containers, the status update log, the run checkpoints,
//! the sandbox gc — and feeds their results back before it takes the next input.
//!
//! Group commit, as in the master's server loop: after a burst of inputs (at most
//! [`MAX_BURST`]) or a tick, the burst's writes are made durable — agent id, run files, then
//! the runs' task list changes and the status updates in one write and one fdatasync of the
//! update log — and only then are the burst's messages released to the master and the
//! executors, and the due updates sent. Nothing is acknowledged before it is durable.
//! Once a large burst is over, the memory it freed goes back to the OS
//! (`bramble_proto::memory`).

use crate::checkpoint::{Checkpoints, RunCheckpoint, TaskChange};
use crate::containerizer::{self, Container, Containerizer};
use crate::core::{
    Admission, Agent, AgentView, ContainerInfo, ContainerKey, Effect, ExecutorAuth,
    Input as CoreInput, Recorded, RecoveredRun, SandboxRequest,
};
use crate::gc::GcHandle;
use crate::status_updates::{StatusUpdateError, StatusUpdateManager};
use bramble_proto::memory;
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, MasterToAgent};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, TaskId, TaskStatus};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

/// What the edges tell the runtime. Unlike the core's inputs these carry the channels the
/// answers go back on.
#[derive(Debug)]
pub enum Input {
    /// The master link wants the Register message for a fresh connection.
    BuildRegistration(oneshot::Sender<AgentToMaster>),
    MasterConnected {
        agent_id: AgentId,
        tx: mpsc::Sender<AgentToMaster>,
    },
    MasterDisconnected,
    FromMaster(MasterToAgent),
    ExecutorConnected {
        serial: u64,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        auth: ExecutorAuth,
        tx: ExecutorTx,
        reply: oneshot::Sender<Result<Admission, String>>,
    },
    /// Plain data for the core as it is: executors' messages and disconnections, containers'
    /// ends.
    Core(CoreInput),
    /// For tests and the CLI: a summary of what runs here.
    Inspect(oneshot::Sender<AgentView>),
    /// The Mesos edge asks whether an executor runs here (see `Agent::executor_known`).
    ExecutorKnown {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A launch that fetched artifacts first, carried out in a task of its own, is over.
    Launched {
        container: ContainerKey,
        result: Result<Container, containerizer::ContainerError>,
    },
}

/// Where the messages for one executor connection go.
#[derive(Debug, Clone)]
pub enum ExecutorTx {
    /// A native executor's socket writer, one message at a time (its queue is bounded by
    /// bytes too: an executor that stops reading cannot make the agent hold gigabytes).
    Socket(bramble_proto::queue::QueueTx<AgentToExecutor>),
    /// A Mesos executor's event stream (`mesos/`): each committed burst's messages for it in
    /// one batch, so the tasks of one group launch arrive together (one LAUNCH_GROUP).
    Mesos(mpsc::Sender<Vec<AgentToExecutor>>),
}

/// How the agent stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    KillEverything,
    LeaveRunning,
}

/// Inputs handled before a group commit at most.
pub const MAX_BURST: usize = 512;

/// The I/O the runtime owns, beside the core.
pub struct Edges {
    pub containerizer: Arc<Containerizer>,
    pub updates: StatusUpdateManager,
    pub checkpoints: Checkpoints,
    pub work_dir: PathBuf,
    pub kill_grace: Duration,
    pub gc: crate::gc::GcPolicy,
}

pub struct Runtime {
    core: Agent,
    containerizer: Arc<Containerizer>,
    updates: StatusUpdateManager,
    checkpoints: Checkpoints,
    /// Removes finished sandboxes by age and disk use; its task ends with the agent.
    gc: GcHandle,
    work_dir: PathBuf,
    kill_grace: Duration,
    /// Where container watchers report an end.
    inputs: mpsc::Sender<Input>,
    master: Option<mpsc::Sender<AgentToMaster>>,
    executors: HashMap<u64, ExecutorTx>,
    executor_replies: HashMap<u64, oneshot::Sender<Result<Admission, String>>>,
    containers: HashMap<ContainerKey, Arc<Container>>,
    /// The burst's messages, released after its commit.
    outbox: Vec<Effect>,
    /// Status updates could not be made durable (e.g. a full disk): since when, and when
    /// that was last logged.
    unrecorded_since: Option<(Instant, Instant)>,
}

impl Runtime {
    /// Wraps `core` with its edges. Needs a tokio runtime (the gc task starts here).
    pub fn new(core: Agent, edges: Edges, inputs: mpsc::Sender<Input>) -> Self {
        Self {
            core,
            containerizer: edges.containerizer,
            updates: edges.updates,
            checkpoints: edges.checkpoints,
            gc: GcHandle::spawn(edges.work_dir.clone(), edges.gc),
            work_dir: edges.work_dir,
            kill_grace: edges.kill_grace,
            inputs,
            master: None,
            executors: HashMap::new(),
            executor_replies: HashMap::new(),
            containers: HashMap::new(),
            outbox: Vec::new(),
            unrecorded_since: None,
        }
    }

    /// Takes over what a previous agent process left (see `core/recovery.rs`): its run files
    /// and the task lists in the update log. Commits the checkpoints and LOST updates that
    /// produces, before anything is served. `reboot`: why nothing can have survived, or `None`
    /// to re-adopt live processes.
    pub async fn recover(&mut self, runs: Vec<RunCheckpoint>, reboot: Option<String>) {
        let runs = runs
            .into_iter()
            .map(|checkpoint| {
                // After a reboot no pid is even looked at: it means nothing in this boot.
                let alive = reboot.is_none()
                    && checkpoint.pid != 0
                    && containerizer::is_same_process(checkpoint.pid, checkpoint.start_time);
                RecoveredRun { checkpoint, alive }
            })
            .collect();
        let logged = self.updates.logged_runs();
        let (_, effects) = self.core.recover(runs, logged, reboot, Instant::now());
        self.carry_out(effects).await;
        self.commit().await;
    }

    /// Handles one input from an edge, carrying out what it causes (messages wait for the
    /// next [`commit`](Self::commit)).
    pub async fn input(&mut self, input: Input) {
        let input = match input {
            Input::BuildRegistration(reply) => {
                let _ = reply.send(self.core.registration());
                return;
            }
            Input::Inspect(reply) => {
                let _ = reply.send(self.core.view(self.updates.pending()));
                return;
            }
            Input::ExecutorKnown {
                framework_id,
                executor_id,
                reply,
            } => {
                let _ = reply.send(self.core.executor_known(&framework_id, &executor_id));
                return;
            }
            Input::MasterConnected { agent_id, tx } => {
                self.master = Some(tx);
                // Whatever was in flight to the previous master may be lost.
                self.updates.resend_all_now();
                CoreInput::MasterConnected { agent_id }
            }
            Input::MasterDisconnected => {
                self.master = None;
                CoreInput::MasterDisconnected
            }
            Input::FromMaster(msg) => CoreInput::FromMaster(msg),
            Input::Launched { container, result } => self.launched(container, result),
            Input::ExecutorConnected {
                serial,
                framework_id,
                executor_id,
                auth,
                tx,
                reply,
            } => {
                self.executors.insert(serial, tx);
                self.executor_replies.insert(serial, reply);
                CoreInput::ExecutorConnected {
                    serial,
                    framework_id,
                    executor_id,
                    auth,
                }
            }
            Input::Core(input) => {
                match &input {
                    CoreInput::ContainerExited { container, .. } => {
                        self.containers.remove(container);
                    }
                    CoreInput::ExecutorDisconnected { serial, .. } => {
                        self.executors.remove(serial);
                    }
                    _ => {}
                }
                input
            }
        };
        let effects = self.core.handle(input, Instant::now());
        self.carry_out(effects).await;
    }

    /// Periodic work: the core's timeouts, then a commit (which retries unwritten updates and
    /// sends the due resends).
    pub async fn tick(&mut self) {
        let effects = self.core.tick(Instant::now());
        self.carry_out(effects).await;
        self.commit().await;
    }

    /// Carries out `effects` and whatever their results cause, in order; messages go to the
    /// outbox.
    async fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let answer = match effect {
                Effect::Launch {
                    container,
                    mut spec,
                    supervised,
                } => {
                    spec.exit_status_file = self.exit_status_file(&container, supervised);
                    if spec.artifacts.is_empty() {
                        let result = self.containerizer.launch(spec).await;
                        Some(self.launched(container, result))
                    } else {
                        // Fetching may take minutes: the launch goes on in a task of its own
                        // and comes back as an input (a kill meanwhile is carried out once it
                        // is up: see the core's `container_started`).
                        let containerizer = Arc::clone(&self.containerizer);
                        let inputs = self.inputs.clone();
                        tokio::spawn(async move {
                            let result = containerizer.launch(spec).await;
                            let _ = inputs.send(Input::Launched { container, result }).await;
                        });
                        None
                    }
                }
                Effect::Adopt {
                    container,
                    mut spec,
                    supervised,
                } => {
                    spec.exit_status_file = self.exit_status_file(&container, supervised);
                    let adopted = self.containerizer.recover(spec);
                    let info = container_info(&adopted);
                    self.watch(container.clone(), adopted);
                    Some(CoreInput::Adopted { container, info })
                }
                Effect::Resize { container, limits } => {
                    if let Some(c) = self.containers.get(&container) {
                        if let Err(e) = c.set_limits(limits.cpus, limits.mem_mib) {
                            warn!(container = %container, "could not change the container's limits: {e}");
                        }
                    }
                    None
                }
                Effect::Kill { container, after } => {
                    if let Some(c) = self.containers.get(&container) {
                        let killer = c.killer();
                        let grace = self.kill_grace;
                        tokio::spawn(async move {
                            if !after.is_zero() {
                                tokio::time::sleep(after).await;
                            }
                            killer.kill(grace).await
                        });
                    }
                    None
                }
                Effect::AcknowledgeUpdate {
                    framework_id,
                    task_id,
                    uuid,
                } => self.acknowledge(framework_id, task_id, uuid),
                Effect::ForgetFrameworkUpdates { framework_id } => {
                    match self.updates.forget_framework(&framework_id) {
                        Ok(n) if n > 0 => {
                            info!(framework = %framework_id, dropped = n, "dropped unacknowledged updates of a removed framework")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            error!(framework = %framework_id, "could not drop updates of a removed framework: {e}")
                        }
                    }
                    None
                }
                Effect::ScheduleGc { sandbox } => {
                    self.gc.schedule(sandbox);
                    None
                }
                Effect::SweepGcNow => {
                    self.gc.sweep_now();
                    None
                }
                Effect::ServeSandbox {
                    framework_id,
                    task_id,
                    sandbox,
                    request,
                } => {
                    self.serve_sandbox(framework_id, task_id, sandbox, request);
                    None
                }
                msg @ (Effect::ToMaster(_)
                | Effect::ToExecutor { .. }
                | Effect::AnswerExecutor { .. }) => {
                    self.outbox.push(msg);
                    None
                }
            };
            if let Some(input) = answer {
                queue.extend(self.core.handle(input, Instant::now()));
            }
        }
    }

    /// A launch's outcome for the core; a started container is watched from now on.
    fn launched(
        &mut self,
        container: ContainerKey,
        result: Result<Container, containerizer::ContainerError>,
    ) -> CoreInput {
        let result = result.map(|c| {
            let info = container_info(&c);
            self.watch(container.clone(), c);
            info
        });
        CoreInput::Launched { container, result }
    }

    /// Where a supervised (command task's) container records its exit status.
    fn exit_status_file(&self, container: &ContainerKey, supervised: bool) -> Option<PathBuf> {
        supervised.then(|| self.checkpoints.exit_status_file(container))
    }

    fn acknowledge(
        &mut self,
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: uuid::Uuid,
    ) -> Option<CoreInput> {
        match self.updates.acknowledge(&framework_id, &task_id, uuid) {
            Ok(true) => {
                let settled = !self.updates.has_pending(&framework_id, &task_id);
                Some(CoreInput::UpdateAcknowledged {
                    framework_id,
                    task_id,
                    settled,
                })
            }
            Ok(false) => {
                debug!(task = %task_id, %uuid, "acknowledgement for an unknown update");
                None
            }
            Err(e) => {
                error!(task = %task_id, %uuid, "could not remove acknowledged update: {e}");
                None
            }
        }
    }

    /// Reports the container's end as an input once it comes.
    fn watch(&mut self, key: ContainerKey, container: Container) {
        let container = Arc::new(container);
        self.containers.insert(key.clone(), Arc::clone(&container));
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let report = container.wait().await;
            let exited = CoreInput::ContainerExited {
                container: key,
                report,
            };
            let _ = inputs.send(Input::Core(exited)).await;
        });
    }

    /// The group commit: makes the burst's writes durable, tells the core what was recorded,
    /// then releases the burst's messages and sends the due updates.
    pub async fn commit(&mut self) {
        let writes = self.core.take_writes();
        if let Some(id) = &writes.agent_id {
            if let Err(e) = crate::persist_agent_id(&self.work_dir, id) {
                error!("could not persist agent id {id}: {e}");
            }
        }
        for key in &writes.removed_runs {
            self.checkpoints.remove_run(key);
        }
        let mut updates = writes.updates;
        if !writes.runs.is_empty() {
            let refs: Vec<&RunCheckpoint> = writes.runs.iter().collect();
            if let Err(e) = self.checkpoints.save_runs(&refs) {
                // New runs fail their launch rather than run on unrecoverable (the core logs
                // each one), before anything about them is recorded or sent.
                let keys: Vec<ContainerKey> =
                    writes.runs.iter().map(|r| r.container.clone()).collect();
                updates = self.core.runs_not_checkpointed(&keys, &e.to_string());
            }
        }
        let (changes, outcomes) = self.record(&writes.task_changes, updates);
        let effects = self.core.committed(&outcomes, changes);
        self.carry_out(effects).await;
        self.release();
        self.flush_updates(Instant::now());
        // The burst's acknowledgements go to the log's file (not flushed: see status_updates).
        self.updates.flush();
    }

    /// Records a burst's task list changes and updates in one write. If that is refused: the
    /// changes alone, then the updates one by one, so one refused update does not sink the
    /// others. Returns what became of the changes (together) and of each update. While the
    /// changes cannot be written, neither are the updates: a task is in its run before
    /// anything about it goes out.
    fn record(
        &mut self,
        changes: &[TaskChange],
        updates: Vec<TaskStatus>,
    ) -> (Recorded, Vec<Recorded>) {
        if updates.is_empty() && changes.is_empty() {
            return (Recorded::Durable, Vec::new());
        }
        let count = updates.len();
        let (changed, outcomes) = match self.updates.record_burst(changes, updates.clone()) {
            Ok(_) => (Recorded::Durable, vec![Recorded::Durable; count]),
            Err(e) => {
                debug!(
                    changes = changes.len(),
                    "burst of {count} updates refused ({e}); recording the changes, then the updates one by one"
                );
                let changed = self.record_changes(changes);
                let outcomes = if changed == Recorded::NotWritten {
                    vec![Recorded::NotWritten; count]
                } else {
                    self.record_one_by_one(updates)
                };
                (changed, outcomes)
            }
        };
        let all_written =
            changed != Recorded::NotWritten && !outcomes.contains(&Recorded::NotWritten);
        if all_written {
            if let Some((since, _)) = self.unrecorded_since.take() {
                info!(
                    "status updates are being recorded again after failing for {:?}",
                    since.elapsed()
                );
            }
        }
        (changed, outcomes)
    }

    /// Records task list changes on their own.
    fn record_changes(&mut self, changes: &[TaskChange]) -> Recorded {
        if changes.is_empty() {
            return Recorded::Durable;
        }
        match self.updates.record_burst(changes, Vec::new()) {
            Ok(_) => Recorded::Durable,
            Err(e @ StatusUpdateError::Io { .. }) => {
                self.note_unrecorded(&e);
                Recorded::NotWritten
            }
            Err(e) => {
                error!(
                    changes = changes.len(),
                    "could not record changes to runs' task lists; a restarted agent may not know these tasks: {e}"
                );
                Recorded::Refused
            }
        }
    }

    /// Records updates one at a time: a refused one is dropped, and behind one that could not
    /// be written its task's later updates wait too.
    fn record_one_by_one(&mut self, updates: Vec<TaskStatus>) -> Vec<Recorded> {
        let mut failed: Vec<(FrameworkId, TaskId)> = Vec::new();
        updates
            .into_iter()
            .map(|s| {
                let stream = (s.framework_id.clone(), s.task_id.clone());
                // Behind an update that failed to write, keep the task's order.
                if failed.contains(&stream) {
                    return Recorded::NotWritten;
                }
                let (task, state) = (s.task_id.clone(), s.state);
                match self.updates.record(s) {
                    Ok(_) => Recorded::Durable,
                    Err(e @ StatusUpdateError::Io { .. }) => {
                        self.note_unrecorded(&e);
                        failed.push(stream);
                        Recorded::NotWritten
                    }
                    Err(e) => {
                        error!(task = %task, state = %state, "could not record status update: {e}");
                        Recorded::Refused
                    }
                }
            })
            .collect()
    }

    /// Logs a status update that could not be written: at once, then every 30 s while it lasts.
    fn note_unrecorded(&mut self, e: &StatusUpdateError) {
        let now = Instant::now();
        match &mut self.unrecorded_since {
            None => {
                error!("could not record a status update, will retry: {e}");
                self.unrecorded_since = Some((now, now));
            }
            Some((since, logged)) if now.duration_since(*logged) >= Duration::from_secs(30) => {
                error!(
                    "still cannot record status updates after {:?}, retrying: {e}",
                    since.elapsed()
                );
                *logged = now;
            }
            Some(_) => {}
        }
    }

    /// Lets the committed burst's messages out. A full queue drops the message: the master
    /// link's peer resends what matters (status updates are resent by the log).
    fn release(&mut self) {
        // A Mesos executor's messages of this burst, sent as one batch after the loop.
        let mut batches: Vec<(u64, Vec<AgentToExecutor>)> = Vec::new();
        for effect in std::mem::take(&mut self.outbox) {
            match effect {
                Effect::ToMaster(msg) => {
                    if let Some(master) = &self.master {
                        let _ = master.try_send(msg);
                    }
                }
                Effect::ToExecutor { serial, msg } => match self.executors.get(&serial) {
                    Some(ExecutorTx::Socket(tx)) => {
                        let launch = matches!(msg, AgentToExecutor::LaunchTask(_));
                        if tx.try_send(msg).is_err() && launch {
                            warn!(
                                serial,
                                "executor's queue is full; its tasks will fail when it is killed"
                            );
                        }
                    }
                    Some(ExecutorTx::Mesos(_)) => {
                        match batches.iter_mut().find(|(s, _)| *s == serial) {
                            Some((_, batch)) => batch.push(msg),
                            None => batches.push((serial, vec![msg])),
                        }
                    }
                    None => {}
                },
                Effect::AnswerExecutor { serial, result } => {
                    if result.is_err() {
                        self.executors.remove(&serial);
                    }
                    if let Some(reply) = self.executor_replies.remove(&serial) {
                        let _ = reply.send(result);
                    }
                }
                other => error!("not a message, left in the outbox: {other:?}"),
            }
        }
        for (serial, batch) in batches {
            if let Some(ExecutorTx::Mesos(tx)) = self.executors.get(&serial) {
                if tx.try_send(batch).is_err() {
                    warn!(
                        serial,
                        "Mesos executor's event queue is full; its stream will be cut"
                    );
                }
            }
        }
    }

    /// Sends the updates whose (re)send is due, while a master is connected.
    fn flush_updates(&mut self, now: Instant) {
        let Some(master) = &self.master else { return };
        for mut update in self.updates.due(now) {
            if update.agent_id.is_none() {
                update.agent_id = self.core.agent_id().cloned();
            }
            if master
                .try_send(AgentToMaster::StatusUpdate(update))
                .is_err()
            {
                // Queue full or link gone: the log resends it after its backoff.
                break;
            }
        }
    }

    /// Runs `work` on a task's sandbox off the state task (file I/O on the blocking pool) and
    /// sends the answer straight to the master link.
    fn serve_sandbox(
        &self,
        fw: FrameworkId,
        task: TaskId,
        found: Option<(PathBuf, bool)>,
        request: SandboxRequest,
    ) {
        let Some(master) = self.master.clone() else {
            return;
        };
        let gc = self.gc.clone();
        tokio::spawn(async move {
            let removed = found.as_ref().and_then(|(sandbox, _)| gc.removed(sandbox));
            let found = match (found, removed) {
                (None, _) => Err(format!(
                    "no sandbox for task {task} of framework {fw} on this agent"
                )),
                (Some(_), Some(why)) => Err(format!("sandbox of task {task} removed by gc {why}")),
                (Some(found), None) => Ok(found),
            };
            let reply = match request {
                SandboxRequest::Read { request, read } => {
                    let result = on_sandbox(found, move |sandbox, ended| {
                        crate::sandbox::read(
                            sandbox,
                            &read.path,
                            read.offset,
                            read.max_bytes,
                            ended,
                        )
                        .map_err(|e| e.to_string())
                    })
                    .await;
                    AgentToMaster::SandboxData { request, result }
                }
                SandboxRequest::List { request, list } => {
                    let result = on_sandbox(found, move |sandbox, ended| {
                        crate::sandbox::list(sandbox, &list.path, ended).map_err(|e| e.to_string())
                    })
                    .await;
                    AgentToMaster::SandboxListing { request, result }
                }
            };
            let _ = master.send(reply).await;
        });
    }

    /// At startup, once the runs the agent knows are in place: every other sandbox in the work
    /// dir is a leftover and is scheduled for gc by its age on disk.
    pub async fn schedule_leftover_sandboxes(&self) {
        let live = self.core.sandboxes();
        let work_dir = self.work_dir.clone();
        let found =
            tokio::task::spawn_blocking(move || crate::gc::scan_leftovers(&work_dir, &live))
                .await
                .unwrap_or_default();
        if !found.is_empty() {
            info!(
                count = found.len(),
                "scheduling sandboxes left over from before the restart for gc"
            );
        }
        for (sandbox, age) in found {
            self.gc.schedule_aged(sandbox, age);
        }
    }

    /// Kills every container (agent shutdown) and waits for them to exit.
    pub async fn kill_everything(&mut self) {
        let containers: Vec<Arc<Container>> = self.containers.values().cloned().collect();
        let grace = self.kill_grace;
        for c in &containers {
            let killer = c.killer();
            tokio::spawn(async move { killer.kill(grace).await });
        }
        for c in containers {
            c.wait().await;
        }
    }
}

/// Runs blocking sandbox file I/O for a found sandbox.
async fn on_sandbox<T: Send + 'static>(
    found: Result<(PathBuf, bool), String>,
    work: impl FnOnce(&Path, bool) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (sandbox, ended) = found?;
    tokio::task::spawn_blocking(move || work(&sandbox, ended))
        .await
        .unwrap_or_else(|e| Err(format!("sandbox access failed: {e}")))
}

fn container_info(c: &Container) -> ContainerInfo {
    ContainerInfo {
        pid: c.pid,
        start_time: c.start_time,
        cgroup_dirs: c.cgroup_dirs().to_vec(),
    }
}

/// The state task: bursts of inputs, each followed by a group commit, and a tick; at the end,
/// containers are killed or left running as `stop` says.
pub async fn run(
    mut runtime: Runtime,
    mut inputs: mpsc::Receiver<Input>,
    mut shutdown: watch::Receiver<bool>,
    stop: watch::Receiver<Stop>,
) {
    runtime.schedule_leftover_sandboxes().await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after_burst = memory::AfterBurst::new(Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            input = inputs.recv() => match input {
                Some(input) => {
                    runtime.input(input).await;
                    let mut handled = 1;
                    // Take whatever else is already queued, then commit the burst's updates
                    // together: one flush for many updates.
                    for _ in 0..MAX_BURST {
                        match inputs.try_recv() {
                            Ok(more) => runtime.input(more).await,
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                    after_burst.worked(handled);
                    runtime.commit().await;
                }
                None => break,
            },
            _ = tick.tick() => {
                runtime.tick().await;
                // A large burst is over: give the memory it freed back to the OS.
                if after_burst.due(Instant::now()) {
                    memory::trim_after_burst();
                }
            }
        }
    }
    runtime.commit().await;
    let how = *stop.borrow();
    if how == Stop::LeaveRunning {
        info!("agent stopped; its tasks keep running for the next agent process to recover");
    } else {
        runtime.kill_everything().await;
        info!("agent stopped");
    }
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
