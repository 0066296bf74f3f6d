//! `bramble demo`: a throwaway cluster on loopback — a fresh cluster identity in a temp dir,
//! a master and N agents in this process talking real QUIC with mutual TLS, and real executor
//! processes — runs the pi job on it and tears everything down again.

use anyhow::Context;
use bramble_agent::master_link::MasterLocator;
use bramble_agent::AgentOptions;
use bramble_frameworks::pi::scheduler::{initial_progress, run_pi, PiJob, PiResult};
use bramble_master::config::MasterConfig;
use bramble_proto::identity::{init_cluster, Credentials, Role};
use bramble_proto::task::CommandInfo;
use bramble_proto::Resources;
use bramble_sdk::{framework_info, SchedulerConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub agents: usize,
    pub terms: u64,
    pub tasks: u64,
    /// How agents start the pi executor (this very binary, normally).
    pub executor: CommandInfo,
    pub quiet: bool,
    /// CPUs each agent offers; `None` shares the machine's cores out among the agents.
    pub cpus_per_agent: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    pub pi: f64,
    pub abs_error: f64,
    pub correct_digits: u32,
    pub terms: u64,
    pub tasks: u64,
    pub agents: usize,
    pub cpus_per_agent: f64,
    /// From start until every agent was registered with the master.
    pub startup_s: f64,
    /// From submitting the job to the final estimate.
    pub wall_s: f64,
    pub terms_per_s: f64,
    pub relaunches: u64,
}

/// CPUs each demo agent offers: the machine's cores shared out, at least one each.
fn cpus_per_agent(agents: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / agents.max(1)).max(1) as f64
}

/// A cluster on loopback that lives in a temp dir and vanishes with it: a master and agents in
/// this process, their executors real processes.
pub struct Throwaway {
    dir: tempfile::TempDir,
    pub master: bramble_master::server::MasterHandle,
    agents: Vec<bramble_agent::AgentHandle>,
}

impl Throwaway {
    /// Starts a master and `agents` agents offering `cpus` and `mem_mib` each, and waits until
    /// every agent is registered.
    pub async fn start(agents: usize, cpus: f64, mem_mib: u64) -> anyhow::Result<Throwaway> {
        let dir = tempfile::Builder::new()
            .prefix("bramble-demo-")
            .tempdir()
            .context("creating the demo's temp dir")?;
        let cluster = dir.path().join("cluster");
        init_cluster(&cluster, "demo")?;
        let master_cfg = MasterConfig {
            cluster: cluster.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.path().join("master"),
            name: "demo".into(),
            heartbeat_interval_ms: 500,
            agent_timeout_secs: 5.0,
            allocation_interval_ms: 250,
            ..MasterConfig::default()
        };
        let node = Credentials::load(&cluster, Role::Node)?;
        let master = bramble_master::server::start(&node, &master_cfg)
            .await
            .context("starting the demo master")?;
        let mut handles = Vec::new();
        for i in 1..=agents {
            let name = format!("demo-agent-{i}");
            let agent_opts = AgentOptions {
                work_dir: dir.path().join(&name),
                master: MasterLocator::Static(master.addr.to_string()),
                resources: Resources::new(cpus, mem_mib),
                attributes: [("arch".to_string(), std::env::consts::ARCH.to_string())].into(),
                hostname: name,
                heartbeat_interval: Duration::from_millis(500),
                executor_registration_timeout: Duration::from_secs(30),
                kill_grace: Duration::from_secs(2),
                executor_idle_timeout: Duration::from_secs(30),
                cgroups: true,
                pids_max: bramble_agent::containerizer::DEFAULT_PIDS_MAX,
                gc: Default::default(),
                task_user: None,
                // Several demo agents share this host: each takes a free port.
                mesos_listen: Some(([127, 0, 0, 1], 0).into()),
                containers: None,
                fetch: None,
            };
            handles.push(bramble_agent::start(&node, agent_opts).await?);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // Poll the master (cheap, in-process) until every agent is in, with a deadline.
        loop {
            let state = master.state().await?;
            if state.agents.iter().filter(|a| a.connected).count() == agents {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "demo agents did not register within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Throwaway {
            dir,
            master,
            agents: handles,
        })
    }

    pub fn scheduler_config(&self, name: &str) -> anyhow::Result<SchedulerConfig> {
        Ok(SchedulerConfig::new(
            self.master.addr,
            Credentials::load(&self.dir.path().join("cluster"), Role::Framework)?,
            framework_info(name),
        ))
    }

    /// Stops everything: agents kill their executors, then the master stops; the temp dir goes.
    pub async fn stop(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.master.shutdown().await;
        drop(self.dir);
    }
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let cpus = opts
        .cpus_per_agent
        .unwrap_or_else(|| cpus_per_agent(opts.agents));
    let cluster = Throwaway::start(opts.agents, cpus, 512).await?;
    let startup_s = started.elapsed().as_secs_f64();

    let job = PiJob::new(opts.terms, opts.tasks, opts.executor.clone());
    let (progress_tx, progress_rx) = watch::channel(initial_progress(&job));
    let bar = tokio::spawn(crate::progress::follow(progress_rx, opts.quiet));
    let config = cluster.scheduler_config(&job.name())?;
    let result: anyhow::Result<PiResult> =
        run_pi(config, job, progress_tx).await.map_err(Into::into);
    let _ = bar.await;
    // Tear down whatever happened.
    cluster.stop().await;
    let r = result?;
    Ok(DemoReport {
        pi: r.pi,
        abs_error: r.abs_error,
        correct_digits: r.correct_digits,
        terms: r.terms,
        tasks: r.tasks,
        agents: opts.agents,
        cpus_per_agent: cpus,
        startup_s,
        wall_s: r.wall_s,
        terms_per_s: r.terms_per_s,
        relaunches: r.relaunches,
    })
}
