//! Orphans: an agent that stops leaving its tasks running (as SIGTERM does, for the next agent
//! process) and never comes back leaves nothing running for longer than its recovery timeout.
//! A command task's supervisor ends it once the agent's heartbeat stands still that long; a
//! custom executor gives up on the agent's socket and exits. In one process, with a 2 s
//! timeout.

use bramble_agent::master_link::MasterLocator;
use bramble_agent::RecoveryOptions;
use bramble_master::config::MasterConfig;
use bramble_proto::identity::Role;
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::{pid_of, shell_task, TestExecutor, TestFramework};
use bramble_tests::processes::{alive, kill_group};
use bramble_tests::*;
use std::time::{Duration, Instant};

const RECOVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The watcher looks once a second, then SIGTERM; an executor retries every 100 ms. Ample.
const MARGIN: Duration = Duration::from_secs(10);

/// The tests' custom executor (`tests/src/bin/test-executor.rs`).
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));

/// Kills what is left of these process groups when the test ends, failed or not.
struct KillGroups(Vec<i32>);

impl Drop for KillGroups {
    fn drop(&mut self) {
        for &pid in &self.0 {
            kill_group(pid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_an_agent_that_never_comes_back_end_after_the_recovery_timeout() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(
        &cluster,
        &MasterConfig {
            agent_timeout_secs: 60.0,
            ..fast_master_config(&cluster)
        },
    )
    .await;
    let opts = agent_options(&cluster, "pi-gone", master.addr, Resources::new(2.0, 512));
    assert!(matches!(opts.master, MasterLocator::Static(_)));
    let agent = bramble_agent::start_with(
        &cluster.credentials(Role::Node),
        opts,
        RecoveryOptions {
            executor_reconnect_timeout: RECOVERY_TIMEOUT,
            ..RecoveryOptions::default()
        },
    )
    .await
    .expect("start agent");
    wait_for_agents(&master, 1).await;
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "orphans").await;
    let offer = fw.first_offer().await;
    fw.launch(
        &offer,
        vec![
            shell_task(&offer, "cmd", 0.2, 16, "sleep 600"),
            EXECUTOR.task(&offer, "exec", "sleep"),
        ],
    );
    let cmd = pid_of(&fw.state("cmd", TaskState::Running).await);
    let executor = pid_of(&fw.state("exec", TaskState::Running).await);
    let _cleanup = KillGroups(vec![cmd, executor]);
    // While the agent lives, nothing ends: time passing is what is tested here, so this
    // waits for time, not for an event.
    tokio::time::sleep(RECOVERY_TIMEOUT * 2).await;
    assert!(alive(cmd) && alive(executor), "ended while the agent lived");

    agent.shutdown_leaving_tasks().await;
    let stopped = Instant::now();
    assert!(
        alive(cmd) && alive(executor),
        "the agent's stop left them running"
    );
    eventually(
        "the command task and the executor end without their agent",
        RECOVERY_TIMEOUT + MARGIN,
        || async { (!alive(cmd) && !alive(executor)).then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() >= RECOVERY_TIMEOUT,
        "ended before the recovery timeout: {:?}",
        stopped.elapsed()
    );
    fw.stop(false).await;
    master.shutdown().await;
}
