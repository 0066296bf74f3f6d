//! The runtime's group commit with real files and a real (idle) executor process: what a
//! burst records is durable before any of it leaves the agent, and a short task's RUNNING and
//! FINISHED, recorded in one commit, leave together.

use super::*;
use crate::core::AgentSettings;
use crate::paths::WorkDir;
use bramble_proto::executor_env as env;
use bramble_proto::messages::ExecutorToAgent;
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{Resources, TaskState};
use std::collections::BTreeMap;

fn fw() -> FrameworkId {
    FrameworkId("fw-1".into())
}

fn executor_task(id: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId(id.into()),
        name: id.into(),
        agent_id: AgentId("agent-1".into()),
        resources: Resources::new(0.1, 16),
        command: None,
        // An executor that never connects by itself: the test plays its connection.
        executor: Some(ExecutorInfo {
            executor_id: ExecutorId("exec-1".into()),
            name: "exec".into(),
            command: CommandInfo::shell("exec sleep 60"),
            resources: Resources::default(),
        }),
        data: Vec::new(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}

fn executor_update(container: &ContainerKey, id: &str, state: TaskState) -> Input {
    let mut status = TaskStatus::new(fw(), TaskId(id.into()), state, UpdateSource::Executor);
    status.uuid = Some(uuid::Uuid::new_v4());
    Input::Core(CoreInput::FromExecutor {
        container: container.clone(),
        msg: ExecutorToAgent::Update(status),
    })
}

/// The executor token the agent put in the environment of the container it started.
fn token_of(pid: u32) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the executor's environ");
    let prefix = format!("{}=", env::EXECUTOR_TOKEN);
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
        .expect("an executor token in the environment")
}

#[tokio::test]
async fn a_bursts_running_and_finished_are_durable_before_either_leaves_and_leave_together() {
    let dir = tempfile::tempdir().unwrap();
    let work = WorkDir::new(dir.path());
    let updates_dir = work.updates_dir();
    let settings = AgentSettings {
        work_dir: dir.path().to_path_buf(),
        socket_path: work.executor_socket(),
        hostname: "pi-1".into(),
        resources: Resources::new(2.0, 512),
        attributes: BTreeMap::new(),
        executor_registration_timeout: Duration::from_secs(30),
        executor_idle_timeout: Duration::from_secs(30),
        executor_recovery_timeout: Duration::from_secs(30),
        mesos_endpoint: None,
    };
    let edges = Edges {
        containerizer: Arc::new(Containerizer::without_cgroups()),
        updates: StatusUpdateManager::open(&updates_dir).unwrap(),
        checkpoints: Checkpoints::open(&work).unwrap(),
        work_dir: dir.path().to_path_buf(),
        kill_grace: Duration::from_millis(100),
        gc: crate::gc::GcPolicy::default(),
    };
    let (inputs, _input_rx) = mpsc::channel(64);
    let core = Agent::new(settings, Some(AgentId("agent-1".into())), []);
    let mut rt = Runtime::new(core, edges, inputs);
    // The master's end reads the log the moment each message arrives, from another thread:
    // an update sent before the commit's one write was on disk would find it missing.
    let (master_tx, mut master_end) = mpsc::channel(64);
    let (seen_tx, master_rx) = std::sync::mpsc::channel();
    let watched = updates_dir.clone();
    std::thread::spawn(move || {
        while let Some(msg) = master_end.blocking_recv() {
            let on_disk = StatusUpdateManager::pending_on_disk(&watched).unwrap();
            if seen_tx.send((msg, on_disk)).is_err() {
                return;
            }
        }
    });
    rt.input(Input::MasterConnected {
        agent_id: AgentId("agent-1".into()),
        tx: master_tx,
    })
    .await;
    rt.commit().await;

    // The master hands over a task for a custom executor; the executor process starts.
    rt.input(Input::FromMaster(MasterToAgent::RunTasks {
        framework_id: fw(),
        framework_name: "test".into(),
        tasks: vec![executor_task("t1")],
    }))
    .await;
    rt.commit().await;
    let (container, pid) = rt
        .containers
        .iter()
        .map(|(key, c)| (key.clone(), c.pid))
        .next()
        .expect("the executor's container");
    let (exec_tx, mut exec_rx) = bramble_proto::queue::channel(64, 1 << 20);
    let (reply, answer) = oneshot::channel();
    rt.input(Input::ExecutorConnected {
        serial: 1,
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        auth: ExecutorAuth::Token {
            token: token_of(pid),
            known_tasks: None,
        },
        tx: ExecutorTx::Socket(exec_tx),
        reply,
    })
    .await;
    rt.commit().await;
    assert!(answer.await.unwrap().is_ok(), "the executor is admitted");
    let mut launched = false;
    while let Ok(msg) = exec_rx.try_recv() {
        launched |= matches!(msg, AgentToExecutor::LaunchTask(t) if t.task_id.as_str() == "t1");
    }
    assert!(launched, "the task went to the executor after its commit");
    while master_rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
    let on_disk_before = StatusUpdateManager::pending_on_disk(&updates_dir).unwrap();

    // One burst: the task's RUNNING and FINISHED (a task over before its RUNNING went out).
    rt.input(executor_update(&container, "t1", TaskState::Running))
        .await;
    rt.input(executor_update(&container, "t1", TaskState::Finished))
        .await;
    assert!(
        master_rx.try_recv().is_err(),
        "nothing leaves the agent before the burst's commit"
    );
    assert!(
        exec_rx.try_recv().is_err(),
        "no acknowledgement before the commit"
    );

    rt.commit().await;
    let mut sent = Vec::new();
    while sent.len() < 2 {
        let (msg, on_disk) = master_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the commit sends both updates");
        if let AgentToMaster::StatusUpdate(s) = msg {
            sent.push((s.task_id.as_str().to_string(), s.state, on_disk));
        }
    }
    let both = on_disk_before + 2;
    assert_eq!(
        sent,
        vec![
            ("t1".to_string(), TaskState::Running, both),
            ("t1".to_string(), TaskState::Finished, both)
        ],
        "both leave in the commit, in order (FINISHED does not wait for RUNNING's \
         acknowledgement), and each found both on disk when it arrived"
    );
    let mut acks = 0;
    while let Ok(msg) = exec_rx.try_recv() {
        acks += matches!(msg, AgentToExecutor::UpdateAck(_)) as usize;
    }
    assert_eq!(acks, 2, "the executor hears of both once they are durable");

    // FINISHED's acknowledgement settles both.
    let finished = rt
        .updates
        .latest()
        .find(|s| s.task_id.as_str() == "t1")
        .and_then(|s| s.uuid)
        .expect("t1's FINISHED pending");
    rt.input(Input::FromMaster(MasterToAgent::Acknowledge {
        framework_id: fw(),
        task_id: TaskId("t1".into()),
        uuid: finished,
    }))
    .await;
    rt.commit().await;
    assert_eq!(rt.updates.pending(), 0);
    rt.kill_everything().await;
}
