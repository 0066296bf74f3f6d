//! The core's master link, sandbox reads and recovery after an agent restart.

use super::*;

// ---------------------------------------------------------------------------------------------
// Master link, sandboxes

#[test]
fn messages_for_the_master_are_dropped_while_it_is_not_connected() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    agent.handle(Input::MasterDisconnected, Instant::now());
    assert!(!agent.view(0).connected);
    let effects = agent.handle(
        Input::FromExecutor {
            container: key,
            msg: ExecutorToAgent::Message(b"hi".to_vec()),
        },
        Instant::now(),
    );
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn a_sandbox_read_names_the_tasks_sandbox_and_whether_it_ended() {
    let mut agent = connected_agent();
    running_command_task(&mut agent, "t1", 100);
    let read = |task: &str| {
        Input::FromMaster(MasterToAgent::ReadSandbox {
            request: 7,
            read: bramble_proto::messages::SandboxRead {
                framework_id: fw(),
                task_id: tid(task),
                path: "stdout".into(),
                offset: 0,
                max_bytes: 10,
            },
        })
    };
    let effects = agent.handle(read("t1"), Instant::now());
    assert!(matches!(
        effects.as_slice(),
        [Effect::ServeSandbox {
            sandbox: Some((_, false)),
            request: SandboxRequest::Read { request: 7, .. },
            ..
        }]
    ));
    let effects = agent.handle(read("nope"), Instant::now());
    assert!(matches!(
        effects.as_slice(),
        [Effect::ServeSandbox { sandbox: None, .. }]
    ));
}

// ---------------------------------------------------------------------------------------------
// Recovery

fn checkpoint(key: &str, executor: Option<ExecutorInfo>, state: TaskState) -> RunCheckpoint {
    let mut info = task("t1");
    if executor.is_some() {
        info = executor_task("t1");
    }
    RunCheckpoint {
        container: key.into(),
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        executor,
        sandbox: PathBuf::from("/var/lib/bramble-test/sandbox"),
        token: "tok".into(),
        pid: 500,
        start_time: 77,
        cgroup_dirs: Vec::new(),
        memory_limit_mib: 0,
        tasks: vec![TaskCheckpoint { info, state }],
        queued: Vec::new(),
        mesos: None,
    }
}

#[test]
fn a_live_executor_is_re_adopted_and_may_reconnect_with_its_token() {
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), []);
    let exec = executor_task("t1").executor;
    let runs = vec![RecoveredRun {
        checkpoint: checkpoint("c1", exec, TaskState::Running),
        alive: true,
    }];
    let (summary, effects) = agent.recover(runs, BTreeMap::new(), None, Instant::now());
    assert_eq!((summary.adopted, summary.executors), (1, 1));
    assert!(matches!(effects.as_slice(),
        [Effect::Adopt { container, spec, supervised: false }] if container == "c1" && spec.pid == 500));
    let effects = agent.handle(connect(1, "tok"), Instant::now());
    assert!(effects.iter().any(
        |e| matches!(e, Effect::AnswerExecutor { serial: 1, result: Ok(k) } if k.container == "c1")
    ));
    assert_eq!(
        agent.view(0).containers[0].tasks,
        vec![(tid("t1"), TaskState::Running)]
    );
}

/// A recovered executor reconnecting with `Reregister`, listing `known`.
fn reconnect_knowing(serial: u64, known: &[&str]) -> Input {
    Input::ExecutorConnected {
        serial,
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        auth: ExecutorAuth::Token {
            token: "tok".into(),
            known_tasks: Some(known.iter().map(|t| tid(t)).collect()),
        },
    }
}

fn recovered_with_staging_task() -> Agent {
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), []);
    let exec = executor_task("t1").executor;
    let runs = vec![RecoveredRun {
        checkpoint: checkpoint("c1", exec, TaskState::Staging),
        alive: true,
    }];
    agent.recover(runs, BTreeMap::new(), None, Instant::now());
    agent
}

#[test]
fn a_task_a_reconnecting_executor_never_got_is_reported_lost_not_left_staging() {
    // The agent died after checkpointing the task and before its LaunchTask left.
    let mut agent = recovered_with_staging_task();
    agent.handle(reconnect_knowing(1, &[]), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Lost)]);
    assert_eq!(writes.updates[0].reason, Some(TaskReason::AgentRestarted));
}

#[test]
fn a_task_the_reconnecting_executor_knows_stays_as_it_is() {
    let mut agent = recovered_with_staging_task();
    agent.handle(reconnect_knowing(1, &["t1"]), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert!(states(&writes).is_empty(), "{:?}", writes.updates);
    assert_eq!(
        agent.view(0).containers[0].tasks,
        vec![(tid("t1"), TaskState::Staging)]
    );
}

#[test]
fn recovery_takes_the_newest_unacknowledged_state_over_the_run_file() {
    let mut finished = TaskStatus::new(fw(), tid("t1"), TaskState::Finished, UpdateSource::Agent);
    finished.uuid = Some(uuid::Uuid::new_v4());
    let mut agent = Agent::new(settings(), None, [&finished]);
    let runs = vec![RecoveredRun {
        checkpoint: checkpoint("c1", None, TaskState::Running),
        alive: false,
    }];
    let (summary, effects) = agent.recover(runs, BTreeMap::new(), None, Instant::now());
    assert_eq!(summary.adopted, 0);
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Adopt {
                supervised: true,
                ..
            }]
        ),
        "a dead run is adopted too: its end is reported by the watcher"
    );
    assert_eq!(
        agent.view(1).containers[0].tasks,
        vec![(tid("t1"), TaskState::Finished)]
    );
}

#[test]
fn after_a_reboot_old_tasks_are_lost_and_no_pid_is_touched() {
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), []);
    let exec = executor_task("t1").executor;
    let runs = vec![RecoveredRun {
        checkpoint: checkpoint("c1", exec, TaskState::Running),
        alive: true,
    }];
    let (summary, effects) = agent.recover(
        runs,
        BTreeMap::new(),
        Some("rebooted".into()),
        Instant::now(),
    );
    assert_eq!(summary.tasks_gone, 1);
    assert!(effects.is_empty(), "nothing adopted or killed: {effects:?}");
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Lost)]);
    assert_eq!(writes.updates[0].reason, Some(TaskReason::HostRebooted));
    assert_eq!(writes.runs.len(), 1);
    assert_eq!(writes.runs[0].pid, 0, "rewritten without its pid");

    // The master hears that the executor is gone once it is connected.
    let effects = agent.handle(
        Input::MasterConnected {
            agent_id: AgentId("agent-1".into()),
        },
        Instant::now(),
    );
    assert!(matches!(
        effects.as_slice(),
        [Effect::ToMaster(AgentToMaster::ExecutorExited { .. })]
    ));
}
