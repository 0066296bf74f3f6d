//! Helpers for the state's unit tests: a master with short timeouts, peers whose queues the
//! test reads, agents and frameworks in a few calls, and a stored state to recover from.

use super::{ConnId, Input, Master, PeerTx, Timeouts};
use crate::store::{AgentRecord, FrameworkRecord, Recovered, TaskRecord};
use bramble_proto::identity::Role;
use bramble_proto::messages::{
    AgentToMaster, FrameworkInfo, MasterEvent, MasterToAgent, Offer, RunningTask, SchedulerCall,
};
use bramble_proto::queue::{self, QueueRx};
use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_proto::transport::PeerIdentity;
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(super) fn timeouts() -> Timeouts {
    Timeouts {
        heartbeat_interval: Duration::from_millis(200),
        agent_timeout: Duration::from_secs(2),
        offer_timeout: Duration::from_secs(30),
        allocation_interval: Duration::from_millis(200),
        agent_reregistration_timeout: Duration::from_secs(5),
    }
}

pub(super) fn identity(role: Role) -> PeerIdentity {
    identity_of(role, Some(role.as_str()))
}

/// A peer whose certificate (or, at the Mesos edge, HTTP Basic credentials) proved `principal`.
pub(super) fn identity_of(role: Role, principal: Option<&str>) -> PeerIdentity {
    PeerIdentity {
        role,
        subject: "test".into(),
        principal: principal.map(str::to_string),
        address: "127.0.0.1:9".parse().expect("addr"),
    }
}

pub(super) fn connect_agent(m: &mut Master, conn: ConnId, now: Instant) -> QueueRx<MasterToAgent> {
    connect_agent_with_queue(m, conn, 64 << 20, now)
}

/// An agent connection whose outbound queue holds at most `bytes`.
pub(super) fn connect_agent_with_queue(
    m: &mut Master,
    conn: ConnId,
    bytes: usize,
    now: Instant,
) -> QueueRx<MasterToAgent> {
    let (tx, rx) = queue::channel(64, bytes);
    m.handle(
        Input::Connected {
            conn,
            identity: identity(Role::Node),
            tx: PeerTx::Agent(tx),
            handle: None,
        },
        now,
    );
    rx
}

pub(super) fn connect_framework(
    m: &mut Master,
    conn: ConnId,
    id: Option<&str>,
    now: Instant,
) -> QueueRx<MasterEvent> {
    connect_framework_as(m, conn, framework_info(id), now)
}

/// A native framework's info with a 60 s failover timeout.
pub(super) fn framework_info(id: Option<&str>) -> FrameworkInfo {
    FrameworkInfo {
        framework_id: id.map(|i| FrameworkId(i.into())),
        name: "fw".into(),
        role: "*".into(),
        failover_timeout_secs: 60.0,
        principal: None,
        user: String::new(),
        webui_url: None,
        api: bramble_proto::messages::FrameworkApi::Bramble,
    }
}

/// Connects a scheduler on `conn` and subscribes it with `info`, as the Mesos edge does: the
/// principal it proved is the one `info` names.
pub(super) fn connect_framework_as(
    m: &mut Master,
    conn: ConnId,
    info: FrameworkInfo,
    now: Instant,
) -> QueueRx<MasterEvent> {
    let identity = identity_of(Role::Framework, info.principal.as_deref());
    connect_scheduler(m, conn, identity, info, now)
}

/// Connects a scheduler proving `identity` on `conn` and subscribes it with `info` (whose
/// `principal` is only what the scheduler claims).
pub(super) fn connect_scheduler(
    m: &mut Master,
    conn: ConnId,
    identity: PeerIdentity,
    info: FrameworkInfo,
    now: Instant,
) -> QueueRx<MasterEvent> {
    connect_scheduler_calling(m, conn, identity, SchedulerCall::Subscribe(info), now)
}

/// [`connect_scheduler`] with another first call than `Subscribe` (a `Campaign`).
pub(super) fn connect_scheduler_calling(
    m: &mut Master,
    conn: ConnId,
    identity: PeerIdentity,
    first: SchedulerCall,
    now: Instant,
) -> QueueRx<MasterEvent> {
    let (tx, rx) = queue::channel(64, 64 << 20);
    m.handle(
        Input::Connected {
            conn,
            identity,
            tx: PeerTx::Scheduler(tx),
            handle: None,
        },
        now,
    );
    m.handle(Input::FromScheduler { conn, call: first }, now);
    rx
}

pub(super) fn register(
    m: &mut Master,
    conn: ConnId,
    id: &str,
    tasks: Vec<RunningTask>,
    now: Instant,
) {
    m.handle(
        Input::FromAgent {
            conn,
            msg: AgentToMaster::Register {
                agent_id: Some(AgentId(id.into())),
                hostname: id.into(),
                resources: Resources::new(2.0, 1024),
                attributes: BTreeMap::new(),
                tasks,
            },
        },
        now,
    );
}

pub(super) fn task_info(id: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId(id.into()),
        name: id.into(),
        agent_id: AgentId("a1".into()),
        resources: Resources::new(0.5, 64),
        command: Some(CommandInfo::shell("sleep 600")),
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}

pub(super) fn recovered(tasks: &[&str]) -> Recovered {
    Recovered {
        frameworks: vec![FrameworkRecord {
            id: FrameworkId("fw1".into()),
            info: FrameworkInfo {
                framework_id: Some(FrameworkId("fw1".into())),
                name: "fw".into(),
                role: "*".into(),
                failover_timeout_secs: 60.0,
                principal: None,
                user: String::new(),
                webui_url: None,
                api: bramble_proto::messages::FrameworkApi::Bramble,
            },
        }],
        agents: vec![AgentRecord {
            id: AgentId("a1".into()),
            hostname: "a1".into(),
            address: "127.0.0.1:9".parse().expect("addr"),
            total: Resources::new(2.0, 1024),
            attributes: BTreeMap::new(),
            executors: Vec::new(),
        }],
        tasks: tasks
            .iter()
            .map(|t| TaskRecord {
                framework_id: FrameworkId("fw1".into()),
                info: task_info(t),
                state: TaskState::Running,
                message: String::new(),
                reason: None,
                launched_at: 0.0,
                started_at: Some(0.0),
                ended_at: None,
                terminal: None,
                resend_by_master: false,
            })
            .collect(),
        framework_state: Vec::new(),
        draining: Vec::new(),
        fences: Vec::new(),
        fence_high: 0,
        kills: Vec::new(),
    }
}

pub(super) fn drain<T>(rx: &mut QueueRx<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

/// A master with the test timeouts and nothing in it.
pub(super) fn master(now: Instant) -> Master {
    Master::new("c".into(), timeouts(), now)
}

/// Ends the burst as the server does: the allocation pass, the commit (here: dropped), then
/// the outbox released into the peers' queues.
pub(super) fn settle(m: &mut Master, now: Instant) {
    m.end_burst(now);
    m.take_writes();
    m.flush_outbox();
}

/// A scheduler call from the framework on `conn`.
pub(super) fn call(m: &mut Master, conn: ConnId, call: SchedulerCall, now: Instant) {
    m.handle(Input::FromScheduler { conn, call }, now);
}

/// Agent `a1` registered on connection 1 and framework `fw1` subscribed on connection 2,
/// settled: the framework's first offer is waiting in its queue.
pub(super) fn agent_and_framework(
    m: &mut Master,
    now: Instant,
) -> (QueueRx<MasterToAgent>, QueueRx<MasterEvent>) {
    let agent = connect_agent(m, 1, now);
    register(m, 1, "a1", Vec::new(), now);
    let fw = connect_framework(m, 2, Some("fw1"), now);
    settle(m, now);
    (agent, fw)
}

/// Agent `id` connects on `conn` and registers reporting `tasks`; settled.
pub(super) fn join(
    m: &mut Master,
    conn: ConnId,
    id: &str,
    tasks: Vec<RunningTask>,
    now: Instant,
) -> QueueRx<MasterToAgent> {
    let rx = connect_agent(m, conn, now);
    register(m, conn, id, tasks, now);
    settle(m, now);
    rx
}

/// Connection `conn` drops without a goodbye.
pub(super) fn disconnect(m: &mut Master, conn: ConnId, now: Instant) {
    let reason = "link dropped".into();
    let input = Input::Disconnected {
        conn,
        reason,
        graceful: false,
    };
    m.handle(input, now);
}

/// [`agent_and_framework`], then `tasks` launched from the first offer; both queues drained.
pub(super) fn launched(
    m: &mut Master,
    tasks: Vec<TaskInfo>,
    now: Instant,
) -> (QueueRx<MasterToAgent>, QueueRx<MasterEvent>) {
    let (mut agent, mut fw) = agent_and_framework(m, now);
    let offer = offers(&drain(&mut fw)).remove(0);
    accept(m, &offer, tasks, now);
    drain(&mut agent);
    drain(&mut fw);
    (agent, fw)
}

/// The offers among `events`.
pub(super) fn offers(events: &[MasterEvent]) -> Vec<Offer> {
    events
        .iter()
        .filter_map(|e| match e {
            MasterEvent::Offers(o) => Some(o.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The status updates among `events`, as (task, state).
pub(super) fn updates(events: &[MasterEvent]) -> Vec<(String, TaskState)> {
    events
        .iter()
        .filter_map(|e| match e {
            MasterEvent::Update(s) => Some((s.task_id.as_str().to_string(), s.state)),
            _ => None,
        })
        .collect()
}

/// A task running on `a1` for `fw1`, as an agent reports it.
pub(super) fn running(id: &str) -> RunningTask {
    RunningTask {
        framework_id: FrameworkId("fw1".into()),
        task: task_info(id),
        state: TaskState::Running,
    }
}

/// Accepts `offer` with `tasks` from the framework on connection 2, and settles.
pub(super) fn accept(m: &mut Master, offer: &Offer, tasks: Vec<TaskInfo>, now: Instant) {
    let accept = SchedulerCall::Accept {
        offer_ids: vec![offer.id.clone()],
        tasks,
        filters: Default::default(),
    };
    call(m, 2, accept, now);
    settle(m, now);
}
