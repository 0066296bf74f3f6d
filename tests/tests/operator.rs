//! The operator's side (issue 22), with real processes on loopback: what an operator sees
//! when something is set up wrong (one clear line that says what is wrong and what to do,
//! never a stream of raw errors), and the `bramble` commands acting on frameworks and
//! finished tasks.

use bramble_proto::identity::{files, Role};
use bramble_proto::TaskState;
use bramble_sdk::{framework_info, Filters, SchedulerConfig};
use bramble_tests::framework::{shell_task, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::{eventually, TestCluster};
use std::process::Command;
use std::time::Duration;

/// How many lines of `log` contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// After the agent said what is wrong once, it stays quiet: it retries every minute, not
/// every few seconds. There is no event marking "did not retry"; a few seconds in which the
/// old backoff (at most 5 s between attempts) would have logged more lines is the test.
async fn said_once_and_backs_off(agent: &Proc, needle: &str) {
    agent.logged(needle, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = agent.log_text();
    assert_eq!(count(&log, needle), 1, "said more than once:\n{log}");
    assert_eq!(count(&log, "retrying every 60s"), 1, "{log}");
    assert_eq!(
        count(&log, "master link down"),
        0,
        "retried quickly:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_another_cluster_says_so_once_and_backs_off() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let other = TestCluster::new();
    let agent = net.start_agent(
        "stranger",
        &AgentCmd::new("stranger").cluster_dir(other.cluster_dir()),
    );
    said_once_and_backs_off(&agent, "this master belongs to a different cluster").await;
    let log = agent.log_text();
    assert!(
        log.contains(&net.test.cluster_id[..16]),
        "names the master's CA:\n{log}"
    );
    assert!(
        log.contains(&other.cluster_id[..16]),
        "names our CA:\n{log}"
    );
    assert!(
        log.contains("reflash the card or copy the cluster dir"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_certificate_is_from_another_cluster_says_so_once() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // The cluster's CA beside another cluster's node certificate and key.
    let other = TestCluster::new();
    let mixed = net.test.path("mixed-cluster");
    std::fs::create_dir_all(&mixed).expect("mixed dir");
    std::fs::copy(
        net.test.cluster_dir().join(files::CA_CERT),
        mixed.join(files::CA_CERT),
    )
    .expect("ca");
    for name in [files::cert(Role::Node), files::key(Role::Node)] {
        std::fs::copy(other.cluster_dir().join(&name), mixed.join(&name)).expect("node files");
    }
    let agent = net.start_agent("mixed", &AgentCmd::new("mixed").cluster_dir(&mixed));
    said_once_and_backs_off(&agent, "this agent's certificate is from another cluster").await;
    let log = agent.log_text();
    assert!(log.contains("refused this agent's certificate"), "{log}");
}

#[tokio::test]
async fn a_master_whose_http_port_is_taken_serves_no_http_and_says_so() {
    let cluster = TestCluster::new();
    // Another process's port: held for the whole test.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = bramble_master::config::MasterConfig {
        http: taken.local_addr().expect("addr"),
        ..bramble_tests::fast_master_config(&cluster)
    };
    let master = bramble_tests::start_master(&cluster, &cfg).await;
    // `None` is what main.rs advertises on mDNS (no `http` TXT key, see the advertiser's
    // tests), so no one is sent to the other process.
    assert_eq!(master.http_addr, None);
    master.shutdown().await;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The master's `/metrics` body (plain HTTP/1.0, no client library needed).
async fn metrics(net: &LoopbackCluster) -> String {
    let (_, body) = http_get(net.http_addr(), "/metrics")
        .await
        .expect("GET /metrics from the master");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_tears_a_framework_down_and_reads_its_finished_task() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1"));
    net.connected_agent(Duration::from_secs(20)).await;
    let mut fw = net.framework("victim").await;
    let offer = fw.first_offer().await;
    fw.launch_one(
        &offer,
        shell_task(&offer, "t1", 0.1, 32, "echo hello-from-t1; exec sleep 600"),
    )
    .await;

    let out = bramble(&net, &["framework", "teardown", fw.id.as_str()]);
    assert!(
        out.status.success(),
        "teardown failed: {}",
        text(&out.stderr)
    );
    let state = eventually("the framework is gone", Duration::from_secs(20), || async {
        net.state()
            .await
            .filter(|s| s.frameworks.is_empty() && !s.completed_tasks.is_empty())
    })
    .await;
    assert_eq!(state.completed_tasks[0].id.as_str(), "t1");
    assert_eq!(state.completed_tasks[0].state, TaskState::Killed);

    // `tasks --all` lists it with its framework; `tasks` alone does not.
    let all = text(&bramble(&net, &["tasks", "--all"]).stdout);
    let line = all
        .lines()
        .find(|l| l.starts_with("t1 "))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        line.contains(fw.id.as_str()) && line.contains("TASK_KILLED"),
        "{all}"
    );
    assert!(!text(&bramble(&net, &["tasks"]).stdout).contains("t1 "));
    // The JSON spells the state as the table does.
    let listed = bramble(&net, &["tasks", "--all", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&listed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&listed.stdout)));
    let t1 = tasks
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == "t1"))
        .unwrap_or_else(|| panic!("no t1 in {tasks}"));
    assert_eq!(t1["state"], "TASK_KILLED");

    // `logs` finds the finished task's framework by itself.
    let logs = bramble(&net, &["logs", "t1"]);
    assert!(logs.status.success(), "logs failed: {}", text(&logs.stderr));
    assert_eq!(text(&logs.stdout), "hello-from-t1\n");
    let json = bramble(&net, &["logs", "t1", "--json"]);
    let meta: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&json.stdout)));
    assert_eq!(meta["framework"], fw.id.as_str());
    assert_eq!(meta["state"], "TASK_KILLED");
    assert_eq!(meta["text"], "hello-from-t1\n");

    // `kill` of it says it had already ended, and fails.
    let kill = bramble(&net, &["kill", "t1"]);
    assert!(!kill.status.success());
    let said = text(&kill.stderr);
    assert!(said.contains("had already ended (TASK_KILLED"), "{said}");
    // Nothing Rust-shaped in what an operator reads.
    for shown in [&all, &said, &text(&logs.stderr)] {
        assert!(
            !shown.contains("Some(") && !shown.contains("None"),
            "{shown}"
        );
    }

    // A second teardown: nothing is there to tear down.
    let again = bramble(&net, &["framework", "teardown", fw.id.as_str()]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("no framework"),
        "{}",
        text(&again.stderr)
    );

    // The counters saw it all.
    let body = metrics(&net).await;
    for line in [
        format!(
            r#"bramble_task_events_total{{framework="{}",event="launched"}} 1"#,
            fw.id
        ),
        format!(
            r#"bramble_framework_events_total{{framework="{}",event="subscribed"}} 1"#,
            fw.id
        ),
        format!(
            r#"bramble_framework_events_total{{framework="{}",event="removed"}} 1"#,
            fw.id
        ),
        r#"bramble_agent_events_total{event="registered"} 1"#.to_string(),
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bramble_run_json_prints_the_final_status_with_the_commands_exit_code() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1"));
    net.connected_agent(Duration::from_secs(20)).await;

    let out = bramble(
        &net,
        &[
            "run",
            "--json",
            "--",
            "echo out-line; echo err-line >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(status["state"], "TASK_FAILED", "{status}");
    assert_eq!(status["exit_code"], 3, "{status}");
    assert_eq!(status["exit"], 3, "{status}");
    assert_eq!(status["stdout"], "out-line\n", "{status}");
    assert_eq!(status["stderr"], "err-line\n", "{status}");
    assert!(status["task"]
        .as_str()
        .is_some_and(|t| t.starts_with("run-")));
    // The text form names the same state.
    let plain = bramble(&net, &["run", "--", "exit 4"]);
    assert_eq!(plain.status.code(), Some(4));
    assert!(
        text(&plain.stderr).contains("task ended TASK_FAILED"),
        "{}",
        text(&plain.stderr)
    );
    // A task that finishes: state FINISHED, exit 0.
    let ok = bramble(&net, &["run", "--json", "--", "echo fine"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let status: serde_json::Value =
        serde_json::from_slice(&ok.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&ok.stdout)));
    assert_eq!(status["state"], "TASK_FINISHED", "{status}");
    assert_eq!(status["stdout"], "fine\n", "{status}");

    // A run killed from outside: `kill --json` says what it sent, the run ends KILLED.
    let sleeper = Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(net.master_addr().to_string())
        .arg("--cluster")
        .arg(net.test.cluster_dir())
        .args(["run", "--json", "--", "exec sleep 600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting bramble run");
    let task = eventually(
        "the run's task running",
        Duration::from_secs(20),
        || async {
            let state = net.state().await?;
            state
                .tasks
                .iter()
                .find(|t| t.state == TaskState::Running && t.id.as_str().starts_with("run-"))
                .map(|t| t.id.to_string())
        },
    )
    .await;
    let kill = bramble(&net, &["kill", &task, "--json"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&kill.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&kill.stdout)));
    assert_eq!(sent["task"], task.as_str(), "{sent}");
    assert_eq!(sent["kill"], "sent", "{sent}");
    let ended = tokio::task::spawn_blocking(move || sleeper.wait_with_output())
        .await
        .expect("join")
        .expect("bramble run's output");
    assert_eq!(ended.status.code(), Some(1), "{}", text(&ended.stderr));
    let status: serde_json::Value = serde_json::from_slice(&ended.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&ended.stdout)));
    assert_eq!(status["state"], "TASK_KILLED", "{status}");
    assert_eq!(status["task"], task.as_str(), "{status}");
}

/// The value of the series `name{labels}` in a `/metrics` body.
fn counter(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_offers_and_subscriptions_per_framework() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    let _agent = net.start_agent("agent", &AgentCmd::new("agent1"));
    net.connected_agent(Duration::from_secs(20)).await;
    let mut fw = net.framework("counted").await;
    let id = fw.id.clone();
    let first = fw.first_offer().await;
    fw.driver
        .decline_offer(
            first.id.clone(),
            Filters {
                refuse_seconds: 0.0,
            },
        )
        .expect("decline");
    // The declined resources come straight back in a new offer, left outstanding: the
    // failover below takes it back (rescinded).
    fw.until("a second offer", |f| {
        f.offers.iter().find(|o| o.id != first.id).cloned()
    })
    .await;
    fw.stop(true).await;
    let mut info = framework_info("counted");
    info.failover_timeout_secs = 5.0;
    info.framework_id = Some(id.clone());
    let again = TestFramework::start_with(SchedulerConfig::new(
        net.master_addr(),
        net.test.credentials(Role::Framework),
        info,
    ))
    .await;
    assert_eq!(again.id, id, "failed over under the same id");

    let series = |what: &str, event: &str| {
        format!(r#"bramble_{what}_events_total{{framework="{id}",event="{event}"}}"#)
    };
    let rescinded = series("offer", "rescinded");
    let body = eventually("the rescind counted", Duration::from_secs(20), || async {
        let body = metrics(&net).await;
        counter(&body, &rescinded).map(|_| body)
    })
    .await;
    let value = |what: &str, event: &str| counter(&body, &series(what, event));
    assert_eq!(value("framework", "subscribed"), Some(1.0), "{body}");
    assert_eq!(value("framework", "resubscribed"), Some(1.0), "{body}");
    assert_eq!(value("framework", "removed"), None, "{body}");
    assert!(value("offer", "made").is_some_and(|n| n >= 2.0), "{body}");
    assert_eq!(value("offer", "declined"), Some(1.0), "{body}");
    assert!(
        value("offer", "rescinded").is_some_and(|n| n >= 1.0),
        "{body}"
    );
    for kind in ["offer_events", "framework_events"] {
        let declared = format!("# TYPE bramble_{kind} counter");
        assert!(
            body.lines().any(|l| l == declared),
            "no {declared:?} in\n{body}"
        );
    }
    again.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_said_plainly_after_the_connect_timeout() {
    // A bound UDP port nobody answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let cluster = TestCluster::new();
    let out = Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(addr.to_string())
        .arg("--cluster")
        .arg(cluster.cluster_dir())
        .arg("status")
        .env_remove("RUST_LOG")
        .output()
        .expect("running bramble");
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("nothing answered at {addr} over QUIC")),
        "{said}"
    );
    // Plain: no timestamps, levels or backtraces around it.
    assert!(
        !said.contains("Stack backtrace") && !said.contains(" WARN "),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_bramble_pi_says_how_to_resume_and_exits_130() {
    let net = LoopbackCluster::new();
    let _master = net.start_master("master", &MasterCmd::default());
    // No agent: the job waits for offers until it is interrupted.
    let journal = net.test.path("pi.journal");
    let err = net.logs.join("pi.err");
    let mut pi = Command::new(bin_dir().join("bramble"))
        .arg("--master")
        .arg(net.master_addr().to_string())
        .arg("--cluster")
        .arg(net.test.cluster_dir())
        .args(["pi", "--terms", "1e6", "--tasks", "4", "--journal"])
        .arg(&journal)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("starting bramble pi");
    // It has opened its journal and subscribed before it can be interrupted usefully.
    eventually("bramble pi subscribes", Duration::from_secs(30), || async {
        net.state().await.filter(|s| !s.frameworks.is_empty())
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pi.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = eventually("bramble pi exits", Duration::from_secs(20), || {
        let exited = pi.try_wait().ok().flatten();
        async move { exited }
    })
    .await;
    let said = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains(&format!("journalled in {}", journal.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "`bramble pi --terms 1000000 --tasks 4 --journal {}`",
            journal.display()
        )),
        "{said}"
    );
}
