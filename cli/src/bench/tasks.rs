//! `bramble bench tasks`: tiny tasks through a cluster, timed from just before the driver's
//! launch call to the framework's `status_update` callback for the terminal update. Two
//! shapes: as many in flight as the offers hold (throughput, and latency under that load),
//! or one at a time (the round trip alone, after each agent's executor has started).
//!
//! The scheduler here only records ([`Trace`] per task); the figures come from
//! [`super::stats`]. It never changes what it measures: the launch, the updates and their
//! acknowledgements are the SDK's, exactly as any framework sees them.

use super::stats::{summarize, Ended, Seen, Stages, Trace, Warmup};
use bramble_frameworks::pi::PiChunk;
use bramble_sdk::proto::unix_now;
use bramble_sdk::{
    async_trait, CommandInfo, ExecutorInfo, Filters, Offer, Resources, Scheduler, SchedulerDriver,
    TaskInfo, TaskState, TaskStatus,
};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tracing::warn;

/// Which path tiny tasks take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TaskPath {
    /// A no-op task on the long-lived custom executor (`bramble executor pi`, empty chunk).
    Executor,
    /// A `true` shell command: one process per task (fork/exec bound).
    Command,
}

/// Where the tiny tasks run.
pub enum BenchCluster {
    /// A throwaway in-process cluster (`crate::demo::Throwaway`): `masters` masters (1, or a
    /// replicated group on loopback) and this many agents, each offering `cpus` and 4 GiB.
    /// Its executors are real processes.
    Throwaway {
        masters: usize,
        agents: usize,
        cpus: f64,
    },
    /// A running cluster, subscribed to as this framework (`bench/mesos.sh` and
    /// `bench/footprint.sh` run it against real processes).
    Existing(Box<bramble_sdk::SchedulerConfig>),
}

#[derive(Debug, Serialize)]
pub struct TasksReport {
    pub path: TaskPath,
    /// `rtt` (one task at a time: `--rtt N` or `--in-flight 1`) or `throughput`.
    pub mode: &'static str,
    pub tasks: u64,
    /// Masters of the throwaway cluster (1: a single master; 3: a replicated group, every
    /// store write on a majority before it is acknowledged); 0 on an existing cluster.
    pub masters: usize,
    /// Agents of the throwaway cluster; 0 on an existing cluster.
    pub agents: usize,
    /// CPUs each throwaway agent offers; `None` on an existing cluster.
    pub cpus_per_agent: Option<f64>,
    /// The in-flight limit asked for (0: as many as the offers hold).
    pub in_flight: u64,
    /// The most tasks that were actually in flight at once.
    pub in_flight_max_seen: u64,
    /// First launch → last terminal update seen (executor start-up included).
    pub wall_s: f64,
    pub tasks_per_s: f64,
    /// Launch → terminal update seen by the framework (warm-up excluded in `rtt` mode only).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// How many latencies the percentiles are over.
    pub latency_n: usize,
    pub first_task_ms: Option<f64>,
    pub warmup: Warmup,
    pub stages: Stages,
    pub failed: u64,
}

const NEED_CPUS: f64 = 0.01;
const NEED_MEM: u64 = 1;

/// The bench framework: launches until `total`, at most `in_flight` at once, and records.
struct Tiny {
    path: TaskPath,
    executor: ExecutorInfo,
    total: u64,
    /// Most tasks in flight at once; 0 is no limit.
    in_flight: u64,
    launched: u64,
    ended: u64,
    failed: u64,
    in_flight_max_seen: u64,
    /// Per task, in launch order.
    traces: Vec<Trace>,
    /// Task id → its trace, while the task is live.
    live: HashMap<String, usize>,
    /// Agents a task has been launched on.
    agents_used: HashSet<String>,
    first_launch: Option<Instant>,
    last_end: Option<Instant>,
}

impl Tiny {
    fn task(&self, offer: &Offer, id: String) -> TaskInfo {
        let (command, executor, data) = match self.path {
            TaskPath::Command => (Some(CommandInfo::shell("true")), None, Vec::new()),
            TaskPath::Executor => (
                None,
                Some(self.executor.clone()),
                PiChunk {
                    index: 0,
                    begin: 0,
                    end: 0,
                }
                .to_bytes(),
            ),
        };
        TaskInfo {
            task_id: id.into(),
            name: "tiny".into(),
            agent_id: offer.agent_id.clone(),
            resources: Resources::new(NEED_CPUS, NEED_MEM),
            command,
            executor,
            data,
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        }
    }

    fn may_launch(&self) -> bool {
        self.launched < self.total
            && (self.in_flight == 0 || self.launched - self.ended < self.in_flight)
    }

    fn stop_if_done(&mut self, driver: &SchedulerDriver) {
        if self.ended == self.total {
            self.last_end = Some(Instant::now());
            driver.stop(false);
        }
    }
}

#[async_trait]
impl Scheduler for Tiny {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let need = Resources::new(NEED_CPUS, NEED_MEM);
        for offer in offers {
            let mut left = offer.resources.clone();
            if self.path == TaskPath::Executor
                && !offer.executor_ids.contains(&self.executor.executor_id)
            {
                left = left
                    .checked_sub(&self.executor.resources)
                    .unwrap_or_default();
            }
            let mut tasks = Vec::new();
            while self.may_launch() {
                let Some(rest) = left.checked_sub(&need) else {
                    break;
                };
                left = rest;
                tasks.push(self.task(&offer, format!("tiny-{}", self.launched)));
                self.launched += 1;
            }
            if tasks.is_empty() {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 1.0,
                    },
                );
                continue;
            }
            let ids: Vec<String> = tasks
                .iter()
                .map(|t| t.task_id.as_str().to_string())
                .collect();
            // Leftovers go straight back to the pool: the next offer carries them.
            let leftovers = Filters {
                refuse_seconds: 0.0,
            };
            // The clock starts here, just before the launch call; the traces are written after
            // it (no update can be handed to us before this callback returns).
            let launched = Instant::now();
            let launched_unix = unix_now();
            let sent = driver.launch_tasks(vec![offer.id], tasks, leftovers);
            if let Err(e) = sent {
                warn!(
                    tasks = ids.len(),
                    "launch failed, counting the tasks failed: {e}"
                );
                self.ended += ids.len() as u64;
                self.failed += ids.len() as u64;
                self.stop_if_done(driver);
                continue;
            }
            self.first_launch.get_or_insert(launched);
            let mut first_on_agent = self.agents_used.insert(offer.agent_id.as_str().to_string());
            for id in ids {
                self.live.insert(id, self.traces.len());
                self.traces.push(Trace {
                    launched,
                    launched_unix,
                    first_on_agent,
                    running: None,
                    ended: None,
                });
                first_on_agent = false;
            }
            self.in_flight_max_seen = self.in_flight_max_seen.max(self.launched - self.ended);
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let seen = Seen {
            produced_unix: status.timestamp,
            seen_unix: unix_now(),
        };
        let Some(&i) = self.live.get(status.task_id.as_str()) else {
            return; // a duplicate, or not ours
        };
        let Some(trace) = self.traces.get_mut(i) else {
            return;
        };
        if status.state == TaskState::Running {
            trace.running.get_or_insert(seen);
            return;
        }
        if !status.state.is_terminal() {
            return;
        }
        let finished = status.state == TaskState::Finished;
        trace.ended = Some(Ended {
            seen,
            latency_ms: trace.launched.elapsed().as_secs_f64() * 1000.0,
            finished,
        });
        self.live.remove(status.task_id.as_str());
        self.ended += 1;
        if !finished {
            self.failed += 1;
        }
        self.stop_if_done(driver);
    }
}

/// Runs `count` tiny tasks through `path` on `cluster`, at most `in_flight` at once (0: as
/// many as the offers hold; 1: the `rtt` mode, whose percentiles leave out each agent's first
/// task, the one that waits for the executor to start).
pub async fn tasks(
    path: TaskPath,
    count: u64,
    in_flight: u64,
    cluster: BenchCluster,
    executor: CommandInfo,
) -> anyhow::Result<TasksReport> {
    let (throwaway, config, masters, agents, cpus_per_agent) = match cluster {
        BenchCluster::Throwaway {
            masters,
            agents,
            cpus,
        } => {
            let c = crate::demo::Throwaway::start_with_masters(masters, agents, cpus, 4096).await?;
            let config = c.scheduler_config("bench")?;
            (Some(c), config, masters, agents, Some(cpus))
        }
        BenchCluster::Existing(config) => (None, *config, 0, 0, None),
    };
    let scheduler = Tiny {
        path,
        executor: ExecutorInfo {
            executor_id: "bench-executor".into(),
            name: "bench".into(),
            command: executor,
            resources: Resources::new(0.0, 32),
        },
        total: count,
        in_flight,
        launched: 0,
        ended: 0,
        failed: 0,
        in_flight_max_seen: 0,
        traces: Vec::with_capacity(count as usize),
        live: HashMap::new(),
        agents_used: HashSet::new(),
        first_launch: None,
        last_end: None,
    };
    let done = bramble_sdk::run_scheduler(config, scheduler).await;
    if let Some(c) = throwaway {
        c.stop().await;
    }
    let t = done?;
    let rtt = in_flight == 1;
    let summary = summarize(&t.traces, rtt);
    let wall = match (t.first_launch, t.last_end) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(TasksReport {
        path,
        mode: if rtt { "rtt" } else { "throughput" },
        tasks: count,
        masters,
        agents,
        cpus_per_agent,
        in_flight,
        in_flight_max_seen: t.in_flight_max_seen,
        wall_s: wall,
        tasks_per_s: if wall > 0.0 { count as f64 / wall } else { 0.0 },
        latency_p50_ms: summary.latency.p50_ms,
        latency_p99_ms: summary.latency.p99_ms,
        latency_max_ms: summary.latency.max_ms,
        latency_n: summary.latency.n,
        first_task_ms: summary.first_task_ms,
        warmup: summary.warmup,
        stages: summary.stages,
        failed: t.failed,
    })
}
