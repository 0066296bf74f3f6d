//! The durable master (issue 6): a master stopped without a goodbye and started again on the
//! same state dir recovers its frameworks, agents and tasks from its store. Agents re-register
//! into that picture without their tasks being killed, frameworks fail over and reconcile, and
//! an agent that never comes back has its tasks made LOST after the re-registration timeout.
//!
//! In-process (the master stopped with `MasterHandle::kill`) and with real processes (the
//! `bramble-master` binary SIGKILLed).

use bramble_master::config::MasterConfig;
use bramble_master::server::MasterHandle;
use bramble_proto::identity::Role;
use bramble_proto::messages::ClusterState;
use bramble_proto::{Resources, TaskId, TaskReason, TaskState};
use bramble_tests::framework::{pid_of, shell_task, Event, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Starts a master like the first one (same state dir) on the address the first one had.
async fn restart_master(
    cluster: &TestCluster,
    addr: SocketAddr,
    tweak: impl FnOnce(&mut MasterConfig),
) -> MasterHandle {
    let mut cfg = fast_master_config(cluster);
    tweak(&mut cfg);
    cfg.listen = addr;
    start_master(cluster, &cfg).await
}

async fn state_where<T>(
    master: &MasterHandle,
    what: &str,
    check: impl Fn(&ClusterState) -> Option<T>,
) -> T {
    eventually(what, WAIT, || async {
        let s = master.state().await.ok()?;
        check(&s)
    })
    .await
}

/// Waits until the framework has re-subscribed (failover) under its own id.
async fn resubscribed(fw: &mut TestFramework) {
    let id = fw.id.clone();
    fw.until("the framework re-subscribes under its id", |f| {
        f.other
            .iter()
            .any(|e| matches!(e, Event::Registered(again, true) if again == &id))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_keeps_running_tasks_and_frameworks_reconcile_against_its_store() {
    let reregistration = |cfg: &mut MasterConfig| cfg.agent_reregistration_timeout_secs = 30.0;
    let InProcessCluster {
        cluster,
        master,
        agents,
    } = InProcessCluster::start(reregistration, &["pi-a"], Resources::new(2.0, 1024), false).await;
    let mut fw = TestFramework::start(
        master.addr,
        cluster.credentials(Role::Framework),
        "survivor",
    )
    .await;

    // A task that runs until the test writes a byte into its FIFO.
    let fifo = cluster.path("release");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let offer = fw.offer_from("pi-a").await;
    let line = format!("exec head -c 1 {}", fifo.display());
    let pid = pid_of(
        &fw.launch_one(&offer, shell_task(&offer, "long", 0.5, 32, &line))
            .await,
    );
    let agent_id = offer.agent_id.clone();

    let addr = master.addr;
    master.kill().await;
    let master = restart_master(&cluster, addr, reregistration).await;

    // The agent comes back under its id and the master keeps its task RUNNING.
    state_where(
        &master,
        "the agent re-registers with its task RUNNING",
        |s| {
            let back = s.agents.iter().any(|a| a.id == agent_id && a.connected);
            let running = s
                .tasks
                .iter()
                .any(|t| t.id.as_str() == "long" && t.state == TaskState::Running);
            (back && running).then_some(())
        },
    )
    .await;
    // The allocator charges the recovered task to its framework again.
    let allocated = state_where(&master, "the task's resources are allocated", |s| {
        s.agents
            .iter()
            .find(|a| a.id == agent_id)
            .filter(|a| a.allocated.cpus_milli >= 500)
            .map(|a| a.allocated.clone())
    })
    .await;
    assert!(allocated.mem_mib >= 32, "{allocated:?}");

    // The framework fails over to the new master and reconciles from the recovered picture.
    resubscribed(&mut fw).await;
    fw.updates.clear();
    fw.driver
        .reconcile_tasks(vec![TaskId("long".into()), TaskId("never-was".into())])
        .expect("explicit reconcile");
    let answer = fw
        .update_where("long", "an explicit reconciliation answer", |u| {
            u.reason == Some(TaskReason::Reconciliation)
        })
        .await;
    assert_eq!(answer.state, TaskState::Running, "{answer:?}");
    let unknown = fw.terminal("never-was").await;
    assert_eq!(unknown.state, TaskState::Lost, "{unknown:?}");
    fw.updates.clear();
    fw.driver
        .reconcile_tasks(Vec::new())
        .expect("implicit reconcile");
    let implicit = fw
        .update_where("long", "an implicit reconciliation answer", |u| {
            u.reason == Some(TaskReason::Reconciliation)
        })
        .await;
    assert_eq!(implicit.state, TaskState::Running, "{implicit:?}");

    // Same process, never killed.
    assert!(
        alive(pid),
        "task process {pid} died across the master restart"
    );
    let view = agents[0].view().await.expect("agent view");
    assert!(
        view.containers.iter().any(|c| c.pid == Some(pid as u32)
            && c.tasks
                .iter()
                .any(|(t, s)| t.as_str() == "long" && *s == TaskState::Running)),
        "{view:?}"
    );

    // It finishes later, and the update reaches the framework through the new master.
    std::fs::write(&fifo, b"x").expect("release the task");
    let done = fw.terminal("long").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert!(
        !fw.updates.iter().any(|u| u.state == TaskState::Killed),
        "{:?}",
        fw.updates
    );
    // Acknowledged, it is forgotten (and deleted from the store).
    state_where(&master, "the acknowledged task is forgotten", |s| {
        (!s.tasks.iter().any(|t| t.id.as_str() == "long")
            && s.completed_tasks.iter().any(|t| t.id.as_str() == "long"))
        .then_some(())
    })
    .await;

    fw.stop(false).await;
    for a in agents {
        a.shutdown().await;
    }
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_return_after_a_master_restart_has_its_tasks_lost_in_time() {
    const REREGISTRATION: f64 = 1.5;
    let InProcessCluster {
        cluster,
        master,
        agents,
    } = InProcessCluster::start(|_| {}, &["pi-gone"], Resources::new(2.0, 1024), false).await;
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "orphan").await;
    let offer = fw.offer_from("pi-gone").await;
    fw.launch_one(
        &offer,
        shell_task(&offer, "doomed", 0.5, 32, "exec sleep 600"),
    )
    .await;

    let addr = master.addr;
    master.kill().await;
    // The agent goes away for good while the master is down.
    for a in agents {
        a.shutdown().await;
    }
    let restarted = Instant::now();
    let master = restart_master(&cluster, addr, |cfg| {
        cfg.agent_reregistration_timeout_secs = REREGISTRATION
    })
    .await;

    // Until the timeout, the recovered agent is known (not connected) with its task.
    let before = master.state().await.expect("state");
    assert!(restarted.elapsed() < Duration::from_secs_f64(REREGISTRATION));
    assert!(
        before
            .agents
            .iter()
            .any(|a| a.id == offer.agent_id && !a.connected),
        "{:?}",
        before.agents
    );
    assert!(
        before
            .tasks
            .iter()
            .any(|t| t.id.as_str() == "doomed" && t.state == TaskState::Running),
        "{:?}",
        before.tasks
    );

    let lost = fw
        .update_where("doomed", "LOST", |u| u.state == TaskState::Lost)
        .await;
    let took = restarted.elapsed();
    assert_eq!(lost.reason, Some(TaskReason::AgentRemoved), "{lost:?}");
    assert!(
        lost.uuid.is_some(),
        "a master-made LOST is acknowledged like any update"
    );
    assert!(
        took >= Duration::from_secs_f64(REREGISTRATION),
        "LOST after {took:?}, before the re-registration timeout"
    );
    assert!(lost.message.contains("re-register"), "{}", lost.message);
    resubscribed(&mut fw).await;

    // The framework's acknowledgement lets the master forget the task and the agent.
    state_where(
        &master,
        "the LOST task is acknowledged and forgotten",
        |s| {
            (!s.tasks.iter().any(|t| t.id.as_str() == "doomed")
                && !s.agents.iter().any(|a| a.id == offer.agent_id))
            .then_some(())
        },
    )
    .await;

    // And stays forgotten across another restart.
    let addr = master.addr;
    master.kill().await;
    let master = restart_master(&cluster, addr, |_| {}).await;
    let after = master.state().await.expect("state");
    assert!(after.tasks.is_empty(), "{:?}", after.tasks);
    assert!(after.agents.is_empty(), "{:?}", after.agents);
    assert!(
        after.frameworks.iter().any(|f| f.id == fw.id),
        "{:?}",
        after.frameworks
    );
    fw.stop(false).await;
    master.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Real processes

/// A master that waits 30 s for agents to re-register after a restart.
fn master_cmd() -> MasterCmd {
    MasterCmd::default().config("agent_reregistration_timeout_secs = 30\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_with_sigkill_comes_back_without_killing_the_running_task() {
    let net = LoopbackCluster::new();
    let mut master = net.start_master("master", &master_cmd());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1"));
    let agent_id = net.connected_agent(WAIT).await;
    let mut fw = net.framework("steady").await;
    let offer = fw.first_offer().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );

    master.kill_hard();
    let _master = net.start_master("master-again", &master_cmd());
    let restarted = Instant::now();
    eventually(
        "the agent re-registers with the restarted master, its task RUNNING",
        WAIT,
        || async {
            let s = net.state().await?;
            let back = s.agents.iter().any(|a| a.id == agent_id && a.connected);
            let running = s
                .tasks
                .iter()
                .any(|t| t.id.as_str() == "sleeper" && t.state == TaskState::Running);
            (back && running).then_some(())
        },
    )
    .await;
    eprintln!(
        "master SIGKILL + restart: agent back in {:?} after the new process started",
        restarted.elapsed()
    );
    resubscribed(&mut fw).await;
    fw.updates.clear();
    fw.driver
        .reconcile_tasks(vec![TaskId("sleeper".into())])
        .expect("reconcile");
    let answer = fw
        .update_where("sleeper", "a reconciliation answer", |u| {
            u.reason == Some(TaskReason::Reconciliation)
        })
        .await;
    assert_eq!(answer.state, TaskState::Running, "{answer:?}");
    assert!(alive(pid), "the task's process {pid} was killed");
    let log = _master.log_text();
    assert!(
        log.contains("re-registered after master failover"),
        "restarted master's log:\n{log}"
    );

    // The new master still controls the task.
    fw.driver.kill_task(TaskId("sleeper".into())).expect("kill");
    let killed = fw.terminal("sleeper").await;
    assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
    kill_group(pid);
    fw.stop(false).await;
}
