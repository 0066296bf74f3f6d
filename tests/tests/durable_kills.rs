//! A requested kill is durable (the store's `kills` table): asked for while the task's agent
//! is away, it survives a restart of the single master and a failover of replicated masters,
//! and is sent when the agent comes back still running the task, which then ends KILLED.
//!
//! The agent is away by SIGKILL (then started again on its work dir, recovering the task,
//! which outlives it): a SIGSTOPped agent's socket would still take the kill in and hand it
//! over on SIGCONT, and one stopped past the agent timeout would be removed, its task LOST.

use bramble_client::OperatorClient;
use bramble_proto::identity::Role;
use bramble_proto::TaskState;
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::{pid_of, shell_task, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A framework at `masters` (the first dialled first) whose failover timeout outlasts the
/// test: a framework removed for good would have its tasks killed, which must not be what
/// ends the task here.
async fn framework(net: &LoopbackCluster, masters: &[SocketAddr], name: &str) -> TestFramework {
    let mut info = framework_info(name);
    info.failover_timeout_secs = 300.0;
    let config = SchedulerConfig::new(masters[0], net.test.credentials(Role::Framework), info)
        .with_masters(masters);
    TestFramework::start_with(config).await
}

/// Asks `master` to kill the task; answered once the master has committed the request.
async fn kill_through_operator(net: &LoopbackCluster, master: SocketAddr, fw: &TestFramework) {
    let mut op = OperatorClient::connect(&net.test.cluster_dir(), master)
        .await
        .expect("operator connection");
    op.kill(fw.id.clone(), "sleeper".into())
        .await
        .expect("the master takes the kill");
    op.close();
}

async fn ends_killed(fw: &mut TestFramework, pid: i32) {
    let end = fw.terminal("sleeper").await;
    assert_eq!(end.state, TaskState::Killed, "{:?}", end.message);
    eventually("the task's process is gone", WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_asked_for_while_the_agent_is_away_survives_a_master_restart() {
    let net = LoopbackCluster::new();
    let cmd = MasterCmd::default().agent_timeout_secs(10.0);
    let mut master = net.start_master("master", &cmd);
    let agent_cmd = AgentCmd::new("agent1").config("ports = \"34135-34146\"\n");
    let mut agent = net.start_agent("agent", &agent_cmd);
    net.connected_agent(WAIT).await;
    let mut fw = framework(&net, &[net.master_addr()], "kill-restart").await;
    let offer = fw.first_offer().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );

    agent.kill_hard();
    kill_through_operator(&net, net.master_addr(), &fw).await;
    master.kill_hard();
    let _master = net.start_master("master-again", &cmd);
    assert!(alive(pid), "nothing has reached the task yet");
    let _agent = net.start_agent("agent-again", &agent_cmd);
    ends_killed(&mut fw, pid).await;
    drop(fw);
}

/// The serving leader among `alive`, once exactly one serves (its HTTP state is not a
/// standby's).
async fn serving_leader(group: &HaGroup, alive: &[usize]) -> usize {
    eventually("exactly one master serves", WAIT, || async {
        let mut serving = Vec::new();
        for &id in alive {
            if operator_state_serving(group.http(id)).await? {
                serving.push(id);
            }
        }
        (serving.len() == 1).then(|| serving[0])
    })
    .await
}

/// Whether the master at `http` serves (`Some(false)`: a standby; `None`: no answer).
async fn operator_state_serving(http: SocketAddr) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
    s.write_all(b"GET /api/v1/state HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1)? != "200" {
        return None;
    }
    let state: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(state.get("standby").is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_asked_for_while_the_agent_is_away_survives_a_leader_failover() {
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let cmd = MasterCmd::default().agent_timeout_secs(10.0);
    let mut masters: Vec<Option<Proc>> = (1..=3)
        .map(|id| Some(net.start_ha_master(&format!("m{id}"), &cmd, &group, id)))
        .collect();
    let leader = serving_leader(&group, &[1, 2, 3]).await;
    let all: Vec<SocketAddr> = (1..=3).map(|id| group.quic(id)).collect();
    let agent_cmd = AgentCmd::new("agent1")
        .masters(&all)
        .config("ports = \"34147-34159\"\n");
    let mut agent = net.start_agent("agent", &agent_cmd);
    eventually("the agent registers with the leader", WAIT, || async {
        let s = operator_state(&net.test, group.quic(leader)).await.ok()?;
        s.agents.iter().any(|a| a.connected).then_some(())
    })
    .await;
    let mut order = vec![group.quic(leader)];
    order.extend(all.iter().copied().filter(|a| *a != group.quic(leader)));
    let mut fw = framework(&net, &order, "kill-failover").await;
    let offer = fw.first_offer().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.5, 32, "exec sleep 600"),
        )
        .await,
    );

    agent.kill_hard();
    kill_through_operator(&net, group.quic(leader), &fw).await;
    let mut killed = masters[leader - 1].take().expect("the leader's process");
    killed.kill_hard();
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    serving_leader(&group, &survivors).await;
    assert!(alive(pid), "nothing has reached the task yet");
    let _agent = net.start_agent("agent-again", &agent_cmd);
    ends_killed(&mut fw, pid).await;
    drop(fw);
}
