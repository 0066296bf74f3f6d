//! The Mesos executor path through the core: the `MESOS_*` environment, subscriptions proved
//! by process session, re-subscription, shutdown grace, and Mesos command tasks' updates.

use super::*;
use crate::core::ExecutorAuth;
use bramble_proto::task::MesosTask;

fn mesos(checkpoint: bool) -> Box<MesosTask> {
    Box::new(MesosTask {
        task_json: r#"{"task_id":{"value":"t1"}}"#.into(),
        group: None,
        executor_json: Some(r#"{"executor_id":{"value":"exec-1"}}"#.into()),
        framework_json: r#"{"id":{"value":"fw-1"},"user":"pi","name":"m"}"#.into(),
        checkpoint,
        shutdown_grace_ms: 100,
    })
}

fn mesos_executor_task(id: &str, checkpoint: bool) -> TaskInfo {
    let mut t = executor_task(id);
    t.mesos = Some(mesos(checkpoint));
    t.executor.as_mut().unwrap().command.environment =
        [("MESOS_EXECUTOR_ID".to_string(), "override".to_string())].into();
    t
}

fn subscribe(serial: u64, session: Option<u32>, unacked: &[&str]) -> Input {
    Input::ExecutorConnected {
        serial,
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        auth: ExecutorAuth::Mesos {
            session,
            unacknowledged_tasks: unacked.iter().map(|t| tid(t)).collect(),
        },
    }
}

fn env_of<'a>(spec: &'a crate::containerizer::LaunchSpec, key: &str) -> Vec<&'a str> {
    spec.env
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn accepted(effects: &[Effect], serial: u64) -> bool {
    effects.iter().any(|e| {
        matches!(e, Effect::AnswerExecutor { serial: s, result: Ok(a) } if *s == serial && a.mesos.is_some())
    })
}

#[test]
fn a_mesos_executor_gets_the_mesos_environment_and_no_token() {
    let mut agent = connected_agent();
    let (_, spec, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", false)],
        300,
        Instant::now(),
    );
    assert_eq!(env_of(&spec, "MESOS_AGENT_ENDPOINT"), ["127.0.0.1:5051"]);
    assert_eq!(env_of(&spec, "MESOS_FRAMEWORK_ID"), ["fw-1"]);
    assert_eq!(env_of(&spec, "MESOS_SLAVE_ID"), ["agent-1"]);
    assert_eq!(env_of(&spec, "MESOS_AGENT_ID"), ["agent-1"]);
    assert_eq!(
        env_of(&spec, "MESOS_SLAVE_PID"),
        ["slave(1)@127.0.0.1:5051"]
    );
    assert_eq!(
        env_of(&spec, "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"),
        ["100ms"]
    );
    assert_eq!(env_of(&spec, "MESOS_HTTP_COMMAND_EXECUTOR"), ["0"]);
    assert_eq!(env_of(&spec, "LIBPROCESS_PORT"), ["0"]);
    assert_eq!(
        env_of(&spec, "MESOS_SANDBOX"),
        env_of(&spec, "MESOS_DIRECTORY")
    );
    // Unset without checkpointing: pymesos reads "0" as true (pitfall 7).
    assert!(env_of(&spec, "MESOS_CHECKPOINT").is_empty());
    assert!(env_of(&spec, "MESOS_RECOVERY_TIMEOUT").is_empty());
    assert!(env_of(&spec, env::EXECUTOR_TOKEN).is_empty());
    // The command's own environment comes last, so it wins.
    assert_eq!(env_of(&spec, "MESOS_EXECUTOR_ID").last(), Some(&"override"));

    let mut agent = connected_agent();
    let (_, spec, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", true)],
        300,
        Instant::now(),
    );
    assert_eq!(env_of(&spec, "MESOS_CHECKPOINT"), ["1"]);
    assert_eq!(env_of(&spec, "MESOS_RECOVERY_TIMEOUT"), ["15mins"]);
}

#[test]
fn only_a_process_in_the_executors_session_may_subscribe() {
    let mut agent = connected_agent();
    launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", false)],
        300,
        Instant::now(),
    );
    let refused = |e: &[Effect], serial| {
        e.iter().any(
            |e| matches!(e, Effect::AnswerExecutor { serial: s, result: Err(_) } if *s == serial),
        )
    };
    let effects = agent.handle(subscribe(5, Some(999), &[]), Instant::now());
    assert!(refused(&effects, 5), "another session: {effects:?}");
    let effects = agent.handle(subscribe(6, None, &[]), Instant::now());
    assert!(refused(&effects, 6), "unknown session: {effects:?}");
    // A token does not open a Mesos executor either.
    let effects = agent.handle(connect(7, ""), Instant::now());
    assert!(refused(&effects, 7), "token: {effects:?}");
    let effects = agent.handle(subscribe(8, Some(300), &[]), Instant::now());
    assert!(accepted(&effects, 8), "{effects:?}");
    let sent = sent_to_executor(&effects, 8);
    assert!(matches!(sent[0], AgentToExecutor::Registered { .. }));
    assert!(matches!(sent[1], AgentToExecutor::LaunchTask(t) if t.task_id == tid("t1")));
}

#[test]
fn a_new_subscription_replaces_the_old_and_never_relaunches_a_task() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", true)],
        300,
        Instant::now(),
    );
    agent.handle(subscribe(8, Some(300), &[]), Instant::now());
    commit(&mut agent);
    let effects = agent.handle(subscribe(9, Some(300), &["t1"]), Instant::now());
    assert!(accepted(&effects, 9), "{effects:?}");
    assert!(
        !sent_to_executor(&effects, 9)
            .iter()
            .any(|m| matches!(m, AgentToExecutor::LaunchTask(_))),
        "no second LAUNCH: {effects:?}"
    );
    // The old stream closing afterwards changes nothing.
    let effects = agent.handle(
        Input::ExecutorDisconnected {
            container: key.clone(),
            serial: 8,
        },
        Instant::now(),
    );
    assert!(kills(&effects).is_empty());
    let (writes, _) = commit(&mut agent);
    assert!(
        writes.updates.is_empty(),
        "t1 is known to the executor: {:?}",
        writes.updates
    );
}

#[test]
fn a_staging_task_unknown_to_a_resubscribing_executor_is_lost() {
    let mut agent = connected_agent();
    launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", true)],
        300,
        Instant::now(),
    );
    agent.handle(subscribe(8, Some(300), &[]), Instant::now());
    commit(&mut agent);
    agent.handle(subscribe(9, Some(300), &[]), Instant::now());
    assert_reported(
        &mut agent,
        "t1",
        TaskState::Lost,
        TaskReason::AgentRestarted,
    );
}

#[test]
fn a_checkpointing_executor_has_the_recovery_timeout_to_come_back() {
    let mut agent = connected_agent();
    let t0 = Instant::now();
    let (key, _, _) = launch_and_start(&mut agent, vec![mesos_executor_task("t1", true)], 300, t0);
    agent.handle(subscribe(8, Some(300), &[]), t0);
    commit(&mut agent);
    let effects = agent.handle(
        Input::ExecutorDisconnected {
            container: key.clone(),
            serial: 8,
        },
        t0,
    );
    assert!(
        kills(&effects).is_empty(),
        "not killed at once: {effects:?}"
    );
    // Past the registration timeout but within the recovery timeout: still waited for.
    assert!(kills(&agent.tick(t0 + REGISTRATION_TIMEOUT * 2)).is_empty());
    let effects = agent.tick(t0 + Duration::from_secs(901));
    assert_eq!(kills(&effects), vec![&key]);
}

#[test]
fn a_non_checkpointing_executor_that_disconnects_is_killed() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", false)],
        300,
        Instant::now(),
    );
    agent.handle(subscribe(8, Some(300), &[]), Instant::now());
    let effects = agent.handle(
        Input::ExecutorDisconnected {
            container: key.clone(),
            serial: 8,
        },
        Instant::now(),
    );
    assert_eq!(kills(&effects), vec![&key]);
}

#[test]
fn shutdown_tells_the_executor_then_kills_after_its_grace_period() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", false)],
        300,
        Instant::now(),
    );
    agent.handle(subscribe(8, Some(300), &[]), Instant::now());
    let shutdown = MasterToAgent::ShutdownExecutor {
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
    };
    let effects = agent.handle(Input::FromMaster(shutdown), Instant::now());
    assert!(matches!(
        sent_to_executor(&effects, 8)[..],
        [AgentToExecutor::Shutdown]
    ));
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Kill { container, after } if *container == key && *after == Duration::from_millis(100))));
}

#[test]
fn an_idle_mesos_executor_stays_until_its_framework_shuts_it_down() {
    // Mesos keeps an executor without tasks (frameworks keep state and send it messages
    // between tasks); only SHUTDOWN, the framework's end or the executor itself ends it.
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(
        &mut agent,
        vec![mesos_executor_task("t1", false)],
        300,
        Instant::now(),
    );
    assert!(accepted(
        &agent.handle(subscribe(8, Some(300), &[]), Instant::now()),
        8
    ));
    let (finished, _) = executor_update(&key, "t1", TaskState::Finished);
    agent.handle(finished, Instant::now());
    commit(&mut agent);
    let idle = Instant::now();
    agent.tick(idle);
    let effects = agent.tick(idle + IDLE_TIMEOUT * 3);
    assert!(kills(&effects).is_empty(), "{effects:?}");
    assert!(sent_to_executor(&effects, 8).is_empty(), "{effects:?}");
}

#[test]
fn a_mesos_command_task_reports_starting_running_then_mesos_words() {
    let mut agent = connected_agent();
    let mut t = task("t1");
    t.mesos = Some(mesos(false));
    let (key, _, _) = launch_and_start(&mut agent, vec![t], 300, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(
        states(&writes),
        vec![
            (tid("t1"), TaskState::Starting),
            (tid("t1"), TaskState::Running)
        ]
    );
    for u in &writes.updates {
        assert_eq!(
            u.executor_id,
            Some(ExecutorId("t1".into())),
            "executor id is the task id"
        );
        assert_eq!(u.source, UpdateSource::Executor);
    }
    agent.handle(
        Input::ContainerExited {
            container: key,
            report: exit(3),
        },
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Failed)]);
    assert_eq!(writes.updates[0].message, "Command exited with status 3");
}

#[test]
fn native_command_tasks_still_skip_starting() {
    let mut agent = connected_agent();
    launch_and_start(&mut agent, vec![task("t1")], 300, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Running)]);
}
