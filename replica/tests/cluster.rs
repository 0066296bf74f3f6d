//! Replica groups on loopback QUIC: election, replication, leader kills with restarts,
//! catch-up from disk, rebuild by snapshot, a partitioned leader, compare-and-set races,
//! hostile peers, membership.

mod common;

use bramble_proto::identity::Role;
use bramble_replica::network::{Net, Refusal, Reply, Request, ALPN};
use bramble_replica::store::Joined;
use bramble_replica::{Command, ReplicaError, Response, Role as ReplicaRole};
use common::{put, test_tuning, Cluster};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A liveness bound, not a speed target: CI runs the whole workspace's tests in parallel on a
/// loaded machine in a debug build. The 2 s failover target is `bench/replica.sh`'s to
/// measure; the tests print what they see.
const FAILOVER_LIVENESS: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_replicate_writes() {
    let c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
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
    c.wait_applied(leader, Duration::from_secs(10)).await;
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
    // A write as leader is never forwarded: on a follower it is refused and nothing is written.
    match c
        .node(follower)
        .write_as_leader(put("t", "as-leader", b"v"))
        .await
    {
        Err(ReplicaError::NotLeader {
            leader: Some((id, _)),
        }) => assert_eq!(id, leader),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(
        c.node(follower).read_barrier().await,
        Err(ReplicaError::NotLeader { .. })
    ));
    c.node(leader).read_barrier().await.unwrap();
    assert!(c
        .node(leader)
        .read_local("t", "as-leader")
        .await
        .unwrap()
        .is_none());
    c.node(leader)
        .write_as_leader(put("t", "as-leader", b"v"))
        .await
        .unwrap();
    assert!(c
        .node(leader)
        .read("t", "as-leader")
        .await
        .unwrap()
        .is_some());
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Kills the leader again and again while a writer keeps writing: a new leader every time
/// (within [`FAILOVER_LIVENESS`]; the times are printed), and every acknowledged write on every node at the end.
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
        let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
        // Let the writer get some writes through this leader.
        let before = acked.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(10);
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
        let (new_leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
        let failover = killed.elapsed();
        stopping.await.unwrap();
        println!("round {round}: leader {leader} killed, {new_leader} leads after {failover:?}");
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
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
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
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
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
    // anything it could replay, so only a snapshot can rebuild it. It rejoins through a
    // membership change, never as the voter it was (it forgot its vote and its log): out of
    // the voters first...
    c.kill(follower).await;
    std::fs::remove_dir_all(c.dir(follower)).unwrap();
    assert_eq!(
        c.node(leader).joined().await.unwrap(),
        Some(Joined::Bootstrapped)
    );
    let others: BTreeSet<u64> = c.alive().into_iter().collect();
    c.node(leader).change_membership(others).await.unwrap();
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
    // ...then started without bootstrap: an empty store initializes nothing and waits...
    c.start_node(follower, false).await;
    assert!(!c.node(follower).raft().is_initialized().await.unwrap());
    assert_eq!(c.node(follower).joined().await.unwrap(), None);
    // ...added as a learner (caught up by a snapshot), then promoted.
    c.node(leader)
        .add_learner(follower, &c.peers[&follower].to_string())
        .await
        .unwrap();
    c.node(leader)
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    c.wait_applied(leader, Duration::from_secs(10)).await;
    let rebuilt = c.node(follower);
    assert!(
        rebuilt.metrics().borrow().snapshot.is_some(),
        "the wiped node was not rebuilt by a snapshot"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = rebuilt.metrics();
    while rebuilt.joined().await.unwrap() != Some(Joined::Added) {
        assert!(Instant::now() < deadline, "the join was not recorded");
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
    }
    assert_eq!(rebuilt.list_local("t", "a").await.unwrap().len(), 30);
    assert_eq!(rebuilt.list_local("t", "b").await.unwrap().len(), 120);
    // And it is a full member again: a voter, following the leader.
    assert_eq!(rebuilt.leader().map(|(id, _)| id), Some(leader));
    let voters: BTreeSet<u64> = rebuilt
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, BTreeSet::from([1, 2, 3]));
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A leader cut off from the others cannot commit; the majority elects another and goes on;
/// healed, the old leader follows and its uncommitted write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_cannot_commit() {
    let c = Cluster::start(3, test_tuning()).await;
    let (old, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    c.node(old).write(put("t", "before", b"1")).await.unwrap();
    c.node(old).isolate(true);
    let partitioned = Instant::now();

    // The majority elects a new leader (the time is printed; bench/replica.sh measures it).
    let majority: Vec<_> = c.alive().into_iter().filter(|id| *id != old).collect();
    let mut set = tokio::task::JoinSet::new();
    for id in &majority {
        let r = c.node(*id).clone();
        let majority = majority.clone();
        set.spawn(async move {
            r.raft()
                .wait(Some(FAILOVER_LIVENESS))
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
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    assert_ne!(leader, old);
    c.node(leader)
        .write(put("t", "healed", b"4"))
        .await
        .unwrap();
    c.wait_applied(leader, Duration::from_secs(10)).await;
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

/// What a writer puts: who wrote it, and the version it replaced (so every read of the key
/// shows one link of the version chain).
fn cas_value(w: usize, attempt: u32, from: Option<u64>) -> Vec<u8> {
    let from = from.map_or("-".to_string(), |v| v.to_string());
    format!("{w}/{attempt}/{from}").into_bytes()
}

/// The version a value says it replaced.
fn cas_from(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).expect("utf-8 value");
    let from = s.rsplit('/').next().expect("a from");
    (from != "-").then(|| from.parse().expect("a version"))
}

/// Links of the version chain: replaced version → the versions that replaced it.
type Links = BTreeMap<Option<u64>, BTreeSet<u64>>;

/// Until `r` knows a leader (an election may be under way), then for a metrics change
/// (bounded): a retry never spins on an instant error.
async fn wait_for_leader(r: &bramble_replica::Replica) {
    let known = r
        .raft()
        .wait(Some(FAILOVER_LIVENESS))
        .metrics(|m| m.current_leader.is_some(), "a leader known")
        .await;
    assert!(known.is_ok(), "node {}: no leader known", r.id());
    let mut m = r.metrics();
    let _ = tokio::time::timeout(Duration::from_millis(50), m.changed()).await;
}

/// Writers on every node race compare-and-sets on one key: each version is won exactly once.
/// A write whose outcome is unknown (a timeout, a forward with no answer) is settled by
/// reading: every value names the version it replaced, so every read shows a link of the
/// chain, and the writer learns whether its own value landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_has_one_winner_per_version() {
    let c = Cluster::start(3, test_tuning()).await;
    let links: Arc<Mutex<Links>> = Arc::default();
    let wins: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..6usize {
        let r = c.node(1 + (w as u64 % 3)).clone();
        let (links, wins) = (links.clone(), wins.clone());
        tasks.push(tokio::spawn(async move {
            let link = |from: Option<u64>, to: u64| {
                links.lock().unwrap().entry(from).or_default().insert(to);
            };
            // A linearizable read, retried (waiting for a leader) until it answers; records
            // the link it shows.
            let read = || async {
                for _ in 0..100 {
                    match r.read("t", "counter").await {
                        Ok(v) => {
                            if let Some(v) = &v {
                                link(cas_from(&v.value), v.version);
                            }
                            return v;
                        }
                        Err(_) => wait_for_leader(&r).await,
                    }
                }
                panic!("writer {w}: no read answered");
            };
            let mut mine = 0;
            let mut attempts = 0u32;
            let mut unknown = 0;
            while mine < 5 {
                attempts += 1;
                assert!(attempts < 500, "writer {w} starved");
                let current = read().await.map(|v| v.version);
                let value = cas_value(w, attempts, current);
                let cmd = Command::CompareAndSet {
                    table: "t".into(),
                    key: "counter".into(),
                    expected: current,
                    value: Some(value.clone()),
                };
                match r.write(cmd).await {
                    Ok(Response::Written { version: Some(v) }) => {
                        link(current, v);
                        wins.lock().unwrap().push(v);
                        mine += 1;
                    }
                    Ok(Response::Conflict { current: now }) => assert_ne!(now, current),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) if e.outcome_unknown() => {
                        // Did it land? Only if the key holds our value now; if another
                        // writer replaced it meanwhile, that writer's read recorded the link.
                        unknown += 1;
                        wait_for_leader(&r).await;
                        if let Some(now) = read().await {
                            if now.value == value {
                                wins.lock().unwrap().push(now.version);
                                mine += 1;
                            }
                        }
                    }
                    Err(_) => wait_for_leader(&r).await,
                }
            }
            if unknown > 0 {
                println!("writer {w}: {unknown} writes with an unknown outcome");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let last = c.node(1).read("t", "counter").await.unwrap().unwrap();
    let mut links = links.lock().unwrap().clone();
    links
        .entry(cas_from(&last.value))
        .or_default()
        .insert(last.version);
    // No version was replaced twice…
    for (from, to) in &links {
        assert_eq!(to.len(), 1, "version {from:?} was won by {to:?}");
    }
    // …and the links form one chain from the absent key to the last version, through every
    // win a writer saw.
    let mut chain = BTreeSet::new();
    let mut at = None;
    while let Some(next) = links.get(&at) {
        let next = *next.first().expect("a link");
        assert!(chain.insert(next), "a cycle at {next}");
        at = Some(next);
    }
    assert_eq!(
        at,
        Some(last.version),
        "the chain does not reach the last version"
    );
    let wins = wins.lock().unwrap().clone();
    assert_eq!(wins.len(), 30);
    for v in &wins {
        assert!(chain.contains(v), "win {v} is not on the chain {chain:?}");
    }
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Garbage from a node-certified peer is dropped with a log line; a peer with another role
/// is refused; well-formed hostile Raft calls (huge terms, a non-member leader or candidate,
/// a snapshot chunk far past what was sent) are refused; the group carries on.
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
    // Well-formed but hostile Raft calls from a node certificate: each is refused (the
    // stream reset, no answer) before openraft sees it.
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    let peer = Net::bind(&c.creds(Role::Node), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let vote = c.node(leader).metrics().borrow().vote;
    let huge_term = |id| {
        Request::Vote(openraft::raft::VoteRequest::new(
            openraft::Vote::new(u64::MAX - 1, id),
            None,
        ))
    };
    let hostile = [
        // A huge-term vote from a non-member, and one claiming to be a member (`term + 1`
        // would overflow once a node took that term).
        ("huge-term vote from a non-member", huge_term(99)),
        ("huge-term vote from a member's id", huge_term(leader)),
        (
            "vote from a non-member",
            Request::Vote(openraft::raft::VoteRequest::new(
                openraft::Vote::new(vote.leader_id().term + 1, 99),
                None,
            )),
        ),
        // A snapshot chunk at a 1 TiB offset: openraft would grow its buffer to it.
        (
            "snapshot chunk at a huge offset",
            Request::InstallSnapshot(openraft::raft::InstallSnapshotRequest {
                vote,
                meta: openraft::SnapshotMeta {
                    last_log_id: None,
                    last_membership: Default::default(),
                    snapshot_id: "hostile".into(),
                },
                offset: 1 << 40,
                data: vec![1],
                done: false,
            }),
        ),
        // Appends from a leader that is not a member.
        (
            "append from a non-member",
            Request::AppendEntries(openraft::raft::AppendEntriesRequest {
                vote: openraft::Vote::new_committed(vote.leader_id().term + 1, 99),
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            }),
        ),
    ];
    for follower in c.alive() {
        for (what, req) in &hostile {
            let answer = peer
                .call(&c.peers[&follower].to_string(), req, Duration::from_secs(5))
                .await;
            assert!(
                answer.is_err(),
                "node {follower} answered a {what}: {answer:?}"
            );
        }
    }
    peer.close();
    // Still one group, the same term, still committing through every node.
    let (now, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    assert_eq!(now, leader);
    for r in c.nodes.values() {
        assert!(r.term() < 1 << 32, "node {} took term {}", r.id(), r.term());
        r.write(put("t", &format!("still{}", r.id()), b"ok"))
            .await
            .unwrap();
    }
    c.node(1).write(put("t", "still", b"ok")).await.unwrap();
    c.wait_applied(leader, Duration::from_secs(10)).await;
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A peer (any node certificate) forwards a write over the command limit straight to the
/// leader: it is refused, typed, and the group goes on committing (an entry that large would
/// make replication frames no follower accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_oversized_write_is_refused() {
    let c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    let peer = Net::bind(&c.creds(Role::Node), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Three values under the value limit, a batch over the command limit.
    let value = vec![7u8; bramble_replica::types::MAX_VALUE_BYTES - 1024];
    let batch = Command::Batch(
        (0..3)
            .map(|i| put("t", &format!("big{i}"), &value))
            .collect(),
    );
    let reply = peer
        .call(
            &c.peers[&leader].to_string(),
            &Request::Write(batch),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, Reply::Write(Err(Refusal::Invalid(_)))),
        "{reply:?}"
    );
    peer.close();
    c.node(leader)
        .write(put("t", "after", b"ok"))
        .await
        .unwrap();
    c.wait_applied(leader, Duration::from_secs(10)).await;
    for r in c.nodes.values() {
        assert!(r.read_local("t", "after").await.unwrap().is_some());
        assert!(r.list_local("t", "big").await.unwrap().is_empty());
    }
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// A fourth node joins as a learner, becomes a voter, and a voter is removed; the group
/// keeps committing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_and_shrinks_without_downtime() {
    let mut c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(FAILOVER_LIVENESS).await;
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
    c.wait_applied(leader, Duration::from_secs(10)).await;
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

/// A node certificate is no proof of being a master (every card holds one): a replica takes
/// connections only from its group's members' addresses. A listener admitting only another
/// address refuses a caller on loopback that holds a node certificate; admitted, it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_groups_addresses_may_connect() {
    let c = Cluster::start(1, test_tuning()).await;
    let creds = c.creds(Role::Node);
    let listener = Net::bind(&creds, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.admit_only(["10.9.9.9".parse().unwrap()]);
    tokio::spawn(listener.clone().serve(|_req: Request| async {
        Some(Reply::Write(Err(Refusal::Failed("answered".into()))))
    }));
    let caller = Net::bind(&creds, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let request = Request::Write(put("t", "k", b"v"));
    let call = || caller.call(&addr, &request, Duration::from_secs(3));
    assert!(
        call().await.is_err(),
        "a caller from an address of no member was answered"
    );
    listener.admit("127.0.0.1".parse().unwrap());
    let reply = call().await.expect("an admitted caller is answered");
    assert!(
        matches!(reply, Reply::Write(Err(Refusal::Failed(ref why))) if why == "answered"),
        "{reply:?}"
    );
    caller.close();
    listener.close();
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Makes `id` the leader by a fresh election (its log is as complete as anyone's: it just
/// followed); returns the term it leads in.
async fn elect(c: &Cluster, id: u64) -> u64 {
    for _ in 0..20 {
        let _ = c.node(id).raft().trigger().elect().await;
        let led = c
            .node(id)
            .raft()
            .wait(Some(Duration::from_secs(2)))
            .metrics(|m| m.state == openraft::ServerState::Leader, "leading")
            .await;
        if let Ok(m) = led {
            return m.current_term;
        }
    }
    panic!("node {id} never won an election");
}

/// A leader's writes fenced to the term it loaded its state in (`Replica::write_in_term`):
/// deposed and elected again, it writes nothing under the old term, on any replica, while
/// a plain `write_as_leader` would have gone through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fenced_to_a_term_land_only_in_that_term() {
    let c = Cluster::start(3, test_tuning()).await;
    let (first, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    let loaded_in = c.node(first).term();
    c.node(first)
        .write_in_term(loaded_in, put("t", "in-term", b"1"))
        .await
        .expect("a write in the leader's own term");

    // Another leads for a while and writes; then `first` is elected again.
    let other = c
        .alive()
        .into_iter()
        .find(|id| *id != first)
        .expect("a peer");
    elect(&c, other).await;
    c.node(other)
        .write_as_leader(put("t", "between", b"2"))
        .await
        .expect("the other leader writes");
    let again = elect(&c, first).await;
    assert!(again > loaded_in, "{again} > {loaded_in}");

    let fenced = c
        .node(first)
        .write_in_term(loaded_in, put("t", "stale", b"3"))
        .await;
    match fenced {
        // `now` is `again`, or later if an election happened by itself meanwhile.
        Err(ReplicaError::Fenced { expected, now }) => {
            assert_eq!(expected, loaded_in);
            assert!(now >= again, "{now} >= {again}");
        }
        other => panic!("a write fenced to term {loaded_in} in term {again}: {other:?}"),
    }
    // What the fence closes: the same node, leading again, writes unfenced.
    c.node(first)
        .write_as_leader(put("t", "unfenced", b"4"))
        .await
        .expect("an unfenced write");
    c.node(first)
        .write_in_term(again, put("t", "new-term", b"5"))
        .await
        .expect("a write fenced to the current term");
    c.wait_applied(first, Duration::from_secs(10)).await;
    for r in c.nodes.values() {
        let keys: Vec<String> = r
            .list_local("t", "")
            .await
            .expect("list")
            .into_iter()
            .map(|row| row.key)
            .collect();
        assert_eq!(
            keys,
            ["between", "in-term", "new-term", "unfenced"],
            "node {}",
            r.id()
        );
    }
    // A fence is refused where it cannot be decided: inside a batch, inside a fence.
    let nested = Command::Batch(vec![Command::InTerm {
        term: again,
        command: Box::new(put("t", "x", b"6")),
    }]);
    assert!(c.node(first).write_as_leader(nested).await.is_err());
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

/// Polls until a leader every node follows is none of `not`, in a term after `after`.
async fn leader_other_than(c: &Cluster, not: &[u64], after: u64) -> u64 {
    let deadline = Instant::now() + FAILOVER_LIVENESS;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (leader, _) = c.wait_leader(left.max(Duration::from_millis(1))).await;
        if !not.contains(&leader) && c.node(leader).term() > after {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "still led by {leader} (term {}) {FAILOVER_LIVENESS:?} after abdicating",
            c.node(leader).term()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A leader that cannot do its job hands the leadership away (`Replica::abdicate`): another
/// node is elected in a later term and commits. The hold ends with the hand-over: the new
/// leader abdicating in turn is replaced too, and the first node, no longer held back, may
/// lead again. A node that does not lead has nothing to hand over and is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abdicating_leader_is_replaced_and_the_hold_ends_with_the_hand_over() {
    let c = Cluster::start(3, test_tuning()).await;
    let (first, _) = c.wait_leader(FAILOVER_LIVENESS).await;
    let term = c.node(first).term();
    let hold = Duration::from_secs(30);
    let at = Instant::now();
    c.node(first).abdicate(term, hold);
    let second = leader_other_than(&c, &[first], term).await;
    eprintln!(
        "leader {first} abdicated; {second} leads after {:?}",
        at.elapsed()
    );
    c.node(second)
        .write_as_leader(put("t", "after", b"1"))
        .await
        .expect("the new leader commits");

    // Cleared by the hand-over task once node `first` sees the new term.
    let until = Instant::now() + FAILOVER_LIVENESS;
    while c.node(first).holding_back().is_some() {
        assert!(
            Instant::now() < until,
            "{first} still held back after the hand-over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let term = c.node(second).term();
    c.node(second).abdicate(term, hold);
    let third = leader_other_than(&c, &[second], term).await;
    eprintln!("then {second} abdicated; {third} leads");
    c.node(third)
        .write_as_leader(put("t", "third", b"2"))
        .await
        .expect("the third leader commits");
    // A follower asked to abdicate: nothing to hand over, nothing held back.
    c.node(second).abdicate(c.node(second).term(), hold);
    assert_eq!(c.node(second).holding_back(), None);
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}
