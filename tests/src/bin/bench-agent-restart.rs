//! Benchmark: how long a SIGKILLed agent takes, from the start of its new process, until every
//! custom executor it left running has reconnected to it. Prints one JSON object on stdout.
//!
//! A real master and `bramble-agent` on loopback; a framework runs one task on each of
//! [`EXECUTORS`] test executors. Then [`RUNS`] times: SIGKILL the agent, note the wall clock,
//! start a new agent process on the same work dir, and read the time of its "recovery
//! complete" log line (written when the last re-adopted executor has registered again).
//! Each run also checks that the executors are the same processes as before. Run it with
//! `bench/agent_restart.sh`.

use bramble_proto::identity::Role;
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo};
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::TestFramework;
use bramble_tests::processes::{addr, alive, bin_dir, free_udp_port, kill_group, Proc};
use bramble_tests::{eventually, operator_state, TestCluster};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RUNS: usize = 10;
const EXECUTORS: usize = 4;
const TARGET_MS: f64 = 2000.0;
const DEADLINE: Duration = Duration::from_secs(30);
const DONE_LINE: &str = "recovery complete";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(RUNS);
    let cluster = TestCluster::new();
    let port = free_udp_port();
    let logs = cluster.path("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let master_cfg = cluster.path("master.toml");
    std::fs::write(
        &master_cfg,
        "heartbeat_interval_ms = 200\nagent_timeout_secs = 60\nallocation_interval_ms = 200\n",
    )
    .expect("master config");
    let s = |p: &std::path::Path| p.display().to_string();
    let _master = Proc::spawn(
        "master",
        "bramble-master",
        &[
            "--config".into(),
            s(&master_cfg),
            "--cluster".into(),
            s(&cluster.cluster_dir()),
            "--listen".into(),
            addr(port).to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--state-dir".into(),
            s(&cluster.path("master-state")),
        ],
        &logs,
    );
    let agent_cfg = cluster.path("agent.toml");
    std::fs::write(
        &agent_cfg,
        "heartbeat_interval_ms = 200\nexecutor_idle_timeout_secs = 600\n",
    )
    .expect("agent config");
    let agent_args: Vec<String> = vec![
        "--config".into(),
        s(&agent_cfg),
        "--cluster".into(),
        s(&cluster.cluster_dir()),
        "--master".into(),
        addr(port).to_string(),
        "--work-dir".into(),
        s(&cluster.path("agent")),
        "--cpus".into(),
        "4".into(),
        "--mem".into(),
        "1024".into(),
        "--disk".into(),
        "1000".into(),
        "--no-cgroups".into(),
    ];
    let mut agent = Proc::spawn("agent-0", "bramble-agent", &agent_args, &logs);
    eventually("the agent registers", DEADLINE, || async {
        let st = operator_state(&cluster, addr(port)).await.ok()?;
        st.agents.iter().any(|a| a.connected).then_some(())
    })
    .await;

    let mut fw = TestFramework::start(
        addr(port),
        cluster.credentials(Role::Framework),
        "restart-bench",
    )
    .await;
    let offer = fw.until("an offer", |f| f.offers.first().cloned()).await;
    let executor = bin_dir().join("test-executor");
    let tasks: Vec<TaskInfo> = (0..EXECUTORS)
        .map(|i| TaskInfo {
            task_id: format!("t{i}").into(),
            name: format!("t{i}"),
            agent_id: offer.agent_id.clone(),
            resources: Resources::new(0.1, 16),
            command: None,
            executor: Some(ExecutorInfo {
                executor_id: format!("exec-{i}").into(),
                name: format!("executor {i}"),
                command: CommandInfo::program(executor.display().to_string(), vec![]),
                resources: Resources::new(0.1, 16),
            }),
            data: b"sleep".to_vec(),
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        })
        .collect();
    fw.launch(&offer, tasks);
    let mut pids = Vec::new();
    for i in 0..EXECUTORS {
        let running = fw.state(&format!("t{i}"), TaskState::Running).await;
        let pid: i32 = running
            .message
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .expect("RUNNING carries the executor's pid");
        pids.push(pid);
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), EXECUTORS, "one process per executor");

    let mut samples_ms = Vec::new();
    for run in 1..=runs {
        agent.kill_hard();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        agent = Proc::spawn(&format!("agent-{run}"), "bramble-agent", &agent_args, &logs);
        let done_at = eventually("every executor reconnects", DEADLINE, || {
            let line = agent
                .log_text()
                .lines()
                .find(|l| l.contains(DONE_LINE))
                .map(str::to_string);
            async move { line.and_then(|l| log_time(&l)) }
        })
        .await;
        let log = agent.log_text();
        let reconnected = log.matches("recovered executor reconnected").count();
        assert_eq!(reconnected, EXECUTORS, "run {run}: {log}");
        for &pid in &pids {
            assert!(alive(pid), "run {run}: executor {pid} did not survive");
        }
        samples_ms.push((done_at - started) * 1000.0);
    }
    fw.stop(false).await;
    drop(agent);
    for pid in pids {
        kill_group(pid);
    }

    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    let round = |v: f64| (v * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "agent_restart",
            "what": "SIGKILLed agent: new process start -> every surviving executor reconnected (agent log timestamp)",
            "executors": EXECUTORS,
            "runs": runs,
            "median_ms": round(median),
            "min_ms": round(sorted[0]),
            "max_ms": round(max),
            "samples_ms": samples_ms.iter().map(|v| round(*v)).collect::<Vec<_>>(),
            "target_ms": TARGET_MS,
            "meets_target": median < TARGET_MS && max < TARGET_MS,
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        })
    );
}

/// Seconds since the epoch of a tracing log line starting `2026-11-20T10:11:12.345678Z`.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    Some(days_from_civil(y, m, day) as f64 * 86400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}
