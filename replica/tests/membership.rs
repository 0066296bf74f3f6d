//! Operator membership changes (`Replica::add_voter`, `Replica::remove_member`, what
//! `bramble masters add|remove` call on the leader): a node added catches up (by snapshot,
//! the log purged) before it votes; a voter cannot be added again (a wiped node must be
//! removed first); removals that would leave no majority alive, or no voter, are refused.

mod common;

use bramble_replica::ReplicaError;
use common::{put, test_tuning, Cluster};
use std::collections::BTreeSet;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(10);
const PROBE: Duration = Duration::from_secs(1);

fn voters(c: &Cluster, id: u64) -> BTreeSet<u64> {
    c.node(id)
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

fn refusal(r: Result<(), ReplicaError>) -> String {
    match r {
        Err(ReplicaError::Membership(why)) => why,
        other => panic!("expected a refused membership change, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_once_caught_up_and_unsafe_changes_are_refused() {
    let mut c = Cluster::start(3, test_tuning()).await;
    let (leader, _) = c.wait_leader(WITHIN).await;
    let followers: Vec<u64> = c.alive().into_iter().filter(|&i| i != leader).collect();
    let (a, b) = (followers[0], followers[1]);

    // A voter is not added again: a wiped one must be removed first.
    let why = refusal(
        c.node(leader)
            .add_voter(a, &c.peers[&a].to_string(), WITHIN)
            .await,
    );
    assert!(
        why.contains("still a voter") && why.contains("remove"),
        "{why}"
    );

    // With `a` down, removing `b` would leave {leader, a}: one of two alive.
    c.kill(a).await;
    let why = refusal(c.node(leader).remove_member(b, PROBE).await);
    assert!(why.contains("only 1 answer"), "{why}");
    assert_eq!(voters(&c, leader).len(), 3, "nothing was changed");
    // Removing the one that is down is fine.
    c.node(leader).remove_member(a, PROBE).await.unwrap();
    assert_eq!(voters(&c, leader), BTreeSet::from([leader, b]));

    // Enough writes that the log is purged: the new node is rebuilt from a snapshot.
    for i in 0..80 {
        c.node(leader)
            .write(put("t", &format!("k{i:03}"), b"v"))
            .await
            .unwrap();
    }
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    c.peers.insert(4, addr);
    c.start_node(4, false).await;
    c.node(leader)
        .add_voter(4, &addr.to_string(), WITHIN)
        .await
        .unwrap();
    assert_eq!(voters(&c, leader), BTreeSet::from([leader, b, 4]));
    c.wait_applied(leader, WITHIN).await;
    assert_eq!(c.node(4).list_local("t", "").await.unwrap().len(), 80);
    assert!(
        c.node(4).metrics().borrow().snapshot.is_some(),
        "node 4 caught up without a snapshot"
    );
    let members = c.node(leader).members();
    let four = members.iter().find(|m| m.id == 4).expect("member 4");
    assert!(four.voter && four.matched.is_some(), "{members:?}");
    // Every voter answers the leader's probe.
    let answering = c.node(leader).answering(WITHIN).await.unwrap();
    assert_eq!(answering, BTreeSet::from([leader, b, 4]));

    // A node that never comes stays a learner, and can be removed.
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let why = refusal(
        c.node(leader)
            .add_voter(9, &nobody.to_string(), Duration::from_secs(1))
            .await,
    );
    assert!(why.contains("has not caught up"), "{why}");
    assert!(c
        .node(leader)
        .members()
        .iter()
        .any(|m| m.id == 9 && !m.voter));
    c.node(leader).remove_member(9, PROBE).await.unwrap();
    assert!(!c.node(leader).members().iter().any(|m| m.id == 9));
    // Unknown ids and addresses that are not IP:PORT are refused.
    let why = refusal(c.node(leader).remove_member(42, PROBE).await);
    assert!(why.contains("not a member"), "{why}");
    let why = refusal(c.node(leader).add_voter(5, "pi-5:7000", WITHIN).await);
    assert!(why.contains("IP:PORT"), "{why}");
    let why = refusal(
        c.node(leader)
            .add_voter(5, &c.peers[&b].to_string(), WITHIN)
            .await,
    );
    assert!(why.contains("replication address"), "{why}");
    // A follower is told who leads.
    assert!(matches!(
        c.node(b).remove_member(4, PROBE).await,
        Err(ReplicaError::NotLeader { .. })
    ));
    for id in c.alive() {
        c.node(id).shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_is_not_removed() {
    let c = Cluster::start(1, test_tuning()).await;
    let why = refusal(c.node(1).remove_member(1, PROBE).await);
    assert!(why.contains("last voter"), "{why}");
    c.node(1).shutdown().await.unwrap();
}
