//! The numbers behind `bench/containers.sh` (issue 20's "measured"): a real master and one
//! agent with cgroups and crun in this process, tasks launched one at a time, alternating a
//! plain command task and the same command in a busybox image, so drift on a shared machine
//! hits both. Per kind: launch→RUNNING and launch→FINISHED (seen by the framework) p50/p99;
//! then crun's cost while a container runs (its monitor process's RSS, the processes a
//! container task adds over a plain one) and while none runs (crun processes left: none).
//! Prints one JSON line starting `BENCH_JSON `. Ignored by default (it measures, it does not
//! check much): `bench/containers.sh` runs it; `BENCH_N` sets the tasks per kind.

use bramble_agent::images::{host_architecture, ImageStore};
use bramble_agent::{AgentOptions, ContainersOptions};
use bramble_proto::identity::Role;
use bramble_proto::{Resources, TaskState};
use bramble_tests::busybox;
use bramble_tests::framework::{pid_of, shell_task, TestFramework};
use bramble_tests::*;
use std::time::{Duration, Instant};

/// p-th percentile (nearest rank) of sorted milliseconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    serde_json::json!({ "p50_ms": pct(&ms, 50.0), "p99_ms": pct(&ms, 99.0), "n": ms.len() })
}

/// Every process: (pid, parent, comm, VmRSS in KiB).
fn processes() -> Vec<(i32, i32, String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let comm = field("Name:").unwrap_or_default();
        let ppid = field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let rss = field("VmRSS:")
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        out.push((pid, ppid, comm, rss));
    }
    out
}

/// The processes under `root` (itself included).
fn tree(root: i32) -> Vec<(i32, i32, String, u64)> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    all.into_iter().filter(|p| found.contains(&p.0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by bench/containers.sh"]
async fn container_task_latency_and_cost() {
    const NAME: &str = "container_task_latency_and_cost";
    let Some(busybox::ContainerKit {
        crun,
        scratch,
        tarball,
    }) = busybox::container_kit(NAME)
    else {
        return;
    };
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let images = scratch.path().join("images");
    ImageStore::new(&images)
        .import_rootfs(&tarball, "busybox", host_architecture())
        .expect("import busybox");
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let opts = AgentOptions {
        cgroups: true,
        containers: Some(ContainersOptions {
            runtime: crun.clone(),
            images: images.clone(),
            preload: None,
            images_budget: None,
        }),
        ..agent_options(&cluster, "bench", master.addr, Resources::new(1.0, 256))
    };
    let agent = start_agent(&cluster, opts).await;
    wait_for_agents(&master, 1).await;
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "bench").await;

    let mut running = [Vec::new(), Vec::new()];
    let mut finished = [Vec::new(), Vec::new()];
    for i in 0..n {
        for (kind, boxed) in [(0, false), (1, true)] {
            let offer = fw.first_offer().await;
            let id = format!("t{i}-{kind}");
            let mut task = shell_task(&offer, &id, 0.1, 32, "true");
            if boxed {
                task.image = Some("busybox".into());
            }
            let start = Instant::now();
            fw.launch(&offer, vec![task]);
            fw.state(&id, TaskState::Running).await;
            running[kind].push(start.elapsed().as_secs_f64() * 1e3);
            let end = fw.terminal(&id).await;
            finished[kind].push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(end.state, TaskState::Finished, "{end:?}");
        }
    }

    // What a running task costs, plain and in an image: the processes under its supervisor.
    let mut cost = Vec::new();
    for (kind, boxed) in [("plain", false), ("container", true)] {
        let offer = fw.first_offer().await;
        let id = format!("idle-{kind}");
        let mut task = shell_task(&offer, &id, 0.1, 32, "sleep 60");
        if boxed {
            task.image = Some("busybox".into());
        }
        fw.launch(&offer, vec![task]);
        let supervisor = pid_of(&fw.state(&id, TaskState::Running).await);
        // The task's processes are up once `sleep` is there.
        let procs = eventually("the task's sleep", Duration::from_secs(10), || async {
            let t = tree(supervisor);
            t.iter().any(|p| p.2 == "sleep").then_some(t)
        })
        .await;
        let crun_rss: u64 = procs.iter().filter(|p| p.2 == "crun").map(|p| p.3).sum();
        let total_rss: u64 = procs.iter().map(|p| p.3).sum();
        cost.push(serde_json::json!({
            "kind": kind,
            "processes": procs.len(),
            "names": procs.iter().map(|p| p.2.clone()).collect::<Vec<_>>(),
            "rss_kib": total_rss,
            "crun_rss_kib": crun_rss,
        }));
        fw.driver.kill_task(id.as_str().into()).expect("kill");
        fw.terminal(&id).await;
    }
    // Nothing of crun stays once no container runs.
    let idle_crun = eventually("no crun process left", Duration::from_secs(10), || async {
        let n = processes().iter().filter(|p| p.2 == "crun").count();
        (n == 0).then_some(n)
    })
    .await;

    let report = serde_json::json!({
        "bench": "containers",
        "tasks_per_kind": n,
        "runtime": String::from_utf8_lossy(
            &std::process::Command::new(&crun).arg("--version").output().map(|o| o.stdout).unwrap_or_default()
        ).lines().next().unwrap_or_default(),
        "plain": { "launch_to_running": summary(running[0].clone()), "launch_to_finished": summary(finished[0].clone()) },
        "container": { "launch_to_running": summary(running[1].clone()), "launch_to_finished": summary(finished[1].clone()) },
        "running_task_cost": cost,
        "idle_crun_processes": idle_crun,
    });
    println!("BENCH_JSON {report}");
    fw.stop(false).await;
    agent.shutdown().await;
    master.shutdown().await;
}
