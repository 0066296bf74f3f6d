//! The core driven by hand: inputs in, effects and writes out. No process, socket or file:
//! where the runtime would launch a container or record an update, the test answers for it.
//! This file holds the shared steps; the tests are grouped by concern in the modules below.

use super::*;
use crate::checkpoint::{RunCheckpoint, TaskCheckpoint};
use crate::containerizer::{ContainerError, ExitReport};
use bramble_proto::executor_env as env;
use bramble_proto::messages::{AgentToExecutor, AgentToMaster, ExecutorToAgent, MasterToAgent};
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskReason, TaskState};
use std::time::{Duration, Instant};

mod executors;
mod forgetting;
mod membership;
mod mesos;
mod recovery;
mod tasks;

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
        mesos_endpoint: Some("127.0.0.1:5051".parse().unwrap()),
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
        mesos: None,
        image: None,
        artifacts: Vec::new(),
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
    let effects = agent.committed(&outcomes, Recorded::Durable);
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
            Effect::AnswerExecutor { serial: s, result: Ok(k) } if *s == serial && k.container == key)),
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
        auth: ExecutorAuth::Token {
            token: token.into(),
            known_tasks: None,
        },
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
            Effect::Kill { container, .. } => Some(container),
            _ => None,
        })
        .collect()
}
