//! `bramble-agent`: parses flags and config, detects the node's resources, loads its node
//! certificate and runs the agent until SIGINT/SIGTERM. All logic lives in the library.
//!
//! With no `master` configured the agent finds one by mDNS: a master advertising this node's
//! cluster id (the fingerprint of the CA in its cluster directory).
//!
//! On SIGTERM/SIGINT the agent leaves its tasks running for the next agent process to
//! re-adopt, unless `[recovery] kill_tasks_on_shutdown = true`. A start that the checkpoints
//! refuse (resources changed under running tasks) exits non-zero with what changed.

use anyhow::{bail, Context};
use bramble_agent::config::{self, AgentConfig, DEFAULT_CONFIG_PATH};
use bramble_agent::master_link::MasterLocator;
use bramble_agent::{paths, resources, AgentOptions, ContainersOptions, RecoveryOptions};
use bramble_proto::identity::Role;
use bramble_proto::startup;
use clap::Parser;
use std::path::{Path, PathBuf};

/// Bramble agent: runs the cluster's tasks on this node
#[derive(Debug, Parser)]
#[command(name = "bramble-agent", version)]
struct Args {
    /// Cluster directory (CA certificate, node certificate and key).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The master's host:port (skips mDNS discovery); several, comma-separated, for the
    /// masters of a replicated group (replaces `master`/`masters` of the config file).
    #[arg(long)]
    master: Option<String>,
    /// Where sandboxes and checkpoints live.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// CPUs to offer instead of the detected count.
    #[arg(long, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_number)]
    cpus: Option<f64>,
    /// Memory to offer, in MiB, instead of the detected amount.
    #[arg(long, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_mib)]
    mem: Option<u64>,
    /// Disk to offer, in MiB, instead of the detected amount.
    #[arg(long, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_mib)]
    disk: Option<u64>,
    /// Ports to offer, e.g. "31000-32000,8080".
    #[arg(long)]
    ports: Option<String>,
    /// Config file (default /etc/bramble/agent.toml, used if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run tasks without cgroup limits even where cgroups are usable.
    #[arg(long)]
    no_cgroups: bool,
}

fn main() -> anyhow::Result<()> {
    bramble_proto::startup::plain_error_reports();
    // Before any thread starts: see `bramble_proto::memory` for why and what it saved.
    bramble_proto::memory::one_malloc_arena();
    let args = Args::parse();
    let (path, explicit) = startup::config_file(args.config.as_deref(), DEFAULT_CONFIG_PATH);
    let mut cfg = config::load_optional(&path, explicit)?;
    apply_flags(&mut cfg, &args);
    if let Err((key, message)) = cfg.validate() {
        match flag_for(key, &args) {
            Some(flag) => bail!("{flag}: {message}"),
            None => bail!("{}: key \"{key}\": {message}", path.display()),
        }
    }
    bramble_proto::logging::init(cfg.log.as_deref());
    let creds = startup::credentials(&cfg.cluster, Role::Node)?;
    let opts = options(&cfg, &path, &creds.cluster_id, !args.no_cgroups)?;
    if opts.task_user.is_none() && nix::unistd::geteuid().is_root() {
        // Legal (a single-user test box), but on a shared shelf it hands every framework root.
        tracing::warn!(
            config = %path.display(),
            "running as root with neither task_uids nor task_user set: every task runs as \
             root; set task_uids = \"70000-70999\" to run each framework as its own uid"
        );
    }
    let recovery = RecoveryOptions {
        compare_disk: cfg.disk.is_some(),
        executor_reconnect_timeout: cfg.recovery.executor_reconnect_timeout(),
        ..RecoveryOptions::default()
    };
    let kill_tasks = cfg.recovery.kill_tasks_on_shutdown;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let agent = bramble_agent::start_with(&creds, opts, recovery).await?;
        bramble_proto::logging::wait_for_shutdown_signal().await;
        if kill_tasks {
            tracing::info!(
                "shutting down and killing every task ([recovery] kill_tasks_on_shutdown)"
            );
            agent.shutdown().await;
        } else {
            tracing::info!("shutting down; tasks keep running for the next agent process");
            agent.shutdown_leaving_tasks().await;
        }
        Ok(())
    })
}

/// The flag that set config key `key`, as given, when one did: a bad value is blamed on the
/// flag, not on a config file that may not even exist.
fn flag_for(key: &str, args: &Args) -> Option<String> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let (flag, value) = match key {
        "cluster" => ("cluster", path(&args.cluster)),
        "master" => ("master", args.master.clone()),
        "work_dir" => ("work-dir", path(&args.work_dir)),
        "ports" => ("ports", args.ports.clone()),
        "cpus" => ("cpus", args.cpus.map(|c| c.to_string())),
        "mem" => ("mem", args.mem.map(|m| m.to_string())),
        "disk" => ("disk", args.disk.map(|d| d.to_string())),
        _ => return None,
    };
    value.map(|v| format!("--{flag} {v:?}"))
}

/// A flag wins over the file.
fn apply_flags(cfg: &mut AgentConfig, args: &Args) {
    if let Some(v) = &args.cluster {
        cfg.cluster = v.clone();
    }
    if let Some(v) = &args.master {
        cfg.master = Some(v.clone());
        cfg.masters.clear();
    }
    if let Some(v) = &args.work_dir {
        cfg.work_dir = v.clone();
    }
    if let Some(v) = args.cpus {
        cfg.cpus = Some(v);
    }
    if let Some(v) = args.mem {
        cfg.mem = Some(v);
    }
    if let Some(v) = args.disk {
        cfg.disk = Some(v);
    }
    if let Some(v) = &args.ports {
        cfg.ports = Some(v.clone());
    }
}

fn options(
    cfg: &AgentConfig,
    path: &Path,
    cluster_id: &str,
    cgroups: bool,
) -> anyhow::Result<AgentOptions> {
    let overrides = cfg
        .resource_overrides()
        .map_err(|e| anyhow::anyhow!("{}: key \"ports\": {e}", path.display()))?;
    let resources = resources::detect(&cfg.work_dir, &overrides).context("detecting resources")?;
    let mut attributes = resources::attributes(Path::new("/"));
    attributes.extend(cfg.attributes.clone());
    let mut masters = cfg.master_list();
    let master = match masters.len() {
        0 => MasterLocator::Discover {
            cluster_id: cluster_id.to_string(),
            interfaces: cfg.discovery.interfaces.clone(),
        },
        1 => MasterLocator::Static(masters.remove(0)),
        _ => MasterLocator::Several(masters),
    };
    Ok(AgentOptions {
        work_dir: cfg.work_dir.clone(),
        master,
        resources,
        attributes,
        hostname: resources::hostname(),
        heartbeat_interval: cfg.heartbeat_interval(),
        executor_registration_timeout: cfg.executor_registration_timeout(),
        kill_grace: cfg.kill_grace(),
        executor_idle_timeout: cfg.executor_idle_timeout(),
        cgroups,
        pids_max: cfg.container_pids_max,
        gc: cfg.gc_policy(),
        task_user: cfg
            .task_users()
            .map_err(|(key, e)| anyhow::anyhow!("{}: key \"{key}\": {e}", path.display()))?,
        mesos_listen: cfg
            .mesos
            .listen_addr()
            .map_err(|e| anyhow::anyhow!("{}: key \"mesos.listen\": {e}", path.display()))?,
        containers: cfg
            .containers
            .runtime
            .as_ref()
            .map(|runtime| ContainersOptions {
                runtime: runtime.clone(),
                images: cfg
                    .containers
                    .images
                    .clone()
                    .unwrap_or_else(|| paths::WorkDir::new(&cfg.work_dir).images_dir()),
                preload: cfg.containers.preload.clone(),
                images_budget: cfg.containers.images_budget_mb.map(|mb| mb << 20),
            }),
        fetch: Some(cfg.fetch.options(&cfg.work_dir)),
    })
}
