//! `bramble bench scale`: one real `bramble-master` process against N simulated agents and F
//! frameworks in this process, and the figures issue 17 asks for: time until all N
//! registered from a cold start; the master's RSS and CPU idle (default heartbeat) and under
//! load (from `/proc/PID`); the allocation cycle's p50/p99 (the master's own histogram, read
//! off `/metrics`); accept → RUNNING-seen launch latency; `/api/v1/state`'s response time and
//! size; and, after a SIGKILL and a restart of the master on its store, the time until all N
//! re-registered, with no agent forgotten and no task lost.
//!
//! The phases run in order: cold start → idle window → load (launching at the rate, measured)
//! → the master killed while tasks run and restarted → every agent back → the tasks launched
//! all end. The simulated agents are in `fleet.rs`, the frameworks in `load.rs`, the master
//! process and how it is watched in `master_proc.rs`.

mod fleet;
mod load;
mod machine;
mod master_proc;

use super::stats::{spread, Spread};
use anyhow::{bail, Context};
use bramble_proto::identity::{init_cluster, Credentials, Role};
use fleet::{Fleet, FleetConfig};
use load::{Load, LoadConfig};
use machine::Machine;
use master_proc::{http_get, MasterProcess, ProcSample};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub agents: usize,
    pub frameworks: usize,
    /// Tasks per second, all frameworks together.
    pub task_rate: f64,
    /// How long the measured load runs.
    pub duration: Duration,
    /// How long the master is watched idle with every agent registered.
    pub idle: Duration,
    pub mean_task: Duration,
    pub seed: u64,
    /// SIGKILL and restart the master after the load.
    pub restart: bool,
    /// Simulated agents per source address.
    pub agents_per_address: usize,
    /// The `bramble-master` binary.
    pub master_bin: PathBuf,
    /// How long the cold start (and the re-registration) may take before the run fails.
    pub register_deadline: Duration,
    /// Keep the run's directory (the master's log and store) and say where.
    pub keep: bool,
    /// Simulated agents between dial and registration at once (0: no limit).
    pub dials_in_flight: usize,
    /// Extra environment for the master process (e.g. `BRAMBLE_MASTER_MAX_ADMITTING`).
    pub master_env: Vec<(String, String)>,
}

impl ScaleOptions {
    /// The shape for `agents` agents: 10 frameworks, 1,000 tasks/s, 30 s of load.
    pub fn new(agents: usize, master_bin: PathBuf) -> Self {
        Self {
            agents,
            frameworks: 10,
            task_rate: 1000.0,
            duration: Duration::from_secs(30),
            idle: Duration::from_secs(10),
            mean_task: Duration::from_secs(5),
            seed: 17,
            restart: true,
            agents_per_address: 16,
            master_bin,
            register_deadline: Duration::from_secs(300),
            keep: false,
            dials_in_flight: 256,
            master_env: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub agents: usize,
    pub frameworks: usize,
    pub task_rate: f64,
    pub duration_s: f64,
    pub mean_task_s: f64,
    pub seed: u64,
    pub source_addresses: usize,
    pub agent_resources: String,
    pub heartbeat: &'static str,
    pub update_log: &'static str,
    pub registration: Registration,
    pub master_idle: Usage,
    pub master_load: Usage,
    pub allocation_cycle: Histogram,
    pub launch: Launch,
    pub state_api_idle: StateApi,
    pub state_api_load: StateApi,
    pub restart: Option<Restart>,
    pub tasks: Tasks,
    /// With `--keep`: where the master's log is.
    pub master_log: String,
    /// How busy the machine was: a loaded machine's figures read as such.
    pub machine: Machine,
    /// The whole state through the operator client (in pages), idle with every agent.
    pub operator_state_idle: OperatorState,
}

#[derive(Debug, Serialize)]
pub struct OperatorState {
    pub ms: f64,
    /// Items over `STATE_PAGE`, rounded up (a page may end early to fit a frame).
    pub pages: usize,
    pub agents: usize,
}

#[derive(Debug, Serialize)]
pub struct Registration {
    /// Cold start: the fleet started → every agent registered.
    pub all_registered_s: f64,
    pub dials: u64,
    /// Dials, hellos or registrations that failed (refused by the handshake budget, timed out).
    pub failed_attempts: u64,
    /// Connections the master closed with a reason, or hellos it refused.
    pub refusals: u64,
    /// Hellos the master answered "busy, retry in N ms" (the agents came back then).
    pub busy: u64,
    /// Agents between dial and registration at once (the simulator's pacing; 0: no limit).
    pub dials_in_flight: usize,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub window_s: f64,
    pub cpu_percent_of_one_core: f64,
    pub rss_mib: f64,
    pub rss_kib_per_agent: f64,
}

#[derive(Debug, Serialize)]
pub struct Histogram {
    pub source: &'static str,
    pub passes: u64,
    /// Upper bounds of the buckets the quantiles fall in (buckets grow by 1.25).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Launch {
    pub launched: u64,
    pub achieved_rate: f64,
    /// Launches skipped for want of offers (the frameworks were not offered enough).
    pub skipped: u64,
    pub launch_errors: u64,
    /// accept → RUNNING seen by the framework, tasks accepted during the load window.
    pub latency: Spread,
    /// offer received → accepted (the frameworks hold offers to launch at the rate).
    pub offer_held: Spread,
}

#[derive(Debug, Serialize)]
pub struct StateApi {
    pub ms: f64,
    pub bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct Restart {
    /// SIGKILL → the new master answering `/health`.
    pub master_back_s: f64,
    /// The new master answering → every agent registered with it.
    pub all_reregistered_s: f64,
    /// SIGKILL → every agent registered again.
    pub from_kill_s: f64,
    /// Agents the new master did not take back under their id (they would have been new).
    pub agents_forgotten: u64,
    /// Tasks running (launched, not ended) when the master was killed; launches paused half a
    /// second before.
    pub tasks_live_at_kill: usize,
    /// Busy answers and failed attempts while the agents came back.
    pub busy: u64,
    pub failed_attempts: u64,
}

#[derive(Debug, Serialize)]
pub struct Tasks {
    /// Launched over the whole run (the load window's are in `launch`).
    pub launched: u64,
    pub started_on_agents: u64,
    pub finished: u64,
    pub lost: u64,
    pub other_terminal: u64,
    /// Launched and not ended when the run gave up waiting.
    pub unfinished: usize,
    pub updates_sent: u64,
    pub updates_resent: u64,
}

/// Runs the whole scenario and reports. Fails if the cold start or the re-registration misses
/// its deadline, or the master dies on its own.
pub async fn scale(opts: ScaleOptions) -> anyhow::Result<ScaleReport> {
    let dir = tempfile::Builder::new()
        .prefix("bramble-scale-")
        .tempdir()
        .context("creating the run's temp dir")?;
    let cluster = dir.path().join("cluster");
    init_cluster(&cluster, "scale")?;
    let node = Credentials::load(&cluster, Role::Node)?;
    let mut machine = Machine::now();
    let mut master = MasterProcess::start(&opts.master_bin, dir.path(), &opts.master_env).await?;
    let master_log = master.log_path().display().to_string();
    let result = run_phases(&opts, &mut master, &node, &cluster).await;
    master.kill();
    match result {
        Ok(mut report) => {
            machine.finish();
            report.machine = machine;
            if opts.keep {
                let _ = dir.keep();
                report.master_log = master_log;
            }
            Ok(report)
        }
        Err(e) => {
            // Keep the master's log for whoever reads the error.
            let kept = dir.keep();
            Err(e.context(format!(
                "the master's log is kept in {}",
                kept.join("master.log").display()
            )))
        }
    }
}

async fn run_phases(
    opts: &ScaleOptions,
    master: &mut MasterProcess,
    node: &Credentials,
    cluster: &std::path::Path,
) -> anyhow::Result<ScaleReport> {
    let resources = bramble_proto::Resources::new(4.0, 4096);
    let fleet = Fleet::start(
        &FleetConfig {
            agents: opts.agents,
            master: master.quic,
            per_endpoint: opts.agents_per_address,
            resources: resources.clone(),
            dials_in_flight: opts.dials_in_flight,
        },
        node,
    )?;
    let Some(cold) = fleet.wait_registered(0, opts.register_deadline).await else {
        bail!(
            "only {} of {} agents registered within {:?}",
            fleet.registered_since(0),
            opts.agents,
            opts.register_deadline
        );
    };
    let shared = fleet.shared();
    let registration = Registration {
        all_registered_s: cold.as_secs_f64(),
        dials: shared.dials.load(Ordering::Relaxed),
        failed_attempts: shared.failed_attempts.load(Ordering::Relaxed),
        refusals: shared.refusals.load(Ordering::Relaxed),
        busy: shared.busy.load(Ordering::Relaxed),
        dials_in_flight: opts.dials_in_flight,
    };

    // Idle: every agent heartbeating at the default interval, nothing else. The first second
    // after the cold start is left out (the registrations' commits and trims settle).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_from = master.sample()?;
    tokio::time::sleep(opts.idle).await;
    let idle_to = master.sample()?;
    let master_idle = usage(&idle_from, &idle_to, idle_to.rss_kib, opts.agents);
    let state_api_idle = state_api(master).await?;
    let operator_state_idle = operator_state(master, cluster).await?;

    // Load.
    let load = Load::start(
        &LoadConfig {
            frameworks: opts.frameworks,
            rate: opts.task_rate,
            mean_task: opts.mean_task,
            seed: opts.seed,
        },
        master.quic,
        cluster,
    )?;
    poll(
        Duration::from_secs(60),
        "the frameworks to subscribe",
        || load.subscribed() == opts.frameworks,
    )
    .await?;
    load.launch(true, true);
    let load_from = master.sample()?;
    let mut rss_max = load_from.rss_kib;
    let load_end = Instant::now() + opts.duration;
    let mut state_api_load = None;
    while Instant::now() < load_end {
        tokio::time::sleep(Duration::from_millis(250).min(opts.duration)).await;
        rss_max = rss_max.max(master.sample()?.rss_kib);
        // Once, halfway: the state of a busy cluster.
        if state_api_load.is_none() && load_end.duration_since(Instant::now()) < opts.duration / 2 {
            state_api_load = Some(state_api(master).await?);
        }
    }
    let load_to = master.sample()?;
    let master_load = usage(&load_from, &load_to, rss_max, opts.agents);
    let state_api_load = match state_api_load {
        Some(s) => s,
        None => state_api(master).await?,
    };
    let allocation_cycle = allocation_histogram(master).await?;
    let (launched, skipped) = load.with_records(|rs| {
        (
            rs.iter().map(|r| r.launched).sum::<u64>(),
            rs.iter().map(|r| r.skipped).sum::<u64>(),
        )
    });
    let achieved_rate = launched as f64 / opts.duration.as_secs_f64();

    // Restart: the master dies with tasks running (launches go on, and fail while it is away).
    let restart = if opts.restart {
        // Launches pause first: a launch the master has committed but not yet sent when it
        // dies is LOST on re-registration (the agent never had it), as in Mesos, and a call
        // the SDK queued as the link died never reaches it. Tasks already running must all
        // survive, and that is what this phase checks.
        load.launch(false, false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tasks_live_at_kill = load.live();
        let killed = Instant::now();
        let killed_ms = fleet.now_ms();
        let busy_before = shared.busy.load(Ordering::Relaxed);
        let failed_before = shared.failed_attempts.load(Ordering::Relaxed);
        master.kill();
        master.spawn().await?;
        let back = killed.elapsed();
        let Some(rereg) = fleet
            .wait_registered(killed_ms, opts.register_deadline)
            .await
        else {
            bail!(
                "after the master's restart only {} of {} agents registered again within {:?}",
                fleet.registered_since(killed_ms),
                opts.agents,
                opts.register_deadline
            );
        };
        Some(Restart {
            master_back_s: back.as_secs_f64(),
            all_reregistered_s: rereg.as_secs_f64(),
            from_kill_s: killed.elapsed().as_secs_f64(),
            agents_forgotten: shared.id_changes.load(Ordering::Relaxed),
            tasks_live_at_kill,
            busy: shared.busy.load(Ordering::Relaxed) - busy_before,
            failed_attempts: shared.failed_attempts.load(Ordering::Relaxed) - failed_before,
        })
    } else {
        None
    };

    // Every task launched ends (the frameworks reconnect and fail over by themselves).
    load.launch(false, false);
    let settle = opts.mean_task * 2 + Duration::from_secs(60);
    let _ = poll(settle, "the launched tasks to end", || load.live() == 0).await;
    let unfinished = load.live();
    let (launch, tasks) = load.with_records(|rs| {
        let latencies = rs
            .iter()
            .flat_map(|r| r.latencies_ms.iter().copied())
            .collect();
        let held = rs.iter().flat_map(|r| r.held_ms.iter().copied()).collect();
        let sum = |f: fn(&load::Record) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
        (
            Launch {
                launched,
                achieved_rate,
                skipped,
                launch_errors: sum(|r| r.launch_errors),
                latency: spread(latencies),
                offer_held: spread(held),
            },
            Tasks {
                launched: sum(|r| r.launched),
                started_on_agents: shared.tasks_started.load(Ordering::Relaxed),
                finished: sum(|r| r.finished),
                lost: sum(|r| r.lost),
                other_terminal: sum(|r| r.other_terminal),
                unfinished,
                updates_sent: shared.updates_sent.load(Ordering::Relaxed),
                updates_resent: shared.updates_resent.load(Ordering::Relaxed),
            },
        )
    });
    let source_addresses = fleet.endpoints;
    load.stop().await;
    fleet.stop().await;
    Ok(ScaleReport {
        agents: opts.agents,
        frameworks: opts.frameworks,
        task_rate: opts.task_rate,
        duration_s: opts.duration.as_secs_f64(),
        mean_task_s: opts.mean_task.as_secs_f64(),
        seed: opts.seed,
        source_addresses,
        agent_resources: resources.to_string(),
        heartbeat: "the master's default (1 s)",
        update_log: "in memory (simulated agents; only the master is killed)",
        registration,
        master_idle,
        master_load,
        allocation_cycle,
        launch,
        state_api_idle,
        state_api_load,
        restart,
        tasks,
        master_log: String::new(),
        machine: Machine::now(),
        operator_state_idle,
    })
}

fn usage(from: &ProcSample, to: &ProcSample, rss_kib: u64, agents: usize) -> Usage {
    Usage {
        window_s: to.at.duration_since(from.at).as_secs_f64(),
        cpu_percent_of_one_core: to.cpu_percent_since(from),
        rss_mib: rss_kib as f64 / 1024.0,
        rss_kib_per_agent: rss_kib as f64 / agents.max(1) as f64,
    }
}

async fn state_api(master: &MasterProcess) -> anyhow::Result<StateApi> {
    let started = Instant::now();
    let (status, body) = http_get(master.http, "/api/v1/state").await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        bail!("GET /api/v1/state answered {status}");
    }
    Ok(StateApi {
        ms,
        bytes: body.len(),
    })
}

/// The whole state as `bramble status --json` reads it: over QUIC, a page at a time.
async fn operator_state(
    master: &MasterProcess,
    cluster: &std::path::Path,
) -> anyhow::Result<OperatorState> {
    let started = Instant::now();
    let mut op = bramble_client::OperatorClient::connect(cluster, master.quic).await?;
    let state = op.state().await.context("reading the state in pages")?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    op.close();
    let items = state.agents.len() + state.tasks.len() + state.offers.len();
    Ok(OperatorState {
        ms,
        pages: items.div_ceil(bramble_client::STATE_PAGE as usize).max(1),
        agents: state.agents.len(),
    })
}

async fn allocation_histogram(master: &MasterProcess) -> anyhow::Result<Histogram> {
    let (status, body) = http_get(master.http, "/metrics").await?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    parse_histogram(&text, "bramble_allocation_cycle_seconds")
        .context("no bramble_allocation_cycle_seconds histogram on /metrics")
}

/// Reads a Prometheus histogram's count, mean and p50/p99 (as the upper bound of the bucket
/// each falls in) from exposition text.
fn parse_histogram(text: &str, name: &str) -> Option<Histogram> {
    let bucket_prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut count = None;
    let mut sum = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&bucket_prefix) {
            let (le, n) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, n.trim().parse().ok()?));
        } else if let Some(n) = line.strip_prefix(&format!("{name}_count ")) {
            count = n.trim().parse::<u64>().ok();
        } else if let Some(s) = line.strip_prefix(&format!("{name}_sum ")) {
            sum = s.trim().parse::<f64>().ok();
        }
    }
    let count = count?;
    let quantile = |q: f64| {
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(le, _)| le * 1000.0)
            .unwrap_or(0.0)
    };
    Some(Histogram {
        source: "the master's bramble_allocation_cycle_seconds on /metrics",
        passes: count,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        mean_ms: if count == 0 {
            0.0
        } else {
            sum? / count as f64 * 1000.0
        },
    })
}

/// Polls `done` every 20 ms until it holds or `deadline` passes.
async fn poll(deadline: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > deadline {
            bail!("waited {deadline:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_read_off_cumulative_buckets() {
        let text = "\
# TYPE bramble_allocation_cycle_seconds histogram
bramble_allocation_cycle_seconds_sum 0.5
bramble_allocation_cycle_seconds_count 100
bramble_allocation_cycle_seconds_bucket{le=\"0.001\"} 40
bramble_allocation_cycle_seconds_bucket{le=\"0.002\"} 90
bramble_allocation_cycle_seconds_bucket{le=\"0.004\"} 99
bramble_allocation_cycle_seconds_bucket{le=\"0.008\"} 100
bramble_allocation_cycle_seconds_bucket{le=\"+Inf\"} 100
";
        let h = parse_histogram(text, "bramble_allocation_cycle_seconds").expect("parsed");
        assert_eq!(h.passes, 100);
        assert_eq!(h.p50_ms, 2.0);
        assert_eq!(h.p99_ms, 4.0);
        assert!((h.mean_ms - 5.0).abs() < 1e-9);
        assert!(parse_histogram(text, "other").is_none());
    }
}
