//! The service framework end to end, as an operator runs it: real `bramble-master`,
//! `bramble-agent` and `bramble service scheduler` processes on loopback, specs applied with
//! `bramble service apply`, instances' processes killed for real.

use bramble_proto::TaskState;
use bramble_tests::processes::*;
use bramble_tests::services::*;
use bramble_tests::*;
use std::path::Path;
use std::process::Command;

/// The pid an instance wrote into `pids/<task id>` (its command does `echo $$`).
async fn pid_of_instance(pids: &Path, task: &str) -> i32 {
    eventually(&format!("{task} writes its pid"), DEADLINE, || async {
        std::fs::read_to_string(pids.join(task))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
}

fn spec(pids: &Path, instances: u32) -> String {
    format!(
        r#"name = "sleepy"
instances = {instances}
cmd = 'echo $$ > "$PIDS/$BRAMBLE_TASK_ID"; exec sleep 600'
cpus = 0.1
mem = 16
ports = 1
[env]
PIDS = "{}"
[restart]
backoff_secs = 0.2
"#,
        pids.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_instances_run_and_one_killed_for_real_is_replaced() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1").cpus("2"));
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let pids = net.test.path("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let file = net.test.path("sleepy.toml");
    std::fs::write(&file, spec(&pids, 3)).expect("spec file");
    let file = file.display().to_string();
    let applied = service(&net, &["apply", &file]);
    assert!(applied.contains("created"), "{applied}");
    let again = service(&net, &["apply", &file]);
    assert!(again.contains("unchanged"), "apply is idempotent: {again}");

    let first = running(&net, "sleepy", 3).await;
    let ls = service(&net, &["ls"]);
    assert!(ls.contains("sleepy") && ls.contains("3/3"), "{ls}");
    let show = service(&net, &["show", "sleepy"]);
    assert!(show.contains("3/3 running"), "{show}");
    for id in &first {
        assert!(show.contains(id.as_str()), "{show}");
    }

    // Each instance got its own port, named in its environment.
    let state = net.state().await.expect("state");
    let mut ports: Vec<u16> = state
        .tasks
        .iter()
        .filter(|t| t.name == "sleepy")
        .flat_map(|t| t.resources.ports.iter().map(|r| r.begin))
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "one port each: {ports:?}");

    // Kill one instance's process for real: it is replaced.
    let victim = first[0].clone();
    let pid = pid_of_instance(&pids, &victim).await;
    assert!(alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the instance");
    let after = eventually("the killed instance is replaced", DEADLINE, || async {
        let s = net.state().await?;
        let live = instances(&s, "sleepy");
        let running: Vec<String> = live
            .iter()
            .filter(|(_, st)| *st == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        (running.len() == 3 && !running.contains(&victim)).then_some(running)
    })
    .await;
    for id in &first[1..] {
        assert!(after.contains(id), "the others were left alone: {after:?}");
    }

    // Scale down, then remove: the instances go.
    service(&net, &["scale", "sleepy", "1"]);
    running(&net, "sleepy", 1).await;
    service(&net, &["rm", "sleepy"]);
    eventually("the removed service's instances end", DEADLINE, || async {
        let s = net.state().await?;
        instances(&s, "sleepy").is_empty().then_some(())
    })
    .await;
}

/// The unit on the master node runs the scheduler with the node certificate (cards carry no
/// framework key): the master takes it over loopback as the service framework, and its
/// instances run and are listed as services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_with_the_node_certificate_runs_services_from_the_master_node() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1").cpus("2"));
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler_with(&net, "scheduler", &["--node-certificate"]);
    scheduler.logged("service specs loaded", DEADLINE).await;

    let pids = net.test.path("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let file = net.test.path("sleepy.toml");
    std::fs::write(&file, spec(&pids, 2)).expect("spec file");
    let applied = service(&net, &["apply", &file.display().to_string()]);
    assert!(applied.contains("created"), "{applied}");
    running(&net, "sleepy", 2).await;
    let state = net.state().await.expect("state");
    let fw = state
        .frameworks
        .iter()
        .find(|f| f.name == "bramble-services")
        .expect("the service framework is registered");
    assert_eq!(fw.principal.as_deref(), Some("node"), "{fw:?}");
}

/// A service whose instances are tasks of their own custom executor (`bramble executor serve`,
/// serving `docs/` over HTTP on PORT0), health-checked on `GET /ok`; each executor writes
/// `$$ $PORT0 $GREETING` into `pids/<executor id>` before it execs.
fn executor_spec(pids: &Path, docs: &Path, instances: u32) -> String {
    format!(
        r#"name = "served"
instances = {instances}
cpus = 0.1
mem = 16
ports = 1
[env]
PIDS = "{}"
GREETING = "hi"
[executor]
cmd = 'echo "$$ $PORT0 $GREETING" > "$PIDS/$BRAMBLE_EXECUTOR_ID"; exec "{}" executor serve'
cpus = 0.05
mem = 32
data = "{}"
[[health]]
protocol = "http"
path = "/ok"
status = 200
grace_secs = 5.0
interval_secs = 0.3
timeout_secs = 2.0
max_failures = 2
[restart]
backoff_secs = 0.2
"#,
        pids.display(),
        bin_dir().join("bramble").display(),
        docs.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_under_their_custom_executor_pass_http_checks_and_one_killed_for_real_is_replaced(
) {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // Own port range: other service tests' agents run at once on this host.
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("2")
            .config("ports = \"32560-32599\"\n"),
    );
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let pids = net.test.path("pids");
    let docs = net.test.path("docs");
    std::fs::create_dir_all(&pids).expect("pids dir");
    std::fs::create_dir_all(&docs).expect("docs dir");
    std::fs::write(docs.join("ok"), "ok\n").expect("ok file");
    let file = net.test.path("served.toml");
    std::fs::write(&file, executor_spec(&pids, &docs, 2)).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);

    // Both pass their HTTP checks, served by the executors.
    let first = endpoints(&net, &scheduler, "served", 2).await;
    for e in &first {
        assert_eq!(get(e, "/ok").await, 200, "{e}");
    }
    let state = net.state().await.expect("state");
    let live = instances(&state, "served");
    assert_eq!(live.len(), 2, "{live:?}");
    for (id, _) in &live {
        let task = state
            .tasks
            .iter()
            .find(|t| t.id.as_str() == id)
            .expect("task");
        let port = task.resources.ports.first().expect("a port").begin;
        // The executor got the instance's environment and port, and is its own per instance.
        let exec_id = format!("{id}.executor");
        let seen = eventually(&format!("{exec_id} wrote its pid"), DEADLINE, || async {
            std::fs::read_to_string(pids.join(&exec_id)).ok()
        })
        .await;
        let words: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(words[1..], [port.to_string().as_str(), "hi"], "{seen}");
        assert!(
            state
                .agents
                .iter()
                .flat_map(|a| &a.executors)
                .any(|e| e.executor_id.as_str() == exec_id),
            "the master charges the agent for {exec_id}"
        );
    }

    // Kill one instance's executor for real: the instance is replaced, the other left alone.
    let victim = live[0].0.clone();
    let seen = std::fs::read_to_string(pids.join(format!("{victim}.executor"))).expect("pid");
    let pid: i32 = seen
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the executor's pid");
    assert!(alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the executor");
    eventually("the killed instance is replaced", DEADLINE, || async {
        let s = net.state().await?;
        let running: Vec<String> = instances(&s, "served")
            .into_iter()
            .filter(|(_, st)| *st == TaskState::Running)
            .map(|(id, _)| id)
            .collect();
        (running.len() == 2 && !running.contains(&victim)).then_some(())
    })
    .await;
    assert!(
        instances(&net.state().await.expect("state"), "served")
            .iter()
            .any(|(id, _)| *id == live[1].0),
        "the other instance was left alone"
    );
    for e in endpoints(&net, &scheduler, "served", 2).await {
        assert_eq!(get(&e, "/ok").await, 200, "{e}");
    }

    // The scheduler killed for real and started again on its state dir adopts the executors'
    // tasks: none is killed or replaced.
    let mut before = running(&net, "served", 2).await;
    before.sort();
    let mut scheduler = scheduler;
    scheduler.kill_hard();
    let scheduler = start_scheduler(&net, "scheduler-2");
    scheduler
        .logged("every service has its instances", DEADLINE)
        .await;
    let mut after = running(&net, "served", 2).await;
    after.sort();
    assert_eq!(after, before, "the same instances after the restart");
    endpoints(&net, &scheduler, "served", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_applied_while_the_scheduler_is_down_runs_and_its_instances_survive_a_scheduler_restart(
) {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1").cpus("2"));
    net.connected_agent(DEADLINE).await;
    let mut scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;
    // Down: the spec is stored in the master all the same.
    scheduler.kill_hard();
    let pids = net.test.path("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let file = net.test.path("sleepy.toml");
    std::fs::write(&file, spec(&pids, 2)).expect("spec file");
    service(&net, &["apply", &file.display().to_string()]);

    // Back under the same framework id: the spec runs.
    let scheduler = start_scheduler(&net, "scheduler-2");
    let first = running(&net, "sleepy", 2).await;
    scheduler.logged("failing over", DEADLINE).await;
    drop(scheduler);

    // A third start adopts the running instances rather than launching more.
    let scheduler = start_scheduler(&net, "scheduler-3");
    // Once it has reconciled and found nothing missing it stops taking offers: only then is
    // it known whether it launched anything.
    scheduler
        .logged("every service has its instances", DEADLINE)
        .await;
    let mut again = running(&net, "sleepy", 2).await;
    again.sort();
    let mut first = first;
    first.sort();
    assert_eq!(again, first, "the same instances, none added");
    let state = net.state().await.expect("state");
    let frameworks: Vec<_> = state
        .frameworks
        .iter()
        .filter(|f| f.name == "bramble-services")
        .collect();
    assert_eq!(
        frameworks.len(),
        1,
        "one framework id throughout: {frameworks:?}"
    );
    // The one kept in the state dir (what the bramble-services unit's StateDirectory holds).
    let kept = std::fs::read_to_string(net.test.path("services-state").join("framework_id"))
        .expect("the framework id file");
    assert_eq!(frameworks[0].id.as_str(), kept.trim());
}

/// The benchmark's short form (`bench/services.sh` runs 10 instances and 20 kills): it runs
/// end to end and its numbers are sane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_benchmark_runs_in_its_short_form() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3 for the benchmark's instances");
        return;
    }
    let _ = bin_dir();
    let out = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_bench-services"))
            .args(["3", "3"])
            .output()
    })
    .await
    .expect("join")
    .expect("running bench-services");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench-services failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    eprintln!("{json}");
    let apply = json["apply_to_all_healthy_ms"]
        .as_f64()
        .expect("apply time");
    let p50 = json["death_to_replacement_healthy_ms"]["p50"]
        .as_f64()
        .expect("p50");
    assert!(apply > 0.0 && apply < 60_000.0, "{json}");
    assert!(p50 > 0.0 && p50 < 60_000.0, "{json}");
    assert_eq!(json["kills"], 3);
}
