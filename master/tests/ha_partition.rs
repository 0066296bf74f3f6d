//! A serving leader cut off from the other masters stops serving (issue 18: "partition the
//! leader from the majority: it steps down"). openraft alone never steps such a leader down;
//! `ha/mod.rs`'s quorum lease does. Three replicated masters in this process on loopback; the
//! leader's replication is cut with `Replica::isolate` (its QUIC and HTTP stay up, as with a
//! partition that leaves agents reaching it).

use bramble_master::config::{HaConfig, MasterConfig};
use bramble_master::ha::{self, HaMaster};
use bramble_proto::identity::{init_cluster, Credentials, Role};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// The quorum lease is 1 s; a loaded machine gets some slack.
const STEP_DOWN: Duration = Duration::from_secs(10);

fn free_udp() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp port");
    s.local_addr().expect("addr")
}

fn free_tcp() -> SocketAddr {
    let s = TcpListener::bind("127.0.0.1:0").expect("tcp port");
    s.local_addr().expect("addr")
}

/// Polls `f` every 20 ms until it gives `Some`, or panics naming `what` after `within`.
async fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn serving(masters: &[HaMaster]) -> Vec<usize> {
    masters
        .iter()
        .enumerate()
        .filter(|(_, m)| m.status().borrow().serving)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_stops_serving_and_another_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("cluster");
    init_cluster(&cluster, "ha-partition").expect("cluster");
    let creds = Arc::new(Credentials::load(&cluster, Role::Node).expect("node credentials"));
    let replication: Vec<SocketAddr> = (0..3).map(|_| free_udp()).collect();
    let peers: Vec<String> = replication
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let mut masters = Vec::new();
    for i in 0..3 {
        let cfg = MasterConfig {
            cluster: cluster.clone(),
            listen: free_udp(),
            http: free_tcp(),
            state_dir: dir.path().join(format!("master-{}", i + 1)),
            heartbeat_interval_ms: 200,
            ..MasterConfig::default()
        };
        let ha = HaConfig {
            id: i as u64 + 1,
            peers: peers.clone(),
            bootstrap: true,
            ..HaConfig::default()
        };
        masters.push(
            ha::start(creds.clone(), &cfg, &ha)
                .await
                .expect("ha master"),
        );
    }
    let leader = eventually("one master serves", WAIT, || {
        let s = serving(&masters);
        (s.len() == 1).then(|| s[0])
    })
    .await;

    // Cut the leader's replication: it keeps its clients' ports, loses its majority.
    masters[leader].replica().isolate(true);
    let cut = Instant::now();
    // Never two serving at once, sampled every few milliseconds through the take-over.
    let mut stepped_down = None;
    let next = loop {
        let s = serving(&masters);
        assert!(s.len() <= 1, "masters {s:?} serve at once");
        if stepped_down.is_none() && !s.contains(&leader) {
            stepped_down = Some(cut.elapsed());
        }
        if let [next] = s[..] {
            if next != leader {
                break next;
            }
        }
        assert!(
            cut.elapsed() < WAIT,
            "no other master served; the cut-off one stopped: {stepped_down:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let stepped_down = stepped_down.expect("the cut-off leader stopped first");
    assert!(
        stepped_down < STEP_DOWN,
        "the cut-off leader served {stepped_down:?} on"
    );
    eprintln!(
        "cut-off leader stopped serving after {stepped_down:?}; master {} serves after {:?}",
        next + 1,
        cut.elapsed()
    );

    // Healed: the old leader rejoins as a standby; still exactly one serves.
    masters[leader].replica().isolate(false);
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(2) {
        assert!(serving(&masters).len() <= 1, "two masters serving at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in masters {
        m.shutdown().await;
    }
}
