//! Principals over the real wire (issue 16, finding 1): certificates issued per principal by
//! `bramble cluster add-principal`, a framework bound to the principal that registered it, the
//! deny list the master reloads, renewed certificates beside the old ones, and expiry warnings
//! on `/health`. The finer rules (kills, teardown, operators, a master restart) are unit tests
//! in `master/src/state/frameworks.rs`.

use bramble_proto::identity::{self, Credentials, Role};
use bramble_proto::messages::{
    FrameworkApi, FrameworkInfo, HelloReply, MasterEvent, PeerKind, SchedulerCall,
};
use bramble_proto::transport::ControlStream;
use bramble_proto::FrameworkId;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn info(id: Option<&FrameworkId>) -> FrameworkInfo {
    FrameworkInfo {
        framework_id: id.cloned(),
        name: "principal-test".into(),
        role: "*".into(),
        failover_timeout_secs: 30.0,
        principal: None,
        user: String::new(),
        webui_url: None,
        api: FrameworkApi::Bramble,
    }
}

fn principal(cluster: &TestCluster, name: &str, role: Role) -> Credentials {
    identity::add_principal(
        &cluster.cluster_dir(),
        name,
        role,
        identity::LEAF_VALIDITY_DAYS,
    )
    .expect("add principal");
    Credentials::load_as(&cluster.cluster_dir(), Some(name), role).expect("load principal")
}

/// Subscribes as `creds` (to `id` when given); returns the connection, its stream and the
/// master's first answer.
async fn subscribe(
    creds: &Credentials,
    master: SocketAddr,
    id: Option<&FrameworkId>,
) -> (quinn::Connection, ControlStream, MasterEvent) {
    let (conn, mut ctl, reply) = raw_hello(creds, master, PeerKind::Scheduler)
        .await
        .expect("hello");
    assert!(matches!(reply, HelloReply::Welcome { .. }), "{reply:?}");
    ctl.send(&SchedulerCall::Subscribe(info(id)))
        .await
        .expect("subscribe");
    let first = tokio::time::timeout(Duration::from_secs(10), ctl.recv::<MasterEvent>())
        .await
        .expect("an answer within 10 s")
        .expect("an event");
    (conn, ctl, first)
}

fn subscribed(event: &MasterEvent) -> FrameworkId {
    match event {
        MasterEvent::Subscribed { framework_id, .. } => framework_id.clone(),
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_framework_cannot_be_taken_over_by_another_principal() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let alice = principal(&cluster, "alice", Role::Framework);
    let bob = principal(&cluster, "bob", Role::Framework);
    let (alice_conn, _alice_ctl, first) = subscribe(&alice, master.addr, None).await;
    let fw = subscribed(&first);

    for intruder in [&bob, &cluster.credentials(Role::Framework)] {
        let (_conn, _ctl, answer) = subscribe(intruder, master.addr, Some(&fw)).await;
        match answer {
            MasterEvent::Error {
                message,
                fatal: true,
            } => assert!(
                message.contains("bound to principal 'alice'"),
                "the refusal says why: {message}"
            ),
            other => panic!(
                "{} took alice's framework over: {other:?}",
                intruder.principal
            ),
        }
    }
    assert!(
        alice_conn.close_reason().is_none(),
        "alice keeps her framework"
    );
    let state = master.state().await.expect("state");
    let f = state.frameworks.iter().find(|f| f.id == fw).expect("fw");
    assert_eq!(f.principal.as_deref(), Some("alice"));
    assert!(f.connected);

    // An operator principal may fail it over.
    let admin = principal(&cluster, "admin", Role::Operator);
    let (_conn, _ctl, answer) = subscribe(&admin, master.addr, Some(&fw)).await;
    assert_eq!(subscribed(&answer), fw);
    master.shutdown().await;
}

#[tokio::test]
async fn a_revoked_principal_is_cut_off_and_cannot_connect_again() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let alice = principal(&cluster, "alice", Role::Framework);
    let bob = principal(&cluster, "bob", Role::Framework);
    let (alice_conn, _alice_ctl, first) = subscribe(&alice, master.addr, None).await;
    subscribed(&first);
    let (bob_conn, _bob_ctl, first) = subscribe(&bob, master.addr, None).await;
    subscribed(&first);

    assert!(identity::revoke(&cluster.cluster_dir(), "alice").expect("revoke"));
    let reason = eventually(
        "alice's open connection closed",
        Duration::from_secs(10),
        || {
            let conn = alice_conn.clone();
            async move { conn.close_reason() }
        },
    )
    .await;
    assert!(reason.to_string().contains("revoked"), "{reason}");
    let again = raw_hello(&alice, master.addr, PeerKind::Scheduler).await;
    assert!(
        !matches!(again, Ok((_, _, HelloReply::Welcome { .. }))),
        "a revoked principal must not be admitted"
    );
    assert!(bob_conn.close_reason().is_none(), "bob is not revoked");
    subscribe(&bob, master.addr, None).await;
    master.shutdown().await;
}

#[tokio::test]
async fn renewed_certificates_work_and_the_old_ones_still_do() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let old_alice = principal(&cluster, "alice", Role::Framework);
    let old_shared = cluster.credentials(Role::Framework);
    let renewed = identity::renew(&cluster.cluster_dir()).expect("renew");
    assert_eq!(
        renewed.len(),
        4,
        "three role certificates and alice's: {renewed:?}"
    );
    let new_alice =
        Credentials::load_as(&cluster.cluster_dir(), Some("alice"), Role::Framework).expect("new");
    let new_shared = cluster.credentials(Role::Framework);
    assert_ne!(new_alice.cert, old_alice.cert);
    assert_ne!(new_shared.cert, old_shared.cert);
    assert_eq!(new_alice.cluster_id, master.cluster_id, "same CA");
    for creds in [&old_alice, &new_alice, &old_shared, &new_shared] {
        let (_conn, _ctl, first) = subscribe(creds, master.addr, None).await;
        subscribed(&first);
    }
    // A framework alice registered with her old certificate is hers with the new one too.
    let (old_conn, _ctl, first) = subscribe(&old_alice, master.addr, None).await;
    let fw = subscribed(&first);
    let (_conn, _ctl, answer) = subscribe(&new_alice, master.addr, Some(&fw)).await;
    assert_eq!(subscribed(&answer), fw);
    drop(old_conn);
    // And a master started on the renewed node certificate serves the old ones.
    master.shutdown().await;
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let (_conn, _ctl, first) = subscribe(&old_alice, master.addr, None).await;
    subscribed(&first);
    master.shutdown().await;
}

/// `GET path` on the master's HTTP port, the body as JSON.
async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: bramble\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let (_, body) = text.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

#[tokio::test]
async fn a_certificate_expiring_in_ten_days_is_reported_on_health() {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let http = master.http_addr.expect("http");
    let health = get_json(http, "/health").await;
    assert_eq!(
        health["certificates_expiring"],
        serde_json::json!([]),
        "{health}"
    );

    identity::add_principal(&cluster.cluster_dir(), "shortlived", Role::Framework, 10)
        .expect("add");
    let creds = Credentials::load_as(&cluster.cluster_dir(), Some("shortlived"), Role::Framework)
        .expect("load");
    let (_conn, _ctl, first) = subscribe(&creds, master.addr, None).await;
    subscribed(&first);
    let health = get_json(http, "/health").await;
    let expiring = health["certificates_expiring"]
        .as_array()
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(expiring.len(), 1, "{health}");
    assert_eq!(expiring[0]["principal"], "shortlived");
    let days = expiring[0]["days_left"].as_i64().expect("days_left");
    assert!((9..=10).contains(&days), "{health}");
    master.shutdown().await;
}
