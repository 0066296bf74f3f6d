//! Tasks' lives on this agent: launching them (in a container of their own, or on a custom
//! executor), killing them, and what a container's end means for the tasks it carried.
//!
//! A launch is two steps: [`Agent::run_task`] records the run and asks for the container
//! ([`Effect::Launch`]); [`Agent::launched`] takes the outcome. The runtime answers a launch
//! before it takes the next input, so no other input sees a run halfway launched.

use super::{Agent, ContainerInfo, ContainerKey, Effect, Kind, Run, TaskRun};
use crate::containerizer::{ContainerError, ExitReport, LaunchSpec, Limits};
use bramble_proto::executor_env as env;
use bramble_proto::messages::{AgentToExecutor, AgentToMaster};
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{ExecutorId, FrameworkId, TaskId, TaskReason, TaskState, TaskStatus};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

impl Agent {
    // -----------------------------------------------------------------------------------------
    // Launching

    pub(super) fn run_task(&mut self, fw: &FrameworkId, fw_name: &str, task: TaskInfo) {
        // The master checks ids too; the agent does not rely on it before making paths.
        let ids = fw
            .check()
            .and_then(|()| task.task_id.check())
            .and_then(|()| {
                task.executor
                    .as_ref()
                    .map_or(Ok(()), |e| e.executor_id.check())
            });
        if let Err(why) = ids {
            warn!(framework = %fw, "refusing a task: {why}");
            return self.refuse_task(fw, &task.task_id, &why.to_string());
        }
        if self.find_task(fw, &task.task_id).is_some() {
            warn!(framework = %fw, task = %task.task_id, "master asked to run a task that already runs here; ignoring");
            return;
        }
        // The master refuses these; a task without memory would run with no memory limit.
        if task.resources.mem_mib == 0 {
            warn!(framework = %fw, task = %task.task_id, "refusing a task without memory");
            let status = self
                .agent_status(fw, None, &task.task_id, TaskState::Error)
                .with_reason(
                    TaskReason::InvalidTask,
                    "a task must ask for some memory (mem > 0): its memory limit comes from it",
                );
            self.report(status);
            return;
        }
        if task.image.is_some() && task.executor.is_some() {
            return self.refuse_task(
                fw,
                &task.task_id,
                "a container image is for command tasks only, not custom executors",
            );
        }
        match (&task.command, &task.executor) {
            (Some(cmd), None) => {
                let cmd = cmd.clone();
                self.launch_command_task(fw, task, cmd)
            }
            (None, Some(exec)) => {
                let exec = exec.clone();
                self.launch_on_custom_executor(fw, fw_name, task, exec)
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

    /// The sandbox for a new run, or `None` once the task is refused because an id cannot
    /// name a directory.
    fn sandbox_for(
        &mut self,
        fw: &FrameworkId,
        executor: &ExecutorId,
        container: &str,
        task: &TaskId,
    ) -> Option<PathBuf> {
        let work_dir = crate::paths::WorkDir::new(&self.settings.work_dir);
        match work_dir.sandbox(fw, executor, container) {
            Ok(sandbox) => Some(sandbox),
            Err(why) => {
                self.refuse_task(fw, task, &why.to_string());
                None
            }
        }
    }

    fn refuse_task(&mut self, fw: &FrameworkId, task: &TaskId, why: &str) {
        let status = self
            .agent_status(fw, None, task, TaskState::Error)
            .with_reason(TaskReason::InvalidTask, why);
        self.report(status);
    }

    fn launch_command_task(&mut self, fw: &FrameworkId, task: TaskInfo, cmd: CommandInfo) {
        // A Mesos framework sees its command task's executor id as the task id (Mesos's
        // command executor), and TASK_STARTING before the command starts.
        let mesos = task.mesos.is_some();
        let executor_id = if mesos {
            ExecutorId(task.task_id.to_string())
        } else {
            ExecutorId(format!("command-{}", task.task_id))
        };
        let key = new_container_key();
        let Some(sandbox) = self.sandbox_for(fw, &executor_id, &key, &task.task_id) else {
            return;
        };
        let mut env_vars = vec![
            (env::TASK_ID.into(), task.task_id.to_string()),
            (env::FRAMEWORK_ID.into(), fw.to_string()),
            (env::SANDBOX.into(), sandbox.display().to_string()),
        ];
        if mesos {
            env_vars.extend(super::mesos::command_task_env(fw, &executor_id, &sandbox));
            let status =
                self.mesos_command_status(fw, &executor_id, &task.task_id, TaskState::Starting);
            self.report(status);
        }
        let limits = super::limits::limits_of(&task.resources);
        let mut spec = self.launch_spec(fw, &key, &sandbox, &cmd, env_vars, limits);
        spec.image = task.image.clone();
        spec.artifacts = task.artifacts.clone();
        let mut run = self.new_run(fw, executor_id, Kind::Command, sandbox, String::new());
        run.memory_limit_mib = limits.mem_mib;
        run.cpus = limits.cpus;
        let mut staged = TaskRun::staging(task);
        if mesos {
            staged.state = TaskState::Starting;
        }
        run.tasks.insert(staged.info.task_id.clone(), staged);
        self.launch(key, run, spec, true);
    }

    fn launch_on_custom_executor(
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
                if let Some(why) = self.artifacts_not_fetched(&key, &task) {
                    warn!(framework = %fw, task = %task.task_id, executor = %exec.executor_id,
                        "refusing a task for a running executor: {why}");
                    return self.refuse_task(fw, &task.task_id, &why);
                }
                self.give_task_to_executor(&key, task);
                return;
            }
        }
        let key = new_container_key();
        let Some(sandbox) = self.sandbox_for(fw, &exec.executor_id, &key, &task.task_id) else {
            return;
        };
        if let Some(mesos) = task.mesos.as_deref() {
            let mesos = mesos.clone();
            return self.launch_mesos_executor(fw, task, exec, &mesos, key, sandbox);
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let env_vars = vec![
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
        ];
        // Its own share and its first task's; resized as tasks come and go (`limits.rs`).
        let limits = executor_limits(&exec, &task);
        let mut spec = self.launch_spec(fw, &key, &sandbox, &exec.command, env_vars, limits);
        // The task that starts an executor brings the executor's artifacts.
        spec.artifacts = task.artifacts.clone();
        let executor_id = exec.executor_id.clone();
        let kind = Kind::Custom {
            info: exec,
            mesos: None,
        };
        let mut run = self.new_run(fw, executor_id, kind, sandbox, token);
        run.memory_limit_mib = limits.mem_mib;
        run.cpus = limits.cpus;
        run.fetched = Some(task.artifacts.clone());
        run.queued.push(task);
        self.active.insert(id, key.clone());
        self.launch(key, run, spec, false);
    }

    /// A custom executor for a Mesos task: the `MESOS_*` environment instead of the
    /// `BRAMBLE_*` one (no token: it subscribes over HTTP and is recognised by its process
    /// session), the command's own environment on top (Mesos lets it override), and the
    /// executor's and its first task's resources as its limits.
    fn launch_mesos_executor(
        &mut self,
        fw: &FrameworkId,
        task: TaskInfo,
        exec: ExecutorInfo,
        mesos: &bramble_proto::task::MesosTask,
        key: ContainerKey,
        sandbox: PathBuf,
    ) {
        let executor = super::mesos::executor_of(mesos);
        let Some(endpoint) = self.settings.mesos_endpoint else {
            let status = self
                .agent_status(
                    fw,
                    Some(&exec.executor_id),
                    &task.task_id,
                    TaskState::Failed,
                )
                .with_reason(
                    TaskReason::LaunchFailed,
                    "the agent's Mesos executor API is off ([mesos] listen in agent.toml)",
                );
            self.report(status);
            return;
        };
        let env_vars = super::mesos::executor_env(
            &super::mesos::ExecutorEnv {
                framework_id: fw,
                executor_id: &exec.executor_id,
                agent_id: self.agent_id.as_ref(),
                endpoint,
                sandbox: &sandbox,
                recovery_timeout: self.settings.executor_recovery_timeout,
            },
            &executor,
        );
        let limits = executor_limits(&exec, &task);
        let mut spec = self.launch_spec(
            fw,
            &key,
            &sandbox,
            &CommandInfo {
                environment: Default::default(),
                ..exec.command.clone()
            },
            env_vars,
            limits,
        );
        spec.env.extend(exec.command.environment.clone());
        // The executor's uris (Mesos's `ExecutorInfo.command.uris`), carried by its first task.
        spec.artifacts = task.artifacts.clone();
        let id = (fw.clone(), exec.executor_id.clone());
        let executor_id = exec.executor_id.clone();
        let kind = Kind::Custom {
            info: exec,
            mesos: Some(executor),
        };
        let mut run = self.new_run(fw, executor_id, kind, sandbox, String::new());
        run.memory_limit_mib = limits.mem_mib;
        run.cpus = limits.cpus;
        run.fetched = Some(task.artifacts.clone());
        run.queued.push(task);
        self.active.insert(id, key.clone());
        self.launch(key, run, spec, false);
    }

    /// What a container for `cmd` is started with: the command's own environment, then
    /// `env_vars`, then the agent id when there is one.
    fn launch_spec(
        &self,
        fw: &FrameworkId,
        key: &ContainerKey,
        sandbox: &Path,
        cmd: &CommandInfo,
        env_vars: Vec<(String, String)>,
        limits: Limits,
    ) -> LaunchSpec {
        let (program, args) = program_and_args(cmd);
        let mut env: Vec<(String, String)> = cmd.environment.clone().into_iter().collect();
        env.extend(env_vars);
        if let Some(id) = &self.agent_id {
            env.push((env::AGENT_ID.into(), id.to_string()));
        }
        LaunchSpec {
            container_id: key.clone(),
            owner: fw.to_string(),
            sandbox: sandbox.to_path_buf(),
            program,
            args,
            env,
            limits,
            exit_status_file: None,
            image: None,
            artifacts: Vec::new(),
        }
    }

    fn new_run(
        &self,
        fw: &FrameworkId,
        executor_id: ExecutorId,
        kind: Kind,
        sandbox: PathBuf,
        token: String,
    ) -> Run {
        Run {
            framework_id: fw.clone(),
            executor_id,
            kind,
            sandbox,
            container: None,
            token,
            conn: None,
            tasks: HashMap::new(),
            queued: Vec::new(),
            launched_at: Instant::now(),
            disconnected_at: None,
            idle_since: None,
            shutting_down: false,
            registration_timed_out: false,
            exited: false,
            memory_limit_mib: 0,
            cpus: 0.0,
            recovered: false,
            task_list: super::TaskList::Unwritten,
            fetched: None,
        }
    }

    /// Records `run` as launching and asks for its container.
    fn launch(&mut self, key: ContainerKey, run: Run, spec: LaunchSpec, supervised: bool) {
        self.runs.insert(key.clone(), run);
        self.effects.push(Effect::Launch {
            container: key,
            spec,
            supervised,
        });
    }

    /// The outcome of [`Effect::Launch`].
    pub(super) fn launched(
        &mut self,
        key: &ContainerKey,
        result: Result<ContainerInfo, ContainerError>,
        now: Instant,
    ) {
        let Some(run) = self.runs.get(key) else {
            error!(container = %key, "launch result for an unknown run; ignoring");
            return;
        };
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        let sandbox = run.sandbox.clone();
        let is_command = matches!(run.kind, Kind::Command);
        let task_ids: Vec<TaskId> = run.tasks.keys().cloned().collect();
        match result {
            Ok(container) => self.container_started(key, container, now),
            Err(e) if is_command => {
                warn!(framework = %fw, container = %key, "launch failed: {e}");
                self.launch_failed_in(sandbox, &e);
                if let Some(run) = self.runs.get_mut(key) {
                    run.exited = true;
                }
                for task_id in task_ids {
                    self.set_task_state(key, &task_id, TaskState::Failed);
                    let status = self
                        .agent_status(&fw, Some(&executor_id), &task_id, TaskState::Failed)
                        .with_reason(TaskReason::LaunchFailed, e.to_string());
                    self.report(status);
                }
            }
            Err(e) => {
                warn!(framework = %fw, executor = %executor_id, "executor launch failed: {e}");
                self.launch_failed_in(sandbox, &e);
                // Never started: nothing was checkpointed and nothing is left to remember.
                let queued = self.runs.remove(key).map(|r| r.queued).unwrap_or_default();
                let id = (fw.clone(), executor_id.clone());
                if self.active.get(&id) == Some(key) {
                    self.active.remove(&id);
                }
                for task in queued {
                    let status = self
                        .agent_status(&fw, Some(&executor_id), &task.task_id, TaskState::Failed)
                        .with_reason(
                            TaskReason::LaunchFailed,
                            format!("executor launch failed: {e}"),
                        );
                    self.report(status);
                }
            }
        }
    }

    /// A container is up: its run is checkpointed in this burst, and a command task is
    /// RUNNING.
    fn container_started(&mut self, key: &ContainerKey, container: ContainerInfo, now: Instant) {
        let pid = container.pid;
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        run.container = Some(container);
        run.launched_at = now;
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        // Killed or shut down while it was being launched.
        let killed = run.shutting_down || run.tasks.values().any(|t| t.kill_requested);
        self.dirty.insert(key.clone());
        match run.kind {
            Kind::Command => {
                let task_id = run.tasks.keys().next().cloned();
                if let Some(task_id) = task_id {
                    info!(framework = %fw, task = %task_id, container = %key, pid, "command task running");
                    let mesos = run
                        .tasks
                        .get(&task_id)
                        .is_some_and(|t| t.info.mesos.is_some());
                    self.set_task_state(key, &task_id, TaskState::Running);
                    let mut status = if mesos {
                        self.mesos_command_status(&fw, &executor_id, &task_id, TaskState::Running)
                    } else {
                        self.agent_status(&fw, Some(&executor_id), &task_id, TaskState::Running)
                    };
                    status.message = format!("pid {pid}");
                    self.report(status);
                }
            }
            Kind::Custom { .. } => {
                info!(framework = %fw, executor = %executor_id, container = %key, pid, "custom executor launched");
                // Tasks may have joined while it was being launched.
                self.resize_executor(key);
            }
        }
        if killed {
            self.kill_container(key);
        }
    }

    /// A launch failed: what exists of its sandbox is finished; a full disk gets a sweep now.
    fn launch_failed_in(&mut self, sandbox: PathBuf, e: &ContainerError) {
        self.effects.push(Effect::ScheduleGc { sandbox });
        if matches!(e, ContainerError::DiskFull { .. }) {
            self.effects.push(Effect::SweepGcNow);
        }
    }

    /// Why `task` cannot go to the running executor of `key`: it names artifacts other than
    /// those fetched into the executor's sandbox when it started (artifacts are fetched only
    /// then, as Mesos fetches `ExecutorInfo.command.uris`); `None` if it may. A later task
    /// repeating its executor's artifacts (a Mesos scheduler resends the whole ExecutorInfo,
    /// a service's instances carry the spec's) is fine: they are there already.
    fn artifacts_not_fetched(&self, key: &ContainerKey, task: &TaskInfo) -> Option<String> {
        if task.artifacts.is_empty() {
            return None;
        }
        let run = self.runs.get(key)?;
        let fetched = match &run.fetched {
            Some(fetched) => fetched == &task.artifacts,
            // Recovered: what its tasks brought (each was checked against the first).
            None => run
                .tasks
                .values()
                .map(|t| &t.info)
                .chain(&run.queued)
                .any(|t| t.artifacts == task.artifacts),
        };
        (!fetched).then(|| {
            format!(
                "the task names {} artifact(s) for executor {} which is running already: \
                 artifacts are fetched only when an executor starts, with its first task; \
                 start another executor for them",
                task.artifacts.len(),
                run.executor_id
            )
        })
    }

    fn give_task_to_executor(&mut self, key: &ContainerKey, task: TaskInfo) {
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        run.idle_since = None;
        let task_id = task.task_id.clone();
        match run.conn {
            Some(serial) => {
                run.tasks
                    .insert(task.task_id.clone(), TaskRun::staging(task.clone()));
                let msg = AgentToExecutor::LaunchTask(task);
                self.effects.push(Effect::ToExecutor { serial, msg });
            }
            None => run.queued.push(task),
        }
        self.task_joined(key, &task_id);
    }

    // -----------------------------------------------------------------------------------------
    // Killing

    pub(super) fn kill_task(&mut self, fw: &FrameworkId, task_id: &TaskId) {
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
            self.task_left(&key, task_id);
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
        match (&run.kind, run.conn) {
            (Kind::Custom { .. }, Some(serial)) => {
                let msg = AgentToExecutor::KillTask(task_id.clone());
                self.effects.push(Effect::ToExecutor { serial, msg });
            }
            _ => self.kill_container(&key),
        }
    }

    /// Asks for the container to be stopped, if it runs (one being launched is stopped once
    /// it is up: see `launched`).
    pub(super) fn kill_container(&mut self, key: &ContainerKey) {
        self.kill_container_after(key, Duration::ZERO)
    }

    /// [`kill_container`](Self::kill_container) once `after` has passed (a Mesos executor's
    /// shutdown grace period, after its SHUTDOWN).
    pub(super) fn kill_container_after(&mut self, key: &ContainerKey, after: Duration) {
        if self.runs.get(key).is_some_and(|r| r.container.is_some()) {
            self.effects.push(Effect::Kill {
                container: key.clone(),
                after,
            });
        }
    }

    pub(super) fn shutdown_framework(&mut self, fw: &FrameworkId) {
        info!(framework = %fw, "framework shut down by the master; killing its executors");
        let keys: Vec<ContainerKey> = self
            .runs
            .iter()
            .filter(|(_, r)| &r.framework_id == fw)
            .map(|(k, _)| k.clone())
            .collect();
        self.shut_down_runs(keys);
        self.forget_framework_updates(fw);
    }

    /// A scheduler's SHUTDOWN call for one executor: it is told to stop and its container is
    /// killed; its tasks end KILLED and `ExecutorExited` follows, as for a framework shutdown.
    pub(super) fn shutdown_executor(&mut self, fw: &FrameworkId, executor_id: &ExecutorId) {
        let keys: Vec<ContainerKey> = self
            .runs
            .iter()
            .filter(|(_, r)| &r.framework_id == fw && &r.executor_id == executor_id && !r.exited)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            debug!(framework = %fw, executor = %executor_id, "shutdown for an executor that is not running; nothing to do");
            return;
        }
        info!(framework = %fw, executor = %executor_id, "executor shut down at the framework's request");
        self.shut_down_runs(keys);
    }

    fn shut_down_runs(&mut self, keys: Vec<ContainerKey>) {
        for key in keys {
            let mut after = Duration::ZERO;
            if let Some(run) = self.runs.get_mut(&key) {
                run.shutting_down = true;
                for t in run.tasks.values_mut() {
                    t.kill_requested = true;
                }
                if let Some(serial) = run.conn {
                    let msg = AgentToExecutor::Shutdown;
                    self.effects.push(Effect::ToExecutor { serial, msg });
                    after = super::shutdown_grace(run.kind.mesos());
                }
            }
            self.kill_container_after(&key, after);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Containers ending

    pub(super) fn container_exited(
        &mut self,
        key: &ContainerKey,
        report: ExitReport,
        now: Instant,
    ) {
        self.reconnected(key, now);
        let registration_timeout = self.settings.executor_registration_timeout;
        let Some(run) = self.runs.get_mut(key) else {
            return;
        };
        run.exited = true;
        run.conn = None;
        run.container = None;
        let sandbox = run.sandbox.clone();
        let fw = run.framework_id.clone();
        let executor_id = run.executor_id.clone();
        let is_command = matches!(run.kind, Kind::Command);
        let timed_out = run.registration_timed_out;
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
            status.message = if is_command && task.info.mesos.is_some() {
                // As Mesos's command executor words it, and from it.
                status.source = UpdateSource::Executor;
                super::mesos::command_outcome(&report)
            } else if is_command {
                report.describe()
            } else {
                format!("executor {executor_id} ended: {}", report.describe())
            };
            outcomes.push(status);
        }
        let dropped: Vec<TaskInfo> = run.queued.drain(..).collect();
        for task in &dropped {
            self.task_left(key, &task.task_id);
        }
        for task in dropped {
            let status = TaskStatus::new(
                fw.clone(),
                task.task_id.clone(),
                TaskState::Failed,
                UpdateSource::Agent,
            )
            .with_reason(
                if timed_out {
                    TaskReason::ExecutorRegistrationTimeout
                } else {
                    TaskReason::ExecutorTerminated
                },
                if timed_out {
                    format!(
                        "executor {executor_id} did not register within {}s",
                        registration_timeout.as_secs()
                    )
                } else {
                    format!(
                        "executor {executor_id} ended before it registered: {}",
                        report.describe()
                    )
                },
            );
            outcomes.push(status);
        }
        self.effects.push(Effect::ScheduleGc { sandbox });
        for status in outcomes {
            self.set_task_state(key, &status.task_id, status.state);
            self.report(status);
        }
        if !is_command {
            self.send_master(AgentToMaster::ExecutorExited {
                framework_id: fw.clone(),
                executor_id: executor_id.clone(),
                status: report.wait_status(),
            });
        }
        let id = (fw, executor_id);
        if self.active.get(&id) == Some(key) {
            self.active.remove(&id);
        }
        if self.run_is_over(key) {
            self.remove_run(key);
        }
    }
}

/// A custom executor's limits at launch: its own share and its first task's.
fn executor_limits(exec: &ExecutorInfo, first: &TaskInfo) -> Limits {
    let mut total = exec.resources.clone();
    total.add(&first.resources);
    super::limits::limits_of(&total)
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
