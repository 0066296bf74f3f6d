//! `bramble service …`: services that stay up. The specs live in the service framework's
//! key/value state in the master (`spec/<name>`), so `apply`, `scale`, `restart` and `rm` work
//! through the operator API whether or not the scheduler is up; what runs is read from the
//! master's tasks. `bramble service scheduler` runs the scheduler itself (the
//! `bramble-services` unit on the master node).
//!
//! Every change is a compare-and-swap on the spec's version, so two operators editing one
//! service at once cannot silently undo each other: the second is told to try again.

use super::{print_json, Target};
use anyhow::{bail, Context};
use bramble_client::OperatorClient;
use bramble_frameworks::services::status::{
    history_key, status_key, History, RolloutState, ServiceStatus,
};
use bramble_frameworks::services::{self, spec_key, Spec, FRAMEWORK_NAME, SPEC_PREFIX};
use bramble_proto::framework_state::{StateEntry, StateWrite};
use bramble_proto::messages::{ClusterState, TaskSummary};
use bramble_proto::{FrameworkId, TaskState};
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Store a service's spec (TOML) and have it kept up; applying the same file again
    /// changes nothing.
    Apply {
        /// The spec file (TOML).
        file: PathBuf,
    },
    /// The services, with how many instances run of how many wanted.
    Ls {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One service: its spec and its instances.
    Show {
        /// The service's name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a service: its instances are killed and its spec removed.
    Rm {
        /// The service's name.
        name: String,
    },
    /// Change how many instances a service keeps up.
    Scale {
        /// The service's name.
        name: String,
        /// How many instances to keep up.
        instances: u32,
    },
    /// Replace every instance of a service with a fresh one.
    Restart {
        /// The service's name.
        name: String,
    },
    /// Go back to the service's previous version (the newest of its history), replaced as
    /// in any rolling update; the instance count stays as it is.
    Rollback {
        /// The service's name.
        name: String,
    },
    /// The host:port of each healthy instance (its first port; all with --all-ports).
    Endpoints {
        /// The service's name.
        name: String,
        /// Every port of each instance, not only its first.
        #[arg(long)]
        all_ports: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The last lines of each live instance's stdout and stderr.
    Logs {
        /// The service's name.
        name: String,
        /// Lines of each file.
        #[arg(long, default_value_t = 20)]
        lines: usize,
    },
    /// Run the service scheduler (normally the bramble-services unit on the master node).
    Scheduler {
        /// Where the scheduler keeps its framework id, so a restart fails over under it
        /// (default: $XDG_STATE_HOME/bramble/services, else ~/.local/state/bramble/services).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Connect with the cluster directory's node certificate (node.pem) instead of the
        /// framework certificate: how the unit on the master node runs, since cards carry no
        /// framework key. The master accepts it only over loopback, for this scheduler alone.
        #[arg(long)]
        node_certificate: bool,
    },
}

pub async fn run(target: &Target<'_>, command: ServiceCommand) -> anyhow::Result<()> {
    if let ServiceCommand::Scheduler {
        state_dir,
        node_certificate,
    } = command
    {
        return scheduler(target, state_dir, node_certificate).await;
    }
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let state = op.state().await?;
    let fw = services_framework(&state)?;
    let result = match command {
        ServiceCommand::Apply { file } => apply(&mut op, &fw, file).await,
        ServiceCommand::Ls { json } => ls(&mut op, &fw, &state, json).await,
        ServiceCommand::Show { name, json } => show(&mut op, &fw, &state, &name, json).await,
        ServiceCommand::Rm { name } => rm(&mut op, &fw, &name).await,
        ServiceCommand::Scale { name, instances } => {
            edit(&mut op, &fw, &name, |spec| spec.instances = instances).await
        }
        ServiceCommand::Restart { name } => {
            edit(&mut op, &fw, &name, |spec| spec.restart_generation += 1).await
        }
        ServiceCommand::Rollback { name } => rollback(&mut op, &fw, &name).await,
        ServiceCommand::Endpoints {
            name,
            all_ports,
            json,
        } => endpoints(&mut op, &fw, &name, all_ports, json).await,
        ServiceCommand::Logs { name, lines } => logs(&mut op, &fw, &state, &name, lines).await,
        ServiceCommand::Scheduler { .. } => Ok(()),
    };
    op.close();
    result
}

/// The service framework's id: the connected one, else the only one the master knows.
fn services_framework(state: &ClusterState) -> anyhow::Result<FrameworkId> {
    let ours: Vec<_> = state
        .frameworks
        .iter()
        .filter(|f| f.name == FRAMEWORK_NAME)
        .collect();
    if let Some(f) = ours.iter().find(|f| f.connected) {
        return Ok(f.id.clone());
    }
    match ours.as_slice() {
        [] => bail!(
            "no service scheduler has registered with this master: start it on the master node \
             (`systemctl start bramble-services`, or `bramble service scheduler`)"
        ),
        [one] => Ok(one.id.clone()),
        several => bail!(
            "several service frameworks are known and none is connected ({}); start the \
             service scheduler so the current one is connected",
            several
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn stored(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    name: &str,
) -> anyhow::Result<Option<(Spec, StateEntry)>> {
    let key = spec_key(name);
    let entries = op.read_framework_state(fw, &key).await?;
    let Some(entry) = entries.into_iter().find(|e| e.key == key) else {
        return Ok(None);
    };
    let spec = Spec::parse(&key, &String::from_utf8_lossy(&entry.value))?;
    Ok(Some((spec, entry)))
}

async fn write_spec(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    spec: &Spec,
    expected_version: u64,
) -> anyhow::Result<u64> {
    let write = StateWrite::Put {
        key: spec_key(&spec.name),
        value: spec.to_toml().into_bytes(),
        expected_version: Some(expected_version),
    };
    let entry = op
        .write_framework_state(fw, write)
        .await
        .with_context(|| format!("storing the spec of {}", spec.name))?;
    Ok(entry.map(|e| e.version).unwrap_or(0))
}

async fn apply(op: &mut OperatorClient, fw: &FrameworkId, file: PathBuf) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let spec = Spec::parse(&file.display().to_string(), &text)?;
    match stored(op, fw, &spec.name).await? {
        Some((old, _)) if old == spec => {
            println!("{}: unchanged", spec.name);
        }
        Some((old, entry)) => {
            let version = write_spec(op, fw, &spec, entry.version).await?;
            let what = if old.fingerprint() == spec.fingerprint() {
                "scaled"
            } else {
                "updated; its instances are replaced"
            };
            println!("{}: {what} (version {version})", spec.name);
        }
        None => {
            let version = write_spec(op, fw, &spec, 0).await?;
            println!(
                "{}: created (version {version}), {} instance(s)",
                spec.name, spec.instances
            );
        }
    }
    Ok(())
}

/// Reads, changes and writes back a stored spec (compare-and-swap on its version).
async fn edit(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    name: &str,
    change: impl FnOnce(&mut Spec),
) -> anyhow::Result<()> {
    let Some((mut spec, entry)) = stored(op, fw, name).await? else {
        bail!("no service {name} (see `bramble service ls`)");
    };
    change(&mut spec);
    // The change must still be a valid spec (e.g. a count within the limit).
    let spec = Spec::parse(&format!("{name} (edited)"), &spec.to_toml())?;
    let version = write_spec(op, fw, &spec, entry.version).await?;
    println!("{name}: version {version}, {} instance(s)", spec.instances);
    Ok(())
}

/// Stores the newest version of the service's history that is not its current one as its
/// spec (compare-and-swap), keeping the instance count; the scheduler rolls it out and keeps
/// the version replaced in the history, so a second rollback undoes the first.
async fn rollback(op: &mut OperatorClient, fw: &FrameworkId, name: &str) -> anyhow::Result<()> {
    let Some((current, entry)) = stored(op, fw, name).await? else {
        bail!("no service {name} (see `bramble service ls`)");
    };
    let key = history_key(name);
    let history = op
        .read_framework_state(fw, &key)
        .await?
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| History::parse(&e.value))
        .unwrap_or_default();
    let Some(mut previous) = history.previous(&key, &current.fingerprint()) else {
        bail!("{name} has no previous version to go back to (its history is empty)");
    };
    previous.instances = current.instances;
    let spec = Spec::parse(&format!("{key} (rolled back)"), &previous.to_toml())?;
    let version = write_spec(op, fw, &spec, entry.version).await?;
    println!(
        "{name}: rolling back from {} to {} (version {version}); its instances are replaced",
        current.fingerprint(),
        spec.fingerprint()
    );
    Ok(())
}

async fn rm(op: &mut OperatorClient, fw: &FrameworkId, name: &str) -> anyhow::Result<()> {
    let Some((_, entry)) = stored(op, fw, name).await? else {
        bail!("no service {name} (see `bramble service ls`)");
    };
    let write = StateWrite::Delete {
        key: spec_key(name),
        expected_version: Some(entry.version),
    };
    op.write_framework_state(fw, write).await?;
    println!("{name}: removed; its instances are being stopped");
    Ok(())
}

/// One instance as `ls`/`show` print it.
#[derive(Debug, Serialize)]
struct InstanceView {
    task_id: String,
    state: String,
    host: String,
    ports: Vec<u16>,
    current: bool,
    #[serde(skip)]
    running: bool,
    /// From the scheduler's status record: `None` when it has not reported this instance.
    healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<String>,
}

#[derive(Debug, Serialize)]
struct ServiceView {
    name: String,
    version: u64,
    wanted: u32,
    running: usize,
    spec: Spec,
    instances: Vec<InstanceView>,
    /// What the scheduler last reported: health, kills, the rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<ServiceStatus>,
}

/// The scheduler's status record of `name`, if it wrote one.
async fn read_status(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    name: &str,
) -> anyhow::Result<Option<ServiceStatus>> {
    let key = status_key(name);
    let entries = op.read_framework_state(fw, &key).await?;
    Ok(entries
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| ServiceStatus::parse(&e.value)))
}

fn view(
    state: &ClusterState,
    fw: &FrameworkId,
    spec: Spec,
    version: u64,
    status: Option<ServiceStatus>,
) -> ServiceView {
    let fingerprint = spec.fingerprint();
    let host = |t: &TaskSummary| {
        state
            .agents
            .iter()
            .find(|a| a.id == t.agent_id)
            .map(|a| a.hostname.clone())
            .unwrap_or_else(|| t.agent_id.to_string())
    };
    let instances: Vec<InstanceView> = state
        .tasks
        .iter()
        .filter(|t| &t.framework_id == fw && !t.state.is_terminal())
        .filter_map(|t| {
            let (service, fp) = services::book::parse_task_id(&t.id)?;
            (service == spec.name).then(|| InstanceView {
                task_id: t.id.to_string(),
                state: t.state.to_string(),
                host: host(t),
                ports: t
                    .resources
                    .ports
                    .iter()
                    .flat_map(|r| r.begin..=r.end)
                    .collect(),
                current: fp == fingerprint,
                running: t.state == TaskState::Running,
                healthy: status.as_ref().and_then(|st| {
                    st.instances
                        .iter()
                        .find(|i| i.task_id == t.id.as_str())
                        .map(|i| i.healthy)
                }),
                last_failure: status.as_ref().and_then(|st| {
                    st.instances
                        .iter()
                        .find(|i| i.task_id == t.id.as_str())
                        .and_then(|i| i.last_failure.clone())
                }),
            })
        })
        .collect();
    let running = instances.iter().filter(|i| i.current && i.running).count();
    ServiceView {
        name: spec.name.clone(),
        version,
        wanted: spec.instances,
        running,
        spec,
        instances,
        status,
    }
}

async fn all_views(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    state: &ClusterState,
) -> anyhow::Result<Vec<ServiceView>> {
    let mut out = Vec::new();
    for entry in op.read_framework_state(fw, SPEC_PREFIX).await? {
        match Spec::parse(&entry.key, &String::from_utf8_lossy(&entry.value)) {
            Ok(spec) => {
                let status = read_status(op, fw, &spec.name).await?;
                out.push(view(state, fw, spec, entry.version, status))
            }
            Err(e) => eprintln!("skipping an unreadable stored spec: {e}"),
        }
    }
    Ok(out)
}

async fn ls(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    state: &ClusterState,
    json: bool,
) -> anyhow::Result<()> {
    let views = all_views(op, fw, state).await?;
    if json {
        return print_json(&views);
    }
    if views.is_empty() {
        println!("no services (add one with `bramble service apply FILE.toml`)");
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>6} {:>6} {:>5} {:>7}",
        "NAME", "RUNNING", "CPUS", "MEM", "PORTS", "VERSION"
    );
    for v in &views {
        println!(
            "{:<24} {:>9} {:>6} {:>6} {:>5} {:>7}",
            v.name,
            format!("{}/{}", v.running, v.wanted),
            v.spec.cpus,
            v.spec.mem,
            v.spec.ports,
            v.version
        );
    }
    Ok(())
}

async fn show(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    state: &ClusterState,
    name: &str,
    json: bool,
) -> anyhow::Result<()> {
    let Some((spec, entry)) = stored(op, fw, name).await? else {
        bail!("no service {name} (see `bramble service ls`)");
    };
    let status = read_status(op, fw, name).await?;
    let v = view(state, fw, spec, entry.version, status);
    if json {
        return print_json(&v);
    }
    println!(
        "{}: {}/{} running, version {}",
        v.name, v.running, v.wanted, v.version
    );
    print!("{}", v.spec.to_toml());
    println!();
    if v.instances.is_empty() {
        println!("no instances");
    }
    for i in &v.instances {
        let ports: Vec<String> = i.ports.iter().map(u16::to_string).collect();
        println!(
            "{:<40} {:<9} {:<20} ports {}{}",
            i.task_id,
            i.state,
            i.host,
            if ports.is_empty() {
                "-".into()
            } else {
                ports.join(",")
            },
            if i.current {
                ""
            } else {
                "  (previous version)"
            }
        );
        match (i.healthy, &i.last_failure) {
            (Some(true), None) => println!("    healthy"),
            (Some(true), Some(why)) => println!("    healthy, but failing now: {why}"),
            (Some(false), Some(why)) => println!("    unhealthy: {why}"),
            (Some(false), None) => println!("    not healthy yet"),
            (None, _) => {}
        }
    }
    if let Some(status) = &v.status {
        if let Some(r) = &status.rollout {
            let state = match r.state {
                RolloutState::InProgress => "in progress",
                RolloutState::Done => "done",
                RolloutState::RolledBack => "rolled back",
            };
            println!(
                "rollout {} -> {}: {state}, {}/{} of the new version healthy",
                r.from, r.to, r.healthy, r.wanted
            );
            if !r.message.is_empty() {
                println!("    {}", r.message);
            }
        }
        for k in &status.kills {
            println!("killed {}: {}", k.task_id, k.reason);
        }
    }
    Ok(())
}

/// `host:port` of each healthy instance, as the scheduler last reported them.
async fn endpoints(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    name: &str,
    all_ports: bool,
    json: bool,
) -> anyhow::Result<()> {
    if stored(op, fw, name).await?.is_none() {
        bail!("no service {name} (see `bramble service ls`)");
    }
    let status = read_status(op, fw, name).await?;
    let mut found: Vec<String> = Vec::new();
    for i in status.iter().flat_map(|s| &s.instances) {
        if !(i.running && i.healthy) {
            continue;
        }
        let ports = if all_ports {
            &i.ports[..]
        } else {
            &i.ports[..i.ports.len().min(1)]
        };
        found.extend(ports.iter().map(|p| format!("{}:{p}", i.host)));
    }
    if json {
        return print_json(&found);
    }
    if found.is_empty() {
        eprintln!("{name}: no healthy instance (see `bramble service show {name}`)");
    }
    for e in &found {
        println!("{e}");
    }
    Ok(())
}

/// Bytes read from the end of each file: enough for a screenful of lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of each live instance's stdout and stderr.
async fn logs(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    state: &ClusterState,
    name: &str,
    lines: usize,
) -> anyhow::Result<()> {
    let Some((spec, _)) = stored(op, fw, name).await? else {
        bail!("no service {name} (see `bramble service ls`)");
    };
    let v = view(state, fw, spec, 0, None);
    if v.instances.is_empty() {
        println!("{name}: no live instances");
    }
    for i in &v.instances {
        let task = bramble_proto::TaskId(i.task_id.clone());
        for file in ["stdout", "stderr"] {
            println!("==> {} {file} ({}) <==", i.task_id, i.host);
            match tail(op, fw, &task, file).await {
                Ok(text) => {
                    let all: Vec<&str> = text.lines().collect();
                    for line in &all[all.len().saturating_sub(lines)..] {
                        println!("{line}");
                    }
                }
                Err(e) => println!("(cannot read: {e:#})"),
            }
        }
    }
    Ok(())
}

/// The end of a sandbox file (at most [`LOG_TAIL_BYTES`]).
async fn tail(
    op: &mut OperatorClient,
    fw: &FrameworkId,
    task: &bramble_proto::TaskId,
    file: &str,
) -> anyhow::Result<String> {
    let first = op.read_sandbox(fw, task, file, 0).await?;
    let chunk = if first.size > LOG_TAIL_BYTES {
        op.read_sandbox(fw, task, file, first.size - LOG_TAIL_BYTES)
            .await?
    } else {
        first
    };
    let text = String::from_utf8_lossy(&chunk.data).into_owned();
    // A read from the middle starts mid-line: drop the partial first line.
    Ok(if chunk.offset > 0 {
        text.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    } else {
        text
    })
}

/// The default place for the scheduler's framework id.
fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local").join("state"))
        })?;
    Some(base.join("bramble").join("services"))
}

async fn scheduler(
    target: &Target<'_>,
    state_dir: Option<PathBuf>,
    node_certificate: bool,
) -> anyhow::Result<()> {
    let state_dir = match state_dir {
        Some(d) => d,
        None => default_state_dir().context(
            "no place for the scheduler's state: set XDG_STATE_HOME or HOME, or pass --state-dir",
        )?,
    };
    if node_certificate && target.principal.is_some() {
        bail!("--node-certificate and --principal name two certificates to present; pick one");
    }
    let config = if node_certificate {
        target.follows(bramble_sdk::SchedulerConfig::new(
            target.master,
            bramble_proto::startup::credentials(target.cluster, bramble_sdk::Role::Node)?,
            bramble_sdk::framework_info(FRAMEWORK_NAME),
        ))
    } else {
        target.scheduler_config(FRAMEWORK_NAME)?
    };
    services::run_services(config, &state_dir, stop_signal()).await?;
    Ok(())
}

/// SIGINT or SIGTERM (systemd stops units with SIGTERM).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
