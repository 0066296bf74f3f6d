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
    let c = cluster("32100-32149").await;
    let (net, scheduler) = (&c.net, &c.scheduler);

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let file = net.test.path("web.toml");
    std::fs::write(&file, web_spec(&docs, 2, true, 1)).expect("spec file");
    service(net, &["apply", &file.display().to_string()]);

    // Both pass their checks: both are endpoints, and they answer.
    let first = endpoints(net, scheduler, "web", 2).await;
    for e in &first {
        assert_eq!(get(e, "/ok").await, 200, "{e}");
    }
    let show = service(net, &["show", "web"]);
    assert!(show.contains("healthy"), "{show}");
    let logs = service(net, &["logs", "web"]);
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
        let show = service(net, &["show", "web"]);
        show.contains(&format!("killed {victim}")).then_some(show)
    })
    .await;
    assert!(
        show.contains("http GET /ok on PORT0") && show.contains("answered 404"),
        "{show}"
    );
    endpoints(net, scheduler, "web", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_whose_new_version_fails_its_checks_is_rolled_back_and_the_old_instances_keep_serving(
) {
    if python3_missing() {
        eprintln!("skipped: no python3 for the instances' HTTP servers");
        return;
    }
    let c = cluster("32150-32199").await;
    let (net, scheduler) = (&c.net, &c.scheduler);

    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let v1 = net.test.path("web-v1.toml");
    std::fs::write(&v1, web_spec(&docs, 2, true, 1)).expect("spec file");
    service(net, &["apply", &v1.display().to_string()]);
    endpoints(net, scheduler, "web", 2).await;
    let state = net.state().await.expect("state");
    let mut old: Vec<String> = instances(&state, "web")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    old.sort();

    // Version 2 never passes its check.
    let v2 = net.test.path("web-v2.toml");
    std::fs::write(&v2, web_spec(&docs, 2, false, 2)).expect("spec file");
    let applied = service(net, &["apply", &v2.display().to_string()]);
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
        let show = service(net, &["show", "web"]);
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
    let again = service(net, &["apply", &file.display().to_string()]);
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
    for e in endpoints(net, scheduler, "web", 2).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}");
    }
}

/// Instances of service `name` by health, as `/api/v1/services` reports them.
fn by_health(services: &serde_json::Value, name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = services["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == name)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| {
            (
                i["health"].as_str().unwrap_or("?").to_string(),
                i["task_id"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_on_the_masters_api_metrics_and_in_service_show() {
    if python3_missing() {
        eprintln!("skipped: no python3 for the instances' HTTP servers");
        return;
    }
    let c = cluster("32400-32449").await;
    let (net, scheduler) = (&c.net, &c.scheduler);

    // Failures are never enough to kill: `web`'s two pass, `bad`'s one never does.
    let docs = net.test.path("docs");
    std::fs::create_dir_all(&docs).expect("docs dir");
    let never_killed = |s: String| s.replace("max_failures = 2", "max_failures = 100000");
    let file = net.test.path("web.toml");
    std::fs::write(&file, never_killed(web_spec(&docs, 2, true, 1))).expect("spec file");
    service(net, &["apply", &file.display().to_string()]);
    let bad = net.test.path("bad.toml");
    let bad_spec = never_killed(web_spec(&docs, 1, false, 1))
        .replace("name = \"web\"", "name = \"bad\"")
        .replace("grace_secs = 5.0", "grace_secs = 0.0");
    std::fs::write(&bad, bad_spec).expect("spec file");
    service(net, &["apply", &bad.display().to_string()]);
    let endpoints = endpoints(net, scheduler, "web", 2).await;

    // The API: web's two healthy, on the agent, with the ports `endpoints` gave.
    let http = net.http_addr();
    let api = eventually("the API shows two healthy instances", DEADLINE, || async {
        let (code, body) = http_get(http, "/api/v1/services")
            .await
            .expect("the master's HTTP API");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let healthy = by_health(&v, "web")
            .iter()
            .filter(|(h, _)| h == "healthy")
            .count();
        (healthy == 2).then_some(v)
    })
    .await;
    let web = api["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "web"))
        .expect("web on the API");
    assert_eq!(web["service_type"], "_http._tcp", "{api}");
    assert_eq!(web["scheduler_connected"], true, "{api}");
    let state = net.state().await.expect("state");
    let agent_id = state.agents[0].id.to_string();
    for i in web["instances"].as_array().expect("instances") {
        assert_eq!(i["agent_id"], agent_id.as_str(), "{i}");
        assert_eq!(i["host"], state.agents[0].hostname.as_str(), "{i}");
        assert_eq!(i["address"], "127.0.0.1", "{i}");
        let port = i["ports"][0].as_u64().expect("a port");
        assert!(
            endpoints.iter().any(|e| e.ends_with(&format!(":{port}"))),
            "{i} vs {endpoints:?}"
        );
    }

    // One of web's starts failing: failing (still an endpoint) with why; bad is unhealthy.
    let live = instances(&state, "web");
    let victim = live[0].0.clone();
    std::fs::remove_file(docs.join(&victim).join("ok")).expect("break the victim");
    let api = eventually("the API shows the victim failing", DEADLINE, || async {
        let (_, body) = http_get(http, "/api/v1/services")
            .await
            .expect("the master's HTTP API");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let bad = by_health(&v, "bad");
        (by_health(&v, "web").contains(&("failing".to_string(), victim.clone()))
            && bad.len() == 1
            && bad[0].0 == "unhealthy")
            .then_some(v)
    })
    .await;
    assert!(api.to_string().contains("answered 404"), "{api}");
    let web = by_health(&api, "web");
    assert!(
        web.contains(&("healthy".to_string(), live[1].0.clone())),
        "{web:?}"
    );
    let (code, metrics) = http_get(http, "/metrics")
        .await
        .expect("the master's HTTP API");
    assert_eq!(code, 200);
    for line in [
        r#"bramble_service_instances{service="web",health="healthy"} 1"#,
        r#"bramble_service_instances{service="web",health="failing"} 1"#,
        r#"bramble_service_instances{service="web",health="unhealthy"} 0"#,
        r#"bramble_service_instances{service="bad",health="unhealthy"} 1"#,
        r#"bramble_service_instances{service="bad",health="healthy"} 0"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let show = service(net, &["show", "web"]);
    assert!(
        show.contains("healthy, but failing now: health check http GET /ok"),
        "{show}"
    );
    let show = service(net, &["show", "bad"]);
    assert!(
        show.contains("unhealthy: health check http GET /ok"),
        "{show}"
    );
    // The web UI has the page.
    let (_, index) = http_get(http, "/").await.expect("the master's HTTP API");
    assert!(index.contains("#/services"), "{index}");

    // Removed: gone from the API, and their instances end.
    service(net, &["rm", "web"]);
    service(net, &["rm", "bad"]);
    eventually("the services leave the API", DEADLINE, || async {
        let (_, body) = http_get(http, "/api/v1/services")
            .await
            .expect("the master's HTTP API");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["services"].as_array()?.is_empty().then_some(())
    })
    .await;
    eventually("the instances end", DEADLINE, || async {
        let s = net.state().await?;
        (instances(&s, "web").is_empty() && instances(&s, "bad").is_empty()).then_some(())
    })
    .await;
}
