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

/// A cluster on loopback that lives in a temp dir and vanishes with it: a master (or a
/// replicated group of masters) and agents in this process, their executors real processes.
pub struct Throwaway {
    dir: tempfile::TempDir,
    masters: Masters,
    /// Every master's QUIC address, the serving one first.
    addrs: Vec<SocketAddr>,
    agents: Vec<bramble_agent::AgentHandle>,
}

/// The throwaway cluster's master side.
enum Masters {
    One(Box<bramble_master::server::MasterHandle>),
    /// A replicated group (`[ha]` on loopback): one serves, the others stand by.
    Group(Vec<bramble_master::ha::HaMaster>),
}

/// How long the throwaway cluster may take to come up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// The demo's master settings: loopback, test-sized heartbeats and allocation.
fn master_config(cluster: &std::path::Path, state_dir: std::path::PathBuf) -> MasterConfig {
    MasterConfig {
        cluster: cluster.to_path_buf(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir,
        name: "demo".into(),
        heartbeat_interval_ms: 500,
        agent_timeout_secs: 5.0,
        allocation_interval_ms: 250,
        ..MasterConfig::default()
    }
}

/// `n` distinct loopback ports free right now (UDP, or TCP with `tcp`), each held until all
/// are picked so none comes twice.
fn free_ports(n: usize, tcp: bool) -> anyhow::Result<Vec<u16>> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    if tcp {
        let held = (0..n)
            .map(|_| std::net::TcpListener::bind(any))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(held
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?)
    } else {
        let held = (0..n)
            .map(|_| std::net::UdpSocket::bind(any))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(held
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?)
    }
}

/// Starts `n` replicated masters on loopback (`[ha]`, a new group bootstrapped from all of
/// them) and waits until one serves; returns them and their QUIC addresses, the serving one
/// first.
async fn start_group(
    dir: &std::path::Path,
    cluster: &std::path::Path,
    n: usize,
) -> anyhow::Result<(Vec<bramble_master::ha::HaMaster>, Vec<SocketAddr>)> {
    let udp = free_ports(2 * n, false)?;
    let http = free_ports(n, true)?;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let peers: Vec<String> = (0..n)
        .map(|i| format!("{}={}", i + 1, at(udp[n + i])))
        .collect();
    let node = std::sync::Arc::new(Credentials::load(cluster, Role::Node)?);
    let mut group = Vec::new();
    for i in 0..n {
        let mut cfg = master_config(cluster, dir.join(format!("master-{}", i + 1)));
        cfg.listen = at(udp[i]);
        cfg.http = at(http[i]);
        let ha = bramble_master::config::HaConfig {
            id: i as u64 + 1,
            peers: peers.clone(),
            bootstrap: true,
            ..Default::default()
        };
        let master = bramble_master::ha::start(std::sync::Arc::clone(&node), &cfg, &ha)
            .await
            .with_context(|| format!("starting demo master {}", i + 1))?;
        group.push(master);
    }
    let deadline = Instant::now() + STARTUP_DEADLINE;
    let leader = loop {
        if let Some(i) = group.iter().position(|m| m.status().borrow().serving) {
            break i;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no demo master was elected and serving within {STARTUP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut addrs: Vec<SocketAddr> = (0..n).map(|i| at(udp[i])).collect();
    addrs.swap(0, leader);
    Ok((group, addrs))
}

impl Throwaway {
    /// Starts a master and `agents` agents offering `cpus` and `mem_mib` each, and waits until
    /// every agent is registered.
    pub async fn start(agents: usize, cpus: f64, mem_mib: u64) -> anyhow::Result<Throwaway> {
        Self::start_with_masters(1, agents, cpus, mem_mib).await
    }

    /// Like [`Throwaway::start`] with `masters` masters: 1 is the single master; more is a
    /// replicated group on loopback (`[ha]`, every store write acknowledged by a majority),
    /// with agents and frameworks given every master.
    pub async fn start_with_masters(
        masters: usize,
        agents: usize,
        cpus: f64,
        mem_mib: u64,
    ) -> anyhow::Result<Throwaway> {
        anyhow::ensure!(masters >= 1, "at least one master");
        let dir = tempfile::Builder::new()
            .prefix("bramble-demo-")
            .tempdir()
            .context("creating the demo's temp dir")?;
        let cluster = dir.path().join("cluster");
        init_cluster(&cluster, "demo")?;
        let node = Credentials::load(&cluster, Role::Node)?;
        let (masters, addrs) = if masters == 1 {
            let master_cfg = master_config(&cluster, dir.path().join("master"));
            let master = bramble_master::server::start(&node, &master_cfg)
                .await
                .context("starting the demo master")?;
            let addr = master.addr;
            (Masters::One(Box::new(master)), vec![addr])
        } else {
            let (group, addrs) = start_group(dir.path(), &cluster, masters).await?;
            (Masters::Group(group), addrs)
        };
        let locator = match addrs.as_slice() {
            [one] => MasterLocator::Static(one.to_string()),
            several => MasterLocator::Several(several.iter().map(ToString::to_string).collect()),
        };
        let mut handles = Vec::new();
        for i in 1..=agents {
            let name = format!("demo-agent-{i}");
            let agent_opts = AgentOptions {
                work_dir: dir.path().join(&name),
                master: locator.clone(),
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
        let deadline = Instant::now() + STARTUP_DEADLINE;
        // Poll the agents (cheap, in-process) until every one says it is registered.
        loop {
            let mut registered = 0;
            for a in &handles {
                if a.view().await.is_some_and(|v| v.connected) {
                    registered += 1;
                }
            }
            if registered == agents {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "demo agents did not register within {STARTUP_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Throwaway {
            dir,
            masters,
            addrs,
            agents: handles,
        })
    }

    pub fn scheduler_config(&self, name: &str) -> anyhow::Result<SchedulerConfig> {
        Ok(SchedulerConfig::new(
            self.addrs[0],
            Credentials::load(&self.dir.path().join("cluster"), Role::Framework)?,
            framework_info(name),
        )
        .with_masters(&self.addrs))
    }

    /// Stops everything: agents kill their executors, then the master(s) stop; the temp dir
    /// goes.
    pub async fn stop(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        match self.masters {
            Masters::One(master) => master.shutdown().await,
            Masters::Group(group) => {
                for m in group {
                    m.shutdown().await;
                }
            }
        }
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
