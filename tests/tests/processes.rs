//! Level 3: real `bramble-master` and `bramble-agent` processes on loopback, killed for real.

use bramble_proto::identity::Role;
use bramble_proto::{TaskReason, TaskState};
use bramble_tests::framework::{shell_task, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::time::{Duration, Instant};

const AGENT_TIMEOUT_SECS: f64 = 2.0;

fn master_args(cluster: &TestCluster, port: u16) -> Vec<String> {
    let config = cluster.path("master.toml");
    std::fs::write(
        &config,
        format!("heartbeat_interval_ms = 200\nagent_timeout_secs = {AGENT_TIMEOUT_SECS}\nallocation_interval_ms = 200\n"),
    )
    .expect("master config");
    vec![
        "--config".into(),
        config.display().to_string(),
        "--cluster".into(),
        cluster.cluster_dir().display().to_string(),
        "--listen".into(),
        addr(port).to_string(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--state-dir".into(),
        cluster.path("master-state").display().to_string(),
    ]
}

fn agent_args(cluster: &TestCluster, port: u16, name: &str) -> Vec<String> {
    let config = cluster.path(&format!("{name}.toml"));
    std::fs::write(
        &config,
        "heartbeat_interval_ms = 200\nkill_grace_secs = 1\n",
    )
    .expect("agent config");
    vec![
        "--config".into(),
        config.display().to_string(),
        "--cluster".into(),
        cluster.cluster_dir().display().to_string(),
        "--master".into(),
        addr(port).to_string(),
        "--work-dir".into(),
        cluster.path(name).display().to_string(),
        "--cpus".into(),
        "1".into(),
        "--mem".into(),
        "256".into(),
        "--no-cgroups".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_makes_its_tasks_lost_within_its_timeout() {
    init_logs();
    let cluster = TestCluster::new();
    let port = free_udp_port();
    let logs = cluster.path("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let master = Proc::spawn(
        "master",
        "bramble-master",
        &master_args(&cluster, port),
        &logs,
    );
    let mut agent = Proc::spawn(
        "agent",
        "bramble-agent",
        &agent_args(&cluster, port, "agent1"),
        &logs,
    );

    let first = eventually(
        "the agent process registers",
        Duration::from_secs(20),
        || async {
            let s = operator_state(&cluster, addr(port)).await.ok()?;
            s.agents.iter().find(|a| a.connected).map(|a| a.id.clone())
        },
    )
    .await;

    let mut fw =
        TestFramework::start(addr(port), cluster.credentials(Role::Framework), "victim").await;
    let offer = fw.until("an offer", |f| f.offers.first().cloned()).await;
    fw.offers.clear();
    fw.launch(
        &offer,
        vec![shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600")],
    );
    let running = fw.state("sleeper", TaskState::Running).await;
    let task_pid: i32 = running
        .message
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("RUNNING carries the pid: {:?}", running.message));
    assert!(alive(task_pid));

    agent.kill_hard();
    let killed_at = Instant::now();
    let lost = fw.terminal("sleeper").await;
    let took = killed_at.elapsed();
    assert_eq!(lost.state, TaskState::Lost, "{lost:?}");
    assert_eq!(lost.reason, Some(TaskReason::AgentRemoved), "{lost:?}");
    assert!(lost.message.contains("removed"), "{}", lost.message);
    // Removal comes from the heartbeat timeout (plus one 100 ms timer tick), not earlier.
    let timeout = Duration::from_secs_f64(AGENT_TIMEOUT_SECS);
    assert!(
        took <= timeout + Duration::from_millis(1500),
        "LOST took {took:?}"
    );
    fw.until("the framework hears agent_lost", |f| {
        f.other
            .iter()
            .any(|e| matches!(e, bramble_tests::framework::Event::AgentLost(a) if a == &first))
            .then_some(())
    })
    .await;
    eprintln!("agent SIGKILL → TASK_LOST in {took:?} (agent timeout {timeout:?})");

    // The task's process outlived its agent (it runs in its own session): clean it up.
    kill_group(task_pid);

    // The agent comes back under the same id and is offered again.
    let _agent = Proc::spawn(
        "agent-again",
        "bramble-agent",
        &agent_args(&cluster, port, "agent1"),
        &logs,
    );
    eventually(
        "the restarted agent re-registers under its old id",
        Duration::from_secs(20),
        || async {
            let s = operator_state(&cluster, addr(port)).await.ok()?;
            s.agents
                .iter()
                .any(|a| a.connected && a.id == first)
                .then_some(())
        },
    )
    .await;
    fw.until("an offer from the returning agent", |f| {
        f.offers.iter().find(|o| o.agent_id == first).map(|_| ())
    })
    .await;
    fw.stop(false).await;
    assert!(
        master.log_text().contains("removing agent"),
        "master log:\n{}",
        master.log_text()
    );
}
