//! Replica groups on loopback QUIC: election, replication, leader kills with restarts,
//! catch-up from disk, rebuild by snapshot, a partitioned leader, compare-and-set races,
//! hostile peers, membership.

mod common;

use bramble_proto::identity::Role;
use bramble_replica::network::ALPN;
use bramble_replica::{Command, ReplicaError, Response, Role as ReplicaRole};
use common::{put, test_tuning, Cluster};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FAILOVER_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_replicate_writes() {
    let c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    let leaders: Vec<_> = c
        .nodes
        .values()
        .filter(|r| r.role() == ReplicaRole::Leader)
        .map(|r| r.id())
        .collect();
    assert_eq!(leaders, vec![leader]);
    let term = c.node(leader).term();
    for r in c.nodes.values() {
        assert_eq!(r.term(), term);
        assert_eq!(r.leader().map(|(id, _)| id), Some(leader));
    }
    // Writes through every node: followers forward to the leader.
    for (i, r) in c.nodes.values().enumerate() {
        let resp = r.write(put("t", &format!("k{i}"), b"v")).await.unwrap();
        assert!(
            matches!(resp, Response::Written { version: Some(_) }),
            "{resp:?}"
        );
    }
    c.wait_applied(leader, Duration::from_secs(5)).await;
    for r in c.nodes.values() {
        assert_eq!(
            r.list_local("t", "k").await.unwrap().len(),
            3,
            "node {}",
            r.id()
        );
        // Linearizable reads from any node.
        assert!(r.read("t", "k2").await.unwrap().is_some());
    }
    // What the state machine could not refuse later is refused at the door, typed.
    let nested = Command::Batch(vec![Command::Batch(vec![])]);
    assert!(matches!(
        c.node(leader).write(nested).await,
        Err(ReplicaError::Invalid(_))
    ));
    let huge = put(
        "t",
        "huge",
        &vec![0u8; bramble_replica::types::MAX_VALUE_BYTES + 1],
    );
    assert!(matches!(
        c.node(leader).write(huge).await,
        Err(ReplicaError::Invalid(_))
    ));
    // Membership calls on a follower name the leader.
    let follower = c.alive().into_iter().find(|id| *id != leader).unwrap();
    match c
        .node(follower)
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
    {
        Err(ReplicaError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, c.peers[&leader].to_string());
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Kills the leader again and again while a writer keeps writing: a new leader within 2 s
/// every time, and every acknowledged write on every node at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_lose_no_acknowledged_write() {
    let mut c = Cluster::start(3, test_tuning()).await;
    let handles: Arc<Mutex<BTreeMap<u64, bramble_replica::Replica>>> =
        Arc::new(Mutex::new(c.nodes.clone()));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (handles, acked, stop) = (handles.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let nodes: Vec<_> = handles.lock().unwrap().values().cloned().collect();
                let node = &nodes[(n as usize) % nodes.len()];
                let key = format!("w{n:05}");
                match node.write(put("t", &key, key.as_bytes())).await {
                    Ok(Response::Written { version: Some(v) }) => {
                        acked.lock().unwrap().push((key, v))
                    }
                    Ok(other) => panic!("a put answered {other:?}"),
                    // No leader for now: wait for this node to see a change rather than spin
                    // (bounded: the node may be the one just killed).
                    Err(_) => {
                        let mut m = node.metrics();
                        let _ = tokio::time::timeout(Duration::from_millis(100), m.changed()).await;
                    }
                }
                n += 1;
            }
        })
    };
    let mut failovers = Vec::new();
    for round in 0..5 {
        let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
        // Let the writer get some writes through this leader.
        let before = acked.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut metrics = c.node(leader).metrics();
        while acked.lock().unwrap().len() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the writer is stuck"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
        handles.lock().unwrap().remove(&leader);
        let killed = Instant::now();
        let stopping = c.kill_async(leader);
        let (new_leader, _) = c.wait_leader(Duration::from_secs(5)).await;
        let failover = killed.elapsed();
        stopping.await.unwrap();
        println!("round {round}: leader {leader} killed, {new_leader} leads after {failover:?}");
        assert!(failover < FAILOVER_LIMIT, "failover took {failover:?}");
        failovers.push(failover);
        // The killed node comes back from its directory.
        c.start_node(leader, true).await;
        handles
            .lock()
            .unwrap()
            .insert(leader, c.node(leader).clone());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    // A last write through the leader: everything acknowledged before it is committed below it.
    c.node(leader).write(put("t", "last", b"")).await.unwrap();
    c.wait_applied(leader, Duration::from_secs(10)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for r in c.nodes.values() {
        let rows: BTreeMap<String, u64> = r
            .list_local("t", "w")
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.key, row.version))
            .collect();
        for (key, version) in &acked {
            assert_eq!(rows.get(key), Some(version), "node {}: {key} lost", r.id());
        }
    }
    failovers.sort();
    println!(
        "{} acknowledged writes; failover median {:?}, max {:?}",
        acked.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_and_a_wiped_one_is_rebuilt_by_snapshot() {
    let mut c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    let follower = c.alive().into_iter().find(|id| *id != leader).unwrap();

    // Restarted from disk: it catches up on what it missed.
    c.kill(follower).await;
    for i in 0..30 {
        c.node(leader)
            .write(put("t", &format!("a{i:03}"), b"a"))
            .await
            .unwrap();
    }
    c.start_node(follower, true).await;
    c.wait_applied(leader, Duration::from_secs(10)).await;
    assert_eq!(
        c.node(follower).list_local("t", "a").await.unwrap().len(),
        30
    );

    // Wiped: its directory deleted while it is down, and the leader's log purged past
    // anything it could replay, so only a snapshot can rebuild it.
    c.kill(follower).await;
    std::fs::remove_dir_all(c.dir(follower)).unwrap();
    for i in 0..120 {
        c.node(leader)
            .write(put("t", &format!("b{i:03}"), b"b"))
            .await
            .unwrap();
    }
    let (first, _) = c.node(leader).log_range().await.unwrap().expect("a log");
    assert!(
        first > 1,
        "the leader's log was never purged (first index {first})"
    );
    c.start_node(follower, false).await;
    c.wait_applied(leader, Duration::from_secs(10)).await;
    let rebuilt = c.node(follower);
    assert!(
        rebuilt.metrics().borrow().snapshot.is_some(),
        "the wiped node was not rebuilt by a snapshot"
    );
    assert_eq!(rebuilt.list_local("t", "a").await.unwrap().len(), 30);
    assert_eq!(rebuilt.list_local("t", "b").await.unwrap().len(), 120);
    // And it is a full member again: it still votes and follows.
    assert_eq!(rebuilt.leader().map(|(id, _)| id), Some(leader));
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A leader cut off from the others cannot commit; the majority elects another and goes on;
/// healed, the old leader follows and its uncommitted write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_cannot_commit() {
    let c = Cluster::start(3, test_tuning()).await;
    let (old, _) = c.wait_leader(Duration::from_secs(5)).await;
    c.node(old).write(put("t", "before", b"1")).await.unwrap();
    c.node(old).isolate(true);
    let partitioned = Instant::now();

    // The majority elects a new leader within the failover limit.
    let majority: Vec<_> = c.alive().into_iter().filter(|id| *id != old).collect();
    let mut set = tokio::task::JoinSet::new();
    for id in &majority {
        let r = c.node(*id).clone();
        let majority = majority.clone();
        set.spawn(async move {
            r.raft()
                .wait(Some(Duration::from_secs(5)))
                .metrics(
                    |m| m.state == openraft::ServerState::Leader && majority.contains(&m.id),
                    "new leader",
                )
                .await
                .map(|m| m.id)
        });
    }
    let new = loop {
        match set.join_next().await {
            Some(Ok(Ok(id))) => break id,
            Some(_) => continue,
            None => panic!("the majority elected no leader"),
        }
    };
    set.abort_all();
    let failover = partitioned.elapsed();
    println!("partitioned leader {old}; {new} leads after {failover:?}");
    assert!(failover < FAILOVER_LIMIT, "failover took {failover:?}");

    let committed = c.node(new).write(put("t", "after", b"2")).await;
    assert!(committed.is_ok(), "{committed:?}");
    // The old leader cannot get its write acknowledged.
    let stale = c.node(old).write(put("t", "lost", b"3")).await;
    assert!(
        stale.is_err(),
        "a partitioned leader acknowledged a write: {stale:?}"
    );
    assert!(
        c.node(old).read("t", "after").await.is_err(),
        "a stale linearizable read"
    );

    c.node(old).isolate(false);
    // Healed, the group agrees on a leader, never the old one: its log lacks a committed entry.
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(leader, old);
    c.node(leader)
        .write(put("t", "healed", b"4"))
        .await
        .unwrap();
    c.wait_applied(leader, Duration::from_secs(5)).await;
    for r in c.nodes.values() {
        assert!(r.read_local("t", "before").await.unwrap().is_some());
        assert!(r.read_local("t", "after").await.unwrap().is_some());
        assert!(
            r.read_local("t", "healed").await.unwrap().is_some(),
            "node {} (old {old}, leader {leader}) lacks healed: {:?} {:?}",
            r.id(),
            r.list_local("t", "").await.unwrap(),
            r.metrics().borrow().clone()
        );
        assert_eq!(
            r.read_local("t", "lost").await.unwrap(),
            None,
            "node {}",
            r.id()
        );
    }
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A compare-and-set won: from which version, to which, by which writer.
type Win = (Option<u64>, u64, usize);

/// Writers on every node race compare-and-sets on one key: each version is won exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_has_one_winner_per_version() {
    let c = Cluster::start(3, test_tuning()).await;
    let wins: Arc<Mutex<Vec<Win>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..6usize {
        let r = c.node(1 + (w as u64 % 3)).clone();
        let wins = wins.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            let mut attempts = 0;
            while mine < 5 {
                attempts += 1;
                assert!(attempts < 500, "writer {w} starved");
                // A forwarded call may fail while the group is busy; CAS is what is tested.
                let Ok(current) = r.read("t", "counter").await else {
                    continue;
                };
                let current = current.map(|v| v.version);
                let cmd = Command::CompareAndSet {
                    table: "t".into(),
                    key: "counter".into(),
                    expected: current,
                    value: Some(w.to_string().into_bytes()),
                };
                let Ok(answer) = r.write(cmd).await else {
                    continue;
                };
                match answer {
                    Response::Written { version: Some(v) } => {
                        wins.lock().unwrap().push((current, v, w));
                        mine += 1;
                    }
                    Response::Conflict { current: now } => assert_ne!(now, current),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut wins = wins.lock().unwrap().clone();
    assert_eq!(wins.len(), 30);
    wins.sort();
    // Each win replaced the previous win's version: a single chain, no version won twice.
    let mut expected = None;
    for (from, to, w) in &wins {
        assert_eq!(
            *from, expected,
            "writer {w} won from a version that was not the latest"
        );
        expected = Some(*to);
    }
    let last = c.node(1).read("t", "counter").await.unwrap().unwrap();
    assert_eq!(Some(last.version), expected);
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Garbage from a node-certified peer is dropped with a log line; a peer with another role
/// is refused; the group carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_dropped_and_the_group_carries_on() {
    let c = Cluster::start(3, test_tuning()).await;
    let target = c.peers[&1];
    for role in [Role::Node, Role::Operator] {
        let creds = c.creds(role);
        let tls = bramble_proto::transport::client_tls(&creds, ALPN).unwrap();
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = endpoint
            .connect(target, bramble_proto::identity::NODE_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        for garbage in [
            &b"\x00\x00\x00\x05hello"[..],
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x01\x09",
        ] {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                assert_eq!(role, Role::Operator, "a node's connection was closed");
                break;
            };
            let _ = send.write_all(garbage).await;
            let _ = send.finish();
            // Never an answer: the stream is reset or the connection closed.
            let answer =
                tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
            match answer {
                Ok(Ok(bytes)) => assert!(bytes.is_empty(), "{role}: answered garbage"),
                Ok(Err(_)) => {}
                Err(_) => panic!("{role}: the stream was neither answered nor closed"),
            }
        }
        endpoint.close(quinn::VarInt::from_u32(0), b"");
    }
    // Still one group, still committing.
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    c.node(1).write(put("t", "still", b"ok")).await.unwrap();
    c.wait_applied(leader, Duration::from_secs(5)).await;
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A fourth node joins as a learner, becomes a voter, and a voter is removed; the group
/// keeps committing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_and_shrinks_without_downtime() {
    let mut c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(Duration::from_secs(5)).await;
    c.node(leader).write(put("t", "one", b"1")).await.unwrap();
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.peers.insert(4, addr);
    c.start_node(4, false).await;
    c.node(leader)
        .add_learner(4, &addr.to_string())
        .await
        .unwrap();
    c.node(leader)
        .change_membership(BTreeSet::from([1, 2, 3, 4]))
        .await
        .unwrap();
    c.node(4).write(put("t", "two", b"2")).await.unwrap();
    let removed = c
        .alive()
        .into_iter()
        .find(|id| *id != leader && *id != 4)
        .unwrap();
    let voters: BTreeSet<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != removed)
        .collect();
    c.node(leader)
        .change_membership(voters.clone())
        .await
        .unwrap();
    c.kill(removed).await;
    c.node(4).write(put("t", "three", b"3")).await.unwrap();
    c.wait_applied(leader, Duration::from_secs(5)).await;
    for r in c.nodes.values() {
        assert_eq!(
            r.list_local("t", "").await.unwrap().len(),
            3,
            "node {}",
            r.id()
        );
        let m = r.metrics().borrow().membership_config.clone();
        let now: BTreeSet<u64> = m.membership().voter_ids().collect();
        assert_eq!(now, voters);
    }
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}
