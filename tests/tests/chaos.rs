//! The chaos test (issue 6): pi jobs on a real-process cluster — one master and three agents on
//! loopback — while random agents and the master are SIGKILLed and restarted.
//!
//! For every job it asserts that the estimate is bit-identical to the fault-free answer, that no
//! chunk was counted twice, and that every task reached a terminal state its framework
//! acknowledged (nothing left at the master, no unacknowledged update left in any agent's
//! checkpoint). Afterwards no executor process may be left running and no finished sandbox may
//! outlive the garbage-collection policy. The counts go out as one JSON line on stdout.
//!
//! The default is the short run CI does. `BRAMBLE_CHAOS=long` runs the long one (at least 20
//! agent kills and 3 master kills); `BRAMBLE_CHAOS_SEED=N` replays a run's choices;
//! `BRAMBLE_CHAOS_JSON=FILE` also writes the counts there. `tests/chaos/run.sh` wraps it.

use bramble_agent::status_updates::StatusUpdateManager;
use bramble_tests::processes::*;
use bramble_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Short enough that some agent outages end before it (recovery: executors reconnect, tasks
/// keep running) and some after (LOST, chunks relaunched elsewhere).
const AGENT_TIMEOUT_SECS: f64 = 2.0;
/// Finished sandboxes must be gone this long (plus a sweep) after their task ended.
const SANDBOX_MAX_AGE_SECS: u64 = 4;

struct Plan {
    name: &'static str,
    min_jobs: usize,
    min_agent_kills: usize,
    min_master_kills: usize,
    terms: u64,
    tasks: u64,
    deadline: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        match std::env::var("BRAMBLE_CHAOS").as_deref() {
            Ok("long") => Plan {
                name: "long",
                min_jobs: 4,
                min_agent_kills: 20,
                min_master_kills: 3,
                terms: 3_000_000_000,
                tasks: 48,
                deadline: Duration::from_secs(900),
            },
            _ => Plan {
                name: "short",
                min_jobs: 1,
                min_agent_kills: 3,
                min_master_kills: 1,
                terms: 1_500_000_000,
                tasks: 32,
                deadline: Duration::from_secs(240),
            },
        }
    }
}

/// A small deterministic generator so a seed replays a run's choices.
type Rng = bramble_proto::rng::XorShift64Star;

struct Cluster {
    net: LoopbackCluster,
    master: Option<Proc>,
    agents: Vec<Option<Proc>>,
    restarts: usize,
}

impl Cluster {
    fn start() -> Cluster {
        let mut c = Cluster {
            net: LoopbackCluster::new(),
            master: None,
            agents: (0..3).map(|_| None).collect(),
            restarts: 0,
        };
        c.start_master();
        for i in 0..3 {
            c.start_agent(i);
        }
        c
    }

    fn name(&mut self, base: &str) -> String {
        self.restarts += 1;
        format!("{base}-{}", self.restarts)
    }

    fn start_master(&mut self) {
        let cmd = MasterCmd::default()
            .agent_timeout_secs(AGENT_TIMEOUT_SECS)
            .allocation_interval_ms(100);
        let name = self.name("master");
        self.master = Some(self.net.start_master(&name, &cmd));
    }

    fn agent_cmd(i: usize) -> AgentCmd {
        AgentCmd::new(&format!("agent{i}"))
            .mem_mib(512)
            .config(&format!(
                "\n[gc]\nmax_age_secs = {SANDBOX_MAX_AGE_SECS}\ninterval_secs = 1\n"
            ))
    }

    fn agent_dir(&self, i: usize) -> PathBuf {
        self.net.work_dir(&Self::agent_cmd(i))
    }

    fn start_agent(&mut self, i: usize) {
        let name = self.name(&format!("agent{i}"));
        self.agents[i] = Some(self.net.start_agent(&name, &Self::agent_cmd(i)));
    }

    /// The master's state, or `None` while it is down (a dead UDP port never answers QUIC).
    async fn state(&self) -> Option<bramble_proto::messages::ClusterState> {
        tokio::time::timeout(
            Duration::from_millis(800),
            operator_state(&self.net.test, self.net.master_addr()),
        )
        .await
        .ok()?
        .ok()
    }

    /// Agent ids the master currently sees connected.
    async fn connected_agents(&self) -> Option<usize> {
        let s = self.state().await?;
        Some(s.agents.iter().filter(|a| a.connected).count())
    }

    fn pids(&self) -> Vec<i32> {
        self.master
            .iter()
            .chain(self.agents.iter().flatten())
            .map(|p| p.pid())
            .collect()
    }
}

#[derive(Default, serde::Serialize)]
struct Counts {
    run: &'static str,
    seed: u64,
    jobs: usize,
    agent_kills: usize,
    /// Outages that outlasted the agent timeout: those tasks went LOST and were relaunched.
    agent_kills_past_timeout: usize,
    master_kills: usize,
    relaunches: u64,
    duplicate_results_ignored: u64,
    agent_recovery_s: Vec<f64>,
    master_recovery_s: Vec<f64>,
    job_wall_s: Vec<f64>,
    wall_s: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The fault-free answer: the pi kernel over the same chunks, combined in chunk order — the
/// same bits any fault-free split of the job gives (tests/tests/pi.rs checks that).
fn fault_free_bits(terms: u64, tasks: u64) -> u64 {
    use bramble_frameworks::pi::kernel::{chunks, combine, leibniz_range};
    combine(
        chunks(terms, tasks)
            .into_iter()
            .map(|(b, e)| leibniz_range(b, e)),
    )
    .to_bits()
}

/// Updates in every agent's update log not yet acknowledged by their framework (as far as
/// the agents have written their acknowledgements out: they do after each burst).
fn pending_updates(cluster: &Cluster) -> usize {
    (0..3)
        .map(|i| {
            let dir = cluster.agent_dir(i).join("meta/updates");
            StatusUpdateManager::pending_on_disk(&dir).unwrap_or(0)
        })
        .sum()
}

/// Every sandbox (`frameworks/*/executors/*/runs/*`) still on any agent's disk.
fn sandboxes(cluster: &Cluster) -> Vec<PathBuf> {
    fn children(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
    let mut found = Vec::new();
    for i in 0..3 {
        for fw in children(&cluster.agent_dir(i).join("frameworks")) {
            for ex in children(&fw.join("executors")) {
                found.extend(children(&ex.join("runs")));
            }
        }
    }
    found
}

/// One job: `bramble pi` as its own process against the cluster.
fn start_job(cluster: &Cluster, plan: &Plan, job: usize) -> Proc {
    let args: Vec<String> = vec![
        "--master".into(),
        cluster.net.master_addr().to_string(),
        "--cluster".into(),
        cluster.net.test.cluster_dir().display().to_string(),
        "pi".into(),
        "--terms".into(),
        plan.terms.to_string(),
        "--tasks".into(),
        plan.tasks.to_string(),
        "--json".into(),
        "--journal".into(),
        cluster
            .net
            .test
            .path(&format!("job{job}.journal"))
            .display()
            .to_string(),
    ];
    Proc::spawn_capturing(&format!("job{job}"), "bramble", &args, &cluster.net.logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_jobs_survive_random_sigkills_of_agents_and_the_master() {
    init_logs();
    let plan = Plan::from_env();
    let seed = std::env::var("BRAMBLE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("chaos: {} run, seed {seed}", plan.name);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let expected = tokio::task::spawn_blocking({
        let (terms, tasks) = (plan.terms, plan.tasks);
        move || fault_free_bits(terms, tasks)
    });

    let mut cluster = Cluster::start();
    eventually("three agents register", Duration::from_secs(30), || async {
        (cluster.connected_agents().await? == 3).then_some(())
    })
    .await;
    let expected = expected.await.expect("reference computation");

    let mut counts = Counts {
        run: plan.name,
        seed,
        ..Counts::default()
    };
    let mut by_job: BTreeMap<usize, serde_json::Value> = BTreeMap::new();
    let mut job_no = 0;
    while counts.jobs < plan.min_jobs
        || counts.agent_kills < plan.min_agent_kills
        || counts.master_kills < plan.min_master_kills
    {
        assert!(
            started.elapsed() < plan.deadline,
            "chaos run over its {:?} deadline; counts so far: {}",
            plan.deadline,
            serde_json::to_string(&counts).unwrap_or_default()
        );
        job_no += 1;
        let job_started = Instant::now();
        let mut job = start_job(&cluster, &plan, job_no);
        // Chaos while the job runs: one fault at a time, each followed by its recovery.
        loop {
            tokio::time::sleep(Duration::from_millis(rng.between(300, 1500))).await; // think time between faults, not a wait
            if job.child.try_wait().ok().flatten().is_some() {
                break;
            }
            let want_master = counts.master_kills < plan.min_master_kills
                && (counts.agent_kills >= plan.min_agent_kills || rng.below(5) == 0);
            if want_master {
                master_fault(&mut cluster, &mut rng, &mut counts).await;
            } else if counts.agent_kills < plan.min_agent_kills || rng.below(3) == 0 {
                agent_fault(&mut cluster, &mut rng, &mut counts).await;
            }
        }
        let status = job.child.wait().expect("job exit status");
        let out = std::fs::read_to_string(job.stdout_path()).unwrap_or_default();
        assert!(
            status.success(),
            "job {job_no} failed ({status}); stdout: {out}\nstderr:\n{}",
            job.log_text()
        );
        let result: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("job {job_no} printed no JSON ({e}): {out:?}"));
        // Compare the exact bits the job printed: a float parsed back from JSON may be off by
        // an ulp.
        let bits = result["pi_bits"]
            .as_str()
            .and_then(|b| u64::from_str_radix(b, 16).ok())
            .unwrap_or_else(|| panic!("job {job_no}: no pi_bits in {result}"));
        assert_eq!(
            bits,
            expected,
            "job {job_no}: {:e} is not bit-identical to the fault-free {:e}",
            f64::from_bits(bits),
            f64::from_bits(expected)
        );
        let counted = result["chunks_counted"].as_u64().expect("chunks_counted");
        assert_eq!(
            counted, plan.tasks,
            "job {job_no}: {counted} chunks counted for {} chunks",
            plan.tasks
        );
        counts.relaunches += result["relaunches"].as_u64().unwrap_or(0);
        counts.duplicate_results_ignored += result["duplicate_results"].as_u64().unwrap_or(0);
        counts.job_wall_s.push(job_started.elapsed().as_secs_f64());
        counts.jobs += 1;
        by_job.insert(job_no, result);

        // Every task terminal and acknowledged: the master forgot the framework's tasks and no
        // agent holds an unacknowledged update.
        let cl = &cluster;
        eventually(
            "every task of the job terminal and acknowledged",
            Duration::from_secs(30),
            || async move {
                let s = cl.state().await?;
                let live = s.tasks.len();
                let pending = pending_updates(cl);
                (live == 0 && pending == 0).then_some(())
            },
        )
        .await;
    }

    // No executor left behind once the jobs are over.
    let root = cluster.net.test.path("");
    let ours = cluster.pids();
    eventually(
        "no executor or task process left running",
        Duration::from_secs(20),
        || {
            let left = processes_under(&root, &ours);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;
    // And no finished sandbox outlives the policy: once the jobs are over every sandbox is a
    // finished one, so all must go within the max age plus a few sweeps.
    let policy = Duration::from_secs(SANDBOX_MAX_AGE_SECS + 5);
    eventually(
        "every finished sandbox removed by the gc policy",
        policy,
        || {
            let left = sandboxes(&cluster);
            async move { left.is_empty().then_some(()) }
        },
    )
    .await;

    counts.wall_s = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "chaos": counts,
        "agent_recovery_median_s": median(&counts.agent_recovery_s),
        "master_recovery_median_s": median(&counts.master_recovery_s),
        "jobs_detail": by_job,
    });
    println!("{line}");
    if let Ok(path) = std::env::var("BRAMBLE_CHAOS_JSON") {
        std::fs::write(&path, format!("{line}\n")).expect("writing BRAMBLE_CHAOS_JSON");
    }
}

/// SIGKILLs a random agent, leaves it down for a random while (sometimes past its timeout),
/// restarts it on the same work dir and waits for it to re-register.
async fn agent_fault(cluster: &mut Cluster, rng: &mut Rng, counts: &mut Counts) {
    let i = rng.below(3) as usize;
    let Some(mut proc) = cluster.agents[i].take() else {
        return;
    };
    proc.kill_hard();
    counts.agent_kills += 1;
    let down = Duration::from_millis(rng.between(100, 3000));
    if down.as_secs_f64() > AGENT_TIMEOUT_SECS {
        counts.agent_kills_past_timeout += 1;
    }
    eprintln!("chaos: SIGKILL agent{i}, down for {down:?}");
    tokio::time::sleep(down).await; // the outage itself: nothing to wait on
    let restarted = Instant::now();
    cluster.start_agent(i);
    // The master may not have noticed the old process die yet, so "connected" alone proves
    // nothing: wait for the new process to say the master registered it.
    let cl = &*cluster;
    eventually(
        &format!("agent{i} re-registers after its restart"),
        Duration::from_secs(30),
        || async move {
            let new = cl.agents[i].as_ref()?;
            if !new.log_text().contains("registered with master") {
                return None;
            }
            (cl.connected_agents().await? == 3).then_some(())
        },
    )
    .await;
    counts
        .agent_recovery_s
        .push(restarted.elapsed().as_secs_f64());
}

/// SIGKILLs the master, restarts it on the same state dir and waits for all agents to be back.
async fn master_fault(cluster: &mut Cluster, rng: &mut Rng, counts: &mut Counts) {
    let Some(mut proc) = cluster.master.take() else {
        return;
    };
    proc.kill_hard();
    counts.master_kills += 1;
    let down = Duration::from_millis(rng.between(100, 1000));
    eprintln!("chaos: SIGKILL master, down for {down:?}");
    tokio::time::sleep(down).await; // the outage itself: nothing to wait on
    let restarted = Instant::now();
    cluster.start_master();
    let cl = &*cluster;
    eventually(
        "all agents re-register with the restarted master",
        Duration::from_secs(30),
        || async move { (cl.connected_agents().await? == 3).then_some(()) },
    )
    .await;
    counts
        .master_recovery_s
        .push(restarted.elapsed().as_secs_f64());
}
