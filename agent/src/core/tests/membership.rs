//! Where runs' task lists are written (`membership.rs`): in the run file at a run's first
//! commit, in the update log after, never a run file rewrite per task; and recovery from
//! either, at each point a crash can leave them.

use super::*;
use crate::checkpoint::{LoggedTask, TaskChange};

/// The burst's task list changes, shortly: `+c/t` added (queued), `+c/t!` added handed,
/// `-c/t` removed, `log c`, `gone c`, with `c` the container's first 4 characters.
fn changes(writes: &Writes) -> Vec<String> {
    let short = |c: &str| c.chars().take(4).collect::<String>();
    writes
        .task_changes
        .iter()
        .map(|c| match c {
            TaskChange::RunLogged { container } => format!("log {}", short(container)),
            TaskChange::TaskAdded { container, task } => format!(
                "+{}/{}{}",
                short(container),
                task.info.task_id,
                if task.handed { "!" } else { "" }
            ),
            TaskChange::TaskRemoved { container, task_id } => {
                format!("-{}/{task_id}", short(container))
            }
            TaskChange::RunRemoved { container } => format!("gone {}", short(container)),
        })
        .collect()
}

fn change_of(key: &str, change: &str) -> String {
    let short: String = key.chars().take(4).collect();
    change.replace("{c}", &short)
}

/// Runs `ids` on the registered executor of container `key` (connection `serial`), to
/// FINISHED, and acknowledges them; returns the writes of each step.
fn run_to_the_end(agent: &mut Agent, key: &ContainerKey, ids: &[&str]) -> Vec<Writes> {
    let mut all = Vec::new();
    let tasks = ids.iter().map(|id| executor_task(id)).collect();
    agent.handle(run_tasks(tasks), Instant::now());
    all.push(commit(agent).0);
    for id in ids {
        let (finished, _) = executor_update(key, id, TaskState::Finished);
        agent.handle(finished, Instant::now());
    }
    all.push(commit(agent).0);
    for id in ids {
        agent.handle(acknowledged(id), Instant::now());
    }
    all.push(commit(agent).0);
    all
}

#[test]
fn tasks_coming_and_going_on_a_running_executor_rewrite_no_run_file() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t1"], 1);
    let steps = run_to_the_end(&mut agent, &key, &["t2", "t3"]);
    for writes in &steps {
        assert!(
            writes.runs.is_empty(),
            "no run file written: {:?}",
            writes.runs
        );
    }
    assert_eq!(
        changes(&steps[0]),
        [change_of(&key, "+{c}/t2!"), change_of(&key, "+{c}/t3!")]
    );
    assert_eq!(
        states(&steps[1]),
        [
            (tid("t2"), TaskState::Finished),
            (tid("t3"), TaskState::Finished)
        ]
    );
    assert!(steps[1].task_changes.is_empty());
    assert_eq!(
        changes(&steps[2]),
        [change_of(&key, "-{c}/t2"), change_of(&key, "-{c}/t3")]
    );
    assert_eq!(agent.view(0).containers[0].tasks.len(), 1, "t1 is left");
}

#[test]
fn a_new_runs_first_commit_writes_its_tasks_in_the_run_file_then_in_the_log() {
    let mut agent = connected_agent();
    let (key, spec, _) = launch_and_start(
        &mut agent,
        vec![executor_task("t1"), executor_task("t2")],
        300,
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.runs.len(), 1);
    let queued: Vec<&TaskId> = writes.runs[0].queued.iter().map(|t| &t.task_id).collect();
    assert_eq!(
        queued,
        [&tid("t1"), &tid("t2")],
        "a crash before the log finds them here"
    );
    assert_eq!(
        changes(&writes),
        ["log {c}", "+{c}/t1", "+{c}/t2"].map(|c| change_of(&key, c))
    );

    // Handing them to the executor that registers is a change in the log only.
    agent.handle(connect(1, &token_of(&spec)), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty());
    assert_eq!(
        changes(&writes),
        ["+{c}/t1!", "+{c}/t2!"].map(|c| change_of(&key, c))
    );
}

#[test]
fn while_the_log_cannot_take_a_runs_tasks_its_run_file_keeps_them() {
    let mut agent = connected_agent();
    let (key, spec, _) =
        launch_and_start(&mut agent, vec![executor_task("t1")], 300, Instant::now());
    let writes = agent.take_writes();
    assert_eq!(
        changes(&writes),
        ["log {c}", "+{c}/t1"].map(|c| change_of(&key, c))
    );
    agent.committed(&[], Recorded::NotWritten);

    // The log is still not durable: the change is written to both, and retried in order.
    agent.handle(connect(1, &token_of(&spec)), Instant::now());
    agent.handle(run_tasks(vec![executor_task("t2")]), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.runs.len(), 1, "rewritten with the change");
    let mut in_file: Vec<TaskId> = writes.runs[0]
        .tasks
        .iter()
        .map(|t| t.info.task_id.clone())
        .collect();
    in_file.sort();
    assert_eq!(in_file, [tid("t1"), tid("t2")]);
    assert_eq!(
        changes(&writes),
        ["log {c}", "+{c}/t1", "+{c}/t1!", "+{c}/t2!"].map(|c| change_of(&key, c))
    );

    // Durable now: the next task is a log record only.
    agent.handle(run_tasks(vec![executor_task("t3")]), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty());
    assert_eq!(changes(&writes), [change_of(&key, "+{c}/t3!")]);
}

#[test]
fn a_queued_task_killed_before_its_executor_registers_leaves_the_run() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(&mut agent, vec![executor_task("t1")], 300, Instant::now());
    commit(&mut agent);
    agent.handle(run_tasks(vec![executor_task("t2")]), Instant::now());
    agent.handle(
        Input::FromMaster(MasterToAgent::KillTask {
            framework_id: fw(),
            task_id: tid("t2"),
        }),
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty());
    assert_eq!(
        changes(&writes),
        ["+{c}/t2", "-{c}/t2"].map(|c| change_of(&key, c))
    );
}

#[test]
fn a_finished_command_run_leaves_the_log_with_its_run_file() {
    let mut agent = connected_agent();
    let (key, _, _) = launch_and_start(&mut agent, vec![task("t1")], 100, Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.runs[0].tasks.len(), 1);
    assert_eq!(
        changes(&writes),
        ["log {c}", "+{c}/t1!"].map(|c| change_of(&key, c))
    );
    agent.handle(
        Input::ContainerExited {
            container: key.clone(),
            report: exit(0),
        },
        Instant::now(),
    );
    commit(&mut agent);
    agent.handle(acknowledged("t1"), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert_eq!(writes.removed_runs, std::slice::from_ref(&key));
    assert_eq!(changes(&writes), [change_of(&key, "gone {c}")]);
}

#[test]
fn a_run_that_never_started_writes_nothing_anywhere() {
    let mut agent = connected_agent();
    let effects = agent.handle(run_tasks(vec![executor_task("t1")]), Instant::now());
    let (key, _, _) = the_launch(&effects);
    agent.handle(
        Input::Launched {
            container: key,
            result: Err(ContainerError::Spawn {
                id: "c".into(),
                program: "./executor".into(),
                source: std::io::Error::other("no such file"),
            }),
        },
        Instant::now(),
    );
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty() && writes.task_changes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Recovery

fn logged_task(id: &str, handed: bool, state: TaskState) -> LoggedTask {
    LoggedTask {
        framework_id: fw(),
        info: executor_task(id),
        handed,
        state,
    }
}

fn executor_run(key: &str, file_tasks: &[(&str, TaskState)]) -> RecoveredRun {
    let mut cp = recovery_checkpoint(key);
    cp.tasks = file_tasks
        .iter()
        .map(|(id, state)| TaskCheckpoint {
            info: executor_task(id),
            state: *state,
        })
        .collect();
    RecoveredRun {
        checkpoint: cp,
        alive: true,
    }
}

fn recovery_checkpoint(key: &str) -> RunCheckpoint {
    RunCheckpoint {
        container: key.into(),
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        executor: executor_task("x").executor,
        sandbox: PathBuf::from("/var/lib/bramble-test/sandbox"),
        token: "tok".into(),
        pid: 500,
        start_time: 77,
        cgroup_dirs: Vec::new(),
        memory_limit_mib: 0,
        tasks: Vec::new(),
        queued: Vec::new(),
        mesos: None,
    }
}

fn tasks_of(agent: &Agent) -> Vec<(TaskId, TaskState)> {
    agent.view(0).containers[0].tasks.clone()
}

#[test]
fn a_run_the_log_holds_takes_its_tasks_from_the_log_not_its_first_run_file() {
    let mut agent = connected_agent();
    // The run file still lists t1 from its first commit; the log saw t1 leave, t2 and t3 come.
    let runs = vec![executor_run("c1", &[("t1", TaskState::Staging)])];
    let logged = BTreeMap::from([(
        "c1".to_string(),
        vec![
            logged_task("t2", true, TaskState::Running),
            logged_task("t3", false, TaskState::Staging),
        ],
    )]);
    agent.recover(runs, logged, None, Instant::now());
    assert_eq!(
        tasks_of(&agent),
        [
            (tid("t2"), TaskState::Running),
            (tid("t3"), TaskState::Staging)
        ]
    );
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty() && writes.task_changes.is_empty());
    // The queued task goes to the executor when it reconnects; the handed one does not again.
    let effects = agent.handle(connect(1, "tok"), Instant::now());
    let launched: Vec<&TaskId> = sent_to_executor(&effects, 1)
        .into_iter()
        .filter_map(|m| match m {
            AgentToExecutor::LaunchTask(t) => Some(&t.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(launched, [&tid("t3")]);
}

#[test]
fn a_run_whose_tasks_only_its_run_file_has_moves_them_into_the_log() {
    // An older agent's file, or a crash between a new run's file and its log write.
    let mut agent = connected_agent();
    let runs = vec![executor_run(
        "c1",
        &[("t1", TaskState::Running), ("t2", TaskState::Staging)],
    )];
    agent.recover(runs, BTreeMap::new(), None, Instant::now());
    assert_eq!(
        tasks_of(&agent),
        [
            (tid("t1"), TaskState::Running),
            (tid("t2"), TaskState::Staging)
        ]
    );
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty(), "the file is left as it is");
    let mut moved = changes(&writes);
    moved[1..].sort();
    assert_eq!(moved, ["log c1", "+c1/t1!", "+c1/t2!"]);
    let states: Vec<TaskState> = writes
        .task_changes
        .iter()
        .filter_map(|c| match c {
            TaskChange::TaskAdded { task, .. } => Some(task.state),
            _ => None,
        })
        .collect();
    assert!(states.contains(&TaskState::Running), "with their states");

    // From then on, the log only.
    agent.handle(connect(1, "tok"), Instant::now());
    agent.handle(run_tasks(vec![executor_task("t3")]), Instant::now());
    let (writes, _) = commit(&mut agent);
    assert!(writes.runs.is_empty());
    assert_eq!(changes(&writes), ["+c1/t3!"]);
}

#[test]
fn a_logged_task_that_ended_and_was_acknowledged_is_forgotten_on_recovery() {
    // Its removal was cut off by the crash; t2's FINISHED still waits for its ack.
    let mut finished = TaskStatus::new(fw(), tid("t2"), TaskState::Finished, UpdateSource::Agent);
    finished.uuid = Some(uuid::Uuid::new_v4());
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), [&finished]);
    let logged = BTreeMap::from([(
        "c1".to_string(),
        vec![
            logged_task("t1", true, TaskState::Finished),
            logged_task("t2", true, TaskState::Finished),
            logged_task("t3", true, TaskState::Running),
        ],
    )]);
    agent.recover(vec![executor_run("c1", &[])], logged, None, Instant::now());
    assert_eq!(
        tasks_of(&agent),
        [
            (tid("t2"), TaskState::Finished),
            (tid("t3"), TaskState::Running)
        ]
    );
    let (writes, _) = commit(&mut agent);
    assert_eq!(changes(&writes), ["-c1/t1"]);
}

#[test]
fn a_recovered_run_rewritten_after_a_reboot_keeps_its_tasks_where_they_are() {
    let logged = BTreeMap::from([(
        "c1".to_string(),
        vec![logged_task("t1", true, TaskState::Running)],
    )]);
    let runs = vec![
        executor_run("c1", &[]),
        executor_run("c2", &[("u1", TaskState::Running)]),
    ];
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), []);
    agent.recover(runs, logged, Some("rebooted".into()), Instant::now());
    let (writes, _) = commit(&mut agent);
    let mut runs = writes.runs.clone();
    runs.sort_by(|a, b| a.container.cmp(&b.container));
    assert_eq!(runs.len(), 2, "both rewritten without their pid");
    assert!(runs.iter().all(|r| r.pid == 0));
    assert!(runs[0].tasks.is_empty(), "the log holds c1's");
    assert_eq!(runs[1].tasks.len(), 1, "c2's file holds its own");
    assert_eq!(changes(&writes), ["log c2", "+c2/u1!"]);
    let lost: Vec<TaskState> = writes.updates.iter().map(|u| u.state).collect();
    assert_eq!(lost, [TaskState::Lost, TaskState::Lost]);
}

#[test]
fn task_lists_the_log_holds_for_runs_without_a_file_are_dropped() {
    let mut agent = connected_agent();
    let logged = BTreeMap::from([(
        "c9".to_string(),
        vec![logged_task("t1", true, TaskState::Running)],
    )]);
    let (summary, effects) = agent.recover(Vec::new(), logged, None, Instant::now());
    assert_eq!(summary.runs, 0);
    assert!(effects.is_empty());
    assert!(agent.view(0).containers.is_empty());
    let (writes, _) = commit(&mut agent);
    assert_eq!(changes(&writes), ["gone c9"]);
}
