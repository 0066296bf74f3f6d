//! Issue 18's headline failure test: a pi job on a replicated group of three real
//! `bramble-master` processes and real agents given every master, while the serving leader
//! is SIGKILLed again and again (each killed master restarted, so a majority always
//! survives). The job — `bramble pi --master a,b,c`, as an operator runs it — follows each
//! new leader (re-subscribing with failover, reconciling its chunks in flight) and must end
//! with the estimate bit-identical to the fault-free answer, every chunk counted once.
//!
//! Every kill's failover is timed and printed (`-- --nocapture`): SIGKILL → a surviving
//! master welcomes a hello, and SIGKILL → every agent registered again with the new leader
//! (see `bramble_tests::ha`). Agents take ports from 34100–34149 (no other test uses them).

use bramble_tests::ha::{median_max, Failover, HaCluster};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::time::{Duration, Instant};

/// At least this many leader kills while jobs run.
const KILLS: usize = 5;
/// The job: chunks small enough that several end between two kills (their results must
/// cross leader changes), the whole about 15 s of computing on a loaded 2-core machine in a
/// debug build (the kernel is optimised even there). When a job ends before the fifth kill,
/// another one (the same job, with the same answer) is run and the kills go on during it:
/// every kill falls on a running job whatever the machine's speed.
const TERMS: u64 = 1_500_000_000;
const TASKS: u64 = 40;
/// Bounds every wait for the cluster (leader elected, agents back, master caught up).
const WAIT: Duration = Duration::from_secs(30);
/// The whole run.
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// Failover bounds asserted. The target is 2 s; see the printed times and
/// notes/ha-chaos.md for what runs show. Kill → hello: the group's election takes 0.7–1.0 s
/// by design (lease + election timeout), then the new leader's read barrier, load and bind
/// (1.1–1.6 s seen here at load 13). Kill → agents back: an agent given every master tries
/// the survivors first — standbys with no leader yet during the election — and then the dead
/// leader, whose dial costs the agent's 3 s connect timeout before the next round finds the
/// new leader (2.0–4.3 s seen). The pi executors keep both cores busy and a CI run builds
/// beside us, so every step can wait for a CPU: the bounds leave that room, and a broken
/// failover (an election that does not converge, agents parked on a dead master or on a
/// grown backoff) takes longer than either and fails.
const HELLO_MEDIAN_MS: f64 = 4_000.0;
const HELLO_MAX_MS: f64 = 10_000.0;
const AGENTS_MEDIAN_MS: f64 = 8_000.0;
const AGENTS_MAX_MS: f64 = 15_000.0;

fn agent(i: usize) -> AgentCmd {
    AgentCmd::new(&format!("agent{i}"))
        .mem_mib(512)
        .port_block(34100, i)
}

/// The fault-free answer: the pi kernel over the same chunks, combined in chunk order —
/// exactly what a fault-free run of this job prints (`tests/tests/pi.rs` checks that runs
/// of any shape agree with each other).
fn fault_free_bits(terms: u64, tasks: u64) -> u64 {
    use bramble_frameworks::pi::kernel::{chunks, combine, leibniz_range};
    combine(
        chunks(terms, tasks)
            .into_iter()
            .map(|(b, e)| leibniz_range(b, e)),
    )
    .to_bits()
}

fn start_job(c: &HaCluster, job: usize) -> Proc {
    let args: Vec<String> = vec![
        "--master".into(),
        c.master_list(),
        "--cluster".into(),
        c.net.test.cluster_dir().display().to_string(),
        "pi".into(),
        "--terms".into(),
        TERMS.to_string(),
        "--tasks".into(),
        TASKS.to_string(),
        "--json".into(),
        "--journal".into(),
        c.net
            .test
            .path(&format!("job{job}.journal"))
            .display()
            .to_string(),
    ];
    Proc::spawn_capturing(&format!("job{job}"), "bramble", &args, &c.net.logs)
}

/// How many times the job's framework has subscribed so far (the SDK logs each).
fn subscriptions(job: &Proc) -> usize {
    let log = job.log_text();
    log.matches("framework registered").count() + log.matches("framework re-registered").count()
}

fn finished(job: &mut Proc) -> bool {
    job.child.try_wait().ok().flatten().is_some()
}

/// Checks a finished job's output against the fault-free answer.
fn check_job(job: &mut Proc, n: usize, expected: u64) -> serde_json::Value {
    let status = job.child.wait().expect("job exit status");
    let out = std::fs::read_to_string(job.stdout_path()).unwrap_or_default();
    assert!(
        status.success(),
        "job {n} failed ({status}); stdout: {out}\nstderr:\n{}",
        job.log_text()
    );
    let result: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("job {n} printed no JSON ({e}): {out:?}"));
    // The exact bits the job printed: a float read back from JSON may be an ulp off.
    let bits = result["pi_bits"]
        .as_str()
        .and_then(|b| u64::from_str_radix(b, 16).ok())
        .unwrap_or_else(|| panic!("job {n}: no pi_bits in {result}"));
    assert_eq!(
        bits,
        expected,
        "job {n}: {:e} is not bit-identical to the fault-free {:e}",
        f64::from_bits(bits),
        f64::from_bits(expected)
    );
    assert_eq!(
        result["chunks_counted"].as_u64(),
        Some(TASKS),
        "job {n}: every chunk counted exactly once: {result}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pi_job_survives_repeated_sigkills_of_the_leader_bit_identical() {
    init_logs();
    let started = Instant::now();
    let expected = tokio::task::spawn_blocking(|| fault_free_bits(TERMS, TASKS));
    let cmd = MasterCmd::default()
        .agent_timeout_secs(5.0)
        .allocation_interval_ms(100);
    let mut c = HaCluster::start(3, cmd, 2, agent, WAIT).await;

    let mut expected = Some(expected);
    let mut expected_bits = 0;
    let mut failovers: Vec<Failover> = Vec::new();
    let mut jobs = Vec::new();
    let mut leader = c.leader().await;
    while failovers.len() < KILLS {
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "over the {RUN_DEADLINE:?} deadline after {} kills and {} jobs",
            failovers.len(),
            jobs.len()
        );
        let n = jobs.len() + 1;
        let mut job = start_job(&c, n);
        eventually(
            "the job's framework subscribes with the leader",
            WAIT,
            || {
                let now = subscriptions(&job);
                let done = job.child.try_wait().ok().flatten().is_some();
                async move { (now > 0 || done).then_some(()) }
            },
        )
        .await;
        loop {
            // Chunks run for a while with this leader: every kill falls on a job with work
            // in flight and results on the way (think time between faults, not a wait).
            tokio::time::sleep(Duration::from_millis(500)).await;
            if finished(&mut job) || failovers.len() >= KILLS {
                break;
            }
            let before = subscriptions(&job);
            let f = c.kill_leader(leader).await;
            eprintln!(
                "ha_pi: {:.1} s: kill {}: master {} → {} serving; hello after {:.0} ms, agents back after {:.0} ms",
                started.elapsed().as_secs_f64(),
                failovers.len() + 1,
                f.killed,
                f.new_leader,
                f.hello_ms,
                f.agents_ms
            );
            leader = f.new_leader;
            failovers.push(f);
            // The framework follows the new leader by itself (unless the job just ended).
            eventually(
                "the job's framework re-subscribes with the new leader",
                WAIT,
                || {
                    let now = subscriptions(&job);
                    let done = job.child.try_wait().ok().flatten().is_some();
                    async move { (now > before || done).then_some(()) }
                },
            )
            .await;
        }
        eventually("the job finishes", WAIT * 4, || {
            let done = finished(&mut job);
            async move { done.then_some(()) }
        })
        .await;
        if let Some(e) = expected.take() {
            expected_bits = e.await.expect("the fault-free answer");
        }
        let result = check_job(&mut job, n, expected_bits);
        eprintln!(
            "ha_pi: {:.1} s: job {n}: {result}",
            started.elapsed().as_secs_f64()
        );
        jobs.push(result);
    }

    let hello: Vec<f64> = failovers.iter().map(|f| f.hello_ms).collect();
    let agents: Vec<f64> = failovers.iter().map(|f| f.agents_ms).collect();
    let (hello_med, hello_max) = median_max(&hello);
    let (agents_med, agents_max) = median_max(&agents);
    eprintln!(
        "ha_pi: {} leader kills over {} job(s) in {:.0} s: SIGKILL → hello welcomed {hello:.0?} ms \
         (median {hello_med:.0}, max {hello_max:.0}); SIGKILL → every agent registered with the new \
         leader {agents:.0?} ms (median {agents_med:.0}, max {agents_max:.0}); loadavg {}",
        failovers.len(),
        jobs.len(),
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (what, median, max, median_bound, max_bound) in [
        (
            "hello welcomed",
            hello_med,
            hello_max,
            HELLO_MEDIAN_MS,
            HELLO_MAX_MS,
        ),
        (
            "agents registered",
            agents_med,
            agents_max,
            AGENTS_MEDIAN_MS,
            AGENTS_MAX_MS,
        ),
    ] {
        assert!(
            median <= median_bound && max <= max_bound,
            "SIGKILL → {what}: median {median:.0} ms, max {max:.0} ms (bounds {median_bound} / {max_bound} ms)"
        );
    }

    // Nothing of the jobs left running once they are over.
    let root = c.net.test.path("");
    let ours = c.pids();
    eventually("no executor or task process left running", WAIT, || {
        let left = processes_under(&root, &ours);
        async move { left.is_empty().then_some(()) }
    })
    .await;
}
