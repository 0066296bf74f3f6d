//! The load of `bramble bench scale`: F frameworks on the SDK's `SchedulerDriver`, launching
//! tasks at a total rate R with durations drawn from a fixed seed.
//!
//! Each framework keeps the offers it is given (declining what it could not use within a
//! couple of seconds, so the others get them), and a ticker launches what is due by the rate
//! from the offers held, packing each offer as the pi scheduler does (as many tasks as fit,
//! the rest of the offer back to the pool). What is measured per task is the launch latency:
//! from the accept call to the framework seeing RUNNING, and how long the offer had been held
//! before it was accepted.

use bramble_proto::rng::XorShift64Star;
use bramble_sdk::{
    async_trait, framework_info, CommandInfo, Credentials, Filters, Offer, OfferId, Resources,
    Role, Scheduler, SchedulerConfig, SchedulerDriver, TaskInfo, TaskState, TaskStatus,
};
use bramble_sdk::{FrameworkId, TaskId};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What each simulated task asks for: a quarter of a Pi 4.
pub fn task_resources() -> Resources {
    Resources::new(1.0, 512)
}
/// How often the launcher looks at what is due.
const LAUNCH_TICK: Duration = Duration::from_millis(10);
/// Offers held for this many seconds of launches; more are declined.
const HOLD_SECONDS: f64 = 2.0;
/// How long a declined offer stays away from the framework.
const DECLINE_FOR: f64 = 5.0;
/// Launches behind by more than this many seconds' worth (no offers) are skipped, not burst.
const MAX_BACKLOG_SECONDS: f64 = 1.0;

/// How the load is shaped.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub frameworks: usize,
    /// Tasks per second, all frameworks together.
    pub rate: f64,
    /// Task durations are drawn uniformly from [mean/2, 3·mean/2].
    pub mean_task: Duration,
    pub seed: u64,
}

/// Everything a framework records, shared by its scheduler callbacks and its launcher.
#[derive(Default)]
pub struct Record {
    pub subscribed: bool,
    pub connected: bool,
    pub launched: u64,
    /// Launch calls the driver refused (disconnected from the master).
    pub launch_errors: u64,
    /// Launches skipped for want of offers (see [`MAX_BACKLOG_SECONDS`]).
    pub skipped: u64,
    pub running_seen: u64,
    pub finished: u64,
    pub lost: u64,
    /// Other terminal states (failed, killed, error, …).
    pub other_terminal: u64,
    /// Accept → RUNNING seen, ms, for tasks accepted while measuring.
    pub latencies_ms: Vec<f64>,
    /// Offer received → accepted, ms, while measuring.
    pub held_ms: Vec<f64>,
    /// Tasks launched and not yet ended, with their accept time and whether they count.
    live: HashMap<TaskId, Live>,
    held: VecDeque<Held>,
    /// The rate's clock: launches due are `rate × (now − since)` beyond `base`.
    since: Option<Instant>,
    base: u64,
}

struct Live {
    accepted: Instant,
    measured: bool,
    running_seen: bool,
}

struct Held {
    offer: Offer,
    received: Instant,
}

impl Record {
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

/// One framework of the load.
struct Framework {
    record: Arc<Mutex<Record>>,
    /// Tasks per second for this framework.
    rate: f64,
}

fn lock(m: &Mutex<Record>) -> MutexGuard<'_, Record> {
    // Plain counters and maps; a panic elsewhere cannot leave them half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Scheduler for Framework {
    async fn registered(&mut self, _: &SchedulerDriver, _: &FrameworkId, _: bool) {
        let mut r = lock(&self.record);
        r.subscribed = true;
        r.connected = true;
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let mut r = lock(&self.record);
        let now = Instant::now();
        let per_offer = tasks_per_offer(&offers);
        let keep = ((self.rate * HOLD_SECONDS) / per_offer).ceil() as usize + 4;
        for offer in offers {
            if r.held.len() >= keep {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: DECLINE_FOR,
                    },
                );
            } else {
                r.held.push_back(Held {
                    offer,
                    received: now,
                });
            }
        }
    }

    async fn offer_rescinded(&mut self, _: &SchedulerDriver, offer_id: &OfferId) {
        lock(&self.record).held.retain(|h| &h.offer.id != offer_id);
    }

    async fn status_update(&mut self, _: &SchedulerDriver, status: &TaskStatus) {
        let mut r = lock(&self.record);
        let r = &mut *r;
        let Some(live) = r.live.get_mut(&status.task_id) else {
            return; // a duplicate after the end, or a reconciliation answer
        };
        if status.state == TaskState::Running {
            if !live.running_seen {
                live.running_seen = true;
                r.running_seen += 1;
                if live.measured {
                    r.latencies_ms
                        .push(live.accepted.elapsed().as_secs_f64() * 1000.0);
                }
            }
            return;
        }
        if !status.state.is_terminal() {
            return;
        }
        r.live.remove(&status.task_id);
        match status.state {
            TaskState::Finished => r.finished += 1,
            TaskState::Lost => r.lost += 1,
            _ => r.other_terminal += 1,
        }
    }

    async fn disconnected(&mut self, _: &SchedulerDriver) {
        let mut r = lock(&self.record);
        r.connected = false;
        // Offers die with the master that made them.
        r.held.clear();
    }
}

fn tasks_per_offer(offers: &[Offer]) -> f64 {
    let need = task_resources();
    let fits = |o: &Offer| {
        let mut left = o.resources.clone();
        let mut n = 0u32;
        while let Some(rest) = left.checked_sub(&need) {
            left = rest;
            n += 1;
        }
        n
    };
    let total: u32 = offers.iter().map(fits).sum();
    (total as f64 / offers.len().max(1) as f64).max(1.0)
}

/// The running load.
pub struct Load {
    pub records: Vec<Arc<Mutex<Record>>>,
    drivers: Vec<SchedulerDriver>,
    runs: Vec<JoinHandle<()>>,
    launchers: Vec<JoinHandle<()>>,
    /// Whether launches are made now.
    launching: Arc<AtomicBool>,
    /// Whether launches made now count in the latencies.
    measuring: Arc<AtomicBool>,
}

impl Load {
    /// Subscribes the frameworks; they hold offers but launch nothing until [`Load::launch`].
    /// `cluster`: the cluster directory whose framework certificate they present.
    pub fn start(
        config: &LoadConfig,
        master: SocketAddr,
        cluster: &std::path::Path,
    ) -> anyhow::Result<Load> {
        let launching = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let rate = config.rate / config.frameworks.max(1) as f64;
        let mut load = Load {
            records: Vec::new(),
            drivers: Vec::new(),
            runs: Vec::new(),
            launchers: Vec::new(),
            launching: launching.clone(),
            measuring: measuring.clone(),
        };
        for i in 0..config.frameworks {
            let record = Arc::new(Mutex::new(Record::default()));
            let creds = Credentials::load(cluster, Role::Framework)?;
            let sdk_config =
                SchedulerConfig::new(master, creds, framework_info(format!("scale-{i}")));
            let driver = SchedulerDriver::new(sdk_config);
            let framework = Framework {
                record: record.clone(),
                rate,
            };
            let run_driver = driver.clone();
            load.runs.push(tokio::spawn(async move {
                if let Err(e) = run_driver.run(framework).await {
                    tracing::warn!("a load framework stopped: {e}");
                }
            }));
            let launcher = Launcher {
                record: record.clone(),
                driver: driver.clone(),
                rate,
                name: i,
                rng: XorShift64Star::new(config.seed.wrapping_mul(0x9E37_79B9) ^ (i as u64 + 1)),
                mean_ms: config.mean_task.as_millis() as u64,
                launching: launching.clone(),
                measuring: measuring.clone(),
            };
            load.launchers.push(tokio::spawn(launcher.run()));
            load.records.push(record);
            load.drivers.push(driver);
        }
        Ok(load)
    }

    pub fn subscribed(&self) -> usize {
        self.records.iter().filter(|r| lock(r).subscribed).count()
    }

    /// Starts (or stops) launching at the rate, counting launches in the latencies or not.
    pub fn launch(&self, on: bool, measured: bool) {
        for r in &self.records {
            let mut r = lock(r);
            r.since = Some(Instant::now());
            r.base = r.launched + r.skipped;
        }
        self.measuring.store(measured, Ordering::Relaxed);
        self.launching.store(on, Ordering::Relaxed);
    }

    pub fn live(&self) -> usize {
        self.records.iter().map(|r| lock(r).live()).sum()
    }

    /// Reads the records.
    pub fn with_records<T>(&self, f: impl FnOnce(&[&Record]) -> T) -> T {
        let guards: Vec<MutexGuard<'_, Record>> = self.records.iter().map(|r| lock(r)).collect();
        let refs: Vec<&Record> = guards.iter().map(|g| &**g).collect();
        f(&refs)
    }

    /// Tears the frameworks down (their tasks, if any, are killed) and waits for the drivers.
    pub async fn stop(self) {
        self.launching.store(false, Ordering::Relaxed);
        for l in &self.launchers {
            l.abort();
        }
        for d in &self.drivers {
            d.stop(false);
        }
        for r in self.runs {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
    }
}

/// Launches what is due for one framework, every [`LAUNCH_TICK`].
struct Launcher {
    record: Arc<Mutex<Record>>,
    driver: SchedulerDriver,
    rate: f64,
    name: usize,
    rng: XorShift64Star,
    mean_ms: u64,
    launching: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
}

impl Launcher {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(LAUNCH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.launching.load(Ordering::Relaxed) {
                self.launch_due();
            }
        }
    }

    fn launch_due(&mut self) {
        let measured = self.measuring.load(Ordering::Relaxed);
        let record = self.record.clone();
        let mut r = lock(&record);
        let Some(since) = r.since else { return };
        let due = r.base + (self.rate * since.elapsed().as_secs_f64()) as u64;
        let backlog_cap = (self.rate * MAX_BACKLOG_SECONDS).ceil() as u64;
        let done = r.launched + r.skipped;
        if due > done + backlog_cap {
            r.skipped += due - done - backlog_cap;
        }
        let need = task_resources();
        while r.launched + r.skipped < due {
            let Some(held) = r.held.pop_front() else {
                break;
            };
            let mut left = held.offer.resources.clone();
            let mut tasks = Vec::new();
            while r.launched + r.skipped + (tasks.len() as u64) < due {
                let Some(rest) = left.checked_sub(&need) else {
                    break;
                };
                left = rest;
                tasks.push(self.task(&held.offer, r.launched + tasks.len() as u64));
            }
            let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let accepted = Instant::now();
            // Leftovers go straight back to the pool (no filter), as the pi scheduler's do.
            let sent = self.driver.launch_tasks(
                vec![held.offer.id.clone()],
                tasks,
                Filters {
                    refuse_seconds: 0.0,
                },
            );
            if sent.is_err() {
                r.launch_errors += ids.len() as u64;
                continue;
            }
            if ids.is_empty() {
                continue; // an offer too small for one task: declined by the empty launch
            }
            if measured {
                r.held_ms
                    .push(accepted.duration_since(held.received).as_secs_f64() * 1000.0);
            }
            r.launched += ids.len() as u64;
            for id in ids {
                r.live.insert(
                    id,
                    Live {
                        accepted,
                        measured,
                        running_seen: false,
                    },
                );
            }
        }
    }

    fn task(&mut self, offer: &Offer, n: u64) -> TaskInfo {
        let ms = self.rng.between(self.mean_ms / 2, self.mean_ms * 3 / 2);
        TaskInfo {
            task_id: format!("scale-{}-{n}", self.name).into(),
            name: "simulated".into(),
            agent_id: offer.agent_id.clone(),
            resources: task_resources(),
            command: Some(CommandInfo::shell("simulated")),
            executor: None,
            data: ms.to_le_bytes().to_vec(),
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        }
    }
}
