//! `bramble-agent`: runs on every node. It offers the node's resources to the master, runs the
//! executors and tasks the master sends, and reports every task's state reliably.
//!
//! Where to start reading: `lib.rs` (wiring), `agent.rs` (the state machine), then
//! `master_link.rs`, `executor_socket.rs` and `containerizer/` (the edges).

pub mod agent;
pub mod config;
pub mod containerizer;
pub mod executor_socket;
pub mod gc;
pub mod master_link;
pub mod resources;
pub mod sandbox;
pub mod status_updates;

use agent::{Agent, AgentSettings, AgentView, Input};
use bramble_proto::identity::Credentials;
use bramble_proto::transport::client_endpoint;
use bramble_proto::AgentId;
use containerizer::Containerizer;
use master_link::MasterLocator;
use status_updates::StatusUpdateManager;
use std::io::Write;
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
    /// Run tasks as this user when the agent is root (None: as the agent's own user).
    pub task_user: Option<containerizer::TaskUser>,
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
    Updates(#[from] status_updates::StatusUpdateError),
    #[error("{0}")]
    Socket(#[from] executor_socket::SocketError),
    #[error("{0}")]
    Transport(#[from] bramble_proto::transport::TransportError),
    #[error("{0}")]
    TaskUser(String),
}

/// A running agent.
pub struct AgentHandle {
    inputs: mpsc::Sender<Input>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state_task: JoinHandle<()>,
}

impl AgentHandle {
    /// What runs here right now.
    pub async fn view(&self) -> Option<AgentView> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Inspect(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the agent, killing its containers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.state_task.await;
    }
}

const AGENT_ID_FILE: &str = "agent_id";

fn meta_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("meta")
}

/// The id this agent registered under before, if any.
pub fn load_agent_id(work_dir: &Path) -> Option<AgentId> {
    std::fs::read_to_string(meta_dir(work_dir).join(AGENT_ID_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(AgentId)
}

/// Writes the agent id durably (temp file, fsync, rename).
pub fn persist_agent_id(work_dir: &Path, id: &AgentId) -> std::io::Result<()> {
    let dir = meta_dir(work_dir);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".agent_id.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(id.as_str().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(AGENT_ID_FILE))?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Starts an agent: opens its checkpoints, binds the executor socket and starts the master link.
pub async fn start(creds: &Credentials, opts: AgentOptions) -> Result<AgentHandle, StartError> {
    std::fs::create_dir_all(&opts.work_dir).map_err(|source| StartError::WorkDir {
        path: opts.work_dir.clone(),
        source,
    })?;
    let updates = StatusUpdateManager::open(&meta_dir(&opts.work_dir).join("updates"))?;
    let socket_path = opts.work_dir.join("agent.sock");
    let listener = executor_socket::bind(&socket_path)?;
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
    let containerizer = containerizer
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
        kill_grace: opts.kill_grace,
        executor_idle_timeout: opts.executor_idle_timeout,
        gc: opts.gc,
    };
    let (inputs, input_rx) = mpsc::channel(4096);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let agent = Agent::new(settings, containerizer, updates, agent_id, inputs.clone());
    let state_task = tokio::spawn(run_state(agent, input_rx, shutdown_rx.clone()));
    let link = tokio::spawn(master_link::run(
        endpoint.clone(),
        opts.master.clone(),
        inputs.clone(),
        opts.heartbeat_interval,
        shutdown_rx.clone(),
    ));
    let socket = tokio::spawn(executor_socket::serve(
        listener,
        inputs.clone(),
        shutdown_rx,
    ));
    Ok(AgentHandle {
        inputs,
        shutdown,
        tasks: vec![link, socket],
        state_task,
    })
}

/// Inputs handled before a group commit at most.
const MAX_BURST: usize = 512;

async fn run_state(
    mut agent: Agent,
    mut inputs: mpsc::Receiver<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    agent.schedule_leftover_sandboxes().await;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            input = inputs.recv() => match input {
                Some(input) => {
                    agent.handle(input).await;
                    // Take whatever else is already queued, then commit the burst's updates
                    // together: one flush for many updates.
                    for _ in 0..MAX_BURST {
                        match inputs.try_recv() {
                            Ok(more) => agent.handle(more).await,
                            Err(_) => break,
                        }
                    }
                    agent.commit();
                }
                None => break,
            },
            _ = tick.tick() => {
                agent.tick(Instant::now());
                agent.commit();
            }
        }
    }
    agent.kill_everything().await;
    info!("agent stopped");
}
