//! Test harness shared by Bramble's cross-crate tests: a throwaway cluster identity, a master
//! and agents started in-process on loopback with short timeouts, and deadline-based waiting.
//!
//! Nothing here sleeps to let something happen: [`eventually`] polls a condition until a
//! deadline and fails with a description of what never came true.

pub mod busybox;
pub mod file_server;
pub mod framework;
pub mod ha;
pub mod netns;
pub mod processes;
pub mod services;
pub mod standby;
pub mod users;

use bramble_agent::master_link::MasterLocator;
use bramble_agent::{AgentHandle, AgentOptions};
use bramble_master::config::MasterConfig;
use bramble_master::server::MasterHandle;
use bramble_proto::handshake::exchange_hello;
use bramble_proto::identity::{init_cluster, Credentials, Role};
use bramble_proto::messages::HelloReply;
use bramble_proto::transport::{client_endpoint, connect, unspecified_for, ControlStream};
use bramble_proto::Resources;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A cluster identity in a temporary directory, removed on drop unless `BRAMBLE_TEST_KEEP` is
/// set (then its path, with every process's log, is printed for a post-mortem).
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub cluster_id: String,
}

impl TestCluster {
    pub fn new() -> Self {
        let keep = std::env::var_os("BRAMBLE_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        if keep {
            eprintln!("BRAMBLE_TEST_KEEP: logs stay in {}", dir.path().display());
        }
        let cluster_id = init_cluster(&dir.path().join("cluster"), "test").expect("init cluster");
        Self { dir, cluster_id }
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    pub fn credentials(&self, role: Role) -> Credentials {
        Credentials::load(&self.cluster_dir(), role).expect("credentials")
    }

    /// A directory under the cluster's temp dir (short, so Unix socket paths fit).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestCluster {
    fn default() -> Self {
        Self::new()
    }
}

/// Master settings with timeouts short enough for tests.
pub fn fast_master_config(cluster: &TestCluster) -> MasterConfig {
    MasterConfig {
        cluster: cluster.cluster_dir(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: cluster.path("master"),
        heartbeat_interval_ms: 200,
        agent_timeout_secs: 2.0,
        offer_timeout_secs: 30.0,
        allocation_interval_ms: 200,
        ..MasterConfig::default()
    }
}

pub async fn start_master(cluster: &TestCluster, cfg: &MasterConfig) -> MasterHandle {
    bramble_master::server::start(&cluster.credentials(Role::Node), cfg)
        .await
        .expect("start master")
}

/// Agent settings for tests: given resources, cgroups only when asked.
pub fn agent_options(
    cluster: &TestCluster,
    name: &str,
    master: SocketAddr,
    resources: Resources,
) -> AgentOptions {
    AgentOptions {
        work_dir: cluster.path(name),
        master: MasterLocator::Static(master.to_string()),
        resources,
        attributes: [("name".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        hostname: name.to_string(),
        heartbeat_interval: Duration::from_millis(200),
        executor_registration_timeout: Duration::from_secs(10),
        kill_grace: Duration::from_millis(500),
        executor_idle_timeout: Duration::from_secs(2),
        cgroups: false,
        pids_max: bramble_agent::containerizer::DEFAULT_PIDS_MAX,
        // A test reads its tasks' sandboxes after they end: they must not depend on how full
        // the machine's disk happens to be (the default policy removes finished sandboxes at
        // once above 90% use). The gc's own tests set their policy.
        gc: bramble_agent::gc::GcPolicy {
            disk_headroom: 0.0,
            high_watermark: 1.0,
            ..Default::default()
        },
        task_user: None,
        // Several test agents share this host: each takes a free port.
        mesos_listen: Some(([127, 0, 0, 1], 0).into()),
        containers: None,
        fetch: None,
    }
}

pub async fn start_agent(cluster: &TestCluster, opts: AgentOptions) -> AgentHandle {
    bramble_agent::start(&cluster.credentials(Role::Node), opts)
        .await
        .expect("start agent")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline` saying
/// what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the master lists `n` connected agents.
pub async fn wait_for_agents(master: &MasterHandle, n: usize) {
    eventually(
        &format!("{n} connected agents"),
        Duration::from_secs(10),
        || async {
            let state = master.state().await.ok()?;
            (state.agents.iter().filter(|a| a.connected).count() == n).then_some(())
        },
    )
    .await
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// True when running as root (cgroups, namespaces).
pub fn is_root() -> bool {
    // SAFETY-free: reading our own effective uid from /proc avoids a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Dials the master with `creds` and says hello as `kind`; returns the connection, its
/// control stream and the master's answer, refusals included (for tests of admission).
pub async fn raw_hello(
    creds: &Credentials,
    master: SocketAddr,
    kind: bramble_proto::messages::PeerKind,
) -> anyhow::Result<(quinn::Connection, ControlStream, HelloReply)> {
    let endpoint = client_endpoint(creds, unspecified_for(master))?;
    let conn = connect(&endpoint, master).await?;
    let mut ctl = ControlStream::open(&conn).await?;
    let reply = exchange_hello(&mut ctl, kind).await?;
    Ok((conn, ctl, reply))
}

/// The master's state as an operator sees it, over a fresh operator connection.
pub async fn operator_state(
    cluster: &TestCluster,
    master: SocketAddr,
) -> anyhow::Result<bramble_proto::messages::ClusterState> {
    let mut op = bramble_client::OperatorClient::connect(&cluster.cluster_dir(), master).await?;
    let state = op.state().await;
    op.close();
    Ok(state?)
}

/// A master and named agents in this process on loopback, every agent registered: the
/// starting point of most cluster tests.
pub struct InProcessCluster {
    pub cluster: TestCluster,
    pub master: MasterHandle,
    pub agents: Vec<AgentHandle>,
}

impl InProcessCluster {
    /// Starts a master (fast test timeouts, then `tweak`) and one agent per name, each offering
    /// `resources`, with cgroups when asked.
    pub async fn start(
        tweak: impl FnOnce(&mut MasterConfig),
        names: &[&str],
        resources: Resources,
        cgroups: bool,
    ) -> Self {
        init_logs();
        let cluster = TestCluster::new();
        let mut cfg = fast_master_config(&cluster);
        tweak(&mut cfg);
        let master = start_master(&cluster, &cfg).await;
        let mut agents = Vec::new();
        for name in names {
            let mut opts = agent_options(&cluster, name, master.addr, resources.clone());
            opts.cgroups = cgroups;
            agents.push(start_agent(&cluster, opts).await);
        }
        wait_for_agents(&master, names.len()).await;
        Self {
            cluster,
            master,
            agents,
        }
    }

    pub async fn framework(&self, name: &str) -> framework::TestFramework {
        framework::TestFramework::start(
            self.master.addr,
            self.cluster.credentials(Role::Framework),
            name,
        )
        .await
    }

    /// Stops the agents (killing their containers), then the master.
    pub async fn shutdown(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.master.shutdown().await;
    }
}
