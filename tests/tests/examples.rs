//! The tutorial frameworks (factorial, hello, http, and docs/tutorial's hello-bramble) end
//! to end: a master and agents in this
//! process on loopback, the frameworks' own schedulers, and their executors and servers as
//! real processes (`example-executors`, this crate's stand-in for `bramble executor factorial`
//! and `bramble serve-dir`, built from the same library code).

use bramble_client::OperatorClient;
use bramble_frameworks::factorial::{run_factorial, FactorialError, MAX_ATTEMPTS};
use bramble_frameworks::hello::run_hello;
use bramble_frameworks::http::{run_http, HttpJob};
use bramble_frameworks::ServiceEvent;
use bramble_proto::identity::Role;
use bramble_proto::task::CommandInfo;
use bramble_proto::{PortRange, Resources, TaskState};
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::processes::bin_dir;
use bramble_tests::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

const SEVENTY: &str = "11978571669969891796072783721689098736458938142546425857555362864628009582789845319680000000000000000";
const THIRTY: &str = "265252859812191058636308480000000";

struct Cluster {
    cluster: TestCluster,
    master: bramble_master::server::MasterHandle,
    agents: Vec<bramble_agent::AgentHandle>,
}

async fn cluster_with_agents(agents: &[(&str, Resources)]) -> Cluster {
    init_logs();
    // Build the executor binaries before anything runs on this runtime.
    tokio::task::spawn_blocking(bin_dir)
        .await
        .expect("building the binaries");
    cluster_of(agents).await
}

/// The cluster alone, for frameworks whose tasks are shell commands (no binaries of ours).
async fn cluster_of(agents: &[(&str, Resources)]) -> Cluster {
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let mut handles = Vec::new();
    for (name, resources) in agents {
        let opts = agent_options(&cluster, name, master.addr, resources.clone());
        handles.push(start_agent(&cluster, opts).await);
    }
    wait_for_agents(&master, agents.len()).await;
    Cluster {
        cluster,
        master,
        agents: handles,
    }
}

impl Cluster {
    fn scheduler_config(&self, name: &str) -> SchedulerConfig {
        SchedulerConfig::new(
            self.master.addr,
            self.cluster.credentials(Role::Framework),
            framework_info(name),
        )
    }

    async fn shutdown(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.master.shutdown().await;
    }
}

/// `example-executors ARGS…`, as agents start it.
fn example_program(args: &[&str]) -> CommandInfo {
    CommandInfo::program(
        bin_dir().join("example-executors").display().to_string(),
        args.iter().map(|a| a.to_string()).collect(),
    )
}

/// Events a service reports, forwarded to the test.
fn event_channel() -> (
    impl FnMut(&ServiceEvent) + Send + 'static,
    mpsc::UnboundedReceiver<ServiceEvent>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |e: &ServiceEvent| {
            let _ = tx.send(e.clone());
        },
        rx,
    )
}

/// The first event `pick` accepts, within `deadline`; every event seen is kept in `seen`.
async fn wait_event<T>(
    events: &mut mpsc::UnboundedReceiver<ServiceEvent>,
    seen: &mut Vec<ServiceEvent>,
    what: &str,
    deadline: Duration,
    pick: impl Fn(&ServiceEvent) -> Option<T>,
) -> T {
    let found = timeout(deadline, async {
        while let Some(e) = events.recv().await {
            seen.push(e.clone());
            if let Some(v) = pick(&e) {
                return Some(v);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => v,
        Ok(None) => panic!("the service ended before {what}; events: {seen:#?}"),
        Err(_) => panic!("no {what} within {deadline:?}; events: {seen:#?}"),
    }
}

/// A TCP port free right now on loopback.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One HTTP/1.1 GET over a plain socket: (status code, body).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factorial_results_are_exact_and_in_the_order_given() {
    let c = cluster_with_agents(&[
        ("fact-a", Resources::new(1.0, 512)),
        ("fact-b", Resources::new(1.0, 512)),
    ])
    .await;
    let report = timeout(
        Duration::from_secs(60),
        run_factorial(
            c.scheduler_config("factorial"),
            vec![5, 7, 10, 70, 30, 5],
            example_program(&["factorial"]),
        ),
    )
    .await
    .expect("the factorial job finishes within 60 s")
    .expect("the factorial job succeeds");
    let expected: Vec<(u64, String)> = [
        (5, "120"),
        (7, "5040"),
        (10, "3628800"),
        (70, SEVENTY),
        (30, THIRTY),
        (5, "120"),
    ]
    .into_iter()
    .map(|(n, v)| (n, v.to_string()))
    .collect();
    assert_eq!(report.results, expected);
    assert_eq!(report.relaunches, 0, "{report:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factorial_relaunches_tasks_whose_executor_died() {
    let c = cluster_with_agents(&[("fact-c", Resources::new(2.0, 512))]).await;
    // The first executor started exits at once (mkdir succeeds exactly once); the tasks it
    // took must be run again by the next one.
    let marker = c.cluster.path("first-executor-died");
    let exe = bin_dir().join("example-executors");
    let executor = CommandInfo::shell(format!(
        "if mkdir '{}' 2>/dev/null; then exit 7; fi; exec '{}' factorial",
        marker.display(),
        exe.display()
    ));
    let report = timeout(
        Duration::from_secs(60),
        run_factorial(c.scheduler_config("factorial"), vec![20, 3], executor),
    )
    .await
    .expect("the factorial job finishes within 60 s")
    .expect("the factorial job succeeds after relaunching");
    assert!(marker.exists(), "the failing first executor never ran");
    assert_eq!(
        report.results,
        vec![
            (20, "2432902008176640000".to_string()),
            (3, "6".to_string())
        ]
    );
    assert!(report.relaunches >= 1, "{report:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factorial_gives_up_with_the_reason_when_every_attempt_fails() {
    let c = cluster_with_agents(&[("fact-d", Resources::new(1.0, 512))]).await;
    let executor = CommandInfo::shell("echo no executor here >&2; exit 3");
    let err = timeout(
        Duration::from_secs(60),
        run_factorial(c.scheduler_config("factorial"), vec![4], executor),
    )
    .await
    .expect("the job gives up within 60 s")
    .expect_err("no executor can ever run");
    match err {
        FactorialError::TaskFailed {
            n, attempts, last, ..
        } => {
            assert_eq!((n, attempts), (4, MAX_ATTEMPTS), "{last}");
        }
        other => panic!("expected TaskFailed, got {other}"),
    }
    c.shutdown().await;
}

#[tokio::test]
async fn factorial_refuses_absurd_inputs_before_connecting() {
    // An address nothing listens on: the refusal must come before any connection attempt.
    let cluster = TestCluster::new();
    let config = SchedulerConfig::new(
        "127.0.0.1:9".parse().unwrap(),
        cluster.credentials(Role::Framework),
        framework_info("factorial"),
    );
    let err = run_factorial(config, vec![5, 1_000_000], CommandInfo::shell("true"))
        .await
        .expect_err("1000000! is refused");
    assert!(matches!(err, FactorialError::Input(_)), "{err}");
    assert!(err.to_string().contains("1000000! is too large"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_until_told_to_stop_then_ends_killed() {
    let c = cluster_with_agents(&[("hello-a", Resources::new(1.0, 256))]).await;
    let (report, mut events) = event_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(run_hello(
        c.scheduler_config("hello"),
        async {
            let _ = stopped.await;
        },
        report,
    ));
    let mut seen = Vec::new();
    let (framework_id, task_id, hostname) = wait_event(
        &mut events,
        &mut seen,
        "RUNNING",
        Duration::from_secs(30),
        |e| match e {
            ServiceEvent::Running {
                framework_id,
                task_id,
                hostname,
                ..
            } => Some((framework_id.clone(), task_id.clone(), hostname.clone())),
            _ => None,
        },
    )
    .await;
    assert_eq!(hostname, "hello-a");
    let framework_id = framework_id.expect("RUNNING names the framework");

    // What `bramble logs TASK --follow` reads: the task's sandbox stdout, via the master.
    let mut operator = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator connection");
    let mut stdout = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while !stdout.contains("hello from ") {
        assert!(
            tokio::time::Instant::now() < until,
            "no greeting in {task_id}'s stdout within 20 s; got {stdout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        stdout = match operator
            .read_sandbox(&framework_id, &task_id, "stdout", 0)
            .await
        {
            Ok(chunk) => String::from_utf8_lossy(&chunk.data).into_owned(),
            Err(_) => String::new(), // not created yet
        };
    }
    assert!(stdout.contains(" at "), "{stdout:?}");

    stop.send(()).expect("the service is still waiting");
    let outcome = timeout(Duration::from_secs(30), run)
        .await
        .expect("hello ends within 30 s of the stop")
        .expect("hello's task")
        .expect("hello ends cleanly");
    assert_eq!(outcome.final_state, Some(TaskState::Killed), "{outcome:?}");
    assert!(outcome.was_running);
    assert_eq!(outcome.task_id, Some(task_id.clone()));
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.contains(&ServiceEvent::Killing {
            task_id: task_id.clone()
        }),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            ServiceEvent::Ended {
                state: TaskState::Killed,
                ..
            }
        )),
        "{seen:#?}"
    );
    // Torn down: the master forgets the framework and its task.
    eventually(
        "the hello framework gone from the master",
        Duration::from_secs(10),
        || async {
            let s = c.master.state().await.ok()?;
            (!s.frameworks.iter().any(|f| f.id == framework_id)).then_some(())
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_serves_its_sandbox_on_an_offered_port_until_stopped() {
    let (p1, p2) = {
        let (a, b) = (free_tcp_port(), free_tcp_port());
        (a.min(b), a.max(b))
    };
    let ports = [PortRange::new(p1, p1), PortRange::new(p2, p2)];
    let c = cluster_with_agents(&[("http-a", Resources::new(1.0, 256).with_ports(ports))]).await;
    let (report, mut events) = event_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(run_http(
        c.scheduler_config("http"),
        HttpJob::new(example_program(&["serve-dir"])),
        async {
            let _ = stopped.await;
        },
        report,
    ));
    let mut seen = Vec::new();
    let (task_id, port) = wait_event(
        &mut events,
        &mut seen,
        "RUNNING",
        Duration::from_secs(30),
        |e| match e {
            ServiceEvent::Running { task_id, port, .. } => Some((task_id.clone(), *port)),
            _ => None,
        },
    )
    .await;
    assert_eq!(port, Some(p1), "the first port of the offer's ranges");
    let addr = SocketAddr::from(([127, 0, 0, 1], p1));

    // The master accounts for the port while the task runs.
    let state = c.master.state().await.expect("master state");
    let task = state
        .tasks
        .iter()
        .find(|t| t.id == task_id)
        .expect("the task is known to the master");
    assert_eq!(task.resources.ports, vec![PortRange::new(p1, p1)]);

    // RUNNING means started, not listening yet: retry the first request briefly.
    let (code, body) = eventually(
        "an HTTP answer from the directory server",
        Duration::from_secs(20),
        || async { http_get(addr, "/").await.ok() },
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Index of /"), "{body}");
    // The sandbox holds the task's own stdout and stderr files.
    assert!(body.contains("href=\"stderr\""), "{body}");
    let (code, _) = http_get(addr, "/stderr").await.expect("GET /stderr");
    assert_eq!(code, 200);

    stop.send(()).expect("the service is still waiting");
    let outcome = timeout(Duration::from_secs(30), run)
        .await
        .expect("http ends within 30 s of the stop")
        .expect("http's task")
        .expect("http ends cleanly");
    assert_eq!(outcome.final_state, Some(TaskState::Killed), "{outcome:?}");
    assert_eq!(
        outcome.url().as_deref(),
        Some(format!("http://http-a:{p1}/").as_str())
    );
    // The server is gone with its task.
    eventually(
        "the directory server to stop listening",
        Duration::from_secs(10),
        || async { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    c.shutdown().await;
}

/// The tasks of `framework` the master has as RUNNING.
async fn running_tasks(operator: &mut OperatorClient, framework: &str) -> Vec<String> {
    let state = operator.state().await.expect("cluster state");
    let mut ids: Vec<String> = state
        .tasks
        .iter()
        .filter(|t| t.framework_id.as_str() == framework && t.state == TaskState::Running)
        .map(|t| t.id.to_string())
        .collect();
    ids.sort();
    ids
}

/// docs/tutorial's hello-bramble at its last step, on a real master: two copies come up, its
/// page and the master agree, the master shows its web UI URL, and a restarted scheduler
/// (failing over to the same id) adopts both copies instead of launching more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_framework_keeps_its_copies_up_and_a_restart_adopts_them() {
    use bramble_sdk::SchedulerDriver;
    use bramble_tutorial::{step3, step5};

    let c = cluster_of(&[
        ("tut-a", Resources::new(1.0, 256)),
        ("tut-b", Resources::new(1.0, 256)),
    ])
    .await;
    let mut operator = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator connection");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page");
    let page = listener.local_addr().expect("page address");
    let url = format!("http://{page}/");
    let start = |framework_id: Option<bramble_sdk::FrameworkId>| {
        let mut config = c.scheduler_config("hello-bramble");
        config.framework.failover_timeout_secs = 60.0;
        config.framework.framework_id = framework_id;
        config.framework.webui_url = Some(url.clone());
        let (scheduler, status) = step5::WithStatusPage::new(step3::HelloScheduler::new(2, None));
        let driver = SchedulerDriver::new(config);
        let run = tokio::spawn({
            let driver = driver.clone();
            async move { driver.run(scheduler).await.map(|_| ()) }
        });
        (driver, run, status)
    };

    let (driver, run, status) = start(None);
    let server = tokio::spawn(step5::serve(listener, status));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (framework, copies) = loop {
        if let Some(id) = driver.framework_id() {
            let copies = running_tasks(&mut operator, id.as_str()).await;
            if copies.len() == 2 {
                break (id, copies);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two copies RUNNING within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state = operator.state().await.expect("cluster state");
    let shown = state.frameworks.iter().find(|f| f.id == framework);
    assert_eq!(shown.and_then(|f| f.webui_url.clone()), Some(url.clone()));
    let (code, body) = http_get(page, "/").await.expect("the status page");
    assert_eq!(code, 200);
    assert!(body.contains("2 of 2 copies running"), "{body}");

    // The scheduler goes away without tearing down; its copies keep running.
    driver.stop(true);
    run.await.expect("join").expect("scheduler ran");
    server.abort();
    // The page went with the old scheduler; the new one's status is read directly.
    let (driver, run, status) = start(Some(framework.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut adopted = status.borrow().running.clone();
        adopted.sort();
        if adopted == copies {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted scheduler adopts {copies:?} within 30 s; it has {adopted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the reconciliation grace, still the same two copies and nothing new launched.
    let quiet_until = tokio::time::Instant::now() + step3::RECONCILE_GRACE * 2;
    while tokio::time::Instant::now() < quiet_until {
        assert_eq!(
            running_tasks(&mut operator, framework.as_str()).await,
            copies
        );
        let state = operator.state().await.expect("cluster state");
        let live = state
            .tasks
            .iter()
            .filter(|t| t.framework_id == framework && !t.state.is_terminal())
            .count();
        assert_eq!(live, 2, "no third copy launched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.stop(false);
    run.await.expect("join").expect("scheduler ran");
    c.shutdown().await;
}

/// The live, non-terminal tasks of `framework` the master has.
async fn live_tasks(operator: &mut OperatorClient, framework: &bramble_sdk::FrameworkId) -> usize {
    let state = operator.state().await.expect("cluster state");
    state
        .tasks
        .iter()
        .filter(|t| &t.framework_id == framework && !t.state.is_terminal())
        .count()
}

/// Fails with `what` once `deadline` has passed; else waits 50 ms before the next poll.
async fn poll_again(what: &str, deadline: tokio::time::Instant) {
    assert!(tokio::time::Instant::now() < deadline, "{what} in time");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// docs/tutorial's step 2 on a real master: the count and the copies land in the framework's
/// store, an operator writing `instances` scales it down, and a restarted scheduler adopts
/// what the store lists instead of launching its default count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_step2_keeps_its_count_and_copies_in_the_masters_store() {
    use bramble_proto::framework_state::StateWrite;
    use bramble_sdk::SchedulerDriver;
    use bramble_tutorial::step2;

    let c = cluster_of(&[
        ("kv-a", Resources::new(1.0, 256)),
        ("kv-b", Resources::new(1.0, 256)),
    ])
    .await;
    let mut operator = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator connection");
    let start = |framework_id: Option<bramble_sdk::FrameworkId>, default: usize| {
        let mut config = c.scheduler_config("hello-bramble");
        config.framework.failover_timeout_secs = 60.0;
        config.framework.framework_id = framework_id;
        let driver = SchedulerDriver::new(config);
        let run = tokio::spawn({
            let driver = driver.clone();
            async move {
                driver
                    .run(step2::HelloScheduler::new(default))
                    .await
                    .map(|_| ())
            }
        });
        (driver, run)
    };

    let (driver, run) = start(None, 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let framework = loop {
        if let Some(id) = driver.framework_id() {
            if running_tasks(&mut operator, id.as_str()).await.len() == 2 {
                break id;
            }
        }
        poll_again("two copies RUNNING", deadline).await;
    };
    let entries = operator
        .read_framework_state(&framework, "")
        .await
        .expect("read the framework's state");
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), 3, "instances and two copies: {keys:?}");
    assert!(keys.contains(&step2::INSTANCES_KEY), "{keys:?}");
    let mut recorded: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(step2::COPY_PREFIX))
        .map(str::to_string)
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        running_tasks(&mut operator, framework.as_str()).await
    );

    // The operator wants one copy: one is killed and crossed off.
    operator
        .write_framework_state(
            &framework,
            StateWrite::Put {
                key: step2::INSTANCES_KEY.into(),
                value: b"1".to_vec(),
                expected_version: None,
            },
        )
        .await
        .expect("write instances");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let copies = operator
            .read_framework_state(&framework, step2::COPY_PREFIX)
            .await
            .expect("read the copies")
            .len();
        if copies == 1 && live_tasks(&mut operator, &framework).await == 1 {
            break;
        }
        poll_again("one copy left", deadline).await;
    }

    // A restart with a default of 3 keeps the stored count, 1, and adopts the copy.
    driver.stop(true);
    run.await.expect("join").expect("scheduler ran");
    let (driver, run) = start(Some(framework.clone()), 3);
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < quiet_until {
        assert_eq!(live_tasks(&mut operator, &framework).await, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        driver.framework_id().is_some(),
        "the new scheduler registered"
    );
    driver.stop(false);
    run.await.expect("join").expect("scheduler ran");
    c.shutdown().await;
}

/// docs/tutorial's step 4 on a real master: two instances campaign, one leads and launches,
/// the other stands by; the leader dies (its process would; here its driver stops without
/// tearing down) and the standby takes over under the same framework id within 2 s, adopting
/// the copy the store lists: nothing killed, nothing launched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_step4_elects_one_instance_and_a_standby_takes_over() {
    use bramble_sdk::SchedulerDriver;
    use bramble_tutorial::{step2, step4};
    use std::sync::{Arc, Mutex};

    let c = cluster_of(&[("el-a", Resources::new(1.0, 256))]).await;
    let mut operator = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator connection");
    // Who leads, as each instance's scheduler saw it (shared so the test can read it).
    struct Watched {
        inner: step4::Elected<step2::HelloScheduler>,
        seen: Arc<Mutex<Option<String>>>,
    }
    #[bramble_sdk::async_trait]
    impl bramble_sdk::Scheduler for Watched {
        async fn standing_by(
            &mut self,
            d: &SchedulerDriver,
            fw: &bramble_sdk::FrameworkId,
            leader: &str,
        ) {
            self.inner.standing_by(d, fw, leader).await;
            *self.seen.lock().expect("lock") = self.inner.standing_by.clone();
        }
        async fn registered(
            &mut self,
            d: &SchedulerDriver,
            fw: &bramble_sdk::FrameworkId,
            again: bool,
        ) {
            self.inner.registered(d, fw, again).await;
            *self.seen.lock().expect("lock") = None;
        }
        async fn state_loaded(&mut self, d: &SchedulerDriver, e: Vec<bramble_sdk::StateEntry>) {
            self.inner.state_loaded(d, e).await;
        }
        async fn resource_offers(&mut self, d: &SchedulerDriver, o: Vec<bramble_sdk::Offer>) {
            self.inner.resource_offers(d, o).await;
        }
        async fn status_update(&mut self, d: &SchedulerDriver, s: &bramble_sdk::TaskStatus) {
            self.inner.status_update(d, s).await;
        }
    }
    let start = || {
        let mut config = c.scheduler_config("hello-bramble");
        config.framework.failover_timeout_secs = 60.0;
        let driver = SchedulerDriver::new(step4::campaigning(config));
        let seen = Arc::new(Mutex::new(None));
        let scheduler = Watched {
            inner: step4::Elected::new(step2::HelloScheduler::new(1)),
            seen: seen.clone(),
        };
        let run = tokio::spawn({
            let driver = driver.clone();
            async move { driver.run(scheduler).await.map(|_| ()) }
        });
        (driver, run, seen)
    };

    let (leader, leader_run, _) = start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (framework, copies) = loop {
        if let Some(id) = leader.framework_id() {
            let copies = running_tasks(&mut operator, id.as_str()).await;
            if copies.len() == 1 {
                break (id, copies);
            }
        }
        poll_again("the leader's copy RUNNING", deadline).await;
    };
    let (standby, standby_run, seen) = start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("lock").is_none() {
        poll_again("the second instance standing by", deadline).await;
    }
    assert!(
        standby.framework_id().is_none(),
        "a standby is not registered"
    );

    // The leader goes away without tearing the framework down.
    leader.stop(true);
    leader_run.await.expect("join").expect("leader ran");
    let gone = tokio::time::Instant::now();
    let deadline = gone + Duration::from_secs(10);
    while standby.framework_id().as_ref() != Some(&framework) {
        poll_again("the standby taking over under the same id", deadline).await;
    }
    let took = gone.elapsed();
    assert!(took < Duration::from_secs(2), "took over in {took:?}");
    // It adopted the copy: still exactly that one, nothing killed, nothing new.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < quiet_until {
        assert_eq!(
            running_tasks(&mut operator, framework.as_str()).await,
            copies
        );
        assert_eq!(live_tasks(&mut operator, &framework).await, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("standby took over in {took:?}");

    // Fencing: the new leader's token is above the old one's, and a write stamped with the
    // deposed leader's token is refused while one with the current token lands. Both go on one
    // connection, in order, so once the second is there the first was decided.
    let old_token = leader
        .fencing_token()
        .expect("the first leader had a token");
    let token = standby.fencing_token().expect("the new leader has a token");
    assert!(token > old_token, "{token} > {old_token}");
    let put = |key: &str| bramble_sdk::StateWrite::Put {
        key: key.into(),
        value: b"x".to_vec(),
        expected_version: None,
    };
    standby
        .write_state_fenced(put("fence/stale"), old_token)
        .expect("queued");
    standby
        .write_state_fenced(put("fence/current"), token)
        .expect("queued");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let keys = loop {
        let entries = operator
            .read_framework_state(&framework, "fence/")
            .await
            .expect("read state");
        let keys: Vec<String> = entries.into_iter().map(|e| e.key).collect();
        if keys.iter().any(|k| k == "fence/current") {
            break keys;
        }
        poll_again("the current token's write landing", deadline).await;
    };
    assert_eq!(
        keys,
        ["fence/current"],
        "the stale token's write was refused"
    );
    standby.stop(false);
    standby_run.await.expect("join").expect("standby ran");
    c.shutdown().await;
}
