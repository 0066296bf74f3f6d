//! What the service framework's end-to-end tests share (`tests/tests/services*.rs`): the
//! operator's `bramble service …` commands, the scheduler process, the live instances as the
//! master lists them, and a web service whose instances are real HTTP servers (python3's
//! http.server) health-checked by the scheduler.

use crate::eventually;
use crate::processes::{bin_dir, LoopbackCluster, Proc};
use bramble_proto::messages::ClusterState;
use bramble_proto::TaskState;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any one step of a service test may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `bramble --master … --cluster … ARGS`: its output, whether or not it succeeded.
pub fn bramble(net: &LoopbackCluster, args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(net.master_addr().to_string())
        .arg("--cluster")
        .arg(net.test.cluster_dir())
        .args(args)
        .output()
        .expect("running bramble")
}

/// `bramble … service ARGS`: its stdout, after checking it succeeded.
pub fn service(net: &LoopbackCluster, args: &[&str]) -> String {
    let mut all = vec!["service"];
    all.extend_from_slice(args);
    let out = bramble(net, &all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bramble service {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `bramble service scheduler`, keeping its framework id under the cluster's temp dir (the
/// same for every start, so a restart fails over); its log is `<name>.log`.
pub fn start_scheduler(net: &LoopbackCluster, name: &str) -> Proc {
    start_scheduler_with(net, name, &[])
}

/// [`start_scheduler`] with more arguments for `bramble service scheduler`
/// (`--node-certificate`, as the unit on the master node runs it).
pub fn start_scheduler_with(net: &LoopbackCluster, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--master".to_string(),
        net.master_addr().to_string(),
        "--cluster".into(),
        net.test.cluster_dir().display().to_string(),
        "service".into(),
        "scheduler".into(),
        "--state-dir".into(),
        net.test.path("services-state").display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Proc::spawn(name, "bramble", &args, &net.logs)
}

/// Live tasks of service `name` in `state`, with their states.
pub fn instances(state: &ClusterState, name: &str) -> Vec<(String, TaskState)> {
    state
        .tasks
        .iter()
        .filter(|t| t.id.as_str().starts_with(&format!("{name}.")) && !t.state.is_terminal())
        .map(|t| (t.id.to_string(), t.state))
        .collect()
}

/// Waits until `count` instances of `name` are RUNNING (and none is still starting); their ids.
pub async fn running(net: &LoopbackCluster, name: &str, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} instances of {name} running"),
        DEADLINE,
        || async {
            let s = net.state().await?;
            let live = instances(&s, name);
            (live.len() == count && live.iter().all(|(_, st)| *st == TaskState::Running))
                .then(|| live.into_iter().map(|(id, _)| id).collect())
        },
    )
    .await
}

/// The first port of each live instance of `name`, sorted: what its endpoints must list once
/// the scheduler's status record has caught up with the master.
pub fn first_ports(state: &ClusterState, name: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = state
        .tasks
        .iter()
        .filter(|t| t.id.as_str().starts_with(&format!("{name}.")) && !t.state.is_terminal())
        .filter_map(|t| t.resources.ports.first().map(|r| r.begin))
        .collect();
    ports.sort_unstable();
    ports
}

/// The ports of `host:port` endpoints, sorted.
pub fn endpoint_ports(endpoints: &[String]) -> Vec<u16> {
    let mut ports: Vec<u16> = endpoints
        .iter()
        .filter_map(|e| e.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    ports.sort_unstable();
    ports
}

/// A web service `web` whose instances serve `docs/<task id>/` (made by the instance, with an
/// `ok` file in it unless `healthy` is false), health-checked on `GET /ok`. `version` goes
/// into the environment: specs that differ only in it are different versions.
pub fn web_spec(docs: &Path, instances: u32, healthy: bool, version: u32) -> String {
    let touch = if healthy { "&& touch \"$D/ok\" " } else { "" };
    format!(
        r#"name = "web"
instances = {instances}
cmd = 'D="$DOCS/$BRAMBLE_TASK_ID"; mkdir -p "$D" {touch}&& exec python3 -m http.server "$PORT0" --directory "$D"'
cpus = 0.1
mem = 64
ports = 1
[env]
DOCS = "{}"
PYTHONUNBUFFERED = "1"
VERSION = "{version}"
[[health]]
protocol = "http"
path = "/ok"
status = 200
grace_secs = 5.0
interval_secs = 0.3
timeout_secs = 2.0
max_failures = 2
[rollout]
min_healthy = 1.0
max_surge = 1
rollback_after = 2
[restart]
backoff_secs = 0.2
"#,
        docs.display()
    )
}

/// The healthy endpoints (`host:port`) of service `name`, as `bramble service endpoints`
/// lists them now.
pub fn endpoints_now(net: &LoopbackCluster, name: &str) -> Vec<String> {
    service(net, &["endpoints", name])
        .lines()
        .map(str::to_string)
        .collect()
}

/// `bramble service endpoints NAME`, once it lists `count` endpoints; on a timeout the panic
/// carries the scheduler's log and the service as shown.
pub async fn endpoints(
    net: &LoopbackCluster,
    scheduler: &Proc,
    name: &str,
    count: usize,
) -> Vec<String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found = endpoints_now(net, name);
        if found.len() == count {
            return found;
        }
        if tokio::time::Instant::now() >= until {
            let log = scheduler.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {count} healthy endpoints (have {found:?})\n{}\nscheduler log (newest first):\n{}",
                service(net, &["show", name]),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The status code of `GET path` on `endpoint` (`host:port`).
pub async fn get(endpoint: &str, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(endpoint)
        .await
        .expect("connect to the endpoint");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line")
}

/// Whether python3 (the web instances' server) is missing; the caller prints a SKIP.
pub fn python3_missing() -> bool {
    Command::new("python3").arg("--version").output().is_err()
}
