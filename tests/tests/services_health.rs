//! Service health checks and rolling updates end to end: real `bramble-master`,
//! `bramble-agent` and `bramble service scheduler` processes on loopback, instances that are
//! real HTTP servers (python3's http.server) probed by the scheduler, made to fail for real.

use bramble_proto::TaskState;
use bramble_tests::processes::*;
use bramble_tests::services::*;
use bramble_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_http_check_starts_failing_is_killed_with_the_reason_and_replaced() {
    if python3_missing() {
        eprintln!("skipped: no python3 for the instances' HTTP servers");
        return;
    }
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // Own port range: the two tests' agents run at once on this host, and with the same
    // range both offer the same ports and one test's servers fail to bind.
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("2")
            .config("ports = \"32100-32149\"\n"),
    );
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let file = net.test.path("web.toml");
    std::fs::write(&file, web_spec(&docs, 2, true, 1)).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);

    // Both pass their checks: both are endpoints, and they answer.
    let first = endpoints(&net, &scheduler, "web", 2).await;
    for e in &first {
        assert_eq!(get(e, "/ok").await, 200, "{e}");
    }
    let show = service(&net, &["show", "web"]);
    assert!(show.contains("healthy"), "{show}");
    let logs = service(&net, &["logs", "web"]);
    assert!(
        logs.contains("GET /ok"),
        "the servers' request logs: {logs}"
    );

    // One starts failing its check for real: its `ok` file goes.
    let state = net.state().await.expect("state");
    let live = instances(&state, "web");
    assert_eq!(live.len(), 2);
    let victim = live[0].0.clone();
    std::fs::remove_file(docs.join(&victim).join("ok")).expect("break the victim");
    let replaced = eventually("the failing instance is replaced", DEADLINE, || async {
        let s = net.state().await?;
        let live = instances(&s, "web");
        let running: Vec<String> = live
            .iter()
            .filter(|(_, st)| *st == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        (running.len() == 2 && !running.contains(&victim)).then_some(running)
    })
    .await;
    assert!(
        replaced.contains(&live[1].0),
        "the healthy one was left alone"
    );
    scheduler
        .logged("killing an unhealthy instance", DEADLINE)
        .await;
    // The kill's reason names the check and what it saw.
    let show = eventually("show names the kill's reason", DEADLINE, || async {
        let show = service(&net, &["show", "web"]);
        show.contains(&format!("killed {victim}")).then_some(show)
    })
    .await;
    assert!(
        show.contains("http GET /ok on PORT0") && show.contains("answered 404"),
        "{show}"
    );
    endpoints(&net, &scheduler, "web", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_whose_new_version_fails_its_checks_is_rolled_back_and_the_old_instances_keep_serving(
) {
    if python3_missing() {
        eprintln!("skipped: no python3 for the instances' HTTP servers");
        return;
    }
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("2")
            .config("ports = \"32150-32199\"\n"),
    );
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let v1 = net.test.path("web-v1.toml");
    std::fs::write(&v1, web_spec(&docs, 2, true, 1)).expect("spec file");
    service(&net, &["apply", &v1.display().to_string()]);
    endpoints(&net, &scheduler, "web", 2).await;
    let state = net.state().await.expect("state");
    let mut old: Vec<String> = instances(&state, "web")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    old.sort();

    // Version 2 never passes its check.
    let v2 = net.test.path("web-v2.toml");
    std::fs::write(&v2, web_spec(&docs, 2, false, 2)).expect("spec file");
    let applied = service(&net, &["apply", &v2.display().to_string()]);
    assert!(applied.contains("updated"), "{applied}");

    // Meanwhile the old ones never stop serving.
    let show = eventually("the rollout is rolled back", DEADLINE, || async {
        for id in &old {
            let s = net.state().await?;
            if !instances(&s, "web")
                .iter()
                .any(|(i, st)| i == id && *st == TaskState::Running)
            {
                panic!("old instance {id} stopped during the failed rollout");
            }
        }
        let show = service(&net, &["show", "web"]);
        show.contains("rolled back").then_some(show)
    })
    .await;
    assert!(show.contains("answered 404"), "the reason: {show}");
    scheduler
        .logged("rolled back to the previous version", DEADLINE)
        .await;

    // The stored spec is version 1 again, and only the old instances run.
    let file = net.test.path("web-v1-again.toml");
    std::fs::write(&file, web_spec(&docs, 2, true, 1)).expect("spec file");
    let again = service(&net, &["apply", &file.display().to_string()]);
    assert!(
        again.contains("unchanged"),
        "the stored spec is v1 again: {again}"
    );
    let settled = eventually("only the old instances run", DEADLINE, || async {
        let s = net.state().await?;
        let mut live: Vec<String> = instances(&s, "web").into_iter().map(|(id, _)| id).collect();
        live.sort();
        (live == old).then_some(live)
    })
    .await;
    assert_eq!(settled, old);
    for e in endpoints(&net, &scheduler, "web", 2).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}");
    }
}
