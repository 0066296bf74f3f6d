//! Issue 18's dialing side, with real processes on loopback: agents, a framework through the
//! SDK and the `bramble` CLI pointed at a standby master (a [`FakeStandby`] answering every
//! hello with `NotLeader`) find the real master behind it by themselves — following the
//! leader it names, or moving on to the next master when it names none.

use bramble_proto::identity::Role;
use bramble_proto::messages::{ClusterState, PeerKind};
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::TestFramework;
use bramble_tests::processes::*;
use bramble_tests::standby::FakeStandby;
use bramble_tests::*;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// Ports these tests' agents offer (no task binds them; still, no other test's range).
const PORTS: &str = "ports = \"32650-32674\"\n";
const DEADLINE: Duration = Duration::from_secs(30);

fn agent(work: &str, masters: &[SocketAddr]) -> AgentCmd {
    AgentCmd::new(work).masters(masters).config(PORTS)
}

/// The hostnames of the connected agents the master lists.
async fn connected_agents(net: &LoopbackCluster, n: usize) -> Vec<String> {
    eventually(&format!("{n} agents registered"), DEADLINE, || async {
        let state = net.state().await?;
        let connected: Vec<String> = state
            .agents
            .iter()
            .filter(|a| a.connected)
            .map(|a| a.id.to_string())
            .collect();
        (connected.len() == n).then_some(connected)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_find_the_leader_through_a_standby_or_past_one_that_knows_none() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let node = net.test.credentials(Role::Node);
    let real = net.master_addr();
    let standby = FakeStandby::start(&node, Some(FakeStandby::hint(1, real, 4)));
    let electing = FakeStandby::start(&node, None);

    // The standby first, the leader second: asked all at once, the leader is dialled.
    let first = net.start_agent("standby-first", &agent("a1", &[standby.addr, real]));
    // Only the standby: the redirect is all the agent has.
    let only = net.start_agent("standby-only", &agent("a2", &[standby.addr]));
    // A standby that knows no leader yet, then the leader: the leader is dialled.
    let past = net.start_agent("past-electing", &agent("a3", &[electing.addr, real]));
    // Two standbys that know no leader: after a few rounds of asking, dialled in turn.
    let electing2 = FakeStandby::start(&node, None);
    let waiting = net.start_agent(
        "electing-only",
        &agent("a4", &[electing.addr, electing2.addr]),
    );

    connected_agents(&net, 3).await;
    let asked = format!("asked the masters who leads; dialling the leader leader={real}");
    first.logged(&asked, DEADLINE).await;
    past.logged(&asked, DEADLINE).await;
    only.logged(
        &format!(
            "master {} is a standby; following leader 1 at {real}",
            standby.addr
        ),
        DEADLINE,
    )
    .await;
    waiting
        .logged(
            &format!(
                "master {} is a standby and no leader is elected yet; trying the next master",
                electing.addr
            ),
            DEADLINE,
        )
        .await;
    for p in [&first, &only, &past] {
        p.logged("registered with master", DEADLINE).await;
    }
    for s in [&standby, &electing, &electing2] {
        let hellos = s.hellos();
        assert!(!hellos.is_empty(), "the standby was never asked");
        assert!(hellos.iter().all(|k| *k == PeerKind::Agent), "{hellos:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_and_the_cli_reach_the_leader_through_standbys() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let node = net.test.credentials(Role::Node);
    let real = net.master_addr();
    let standby = FakeStandby::start(&node, Some(FakeStandby::hint(1, real, 4)));
    let electing = FakeStandby::start(&node, None);
    let _agent = net.start_agent("agent", &agent("a1", &[real]));
    let agent_id = connected_agents(&net, 1).await.remove(0);

    // The SDK: a standby that knows no leader, then one that names it.
    let mut info = framework_info("follower");
    info.failover_timeout_secs = 5.0;
    let config = SchedulerConfig::new(electing.addr, net.test.credentials(Role::Framework), info)
        .with_masters(&[electing.addr, standby.addr]);
    let framework = TestFramework::start_with(config).await;
    let state = net.state().await.expect("the real master's state");
    assert!(
        state
            .frameworks
            .iter()
            .any(|f| f.id == framework.id && f.name == "follower"),
        "the real master does not know the framework: {:?}",
        state.frameworks
    );
    assert_eq!(standby.hellos(), [PeerKind::Scheduler]);
    assert_eq!(electing.hellos(), [PeerKind::Scheduler]);

    // The CLI: `--master STANDBY`, and a list whose first master knows no leader.
    for master in [
        standby.addr.to_string(),
        format!("{},{}", electing.addr, standby.addr),
    ] {
        let out = Command::new(bin_dir().join("bramble"))
            .args(["--master", &master, "--cluster"])
            .arg(net.test.cluster_dir())
            .args(["status", "--json"])
            .output()
            .expect("running bramble");
        assert!(
            out.status.success(),
            "bramble --master {master} status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let state: ClusterState = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert!(
            state.agents.iter().any(|a| a.id.to_string() == agent_id),
            "bramble --master {master} status answered without the real master's agent: {state:?}"
        );
    }
    let operators = standby
        .hellos()
        .into_iter()
        .filter(|k| *k == PeerKind::Operator)
        .count();
    assert!(
        operators >= 2,
        "the CLI did not ask the standby: {:?}",
        standby.hellos()
    );
}
