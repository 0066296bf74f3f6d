//! The agent's brain: which executors run here, which tasks they carry, and what has been
//! reported about them. A pure state machine, the master's `state.rs` shape: it takes
//! [`Input`]s and returns [`Effect`]s, and never touches a process, a socket or a file itself.
//! The runtime (`runtime.rs`) owns the containerizer, the checkpoints, the status update log,
//! the master link and the executor connections; it carries the effects out and feeds their
//! results back in (`Launched`, `Adopted`, `ContainerExited`, `UpdateAcknowledged`). So the
//! core is unit-tested (`tests.rs`) with no processes and no network.
//!
//! Nothing is acknowledged before it is durable. Every task state change goes through
//! [`Agent::report`], which only collects it; after a burst of inputs the runtime takes the
//! burst's [`Writes`] (run files first, then the runs' task list changes and the status updates
//! in one write to the update log: `membership.rs`), makes them durable in one group commit, tells the core what was recorded ([`Agent::committed`], which then
//! acknowledges executors' updates), and only then releases the burst's messages and sends
//! the due updates. The update log resends each task's head update until the framework
//! acknowledges it.
//!
//! Two kinds of executor run here. A *command* task gets a container of its own running
//! `/bin/sh -c` (or a program), watched by the agent itself: its exit status is the task's
//! outcome. A *custom* executor is a program the framework names; it connects back over the
//! agent's Unix socket and may run many tasks, reporting their states itself.
//!
//! Recovery (`recovery.rs`): a restarted agent hands the core what the previous process
//! checkpointed before serving anything: live processes are re-adopted (custom executors then
//! reconnect with their token and resend what was not acknowledged; command tasks'
//! supervisors record their exit status), dead ones are reported, and after a host reboot
//! every old task is LOST without touching any pid.
//!
//! Reading order: this file (state and dispatch), `tasks.rs` (launching, killing, containers
//! ending), `executors.rs` (custom executors' connections), `updates.rs` (reporting, the group
//! commit, acknowledgements), `membership.rs` (where runs' task lists are durable),
//! `recovery.rs`, `sandboxes.rs`.

mod effects;
mod executors;
mod limits;
mod membership;
mod mesos;
mod recovery;
mod sandboxes;
mod tasks;
mod updates;

#[cfg(test)]
mod tests;

pub use effects::{
    Admission, ContainerInfo, ContainerKey, Effect, ExecutorAuth, Input, Recorded, SandboxRequest,
    Writes,
};
pub use recovery::{RecoveredRun, RecoverySummary};

use crate::checkpoint::MesosExecutor;
use bramble_proto::bounded::BoundedMap;
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, MasterToAgent, RunningTask};
use bramble_proto::task::{ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskState, TaskStatus};
use membership::TaskList;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Settings the state machine needs.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub work_dir: PathBuf,
    pub socket_path: PathBuf,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub executor_registration_timeout: Duration,
    pub executor_idle_timeout: Duration,
    /// How long a custom executor that lost this agent keeps trying to reconnect (passed to
    /// it in its environment); also how long a checkpointing Mesos executor that dropped its
    /// subscription has to subscribe again before it is killed.
    pub executor_recovery_timeout: Duration,
    /// Where Mesos executors reach the agent's executor HTTP API (`MESOS_AGENT_ENDPOINT`), the
    /// listener's actual bound address; `None` when the API is off (Mesos tasks then fail).
    pub mesos_endpoint: Option<std::net::SocketAddr>,
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

impl TaskRun {
    fn staging(info: TaskInfo) -> Self {
        Self {
            info,
            state: TaskState::Staging,
            kill_requested: false,
            terminal: false,
        }
    }
}

// One Kind per run, never copied around: boxing the custom variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Command,
    /// `mesos`: set for an executor speaking the Mesos executor HTTP API.
    Custom {
        info: ExecutorInfo,
        mesos: Option<MesosExecutor>,
    },
}

impl Kind {
    fn mesos(&self) -> Option<&MesosExecutor> {
        match self {
            Kind::Custom { mesos, .. } => mesos.as_ref(),
            Kind::Command => None,
        }
    }
}

/// One executor run: a container (being launched, running, or ended) and its tasks.
struct Run {
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    kind: Kind,
    sandbox: PathBuf,
    /// The running container; `None` while it is being launched and once it has ended.
    container: Option<ContainerInfo>,
    token: String,
    /// The custom executor's connection, by its serial number.
    conn: Option<u64>,
    tasks: HashMap<TaskId, TaskRun>,
    /// Tasks waiting for a custom executor to register.
    queued: Vec<TaskInfo>,
    launched_at: Instant,
    /// A checkpointing Mesos executor's subscription closed at this time; it has the
    /// recovery timeout to subscribe again.
    disconnected_at: Option<Instant>,
    idle_since: Option<Instant>,
    shutting_down: bool,
    /// Killed because it did not register in time: its tasks fail with
    /// `ExecutorRegistrationTimeout`, which the master counts against this agent's health.
    registration_timed_out: bool,
    exited: bool,
    /// The container's memory limit (0: none); a custom executor's only grows (`limits.rs`).
    memory_limit_mib: u64,
    /// The container's cpu limit as last set (0: not known, after a restart).
    cpus: f64,
    /// Re-adopted from a previous agent process.
    recovered: bool,
    /// Where its task list is durable (`membership.rs`).
    task_list: TaskList,
    /// A custom executor's artifacts, fetched into its sandbox when it started (with its
    /// first task); `None`: not known (recovered: see `tasks.rs` `artifacts_not_fetched`).
    fetched: Option<Vec<bramble_proto::artifact::Artifact>>,
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
    agent_id: Option<AgentId>,
    /// Whether the master link is registered (messages to the master go out only then).
    master_connected: bool,
    runs: HashMap<ContainerKey, Run>,
    /// (framework, executor) → the container currently serving it.
    active: HashMap<(FrameworkId, ExecutorId), ContainerKey>,
    /// What the current input asks of the world, returned by the entry points.
    effects: Vec<Effect>,
    /// Updates reported but not yet durable, with the executor ack each one owes.
    uncommitted: Vec<(TaskStatus, Option<(ContainerKey, uuid::Uuid)>)>,
    /// Taken by `take_writes`, waiting for their outcome in `committed`.
    committing: Vec<(TaskStatus, Option<(ContainerKey, uuid::Uuid)>)>,
    /// Tasks with updates recorded and not yet acknowledged, with the latest recorded state:
    /// the update log's picture, kept here so the core can decide without asking it.
    unacknowledged: HashMap<(FrameworkId, TaskId), TaskState>,
    /// Sandboxes of tasks that are over, still on disk, for `bramble logs`.
    finished_sandboxes: BoundedMap<(FrameworkId, TaskId), PathBuf>,
    /// A new agent id to persist in the next commit.
    new_agent_id: Option<AgentId>,
    /// Runs whose checkpoint must be (re)written in the next commit.
    dirty: BTreeSet<ContainerKey>,
    /// Runs whose first checkpoint is in the burst being committed: if it cannot be written,
    /// their launch fails (`Agent::runs_not_checkpointed`).
    first_checkpoints: BTreeSet<ContainerKey>,
    /// Runs whose checkpoint must be removed in the next commit.
    removed: BTreeSet<ContainerKey>,
    /// Changes to runs' task lists for the next commit (`membership.rs`).
    task_changes: Vec<crate::checkpoint::TaskChange>,
    /// Taken by `take_writes`, waiting for their outcome in `committed`.
    committing_changes: Vec<crate::checkpoint::TaskChange>,
    /// Runs whose task list is in their run file only: the next commit moves it into the log.
    to_log: BTreeSet<ContainerKey>,
    /// Re-adopted custom executors that have not reconnected yet, and when recovery began.
    awaiting_reconnect: BTreeSet<ContainerKey>,
    recovery_began: Option<Instant>,
    /// Executors found ended during recovery, to tell the master once it is connected.
    exited_while_down: Vec<(FrameworkId, ExecutorId)>,
}

/// How long an executor told to shut down has before its container is killed: a Mesos
/// executor's `shutdown_grace_period`; none for a native one (it exits on `Shutdown`, and the
/// kill's own SIGTERM grace covers the rest).
fn shutdown_grace(mesos: Option<&MesosExecutor>) -> Duration {
    mesos.map_or(Duration::ZERO, |m| {
        Duration::from_millis(m.shutdown_grace_ms)
    })
}

/// How many finished tasks' sandboxes the agent remembers the location of. The master asks an
/// agent about a task only while it is live or among its last `RECENT_COMPLETED` (1,000,
/// cluster-wide; Mesos's `max_completed_tasks_per_framework`), so remembering more serves no
/// read; at ~350 bytes an entry, 10,000 cost an agent 3.5 MiB after a burst of tiny tasks.
const FINISHED_SANDBOXES: usize = 1_000;

impl Agent {
    /// A core with nothing running. `agent_id`: the id registered under before, if any;
    /// `unacknowledged`: the update log's unacknowledged updates (the latest per task).
    pub fn new<'a>(
        settings: AgentSettings,
        agent_id: Option<AgentId>,
        unacknowledged: impl IntoIterator<Item = &'a TaskStatus>,
    ) -> Self {
        Self {
            settings,
            agent_id,
            master_connected: false,
            runs: HashMap::new(),
            active: HashMap::new(),
            effects: Vec::new(),
            uncommitted: Vec::new(),
            committing: Vec::new(),
            unacknowledged: unacknowledged
                .into_iter()
                .map(|u| ((u.framework_id.clone(), u.task_id.clone()), u.state))
                .collect(),
            finished_sandboxes: BoundedMap::new(FINISHED_SANDBOXES),
            new_agent_id: None,
            dirty: BTreeSet::new(),
            first_checkpoints: BTreeSet::new(),
            removed: BTreeSet::new(),
            task_changes: Vec::new(),
            committing_changes: Vec::new(),
            to_log: BTreeSet::new(),
            awaiting_reconnect: BTreeSet::new(),
            recovery_began: None,
            exited_while_down: Vec::new(),
        }
    }

    /// Handles one input and returns what it asks of the world.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::MasterConnected { agent_id } => self.master_connected(agent_id),
            Input::MasterDisconnected => self.master_connected = false,
            Input::FromMaster(msg) => self.master_message(msg),
            Input::Launched { container, result } => self.launched(&container, result, now),
            Input::Adopted { container, info } => {
                if let Some(run) = self.runs.get_mut(&container) {
                    run.container = Some(info);
                }
            }
            Input::ContainerExited { container, report } => {
                self.container_exited(&container, report, now)
            }
            Input::ExecutorConnected {
                serial,
                framework_id,
                executor_id,
                auth,
            } => {
                let result = self.executor_connected(serial, framework_id, executor_id, auth, now);
                self.effects.push(Effect::AnswerExecutor { serial, result });
            }
            Input::FromExecutor { container, msg } => self.executor_message(&container, msg),
            Input::ExecutorDisconnected { container, serial } => {
                self.executor_disconnected(&container, serial, now)
            }
            Input::UpdateAcknowledged {
                framework_id,
                task_id,
                settled,
            } => self.update_acknowledged(&framework_id, &task_id, settled),
        }
        self.take_effects()
    }

    /// Periodic work: executor registration timeouts, idle executors.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let timeout = self.settings.executor_registration_timeout;
        let idle_timeout = self.settings.executor_idle_timeout;
        let recovery_timeout = self.settings.executor_recovery_timeout;
        let mut to_kill = Vec::new();
        for (key, run) in self.runs.iter_mut() {
            if run.exited || run.shutting_down || run.container.is_none() {
                continue;
            }
            if let Kind::Custom { mesos, .. } = &run.kind {
                if run.conn.is_none() {
                    // Never connected: the registration timeout; a checkpointing Mesos
                    // executor whose subscription closed: the recovery timeout.
                    let (since, limit, what) = match run.disconnected_at {
                        Some(at) => (at, recovery_timeout, "subscribe again"),
                        None => (run.launched_at, timeout, "register"),
                    };
                    if now.duration_since(since) > limit {
                        warn!(container = %key, executor = %run.executor_id, "executor did not {what} within {limit:?}; killing it");
                        run.shutting_down = true;
                        run.registration_timed_out = run.disconnected_at.is_none();
                        to_kill.push((key.clone(), Duration::ZERO));
                    }
                    run.idle_since = None;
                    continue;
                }
                // A Mesos executor is kept without tasks, as Mesos keeps it (its framework
                // may send it messages or tasks later); it ends by SHUTDOWN or by itself.
                if run.live_tasks() == 0 && mesos.is_none() {
                    let since = *run.idle_since.get_or_insert(now);
                    if now.duration_since(since) > idle_timeout {
                        info!(container = %key, executor = %run.executor_id, "shutting down idle executor");
                        run.shutting_down = true;
                        if let Some(serial) = run.conn {
                            let msg = AgentToExecutor::Shutdown;
                            self.effects.push(Effect::ToExecutor { serial, msg });
                        }
                        to_kill.push((key.clone(), shutdown_grace(mesos.as_ref())));
                    }
                } else {
                    run.idle_since = None;
                }
            }
        }
        for (key, after) in to_kill {
            self.kill_container_after(&key, after);
        }
        self.take_effects()
    }

    /// Whether an executor of this framework runs here, for the Mesos API's status codes:
    /// `Err` says which of the two is unknown ("Framework cannot be found" or "Executor cannot
    /// be found", as Mesos words it).
    pub fn executor_known(&self, fw: &FrameworkId, executor: &ExecutorId) -> Result<(), String> {
        if self.active.contains_key(&(fw.clone(), executor.clone())) {
            Ok(())
        } else if self.runs.values().any(|r| &r.framework_id == fw) {
            Err("Executor cannot be found".into())
        } else {
            Err("Framework cannot be found".into())
        }
    }

    /// The id this agent is registered under, if any.
    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    /// The Register message for a fresh master connection: the tasks running *now*, each as
    /// its id and resources (all the master reconciles by). Tasks' data, commands and Mesos
    /// JSON stay here: with them, an agent running many tasks would build a Register over the
    /// frame limit, and a Register that cannot be sent is an agent that cannot register.
    pub fn registration(&self) -> AgentToMaster {
        let tasks = self
            .runs
            .values()
            .flat_map(|r| {
                r.tasks
                    .values()
                    .map(|t| RunningTask {
                        framework_id: r.framework_id.clone(),
                        task: as_registered(&t.info),
                        state: t.state,
                    })
                    .chain(r.queued.iter().map(|t| RunningTask {
                        framework_id: r.framework_id.clone(),
                        task: as_registered(t),
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

    /// What runs here; `pending_updates` is the update log's count.
    pub fn view(&self, pending_updates: usize) -> AgentView {
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
            connected: self.master_connected,
            containers,
            pending_updates,
        }
    }

    /// Every sandbox a run here uses (the rest of the work dir's sandboxes are leftovers).
    pub fn sandboxes(&self) -> std::collections::HashSet<PathBuf> {
        self.runs.values().map(|r| r.sandbox.clone()).collect()
    }

    fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    // -----------------------------------------------------------------------------------------
    // Master

    fn master_connected(&mut self, agent_id: AgentId) {
        if self.agent_id.as_ref() != Some(&agent_id) {
            self.new_agent_id = Some(agent_id.clone());
            self.agent_id = Some(agent_id);
        }
        for (framework_id, executor_id) in self.exited_while_down.drain(..) {
            self.effects
                .push(Effect::ToMaster(AgentToMaster::ExecutorExited {
                    framework_id,
                    executor_id,
                    status: None,
                }));
        }
        self.master_connected = true;
    }

    fn send_master(&mut self, msg: AgentToMaster) {
        if self.master_connected {
            self.effects.push(Effect::ToMaster(msg));
        }
    }

    fn master_message(&mut self, msg: MasterToAgent) {
        match msg {
            MasterToAgent::Registered { .. } | MasterToAgent::HeartbeatAck => {}
            MasterToAgent::RunTasks {
                framework_id,
                framework_name,
                tasks,
            } => {
                for task in tasks {
                    self.run_task(&framework_id, &framework_name, task);
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
            } => self.effects.push(Effect::AcknowledgeUpdate {
                framework_id,
                task_id,
                uuid,
            }),
            MasterToAgent::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => {
                let conn = self
                    .active
                    .get(&(framework_id.clone(), executor_id.clone()))
                    .and_then(|k| self.runs.get(k))
                    .and_then(|r| r.conn);
                match conn {
                    Some(serial) => self.effects.push(Effect::ToExecutor {
                        serial,
                        msg: AgentToExecutor::Message(data),
                    }),
                    None => {
                        debug!(framework = %framework_id, executor = %executor_id, "framework message for an executor that is not connected; dropped")
                    }
                }
            }
            MasterToAgent::ShutdownExecutor {
                framework_id,
                executor_id,
            } => self.shutdown_executor(&framework_id, &executor_id),
            MasterToAgent::ShutdownFramework { framework_id } => {
                self.shutdown_framework(&framework_id)
            }
            MasterToAgent::ReadSandbox { request, read } => {
                let (fw, task) = (read.framework_id.clone(), read.task_id.clone());
                self.serve_sandbox(fw, task, SandboxRequest::Read { request, read })
            }
            MasterToAgent::ListSandbox { request, list } => {
                let (fw, task) = (list.framework_id.clone(), list.task_id.clone());
                self.serve_sandbox(fw, task, SandboxRequest::List { request, list })
            }
            // The master link hands image pieces to `image_service.rs`, never to the core.
            MasterToAgent::Image { request, .. } => {
                debug!(request, "image piece reached the core; ignored")
            }
            // The master link hands artifact pieces to the fetcher (`fetcher/master.rs`).
            MasterToAgent::ArtifactData { request, .. } => {
                debug!(request, "artifact piece reached the core; ignored")
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Small helpers shared by the parts

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

    fn set_task_state(&mut self, key: &ContainerKey, task_id: &TaskId, state: TaskState) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        let mesos_executor = matches!(&run.kind, Kind::Custom { mesos: Some(_), .. });
        let Some(t) = run.tasks.get_mut(task_id) else {
            return;
        };
        // A Mesos executor re-subscribing after an agent restart is asked which STAGING
        // tasks it knows; one that has moved on must not look STAGING in the checkpoint
        // once its updates are acknowledged and gone from the log. Native runs skip this:
        // nothing there reads a checkpointed STAGING.
        let matters =
            mesos_executor && t.state == TaskState::Staging && state != TaskState::Staging;
        t.state = state;
        if state.is_terminal() {
            t.terminal = true;
        }
        if matters {
            self.task_state_matters(key);
        }
        if state.is_terminal() {
            self.resize_executor(key);
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
}

/// A task as a Register lists it: what the master reconciles by (its id and resources), none
/// of what only launching needed.
fn as_registered(info: &TaskInfo) -> TaskInfo {
    TaskInfo {
        task_id: info.task_id.clone(),
        name: String::new(),
        agent_id: info.agent_id.clone(),
        resources: info.resources.clone(),
        command: None,
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}
