//! Durability while agents are SIGKILLed during a run of thousands of tiny tasks (issue 15).
//! A master and two agents run as real processes on loopback; a framework in this process
//! launches no-op tasks on the long-lived `bramble executor pi` (an empty chunk, as `bramble
//! bench tasks --path executor` does) as fast as offers allow. Meanwhile agents are SIGKILLed
//! at seeded random points and restarted on the same work dir.
//!
//! The framework records every update it receives, per task, by state and uuid. Checked:
//!
//! - **Exactly one end per task.** Every launched task gets one terminal update (one uuid, one
//!   state). The same uuid delivered again is at-least-once delivery: counted, allowed. Two
//!   terminal uuids, two terminal states, a non-terminal update after the terminal one, or no
//!   terminal update at all fail.
//! - **The honest outcome.** The executor rides out its agent (it keeps running, keeps its
//!   unacknowledged updates and resends them to the restarted agent), and the agent
//!   checkpoints a task before handing it over, so a task the agent accepted FINISHES. Two
//!   other outcomes are explained, and bounded by what an agent holds at once (`CAPACITY`
//!   tasks) per agent kill:
//!   * LOST, reason AgentRestarted, made by the master: the agent died before its group
//!     commit recorded the task (or the master's RunTask went into the dead connection), so
//!     the restarted agent re-registers without it; or made by the agent: it recorded the
//!     task but died before the LaunchTask left, and the executor's re-registration
//!     (`Reregister`, listing the tasks it knows) did not list it. Such a task never ran: it
//!     must not have been seen RUNNING, and its agent must be one that was killed.
//!   * ERROR, reason InvalidOffer: the framework accepted an offer the master had just
//!     rescinded because the killed agent went away or re-registered. It never ran either.
//!
//!   Anything else fails: FAILED with ExecutorTerminated, for instance, would mean an executor
//!   died with its agent or was killed by the restarted one.
//! - **Everything acknowledged.** At the end the master holds no task of the framework, and
//!   no agent holds an unacknowledged update: polled on disk while the agents run, then read
//!   with the agent's own store code after a last SIGKILL.
//!
//! Kill points are counted in tasks ended as the framework sees them, not in time, so a seed
//! replays the same schedule (the interleaving underneath still varies with the machine).
//! Default size, for CI's debug build: 2,000 tasks, 3 kills. Environment:
//! `BRAMBLE_CRASH_TASKS` (10000 is the full form, `tests/chaos/tasks_crash.sh`),
//! `BRAMBLE_CRASH_KILLS`, `BRAMBLE_CRASH_SEED` (printed at the start; replays a run's
//! choices), `BRAMBLE_CRASH_JSON` (the summary line is also written there),
//! `BRAMBLE_CRASH_LOG` (the agents' and executors' `RUST_LOG`, e.g. `debug`, to follow every
//! task; a failure keeps the logs and says where).
//!
//! Two durability bugs it found, both leaving tasks that never ended in the framework's view,
//! are fixed: a run checkpoint that ran ahead of the update store (task states were written to
//! the run file from memory before the burst's updates; run task lists now live in the update
//! log and a task's state follows its recorded updates), and a launch committed but never
//! delivered (a reconnecting executor now lists the tasks it knows,
//! `ExecutorToAgent::Reregister`; the agent reports the ones it never got LOST with reason
//! AgentRestarted, as Mesos does).

use bramble_agent::paths::WorkDir;
use bramble_agent::status_updates::StatusUpdateManager;
use bramble_frameworks::pi::PiChunk;
use bramble_proto::identity::Role;
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskReason, TaskState, TaskStatus};
use bramble_sdk::{
    async_trait, framework_info, Filters, Offer, Scheduler, SchedulerConfig, SchedulerDriver,
};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const AGENTS: usize = 2;
/// Each agent offers one cpu; a task takes 0.01 (the bench's tiny task).
const TASK_CPUS: f64 = 0.01;
const TASK_MEM_MIB: u64 = 1;
/// The most tasks one agent holds at once (its cpu over a task's).
const CAPACITY: u64 = 100;
/// Long enough that no restart here outlasts it: the master never removes an agent, so no
/// task becomes LOST for that reason (the chaos test covers removal).
const AGENT_TIMEOUT_SECS: f64 = 60.0;
/// An agent restart, from exec to "registered with master".
const RESTART_WAIT: Duration = Duration::from_secs(30);
/// The most a killed agent stays down waiting for the other agent's progress (see `Kill`).
const MAX_DOWN: Duration = Duration::from_secs(2);

type Rng = bramble_proto::rng::XorShift64Star;

/// One fault: when, which agents, and for how long.
#[derive(Debug, Clone, serde::Serialize)]
struct Kill {
    /// After this many tasks have ended in the framework's view.
    at: u64,
    /// The agents SIGKILLed together.
    agents: Vec<usize>,
    /// Restarted once this many more tasks have ended (on the other agent), or after
    /// `MAX_DOWN` if they do not: the dead agent's executor meanwhile keeps finishing what it
    /// was given and queues the updates for the next agent.
    down_for: u64,
}

struct Plan {
    tasks: u64,
    seed: u64,
    kills: Vec<Kill>,
}

impl Plan {
    fn from_env() -> Plan {
        let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
        let tasks = var("BRAMBLE_CRASH_TASKS").unwrap_or(2_000).max(10);
        let kills = var("BRAMBLE_CRASH_KILLS").unwrap_or(3);
        let seed = var("BRAMBLE_CRASH_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
        let mut rng = Rng::new(seed.max(1)); // xorshift stays at 0 from 0
                                             // One kill somewhere in each of `kills` equal stretches of the run, after the first
                                             // half-stretch (the executors are up and the pipeline full by then).
        let stretch = (tasks / (kills + 1)).max(1);
        let kills = (0..kills)
            .map(|i| {
                let agents = match rng.below(4) {
                    0 => (0..AGENTS).collect(),
                    _ => vec![rng.below(AGENTS as u64) as usize],
                };
                let down_for = if agents.len() == AGENTS {
                    0 // nothing else runs: restart at once
                } else {
                    rng.below(2 * CAPACITY)
                };
                Kill {
                    at: (stretch / 2 + i * stretch + rng.below(stretch)).min(tasks - 1),
                    agents,
                    down_for,
                }
            })
            .collect();
        Plan { tasks, seed, kills }
    }

    /// How long the whole run may take before it is declared stuck.
    fn deadline(&self) -> Duration {
        Duration::from_secs(60) + Duration::from_millis(20 * self.tasks)
    }
}

/// One update as the framework received it.
#[derive(Debug, Clone)]
struct Seen {
    state: TaskState,
    uuid: Option<uuid::Uuid>,
    reason: Option<TaskReason>,
    source: UpdateSource,
    message: String,
}

impl From<&TaskStatus> for Seen {
    fn from(s: &TaskStatus) -> Self {
        Seen {
            state: s.state,
            uuid: s.uuid,
            reason: s.reason,
            source: s.source,
            message: s.message.clone(),
        }
    }
}

/// A launched task and every update the framework received for it, in order.
struct TaskLog {
    agent: AgentId,
    seen: Vec<Seen>,
}

/// The framework's view, shared between its scheduler and the test.
#[derive(Default)]
struct Ledger {
    tasks: HashMap<TaskId, TaskLog>,
    /// Updates for tasks this framework never launched.
    strangers: Vec<TaskStatus>,
    /// Tasks with at least one terminal update.
    ended: u64,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bench's tiny-task scheduler (`cli/src/bench.rs`), recording what it hears.
struct Tiny {
    executor: ExecutorInfo,
    total: u64,
    launched: u64,
    ledger: Arc<Mutex<Ledger>>,
    /// Tasks ended so far, for the test to wait on.
    ended: watch::Sender<u64>,
}

#[async_trait]
impl Scheduler for Tiny {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let need = Resources::new(TASK_CPUS, TASK_MEM_MIB);
        for offer in offers {
            let mut left = offer.resources.clone();
            if !offer.executor_ids.contains(&self.executor.executor_id) {
                left = left
                    .checked_sub(&self.executor.resources)
                    .unwrap_or_default();
            }
            let mut tasks = Vec::new();
            while self.launched < self.total {
                let Some(rest) = left.checked_sub(&need) else {
                    break;
                };
                left = rest;
                let id = TaskId(format!("tiny-{}", self.launched));
                self.launched += 1;
                tasks.push(TaskInfo {
                    task_id: id,
                    name: "tiny".into(),
                    agent_id: offer.agent_id.clone(),
                    resources: need.clone(),
                    command: None,
                    executor: Some(self.executor.clone()),
                    data: PiChunk {
                        index: 0,
                        begin: 0,
                        end: 0,
                    }
                    .to_bytes(),
                    mesos: None,
                    image: None,
                    artifacts: Vec::new(),
                });
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
            {
                // In the ledger before the launch, so no update can come first.
                let mut ledger = lock(&self.ledger);
                for t in &tasks {
                    ledger.tasks.insert(
                        t.task_id.clone(),
                        TaskLog {
                            agent: t.agent_id.clone(),
                            seen: Vec::new(),
                        },
                    );
                }
            }
            let filters = Filters {
                refuse_seconds: 0.0,
            };
            let _ = driver.launch_tasks(vec![offer.id], tasks, filters);
        }
    }

    async fn status_update(&mut self, _driver: &SchedulerDriver, status: &TaskStatus) {
        let mut ledger = lock(&self.ledger);
        let Some(task) = ledger.tasks.get_mut(&status.task_id) else {
            ledger.strangers.push(status.clone());
            return;
        };
        let first_end =
            status.state.is_terminal() && !task.seen.iter().any(|s| s.state.is_terminal());
        task.seen.push(Seen::from(status));
        if first_end {
            ledger.ended += 1;
            self.ended.send_replace(ledger.ended);
        }
    }
}

/// The processes: a master and `AGENTS` agents, each restartable on its work dir.
struct Cluster {
    net: LoopbackCluster,
    /// Kept alive for the run; killed when dropped.
    _master: Proc,
    agents: Vec<Option<Proc>>,
    starts: usize,
}

impl Cluster {
    fn agent_cmd(i: usize) -> AgentCmd {
        let cmd = AgentCmd::new(&format!("agent{i}"));
        let cmd = match std::env::var("BRAMBLE_CRASH_LOG") {
            Ok(filter) => cmd.env("RUST_LOG", filter),
            Err(_) => cmd,
        };
        cmd.cpus("1")
            .mem_mib(512)
            // Executors outlast any outage here, and stay while the run has gaps.
            .config(
                "executor_idle_timeout_secs = 60\n\
                 [recovery]\nexecutor_reconnect_timeout_secs = 60\n",
            )
    }

    fn start() -> Cluster {
        let net = LoopbackCluster::new();
        let master = net.start_master(
            "master",
            &MasterCmd::default()
                .agent_timeout_secs(AGENT_TIMEOUT_SECS)
                .allocation_interval_ms(50),
        );
        let mut cluster = Cluster {
            net,
            _master: master,
            agents: (0..AGENTS).map(|_| None).collect(),
            starts: 0,
        };
        for i in 0..AGENTS {
            cluster.start_agent(i);
        }
        cluster
    }

    fn start_agent(&mut self, i: usize) -> &Proc {
        self.starts += 1;
        let name = format!("agent{i}-{}", self.starts);
        self.agents[i].insert(self.net.start_agent(&name, &Self::agent_cmd(i)))
    }

    fn work_dir(&self, i: usize) -> PathBuf {
        self.net.work_dir(&Self::agent_cmd(i))
    }

    /// The id the master gave agent `i` (in its work dir once registered).
    fn agent_id(&self, i: usize) -> Option<AgentId> {
        let file = WorkDir::new(self.work_dir(i)).agent_id_file();
        let id = std::fs::read_to_string(file).ok()?;
        Some(AgentId(id.trim().to_string()))
    }

    async fn registered(&self, i: usize) {
        if let Some(agent) = &self.agents[i] {
            agent.logged("registered with master", RESTART_WAIT).await;
        }
    }
}

/// Kills whatever still runs in the test's directory (executors ride out their agents on
/// purpose), also when the test fails half-way.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, _) in processes_under(&self.0, &[]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Waits until the framework has seen `n` tasks end, or until `until`; returns whether it did.
async fn ended_at_least(ended: &mut watch::Receiver<u64>, n: u64, until: Instant) -> bool {
    let wait = until.saturating_duration_since(Instant::now());
    matches!(
        tokio::time::timeout(wait, ended.wait_for(|&e| e >= n)).await,
        Ok(Ok(_))
    )
}

/// The tasks without a terminal update yet, with the last thing heard of each, for failures.
fn unfinished(ledger: &Ledger) -> String {
    let mut by_last: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, t) in &ledger.tasks {
        if t.seen.iter().any(|s| s.state.is_terminal()) {
            continue;
        }
        let last = t
            .seen
            .last()
            .map_or("nothing".to_string(), |s| s.state.to_string());
        by_last
            .entry(format!("{last} on {}", t.agent))
            .or_default()
            .push(id.as_str());
    }
    by_last
        .into_iter()
        .map(|(k, mut ids)| {
            ids.sort();
            let n = ids.len();
            ids.truncate(10);
            format!("{n} tasks last heard {k}: {ids:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the framework's view says, and every way it breaks the rules in the module header.
#[derive(Debug, Default, serde::Serialize)]
struct Verdict {
    finished: u64,
    lost_agent_restarted: u64,
    error_invalid_offer: u64,
    /// Deliveries of a uuid already delivered (at-least-once at work).
    duplicate_deliveries: u64,
    #[serde(skip)]
    violations: Vec<String>,
}

fn judge(ledger: &Ledger, launched: u64, killed: &BTreeSet<AgentId>, agent_kills: u64) -> Verdict {
    let mut v = Verdict::default();
    if ledger.tasks.len() as u64 != launched {
        v.violations.push(format!(
            "{} tasks in the ledger, {launched} launched",
            ledger.tasks.len()
        ));
    }
    for s in &ledger.strangers {
        v.violations.push(format!(
            "update for a task never launched: {} {} {:?}",
            s.task_id, s.state, s.uuid
        ));
    }
    let mut ids: Vec<&TaskId> = ledger.tasks.keys().collect();
    ids.sort();
    for id in ids {
        let t = &ledger.tasks[id];
        let mut uuids = BTreeSet::new();
        for s in &t.seen {
            if let Some(u) = s.uuid {
                if !uuids.insert(u) {
                    v.duplicate_deliveries += 1;
                }
            }
        }
        let history = || {
            t.seen
                .iter()
                .map(|s| {
                    format!(
                        "{} {:?} {:?} {:?} {:?}",
                        s.state, s.uuid, s.reason, s.source, s.message
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let Some(first_end) = t.seen.iter().position(|s| s.state.is_terminal()) else {
            v.violations.push(format!(
                "{id} on {}: no terminal update: {}",
                t.agent,
                history()
            ));
            continue;
        };
        let end = &t.seen[first_end];
        let ends: BTreeSet<(String, Option<uuid::Uuid>)> = t
            .seen
            .iter()
            .filter(|s| s.state.is_terminal())
            .map(|s| (s.state.to_string(), s.uuid))
            .collect();
        if ends.len() > 1 {
            v.violations.push(format!(
                "{id} on {}: ended more than once: {}",
                t.agent,
                history()
            ));
        }
        if t.seen[first_end..].iter().any(|s| !s.state.is_terminal()) {
            v.violations.push(format!(
                "{id} on {}: non-terminal update after its end: {}",
                t.agent,
                history()
            ));
        }
        let ran = t.seen[..first_end]
            .iter()
            .any(|s| s.state == TaskState::Running);
        match (end.state, end.reason, end.source) {
            (TaskState::Finished, _, UpdateSource::Executor) => v.finished += 1,
            // The master's: the task was not checkpointed before the kill. The agent's: it
            // was, but its LaunchTask died with the agent (the executor did not list it when
            // it re-registered).
            (
                TaskState::Lost,
                Some(TaskReason::AgentRestarted),
                UpdateSource::Master | UpdateSource::Agent,
            ) if !ran && killed.contains(&t.agent) => v.lost_agent_restarted += 1,
            (TaskState::Error, Some(TaskReason::InvalidOffer), UpdateSource::Master) if !ran => {
                v.error_invalid_offer += 1
            }
            _ => v.violations.push(format!(
                "{id} on {}: unexplained end (killed agents {killed:?}): {}",
                t.agent,
                history()
            )),
        }
    }
    let bound = agent_kills * CAPACITY;
    if v.lost_agent_restarted > bound {
        v.violations.push(format!(
            "{} tasks LOST on agent restarts, more than {agent_kills} agent kills × {CAPACITY} tasks an agent holds",
            v.lost_agent_restarted
        ));
    }
    if v.error_invalid_offer > bound {
        v.violations.push(format!(
            "{} launches on rescinded offers, more than {agent_kills} agent kills × {CAPACITY}",
            v.error_invalid_offer
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_ends_exactly_once_while_agents_are_sigkilled() {
    init_logs();
    let plan = Plan::from_env();
    eprintln!(
        "tasks_crash: {} tasks, seed {} (BRAMBLE_CRASH_SEED replays it), kills {:?}",
        plan.tasks, plan.seed, plan.kills
    );
    // Build the binaries (once per test binary) before the clock starts.
    let bramble = bin_dir().join("bramble");
    let started = Instant::now();
    let until = started + plan.deadline();

    let mut cluster = Cluster::start();
    let _reaper = Reaper(cluster.net.test.path(""));
    for i in 0..AGENTS {
        cluster.registered(i).await;
    }

    // The framework: the bench's tiny tasks on `bramble executor pi`.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (ended_tx, mut ended) = watch::channel(0u64);
    let mut command = CommandInfo::program(
        bramble.display().to_string(),
        vec!["executor".into(), "pi".into()],
    );
    if let Ok(filter) = std::env::var("BRAMBLE_CRASH_LOG") {
        command.environment.insert("RUST_LOG".into(), filter);
    }
    let executor = ExecutorInfo {
        executor_id: "crash-executor".into(),
        name: "tiny".into(),
        command,
        resources: Resources::new(0.0, 32),
    };
    let scheduler = Tiny {
        executor,
        total: plan.tasks,
        launched: 0,
        ledger: ledger.clone(),
        ended: ended_tx,
    };
    let config = SchedulerConfig::new(
        cluster.net.master_addr(),
        cluster.net.test.credentials(Role::Framework),
        framework_info("tasks-crash"),
    );
    let driver = SchedulerDriver::new(config);
    let run = tokio::spawn({
        let driver = driver.clone();
        async move { driver.run(scheduler).await.map(|_| ()) }
    });

    // The faults, each at its point in the run.
    let mut killed: BTreeSet<AgentId> = BTreeSet::new();
    let mut agent_kills = 0u64;
    let mut recoveries_s = Vec::new();
    for kill in &plan.kills {
        assert!(
            ended_at_least(&mut ended, kill.at, until).await,
            "seed {}: the run stalled before kill point {} ({} tasks ended): {}; {}",
            plan.seed,
            kill.at,
            *ended.borrow(),
            unfinished(&lock(&ledger)),
            keep_logs(&cluster, plan.seed)
        );
        for &i in &kill.agents {
            if let Some(mut agent) = cluster.agents[i].take() {
                agent.kill_hard();
            }
            killed.extend(cluster.agent_id(i));
            agent_kills += 1;
        }
        let now_ended = *ended.borrow();
        eprintln!(
            "tasks_crash: SIGKILL agents {:?} after {now_ended} tasks ended",
            kill.agents
        );
        let back_by = (Instant::now() + MAX_DOWN).min(until);
        ended_at_least(&mut ended, now_ended + kill.down_for, back_by).await;
        let restarted = Instant::now();
        for &i in &kill.agents {
            cluster.start_agent(i);
        }
        for &i in &kill.agents {
            cluster.registered(i).await;
        }
        recoveries_s.push(restarted.elapsed().as_secs_f64());
    }
    assert!(
        ended_at_least(&mut ended, plan.tasks, until).await,
        "seed {}: only {} of {} tasks ended within {:?}: {}; {}",
        plan.seed,
        *ended.borrow(),
        plan.tasks,
        plan.deadline(),
        unfinished(&lock(&ledger)),
        keep_logs(&cluster, plan.seed)
    );
    let wall = started.elapsed();

    // Every update acknowledged: the master forgot every task of the framework (it does once
    // the terminal update is acknowledged), and the agents hold no update.
    let framework_id: FrameworkId = driver.framework_id().expect("the framework registered");
    let net = &cluster.net;
    let fw = &framework_id;
    eventually(
        "the master forgets every task (all terminal updates acknowledged)",
        Duration::from_secs(30),
        || async move {
            let s = net.state().await?;
            s.tasks.iter().all(|t| &t.framework_id != fw).then_some(())
        },
    )
    .await;
    let dirs: Vec<PathBuf> = (0..AGENTS).map(|i| cluster.work_dir(i)).collect();
    eventually(
        "no agent holds an unacknowledged update",
        Duration::from_secs(30),
        || {
            let left: usize = dirs.iter().map(|d| pending_updates(d)).sum();
            async move { (left == 0).then_some(()) }
        },
    )
    .await;
    // And the agents' own store code agrees, reading what a SIGKILL leaves on disk.
    for (i, dir) in dirs.iter().enumerate() {
        if let Some(mut agent) = cluster.agents[i].take() {
            agent.kill_hard();
        }
        let store = StatusUpdateManager::open(&WorkDir::new(dir).updates_dir())
            .expect("reading the agent's update store");
        assert_eq!(
            store.pending(),
            0,
            "agent{i}: {:?}",
            store.latest().collect::<Vec<_>>()
        );
    }
    driver.stop(false);
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;

    let launched = plan.tasks;
    let verdict = judge(&lock(&ledger), launched, &killed, agent_kills);
    let summary = serde_json::json!({
        "tasks_crash": {
            "seed": plan.seed,
            "tasks": plan.tasks,
            "kills": plan.kills,
            "agent_kills": agent_kills,
            "verdict": verdict,
            "violations": verdict.violations.len(),
            "recovery_s": recoveries_s,
            "wall_s": wall.as_secs_f64(),
            "tasks_per_s": plan.tasks as f64 / wall.as_secs_f64(),
        }
    });
    println!("{summary}");
    if let Ok(path) = std::env::var("BRAMBLE_CRASH_JSON") {
        std::fs::write(&path, format!("{summary}\n")).expect("writing BRAMBLE_CRASH_JSON");
    }
    assert!(
        verdict.violations.is_empty(),
        "seed {}: {} violations (first 20):\n{}\nlogs: {}",
        plan.seed,
        verdict.violations.len(),
        verdict.violations[..verdict.violations.len().min(20)].join("\n"),
        keep_logs(&cluster, plan.seed)
    );
}

/// Copies what explains a failure out of the test's temp dir (removed when the test ends) to
/// `$TMPDIR/bramble-tasks-crash-<seed>`: the processes' logs, each agent's `meta/`
/// (checkpoints, update store) and its executors' stderr.
fn keep_logs(cluster: &Cluster, seed: u64) -> String {
    let kept = std::env::temp_dir().join(format!("bramble-tasks-crash-{seed}"));
    copy_tree(&cluster.net.logs, &kept, &|_| true);
    for i in 0..AGENTS {
        let dir = cluster.work_dir(i);
        let to = kept.join(format!("agent{i}"));
        copy_tree(&dir.join("meta"), &to.join("meta"), &|_| true);
        copy_tree(&dir.join("frameworks"), &to.join("frameworks"), &|name| {
            name == "stderr"
        });
    }
    format!("logs and agent state kept in {}", kept.display())
}

/// Copies the files under `from` whose names `keep` accepts to the same places under `to`.
fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) {
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), keep);
        } else if keep(&name.to_string_lossy()) {
            let _ = std::fs::create_dir_all(to);
            let _ = std::fs::copy(&path, to.join(&name));
        }
    }
}
