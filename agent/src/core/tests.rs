//! The core driven by hand: inputs in, effects and writes out. No process, socket or file:
//! where the runtime would launch a container or record an update, the test answers for it.

use super::*;
use crate::checkpoint::{RunCheckpoint, TaskCheckpoint};
use crate::containerizer::{ContainerError, ExitReport};
use bramble_proto::executor_env as env;
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, ExecutorToAgent, MasterToAgent};
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskReason, TaskState};
use std::time::{Duration, Instant};

const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

fn settings() -> AgentSettings {
    AgentSettings {
        work_dir: PathBuf::from("/var/lib/bramble-test"),
        socket_path: PathBuf::from("/var/lib/bramble-test/agent.sock"),
        hostname: "pi-1".into(),
        resources: Resources::new(4.0, 1024),
        attributes: BTreeMap::new(),
        executor_registration_timeout: REGISTRATION_TIMEOUT,
        executor_idle_timeout: IDLE_TIMEOUT,
        executor_recovery_timeout: Duration::from_secs(900),
    }
}

fn fw() -> FrameworkId {
    FrameworkId("fw-1".into())
}

fn tid(id: &str) -> TaskId {
    TaskId(id.into())
}

fn task(id: &str) -> TaskInfo {
    TaskInfo {
        task_id: tid(id),
        name: id.into(),
        agent_id: AgentId("agent-1".into()),
        resources: Resources::new(1.0, 64),
        command: Some(CommandInfo::shell("true")),
        executor: None,
        data: Vec::new(),
    }
}

fn executor_task(id: &str) -> TaskInfo {
    TaskInfo {
        command: None,
        executor: Some(ExecutorInfo {
            executor_id: ExecutorId("exec-1".into()),
            name: "exec".into(),
            command: CommandInfo::shell("./executor"),
            resources: Resources::default(),
        }),
        ..task(id)
    }
}

fn run_tasks(tasks: Vec<TaskInfo>) -> Input {
    Input::FromMaster(MasterToAgent::RunTasks {
        framework_id: fw(),
        framework_name: "test".into(),
        tasks,
    })
}

fn exit(code: i32) -> ExitReport {
    ExitReport {
        code: Some(code),
        signal: None,
        memory_limit_exceeded: false,
        killed: false,
        memory_limit_mib: 0,
        unobserved: false,
    }
}

fn started(pid: u32) -> ContainerInfo {
    ContainerInfo {
        pid,
        start_time: 1000 + u64::from(pid),
        cgroup_dirs: Vec::new(),
    }
}

/// A registered agent with no task yet.
fn connected_agent() -> Agent {
    let mut agent = Agent::new(settings(), Some(AgentId("agent-1".into())), []);
    let effects = agent.handle(
        Input::MasterConnected {
            agent_id: AgentId("agent-1".into()),
        },
        Instant::now(),
    );
    assert!(effects.is_empty(), "nothing to say on a first connection");
    agent
}

/// The one launch among `effects`: its container, spec and whether it is supervised.
fn the_launch(effects: &[Effect]) -> (ContainerKey, crate::containerizer::LaunchSpec, bool) {
    let launches: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Launch {
                container,
                spec,
                supervised,
            } => Some((container.clone(), spec.clone(), *supervised)),
            _ => None,
        })
        .collect();
    assert_eq!(launches.len(), 1, "one launch expected in {effects:?}");
    launches.into_iter().next().expect("one launch")
}

/// Commits everything as durable; returns the writes and the effects that released.
fn commit(agent: &mut Agent) -> (Writes, Vec<Effect>) {
    let writes = agent.take_writes();
    let outcomes = vec![Recorded::Durable; writes.updates.len()];
    let effects = agent.committed(&outcomes);
    (writes, effects)
}

/// Commits, and checks that the one update recorded is `task`'s `state` for `reason`.
fn assert_reported(agent: &mut Agent, task: &str, state: TaskState, reason: TaskReason) {
    let (writes, _) = commit(agent);
    assert_eq!(states(&writes), vec![(tid(task), state)]);
    assert_eq!(writes.updates[0].reason, Some(reason));
}

fn states(writes: &Writes) -> Vec<(TaskId, TaskState)> {
    writes
        .updates
        .iter()
        .map(|u| (u.task_id.clone(), u.state))
        .collect()
}

/// Hands `tasks` to the agent and answers their one launch with a container of `pid`;
/// returns the container, its launch spec, and the effects of its start.
fn launch_and_start(
    agent: &mut Agent,
    tasks: Vec<TaskInfo>,
    pid: u32,
    now: Instant,
) -> (ContainerKey, crate::containerizer::LaunchSpec, Vec<Effect>) {
    let effects = agent.handle(run_tasks(tasks), now);
    let (key, spec, _) = the_launch(&effects);
    let launched = Input::Launched {
        container: key.clone(),
        result: Ok(started(pid)),
    };
    let effects = agent.handle(launched, now);
    (key, spec, effects)
}

/// Launches command task `id` with pid `pid` and commits its RUNNING.
fn running_command_task(agent: &mut Agent, id: &str, pid: u32) -> ContainerKey {
    let (key, _, _) = launch_and_start(agent, vec![task(id)], pid, Instant::now());
    commit(agent);
    key
}

/// Launches the custom executor for `ids`, lets it register on connection `serial` and
/// commits; returns its container.
fn registered_executor(agent: &mut Agent, ids: &[&str], serial: u64) -> ContainerKey {
    let tasks = ids.iter().map(|id| executor_task(id)).collect();
    let (key, spec, _) = launch_and_start(agent, tasks, 300, Instant::now());
    let effects = agent.handle(connect(serial, &token_of(&spec)), Instant::now());
    assert!(
        effects.iter().any(|e| matches!(e,
            Effect::AnswerExecutor { serial: s, result: Ok(k) } if *s == serial && *k == key)),
        "executor accepted: {effects:?}"
    );
    commit(agent);
    key
}

fn token_of(spec: &crate::containerizer::LaunchSpec) -> String {
    spec.env
        .iter()
        .find(|(k, _)| k == env::EXECUTOR_TOKEN)
        .map(|(_, v)| v.clone())
        .expect("executor token in the environment")
}

fn connect(serial: u64, token: &str) -> Input {
    Input::ExecutorConnected {
        serial,
        framework_id: fw(),
        executor_id: ExecutorId("exec-1".into()),
        token: token.into(),
    }
}

fn executor_update(key: &ContainerKey, id: &str, state: TaskState) -> (Input, uuid::Uuid) {
    let uuid = uuid::Uuid::new_v4();
    let mut status = TaskStatus::new(fw(), tid(id), state, UpdateSource::Executor);
    status.uuid = Some(uuid);
    let input = Input::FromExecutor {
        container: key.clone(),
        msg: ExecutorToAgent::Update(status),
    };
    (input, uuid)
}

fn acknowledged(id: &str) -> Input {
    Input::UpdateAcknowledged {
        framework_id: fw(),
        task_id: tid(id),
        settled: true,
    }
}

fn sent_to_executor(effects: &[Effect], serial: u64) -> Vec<&AgentToExecutor> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToExecutor { serial: s, msg } if *s == serial => Some(msg),
            _ => None,
        })
        .collect()
}

fn kills(effects: &[Effect]) -> Vec<&ContainerKey> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Kill { container } => Some(container),
            _ => None,
        })
        .collect()
}

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

#[test]
fn a_task_with_neither_command_nor_executor_is_an_error() {
    let mut agent = connected_agent();
    let mut bad = task("t1");
    bad.command = None;
    let effects = agent.handle(run_tasks(vec![bad]), Instant::now());
    assert!(effects.is_empty());
    assert_reported(&mut agent, "t1", TaskState::Error, TaskReason::InvalidTask);
}

// ---------------------------------------------------------------------------------------------
// Custom executors

#[test]
fn an_executor_task_waits_for_its_executor_then_is_handed_to_it() {
    let mut agent = connected_agent();
    let effects = agent.handle(run_tasks(vec![executor_task("t1")]), Instant::now());
    let (key, spec, supervised) = the_launch(&effects);
    assert!(!supervised, "a custom executor reports its tasks itself");
    assert_eq!(spec.limits.mem_mib, 0, "not capped at launch");
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
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::AnswerExecutor { serial: 2, result: Ok(k) } if *k == key)));
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
    let effects = agent.committed(&[Recorded::NotWritten]);
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
    agent.committed(&[Recorded::NotWritten]);
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
    let (summary, effects) = agent.recover(runs, None, Instant::now());
    assert_eq!((summary.adopted, summary.executors), (1, 1));
    assert!(matches!(effects.as_slice(),
        [Effect::Adopt { container, spec, supervised: false }] if container == "c1" && spec.pid == 500));
    let effects = agent.handle(connect(1, "tok"), Instant::now());
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::AnswerExecutor { serial: 1, result: Ok(k) } if k == "c1")));
    assert_eq!(
        agent.view(0).containers[0].tasks,
        vec![(tid("t1"), TaskState::Running)]
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
    let (summary, effects) = agent.recover(runs, None, Instant::now());
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
    let (summary, effects) = agent.recover(runs, Some("rebooted".into()), Instant::now());
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
