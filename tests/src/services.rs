//! What the service framework's end-to-end tests share (`tests/tests/services*.rs`): the
//! operator's `bramble service …` commands, the scheduler process, the live instances as the
//! master lists them, and a web service whose instances are real HTTP servers (python3's
//! http.server) health-checked by the scheduler.

use crate::eventually;
use crate::processes::{bramble, http_get, AgentCmd, LoopbackCluster, MasterCmd, Proc};
use bramble_proto::messages::ClusterState;
use bramble_proto::TaskState;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long any one step of a service test may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What [`cluster`] starts: a master, one agent and `bramble service scheduler` with its specs
/// loaded. Dropped, it kills the scheduler, the agent and the master, in that order.
pub struct ServiceCluster {
    pub scheduler: Proc,
    pub agent: Proc,
    pub master: Proc,
    pub net: LoopbackCluster,
}

/// A service test's cluster whose one agent `agent1` has 2 cpus and offers `ports` (e.g.
/// `"32100-32149"`). Each test takes its own range: tests run at once on this host, and with
/// the same range two agents offer the same ports and one test's servers fail to bind.
pub async fn cluster(ports: &str) -> ServiceCluster {
    cluster_with(agent_offering(ports)).await
}

/// The agent [`cluster`] starts: `agent1`, 2 cpus, offering `ports`.
pub fn agent_offering(ports: &str) -> AgentCmd {
    AgentCmd::new("agent1")
        .cpus("2")
        .config(&format!("ports = \"{ports}\"\n"))
}

/// [`cluster`] with the agent `agent` describes.
pub async fn cluster_with(agent: AgentCmd) -> ServiceCluster {
    let net = LoopbackCluster::new();
    let master = net.start_master("master", &MasterCmd::default());
    let agent = net.start_agent("agent", &agent);
    net.connected_agent(DEADLINE).await;
    let scheduler = start_scheduler(&net, "scheduler");
    scheduler.logged("service specs loaded", DEADLINE).await;
    ServiceCluster {
        scheduler,
        agent,
        master,
        net,
    }
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
    let (status, _) = http_get(endpoint, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {endpoint}: {e}"));
    status
}

/// Whether python3 (the web instances' server) is missing; the caller prints a SKIP.
pub fn python3_missing() -> bool {
    Command::new("python3").arg("--version").output().is_err()
}
