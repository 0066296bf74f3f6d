//! Level 4: real hosts. A master host and agent hosts in network namespaces joined by a bridge,
//! avahi-daemon running on every host (when installed; CI installs it), agents carrying only
//! the cluster certificates and no master address: they find the master by mDNS.
//!
//! Root only: without root or `ip netns` each test prints `SKIP ...` and passes.

use bramble_proto::identity::Role;
use bramble_proto::messages::Offer;
use bramble_proto::{TaskReason, TaskState};
use bramble_tests::framework::{shell_task, TestFramework};
use bramble_tests::netns::{self, HostCluster};
use bramble_tests::{init_logs, operator_state, TestCluster};
use std::time::Duration;

const REGISTER: Duration = Duration::from_secs(30);

fn on_host<'a>(offers: &'a [Offer], host: &str) -> Option<&'a Offer> {
    offers
        .iter()
        .find(|o| o.attributes.get("host").map(String::as_str) == Some(host))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_with_only_certificates_find_the_master_by_mdns() {
    if netns::skip("three_agents_with_only_certificates_find_the_master_by_mdns") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(3).await;
    hc.start_agents();
    let (addr, agents) = hc.ready().await;
    assert_eq!(agents, 3);
    let master_log = hc.master.as_ref().expect("master").log_text();
    assert!(
        master_log.contains("advertising the master on mDNS"),
        "{master_log}"
    );
    for i in 0..3 {
        let log = hc.agent_log(i);
        assert!(
            log.contains("found a master of this cluster on mDNS"),
            "agent {i}: {log}"
        );
    }
    eprintln!("3 agents registered with the master at {addr} via mDNS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_another_clusters_certificates_never_joins_and_says_why() {
    if netns::skip("an_agent_with_another_clusters_certificates_never_joins_and_says_why") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(1).await;
    let stranger = TestCluster::new();
    let x = hc.add_agent_host("x1", stranger.cluster_dir());
    hc.start_agents();
    hc.wait_for_hosts(&["a1"], REGISTER).await;
    let why = bramble_tests::eventually(
        "the foreign agent logs why it ignores the master",
        REGISTER,
        || {
            let log = hc.agent_log(x);
            async move {
                log.lines()
                    .find(|l| l.contains("ignoring master") && l.contains("of another cluster"))
                    .map(str::to_string)
            }
        },
    )
    .await;
    assert!(why.contains(&hc.cluster.cluster_id), "{why}");
    // It saw the master and decided: it never dialled, so never registered.
    let log = hc.agent_log(x);
    assert!(!log.contains("registered with master"), "{log}");
    assert_eq!(
        log.matches("ignoring master").count(),
        1,
        "logged once: {log}"
    );
    let state = operator_state(&hc.cluster, hc.master_addr())
        .await
        .expect("state");
    assert_eq!(state.agents.len(), 1, "{:?}", state.agents);
    let master_log = hc.master.as_ref().expect("master").log_text();
    assert!(!master_log.contains("refusing peer"), "{master_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_the_bridge_loses_its_tasks_and_comes_back() {
    if netns::skip("an_agent_cut_off_from_the_bridge_loses_its_tasks_and_comes_back") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(3).await;
    hc.start_agents();
    let (addr, _) = hc.ready().await;
    let state = operator_state(&hc.cluster, addr).await.expect("state");
    let a1_id = state
        .agents
        .iter()
        .find(|a| a.attributes.get("host").map(String::as_str) == Some("a1"))
        .map(|a| a.id.clone())
        .expect("a1 registered");

    let mut fw =
        TestFramework::start(addr, hc.cluster.credentials(Role::Framework), "cutoff").await;
    let offer = fw
        .until("an offer from a1", |f| on_host(&f.offers, "a1").cloned())
        .await;
    fw.offers.retain(|o| o.id != offer.id);
    fw.launch(
        &offer,
        vec![shell_task(&offer, "stranded", 0.5, 32, "exec sleep 600")],
    );
    fw.state("stranded", TaskState::Running).await;

    hc.net.set_link(&hc.agent_hosts[0], false);
    let lost = fw.terminal("stranded").await;
    assert_eq!(lost.state, TaskState::Lost, "{lost:?}");
    assert_eq!(lost.reason, Some(TaskReason::AgentRemoved), "{lost:?}");

    // The work goes elsewhere.
    let elsewhere = fw
        .until("an offer from another host", |f| {
            f.offers
                .iter()
                .find(|o| o.agent_id != a1_id && o.attributes.contains_key("host"))
                .cloned()
        })
        .await;
    fw.offers.retain(|o| o.id != elsewhere.id);
    fw.launch(
        &elsewhere,
        vec![shell_task(&elsewhere, "rescued", 0.5, 32, "exec sleep 600")],
    );
    let rescued = fw.state("rescued", TaskState::Running).await;
    assert_ne!(rescued.agent_id.as_ref(), Some(&a1_id));

    // Cable back in: the agent finds the master again and re-registers under its id.
    hc.net.set_link(&hc.agent_hosts[0], true);
    hc.wait_for_hosts(&["a1", "a2", "a3"], REGISTER).await;
    let state = operator_state(&hc.cluster, addr).await.expect("state");
    assert!(
        state.agents.iter().any(|a| a.id == a1_id && a.connected),
        "a1 back under {a1_id}: {:?}",
        state.agents
    );
    fw.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_on_a_new_address_is_found_again_by_every_agent() {
    if netns::skip("a_master_restarted_on_a_new_address_is_found_again_by_every_agent") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(3).await;
    hc.start_agents();
    let (old, _) = hc.ready().await;

    hc.kill_master();
    let mut host = hc.master_host.clone();
    hc.net.move_host(&mut host, 99);
    hc.master_host = host;
    hc.start_master();
    let new = hc.master_addr();
    assert_ne!(old, new);

    hc.wait_for_hosts(&["a1", "a2", "a3"], REGISTER).await;
    // The master lists an agent a moment before the agent logs the master's answer.
    for i in 0..3 {
        bramble_tests::eventually(
            &format!("agent {i} logs its second registration"),
            REGISTER,
            || {
                let log = hc.agent_log(i);
                async move { (log.matches("registered with master").count() >= 2).then_some(()) }
            },
        )
        .await;
    }
    eprintln!("master moved {old} -> {new}; all 3 agents followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_an_ipv6_only_host_finds_the_master_over_ipv6() {
    if netns::skip("an_agent_on_an_ipv6_only_host_finds_the_master_over_ipv6") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(1).await;
    hc.net.drop_ipv4(&hc.agent_hosts[0]);
    hc.start_agents();
    hc.wait_for_hosts(&["a1"], REGISTER).await;
    let state = operator_state(&hc.cluster, hc.master_addr())
        .await
        .expect("state");
    let address = &state.agents[0].address;
    assert!(
        address.starts_with('[') && !address.contains("::ffff:"),
        "the agent came over IPv6: {address}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_cleanly_withdraws_its_advertisement() {
    if netns::skip("a_master_stopped_cleanly_withdraws_its_advertisement") {
        return;
    }
    init_logs();
    let mut hc = HostCluster::new(1).await;
    hc.start_agents();
    hc.ready().await;
    let master = hc.master.as_ref().expect("master");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the master");
    // The goodbye reaches the agent: it forgets the record at once instead of minutes later.
    bramble_tests::eventually(
        "the agent hears the master's mDNS goodbye",
        REGISTER,
        || {
            let log = hc.agent_log(0);
            async move {
                (log.contains("master withdrawn from mDNS")
                    || log.contains("master no longer on mDNS"))
                .then_some(())
            }
        },
    )
    .await;
    let log = hc.master.as_ref().expect("master").log_text();
    assert!(log.contains("mDNS advertisement withdrawn"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pi_job_across_three_hosts_matches_the_in_process_run_bit_for_bit() {
    use bramble_frameworks::pi::scheduler::{initial_progress, run_pi, PiJob};
    use bramble_proto::task::CommandInfo;
    use bramble_sdk::{framework_info, SchedulerConfig};
    if netns::skip("a_pi_job_across_three_hosts_matches_the_in_process_run_bit_for_bit") {
        return;
    }
    init_logs();
    const TERMS: u64 = 1_500_000_000;
    const TASKS: u64 = 12;
    let executor = CommandInfo::program(
        bramble_tests::processes::bin_dir()
            .join("bramble")
            .display()
            .to_string(),
        vec!["executor".into(), "pi".into()],
    );
    let run = |master, cluster: &TestCluster| {
        let config = SchedulerConfig::new(
            master,
            cluster.credentials(Role::Framework),
            framework_info("pi"),
        );
        let job = PiJob::new(TERMS, TASKS, executor.clone());
        let (tx, _rx) = tokio::sync::watch::channel(initial_progress(&job));
        run_pi(config, job, tx)
    };

    // Across the namespaced hosts, found by mDNS.
    let mut hc = HostCluster::new(3).await;
    hc.start_agents();
    let (addr, agents) = hc.ready().await;
    assert_eq!(agents, 3);
    let across = tokio::time::timeout(Duration::from_secs(120), run(addr, &hc.cluster))
        .await
        .expect("pi across hosts finishes")
        .expect("pi across hosts succeeds");
    assert_eq!(across.agents_used, 3, "{across:?}");

    // The same job in one process on loopback.
    let local = TestCluster::new();
    let master =
        bramble_tests::start_master(&local, &bramble_tests::fast_master_config(&local)).await;
    let agent = bramble_tests::start_agent(
        &local,
        bramble_tests::agent_options(
            &local,
            "solo",
            master.addr,
            bramble_proto::Resources::new(2.0, 512),
        ),
    )
    .await;
    bramble_tests::wait_for_agents(&master, 1).await;
    let alone = tokio::time::timeout(Duration::from_secs(120), run(master.addr, &local))
        .await
        .expect("in-process pi finishes")
        .expect("in-process pi succeeds");
    agent.shutdown().await;
    master.shutdown().await;
    assert_eq!(
        across.pi.to_bits(),
        alone.pi.to_bits(),
        "{} vs {}",
        across.pi,
        alone.pi
    );
    eprintln!(
        "pi across 3 hosts = {} (bit-identical to the in-process run)",
        across.pi
    );
}
