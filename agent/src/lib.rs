//! `bramble-agent`: runs on every node. It offers the node's resources to the master, runs the
//! executors and tasks the master sends, and reports every task's state reliably.
//!
//! Where to start reading: `lib.rs` (wiring), `core/` (the state machine: inputs in, effects
//! out, no I/O), `runtime.rs` (carries the effects out), then `master_link.rs`,
//! `executor_socket.rs` and `containerizer/` (the edges).
//!
//! Restarts: [`start`] recovers what a previous agent process left in the work dir before it
//! serves anything (`checkpoint.rs`, [`runtime::Runtime::recover`]). How an agent stops decides what
//! the next one finds: [`AgentHandle::shutdown`] kills every container (tests, `bramble
//! demo`); [`AgentHandle::shutdown_leaving_tasks`] leaves them running for the next agent
//! process to re-adopt (the `bramble-agent` binary on SIGTERM, unless configured otherwise).

pub mod checkpoint;
pub mod config;
pub mod containerizer;
pub mod core;
pub mod executor_socket;
pub mod fetcher;
pub mod gc;
pub mod image_gc;
pub mod image_preload;
pub mod image_service;
pub mod images;
pub mod master_link;
pub mod mesos;
pub mod paths;
pub mod resources;
pub mod runtime;
pub mod sandbox;
pub mod status_updates;

use crate::core::{Agent, AgentSettings, AgentView};
use bramble_proto::dir_lock::{DirLock, DirLockError};
use bramble_proto::durable::{self, FileError};
use bramble_proto::identity::Credentials;
use bramble_proto::transport::client_endpoint;
use bramble_proto::AgentId;
use checkpoint::{AgentInfo, Checkpoints};
use containerizer::Containerizer;
use master_link::MasterLocator;
use paths::WorkDir;
use runtime::{Edges, Input, Runtime, Stop};
use status_updates::StatusUpdateManager;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::info;

/// Everything needed to start an agent, already validated.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub work_dir: PathBuf,
    pub master: MasterLocator,
    pub resources: bramble_proto::Resources,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub hostname: String,
    pub heartbeat_interval: Duration,
    pub executor_registration_timeout: Duration,
    pub kill_grace: Duration,
    pub executor_idle_timeout: Duration,
    /// Use cgroups when the machine allows (false: never, e.g. for unprivileged tests).
    pub cgroups: bool,
    /// When finished sandboxes are removed.
    pub gc: gc::GcPolicy,
    /// Who tasks run as when the agent is root: each framework's as their own uid, or all as
    /// one user (None: as the agent's own user).
    pub task_user: Option<containerizer::TaskUsers>,
    /// Each container's cap on processes and threads (0: unlimited;
    /// [`containerizer::DEFAULT_PIDS_MAX`] by default).
    pub pids_max: u64,
    /// Where the Mesos executor HTTP API listens (`[mesos] listen`; port 0: any free port);
    /// `None`: off, and Mesos tasks with a custom executor fail to launch.
    pub mesos_listen: Option<SocketAddr>,
    /// Run tasks in container images with this runtime (`[containers]`); `None`: no image
    /// tasks here, and no `containers` attribute.
    pub containers: Option<ContainersOptions>,
    /// How tasks' artifacts are fetched (`[fetch]`); `None`: the defaults
    /// ([`fetcher::FetchOptions::new`]).
    pub fetch: Option<fetcher::FetchOptions>,
}

/// Where the OCI runtime and the images are (`[containers]`, validated at start).
#[derive(Debug, Clone)]
pub struct ContainersOptions {
    pub runtime: PathBuf,
    pub images: PathBuf,
    /// Image tarballs to import at start (`[containers] preload`, `image_preload.rs`).
    pub preload: Option<PathBuf>,
    /// Bytes the image store is kept under (`[containers] images_budget_mb`, `image_gc.rs`).
    pub images_budget: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Locked(#[from] DirLockError),
    #[error("{0}")]
    Updates(#[from] status_updates::StatusUpdateError),
    #[error("{0}")]
    Socket(#[from] executor_socket::SocketError),
    #[error("{0}")]
    MesosListen(#[from] mesos::ListenError),
    #[error("{0}")]
    Transport(#[from] bramble_proto::transport::TransportError),
    #[error("{0}")]
    TaskUser(String),
    #[error("[containers]: {0}")]
    Containers(String),
    #[error("[fetch]: {0}")]
    Fetch(String),
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(
        "refusing to recover: the agent's resources changed since {path} was written, while \
         {runs} executor run(s) checkpointed there may still be running (pids: {pids}): {}. \
         Restore the previous settings, or start clean: stop those processes and remove \
         {runs_dir} (their tasks will be reported LOST)",
        .changes.join("; "),
        path = .path.display(),
        runs_dir = .runs_dir.display()
    )]
    ResourcesChanged {
        path: PathBuf,
        runs_dir: PathBuf,
        runs: usize,
        pids: String,
        changes: Vec<String>,
    },
}

/// How a (re)starting agent treats what a previous agent process left behind.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// The file holding this boot's id (a different one than checkpointed means a reboot).
    pub boot_id_path: PathBuf,
    /// Compare the disk size with the checkpoint (false when it is detected: it is the free
    /// space, which moves on its own).
    pub compare_disk: bool,
    /// How long custom executors that lost their agent try to reconnect before exiting, and
    /// command tasks wait for an agent before their supervisor ends them (Mesos's
    /// `recovery_timeout`).
    pub executor_reconnect_timeout: Duration,
}

/// Default [`RecoveryOptions::executor_reconnect_timeout`], as Mesos's recovery timeout.
pub const DEFAULT_EXECUTOR_RECONNECT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Default for RecoveryOptions {
    fn default() -> Self {
        Self {
            boot_id_path: checkpoint::boot_id_path(),
            compare_disk: true,
            executor_reconnect_timeout: DEFAULT_EXECUTOR_RECONNECT_TIMEOUT,
        }
    }
}

/// A running agent.
pub struct AgentHandle {
    inputs: mpsc::Sender<Input>,
    shutdown: watch::Sender<bool>,
    stop: watch::Sender<Stop>,
    tasks: Vec<JoinHandle<()>>,
    state_task: JoinHandle<()>,
    /// Held while the agent runs: no second agent on this work dir (released last, in
    /// `stop_as`, after everything that uses the directory has stopped).
    work_dir_lock: DirLock,
    mesos_endpoint: Option<SocketAddr>,
}

impl AgentHandle {
    /// What runs here right now.
    pub async fn view(&self) -> Option<AgentView> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Inspect(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Where the Mesos executor API listens, when it is on.
    pub fn mesos_endpoint(&self) -> Option<SocketAddr> {
        self.mesos_endpoint
    }

    /// Stops the agent, killing its containers: nothing it started keeps running.
    pub async fn shutdown(self) {
        self.stop_as(Stop::KillEverything).await
    }

    /// Stops the agent and leaves its containers running, checkpointed, for the next agent
    /// process on this work dir to re-adopt (custom executors wait for it to come back).
    pub async fn shutdown_leaving_tasks(self) {
        self.stop_as(Stop::LeaveRunning).await
    }

    async fn stop_as(self, how: Stop) {
        let _ = self.stop.send(how);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.state_task.await;
        drop(self.work_dir_lock);
    }
}

/// The id this agent registered under before, if any.
pub fn load_agent_id(work_dir: &Path) -> Option<AgentId> {
    std::fs::read_to_string(WorkDir::new(work_dir).agent_id_file())
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(AgentId)
}

/// Writes the agent id durably.
pub fn persist_agent_id(work_dir: &Path, id: &AgentId) -> Result<(), FileError> {
    let work_dir = WorkDir::new(work_dir);
    let meta = work_dir.meta_dir();
    std::fs::create_dir_all(&meta).map_err(FileError::at("creating", &meta))?;
    durable::write(&work_dir.agent_id_file(), id.as_str().as_bytes())
}

/// Starts an agent with default [`RecoveryOptions`]: opens its checkpoints, recovers what a
/// previous agent left, binds the executor socket and starts the master link.
pub async fn start(creds: &Credentials, opts: AgentOptions) -> Result<AgentHandle, StartError> {
    start_with(creds, opts, RecoveryOptions::default()).await
}

/// [`start`] with explicit recovery options.
pub async fn start_with(
    creds: &Credentials,
    opts: AgentOptions,
    recovery: RecoveryOptions,
) -> Result<AgentHandle, StartError> {
    let started = Instant::now();
    let mut opts = opts;
    // Before the checkpoint check: the attribute is part of what this agent offers.
    let image_runtime = match &opts.containers {
        Some(c) => {
            let runtime = containerizer::ImageRuntime::probe(&c.runtime, &c.images)
                .map_err(StartError::Containers)?;
            info!(runtime = %runtime.version(), images = %c.images.display(), "container images enabled");
            opts.attributes.insert(
                bramble_proto::task::CONTAINERS_ATTRIBUTE.to_string(),
                runtime.name(),
            );
            Some(runtime)
        }
        None => None,
    };
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| StartError::WorkDir {
        path: opts.work_dir.clone(),
        source,
    })?;
    let work_dir_lock = DirLock::acquire(&opts.work_dir, "bramble-agent")?;
    let work_dir = WorkDir::new(&opts.work_dir);
    let checkpoints = Checkpoints::open(&work_dir)?;
    let (runs, reboot) = check_previous_run(&checkpoints, &opts, &recovery)?;
    let updates = StatusUpdateManager::open(&work_dir.updates_dir())?;
    let socket_path = work_dir.executor_socket();
    let listener = executor_socket::bind(&socket_path)?;
    let mesos_listener = match opts.mesos_listen {
        Some(addr) => Some(mesos::bind(addr).await?),
        None => None,
    };
    let mesos_endpoint = match &mesos_listener {
        Some(l) => Some(l.local_addr().map_err(mesos::ListenError::from)?),
        None => None,
    };
    let endpoint = client_endpoint(creds, SocketAddr::from(([0u16; 8], 0)))
        .or_else(|_| client_endpoint(creds, SocketAddr::from(([0, 0, 0, 0], 0))))?;
    let agent_id = load_agent_id(&opts.work_dir);
    let containerizer = if opts.cgroups {
        let parent = match &agent_id {
            Some(id) => format!("bramble-{id}"),
            None => "bramble".to_string(),
        };
        Containerizer::detect(&parent)
    } else {
        Containerizer::without_cgroups()
    };
    let orphan_watch = containerizer::OrphanWatch::new(
        work_dir.heartbeat_file(),
        recovery.executor_reconnect_timeout,
    );
    let master_fetch = fetcher::MasterFetch::default();
    let fetch_opts = opts
        .fetch
        .clone()
        .unwrap_or_else(|| fetcher::FetchOptions::new(&opts.work_dir));
    let fetcher =
        fetcher::Fetcher::new(fetch_opts, master_fetch.clone()).map_err(StartError::Fetch)?;
    let containerizer = containerizer
        .with_fetcher(Arc::new(fetcher))
        .with_pids_max(opts.pids_max)
        .with_orphan_watch(orphan_watch.clone())
        .with_images(image_runtime)
        .with_task_user(opts.task_user.clone(), &opts.work_dir, &socket_path)
        .map_err(StartError::TaskUser)?;
    let containerizer = Arc::new(containerizer);
    info!(work_dir = %opts.work_dir.display(), resources = %opts.resources, hostname = %opts.hostname,
        agent = ?agent_id.as_ref().map(|a| a.to_string()), cgroups = %containerizer.cgroup_summary(), "agent starting");
    let settings = AgentSettings {
        work_dir: opts.work_dir.clone(),
        socket_path,
        hostname: opts.hostname.clone(),
        resources: opts.resources.clone(),
        attributes: opts.attributes.clone(),
        executor_registration_timeout: opts.executor_registration_timeout,
        executor_idle_timeout: opts.executor_idle_timeout,
        executor_recovery_timeout: recovery.executor_reconnect_timeout,
        mesos_endpoint,
    };
    let (inputs, input_rx) = mpsc::channel(4096);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let core = Agent::new(settings, agent_id, updates.latest());
    let edges = Edges {
        containerizer,
        updates,
        checkpoints,
        work_dir: opts.work_dir.clone(),
        kill_grace: opts.kill_grace,
        gc: opts.gc,
    };
    let mut runtime = Runtime::new(core, edges, inputs.clone());
    // The checkpoints and LOST updates recovery produces are durable before anything is
    // served (with no run file left, this only drops task lists the log holds for none).
    let recovered = !runs.is_empty();
    runtime.recover(runs, reboot).await;
    if recovered {
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            "recovery checkpoints read; serving executors"
        );
    }
    let state_task = tokio::spawn(runtime::run(
        runtime,
        input_rx,
        shutdown_rx.clone(),
        stop_rx,
    ));
    let image_store = opts.containers.as_ref().map(|c| {
        let store = images::ImageStore::new(&c.images);
        store.remove_leftovers();
        let gc = c
            .images_budget
            .map(|budget| (WorkDir::new(&opts.work_dir), budget));
        image_preload::spawn(store.clone(), c.preload.clone(), gc.clone());
        (store, gc)
    });
    let link = tokio::spawn(master_link::run(
        endpoint.clone(),
        opts.master.clone(),
        inputs.clone(),
        master_link::Relays {
            images: image_service::spawn(image_store),
            artifacts: master_fetch,
        },
        opts.heartbeat_interval,
        bramble_proto::transport::issued_by_own_ca(creds),
        shutdown_rx.clone(),
    ));
    let socket = tokio::spawn(executor_socket::serve(
        listener,
        inputs.clone(),
        shutdown_rx.clone(),
    ));
    // Started before anything is served: the tasks re-adopted above watch it.
    let heartbeat = tokio::spawn(containerizer::beat(orphan_watch, shutdown_rx.clone()));
    let mut tasks = vec![link, socket, heartbeat];
    if let Some(listener) = mesos_listener {
        let edge = mesos::Edge::new(inputs.clone(), opts.hostname.clone());
        tasks.push(tokio::spawn(mesos::serve(listener, edge, shutdown_rx)));
    }
    Ok(AgentHandle {
        inputs,
        shutdown,
        stop,
        tasks,
        state_task,
        work_dir_lock,
        mesos_endpoint,
    })
}

/// Reads what the previous agent process checkpointed and decides what can be recovered:
/// its runs, and `Some(why)` when the host rebooted since (nothing survived). Refuses when
/// runs are checkpointed and the resources changed under them. Records this start.
fn check_previous_run(
    checkpoints: &Checkpoints,
    opts: &AgentOptions,
    recovery: &RecoveryOptions,
) -> Result<(Vec<checkpoint::RunCheckpoint>, Option<String>), StartError> {
    let boot_id = checkpoint::read_boot_id(&recovery.boot_id_path)?;
    let now = AgentInfo {
        boot_id: boot_id.clone(),
        resources: opts.resources.clone(),
        attributes: opts.attributes.clone(),
    };
    let previous = checkpoints.load_agent_info()?;
    let runs = checkpoints.load_runs()?;
    let reboot = previous
        .as_ref()
        .filter(|p| p.boot_id != boot_id)
        .map(|p| {
            format!(
                "the host rebooted while the agent was down (boot id {} → {boot_id}); the task's processes are gone",
                p.boot_id
            )
        });
    if let (Some(previous), None, false) = (&previous, &reboot, runs.is_empty()) {
        let changes = checkpoint::changes(previous, &now, recovery.compare_disk);
        if !changes.is_empty() {
            let pids: Vec<String> = runs
                .iter()
                .filter(|r| r.pid > 1 && containerizer::is_same_process(r.pid, r.start_time))
                .map(|r| r.pid.to_string())
                .collect();
            return Err(StartError::ResourcesChanged {
                path: checkpoints.agent_info_file(),
                runs_dir: checkpoints.runs_dir(),
                runs: runs.len(),
                pids: if pids.is_empty() {
                    "none alive".to_string()
                } else {
                    pids.join(", ")
                },
                changes,
            });
        }
    }
    if previous.as_ref() != Some(&now) {
        checkpoints.save_agent_info(&now)?;
    }
    Ok((runs, reboot))
}
