//! The executor driver against a fake agent: the test binds the agent's Unix socket and
//! speaks the agent's side of the protocol with the real codec.

use bramble_sdk::proto::codec::{FrameReader, FrameWriter};
use bramble_sdk::proto::messages::{AgentToExecutor, ExecutorToAgent};
use bramble_sdk::{
    run_executor_with, status, CommandInfo, Executor, ExecutorDriver, ExecutorId, ExecutorInfo,
    FrameworkId, Resources, SdkError, TaskId, TaskInfo, TaskState, TaskStatus, TaskStatusExt,
    UpdateSource,
};
use std::time::Duration;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);
const TOKEN: &str = "one-time-secret";

/// Finishes tasks whose data is "finish" at once; keeps others running until killed.
#[derive(Default)]
struct TestExecutor {
    driver: Option<ExecutorDriver>,
    running: Vec<TaskId>,
    kills: Vec<TaskId>,
    shut_down: bool,
}

#[bramble_sdk::async_trait]
impl Executor for TestExecutor {
    async fn registered(
        &mut self,
        driver: &ExecutorDriver,
        _executor: &ExecutorInfo,
        _agent_id: &bramble_sdk::AgentId,
    ) {
        self.driver = Some(driver.clone());
    }

    async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        driver
            .send_status_update(status(&task, TaskState::Running))
            .expect("RUNNING");
        if task.data == b"finish" {
            driver
                .send_status_update(status(&task, TaskState::Finished).data(b"42".to_vec()))
                .expect("FINISHED");
        } else {
            self.running.push(task.task_id);
        }
    }

    async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
        self.kills.push(task_id.clone());
        if let Some(i) = self.running.iter().position(|t| t == task_id) {
            self.running.remove(i);
            driver
                .send_status_update(status(task_id, TaskState::Killed).message("killed on request"))
                .expect("KILLED");
        }
    }

    async fn shutdown(&mut self, _driver: &ExecutorDriver) {
        self.shut_down = true;
    }
}

struct FakeAgent {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
}

impl FakeAgent {
    async fn accept(listener: &UnixListener) -> Self {
        let (stream, _) = timeout(DEADLINE, listener.accept())
            .await
            .expect("executor never connected")
            .expect("accept");
        let (r, w) = stream.into_split();
        Self {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
        }
    }

    async fn recv(&mut self) -> ExecutorToAgent {
        timeout(DEADLINE, self.reader.recv())
            .await
            .expect("no message from the executor before the deadline")
            .expect("executor message")
    }

    async fn send(&mut self, msg: AgentToExecutor) {
        self.writer.send(&msg).await.expect("send to executor");
    }

    /// Receives one update, checks what every executor update must carry, and acks it.
    async fn update(&mut self, task: &str, state: TaskState) -> TaskStatus {
        let status = match self.recv().await {
            ExecutorToAgent::Update(s) => s,
            other => panic!("expected an update, got {other:?}"),
        };
        assert_eq!(status.task_id, TaskId::from(task));
        assert_eq!(status.state, state);
        assert_eq!(status.source, UpdateSource::Executor);
        assert_eq!(status.framework_id, FrameworkId::from("fw-1"));
        assert_eq!(status.executor_id, Some(ExecutorId::from("exec-1")));
        assert_eq!(status.agent_id, Some("agent-1".into()));
        let uuid = status.uuid.expect("executor updates carry a uuid");
        self.send(AgentToExecutor::UpdateAck(uuid)).await;
        status
    }
}

fn executor_info() -> ExecutorInfo {
    ExecutorInfo {
        executor_id: "exec-1".into(),
        name: "test".into(),
        command: CommandInfo::program("/bin/true", vec![]),
        resources: Resources::new(0.1, 16),
    }
}

fn task(id: &str, data: &[u8]) -> TaskInfo {
    TaskInfo {
        task_id: id.into(),
        name: id.into(),
        agent_id: "agent-1".into(),
        resources: Resources::new(0.1, 16),
        command: None,
        executor: Some(executor_info()),
        data: data.to_vec(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}

type Run = tokio::task::JoinHandle<Result<TestExecutor, SdkError>>;

fn spawn_executor(socket: std::path::PathBuf) -> Run {
    tokio::spawn(run_executor_with(
        socket,
        "fw-1".into(),
        "exec-1".into(),
        TOKEN.to_string(),
        TestExecutor::default(),
    ))
}

async fn registered_agent(listener: &UnixListener) -> FakeAgent {
    registered_agent_knowing(listener, None).await
}

/// Accepts the executor's connection: a first `Register` (`known: None`), or a
/// `Reregister` listing exactly `known`; answers `Registered`.
async fn registered_agent_knowing(listener: &UnixListener, known: Option<&[&str]>) -> FakeAgent {
    let mut agent = FakeAgent::accept(listener).await;
    let (framework_id, executor_id, token) = match (agent.recv().await, known) {
        (
            ExecutorToAgent::Register {
                framework_id,
                executor_id,
                token,
            },
            None,
        ) => (framework_id, executor_id, token),
        (
            ExecutorToAgent::Reregister {
                framework_id,
                executor_id,
                token,
                mut known_tasks,
            },
            Some(known),
        ) => {
            known_tasks.sort();
            let want: Vec<TaskId> = known.iter().map(|t| TaskId::from(*t)).collect();
            assert_eq!(known_tasks, want, "the tasks the executor knows");
            (framework_id, executor_id, token)
        }
        (other, known) => panic!("expected to be told {known:?} first, got {other:?}"),
    };
    assert_eq!(framework_id, FrameworkId::from("fw-1"));
    assert_eq!(executor_id, ExecutorId::from("exec-1"));
    assert_eq!(token, TOKEN, "Register must carry the agent's token");
    agent
        .send(AgentToExecutor::Registered {
            agent_id: "agent-1".into(),
            framework_id: "fw-1".into(),
            executor: executor_info(),
        })
        .await;
    agent
}

#[tokio::test]
async fn executor_runs_kills_and_shuts_down_against_an_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let run = spawn_executor(socket);
    let mut agent = registered_agent(&listener).await;

    agent
        .send(AgentToExecutor::LaunchTask(task("t1", b"finish")))
        .await;
    let running = agent.update("t1", TaskState::Running).await;
    let done = agent.update("t1", TaskState::Finished).await;
    assert_eq!(done.data, b"42");
    assert_ne!(running.uuid, done.uuid, "each update has its own uuid");

    agent
        .send(AgentToExecutor::LaunchTask(task("t2", b"run")))
        .await;
    agent.update("t2", TaskState::Running).await;
    agent.send(AgentToExecutor::KillTask("t2".into())).await;
    let killed = agent.update("t2", TaskState::Killed).await;
    assert_eq!(killed.message, "killed on request");

    agent.send(AgentToExecutor::Shutdown).await;
    let executor = timeout(DEADLINE, run)
        .await
        .expect("run_executor did not return after Shutdown")
        .expect("executor task panicked")
        .expect("run_executor after Shutdown");
    assert!(executor.shut_down, "shutdown() was called");
    assert_eq!(executor.kills, vec![TaskId::from("t2")]);
    let driver = executor.driver.expect("registered() was called");
    assert!(
        driver.pending_updates().is_empty(),
        "every update was acknowledged"
    );
    assert!(matches!(
        driver.send_status_update(status(&TaskId::from("t3"), TaskState::Running)),
        Err(SdkError::Stopped)
    ));
}

#[tokio::test]
async fn unacknowledged_updates_are_resent_to_a_restarted_agent_and_a_refusal_ends_the_executor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let run = spawn_executor(socket);
    let mut agent = registered_agent(&listener).await;

    agent
        .send(AgentToExecutor::LaunchTask(task("t1", b"run")))
        .await;
    let first = match agent.recv().await {
        ExecutorToAgent::Update(s) => s,
        other => panic!("expected RUNNING, got {other:?}"),
    };
    assert_eq!(first.state, TaskState::Running);
    // Not acknowledged: the agent goes away instead (killed, restarting).
    drop(agent);
    // The executor comes back with the same token, says it knows t1 (its end was never
    // acknowledged) and resends the very same update.
    let mut agent = registered_agent_knowing(&listener, Some(&["t1"])).await;
    match agent.recv().await {
        ExecutorToAgent::Update(s) => {
            assert_eq!(s.uuid, first.uuid, "a resend keeps its uuid");
            assert_eq!(s.state, TaskState::Running);
        }
        other => panic!("expected the resent RUNNING, got {other:?}"),
    }
    // This time the agent that answers does not know the executor: it closes unanswered,
    // every time the executor tries.
    drop(agent);
    for _ in 0..bramble_sdk::REFUSALS_TO_GIVE_UP {
        let mut refusing = FakeAgent::accept(&listener).await;
        assert!(matches!(
            refusing.recv().await,
            ExecutorToAgent::Reregister { .. }
        ));
        drop(refusing);
    }
    let err = match timeout(DEADLINE, run)
        .await
        .expect("run_executor did not notice the refusal")
        .expect("executor task panicked")
    {
        Err(e) => e,
        Ok(_) => panic!("being refused by the agent must be an error"),
    };
    let msg = err.to_string();
    assert!(matches!(err, SdkError::Agent(_)), "{msg}");
    assert!(msg.contains("1 status updates unacknowledged"), "{msg}");
    assert!(msg.contains("does not know this executor"), "{msg}");
}

#[tokio::test]
async fn acknowledgements_settle_while_a_callback_is_still_running() {
    // launch_task blocks until released; meanwhile the agent acknowledges its RUNNING update.
    // The ack must be settled without waiting for the callback to return.
    struct Slow {
        go: Option<oneshot::Receiver<()>>,
        driver: mpsc::UnboundedSender<ExecutorDriver>,
    }
    #[bramble_sdk::async_trait]
    impl Executor for Slow {
        async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
            driver
                .send_status_update(status(&task, TaskState::Running))
                .expect("RUNNING");
            let _ = self.driver.send(driver.clone());
            if let Some(go) = self.go.take() {
                let _ = go.await;
            }
        }
        async fn kill_task(&mut self, _driver: &ExecutorDriver, _task_id: &TaskId) {}
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let (go_tx, go_rx) = oneshot::channel();
    let (driver_tx, mut driver_rx) = mpsc::unbounded_channel();
    let run = tokio::spawn(run_executor_with(
        socket,
        "fw-1".into(),
        "exec-1".into(),
        TOKEN.to_string(),
        Slow {
            go: Some(go_rx),
            driver: driver_tx,
        },
    ));
    let mut agent = registered_agent(&listener).await;
    agent
        .send(AgentToExecutor::LaunchTask(task("t1", b"")))
        .await;
    let driver = timeout(DEADLINE, driver_rx.recv())
        .await
        .expect("launch_task never started")
        .expect("driver");
    assert_eq!(driver.pending_updates().len(), 1, "RUNNING awaits its ack");
    agent.update("t1", TaskState::Running).await;
    let settled = async {
        while !driver.pending_updates().is_empty() {
            tokio::task::yield_now().await;
        }
    };
    timeout(DEADLINE, settled)
        .await
        .expect("the ack stayed unsettled while launch_task ran");
    go_tx.send(()).expect("release launch_task");
    agent.send(AgentToExecutor::Shutdown).await;
    timeout(DEADLINE, run)
        .await
        .expect("run_executor did not return")
        .expect("panicked")
        .expect("clean shutdown");
}

#[tokio::test]
async fn missing_environment_names_the_variable() {
    if std::env::var(bramble_sdk::proto::executor_env::AGENT_SOCKET).is_ok() {
        return; // running under an agent: nothing to check
    }
    struct Nothing;
    #[bramble_sdk::async_trait]
    impl Executor for Nothing {
        async fn launch_task(&mut self, _d: &ExecutorDriver, _t: TaskInfo) {}
        async fn kill_task(&mut self, _d: &ExecutorDriver, _t: &TaskId) {}
    }
    let err = match bramble_sdk::run_executor(Nothing).await {
        Err(e) => e,
        Ok(_) => panic!("no agent socket in the environment"),
    };
    let msg = err.to_string();
    assert!(msg.contains("BRAMBLE_AGENT_SOCKET"), "{msg}");
    assert!(msg.contains("Bramble agent"), "{msg}");
}
