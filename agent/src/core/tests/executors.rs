//! The core's custom executors: tasks waiting for their executor, updates acknowledged once
//! durable, kills through the executor, executors that exit or go away.

use super::*;

// ---------------------------------------------------------------------------------------------
// Custom executors

#[test]
fn an_executor_task_waits_for_its_executor_then_is_handed_to_it() {
    let mut agent = connected_agent();
    let effects = agent.handle(run_tasks(vec![executor_task("t1")]), Instant::now());
    let (key, spec, supervised) = the_launch(&effects);
    assert!(!supervised, "a custom executor reports its tasks itself");
    // Its own share (none declared here) and its first task's (1 cpu, 64 MiB).
    assert_eq!(
        (spec.limits.cpus, spec.limits.mem_mib),
        (1.0, 64),
        "capped at launch"
    );
    assert!(spec.env.contains(&(
        env::AGENT_SOCKET.into(),
        "/var/lib/bramble-test/agent.sock".into()
    )));
    let launched = Input::Launched {
        container: key.clone(),
        result: Ok(started(300)),
    };
    agent.handle(launched, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.runs.len(), 1);
    assert_eq!(writes.runs[0].queued.len(), 1, "queued until it registers");

    let wrong = agent.handle(connect(1, "not-the-token"), Instant::now());
    assert!(matches!(
        wrong.as_slice(),
        [Effect::AnswerExecutor {
            serial: 1,
            result: Err(_)
        }]
    ));
    let effects = agent.handle(connect(2, &token_of(&spec)), Instant::now());
    let sent = sent_to_executor(&effects, 2);
    assert!(matches!(sent[0], AgentToExecutor::Registered { .. }));
    assert!(matches!(sent[1], AgentToExecutor::LaunchTask(t) if t.task_id == tid("t1")));
    assert!(effects.iter().any(
        |e| matches!(e, Effect::AnswerExecutor { serial: 2, result: Ok(k) } if k.container == key)
    ));
}

/// The limits `effects` set on `key`'s container, in order.
fn resizes(effects: &[Effect], key: &ContainerKey) -> Vec<(f64, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Resize { container, limits } if container == key => {
                Some((limits.cpus, limits.mem_mib))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_executors_limits_follow_its_tasks_and_its_memory_only_grows() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let effects = agent.handle(run_tasks(vec![executor_task("t2")]), Instant::now());
    assert_eq!(resizes(&effects, &key), vec![(2.0, 128)], "{effects:?}");
    let (update, _) = executor_update(&key, "t1", TaskState::Finished);
    let effects = agent.handle(update, Instant::now());
    assert_eq!(
        resizes(&effects, &key),
        vec![(1.0, 128)],
        "cpu follows the live tasks, memory is never lowered: {effects:?}"
    );
    let (update, _) = executor_update(&key, "t2", TaskState::Finished);
    let effects = agent.handle(update, Instant::now());
    assert_eq!(
        resizes(&effects, &key),
        vec![(super::super::limits::MIN_CPUS, 128)],
        "an idle executor keeps a cpu limit: {effects:?}"
    );
}

#[test]
fn a_second_task_for_a_registered_executor_goes_straight_to_it() {
    let mut agent = connected_agent();
    registered_executor(&mut agent, &["t1"], 1);
    let effects = agent.handle(run_tasks(vec![executor_task("t2")]), Instant::now());
    let sent = sent_to_executor(&effects, 1);
    assert!(matches!(sent.as_slice(), [AgentToExecutor::LaunchTask(t)] if t.task_id == tid("t2")));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch { .. })));
}

#[test]
fn a_task_naming_artifacts_its_running_executor_did_not_start_with_is_refused() {
    use bramble_proto::artifact::Artifact;
    let with = |id: &str, uris: &[&str]| TaskInfo {
        artifacts: uris.iter().map(|u| Artifact::new(*u)).collect(),
        ..executor_task(id)
    };
    let mut agent = connected_agent();
    let (key, spec, _) = launch_and_start(
        &mut agent,
        vec![with("t1", &["master:exec.tgz"])],
        300,
        Instant::now(),
    );
    assert_eq!(spec.artifacts, vec![Artifact::new("master:exec.tgz")]);
    agent.handle(connect(1, &token_of(&spec)), Instant::now());
    commit(&mut agent);

    // The executor's own artifacts again (a Mesos scheduler resends its ExecutorInfo): there.
    let effects = agent.handle(
        run_tasks(vec![with("t2", &["master:exec.tgz"])]),
        Instant::now(),
    );
    assert!(matches!(sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::LaunchTask(t)] if t.task_id == tid("t2")));
    commit(&mut agent);

    // Others would never be fetched: refused, not run without its files.
    for (id, uris) in [
        ("t3", &["master:other.sh"][..]),
        ("t4", &["master:exec.tgz", "master:other.sh"][..]),
    ] {
        let effects = agent.handle(run_tasks(vec![with(id, uris)]), Instant::now());
        assert!(
            sent_to_executor(&effects, 1).is_empty(),
            "{id}: {effects:?}"
        );
        assert!(!effects.iter().any(|e| matches!(e, Effect::Launch { .. })));
        let (writes, _) = commit(&mut agent);
        assert_eq!(states(&writes), vec![(tid(id), TaskState::Error)]);
        assert_eq!(writes.updates[0].reason, Some(TaskReason::InvalidTask));
        let message = &writes.updates[0].message;
        assert!(
            message.contains("fetched only when an executor starts"),
            "{message}"
        );
    }
    assert!(agent.runs.get(&key).is_some_and(|r| r.tasks.len() == 2));

    // A task without artifacts still goes to it.
    let effects = agent.handle(run_tasks(vec![executor_task("t5")]), Instant::now());
    assert_eq!(sent_to_executor(&effects, 1).len(), 1);
}

#[test]
fn an_executor_update_is_acknowledged_only_once_it_is_durable() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let (update, uuid) = executor_update(&key, "t1", TaskState::Running);
    let effects = agent.handle(update, Instant::now());
    assert!(
        sent_to_executor(&effects, 1).is_empty(),
        "not before the commit"
    );

    // The disk is full: not written, not acknowledged, kept for the next commit.
    let writes = agent.take_writes();
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Running)]);
    assert_eq!(writes.updates[0].source, UpdateSource::Executor);
    let effects = agent.committed(&[Recorded::NotWritten], Recorded::Durable);
    assert!(sent_to_executor(&effects, 1).is_empty(), "{effects:?}");

    let (writes, effects) = commit(&mut agent);
    assert_eq!(
        states(&writes),
        vec![(tid("t1"), TaskState::Running)],
        "retried"
    );
    assert!(matches!(
        sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::UpdateAck(u)] if *u == uuid
    ));
}

#[test]
fn unwritten_updates_keep_their_order_ahead_of_newer_ones() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let (running, _) = executor_update(&key, "t1", TaskState::Running);
    agent.handle(running, Instant::now());
    agent.take_writes();
    agent.committed(&[Recorded::NotWritten], Recorded::Durable);
    let (finished, _) = executor_update(&key, "t1", TaskState::Finished);
    agent.handle(finished, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(
        states(&writes),
        vec![
            (tid("t1"), TaskState::Running),
            (tid("t1"), TaskState::Finished)
        ]
    );
}

#[test]
fn an_illegal_executor_transition_is_acknowledged_and_dropped() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let (finished, _) = executor_update(&key, "t1", TaskState::Finished);
    agent.handle(finished, Instant::now());
    commit(&mut agent);
    let (running_again, uuid) = executor_update(&key, "t1", TaskState::Running);
    let effects = agent.handle(running_again, Instant::now());
    assert!(matches!(
        sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::UpdateAck(u)] if *u == uuid
    ));
    let (writes, _) = commit(&mut agent);
    assert!(writes.updates.is_empty());
}

#[test]
fn a_killed_executor_task_is_killed_by_its_executor() {
    let mut agent = connected_agent();
    registered_executor(&mut agent, &["t1"], 1);
    let kill = Input::FromMaster(MasterToAgent::KillTask {
        framework_id: fw(),
        task_id: tid("t1"),
    });
    let effects = agent.handle(kill, Instant::now());
    assert!(
        kills(&effects).is_empty(),
        "the executor stops its own task"
    );
    assert!(matches!(
        sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::KillTask(t)] if *t == tid("t1")
    ));
}

#[test]
fn a_task_killed_before_its_executor_registers_is_killed_at_once() {
    let mut agent = connected_agent();
    launch_and_start(&mut agent, vec![executor_task("t1")], 300, Instant::now());
    let kill = Input::FromMaster(MasterToAgent::KillTask {
        framework_id: fw(),
        task_id: tid("t1"),
    });
    agent.handle(kill, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Killed)]);
}

#[test]
fn an_executor_that_exits_fails_its_tasks_and_is_reported_to_the_master() {
    let mut agent = connected_agent();
    let tasks = vec![executor_task("t1"), executor_task("t2")];
    let (key, spec, _) = launch_and_start(&mut agent, tasks, 300, Instant::now());
    agent.handle(connect(1, &token_of(&spec)), Instant::now());
    commit(&mut agent);
    let (running, _) = executor_update(&key, "t1", TaskState::Running);
    agent.handle(running, Instant::now());
    let (finished, _) = executor_update(&key, "t2", TaskState::Finished);
    agent.handle(finished, Instant::now());
    commit(&mut agent);

    let effects = agent.handle(
        Input::ContainerExited {
            container: key,
            report: exit(1),
        },
        Instant::now(),
    );
    assert!(effects.iter().any(|e| matches!(e,
        Effect::ToMaster(AgentToMaster::ExecutorExited { executor_id, .. })
            if *executor_id == ExecutorId("exec-1".into()))));
    let (writes, _) = commit(&mut agent);
    assert_eq!(
        states(&writes),
        vec![(tid("t1"), TaskState::Failed)],
        "the finished task keeps its state"
    );
    assert_eq!(
        writes.updates[0].reason,
        Some(TaskReason::ExecutorTerminated)
    );
}

#[test]
fn an_executor_that_closes_its_connection_is_killed() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let stale = agent.handle(
        Input::ExecutorDisconnected {
            container: key.clone(),
            serial: 99,
        },
        Instant::now(),
    );
    assert!(stale.is_empty(), "another connection's end changes nothing");
    let effects = agent.handle(
        Input::ExecutorDisconnected {
            container: key.clone(),
            serial: 1,
        },
        Instant::now(),
    );
    assert_eq!(kills(&effects), vec![&key]);
}

#[test]
fn an_executor_that_does_not_register_in_time_is_killed() {
    let mut agent = connected_agent();
    let start = Instant::now();
    let (key, _, _) = launch_and_start(&mut agent, vec![executor_task("t1")], 300, start);
    assert!(kills(&agent.tick(start + REGISTRATION_TIMEOUT / 2)).is_empty());
    let effects = agent.tick(start + REGISTRATION_TIMEOUT + Duration::from_secs(1));
    assert_eq!(kills(&effects), vec![&key]);
    assert!(
        agent.tick(start + REGISTRATION_TIMEOUT * 2).is_empty(),
        "once"
    );
    // Issue 22: its task fails for the agent's reason, which the master counts against the
    // agent's health (an executor that crashed on its own is ExecutorTerminated).
    agent.handle(
        Input::ContainerExited {
            container: key,
            report: exit(137),
        },
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Failed)]);
    assert_eq!(
        writes.updates[0].reason,
        Some(TaskReason::ExecutorRegistrationTimeout)
    );
    assert!(
        writes.updates[0].message.contains("did not register"),
        "{}",
        writes.updates[0].message
    );
}

#[test]
fn an_idle_executor_is_shut_down() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let (finished, _) = executor_update(&key, "t1", TaskState::Finished);
    agent.handle(finished, Instant::now());
    commit(&mut agent);
    let idle = Instant::now();
    assert!(agent.tick(idle).is_empty(), "idle from now");
    let effects = agent.tick(idle + IDLE_TIMEOUT + Duration::from_secs(1));
    assert!(matches!(
        sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::Shutdown]
    ));
    assert_eq!(kills(&effects), vec![&key]);
}

#[test]
fn shutting_a_framework_down_kills_its_executors_and_drops_its_updates() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let effects = agent.handle(
        Input::FromMaster(MasterToAgent::ShutdownFramework { framework_id: fw() }),
        Instant::now(),
    );
    assert!(matches!(
        sent_to_executor(&effects, 1).as_slice(),
        [AgentToExecutor::Shutdown]
    ));
    assert_eq!(kills(&effects), vec![&key]);
    assert!(effects.iter().any(
        |e| matches!(e, Effect::ForgetFrameworkUpdates { framework_id } if *framework_id == fw())
    ));
    agent.handle(
        Input::ContainerExited {
            container: key,
            report: exit(0),
        },
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Killed)]);
}
