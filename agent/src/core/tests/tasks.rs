//! The core's command tasks: registering with the master, launching, exiting and killing.

use super::*;

// ---------------------------------------------------------------------------------------------
// Registering with the master

#[test]
fn registration_names_the_agent_and_the_tasks_running_now() {
    let mut agent = connected_agent();
    running_command_task(&mut agent, "t1", 100);
    let AgentToMaster::Register {
        agent_id,
        hostname,
        tasks,
        ..
    } = agent.registration()
    else {
        panic!("not a Register message");
    };
    assert_eq!(agent_id, Some(AgentId("agent-1".into())));
    assert_eq!(hostname, "pi-1");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task.task_id, tid("t1"));
    assert_eq!(tasks[0].state, TaskState::Running);
}

#[test]
fn a_register_listing_many_tasks_with_big_data_still_fits_a_frame() {
    let mut agent = connected_agent();
    let tasks: Vec<TaskInfo> = (0..64)
        .map(|i| {
            // One executor's tasks: one container, its tasks queued until it registers.
            let mut t = executor_task(&format!("t{i}"));
            t.data = vec![9; 64 * 1024];
            t
        })
        .collect();
    launch_and_start(&mut agent, tasks, 100, Instant::now());
    commit(&mut agent);
    let register = agent.registration();
    let AgentToMaster::Register { tasks, .. } = &register else {
        panic!("not a Register message");
    };
    assert_eq!(tasks.len(), 64);
    assert!(
        bramble_proto::codec::encode_frame(&register, bramble_proto::codec::MAX_FRAME_BYTES)
            .is_ok(),
        "the Register of an agent running 64 tasks of 64 KiB each does not fit a frame"
    );
}

#[test]
fn a_new_agent_id_is_persisted_in_the_next_commit() {
    let mut agent = Agent::new(settings(), None, []);
    agent.handle(
        Input::MasterConnected {
            agent_id: AgentId("agent-9".into()),
        },
        Instant::now(),
    );
    assert_eq!(agent.agent_id(), Some(&AgentId("agent-9".into())));
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.agent_id, Some(AgentId("agent-9".into())));
    let (again, _) = commit(&mut agent);
    assert!(again.is_empty(), "written once: {again:?}");
}

// ---------------------------------------------------------------------------------------------
// Command tasks

#[test]
fn a_command_task_is_launched_supervised_in_its_own_sandbox() {
    let mut agent = connected_agent();
    let effects = agent.handle(run_tasks(vec![task("t1")]), Instant::now());
    let (key, spec, supervised) = the_launch(&effects);
    assert!(
        supervised,
        "a command task's exit status must survive the agent"
    );
    assert_eq!(spec.container_id, key);
    assert_eq!(spec.program, PathBuf::from("/bin/sh"));
    assert_eq!(spec.args, vec!["-c".to_string(), "true".to_string()]);
    assert_eq!(spec.limits.mem_mib, 64);
    assert!(spec
        .sandbox
        .starts_with("/var/lib/bramble-test/frameworks/fw-1"));
    assert!(spec.sandbox.ends_with(&key));
    assert!(spec.env.contains(&(env::TASK_ID.into(), "t1".into())));
    assert!(spec.env.contains(&(env::AGENT_ID.into(), "agent-1".into())));
    let (writes, _) = commit(&mut agent);
    assert!(
        writes.updates.is_empty(),
        "nothing to report before it runs"
    );
}

#[test]
fn a_launched_command_task_is_checkpointed_and_reported_running_in_one_commit() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(&mut agent, vec![task("t1")], 4242, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.runs.len(), 1, "the run is on disk with its RUNNING");
    assert_eq!(writes.runs[0].container, key);
    assert_eq!(writes.runs[0].pid, 4242);
    assert_eq!(writes.runs[0].start_time, 1000 + 4242);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Running)]);
    assert_eq!(writes.updates[0].message, "pid 4242");
    assert_eq!(writes.updates[0].agent_id, Some(AgentId("agent-1".into())));
}

#[test]
fn a_status_update_is_handed_over_for_recording_and_never_sent_by_the_core() {
    let mut agent = connected_agent();
    let (_, _, effects) = launch_and_start(&mut agent, vec![task("t1")], 7, Instant::now());
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::ToMaster(_))),
        "the RUNNING goes out only from the update log, once recorded: {effects:?}"
    );
    let (writes, released) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Running)]);
    assert!(
        !released
            .iter()
            .any(|e| matches!(e, Effect::ToMaster(AgentToMaster::StatusUpdate(_)))),
        "{released:?}"
    );
}

#[test]
fn a_failed_launch_fails_the_task_and_schedules_its_sandbox_for_gc() {
    let mut agent = connected_agent();
    let effects = agent.handle(run_tasks(vec![task("t1")]), Instant::now());
    let (key, spec, _) = the_launch(&effects);
    let failed = Input::Launched {
        container: key,
        result: Err(ContainerError::Spawn {
            id: "x".into(),
            program: PathBuf::from("/bin/sh"),
            source: std::io::Error::other("no such program"),
        }),
    };
    let effects = agent.handle(failed, Instant::now());
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::ScheduleGc { sandbox } if *sandbox == spec.sandbox)));
    assert!(!effects.iter().any(|e| matches!(e, Effect::SweepGcNow)));
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Failed)]);
    assert_eq!(writes.updates[0].reason, Some(TaskReason::LaunchFailed));
    assert!(writes.runs.is_empty(), "nothing to recover: it never ran");
}

#[test]
fn a_task_without_memory_is_refused_and_never_launched() {
    let mut agent = connected_agent();
    let mut no_mem = task("t1");
    no_mem.resources = Resources::new(1.0, 0);
    let effects = agent.handle(run_tasks(vec![no_mem]), Instant::now());
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Launch { .. })),
        "{effects:?}"
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Error)]);
    assert_eq!(writes.updates[0].reason, Some(TaskReason::InvalidTask));
    assert!(writes.updates[0].message.contains("mem > 0"));
}

/// The runtime could not write the burst's run files: it tells the core before recording
/// (`Agent::runs_not_checkpointed`), as `Runtime::commit` does, and records what it returns.
fn commit_with_runs_unwritten(
    agent: &mut Agent,
    why: &str,
) -> (Writes, Vec<TaskStatus>, Vec<Effect>) {
    let writes = agent.take_writes();
    let keys: Vec<ContainerKey> = writes.runs.iter().map(|r| r.container.clone()).collect();
    let updates = agent.runs_not_checkpointed(&keys, why);
    let effects = agent.committed(&vec![Recorded::Durable; updates.len()], Recorded::Durable);
    (writes, updates, effects)
}

#[test]
fn a_command_task_whose_run_cannot_be_checkpointed_fails_instead_of_running() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(&mut agent, vec![task("t1")], 4242, Instant::now());
    let (writes, recorded, effects) =
        commit_with_runs_unwritten(&mut agent, "writing meta/runs: No space left on device");
    assert_eq!(writes.runs.len(), 1, "the new run was to be checkpointed");
    let states: Vec<_> = recorded
        .iter()
        .map(|u| (u.task_id.clone(), u.state, u.reason))
        .collect();
    assert_eq!(
        states,
        vec![(tid("t1"), TaskState::Failed, Some(TaskReason::LaunchFailed))],
        "FAILED in place of RUNNING"
    );
    assert!(
        recorded[0].message.contains("No space left on device"),
        "{}",
        recorded[0].message
    );
    assert_eq!(recorded[0].agent_id, Some(AgentId("agent-1".into())));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Kill { container, .. } if *container == key)),
        "the unrecoverable container is killed: {effects:?}"
    );
    // Its end adds nothing: the task has its terminal state already.
    let mut killed = exit(0);
    killed.code = None;
    killed.signal = Some(15);
    killed.killed = true;
    agent.handle(
        Input::ContainerExited {
            container: key,
            report: killed,
        },
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert!(writes.updates.is_empty(), "{:?}", writes.updates);
}

#[test]
fn an_executor_whose_run_cannot_be_checkpointed_fails_its_tasks_and_is_killed() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(&mut agent, vec![executor_task("t1")], 300, Instant::now());
    let (_, recorded, effects) = commit_with_runs_unwritten(&mut agent, "disk full");
    let states: Vec<_> = recorded
        .iter()
        .map(|u| (u.task_id.clone(), u.state))
        .collect();
    assert_eq!(states, vec![(tid("t1"), TaskState::Failed)]);
    assert_eq!(recorded[0].reason, Some(TaskReason::LaunchFailed));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Kill { container, .. } if *container == key)));
}

#[test]
fn a_run_checkpointed_before_keeps_running_when_a_rewrite_fails() {
    let mut agent = connected_agent();
    let key = running_command_task(&mut agent, "t1", 7);
    // A kill makes no rewrite; an unrelated launch in the same burst does fail.
    let (other, _, _) = launch_and_start(&mut agent, vec![task("t2")], 8, Instant::now());
    let writes = agent.take_writes();
    let updates = agent.runs_not_checkpointed(&[key.clone(), other.clone()], "EIO");
    let states: Vec<_> = updates
        .iter()
        .map(|u| (u.task_id.clone(), u.state))
        .collect();
    assert_eq!(states, vec![(tid("t2"), TaskState::Failed)], "{writes:?}");
    let effects = agent.committed(&vec![Recorded::Durable; updates.len()], Recorded::Durable);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::Kill { container, .. } if *container == key)));
}

#[test]
fn a_command_task_that_exits_zero_finishes_and_its_ack_frees_the_run() {
    let mut agent = connected_agent();
    let key = running_command_task(&mut agent, "t1", 100);
    let exited = Input::ContainerExited {
        container: key.clone(),
        report: exit(0),
    };
    let effects = agent.handle(exited, Instant::now());
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::ScheduleGc { .. })));
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Finished)]);
    assert_eq!(writes.updates[0].exit_code, Some(0));
    assert_eq!(agent.view(1).containers.len(), 1, "kept until acknowledged");

    // The RUNNING is acknowledged first: the FINISHED still waits.
    agent.handle(
        Input::UpdateAcknowledged {
            framework_id: fw(),
            task_id: tid("t1"),
            settled: false,
        },
        Instant::now(),
    );
    assert_eq!(agent.view(1).containers.len(), 1);
    agent.handle(acknowledged("t1"), Instant::now());
    assert!(agent.view(0).containers.is_empty(), "forgotten once acked");
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.removed_runs, vec![key], "its checkpoint goes too");
}

#[test]
fn a_command_task_that_exits_non_zero_fails() {
    let mut agent = connected_agent();
    let key = running_command_task(&mut agent, "t1", 100);
    let exited = Input::ContainerExited {
        container: key,
        report: exit(3),
    };
    agent.handle(exited, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(states(&writes), vec![(tid("t1"), TaskState::Failed)]);
    assert_eq!(writes.updates[0].reason, Some(TaskReason::CommandExited));
    assert_eq!(writes.updates[0].exit_code, Some(3));
}

#[test]
fn acknowledgements_from_the_master_go_to_the_update_log() {
    let mut agent = connected_agent();
    let uuid = uuid::Uuid::new_v4();
    let ack = Input::FromMaster(MasterToAgent::Acknowledge {
        framework_id: fw(),
        task_id: tid("t1"),
        uuid,
    });
    let effects = agent.handle(ack, Instant::now());
    assert!(matches!(
        effects.as_slice(),
        [Effect::AcknowledgeUpdate { task_id, uuid: u, .. }] if *task_id == tid("t1") && *u == uuid
    ));
}

// ---------------------------------------------------------------------------------------------
// Killing

#[test]
fn a_killed_command_task_ends_killed() {
    let mut agent = connected_agent();
    let key = running_command_task(&mut agent, "t1", 100);
    let kill = Input::FromMaster(MasterToAgent::KillTask {
        framework_id: fw(),
        task_id: tid("t1"),
    });
    let effects = agent.handle(kill, Instant::now());
    assert_eq!(kills(&effects), vec![&key]);
    let mut killed = exit(0);
    killed.code = None;
    killed.signal = Some(15);
    killed.killed = true;
    agent.handle(
        Input::ContainerExited {
            container: key,
            report: killed,
        },
        Instant::now(),
    );
    assert_reported(
        &mut agent,
        "t1",
        TaskState::Killed,
        TaskReason::KilledByRequest,
    );
}

#[test]
fn a_kill_for_a_task_unknown_here_reports_it_lost() {
    let mut agent = connected_agent();
    let kill = Input::FromMaster(MasterToAgent::KillTask {
        framework_id: fw(),
        task_id: tid("ghost"),
    });
    let effects = agent.handle(kill, Instant::now());
    assert!(kills(&effects).is_empty());
    assert_reported(
        &mut agent,
        "ghost",
        TaskState::Lost,
        TaskReason::AgentUnknown,
    );
}

#[test]
fn a_task_that_already_runs_here_is_not_launched_twice() {
    let mut agent = connected_agent();
    running_command_task(&mut agent, "t1", 100);
    let effects = agent.handle(run_tasks(vec![task("t1")]), Instant::now());
    assert!(effects.is_empty(), "{effects:?}");
}

/// Issue 16: ids from the master become directories; one that would leave the work dir (or
/// cannot be a file name) is refused with its reason, and nothing is launched.
#[test]
fn tasks_whose_ids_cannot_name_a_directory_are_refused_with_the_reason() {
    let long = "x".repeat(10 * 1024);
    for bad in ["../../etc", "a/b", "..", "nul\0byte", long.as_str()] {
        let mut agent = connected_agent();
        let effects = agent.handle(run_tasks(vec![task(bad)]), Instant::now());
        assert!(effects.is_empty(), "{bad:?}: {effects:?}");
        let (writes, _) = commit(&mut agent);
        assert_eq!(
            states(&writes),
            vec![(tid(bad), TaskState::Error)],
            "{bad:?}"
        );
        assert_eq!(writes.updates[0].reason, Some(TaskReason::InvalidTask));
        assert!(
            writes.updates[0].message.contains("task id"),
            "{}",
            writes.updates[0].message
        );

        let mut on_executor = executor_task("t1");
        on_executor.executor.as_mut().expect("executor").executor_id = ExecutorId(bad.into());
        let effects = agent.handle(run_tasks(vec![on_executor]), Instant::now());
        assert!(effects.is_empty(), "{bad:?}: {effects:?}");
        assert_reported(&mut agent, "t1", TaskState::Error, TaskReason::InvalidTask);
    }
    let mut agent = connected_agent();
    let bad_fw = Input::FromMaster(MasterToAgent::RunTasks {
        framework_id: FrameworkId("../..".into()),
        framework_name: "test".into(),
        tasks: vec![task("t1")],
    });
    assert!(agent.handle(bad_fw, Instant::now()).is_empty());
    assert_reported(&mut agent, "t1", TaskState::Error, TaskReason::InvalidTask);
}

#[test]
fn a_task_with_neither_command_nor_executor_is_an_error() {
    let mut agent = connected_agent();
    let mut bad = task("t1");
    bad.command = None;
    let effects = agent.handle(run_tasks(vec![bad]), Instant::now());
    assert!(effects.is_empty());
    assert_reported(&mut agent, "t1", TaskState::Error, TaskReason::InvalidTask);
}
