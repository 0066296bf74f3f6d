//! The agent's brain: which executors run here, which tasks they carry, and what has been
//! reported about them.
//!
//! Like the master, the agent's state is owned by one task and driven by [`Input`]s from the
//! master link, the executor socket and container watchers. Every task state change goes
//! through [`Agent::report`], which makes it durable in the status update manager *before*
//! anything is sent; the manager then resends it until the framework acknowledges it.
//!
//! Two kinds of executor run here. A *command* task gets a container of its own running
//! `/bin/sh -c` (or a program), watched by the agent itself: its exit status is the task's
//! outcome. A *custom* executor is a program the framework names; it connects back over the
//! agent's Unix socket and may run many tasks, reporting their states itself.
//!
//! Recovery: every run is checkpointed (`checkpoint.rs`) in the same group commit as the
//! updates it causes. A restarted agent calls [`Agent::recover`] before serving anything: live
//! processes are re-adopted (custom executors then reconnect with their token and resend what
//! was not acknowledged; command tasks' supervisors record their exit status), dead ones are
//! reported, and after a host reboot every old task is LOST without touching any pid.

use crate::checkpoint::{Checkpoints, RunCheckpoint, TaskCheckpoint};
use crate::containerizer::{Container, Containerizer, ExitReport, LaunchSpec, Limits, RecoverSpec};
use crate::status_updates::StatusUpdateManager;
use bramble_proto::bounded::BoundedMap;
use bramble_proto::executor_env as env;
use bramble_proto::messages::{
    AgentToExecutor, AgentToMaster, ExecutorToAgent, MasterToAgent, RunningTask, SandboxList,
    SandboxRead,
};
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskReason, TaskState, TaskStatus,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Settings the state machine needs.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub work_dir: PathBuf,
    pub socket_path: PathBuf,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub executor_registration_timeout: Duration,
    pub kill_grace: Duration,
    pub executor_idle_timeout: Duration,
    /// When finished sandboxes are removed (`gc.rs`).
    pub gc: crate::gc::GcPolicy,
    /// How long a custom executor that lost this agent keeps trying to reconnect (passed to
    /// it in its environment).
    pub executor_recovery_timeout: Duration,
}

pub type ContainerKey = String;

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
    ContainerExited {
        container: ContainerKey,
        report: ExitReport,
    },
    ExecutorConnected {
        serial: u64,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        token: String,
        tx: mpsc::Sender<AgentToExecutor>,
        reply: oneshot::Sender<Result<ContainerKey, String>>,
    },
    FromExecutor {
        container: ContainerKey,
        msg: ExecutorToAgent,
    },
    ExecutorDisconnected {
        container: ContainerKey,
        serial: u64,
    },
    /// For tests and the CLI: a summary of what runs here.
    Inspect(oneshot::Sender<AgentView>),
}

/// What an agent reports about itself to tests.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    pub agent_id: Option<AgentId>,
    pub connected: bool,
    pub containers: Vec<ContainerView>,
    pub pending_updates: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerView {
    pub key: ContainerKey,
    /// The process id while it runs.
    pub pid: Option<u32>,
    pub tasks: Vec<(TaskId, TaskState)>,
}

struct TaskRun {
    info: TaskInfo,
    state: TaskState,
    kill_requested: bool,
    /// The terminal update has been recorded; the entry stays until it is acknowledged so
    /// that a re-registration still reports the task and the master keeps waiting for it.
    terminal: bool,
}

enum Kind {
    Command,
    Custom { info: ExecutorInfo },
}

struct Run {
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    kind: Kind,
    sandbox: PathBuf,
    container: Option<Arc<Container>>,
    token: String,
    conn: Option<(u64, mpsc::Sender<AgentToExecutor>)>,
    tasks: HashMap<TaskId, TaskRun>,
    /// Tasks waiting for a custom executor to register.
    queued: Vec<TaskInfo>,
    launched_at: Instant,
    idle_since: Option<Instant>,
    shutting_down: bool,
    exited: bool,
    memory_limit_mib: u64,
    /// Re-adopted from a previous agent process.
    recovered: bool,
}

impl Run {
    fn live_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .count()
            + self.queued.len()
    }
}

pub struct Agent {
    settings: AgentSettings,
    containerizer: Arc<Containerizer>,
    updates: StatusUpdateManager,
    agent_id: Option<AgentId>,
    master: Option<mpsc::Sender<AgentToMaster>>,
    runs: HashMap<ContainerKey, Run>,
    /// (framework, executor) → the container currently serving it.
    active: HashMap<(FrameworkId, ExecutorId), ContainerKey>,
    /// Updates reported but not yet durable, with the executor ack each one owes.
    uncommitted: Vec<(TaskStatus, Option<(ContainerKey, uuid::Uuid)>)>,
    /// Sandboxes of tasks that are over, still on disk, for `bramble logs`.
    finished_sandboxes: BoundedMap<(FrameworkId, TaskId), PathBuf>,
    inputs: mpsc::Sender<Input>,
    /// Removes finished sandboxes by age and disk use; its task ends with the agent.
    gc: crate::gc::GcHandle,
    /// Status updates that could not be made durable (e.g. a full disk): since when, and
    /// when that was last logged. They stay in `uncommitted` and are retried every tick.
    unrecorded_since: Option<(Instant, Instant)>,
    checkpoints: Checkpoints,
    /// Runs whose checkpoint must be (re)written in the next commit.
    dirty: BTreeSet<ContainerKey>,
    /// Re-adopted custom executors that have not reconnected yet, and when recovery began.
    awaiting_reconnect: BTreeSet<ContainerKey>,
    recovery_began: Option<Instant>,
    /// Executors found ended during recovery, to tell the master once it is connected.
    exited_while_down: Vec<(FrameworkId, ExecutorId)>,
}

/// What [`Agent::recover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Runs read from checkpoints.
    pub runs: usize,
    /// Processes still running and re-adopted.
    pub adopted: usize,
    /// Custom executors among them, expected to reconnect.
    pub executors: usize,
    /// Tasks reported ended or lost because their processes did not survive.
    pub tasks_gone: usize,
}

/// How many finished tasks' sandboxes the agent remembers the location of.
const FINISHED_SANDBOXES: usize = 10_000;

impl Agent {
    pub fn new(
        settings: AgentSettings,
        containerizer: Arc<Containerizer>,
        updates: StatusUpdateManager,
        checkpoints: Checkpoints,
        agent_id: Option<AgentId>,
        inputs: mpsc::Sender<Input>,
    ) -> Self {
        let gc = crate::gc::GcHandle::spawn(settings.work_dir.clone(), settings.gc);
        Self {
            gc,
            unrecorded_since: None,
            checkpoints,
            dirty: BTreeSet::new(),
            awaiting_reconnect: BTreeSet::new(),
            recovery_began: None,
            exited_while_down: Vec::new(),
            settings,
            containerizer,
            updates,
            agent_id,
            master: None,
            runs: HashMap::new(),
            active: HashMap::new(),
            finished_sandboxes: BoundedMap::new(FINISHED_SANDBOXES),
            uncommitted: Vec::new(),
            inputs,
        }
    }

    pub async fn handle(&mut self, input: Input) {
        match input {
            Input::BuildRegistration(reply) => {
                let _ = reply.send(self.registration());
            }
            Input::MasterConnected { agent_id, tx } => {
                if self.agent_id.as_ref() != Some(&agent_id) {
                    if let Err(e) = crate::persist_agent_id(&self.settings.work_dir, &agent_id) {
                        error!("could not persist agent id {agent_id}: {e}");
                    }
                    self.agent_id = Some(agent_id);
                }
                for (framework_id, executor_id) in self.exited_while_down.drain(..) {
                    let _ = tx.try_send(AgentToMaster::ExecutorExited {
                        framework_id,
                        executor_id,
                    });
                }
                self.master = Some(tx);
                self.updates.resend_all_now();
                self.flush_updates(Instant::now());
            }
            Input::MasterDisconnected => self.master = None,
            Input::FromMaster(msg) => self.master_message(msg).await,
            Input::ContainerExited { container, report } => {
                self.container_exited(&container, report)
            }
            Input::ExecutorConnected {
                serial,
                framework_id,
                executor_id,
                token,
                tx,
                reply,
            } => {
                let result = self.executor_connected(serial, framework_id, executor_id, token, tx);
                let _ = reply.send(result);
            }
            Input::FromExecutor { container, msg } => self.executor_message(&container, msg),
            Input::ExecutorDisconnected { container, serial } => {
                self.executor_disconnected(&container, serial)
            }
            Input::Inspect(reply) => {
                let _ = reply.send(self.view());
            }
        }
    }

    /// Periodic work: resends, executor registration timeouts, idle executors.
    pub fn tick(&mut self, now: Instant) {
        self.flush_updates(now);
        let timeout = self.settings.executor_registration_timeout;
        let idle_timeout = self.settings.executor_idle_timeout;
        let mut to_kill = Vec::new();
        for (key, run) in self.runs.iter_mut() {
            if run.exited || run.shutting_down {
                continue;
            }
            if let Kind::Custom { .. } = run.kind {
                if run.conn.is_none() && now.duration_since(run.launched_at) > timeout {
                    warn!(container = %key, executor = %run.executor_id, "executor did not register within {timeout:?}; killing it");
                    run.shutting_down = true;
                    to_kill.push(key.clone());
                    continue;
                }
                if run.conn.is_some() && run.live_tasks() == 0 {
                    let since = *run.idle_since.get_or_insert(now);
                    if now.duration_since(since) > idle_timeout {
                        info!(container = %key, executor = %run.executor_id, "shutting down idle executor");
                        run.shutting_down = true;
                        if let Some((_, tx)) = &run.conn {
                            let _ = tx.try_send(AgentToExecutor::Shutdown);
                        }
                        to_kill.push(key.clone());
                    }
                } else {
                    run.idle_since = None;
                }
            }
        }
        for key in to_kill {
            self.kill_container(&key);
        }
    }

    /// Kills every container (agent shutdown) and waits for them to exit.
    pub async fn kill_everything(&mut self) {
        let containers: Vec<Arc<Container>> = self
            .runs
            .values()
            .filter_map(|r| r.container.clone())
            .collect();
        let grace = self.settings.kill_grace;
        let kills = containers.iter().map(|c| {
            let killer = c.killer();
            async move { killer.kill(grace).await }
        });
        futures_join_all(kills).await;
        for c in containers {
            c.wait().await;
        }
    }

    /// Takes over what a previous agent process left (see the module header). Call once,
    /// before any input is handled. `reboot`: why nothing can have survived (the host
    /// rebooted), or `None` to re-adopt live processes.
    pub fn recover(&mut self, runs: Vec<RunCheckpoint>, reboot: Option<String>) -> RecoverySummary {
        let mut summary = RecoverySummary {
            runs: runs.len(),
            ..RecoverySummary::default()
        };
        if runs.is_empty() {
            return summary;
        }
        self.recovery_began = Some(Instant::now());
        // The newest unacknowledged update of each task is at least as new as its run file.
        let latest: HashMap<(FrameworkId, TaskId), TaskState> = self
            .updates
            .latest()
            .map(|u| ((u.framework_id.clone(), u.task_id.clone()), u.state))
            .collect();
        for cp in runs {
            let key = cp.container.clone();
            let mut tasks = HashMap::new();
            for t in cp.tasks {
                let pending = latest
                    .get(&(cp.framework_id.clone(), t.info.task_id.clone()))
                    .copied();
                let state = match pending {
                    Some(p) if t.state.can_move_to(p) => p,
                    _ => t.state,
                };
                tasks.insert(
                    t.info.task_id.clone(),
                    TaskRun {
                        info: t.info,
                        state,
                        kill_requested: false,
                        terminal: state.is_terminal(),
                    },
                );
            }
            let is_command = cp.executor.is_none();
            let mut run = Run {
                framework_id: cp.framework_id.clone(),
                executor_id: cp.executor_id.clone(),
                kind: match cp.executor {
                    Some(info) => Kind::Custom { info },
                    None => Kind::Command,
                },
                sandbox: cp.sandbox,
                container: None,
                token: cp.token,
                conn: None,
                tasks,
                queued: cp.queued,
                launched_at: Instant::now(),
                idle_since: None,
                shutting_down: false,
                exited: false,
                memory_limit_mib: cp.memory_limit_mib,
                recovered: true,
            };
            if let Some(why) = &reboot {
                summary.tasks_gone += self.lose_run(&key, run, why);
                continue;
            }
            // pid 0: the run was written after its process was already known to be gone.
            let alive = cp.pid != 0 && crate::containerizer::is_same_process(cp.pid, cp.start_time);
            let container = Arc::new(self.containerizer.recover(RecoverSpec {
                container_id: key.clone(),
                pid: cp.pid,
                start_time: cp.start_time,
                cgroup_dirs: cp.cgroup_dirs,
                memory_limit_mib: cp.memory_limit_mib,
                exit_status_file: is_command.then(|| self.checkpoints.exit_status_file(&key)),
            }));
            if alive {
                summary.adopted += 1;
                info!(framework = %run.framework_id, executor = %run.executor_id, container = %key,
                    pid = cp.pid, "re-adopted a running {}", if is_command { "command task" } else { "executor" });
                if !is_command {
                    summary.executors += 1;
                    self.awaiting_reconnect.insert(key.clone());
                }
            } else {
                summary.tasks_gone += run.live_tasks();
                info!(framework = %run.framework_id, executor = %run.executor_id, container = %key,
                    pid = cp.pid, "{} ended while the agent was down", if is_command { "command task" } else { "executor" });
            }
            // Dead or alive, the end is reported the usual way, through the watcher.
            self.watch(key.clone(), container.clone());
            run.container = Some(container);
            self.active.insert(
                (run.framework_id.clone(), run.executor_id.clone()),
                key.clone(),
            );
            self.runs.insert(key, run);
        }
        if self.awaiting_reconnect.is_empty() {
            self.recovery_began = None;
        }
        info!(
            runs = summary.runs,
            adopted = summary.adopted,
            executors = summary.executors,
            tasks_gone = summary.tasks_gone,
            "recovered checkpointed runs"
        );
        summary
    }

    /// After a reboot: every unfinished task of `run` is LOST, and no pid it names is touched.
    /// Returns how many tasks were reported.
    fn lose_run(&mut self, key: &ContainerKey, mut run: Run, why: &str) -> usize {
        run.exited = true;
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        let mut lost: Vec<TaskId> = run
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        lost.extend(run.queued.drain(..).map(|t| t.task_id));
        if matches!(run.kind, Kind::Custom { .. }) {
            self.exited_while_down
                .push((fw.clone(), executor_id.clone()));
        }
        warn!(framework = %fw, executor = %executor_id, container = %key, tasks = lost.len(),
            "{why}: reporting the run's tasks LOST");
        self.runs.insert(key.clone(), run);
        for task_id in &lost {
            self.set_task_state(key, task_id, TaskState::Lost);
            let status = self
                .agent_status(&fw, Some(&executor_id), task_id, TaskState::Lost)
                .with_reason(TaskReason::HostRebooted, why.to_string());
            self.report(status);
        }
        let done = self.runs.get(key).is_some_and(|r| {
            r.tasks.values().all(|t| t.terminal)
                && r.tasks
                    .keys()
                    .all(|tid| !self.awaiting_ack(&r.framework_id, tid))
        });
        if done {
            self.remove_run(key);
        } else {
            // Rewritten without its pid: in this boot that pid means nothing.
            self.dirty.insert(key.clone());
        }
        lost.len()
    }

    pub fn next_update_deadline(&self) -> Option<Instant> {
        if self.master.is_some() {
            self.updates.next_deadline()
        } else {
            None
        }
    }

    // -----------------------------------------------------------------------------------------
    // Status updates

    /// Records `status` durably, then sends what is due. Every state change goes through here.
    fn report(&mut self, mut status: TaskStatus) {
        status.agent_id = self.agent_id.clone();
        self.uncommitted.push((status, None));
    }

    /// Whether an update of this task is still unacknowledged, counting the ones reported in
    /// this burst and not yet committed.
    fn awaiting_ack(&self, fw: &FrameworkId, task_id: &TaskId) -> bool {
        self.updates.has_pending(fw, task_id)
            || self
                .uncommitted
                .iter()
                .any(|(u, _)| &u.framework_id == fw && &u.task_id == task_id)
    }

    /// Group commit: makes every update reported since the last commit durable in one batch,
    /// then acknowledges executors' updates and sends what is due. Called after each burst of
    /// inputs; nothing reported is sent or acknowledged before this returns.
    pub fn commit(&mut self) {
        self.checkpoint_dirty_runs();
        if self.uncommitted.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.uncommitted);
        let statuses: Vec<TaskStatus> = batch.iter().map(|(s, _)| s.clone()).collect();
        let recorded: Vec<Option<bool>> = match self.updates.record_batch(statuses) {
            Ok(_) => vec![Some(true); batch.len()],
            // One refused update must not sink the others: record them one by one.
            Err(e) => {
                debug!(
                    "batch of {} updates refused ({e}); recording one by one",
                    batch.len()
                );
                let mut failed: Vec<(FrameworkId, TaskId)> = Vec::new();
                batch
                    .iter()
                    .map(|(s, _)| {
                        let stream = (s.framework_id.clone(), s.task_id.clone());
                        // Behind an update that failed to write, keep the task's order.
                        if failed.contains(&stream) {
                            return None;
                        }
                        match self.updates.record(s.clone()) {
                            Ok(_) => Some(true),
                            Err(e @ crate::status_updates::StatusUpdateError::Io { .. }) => {
                                self.note_unrecorded(&e);
                                failed.push(stream);
                                None
                            }
                            Err(e) => {
                                error!(task = %s.task_id, state = %s.state, "could not record status update: {e}");
                                Some(false)
                            }
                        }
                    })
                    .collect()
            }
        };
        // Updates that failed to write (full disk, I/O error) wait for the next commit.
        let mut retry = Vec::new();
        let mut done = Vec::new();
        for (entry, outcome) in batch.into_iter().zip(recorded) {
            match outcome {
                Some(ok) => done.push((entry, ok)),
                None => retry.push(entry),
            }
        }
        if retry.is_empty() {
            if let Some((since, _)) = self.unrecorded_since.take() {
                info!(
                    "status updates are being recorded again after failing for {:?}",
                    since.elapsed()
                );
            }
        }
        self.uncommitted = retry;
        for ((status, ack), ok) in done {
            debug!(task = %status.task_id, state = %status.state, recorded = ok, "status update");
            // An executor's update is acknowledged only once durable; unrecorded, it resends.
            if let (Some((key, uuid)), true) = (ack, ok) {
                if let Some((_, tx)) = self.runs.get(&key).and_then(|r| r.conn.as_ref()) {
                    let _ = tx.try_send(AgentToExecutor::UpdateAck(uuid));
                }
            }
        }
        self.flush_updates(Instant::now());
    }

    /// Writes the checkpoints of runs launched or changed in this burst, before the burst's
    /// updates are recorded (so a RUNNING sent out always has its run on disk).
    fn checkpoint_dirty_runs(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let checkpoints: Vec<RunCheckpoint> = dirty
            .iter()
            .filter_map(|key| self.runs.get(key).map(|run| run_checkpoint(key, run)))
            .collect();
        let refs: Vec<&RunCheckpoint> = checkpoints.iter().collect();
        if let Err(e) = self.checkpoints.save_runs(&refs) {
            error!(
                runs = refs.len(),
                "could not checkpoint runs; a restarted agent will not recover them: {e}"
            );
        }
    }

    fn flush_updates(&mut self, now: Instant) {
        let Some(master) = &self.master else { return };
        for mut update in self.updates.due(now) {
            if update.agent_id.is_none() {
                update.agent_id = self.agent_id.clone();
            }
            if master
                .try_send(AgentToMaster::StatusUpdate(update))
                .is_err()
            {
                // Queue full or link gone: the manager will resend it after its backoff.
                break;
            }
        }
    }

    fn set_task_state(&mut self, key: &ContainerKey, task_id: &TaskId, state: TaskState) {
        if let Some(t) = self
            .runs
            .get_mut(key)
            .and_then(|r| r.tasks.get_mut(task_id))
        {
            t.state = state;
            if state.is_terminal() {
                t.terminal = true;
            }
        }
    }

    fn agent_status(
        &self,
        fw: &FrameworkId,
        executor: Option<&ExecutorId>,
        task: &TaskId,
        state: TaskState,
    ) -> TaskStatus {
        let mut s = TaskStatus::new(fw.clone(), task.clone(), state, UpdateSource::Agent);
        s.executor_id = executor.cloned();
        s
    }

    // -----------------------------------------------------------------------------------------
    // Master

    fn registration(&self) -> AgentToMaster {
        let tasks = self
            .runs
            .values()
            .flat_map(|r| {
                r.tasks
                    .values()
                    .map(|t| RunningTask {
                        framework_id: r.framework_id.clone(),
                        task: t.info.clone(),
                        state: t.state,
                    })
                    .chain(r.queued.iter().map(|t| RunningTask {
                        framework_id: r.framework_id.clone(),
                        task: t.clone(),
                        state: TaskState::Staging,
                    }))
            })
            .collect();
        AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            hostname: self.settings.hostname.clone(),
            resources: self.settings.resources.clone(),
            attributes: self.settings.attributes.clone(),
            tasks,
        }
    }

    async fn master_message(&mut self, msg: MasterToAgent) {
        match msg {
            MasterToAgent::Registered { .. } | MasterToAgent::HeartbeatAck => {}
            MasterToAgent::RunTasks {
                framework_id,
                framework_name,
                tasks,
            } => {
                for task in tasks {
                    self.run_task(&framework_id, &framework_name, task).await;
                }
            }
            MasterToAgent::KillTask {
                framework_id,
                task_id,
            } => self.kill_task(&framework_id, &task_id),
            MasterToAgent::Acknowledge {
                framework_id,
                task_id,
                uuid,
            } => {
                match self.updates.acknowledge(&framework_id, &task_id, uuid) {
                    Ok(true) => self.forget_acknowledged(&framework_id, &task_id),
                    Ok(false) => {
                        debug!(task = %task_id, %uuid, "acknowledgement for an unknown update")
                    }
                    Err(e) => {
                        error!(task = %task_id, %uuid, "could not remove acknowledged update: {e}")
                    }
                }
                self.flush_updates(Instant::now());
            }
            MasterToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => {
                let conn = self
                    .active
                    .get(&(framework_id.clone(), executor_id.clone()))
                    .and_then(|k| self.runs.get(k))
                    .and_then(|r| r.conn.as_ref().map(|(_, tx)| tx.clone()));
                match conn {
                    Some(tx) => {
                        let _ = tx.try_send(AgentToExecutor::Message(data));
                    }
                    None => {
                        debug!(framework = %framework_id, executor = %executor_id, "framework message for an executor that is not connected; dropped")
                    }
                }
            }
            MasterToAgent::ShutdownFramework { framework_id } => {
                self.shutdown_framework(&framework_id)
            }
            MasterToAgent::ReadSandbox { request, read } => self.read_sandbox(request, read),
            MasterToAgent::ListSandbox { request, list } => self.list_sandbox(request, list),
        }
    }

    /// A task whose terminal update was acknowledged is forgotten; a run with nothing left
    /// and no process is removed.
    fn forget_acknowledged(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        let mut empty = None;
        for (key, run) in self.runs.iter_mut() {
            if &run.framework_id != fw {
                continue;
            }
            let acked_terminal = run.tasks.get(task_id).is_some_and(|t| t.terminal)
                && !self.updates.has_pending(fw, task_id)
                && !self
                    .uncommitted
                    .iter()
                    .any(|(u, _)| &u.framework_id == fw && &u.task_id == task_id);
            if acked_terminal {
                run.tasks.remove(task_id);
                self.finished_sandboxes
                    .insert((fw.clone(), task_id.clone()), run.sandbox.clone());
                if run.exited && run.tasks.is_empty() && run.queued.is_empty() {
                    empty = Some(key.clone());
                } else if !run.exited {
                    // Or a restarted agent would bring the task back from the run file, with
                    // no update left to say it ended.
                    self.dirty.insert(key.clone());
                }
                break;
            }
        }
        if let Some(key) = empty {
            self.remove_run(&key);
        }
    }

    fn remove_run(&mut self, key: &ContainerKey) {
        self.dirty.remove(key);
        self.checkpoints.remove_run(key);
        if let Some(run) = self.runs.remove(key) {
            // However the run ends, its tasks' sandboxes stay readable for operators.
            for task_id in run.tasks.keys() {
                self.finished_sandboxes.insert(
                    (run.framework_id.clone(), task_id.clone()),
                    run.sandbox.clone(),
                );
            }
            let id = (run.framework_id, run.executor_id);
            if self.active.get(&id) == Some(key) {
                self.active.remove(&id);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Launching

    async fn run_task(&mut self, fw: &FrameworkId, fw_name: &str, task: TaskInfo) {
        if self.find_task(fw, &task.task_id).is_some() {
            warn!(framework = %fw, task = %task.task_id, "master asked to run a task that already runs here; ignoring");
            return;
        }
        match (&task.command, &task.executor) {
            (Some(cmd), None) => {
                let cmd = cmd.clone();
                self.launch_command_task(fw, task, cmd).await
            }
            (None, Some(exec)) => {
                let exec = exec.clone();
                self.launch_on_custom_executor(fw, fw_name, task, exec)
                    .await
            }
            _ => {
                let status = self
                    .agent_status(fw, None, &task.task_id, TaskState::Error)
                    .with_reason(
                        TaskReason::InvalidTask,
                        "task needs exactly one of command or executor",
                    );
                self.report(status);
            }
        }
    }

    fn sandbox_for(&self, fw: &FrameworkId, executor: &ExecutorId, container: &str) -> PathBuf {
        crate::paths::WorkDir::new(&self.settings.work_dir).sandbox(fw, executor, container)
    }

    async fn launch_command_task(&mut self, fw: &FrameworkId, task: TaskInfo, cmd: CommandInfo) {
        let executor_id = ExecutorId(format!("command-{}", task.task_id));
        let key = new_container_key();
        let sandbox = self.sandbox_for(fw, &executor_id, &key);
        let (program, args) = program_and_args(&cmd);
        let mut env_vars: Vec<(String, String)> = cmd.environment.clone().into_iter().collect();
        env_vars.push((env::TASK_ID.into(), task.task_id.to_string()));
        env_vars.push((env::FRAMEWORK_ID.into(), fw.to_string()));
        env_vars.push((env::SANDBOX.into(), sandbox.display().to_string()));
        if let Some(id) = &self.agent_id {
            env_vars.push((env::AGENT_ID.into(), id.to_string()));
        }
        let spec = LaunchSpec {
            container_id: key.clone(),
            sandbox: sandbox.clone(),
            program,
            args,
            env: env_vars,
            limits: Limits {
                cpus: task.resources.cpus(),
                mem_mib: task.resources.mem_mib,
            },
            exit_status_file: Some(self.checkpoints.exit_status_file(&key)),
        };
        let memory_limit_mib = spec.limits.mem_mib;
        let task_id = task.task_id.clone();
        let mut run = Run {
            framework_id: fw.clone(),
            executor_id: executor_id.clone(),
            kind: Kind::Command,
            sandbox,
            container: None,
            token: String::new(),
            conn: None,
            tasks: HashMap::new(),
            queued: Vec::new(),
            launched_at: Instant::now(),
            idle_since: None,
            shutting_down: false,
            exited: false,
            memory_limit_mib,
            recovered: false,
        };
        run.tasks.insert(
            task_id.clone(),
            TaskRun {
                info: task,
                state: TaskState::Staging,
                kill_requested: false,
                terminal: false,
            },
        );
        match self.containerizer.launch(spec).await {
            Ok(container) => {
                let pid = container.pid;
                let container = Arc::new(container);
                self.watch(key.clone(), container.clone());
                run.container = Some(container);
                self.runs.insert(key.clone(), run);
                self.active
                    .insert((fw.clone(), executor_id.clone()), key.clone());
                info!(framework = %fw, task = %task_id, container = %key, pid, "command task running");
                self.set_task_state(&key, &task_id, TaskState::Running);
                self.dirty.insert(key.clone());
                let mut status =
                    self.agent_status(fw, Some(&executor_id), &task_id, TaskState::Running);
                status.message = format!("pid {pid}");
                self.report(status);
            }
            Err(e) => {
                warn!(framework = %fw, task = %task_id, "launch failed: {e}");
                self.launch_failed_in(&run.sandbox, &e);
                run.exited = true;
                self.runs.insert(key.clone(), run);
                self.set_task_state(&key, &task_id, TaskState::Failed);
                let status = self
                    .agent_status(fw, Some(&executor_id), &task_id, TaskState::Failed)
                    .with_reason(TaskReason::LaunchFailed, e.to_string());
                self.report(status);
            }
        }
    }

    async fn launch_on_custom_executor(
        &mut self,
        fw: &FrameworkId,
        fw_name: &str,
        task: TaskInfo,
        exec: ExecutorInfo,
    ) {
        let id = (fw.clone(), exec.executor_id.clone());
        if let Some(key) = self.active.get(&id).cloned() {
            let usable = self
                .runs
                .get(&key)
                .is_some_and(|r| !r.exited && !r.shutting_down);
            if usable {
                self.give_task_to_executor(&key, task);
                return;
            }
        }
        let key = new_container_key();
        let sandbox = self.sandbox_for(fw, &exec.executor_id, &key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (program, args) = program_and_args(&exec.command);
        let mut env_vars: Vec<(String, String)> =
            exec.command.environment.clone().into_iter().collect();
        env_vars.extend([
            (
                env::AGENT_SOCKET.to_string(),
                self.settings.socket_path.display().to_string(),
            ),
            (env::FRAMEWORK_ID.to_string(), fw.to_string()),
            (env::EXECUTOR_ID.to_string(), exec.executor_id.to_string()),
            (env::EXECUTOR_TOKEN.to_string(), token.clone()),
            (env::SANDBOX.to_string(), sandbox.display().to_string()),
            ("BRAMBLE_FRAMEWORK_NAME".to_string(), fw_name.to_string()),
            (
                env::RECOVERY_TIMEOUT_SECS.to_string(),
                self.settings
                    .executor_recovery_timeout
                    .as_secs()
                    .to_string(),
            ),
        ]);
        if let Some(aid) = &self.agent_id {
            env_vars.push((env::AGENT_ID.into(), aid.to_string()));
        }
        // A custom executor's tasks come and go, so its container is not capped at launch
        // time: the limits cover the executor's own resources only when it asks for some.
        let limits = Limits {
            cpus: 0.0,
            mem_mib: 0,
        };
        let spec = LaunchSpec {
            container_id: key.clone(),
            sandbox: sandbox.clone(),
            program,
            args,
            env: env_vars,
            limits,
            exit_status_file: None,
        };
        let task_id = task.task_id.clone();
        let executor_id = exec.executor_id.clone();
        match self.containerizer.launch(spec).await {
            Ok(container) => {
                let pid = container.pid;
                let container = Arc::new(container);
                self.watch(key.clone(), container.clone());
                info!(framework = %fw, executor = %executor_id, container = %key, pid, "custom executor launched");
                self.runs.insert(
                    key.clone(),
                    Run {
                        framework_id: fw.clone(),
                        executor_id: executor_id.clone(),
                        kind: Kind::Custom { info: exec },
                        sandbox,
                        container: Some(container),
                        token,
                        conn: None,
                        tasks: HashMap::new(),
                        queued: vec![task],
                        launched_at: Instant::now(),
                        idle_since: None,
                        shutting_down: false,
                        exited: false,
                        memory_limit_mib: 0,
                        recovered: false,
                    },
                );
                self.active.insert(id, key.clone());
                self.dirty.insert(key);
            }
            Err(e) => {
                warn!(framework = %fw, executor = %executor_id, "executor launch failed: {e}");
                self.launch_failed_in(&sandbox, &e);
                let status = self
                    .agent_status(fw, Some(&executor_id), &task_id, TaskState::Failed)
                    .with_reason(
                        TaskReason::LaunchFailed,
                        format!("executor launch failed: {e}"),
                    );
                self.report(status);
            }
        }
    }

    fn give_task_to_executor(&mut self, key: &ContainerKey, task: TaskInfo) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        run.idle_since = None;
        self.dirty.insert(key.clone());
        match &run.conn {
            Some((_, tx)) => {
                let task_id = task.task_id.clone();
                run.tasks.insert(
                    task_id,
                    TaskRun {
                        info: task.clone(),
                        state: TaskState::Staging,
                        kill_requested: false,
                        terminal: false,
                    },
                );
                if tx.try_send(AgentToExecutor::LaunchTask(task)).is_err() {
                    warn!(container = %key, "executor's queue is full; its tasks will fail when it is killed");
                }
            }
            None => run.queued.push(task),
        }
    }

    fn watch(&self, key: ContainerKey, container: Arc<Container>) {
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let report = container.wait().await;
            let _ = inputs
                .send(Input::ContainerExited {
                    container: key,
                    report,
                })
                .await;
        });
    }

    // -----------------------------------------------------------------------------------------
    // Killing

    fn find_task(&self, fw: &FrameworkId, task_id: &TaskId) -> Option<ContainerKey> {
        self.runs
            .iter()
            .find(|(_, r)| {
                &r.framework_id == fw
                    && (r.tasks.contains_key(task_id)
                        || r.queued.iter().any(|t| &t.task_id == task_id))
            })
            .map(|(k, _)| k.clone())
    }

    fn kill_task(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        let Some(key) = self.find_task(fw, task_id) else {
            info!(framework = %fw, task = %task_id, "kill for a task unknown here; reporting it LOST");
            let status = self
                .agent_status(fw, None, task_id, TaskState::Lost)
                .with_reason(
                    TaskReason::AgentUnknown,
                    "task is not running on this agent",
                );
            self.report(status);
            return;
        };
        let Some(run) = self.runs.get_mut(&key) else {
            return;
        };
        let executor_id = run.executor_id.clone();
        if let Some(pos) = run.queued.iter().position(|t| &t.task_id == task_id) {
            // Never reached its executor: nothing to stop.
            run.queued.remove(pos);
            let status = self
                .agent_status(fw, Some(&executor_id), task_id, TaskState::Killed)
                .with_reason(
                    TaskReason::KilledByRequest,
                    "killed before its executor registered",
                );
            self.report(status);
            return;
        }
        let Some(task) = run.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        task.kill_requested = true;
        info!(framework = %fw, task = %task_id, container = %key, "killing task");
        match &run.kind {
            Kind::Command => self.kill_container(&key),
            Kind::Custom { .. } => match &run.conn {
                Some((_, tx)) => {
                    let _ = tx.try_send(AgentToExecutor::KillTask(task_id.clone()));
                }
                None => self.kill_container(&key),
            },
        }
    }

    fn kill_container(&mut self, key: &ContainerKey) {
        let Some(container) = self.runs.get(key).and_then(|r| r.container.clone()) else {
            return;
        };
        let grace = self.settings.kill_grace;
        tokio::spawn(async move { container.killer().kill(grace).await });
    }

    fn shutdown_framework(&mut self, fw: &FrameworkId) {
        info!(framework = %fw, "framework shut down by the master; killing its executors");
        let keys: Vec<ContainerKey> = self
            .runs
            .iter()
            .filter(|(_, r)| &r.framework_id == fw)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(run) = self.runs.get_mut(&key) {
                run.shutting_down = true;
                for t in run.tasks.values_mut() {
                    t.kill_requested = true;
                }
                if let Some((_, tx)) = &run.conn {
                    let _ = tx.try_send(AgentToExecutor::Shutdown);
                }
            }
            self.kill_container(&key);
        }
        match self.updates.forget_framework(fw) {
            Ok(n) if n > 0 => {
                info!(framework = %fw, dropped = n, "dropped unacknowledged updates of a removed framework")
            }
            Ok(_) => {}
            Err(e) => error!(framework = %fw, "could not drop updates of a removed framework: {e}"),
        }
    }

    fn container_exited(&mut self, key: &ContainerKey, report: ExitReport) {
        self.reconnected(key);
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        run.exited = true;
        run.conn = None;
        run.container = None;
        self.gc.schedule(run.sandbox.clone());
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        let is_command = matches!(run.kind, Kind::Command);
        info!(framework = %fw, executor = %executor_id, container = %key, "container ended: {}", report.describe());
        let mut outcomes: Vec<TaskStatus> = Vec::new();
        for (task_id, task) in run.tasks.iter() {
            if task.state.is_terminal() {
                continue;
            }
            let mut status = TaskStatus::new(
                fw.clone(),
                task_id.clone(),
                TaskState::Failed,
                UpdateSource::Agent,
            );
            status.executor_id = Some(executor_id.clone());
            status.exit_code = report.code;
            let (state, reason) = if task.kill_requested {
                (TaskState::Killed, TaskReason::KilledByRequest)
            } else if report.memory_limit_exceeded {
                (TaskState::Failed, TaskReason::MemoryLimit)
            } else if is_command && report.success() {
                (TaskState::Finished, TaskReason::CommandExited)
            } else if is_command {
                (TaskState::Failed, TaskReason::CommandExited)
            } else {
                (TaskState::Failed, TaskReason::ExecutorTerminated)
            };
            status.state = state;
            status.reason = Some(reason);
            status.message = if is_command {
                report.describe()
            } else {
                format!("executor {executor_id} ended: {}", report.describe())
            };
            outcomes.push(status);
        }
        for task in run.queued.drain(..) {
            let status = TaskStatus::new(
                fw.clone(),
                task.task_id.clone(),
                TaskState::Failed,
                UpdateSource::Agent,
            )
            .with_reason(
                TaskReason::ExecutorTerminated,
                format!(
                    "executor {executor_id} ended before it registered: {}",
                    report.describe()
                ),
            );
            outcomes.push(status);
        }
        for status in outcomes {
            self.set_task_state(key, &status.task_id, status.state);
            self.report(status);
        }
        if !is_command {
            if let Some(master) = &self.master {
                let _ = master.try_send(AgentToMaster::ExecutorExited {
                    framework_id: fw.clone(),
                    executor_id: executor_id.clone(),
                });
            }
        }
        let id = (fw, executor_id);
        if self.active.get(&id) == Some(key) {
            self.active.remove(&id);
        }
        let finished = self.runs.get(key).is_some_and(|r| {
            r.tasks.values().all(|t| t.terminal)
                && r.tasks
                    .iter()
                    .all(|(tid, _)| !self.awaiting_ack(&r.framework_id, tid))
        });
        if finished {
            self.remove_run(key);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Custom executors

    fn executor_connected(
        &mut self,
        serial: u64,
        fw: FrameworkId,
        executor_id: ExecutorId,
        token: String,
        tx: mpsc::Sender<AgentToExecutor>,
    ) -> Result<ContainerKey, String> {
        let key = self
            .active
            .get(&(fw.clone(), executor_id.clone()))
            .cloned()
            .ok_or_else(|| {
                format!("no executor {executor_id} of framework {fw} was launched here")
            })?;
        let agent_id = self
            .agent_id
            .clone()
            .unwrap_or_else(|| AgentId(String::new()));
        let run = self.runs.get_mut(&key).ok_or("executor run vanished")?;
        if run.token != token {
            return Err("wrong executor token".into());
        }
        if run.conn.is_some() {
            return Err("executor already registered".into());
        }
        let Kind::Custom { info } = &run.kind else {
            return Err("not a custom executor".into());
        };
        let registered = AgentToExecutor::Registered {
            agent_id,
            framework_id: fw.clone(),
            executor: info.clone(),
        };
        tx.try_send(registered)
            .map_err(|_| "executor queue closed".to_string())?;
        for task in run.queued.drain(..) {
            run.tasks.insert(
                task.task_id.clone(),
                TaskRun {
                    info: task.clone(),
                    state: TaskState::Staging,
                    kill_requested: false,
                    terminal: false,
                },
            );
            let _ = tx.try_send(AgentToExecutor::LaunchTask(task));
        }
        run.conn = Some((serial, tx));
        let recovered = run.recovered;
        self.dirty.insert(key.clone());
        if recovered {
            info!(framework = %fw, executor = %executor_id, container = %key, "recovered executor reconnected");
        } else {
            info!(framework = %fw, executor = %executor_id, container = %key, "executor registered");
        }
        self.reconnected(&key);
        Ok(key)
    }

    /// A re-adopted executor reconnected (or ended): recovery is over once none is awaited.
    fn reconnected(&mut self, key: &ContainerKey) {
        if !self.awaiting_reconnect.remove(key) || !self.awaiting_reconnect.is_empty() {
            return;
        }
        if let Some(began) = self.recovery_began.take() {
            info!(
                took_ms = began.elapsed().as_millis() as u64,
                "recovery complete: every re-adopted executor has reconnected or ended"
            );
        }
    }

    fn executor_message(&mut self, key: &ContainerKey, msg: ExecutorToAgent) {
        let Some(run) = self.runs.get(key) else {
            return;
        };
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        match msg {
            ExecutorToAgent::Register { .. } => {
                warn!(container = %key, "executor registered twice; ignoring");
            }
            ExecutorToAgent::Message(data) => {
                if let Some(master) = &self.master {
                    let _ = master.try_send(AgentToMaster::ExecutorMessage {
                        framework_id: fw,
                        executor_id,
                        data,
                    });
                }
            }
            ExecutorToAgent::Update(mut status) => {
                let conn = run.conn.as_ref().map(|(_, tx)| tx.clone());
                let Some(task) = run.tasks.get(&status.task_id) else {
                    warn!(container = %key, task = %status.task_id, "executor reported a task it does not run; ignoring");
                    return;
                };
                let Some(uuid) = status.uuid else {
                    warn!(container = %key, task = %status.task_id, "executor update without uuid; ignoring");
                    return;
                };
                // The agent, not the executor, vouches for whose task this is.
                status.framework_id = fw;
                status.executor_id = Some(executor_id);
                status.source = UpdateSource::Executor;
                let legal = task.state.can_move_to(status.state);
                let task_id = status.task_id.clone();
                let state = status.state;
                if legal {
                    let mut status = status;
                    if task.kill_requested && state.is_terminal() && state != TaskState::Killed {
                        debug!(task = %task_id, "killed task ended as {state}");
                    }
                    status.agent_id = self.agent_id.clone();
                    // Acknowledged to the executor by `commit`, once durable.
                    self.uncommitted.push((status, Some((key.clone(), uuid))));
                    self.set_task_state(key, &task_id, state);
                } else {
                    debug!(task = %task_id, from = %task.state, to = %state, "executor sent an illegal transition; acknowledged and dropped");
                    if let Some(tx) = conn {
                        let _ = tx.try_send(AgentToExecutor::UpdateAck(uuid));
                    }
                }
            }
        }
    }

    fn executor_disconnected(&mut self, key: &ContainerKey, serial: u64) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        if run.conn.as_ref().map(|(s, _)| *s) != Some(serial) {
            return;
        }
        run.conn = None;
        if run.exited {
            return;
        }
        if run.shutting_down {
            debug!(container = %key, executor = %run.executor_id, "executor disconnected while shutting down");
        } else {
            warn!(container = %key, executor = %run.executor_id, "executor closed its connection; killing it");
            run.shutting_down = true;
        }
        self.kill_container(key);
    }

    fn view(&self) -> AgentView {
        let mut containers: Vec<_> = self
            .runs
            .iter()
            .map(|(k, r)| {
                let mut tasks: Vec<(TaskId, TaskState)> = r
                    .tasks
                    .iter()
                    .map(|(id, t)| (id.clone(), t.state))
                    .collect();
                tasks.extend(
                    r.queued
                        .iter()
                        .map(|t| (t.task_id.clone(), TaskState::Staging)),
                );
                tasks.sort();
                ContainerView {
                    key: k.clone(),
                    pid: r.container.as_ref().map(|c| c.pid),
                    tasks,
                }
            })
            .collect();
        containers.sort();
        AgentView {
            agent_id: self.agent_id.clone(),
            connected: self.master.is_some(),
            containers,
            pending_updates: self.updates.pending(),
        }
    }

    /// Answers an operator's sandbox read, like every sandbox request (see
    /// [`Agent::answer_from_sandbox`]).
    fn read_sandbox(&mut self, request: u64, read: SandboxRead) {
        let (fw, task) = (read.framework_id.clone(), read.task_id.clone());
        self.answer_from_sandbox(
            &fw,
            &task,
            move |sandbox, ended| {
                crate::sandbox::read(sandbox, &read.path, read.offset, read.max_bytes, ended)
            },
            move |result| AgentToMaster::SandboxData { request, result },
        );
    }

    /// Answers an operator's sandbox listing.
    fn list_sandbox(&mut self, request: u64, list: SandboxList) {
        let (fw, task) = (list.framework_id.clone(), list.task_id.clone());
        self.answer_from_sandbox(
            &fw,
            &task,
            move |sandbox, ended| crate::sandbox::list(sandbox, &list.path, ended),
            move |result| AgentToMaster::SandboxListing { request, result },
        );
    }
}

impl Agent {
    /// A task's sandbox directory, and whether the task has ended.
    fn sandbox_of(&self, fw: &FrameworkId, task_id: &TaskId) -> Option<(PathBuf, bool)> {
        let live = self
            .find_task(fw, task_id)
            .and_then(|k| self.runs.get(&k))
            .map(|r| {
                let ended = r.tasks.get(task_id).is_none_or(|t| t.state.is_terminal());
                (r.sandbox.clone(), ended)
            });
        live.or_else(|| {
            self.finished_sandboxes
                .get(&(fw.clone(), task_id.clone()))
                .map(|p| (p.clone(), true))
        })
    }

    /// Runs `work` on a task's sandbox off the state task (file I/O on the blocking pool) and
    /// sends its answer, wrapped by `reply`, straight to the master link.
    fn answer_from_sandbox<T: Send + 'static>(
        &self,
        fw: &FrameworkId,
        task: &TaskId,
        work: impl FnOnce(&std::path::Path, bool) -> Result<T, String> + Send + 'static,
        reply: impl FnOnce(Result<T, String>) -> AgentToMaster + Send + 'static,
    ) {
        let found = self.sandbox_of(fw, task);
        let Some(master) = self.master.clone() else {
            return;
        };
        let missing = format!("no sandbox for task {task} of framework {fw} on this agent");
        let gc = self.gc.clone();
        let task = task.clone();
        tokio::spawn(async move {
            let removed = found.as_ref().and_then(|(sandbox, _)| gc.removed(sandbox));
            let result = match (found, removed) {
                (None, _) => Err(missing),
                (Some(_), Some(why)) => Err(format!("sandbox of task {task} removed by gc {why}")),
                (Some((sandbox, ended)), None) => {
                    tokio::task::spawn_blocking(move || work(&sandbox, ended))
                        .await
                        .unwrap_or_else(|e| Err(format!("sandbox access failed: {e}")))
                }
            };
            let _ = master.send(reply(result)).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Sandbox gc and full disks (`gc.rs`): the hooks the state machine calls.

impl Agent {
    /// At startup, once the runs the agent knows are in place: every other sandbox in the work
    /// dir is a leftover and is scheduled for gc by its age on disk.
    pub async fn schedule_leftover_sandboxes(&self) {
        let live: std::collections::HashSet<PathBuf> =
            self.runs.values().map(|r| r.sandbox.clone()).collect();
        let work_dir = self.settings.work_dir.clone();
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

    /// A launch failed: what exists of its sandbox is finished; a full disk gets a sweep now.
    fn launch_failed_in(
        &self,
        sandbox: &std::path::Path,
        e: &crate::containerizer::ContainerError,
    ) {
        self.gc.schedule(sandbox.to_path_buf());
        if matches!(e, crate::containerizer::ContainerError::DiskFull { .. }) {
            self.gc.sweep_now();
        }
    }

    /// Logs a status update that could not be written: at once, then every 30 s while it lasts.
    fn note_unrecorded(&mut self, e: &crate::status_updates::StatusUpdateError) {
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
}

fn new_container_key() -> ContainerKey {
    uuid::Uuid::new_v4().simple().to_string()
}

fn program_and_args(cmd: &CommandInfo) -> (PathBuf, Vec<String>) {
    if cmd.shell {
        (
            PathBuf::from("/bin/sh"),
            vec!["-c".into(), cmd.value.clone()],
        )
    } else {
        (PathBuf::from(&cmd.value), cmd.arguments.clone())
    }
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    for f in set {
        f.await;
    }
}

/// The checkpoint of one run as it stands. A run without a live container is written with
/// pid 0: there is nothing to re-adopt.
fn run_checkpoint(key: &ContainerKey, run: &Run) -> RunCheckpoint {
    let container = run.container.as_ref().filter(|_| !run.exited);
    RunCheckpoint {
        container: key.clone(),
        framework_id: run.framework_id.clone(),
        executor_id: run.executor_id.clone(),
        executor: match &run.kind {
            Kind::Command => None,
            Kind::Custom { info } => Some(info.clone()),
        },
        sandbox: run.sandbox.clone(),
        token: run.token.clone(),
        pid: container.map_or(0, |c| c.pid),
        start_time: container.map_or(0, |c| c.start_time),
        cgroup_dirs: container.map_or_else(Vec::new, |c| c.cgroup_dirs().to_vec()),
        memory_limit_mib: run.memory_limit_mib,
        tasks: run
            .tasks
            .values()
            .map(|t| TaskCheckpoint {
                info: t.info.clone(),
                state: t.state,
            })
            .collect(),
        queued: run.queued.clone(),
    }
}
