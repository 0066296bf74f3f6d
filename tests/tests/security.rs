//! Security at the edge of the master: foreign certificates, wrong roles, another framework's
//! tasks, and garbage on the wire. Each attack must fail for the attacker only: the master
//! keeps serving everyone else.

use bramble_proto::identity::Role;
use bramble_proto::messages::{FrameworkInfo, HelloReply, MasterEvent, PeerKind, SchedulerCall};
use bramble_tests::*;
use std::time::Duration;

fn framework(name: &str) -> SchedulerCall {
    SchedulerCall::Subscribe(FrameworkInfo {
        framework_id: None,
        name: name.into(),
        role: "*".into(),
        failover_timeout_secs: 10.0,
        principal: None,
        user: String::new(),
        webui_url: None,
        api: bramble_proto::messages::FrameworkApi::Bramble,
    })
}

async fn subscribe_ok(
    cluster: &TestCluster,
    master: std::net::SocketAddr,
) -> bramble_proto::FrameworkId {
    let (_conn, mut ctl, reply) = raw_hello(
        &cluster.credentials(Role::Framework),
        master,
        PeerKind::Scheduler,
    )
    .await
    .expect("hello");
    assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
    ctl.send(&framework("probe")).await.expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(5), ctl.recv::<MasterEvent>()).await {
        Ok(Ok(MasterEvent::Subscribed { framework_id, .. })) => framework_id,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_peer_from_another_cluster_is_refused_at_the_handshake() {
    init_logs();
    let ours = TestCluster::new();
    let theirs = TestCluster::new();
    let master = start_master(&ours, &fast_master_config(&ours)).await;
    let stranger = theirs.credentials(Role::Operator);
    let result = raw_hello(&stranger, master.addr, PeerKind::Operator).await;
    assert!(
        result.is_err(),
        "a foreign CA's certificate must not get in"
    );
    // The master still serves its own cluster.
    subscribe_ok(&ours, master.addr).await;
    master.shutdown().await;
}

#[tokio::test]
async fn an_agent_certificate_cannot_subscribe_as_a_framework() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    // From this host's loopback, by a socket of the master's own user (this process), a node
    // certificate is let in as a scheduler: the service scheduler beside the master runs so
    // (from elsewhere, or another user's socket, it is refused: `master/src/state/peers.rs`,
    // `master/src/local_scheduler.rs`). It may subscribe only as bramble-services: any other
    // name closes the connection and registers nothing.
    let (conn, mut ctl, reply) = raw_hello(
        &cluster.credentials(Role::Node),
        master.addr,
        PeerKind::Scheduler,
    )
    .await
    .expect("handshake itself succeeds: the CA is right");
    assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
    ctl.send(&framework("impostor")).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the master closes a node certificate subscribing as another framework");
    let state = operator_state(&cluster, master.addr).await.expect("state");
    assert!(
        state.frameworks.iter().all(|f| f.name != "impostor"),
        "{:?}",
        state.frameworks
    );
    // And a framework certificate cannot pose as an agent.
    let (_c, _s, reply) = raw_hello(
        &cluster.credentials(Role::Framework),
        master.addr,
        PeerKind::Agent,
    )
    .await
    .expect("handshake");
    assert!(matches!(reply, HelloReply::Refused { .. }), "{reply:?}");
    master.shutdown().await;
}

#[tokio::test]
async fn an_incompatible_protocol_version_is_refused_with_a_clear_message() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let creds = cluster.credentials(Role::Framework);
    let endpoint =
        bramble_proto::transport::client_endpoint(&creds, "0.0.0.0:0".parse().expect("addr"))
            .expect("endpoint");
    let conn = bramble_proto::transport::connect(&endpoint, master.addr)
        .await
        .expect("connect");
    let mut ctl = bramble_proto::transport::ControlStream::open(&conn)
        .await
        .expect("stream");
    ctl.send(&bramble_proto::messages::Hello {
        protocol_version: 99,
        software_version: "9.9.9".into(),
        kind: PeerKind::Scheduler,
    })
    .await
    .expect("hello");
    match ctl.recv::<HelloReply>().await.expect("reply") {
        HelloReply::Refused { reason } => {
            assert!(
                reason.contains("protocol version 99 is not supported"),
                "{reason}"
            );
            assert!(reason.contains("speaks version 1"), "{reason}");
        }
        other => panic!("expected refusal, got {other:?}"),
    }
    master.shutdown().await;
}

#[tokio::test]
async fn random_bytes_close_only_that_connection() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    // A peer that passes TLS and then sends noise instead of a hello.
    let creds = cluster.credentials(Role::Framework);
    let endpoint =
        bramble_proto::transport::client_endpoint(&creds, "0.0.0.0:0".parse().expect("addr"))
            .expect("endpoint");
    let conn = bramble_proto::transport::connect(&endpoint, master.addr)
        .await
        .expect("connect");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&[
        0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff,
    ])
    .await
    .expect("write noise");
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "master must close a peer that sends garbage"
    );
    // Everyone else is still served.
    subscribe_ok(&cluster, master.addr).await;
    master.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let bystander = subscribe_ok(&cluster, master.addr).await;
    let (conn, mut ctl, reply) = raw_hello(
        &cluster.credentials(Role::Framework),
        master.addr,
        PeerKind::Scheduler,
    )
    .await
    .expect("hello");
    assert!(matches!(reply, HelloReply::Welcome { .. }));
    // Claim a 512 MiB frame: refused from the prefix alone, nothing is allocated.
    let raw = ctl.writer.get_mut();
    raw.write_all(&(512u32 << 20).to_be_bytes())
        .await
        .expect("write prefix");
    raw.write_all(&[0u8; 1024]).await.expect("write some");
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(
                reason.contains("exceeds"),
                "close reason should name the limit: {reason}"
            );
        }
        other => panic!("expected the master to close the connection, got {other:?}"),
    }
    let state = master.state().await.expect("master still answers");
    assert!(
        state.frameworks.iter().any(|f| f.id == bystander),
        "the other framework is untouched"
    );
    master.shutdown().await;
}

#[tokio::test]
async fn a_framework_cannot_kill_another_frameworks_task() {
    use bramble_proto::{Resources, TaskReason, TaskState};
    use bramble_tests::framework::shell_task;
    let c = InProcessCluster::start(|_| {}, &["pi-a"], Resources::new(1.0, 256), false).await;

    let mut owner = c.framework("owner").await;
    let offer = owner.offer_from("pi-a").await;
    owner.launch(
        &offer,
        vec![shell_task(&offer, "precious", 0.1, 16, "exec sleep 600")],
    );
    owner.state("precious", TaskState::Running).await;

    let mut intruder = c.framework("intruder").await;
    intruder
        .driver
        .kill_task("precious".into())
        .expect("send kill");
    let answer = intruder.terminal("precious").await;
    assert_eq!(
        answer.state,
        TaskState::Lost,
        "the intruder only learns the task is not theirs"
    );
    assert_eq!(answer.reason, Some(TaskReason::Reconciliation));

    // The owner's task still runs, as the master sees it.
    let state = c.master.state().await.expect("state");
    let task = state
        .tasks
        .iter()
        .find(|t| t.id.as_str() == "precious")
        .expect("task listed");
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.framework_id, owner.id);
    assert!(!owner
        .updates
        .iter()
        .any(|u| u.task_id.as_str() == "precious" && u.state.is_terminal()));

    owner.driver.kill_task("precious".into()).expect("kill own");
    assert_eq!(owner.terminal("precious").await.state, TaskState::Killed);
    intruder.stop(false).await;
    owner.stop(false).await;
    c.shutdown().await;
}
