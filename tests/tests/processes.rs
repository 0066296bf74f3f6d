//! Level 3: real `bramble-master` and `bramble-agent` processes on loopback, killed for real.

use bramble_proto::{TaskReason, TaskState};
use bramble_tests::framework::{pid_of, shell_task};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::time::{Duration, Instant};

const AGENT_TIMEOUT_SECS: f64 = 2.0;

/// One agent offering 1 cpu and 256 MiB.
fn agent1() -> AgentCmd {
    AgentCmd::new("agent1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_makes_its_tasks_lost_within_its_timeout() {
    let net = LoopbackCluster::new();
    let master = net.start_master(
        "master",
        &MasterCmd::default().agent_timeout_secs(AGENT_TIMEOUT_SECS),
    );
    let mut agent = net.start_agent("agent", &agent1());
    let first = net.connected_agent(Duration::from_secs(20)).await;

    let mut fw = net.framework("victim").await;
    let offer = fw.first_offer().await;
    let task_pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );
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
    let _agent = net.start_agent("agent-again", &agent1());
    eventually(
        "the restarted agent re-registers under its old id",
        Duration::from_secs(20),
        || async {
            let s = net.state().await?;
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
