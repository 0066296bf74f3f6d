//! Replicated masters store any row a single master stores (issue 18): the replica refuses a
//! value over its limit (256 KiB), so the master's replicated store splits a large row into
//! chunks. A task launched with ~600 KiB of data that finishes with ~300 KiB of status data
//! makes a task record of ~900 KiB; the leader keeps serving (same leader, same term) through
//! its launch and its end, and after a SIGKILL of the leader the new one has the task record.

use bramble_proto::identity::Role;
use bramble_proto::TaskState;
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::{TestExecutor, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));
const WAIT: Duration = Duration::from_secs(30);
const PORTS: &str = "ports = \"34110-34134\"\n";
const TASK_DATA: usize = 600 * 1024;
const STATUS_DATA: usize = 300 * 1024;

/// A raw HTTP/1.0 GET of `/api/v1/state`, as JSON.
async fn state_json(addr: SocketAddr) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
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
    serde_json::from_str(body).ok()
}

/// The serving leader among `alive` and its term, once exactly one serves.
async fn serving_leader(group: &HaGroup, alive: &[usize]) -> (usize, u64) {
    eventually("exactly one master serves", WAIT, || async {
        let mut serving = Vec::new();
        for &id in alive {
            let s = state_json(group.http(id)).await?;
            if s.get("standby").is_none() {
                let me = s
                    .get("masters")?
                    .as_array()?
                    .iter()
                    .find(|m| m["id"].as_u64() == Some(id as u64))?
                    .clone();
                (me["role"] == "leader").then_some(())?;
                serving.push((id, me["term"].as_u64()?));
            }
        }
        (serving.len() == 1).then(|| serving[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_record_larger_than_a_replica_value_is_stored_and_survives_failover() {
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let cmd = MasterCmd::default().agent_timeout_secs(5.0);
    let mut masters: Vec<Option<Proc>> = (1..=3)
        .map(|id| Some(net.start_ha_master(&format!("m{id}"), &cmd, &group, id)))
        .collect();
    let (leader, term) = serving_leader(&group, &[1, 2, 3]).await;
    let all: Vec<SocketAddr> = (1..=3).map(|id| group.quic(id)).collect();
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1").masters(&all).config(PORTS),
    );

    let mut order = vec![group.quic(leader)];
    order.extend(all.iter().copied().filter(|a| *a != group.quic(leader)));
    let mut info = framework_info("ha-big");
    info.failover_timeout_secs = 120.0;
    let mut config = SchedulerConfig::new(order[0], net.test.credentials(Role::Framework), info)
        .with_masters(&order);
    // The terminal update stays unacknowledged, so the master keeps the whole record.
    config.implicit_acknowledgements = false;
    let mut fw = TestFramework::start_with(config).await;
    let offer = fw.first_offer().await;
    let data = format!("big:{STATUS_DATA};{}", "x".repeat(TASK_DATA));
    fw.launch(&offer, vec![EXECUTOR.task(&offer, "big", &data)]);
    let finished = fw.terminal("big").await;
    assert_eq!(
        finished.state,
        TaskState::Finished,
        "{:?}",
        finished.message
    );
    assert_eq!(finished.data.len(), STATUS_DATA);

    // The leader kept serving: the same master leads in the same term, and its state holds
    // the task.
    assert_eq!(serving_leader(&group, &[1, 2, 3]).await, (leader, term));
    let s = operator_state(&net.test, group.quic(leader))
        .await
        .expect("the leader's state");
    assert!(
        s.tasks
            .iter()
            .any(|t| t.id.as_str() == "big" && t.state == TaskState::Finished),
        "{:?}",
        s.tasks
    );

    // SIGKILL the leader: the next one loads the task record from the replicated store.
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != leader).collect();
    let mut killed = masters[leader - 1].take().expect("the leader's process");
    killed.kill_hard();
    let (next, _) = serving_leader(&group, &survivors).await;
    let recovered = eventually("the new leader's state", WAIT, || async {
        operator_state(&net.test, group.quic(next)).await.ok()
    })
    .await;
    assert!(
        recovered
            .tasks
            .iter()
            .any(|t| t.id.as_str() == "big" && t.state == TaskState::Finished),
        "the new leader has the task record: {:?}",
        recovered.tasks
    );
    // The new leader keeps serving too.
    assert_eq!(serving_leader(&group, &survivors).await.0, next);
    drop(fw);
}
