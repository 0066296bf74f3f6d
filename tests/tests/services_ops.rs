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
        // The status record (written at most once a second) lists exactly what runs.
        let caught_up = state
            .as_ref()
            .is_some_and(|s| first_ports(s, "web") == endpoint_ports(&healthy));
        if only_fp && live == count && healthy.len() == count && caught_up {
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
    let c = cluster_with(agent_offering("32200-32249").mem_mib(1024)).await;
    let (net, scheduler) = (&c.net, &c.scheduler);

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let apply = |text: String, file: &str| {
        let path = net.test.path(file);
        std::fs::write(&path, text).expect("spec file");
        service(net, &["apply", &path.display().to_string()])
    };
    // No history yet: nothing to go back to, and nothing is changed.
    apply(web_spec(&docs, 2, true, 1), "v1.toml");
    let (v1, v2) = (
        fingerprint(&web_spec(&docs, 2, true, 1)),
        fingerprint(&web_spec(&docs, 2, true, 2)),
    );
    let refused = bramble(net, &["service", "rollback", "web"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("no previous version"), "{why}");
    settle_on(net, scheduler, &v1, 2, 0).await;

    // Version 2 rolls out, then is scaled to 3.
    let updated = apply(web_spec(&docs, 2, true, 2), "v2.toml");
    assert!(updated.contains("updated"), "{updated}");
    settle_on(net, scheduler, &v2, 2, 2).await;
    service(net, &["scale", "web", "3"]);
    settle_on(net, scheduler, &v2, 3, 2).await;

    // Back to version 1, one at a time, never below min_healthy (all 3), keeping 3.
    let started = Instant::now();
    let out = service(net, &["rollback", "web"]);
    assert!(
        out.contains(&format!("rolling back from {v2} to {v1}")),
        "{out}"
    );
    settle_on(net, scheduler, &v1, 3, 3).await;
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
        let show = service(net, &["show", "web"]);
        show.contains(&format!("rollout {v2} -> {v1}: done"))
            .then_some(show)
    })
    .await;
    for e in endpoints(net, scheduler, "web", 3).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}: {show}");
    }

    // The version rolled back from is history now: a second rollback undoes the first.
    let out = service(net, &["rollback", "web"]);
    assert!(
        out.contains(&format!("rolling back from {v1} to {v2}")),
        "{out}"
    );
    settle_on(net, scheduler, &v2, 3, 3).await;
}

/// A command service whose instances just sleep.
fn sleepy(instances: u32) -> String {
    format!(
        r#"name = "sleepy"
instances = {instances}
cmd = 'exec sleep 600'
cpus = 0.1
mem = 16
ports = 1
[restart]
backoff_secs = 0.2
"#
    )
}

/// RUNNING instances of `sleepy`, by agent id.
fn sleepy_by_agent(state: &ClusterState) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &state.tasks {
        if t.id.as_str().starts_with("sleepy.") && t.state == TaskState::Running {
            out.entry(t.agent_id.to_string())
                .or_default()
                .push(t.id.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_an_agent_killed_for_real_run_on_another_agent() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // Orphans of the killed agent end 5 s after its last heartbeat.
    let recovery = "[recovery]\nexecutor_reconnect_timeout_secs = 5\n";
    let a = AgentCmd::new("agent-a")
        .cpus("2")
        .config(&format!("ports = \"32250-32274\"\n{recovery}"));
    let b = AgentCmd::new("agent-b")
        .cpus("2")
        .config(&format!("ports = \"32275-32299\"\n{recovery}"));
    let mut agents = [
        (net.start_agent("agent-a", &a), net.work_dir(&a)),
        (net.start_agent("agent-b", &b), net.work_dir(&b)),
    ];
    eventually("both agents register", DEADLINE, || async {
        let s = net.state().await?;
        (s.agents.iter().filter(|a| a.connected).count() == 2).then_some(())
    })
    .await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;
    let file = net.test.path("sleepy.toml");
    std::fs::write(&file, sleepy(4)).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);
    running(&net, "sleepy", 4).await;

    // SIGKILL the agent holding the most instances (its tasks' processes live on as
    // orphans for a while: only the master's verdict moves them).
    let state = net.state().await.expect("state");
    let placed = sleepy_by_agent(&state);
    let (victim_id, on_victim) = placed
        .iter()
        .max_by_key(|(_, ids)| ids.len())
        .map(|(a, ids)| (a.clone(), ids.clone()))
        .expect("instances placed");
    let by_name: BTreeMap<String, String> = state
        .agents
        .iter()
        .map(|a| (a.id.to_string(), a.hostname.clone()))
        .collect();
    let victim_index = agents
        .iter()
        .position(|(_, dir)| {
            std::fs::read_to_string(dir.join("meta").join("agent_id"))
                .is_ok_and(|id| id.trim() == victim_id)
        })
        .expect("the victim's work dir names its agent id");
    eprintln!(
        "killing agent {victim_id} ({}) under {} of 4 instances",
        by_name.get(&victim_id).map_or("?", String::as_str),
        on_victim.len()
    );
    let started = Instant::now();
    let (victim, victim_dir) = &mut agents[victim_index];
    victim.kill_hard();
    let elsewhere = eventually(
        "the killed agent's instances run on the other agent",
        DEADLINE,
        || async {
            let s = net.state().await?;
            let placed = sleepy_by_agent(&s);
            let live = instances(&s, "sleepy").len();
            let moved = !placed.contains_key(&victim_id)
                && placed.values().map(Vec::len).sum::<usize>() == 4
                && live == 4;
            moved.then_some(placed)
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!(
        "agent SIGKILL -> its {} instance(s) running on another agent: {} ms (master agent timeout 2 s)",
        on_victim.len(),
        took.as_millis()
    );
    for ids in elsewhere.values() {
        for id in ids {
            assert!(!on_victim.contains(id), "{id} was on the killed agent");
        }
    }
    // The killed agent's orphans end by themselves.
    let dir = victim_dir.clone();
    eventually(
        "the killed agent's orphaned instances end",
        DEADLINE,
        || async { processes_under(&dir, &[]).is_empty().then_some(()) },
    )
    .await;
}

/// The agent id kept in an agent's work dir (it is the master's to give).
fn agent_id_in(work_dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(work_dir.join("meta").join("agent_id"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_agents_instances_move_keeping_min_healthy_and_undrain_brings_offers_back() {
    if python3_missing() {
        eprintln!("SKIP: no python3 for the instances' HTTP servers");
        return;
    }
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let a = AgentCmd::new("agent-a")
        .cpus("2")
        .mem_mib(1024)
        .config("ports = \"32300-32324\"\n");
    let b = AgentCmd::new("agent-b")
        .cpus("2")
        .mem_mib(1024)
        .config("ports = \"32325-32349\"\n");
    let _agent_a = net.start_agent("agent-a", &a);
    let _agent_b = net.start_agent("agent-b", &b);
    let dirs = [net.work_dir(&a), net.work_dir(&b)];
    let ids: Vec<String> = eventually("both agents register", DEADLINE, || async {
        let s = net.state().await?;
        let ids: Vec<String> = dirs.iter().filter_map(|d| agent_id_in(d)).collect();
        (s.agents.iter().filter(|a| a.connected).count() == 2 && ids.len() == 2).then_some(ids)
    })
    .await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;
    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let file = net.test.path("web.toml");
    let spec = web_spec(&docs, 2, true, 1);
    std::fs::write(&file, &spec).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);
    let fp = fingerprint(&spec);
    settle_on(&net, &scheduler, &fp, 2, 0).await;

    // Drain the agent holding the most instances.
    let state = net.state().await.expect("state");
    let on = |s: &ClusterState, agent: &str| -> Vec<String> {
        s.tasks
            .iter()
            .filter(|t| t.id.as_str().starts_with("web.") && !t.state.is_terminal())
            .filter(|t| t.agent_id.as_str() == agent)
            .map(|t| t.id.to_string())
            .collect()
    };
    let (victim, other) = if on(&state, &ids[0]).len() >= on(&state, &ids[1]).len() {
        (ids[0].clone(), ids[1].clone())
    } else {
        (ids[1].clone(), ids[0].clone())
    };
    let leaving = on(&state, &victim);
    assert!(!leaving.is_empty());
    let started = Instant::now();
    let out = bramble(&net, &["agent", "drain", &victim]);
    assert!(
        out.status.success(),
        "drain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));
    scheduler.logged("agent draining", DEADLINE).await;
    // Every instance moves to the other agent; min_healthy (all 2) holds throughout.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let healthy = endpoints_now(&net, "web");
        assert!(
            healthy.len() >= 2,
            "fewer than 2 healthy instances while draining: {healthy:?}\n{}",
            service(&net, &["show", "web"])
        );
        let s = net.state().await.expect("state");
        let there = on(&s, &victim);
        let here = on(&s, &other);
        let running_here = s
            .tasks
            .iter()
            .filter(|t| here.contains(&t.id.to_string()) && t.state == TaskState::Running)
            .count();
        let caught_up = first_ports(&s, "web") == endpoint_ports(&healthy);
        if there.is_empty() && running_here == 2 && healthy.len() == 2 && caught_up {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the drained agent's instances did not move: still there {there:?}, here {here:?}\n{}",
            scheduler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "drain of {} instance(s) to all moved and healthy: {} ms",
        leaving.len(),
        started.elapsed().as_millis()
    );
    for e in endpoints(&net, &scheduler, "web", 2).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}");
    }
    // Operators see it.
    let agents = bramble(&net, &["agents"]);
    let agents = String::from_utf8_lossy(&agents.stdout).into_owned();
    let row = agents
        .lines()
        .find(|l| l.contains(&victim))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("drained"), "{agents}");
    let status = bramble(&net, &["status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(&format!("({victim})")) && status.contains("drained"),
        "{status}"
    );

    // A framework subscribing now is told, and offered only the other agent, allocation after
    // allocation.
    let mut fw = net.framework("watcher").await;
    fw.until("told of the drain", |f| {
        f.other
            .iter()
            .any(|e| matches!(e, bramble_tests::framework::Event::AgentDraining(a, true) if a.as_str() == victim))
            .then_some(())
    })
    .await;
    for _ in 0..3 {
        let offer = fw
            .until("an offer from the other agent", |f| {
                f.offers
                    .iter()
                    .find(|o| o.agent_id.as_str() == other)
                    .cloned()
            })
            .await;
        assert!(
            fw.offers.iter().all(|o| o.agent_id.as_str() != victim),
            "offered the drained agent: {:?}",
            fw.offers
        );
        fw.offers.retain(|o| o.id != offer.id);
        fw.driver
            .decline_offer(
                offer.id,
                bramble_proto::messages::Filters {
                    refuse_seconds: 0.0,
                },
            )
            .expect("decline");
    }

    // Undrained: its resources are offered again.
    let out = bramble(&net, &["agent", "undrain", &victim]);
    assert!(
        out.status.success(),
        "undrain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fw.until("an offer from the undrained agent", |f| {
        f.offers
            .iter()
            .any(|o| o.agent_id.as_str() == victim)
            .then_some(())
    })
    .await;
    assert!(fw
        .other
        .iter()
        .any(|e| matches!(e, bramble_tests::framework::Event::AgentDraining(a, false) if a.as_str() == victim)));
    let agents = bramble(&net, &["agents"]);
    let agents = String::from_utf8_lossy(&agents.stdout).into_owned();
    assert!(!agents.contains("drained"), "{agents}");
}
