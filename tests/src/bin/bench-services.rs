//! Benchmark: the service framework's two numbers (issue 21), printed as one JSON object.
//!
//! A real master, one agent and `bramble service scheduler` on loopback; every instance is a
//! real HTTP server (python3's http.server) with an HTTP health check. Then:
//! - **apply → all healthy**: `bramble service apply` of a spec with `INSTANCES` instances,
//!   timed from the command's start until the master's `/api/v1/services` lists that many
//!   healthy;
//! - **death → replacement healthy**: `KILLS` times, one instance's process is SIGKILLed and
//!   the time until the master lists a full set healthy again without it is taken; p50/p99.
//!
//! The spec's backoff is 0 (and `min_uptime_secs = 0`, so kills in a row do not grow it): the
//! numbers are the framework's own path (agent → master → scheduler → offer → launch →
//! RUNNING → first passing check → status record → master), not the restart policy's wait.
//! The agent takes its ports from a range of its own, and the service is removed (its
//! instances ended) before the bench exits: an instance left behind would hold its port for
//! the orphan timeout and the next run's instance given that port could never bind it.
//! Usage: `bench-services [INSTANCES] [KILLS]` (default 10 and 20); `bench/services.sh`.

use bramble_proto::messages::ClusterState;
use bramble_proto::TaskState;
use bramble_tests::eventually;
use bramble_tests::processes::{bramble, http_get, AgentCmd, LoopbackCluster, MasterCmd};
use bramble_tests::services::start_scheduler;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);
const NAME: &str = "bench";
/// A replacement slower than this prints the scheduler's log (to stderr).
const SLOW_REPLACEMENT: Duration = Duration::from_secs(5);

fn running(state: &ClusterState) -> Vec<String> {
    state
        .tasks
        .iter()
        .filter(|t| t.id.as_str().starts_with("bench.") && t.state == TaskState::Running)
        .map(|t| t.id.to_string())
        .collect()
}

/// The instances the master's `/api/v1/services` reports healthy (`None`: no answer).
async fn healthy(http: SocketAddr) -> Option<Vec<String>> {
    let (_, body) = http_get(http, "/api/v1/services").await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v["services"]
            .as_array()?
            .iter()
            .filter(|s| s["name"] == NAME)
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["health"] == "healthy")
            .filter_map(|i| i["task_id"].as_str().map(str::to_string))
            .collect(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn pid_of(pids: &Path, task: &str) -> i32 {
    eventually(&format!("{task} writes its pid"), DEADLINE, || async {
        std::fs::read_to_string(pids.join(task))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let instances: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let kills: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);

    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent(
        "agent",
        &AgentCmd::new("agent1")
            .cpus("4")
            .mem_mib(2048)
            .config("ports = \"33000-33499\"\n"),
    );
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;

    let pids = net.test.path("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let spec = net.test.path("bench.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"{NAME}\"\ninstances = {instances}\n\
             cmd = 'echo $$ > \"$PIDS/$BRAMBLE_TASK_ID\"; exec python3 -m http.server \"$PORT0\" --directory \"$PIDS\"'\n\
             cpus = 0.05\nmem = 32\nports = 1\n[env]\nPIDS = \"{}\"\n\
             [[health]]\nprotocol = \"http\"\npath = \"/\"\ngrace_secs = 10.0\n\
             interval_secs = 0.2\ntimeout_secs = 2.0\nmax_failures = 3\n\
             [restart]\nbackoff_secs = 0.0\nmin_uptime_secs = 0.0\n",
            pids.display()
        ),
    )
    .expect("spec file");

    let started = Instant::now();
    let out = bramble(&net, &["service", "apply", &spec.display().to_string()]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let http = net.http_addr();
    eventually("all instances healthy", DEADLINE, || async {
        (healthy(http).await?.len() == instances).then_some(())
    })
    .await;
    let apply_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut replace_ms = Vec::with_capacity(kills);
    for _ in 0..kills {
        let live = healthy(http).await.expect("the master's services");
        let victim = live[0].clone();
        let pid = pid_of(&pids, &victim).await;
        let killed_at = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the instance");
        eventually(
            "the instance is replaced by a healthy one",
            DEADLINE,
            || async {
                let now = healthy(http).await?;
                (now.len() == instances && !now.contains(&victim)).then_some(())
            },
        )
        .await;
        let took = killed_at.elapsed();
        if took > SLOW_REPLACEMENT {
            // An outlier is worth its story: what the scheduler did meanwhile.
            let log = scheduler.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect::<Vec<_>>();
            eprintln!(
                "slow replacement of {victim}: {took:?}; scheduler log, newest first:\n{}",
                tail.join("\n")
            );
        }
        replace_ms.push(took.as_secs_f64() * 1000.0);
    }
    let mut sorted = replace_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let json = serde_json::json!({
        "bench": "services",
        "instances": instances,
        "apply_to_all_healthy_ms": (apply_ms * 10.0).round() / 10.0,
        "kills": kills,
        "death_to_replacement_healthy_ms": {
            "p50": (percentile(&sorted, 50.0) * 10.0).round() / 10.0,
            "p99": (percentile(&sorted, 99.0) * 10.0).round() / 10.0,
            "max": (sorted.last().copied().unwrap_or(0.0) * 10.0).round() / 10.0,
        },
        "backoff_secs": 0.0,
        "health_checks": "http GET / every 0.2 s",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    // Leave nothing behind (see the header): remove the service, wait for its instances.
    let out = bramble(&net, &["service", "rm", NAME]);
    assert!(
        out.status.success(),
        "rm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the instances end", DEADLINE, || async {
        let st = net.state().await?;
        running(&st).is_empty().then_some(())
    })
    .await;
    println!("{json}");
}
