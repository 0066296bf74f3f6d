//! The scheduler driver against a real in-process master on loopback (no agents): subscribe,
//! failover, refusal, reconciliation, teardown and reconnection.

use bramble_master::config::MasterConfig;
use bramble_master::server::{self, MasterHandle};
use bramble_sdk::proto::identity::init_cluster;
use bramble_sdk::{
    framework_info, Credentials, FrameworkId, Offer, Role, Scheduler, SchedulerConfig,
    SchedulerDriver, SdkError, TaskId, TaskReason, TaskState, TaskStatus,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(20);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("bramble_sdk=debug,bramble_master=info")
        .with_test_writer()
        .try_init();
}

async fn start_master(cluster: &Path, listen: SocketAddr) -> MasterHandle {
    let creds = Credentials::load(cluster, Role::Node).expect("node credentials");
    let cfg = MasterConfig {
        cluster: cluster.to_path_buf(),
        listen,
        state_dir: cluster.join("master-state"),
        ..MasterConfig::default()
    };
    server::start(&creds, &cfg).await.expect("start master")
}

/// Starts a master on the port a stopped one used. The old endpoint's UDP socket is released
/// only once its last connection task has wound down, so binding is retried until a deadline.
async fn restart_master(cluster: &Path, listen: SocketAddr) -> MasterHandle {
    let creds = Credentials::load(cluster, Role::Node).expect("node credentials");
    let cfg = MasterConfig {
        cluster: cluster.to_path_buf(),
        listen,
        state_dir: cluster.join("master-state"),
        ..MasterConfig::default()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match server::start(&creds, &cfg).await {
            Ok(master) => return master,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("port not free yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("could not restart the master on {listen}: {e}"),
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(cluster: &Path, master: SocketAddr, role: Role) -> SchedulerConfig {
    let creds = Credentials::load(cluster, role).expect("credentials");
    let mut info = framework_info("sdk-test");
    info.failover_timeout_secs = 30.0;
    SchedulerConfig::new(master, creds, info)
}

#[derive(Debug)]
enum Event {
    Registered {
        framework_id: FrameworkId,
        reregistered: bool,
    },
    Update(TaskStatus),
    Disconnected,
    Error(String),
}

/// Forwards every callback to the test, with a driver handle on registration.
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    /// Tasks to reconcile on the first registration.
    reconcile: Vec<TaskId>,
}

#[bramble_sdk::async_trait]
impl Scheduler for Recorder {
    async fn registered(
        &mut self,
        driver: &SchedulerDriver,
        framework_id: &FrameworkId,
        reregistered: bool,
    ) {
        if !self.reconcile.is_empty() {
            driver
                .reconcile_tasks(std::mem::take(&mut self.reconcile))
                .expect("reconcile while connected");
        }
        let _ = self.events.send(Event::Registered {
            framework_id: framework_id.clone(),
            reregistered,
        });
    }

    async fn resource_offers(&mut self, _driver: &SchedulerDriver, _offers: Vec<Offer>) {}

    async fn status_update(&mut self, _driver: &SchedulerDriver, status: &TaskStatus) {
        let _ = self.events.send(Event::Update(status.clone()));
    }

    async fn disconnected(&mut self, _driver: &SchedulerDriver) {
        let _ = self.events.send(Event::Disconnected);
    }

    async fn error(&mut self, _driver: &SchedulerDriver, message: &str) {
        let _ = self.events.send(Event::Error(message.to_string()));
    }
}

type Run = tokio::task::JoinHandle<Result<Recorder, SdkError>>;

fn spawn_scheduler(
    config: SchedulerConfig,
    reconcile: Vec<TaskId>,
) -> (SchedulerDriver, mpsc::UnboundedReceiver<Event>, Run) {
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = SchedulerDriver::new(config);
    let runner = driver.clone();
    let run = tokio::spawn(async move {
        runner
            .run(Recorder {
                events: tx,
                reconcile,
            })
            .await
    });
    (driver, rx, run)
}

async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    timeout(DEADLINE, events.recv())
        .await
        .expect("no scheduler event before the deadline")
        .expect("scheduler event channel closed")
}

async fn registered(events: &mut mpsc::UnboundedReceiver<Event>) -> (FrameworkId, bool) {
    loop {
        match next(events).await {
            Event::Registered {
                framework_id,
                reregistered,
            } => return (framework_id, reregistered),
            Event::Disconnected => {}
            Event::Error(message) => {
                panic!("master error while waiting for registration: {message}")
            }
            other => panic!("expected registration, got {other:?}"),
        }
    }
}

async fn finished(run: Run) -> Result<Recorder, SdkError> {
    timeout(DEADLINE, run)
        .await
        .expect("driver did not return before the deadline")
        .expect("driver task panicked")
}

async fn framework_listed(master: &MasterHandle, id: &FrameworkId) -> Option<bool> {
    let state = master.state().await.expect("master state");
    state
        .frameworks
        .iter()
        .find(|f| &f.id == id)
        .map(|f| f.connected)
}

#[tokio::test]
async fn scheduler_registers_then_fails_over_with_the_same_framework_id() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;

    let (driver, mut events, run) =
        spawn_scheduler(config(dir.path(), master.addr, Role::Framework), vec![]);
    let (id, reregistered) = registered(&mut events).await;
    assert!(
        !reregistered,
        "a first subscription is not a re-registration"
    );
    assert_eq!(driver.framework_id(), Some(id.clone()));
    assert_eq!(framework_listed(&master, &id).await, Some(true));

    driver.stop(true);
    finished(run)
        .await
        .expect("stop(true) returns the scheduler");
    assert!(
        matches!(driver.kill_task("x".into()), Err(SdkError::Stopped)),
        "calls after stop are refused"
    );
    // A failover stop keeps the framework (disconnected) on the master.
    let connected = async {
        loop {
            match framework_listed(&master, &id).await {
                Some(false) => return,
                Some(true) => tokio::task::yield_now().await,
                None => panic!("failover stop must not remove the framework"),
            }
        }
    };
    timeout(DEADLINE, connected)
        .await
        .expect("master never saw the disconnect");

    let mut cfg = config(dir.path(), master.addr, Role::Framework);
    cfg.framework.framework_id = Some(id.clone());
    let (driver, mut events, run) = spawn_scheduler(cfg, vec![]);
    let (again, reregistered) = registered(&mut events).await;
    assert!(
        reregistered,
        "subscribing with a framework id is a re-registration"
    );
    assert_eq!(again, id, "failover keeps the framework id");
    driver.stop(false);
    finished(run).await.expect("teardown");
    master.shutdown().await;
}

#[tokio::test]
async fn a_node_certificate_is_refused_as_a_scheduler_with_the_masters_reason() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;

    let (_driver, _events, run) =
        spawn_scheduler(config(dir.path(), master.addr, Role::Node), vec![]);
    match finished(run).await {
        Err(SdkError::Refused(reason)) => {
            assert!(
                reason.contains("node") && reason.contains("scheduler"),
                "reason should say a node certificate cannot be a scheduler: {reason}"
            );
            let shown = SdkError::Refused(reason).to_string();
            assert!(shown.contains("refused"), "{shown}");
        }
        Err(other) => panic!("expected Refused, got {other}"),
        Ok(_) => panic!("a node certificate must not subscribe"),
    }
    master.shutdown().await;
}

#[tokio::test]
async fn reconciling_an_unknown_task_yields_lost() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;

    let (driver, mut events, run) = spawn_scheduler(
        config(dir.path(), master.addr, Role::Framework),
        vec!["no-such-task".into()],
    );
    let (id, _) = registered(&mut events).await;
    match next(&mut events).await {
        Event::Update(status) => {
            assert_eq!(status.task_id, TaskId::from("no-such-task"));
            assert_eq!(status.state, TaskState::Lost);
            assert_eq!(status.reason, Some(TaskReason::Reconciliation));
            assert_eq!(status.framework_id, id);
            assert_eq!(status.uuid, None, "master answers need no acknowledgement");
        }
        other => panic!("expected a LOST update, got {other:?}"),
    }
    driver.stop(false);
    finished(run).await.expect("teardown");
    master.shutdown().await;
}

#[tokio::test]
async fn stop_without_failover_tears_the_framework_down() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;

    let (driver, mut events, run) =
        spawn_scheduler(config(dir.path(), master.addr, Role::Framework), vec![]);
    assert!(
        matches!(driver.revive_offers(), Err(SdkError::Disconnected)),
        "calls before registration report Disconnected"
    );
    let (id, _) = registered(&mut events).await;
    assert!(matches!(
        driver.acknowledge(&TaskStatus::new(
            id.clone(),
            "t".into(),
            TaskState::Running,
            bramble_sdk::UpdateSource::Agent,
        )),
        Err(SdkError::InvalidCall(_))
    ));
    assert_eq!(framework_listed(&master, &id).await, Some(true));

    driver.stop(false);
    let recorder = finished(run)
        .await
        .expect("stop(false) returns the scheduler");
    // The driver returns only after the master confirmed the teardown.
    assert_eq!(
        framework_listed(&master, &id).await,
        None,
        "torn-down framework still listed"
    );
    drop(recorder);
    master.shutdown().await;
}

#[tokio::test]
async fn driver_reconnects_with_the_same_framework_id_after_the_master_restarts() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;
    let addr = master.addr;

    let (driver, mut events, run) =
        spawn_scheduler(config(dir.path(), addr, Role::Framework), vec![]);
    let (id, reregistered) = registered(&mut events).await;
    assert!(!reregistered);

    master.shutdown().await;
    match next(&mut events).await {
        Event::Disconnected => {}
        other => panic!("expected disconnected, got {other:?}"),
    }
    assert!(!driver.is_connected());
    assert!(matches!(
        driver.reconcile_tasks(vec![]),
        Err(SdkError::Disconnected)
    ));

    let master = restart_master(dir.path(), addr).await;
    let (again, reregistered) = registered(&mut events).await;
    assert!(reregistered, "a reconnect is a re-registration");
    assert_eq!(again, id, "the driver re-subscribes with its framework id");
    assert_eq!(framework_listed(&master, &id).await, Some(true));

    driver.stop(false);
    finished(run).await.expect("teardown");
    master.shutdown().await;
}

/// A web UI published after subscribing survives a reconnect: the re-subscription carries
/// it (the master replaces a framework's info with what it re-subscribes with).
#[tokio::test]
async fn a_published_web_ui_is_resubscribed_with_after_the_master_restarts() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;
    let addr = master.addr;
    let (driver, mut events, run) =
        spawn_scheduler(config(dir.path(), addr, Role::Framework), vec![]);
    let (id, _) = registered(&mut events).await;
    let url = "http://pi-a:31000/".to_string();
    driver
        .set_webui_url(Some(url.clone()))
        .expect("publish the web UI");
    async fn shown(master: &MasterHandle, id: &FrameworkId) -> Option<String> {
        let state = master.state().await.expect("master state");
        let framework = state.frameworks.into_iter().find(|f| &f.id == id);
        framework.and_then(|f| f.webui_url)
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while shown(&master, &id).await.as_ref() != Some(&url) {
        assert!(tokio::time::Instant::now() < deadline, "URL not shown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    master.shutdown().await;
    let master = restart_master(dir.path(), addr).await;
    let (_, reregistered) = registered(&mut events).await;
    assert!(reregistered);
    assert_eq!(shown(&master, &id).await, Some(url));

    driver.stop(false);
    finished(run).await.expect("teardown");
    master.shutdown().await;
}

#[tokio::test]
async fn driver_gives_up_once_the_failover_timeout_passes() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    init_cluster(dir.path(), "sdk").expect("cluster");
    let master = start_master(dir.path(), loopback()).await;

    let mut cfg = config(dir.path(), master.addr, Role::Framework);
    cfg.framework.failover_timeout_secs = 1.0;
    let (_driver, mut events, run) = spawn_scheduler(cfg, vec![]);
    registered(&mut events).await;
    master.shutdown().await;

    match finished(run).await {
        Err(SdkError::FailoverTimeout {
            attempts,
            last_error,
            ..
        }) => {
            assert!(attempts >= 1);
            assert!(!last_error.is_empty());
        }
        Err(other) => panic!("expected FailoverTimeout, got {other}"),
        Ok(_) => panic!("the driver cannot succeed without a master"),
    }
}
