//! The agent's Mesos v1 executor API end to end: an in-process master and agent, a native
//! test framework that sets `TaskInfo.mesos` by hand (as the master's Mesos edge would), and
//! `mesos-test-executor`, a custom executor speaking raw HTTP: SUBSCRIBE, LAUNCH, UPDATE and
//! ACKNOWLEDGED, MESSAGE both ways, KILL, SHUTDOWN on teardown. Also the HTTP contract's status
//! codes, and that nobody outside the executor's process session can act as the executor.

use bramble_mesos::v1::b64;
use bramble_proto::messages::Offer;
use bramble_proto::task::{CommandInfo, ExecutorInfo, MesosTask, TaskInfo};
use bramble_proto::{FrameworkId, Resources, TaskState};
use bramble_tests::*;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXECUTOR: &str = env!("CARGO_BIN_EXE_mesos-test-executor");
const EXECUTOR_ID: &str = "mesos-exec";

/// A task for the Mesos test executor, carrying the Mesos JSON the master's edge would write.
fn mesos_task(offer: &Offer, fw: &FrameworkId, id: &str, data: &str) -> TaskInfo {
    mesos_task_with(offer, fw, id, data, false)
}

fn mesos_task_with(
    offer: &Offer,
    fw: &FrameworkId,
    id: &str,
    data: &str,
    checkpoint: bool,
) -> TaskInfo {
    let executor_json = json!({"executor_id": {"value": EXECUTOR_ID},
        "framework_id": {"value": fw.as_str()}, "name": "mesos test executor",
        "command": {"value": EXECUTOR, "shell": false}});
    let task_json = json!({"name": id, "task_id": {"value": id},
        "agent_id": {"value": offer.agent_id.as_str()},
        "data": b64::encode(data.as_bytes()), "executor": executor_json});
    let framework_json = json!({"id": {"value": fw.as_str()}, "user": "root",
        "name": "mesos-executor-test", "checkpoint": checkpoint});
    TaskInfo {
        task_id: id.into(),
        name: id.into(),
        agent_id: offer.agent_id.clone(),
        resources: Resources::new(0.1, 16),
        command: None,
        executor: Some(ExecutorInfo {
            executor_id: EXECUTOR_ID.into(),
            name: "mesos test executor".into(),
            command: CommandInfo::program(EXECUTOR, vec![]),
            resources: Resources::new(0.1, 32),
        }),
        data: data.as_bytes().to_vec(),
        mesos: Some(Box::new(MesosTask {
            task_json: task_json.to_string(),
            group: None,
            executor_json: Some(executor_json.to_string()),
            framework_json: framework_json.to_string(),
            checkpoint,
            shutdown_grace_ms: 200,
        })),
        image: None,
        artifacts: Vec::new(),
    }
}

/// The executor's sandbox, once it exists.
async fn sandbox(cluster: &TestCluster, agent: &str, fw: &FrameworkId) -> PathBuf {
    let runs = cluster
        .path(agent)
        .join("frameworks")
        .join(fw.as_str())
        .join("executors")
        .join(EXECUTOR_ID)
        .join("runs");
    eventually("the executor's sandbox", Duration::from_secs(10), || {
        let found = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok()).map(|e| e.path()));
        std::future::ready(found)
    })
    .await
}

/// Waits until the executor's `events.log` satisfies `done`; returns its lines.
async fn events_until(dir: &Path, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let path = dir.join("events.log");
    eventually(what, Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        std::future::ready(done(&lines).then_some(lines))
    })
    .await
}

/// One raw HTTP/1.1 request (`Connection: close`); returns the status and the body.
async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n{body}");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        // Until the server closes, or (a refusal before the body was sent) until the answer
        // is complete: the server may keep waiting for the body it refused.
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) if !out.is_empty() => break,
                Err(_) => continue,
            }
        }
        String::from_utf8_lossy(&out).to_string()
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answer within 10 s");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn post_json(addr: SocketAddr, body: &str) -> (u16, String) {
    let head = format!(
        "POST /api/v1/executor HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}",
        body.len()
    );
    request(addr, &head, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesos_executor_subscribes_runs_tasks_exchanges_messages_and_shuts_down() {
    let c = InProcessCluster::start(|_| {}, &["pi-a"], Resources::new(2.0, 1024), false).await;
    let endpoint = c.agents[0].mesos_endpoint().expect("Mesos API on");
    let mut fw = c.framework("mesos-exec").await;
    let offer = fw.offer_from("pi-a").await;
    let fw_id = fw.id.clone();
    fw.launch(
        &offer,
        vec![
            mesos_task(&offer, &fw_id, "t1", "echo:3.14"),
            mesos_task(&offer, &fw_id, "t2", "sleep"),
        ],
    );

    // UPDATE → recorded → master → framework, with the agent's and executor's ids stamped.
    let t1 = fw.terminal("t1").await;
    assert_eq!(t1.state, TaskState::Finished, "{t1:?}");
    assert_eq!(t1.data, b"3.14", "data travels base64 in the Mesos update");
    assert_eq!(
        t1.executor_id.as_ref().map(|e| e.as_str()),
        Some(EXECUTOR_ID)
    );
    assert_eq!(t1.agent_id.as_ref(), Some(&offer.agent_id));
    fw.state("t2", TaskState::Running).await;

    // Scheduler → executor (MESSAGE event) → scheduler (MESSAGE call).
    let (from, data) = fw.round_trip(&offer.agent_id, EXECUTOR_ID, b"ping").await;
    assert_eq!(from.as_str(), EXECUTOR_ID);
    assert_eq!(data, b"echo:ping");

    fw.driver.kill_task("t2".into()).expect("kill");
    assert_eq!(fw.terminal("t2").await.state, TaskState::Killed);

    let dir = sandbox(&c.cluster, "pi-a", &fw_id).await;
    let lines = events_until(&dir, "ACKNOWLEDGED for every update", |l| {
        l.iter().filter(|x| x.starts_with("ACKNOWLEDGED")).count() >= 4
    })
    .await;
    assert_eq!(lines[0], "SUBSCRIBED", "{lines:?}");
    for task in ["t1", "t2"] {
        let launches = lines
            .iter()
            .filter(|l| **l == format!("LAUNCH {task}"))
            .count();
        assert_eq!(launches, 1, "one LAUNCH of {task}: {lines:?}");
    }
    assert!(lines.contains(&"MESSAGE".to_string()), "{lines:?}");
    assert!(lines.contains(&"KILL t2".to_string()), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("UNEXPECTED")),
        "{lines:?}"
    );

    // The environment pymesos needs (pitfall 7).
    let env = std::fs::read_to_string(dir.join("env.txt")).expect("env.txt");
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    assert_eq!(var("MESOS_AGENT_ENDPOINT"), Some(endpoint.to_string()));
    assert_eq!(var("MESOS_FRAMEWORK_ID").as_deref(), Some(fw_id.as_str()));
    assert_eq!(var("MESOS_EXECUTOR_ID").as_deref(), Some(EXECUTOR_ID));
    assert_eq!(
        var("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD").as_deref(),
        Some("200ms")
    );
    assert_eq!(
        var("MESOS_SLAVE_ID").as_deref(),
        Some(offer.agent_id.as_str())
    );
    assert_eq!(var("MESOS_SANDBOX"), Some(dir.display().to_string()));
    assert_eq!(var("MESOS_CHECKPOINT"), None, "unset without checkpointing");

    // Nobody outside the executor's session can act as it, subscribed or not.
    let who =
        json!({"framework_id": {"value": fw_id.as_str()}, "executor_id": {"value": EXECUTOR_ID}});
    let mut sub = who.clone();
    sub["type"] = json!("SUBSCRIBE");
    let (status, body) = post_json(endpoint, &sub.to_string()).await;
    assert_eq!(status, 403, "{body}");
    let mut msg = who.clone();
    msg["type"] = json!("MESSAGE");
    msg["message"] = json!({"data": "aGk="});
    let (status, body) = post_json(endpoint, &msg.to_string()).await;
    assert_eq!(status, 403, "{body}");

    // Teardown: SHUTDOWN reaches the executor, which exits.
    fw.stop(false).await;
    events_until(&dir, "SHUTDOWN", |l| l.iter().any(|x| x == "SHUTDOWN")).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_executor_calls_get_mesos_status_codes_with_a_reason() {
    let c = InProcessCluster::start(|_| {}, &["pi-a"], Resources::new(1.0, 256), false).await;
    let addr = c.agents[0].mesos_endpoint().expect("Mesos API on");
    let path = "/api/v1/executor HTTP/1.1";

    let (status, _) = request(addr, &format!("GET {path}"), "").await;
    assert_eq!(status, 405);
    let (status, body) = request(addr, &format!("POST {path}\r\nContent-Length: 2"), "{}").await;
    assert_eq!(status, 400, "no Content-Type");
    assert!(body.contains("Content-Type"), "{body}");
    let (status, _) = request(
        addr,
        &format!("POST {path}\r\nContent-Type: text/plain\r\nContent-Length: 2"),
        "{}",
    )
    .await;
    assert_eq!(status, 415);
    let (status, body) = post_json(addr, "{not json").await;
    assert_eq!(status, 400);
    assert!(!body.is_empty(), "a reason in the body");
    let (status, body) = post_json(addr, r#"{"type":"UPDATE","framework_id":{"value":"f"}}"#).await;
    assert_eq!(status, 400, "missing executor_id: {body}");
    let unknown = r#"{"type":"UPDATE","framework_id":{"value":"nope"},"executor_id":{"value":"e"},
        "update":{"status":{"task_id":{"value":"t"},"state":"TASK_RUNNING","source":"SOURCE_EXECUTOR",
        "uuid":"AAAAAAAAAAAAAAAAAAAAAA=="}}}"#;
    let (status, body) = post_json(addr, unknown).await;
    assert_eq!(status, 400);
    assert!(body.contains("Framework cannot be found"), "{body}");
    let unknown_sub =
        r#"{"type":"SUBSCRIBE","framework_id":{"value":"nope"},"executor_id":{"value":"e"}}"#;
    let (status, _) = post_json(addr, unknown_sub).await;
    assert_eq!(status, 400);
    let (status, _) = post_json(
        addr,
        r#"{"type":"HEARTBEAT","framework_id":{"value":"f"},"executor_id":{"value":"e"}}"#,
    )
    .await;
    assert_eq!(status, 202);
    // Refused from its declared length, before any of it is sent.
    let (status, _) = request(
        addr,
        &format!("POST {path}\r\nContent-Type: application/json\r\nContent-Length: 100000000"),
        "",
    )
    .await;
    assert_eq!(status, 413);
    // The agent is still serving after all that.
    let (status, _) = request(addr, &format!("GET {path}"), "").await;
    assert_eq!(status, 405);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointing_mesos_executor_survives_an_agent_restart_and_subscribes_again() {
    init_logs();
    let cluster = TestCluster::new();
    let mut cfg = fast_master_config(&cluster);
    cfg.agent_timeout_secs = 30.0;
    let master = start_master(&cluster, &cfg).await;
    // The executor finds the restarted agent where the first one was: one fixed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let options = || {
        let mut o = agent_options(&cluster, "pi-a", master.addr, Resources::new(2.0, 1024));
        o.mesos_listen = Some(([127, 0, 0, 1], port).into());
        o
    };
    let agent = start_agent(&cluster, options()).await;
    wait_for_agents(&master, 1).await;
    let mut fw = framework::TestFramework::start(
        master.addr,
        cluster.credentials(bramble_proto::identity::Role::Framework),
        "mesos-restart",
    )
    .await;
    let offer = fw.offer_from("pi-a").await;
    let fw_id = fw.id.clone();
    fw.launch(
        &offer,
        vec![mesos_task_with(&offer, &fw_id, "t1", "sleep", true)],
    );
    fw.state("t1", TaskState::Running).await;
    let dir = sandbox(&cluster, "pi-a", &fw_id).await;
    events_until(&dir, "RUNNING acknowledged", |l| {
        l.contains(&"ACKNOWLEDGED t1".to_string())
    })
    .await;

    let env = std::fs::read_to_string(dir.join("env.txt")).expect("env.txt");
    assert!(env.contains("MESOS_CHECKPOINT=1\n"), "{env}");
    assert!(env.contains("MESOS_RECOVERY_TIMEOUT="), "{env}");
    agent.shutdown_leaving_tasks().await;
    events_until(&dir, "the stream ending with the agent", |l| {
        l.contains(&"STREAM_ENDED".to_string())
    })
    .await;
    let agent = start_agent(&cluster, options()).await;
    let lines = events_until(&dir, "a second SUBSCRIBED", |l| {
        l.iter().filter(|x| *x == "SUBSCRIBED").count() == 2
    })
    .await;
    assert_eq!(
        lines.iter().filter(|l| *l == "LAUNCH t1").count(),
        1,
        "no second LAUNCH after re-subscribing: {lines:?}"
    );

    // The re-subscribed executor still runs its task and takes new ones.
    fw.driver.kill_task("t1".into()).expect("kill");
    assert_eq!(fw.terminal("t1").await.state, TaskState::Killed);
    let offer = fw.offer_from("pi-a").await;
    fw.launch(
        &offer,
        vec![mesos_task_with(&offer, &fw_id, "t2", "echo:after", true)],
    );
    let t2 = fw.terminal("t2").await;
    assert_eq!(
        (t2.state, t2.data.as_slice()),
        (TaskState::Finished, &b"after"[..])
    );
    fw.stop(false).await;
    events_until(&dir, "SHUTDOWN", |l| l.iter().any(|x| x == "SHUTDOWN")).await;
    agent.shutdown().await;
    master.shutdown().await;
}
