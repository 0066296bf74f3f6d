//! The service framework's day-2 operations end to end, on real `bramble-master`,
//! `bramble-agent` and `bramble service scheduler` processes on loopback: `bramble service
//! rollback`, an agent SIGKILLed under its instances, and agent drain.
//!
//! Each test has its own agents' port ranges (the tests of this file run at once on one host).

use bramble_frameworks::services::Spec;
use bramble_proto::messages::ClusterState;
use bramble_proto::TaskState;
use bramble_tests::processes::*;
use bramble_tests::services::*;
use bramble_tests::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The fingerprint (the version) of a spec's text.
fn fingerprint(spec: &str) -> String {
    Spec::parse("test", spec)
        .expect("a valid spec")
        .fingerprint()
}

/// Live instances of `web` that are RUNNING, by fingerprint.
fn running_by_version(state: &ClusterState) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, st) in instances(state, "web") {
        if st == TaskState::Running {
            let fp = id.split('.').nth(1).unwrap_or_default().to_string();
            *out.entry(fp).or_default() += 1;
        }
    }
    out
}

/// Waits until exactly `count` instances run, all of version `fp`, and all are healthy
/// endpoints; meanwhile the service never has fewer than `min_healthy` healthy endpoints.
async fn settle_on(
    net: &LoopbackCluster,
    scheduler: &Proc,
    fp: &str,
    count: usize,
    min_healthy: usize,
) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let healthy = endpoints_now(net, "web");
        assert!(
            healthy.len() >= min_healthy,
            "fewer than {min_healthy} healthy instances during the rollout: {healthy:?}\n{}",
            service(net, &["show", "web"])
        );
        let state = net.state().await;
        let versions = state.as_ref().map(running_by_version).unwrap_or_default();
        let only_fp = versions.len() == 1 && versions.get(fp) == Some(&count);
        let live = state.as_ref().map_or(0, |s| instances(s, "web").len());
        if only_fp && live == count && healthy.len() == count {
            return;
        }
        if tokio::time::Instant::now() >= until {
            let log = scheduler.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {count} healthy instances of {fp} (running: {versions:?}, healthy: {healthy:?})\n{}\nscheduler log (newest first):\n{}",
                service(net, &["show", "web"]),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_version_as_a_rolling_update_keeping_the_count() {
    if python3_missing() {
        eprintln!("SKIP: no python3 for the instances' HTTP servers");
        return;
    }
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("2")
            .mem_mib(1024)
            .config("ports = \"32200-32249\"\n"),
    );
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let apply = |text: String, file: &str| {
        let path = net.test.path(file);
        std::fs::write(&path, text).expect("spec file");
        service(&net, &["apply", &path.display().to_string()])
    };
    // No history yet: nothing to go back to, and nothing is changed.
    apply(web_spec(&docs, 2, true, 1), "v1.toml");
    let (v1, v2) = (
        fingerprint(&web_spec(&docs, 2, true, 1)),
        fingerprint(&web_spec(&docs, 2, true, 2)),
    );
    let refused = bramble(&net, &["service", "rollback", "web"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("no previous version"), "{why}");
    settle_on(&net, &scheduler, &v1, 2, 0).await;

    // Version 2 rolls out, then is scaled to 3.
    let updated = apply(web_spec(&docs, 2, true, 2), "v2.toml");
    assert!(updated.contains("updated"), "{updated}");
    settle_on(&net, &scheduler, &v2, 2, 2).await;
    service(&net, &["scale", "web", "3"]);
    settle_on(&net, &scheduler, &v2, 3, 2).await;

    // Back to version 1, one at a time, never below min_healthy (all 3), keeping 3.
    let started = Instant::now();
    let out = service(&net, &["rollback", "web"]);
    assert!(
        out.contains(&format!("rolling back from {v2} to {v1}")),
        "{out}"
    );
    settle_on(&net, &scheduler, &v1, 3, 3).await;
    eprintln!(
        "rollback of 3 instances to all healthy: {} ms",
        started.elapsed().as_millis()
    );
    let again = apply(web_spec(&docs, 3, true, 1), "v1-again.toml");
    assert!(
        again.contains("unchanged"),
        "the stored spec is v1: {again}"
    );
    let show = eventually("the rollout is shown done", DEADLINE, || async {
        let show = service(&net, &["show", "web"]);
        show.contains(&format!("rollout {v2} -> {v1}: done"))
            .then_some(show)
    })
    .await;
    for e in endpoints(&net, &scheduler, "web", 3).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}: {show}");
    }

    // The version rolled back from is history now: a second rollback undoes the first.
    let out = service(&net, &["rollback", "web"]);
    assert!(
        out.contains(&format!("rolling back from {v1} to {v2}")),
        "{out}"
    );
    settle_on(&net, &scheduler, &v2, 3, 3).await;
}
