//! `bramble bench …`: the controls and measurements behind `bench/`. Every number is printed
//! as JSON so the scripts under `bench/` can compute ratios against a control measured in the
//! same run (this machine is shared and noisy; absolute times mean little).

use bramble_frameworks::pi::kernel::{chunks, combine, leibniz_range};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct KernelReport {
    pub threads: usize,
    pub terms: u64,
    pub tasks: u64,
    pub wall_s: f64,
    pub terms_per_s: f64,
    pub pi: f64,
}

/// The no-scheduler control: the same chunks the pi job would run, on `threads` plain threads
/// in this process, combined the same way.
pub fn kernel(threads: usize, terms: u64, tasks: u64) -> KernelReport {
    let ranges = chunks(terms, tasks);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(vec![None; ranges.len()]));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let next = next.clone();
            let results = results.clone();
            let ranges = &ranges;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(b, e)) = ranges.get(i) else { break };
                let sum = leibniz_range(b, e);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(sum);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let sums: Vec<_> = results
        .lock()
        .map(|r| r.iter().flatten().copied().collect())
        .unwrap_or_default();
    KernelReport {
        threads,
        terms,
        tasks: ranges.len() as u64,
        wall_s: wall,
        terms_per_s: terms as f64 / wall,
        pi: combine(sums),
    }
}

/// Which path tiny tasks take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TaskPath {
    /// A no-op task on the long-lived custom executor (`bramble executor pi`, empty chunk).
    Executor,
    /// A `true` shell command: one process per task (fork/exec bound).
    Command,
}

#[derive(Debug, Serialize)]
pub struct TasksReport {
    pub path: TaskPath,
    pub tasks: u64,
    /// Agents of the throwaway cluster; 0 on an existing cluster.
    pub agents: usize,
    /// Most tasks in flight at once (0: as many as the offers hold).
    pub in_flight: u64,
    pub wall_s: f64,
    pub tasks_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub failed: u64,
}

mod tiny {
    use super::TaskPath;
    use bramble_frameworks::pi::PiChunk;
    use bramble_sdk::{
        async_trait, CommandInfo, ExecutorInfo, Filters, Offer, Resources, Scheduler,
        SchedulerDriver, TaskInfo, TaskState, TaskStatus,
    };
    use std::collections::HashMap;
    use std::time::Instant;

    pub struct Tiny {
        pub path: TaskPath,
        pub executor: CommandInfo,
        pub total: u64,
        /// Most tasks in flight at once; 0 is no limit.
        pub in_flight: u64,
        pub launched: u64,
        pub finished: u64,
        pub failed: u64,
        pub started_at: HashMap<String, Instant>,
        pub latencies: Vec<f64>,
        pub first_launch: Option<Instant>,
        pub last_finish: Option<Instant>,
    }

    const NEED_CPUS: f64 = 0.01;
    const NEED_MEM: u64 = 1;

    #[async_trait]
    impl Scheduler for Tiny {
        async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
            let need = Resources::new(NEED_CPUS, NEED_MEM);
            let executor = ExecutorInfo {
                executor_id: "bench-executor".into(),
                name: "bench".into(),
                command: self.executor.clone(),
                resources: Resources::new(0.0, 32),
            };
            for offer in offers {
                let mut left = offer.resources.clone();
                if self.path == TaskPath::Executor
                    && !offer.executor_ids.contains(&executor.executor_id)
                {
                    left = left.checked_sub(&executor.resources).unwrap_or_default();
                }
                let mut tasks = Vec::new();
                let now = Instant::now();
                while self.launched < self.total
                    && (self.in_flight == 0
                        || self.launched - self.finished - self.failed < self.in_flight)
                {
                    let Some(rest) = left.checked_sub(&need) else {
                        break;
                    };
                    left = rest;
                    let id = format!("tiny-{}", self.launched);
                    self.launched += 1;
                    self.started_at.insert(id.clone(), now);
                    let (command, exec, data) = match self.path {
                        TaskPath::Command => (Some(CommandInfo::shell("true")), None, Vec::new()),
                        TaskPath::Executor => (
                            None,
                            Some(executor.clone()),
                            PiChunk {
                                index: 0,
                                begin: 0,
                                end: 0,
                            }
                            .to_bytes(),
                        ),
                    };
                    tasks.push(TaskInfo {
                        task_id: id.into(),
                        name: "tiny".into(),
                        agent_id: offer.agent_id.clone(),
                        resources: need.clone(),
                        command,
                        executor: exec,
                        data,
                        mesos: None,
                    });
                }
                self.first_launch.get_or_insert(now);
                let filters = Filters {
                    refuse_seconds: 0.0,
                };
                let _ = if tasks.is_empty() {
                    driver.decline_offer(
                        offer.id,
                        Filters {
                            refuse_seconds: 1.0,
                        },
                    )
                } else {
                    driver.launch_tasks(vec![offer.id], tasks, filters)
                };
            }
        }

        async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
            if !status.state.is_terminal() {
                return;
            }
            if let Some(t0) = self.started_at.remove(status.task_id.as_str()) {
                self.latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                if status.state == TaskState::Finished {
                    self.finished += 1;
                } else {
                    self.failed += 1;
                }
            }
            if self.finished + self.failed == self.total {
                self.last_finish = Some(Instant::now());
                driver.stop(false);
            }
        }
    }
}

/// Where the tiny tasks run.
pub enum BenchCluster {
    /// A throwaway in-process cluster of this many agents (2 cpus, 4 GiB each).
    Throwaway(usize),
    /// A running cluster, subscribed to as this framework (`bench/mesos.sh` puts the native
    /// SDK and a Mesos framework on the same processes).
    Existing(Box<bramble_sdk::SchedulerConfig>),
}

/// Runs `count` tiny tasks through `path` on `cluster`, at most `in_flight` at once (0: no
/// limit; 1 measures one task's round trip alone).
pub async fn tasks(
    path: TaskPath,
    count: u64,
    in_flight: u64,
    cluster: BenchCluster,
    executor: bramble_proto::task::CommandInfo,
) -> anyhow::Result<TasksReport> {
    let (throwaway, config, agents) = match cluster {
        BenchCluster::Throwaway(agents) => {
            let c = crate::demo::Throwaway::start(agents, 2.0, 4096).await?;
            let config = c.scheduler_config("bench")?;
            (Some(c), config, agents)
        }
        BenchCluster::Existing(config) => (None, *config, 0),
    };
    let scheduler = tiny::Tiny {
        path,
        executor,
        total: count,
        in_flight,
        launched: 0,
        finished: 0,
        failed: 0,
        started_at: Default::default(),
        latencies: Vec::with_capacity(count as usize),
        first_launch: None,
        last_finish: None,
    };
    let done = bramble_sdk::run_scheduler(config, scheduler).await;
    if let Some(c) = throwaway {
        c.stop().await;
    }
    let mut t = done?;
    t.latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        t.latencies
            .get(((t.latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let wall = match (t.first_launch, t.last_finish) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    Ok(TasksReport {
        path,
        tasks: count,
        agents,
        in_flight,
        wall_s: wall,
        tasks_per_s: if wall > 0.0 { count as f64 / wall } else { 0.0 },
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        failed: t.failed,
    })
}
