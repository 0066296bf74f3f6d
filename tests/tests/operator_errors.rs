//! What an operator sees when something is set up wrong (issue 22): one clear line that says
//! what is wrong and what to do, never a stream of raw errors. Real processes on loopback.

use bramble_proto::identity::files;
use bramble_tests::processes::*;
use bramble_tests::TestCluster;
use std::time::Duration;

/// How many lines of `log` contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// After the agent said what is wrong once, it stays quiet: it retries every minute, not
/// every few seconds. There is no event marking "did not retry"; a few seconds in which the
/// old backoff (at most 5 s between attempts) would have logged more lines is the test.
async fn said_once_and_backs_off(agent: &Proc, needle: &str) {
    agent.logged(needle, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = agent.log_text();
    assert_eq!(count(&log, needle), 1, "said more than once:\n{log}");
    assert_eq!(count(&log, "retrying every 60s"), 1, "{log}");
    assert_eq!(
        count(&log, "master link down"),
        0,
        "retried quickly:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_cluster_says_so_once_and_backs_off() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let other = TestCluster::new();
    let agent = net.start_agent(
        "stranger",
        &AgentCmd::new("stranger").cluster_dir(other.cluster_dir()),
    );
    said_once_and_backs_off(&agent, "this master belongs to a different cluster").await;
    let log = agent.log_text();
    assert!(
        log.contains(&net.test.cluster_id[..16]),
        "names the master's CA:\n{log}"
    );
    assert!(
        log.contains(&other.cluster_id[..16]),
        "names our CA:\n{log}"
    );
    assert!(
        log.contains("reflash the card or copy the cluster dir"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_is_from_another_cluster_says_so_once() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // The cluster's CA beside another cluster's node certificate and key.
    let other = TestCluster::new();
    let mixed = net.test.path("mixed-cluster");
    std::fs::create_dir_all(&mixed).expect("mixed dir");
    std::fs::copy(
        net.test.cluster_dir().join(files::CA_CERT),
        mixed.join(files::CA_CERT),
    )
    .expect("ca");
    for name in [
        files::cert(bramble_proto::identity::Role::Node),
        files::key(bramble_proto::identity::Role::Node),
    ] {
        std::fs::copy(other.cluster_dir().join(&name), mixed.join(&name)).expect("node files");
    }
    let agent = net.start_agent("mixed", &AgentCmd::new("mixed").cluster_dir(&mixed));
    said_once_and_backs_off(&agent, "this agent's certificate is from another cluster").await;
    let log = agent.log_text();
    assert!(log.contains("refused this agent's certificate"), "{log}");
}

#[tokio::test]
async fn a_master_whose_http_port_is_taken_serves_no_http_and_says_so() {
    let cluster = TestCluster::new();
    // Another process's port: held for the whole test.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = bramble_master::config::MasterConfig {
        http: taken.local_addr().expect("addr"),
        ..bramble_tests::fast_master_config(&cluster)
    };
    let master = bramble_tests::start_master(&cluster, &cfg).await;
    // `None` is what main.rs advertises on mDNS (no `http` TXT key, see the advertiser's
    // tests), so no one is sent to the other process.
    assert_eq!(master.http_addr, None);
    master.shutdown().await;
}
