//! The simulated agents of `bramble bench scale`: N agents in one process, each its own QUIC
//! connection with mutual TLS (the cluster's node certificate, as a real agent presents),
//! going through the master's normal path: handshake budget, hello, `Register`, heartbeats.
//!
//! What is simulated is only what runs on a Pi: a task "runs" for the duration its framework
//! wrote into `TaskInfo.data` (8 bytes, little-endian milliseconds) and then FINISHES. Updates
//! follow the agent's durable-update protocol — RUNNING, then the terminal state, one update
//! per task at a time, each resent (1 s doubling to 4 s) until the master relays the
//! framework's acknowledgement, all resent on re-registration — except that the update log is
//! kept in memory (the simulator's process does not die; only the master is killed).
//!
//! Agents are spread over several client endpoints, each bound to its own loopback address
//! (127.16.x.y), as agents on a LAN dial from their own addresses: the master's per-address
//! handshake budget then sees what it would see in a real cluster. Reconnects use the same
//! jittered backoff as `bramble-agent` (`bramble_proto::backoff`), and honour the master's
//! "busy, retry in N ms" answer the same way.
//!
//! Dials are paced: at most `dials_in_flight` agents are between their dial and their
//! registration at once (the others wait their turn in this process, not on the wire). The
//! simulator shares the machine's cores with the master it measures; without this, 10,000
//! simultaneous TLS handshakes starve both sides and time out, and the work is thrown away.

use bramble_proto::backoff::Backoff;
use bramble_proto::codec::{CodecError, MAX_BATCH};
use bramble_proto::handshake::{self, HandshakeError};
use bramble_proto::identity::Credentials;
use bramble_proto::messages::{AgentToMaster, MasterToAgent, PeerKind, RunningTask};
use bramble_proto::task::{TaskInfo, UpdateSource};
use bramble_proto::transport::{self, client_endpoint};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskState, TaskStatus};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a dial, the hello and the registration may each take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats that may go unanswered before the master counts as gone (as `master_link.rs`).
const MISSED_HEARTBEATS: u32 = 4;
/// An unacknowledged update is resent after this, doubling, as the agent's update log does;
/// capped at 4 s rather than the agent's 30 s, so that a run settles soon after the master's
/// restart (updates made while the frameworks were away wait for a resend).
const FIRST_RESEND: Duration = Duration::from_secs(1);
const MAX_RESEND: Duration = Duration::from_secs(4);
/// A task without a duration in its data runs this long.
const DEFAULT_TASK: Duration = Duration::from_secs(1);
/// Never registered, in `Shared::registered_at`.
const NEVER: u64 = u64::MAX;

/// What the fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub agents: usize,
    pub master: SocketAddr,
    /// Agents per client endpoint (per simulated source address).
    pub per_endpoint: usize,
    /// What each agent offers (a Pi 4: 4 CPUs, 4 GiB).
    pub resources: Resources,
    /// Agents between dial and registration at once (0: no limit).
    pub dials_in_flight: usize,
}

/// Counters every simulated agent adds to.
pub struct Shared {
    started: Instant,
    /// Per agent: milliseconds after `started` of its latest registration, or [`NEVER`].
    registered_at: Vec<AtomicU64>,
    pub dials: AtomicU64,
    /// Dials or hellos that failed (refused by the handshake budget, reset, timed out).
    pub failed_attempts: AtomicU64,
    /// Connections closed with a reason from the master, or hellos it refused.
    pub refusals: AtomicU64,
    /// Hellos the master answered busy (with an appointment, honoured).
    pub busy: AtomicU64,
    /// Re-registrations answered with an id other than the one claimed: the master forgot the
    /// agent (it gave up on it, or lost its store).
    pub id_changes: AtomicU64,
    pub registered_now: AtomicUsize,
    pub tasks_started: AtomicU64,
    pub tasks_killed: AtomicU64,
    pub updates_sent: AtomicU64,
    pub updates_resent: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The running fleet.
pub struct Fleet {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    agents: Vec<JoinHandle<()>>,
    pub endpoints: usize,
}

impl Fleet {
    /// Binds the endpoints and starts every agent at once (a cold start).
    pub fn start(config: &FleetConfig, creds: &Credentials) -> anyhow::Result<Fleet> {
        let per_endpoint = config.per_endpoint.max(1);
        let endpoint_count = config.agents.div_ceil(per_endpoint);
        let mut endpoints = Vec::with_capacity(endpoint_count);
        for e in 0..endpoint_count {
            endpoints.push(client_endpoint(creds, SocketAddr::new(source_ip(e), 0))?);
        }
        let shared = Arc::new(Shared {
            started: Instant::now(),
            registered_at: (0..config.agents).map(|_| AtomicU64::new(NEVER)).collect(),
            dials: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            id_changes: AtomicU64::new(0),
            registered_now: AtomicUsize::new(0),
            tasks_started: AtomicU64::new(0),
            tasks_killed: AtomicU64::new(0),
            updates_sent: AtomicU64::new(0),
            updates_resent: AtomicU64::new(0),
        });
        let pace = Arc::new(Semaphore::new(match config.dials_in_flight {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        }));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let agents = (0..config.agents)
            .map(|i| {
                let agent = SimAgent::new(i, config.resources.clone());
                tokio::spawn(run(
                    agent,
                    endpoints[i / per_endpoint].clone(),
                    config.master,
                    shared.clone(),
                    pace.clone(),
                    shutdown_rx.clone(),
                ))
            })
            .collect();
        Ok(Fleet {
            shared,
            shutdown,
            agents,
            endpoints: endpoint_count,
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Milliseconds since the fleet started (the clock `registered_since` takes).
    pub fn now_ms(&self) -> u64 {
        self.shared.now_ms()
    }

    /// Agents whose latest registration was at or after `ms`.
    pub fn registered_since(&self, ms: u64) -> usize {
        self.shared
            .registered_at
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t != NEVER && t >= ms)
            .count()
    }

    /// Waits until every agent registered at or after `since_ms`, polling; `None` past
    /// `deadline`. Says how far it got on stderr every few seconds.
    pub async fn wait_registered(&self, since_ms: u64, deadline: Duration) -> Option<Duration> {
        let started = Instant::now();
        let all = self.shared.registered_at.len();
        let mut said = Instant::now();
        loop {
            let registered = self.registered_since(since_ms);
            if registered == all {
                return Some(started.elapsed());
            }
            if said.elapsed() >= Duration::from_secs(5) {
                let s = &self.shared;
                eprintln!(
                    "scale: {:>6.1} s: {registered}/{all} registered; dials {}, failed {}, busy {}, refused {}",
                    started.elapsed().as_secs_f64(),
                    s.dials.load(Ordering::Relaxed),
                    s.failed_attempts.load(Ordering::Relaxed),
                    s.busy.load(Ordering::Relaxed),
                    s.refusals.load(Ordering::Relaxed),
                );
                said = Instant::now();
            }
            if started.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for a in self.agents {
            let _ = a.await;
        }
    }
}

/// The source address of endpoint `e`: 127.16.0.1, 127.16.0.2, …
fn source_ip(e: usize) -> IpAddr {
    let n = e as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(
        127,
        16 + (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("shutting down")]
    Shutdown,
    #[error("{0}")]
    Failed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("busy: retry in {0:?}")]
    Busy(Duration),
}

impl From<CodecError> for LinkError {
    fn from(e: CodecError) -> Self {
        LinkError::Failed(e.to_string())
    }
}

/// One agent's life: connect, register, serve, and again with backoff, until shutdown.
async fn run(
    mut agent: SimAgent,
    endpoint: quinn::Endpoint,
    master: SocketAddr,
    shared: Arc<Shared>,
    pace: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut registered = false;
        let mut delay = None;
        // Wait for a turn to dial; the turn is given back once registered or failed.
        let turn = tokio::select! {
            _ = shutdown.changed() => return,
            turn = pace.clone().acquire_owned() => turn.ok(),
        };
        let started = Instant::now();
        shared.dials.fetch_add(1, Ordering::Relaxed);
        let result = session(
            &mut agent,
            &endpoint,
            master,
            &shared,
            &mut shutdown,
            &mut registered,
            turn,
        )
        .await;
        match result {
            Err(LinkError::Shutdown) => return,
            Err(LinkError::Busy(after)) => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
                delay = Some(backoff.busy(after));
            }
            Err(LinkError::Refused(_)) => {
                shared.refusals.fetch_add(1, Ordering::Relaxed);
                backoff.slowest();
            }
            _ => {
                if !registered {
                    shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                }
                if registered || started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
            }
        }
        let delay = delay.unwrap_or_else(|| backoff.next_delay());
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Decrements `registered_now` when a registered session ends, however it ends.
struct Registered<'a>(&'a Shared);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.registered_now.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(
    agent: &mut SimAgent,
    endpoint: &quinn::Endpoint,
    master: SocketAddr,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    registered: &mut bool,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), LinkError> {
    let conn = tokio::select! {
        _ = shutdown.changed() => return Err(LinkError::Shutdown),
        c = tokio::time::timeout(STEP_TIMEOUT, transport::connect(endpoint, master)) => c
            .map_err(|_| LinkError::Failed("dial timed out".into()))?
            .map_err(|e| LinkError::Failed(e.to_string()))?,
    };
    let result = registered_session(agent, &conn, shared, shutdown, registered, turn).await;
    // A connection the master closed with a reason is a refusal worth backing off for (the
    // hello's own `Refused` is one too).
    let result = match (result, conn.close_reason()) {
        (Err(LinkError::Failed(_)), Some(quinn::ConnectionError::ApplicationClosed(c)))
            if !c.reason.is_empty() && !*registered =>
        {
            Err(LinkError::Refused(
                String::from_utf8_lossy(&c.reason).into_owned(),
            ))
        }
        (r, _) => r,
    };
    conn.close(quinn::VarInt::from_u32(0), b"simulated agent done");
    result
}

async fn registered_session(
    agent: &mut SimAgent,
    conn: &quinn::Connection,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
    registered: &mut bool,
    turn: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), LinkError> {
    let (mut ctl, _) =
        tokio::time::timeout(STEP_TIMEOUT, handshake::say_hello(conn, PeerKind::Agent))
            .await
            .map_err(|_| LinkError::Failed("no welcome in time".into()))?
            .map_err(|e| match e {
                HandshakeError::Refused(reason) => LinkError::Refused(reason),
                HandshakeError::Busy(after) => LinkError::Busy(after),
                e => LinkError::Failed(e.to_string()),
            })?;
    agent.fire_due(Instant::now());
    ctl.send(&agent.registration()).await?;
    let (agent_id, interval) = match tokio::time::timeout(STEP_TIMEOUT, ctl.recv()).await {
        Err(_) => return Err(LinkError::Failed("no registration answer in time".into())),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(MasterToAgent::Registered {
            agent_id,
            heartbeat_interval_ms,
        })) => (
            agent_id,
            Duration::from_millis(heartbeat_interval_ms.max(50)),
        ),
        Ok(Ok(_)) => return Err(LinkError::Failed("a message before Registered".into())),
    };
    if agent.agent_id.as_ref().is_some_and(|old| *old != agent_id) {
        shared.id_changes.fetch_add(1, Ordering::Relaxed);
    }
    agent.agent_id = Some(agent_id);
    shared.registered_at[agent.index].store(shared.now_ms(), Ordering::Relaxed);
    shared.registered_now.fetch_add(1, Ordering::Relaxed);
    let _registered = Registered(shared);
    *registered = true;
    drop(turn);

    // Reads in their own task: a frame read is not cancel-safe inside select!.
    let (mut reader, mut writer) = ctl.split();
    let (from_master, mut inbox) = mpsc::channel::<MasterToAgent>(256);
    let reader_task = tokio::spawn(async move {
        loop {
            match reader.recv::<MasterToAgent>().await {
                Ok(msg) => {
                    if from_master.send(msg).await.is_err() {
                        return CodecError::Closed;
                    }
                }
                Err(e) => return e,
            }
        }
    });
    let _reader = AbortOnDrop(reader_task);

    let now = Instant::now();
    agent.all_due(now);
    // Heartbeats at a random phase: real agents do not start in the same millisecond.
    let phase = Duration::from_micros(agent.rng.below(interval.as_micros() as u64));
    let mut tick = tokio::time::interval_at(now + phase, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ack = now;
    let mut out: Vec<AgentToMaster> = Vec::new();
    agent.send_due(now, &mut out, shared);
    loop {
        if !out.is_empty() {
            for chunk in out.chunks(MAX_BATCH) {
                writer.send_batch(chunk).await?;
            }
            out.clear();
        }
        let wake = agent.next_wake();
        tokio::select! {
            _ = shutdown.changed() => return Err(LinkError::Shutdown),
            msg = inbox.recv() => match msg {
                Some(MasterToAgent::HeartbeatAck) => last_ack = Instant::now(),
                Some(msg) => agent.handle(msg, Instant::now(), shared),
                None => return Err(LinkError::Failed("the master closed the link".into())),
            },
            _ = tick.tick() => {
                if last_ack.elapsed() > interval * MISSED_HEARTBEATS {
                    return Err(LinkError::Failed("heartbeats unanswered".into()));
                }
                out.push(AgentToMaster::Heartbeat);
            }
            _ = tokio::time::sleep_until(wake) => agent.fire_due(Instant::now()),
        }
        agent.send_due(Instant::now(), &mut out, shared);
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task on a simulated agent.
struct SimTask {
    framework_id: FrameworkId,
    /// As registered: id and resources (the data is not kept).
    info: TaskInfo,
    state: TaskState,
    /// Updates not yet acknowledged, oldest first; the head is the one in flight.
    pending: VecDeque<TaskStatus>,
    /// When the head is (re)sent next; `None`: not sent on this link yet.
    resend_at: Option<Instant>,
    resend_after: Duration,
    ends_at: Instant,
}

/// One simulated agent's state: its id, its tasks and their update queues.
struct SimAgent {
    index: usize,
    agent_id: Option<AgentId>,
    resources: Resources,
    tasks: HashMap<(FrameworkId, TaskId), SimTask>,
    /// Task ends, earliest first.
    ends: BinaryHeap<Reverse<(Instant, FrameworkId, TaskId)>>,
    rng: bramble_proto::rng::XorShift64Star,
}

impl SimAgent {
    fn new(index: usize, resources: Resources) -> Self {
        Self {
            index,
            agent_id: None,
            resources,
            tasks: HashMap::new(),
            ends: BinaryHeap::new(),
            rng: bramble_proto::rng::XorShift64Star::new(index as u64 * 2 + 1),
        }
    }

    fn registration(&self) -> AgentToMaster {
        AgentToMaster::Register {
            agent_id: self.agent_id.clone(),
            hostname: format!("sim-{}", self.index),
            resources: self.resources.clone(),
            attributes: BTreeMap::from([("simulated".to_string(), "pi4".to_string())]),
            tasks: self
                .tasks
                .values()
                .map(|t| RunningTask {
                    framework_id: t.framework_id.clone(),
                    task: t.info.clone(),
                    state: t.state,
                })
                .collect(),
        }
    }

    fn handle(&mut self, msg: MasterToAgent, now: Instant, shared: &Shared) {
        match msg {
            MasterToAgent::RunTasks {
                framework_id,
                tasks,
                ..
            } => {
                for task in tasks {
                    self.start(&framework_id, task, now, shared);
                }
            }
            MasterToAgent::KillTask {
                framework_id,
                task_id,
            } => self.end(&framework_id, &task_id, TaskState::Killed, shared),
            MasterToAgent::ShutdownFramework { framework_id } => {
                let ids: Vec<TaskId> = self
                    .tasks
                    .keys()
                    .filter(|(f, _)| *f == framework_id)
                    .map(|(_, t)| t.clone())
                    .collect();
                for t in ids {
                    self.end(&framework_id, &t, TaskState::Killed, shared);
                }
            }
            MasterToAgent::Acknowledge {
                framework_id,
                task_id,
                uuid,
            } => {
                let key = (framework_id, task_id);
                let Some(task) = self.tasks.get_mut(&key) else {
                    return;
                };
                if task.pending.front().and_then(|u| u.uuid) != Some(uuid) {
                    return; // an old duplicate
                }
                task.pending.pop_front();
                task.resend_at = None;
                task.resend_after = FIRST_RESEND;
                if task.pending.is_empty() && task.state.is_terminal() {
                    self.tasks.remove(&key);
                }
            }
            // No executors, sandboxes or framework messages on a simulated agent.
            _ => {}
        }
    }

    fn start(&mut self, fw: &FrameworkId, task: TaskInfo, now: Instant, shared: &Shared) {
        let key = (fw.clone(), task.task_id.clone());
        if self.tasks.contains_key(&key) {
            return;
        }
        let runs_for = task
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(|b| Duration::from_millis(u64::from_le_bytes(b)))
            .unwrap_or(DEFAULT_TASK);
        let info = TaskInfo {
            data: Vec::new(),
            ..task
        };
        let mut sim = SimTask {
            framework_id: fw.clone(),
            info,
            state: TaskState::Running,
            pending: VecDeque::new(),
            resend_at: None,
            resend_after: FIRST_RESEND,
            ends_at: now + runs_for,
        };
        sim.pending
            .push_back(self.update(fw, &key.1, TaskState::Running));
        self.ends
            .push(Reverse((sim.ends_at, key.0.clone(), key.1.clone())));
        self.tasks.insert(key, sim);
        shared.tasks_started.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&mut self, fw: &FrameworkId, task_id: &TaskId, state: TaskState, shared: &Shared) {
        let update = self.update(fw, task_id, state);
        let Some(task) = self.tasks.get_mut(&(fw.clone(), task_id.clone())) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        if state == TaskState::Killed {
            shared.tasks_killed.fetch_add(1, Ordering::Relaxed);
        }
        task.state = state;
        task.pending.push_back(update);
    }

    fn update(&self, fw: &FrameworkId, task_id: &TaskId, state: TaskState) -> TaskStatus {
        let mut status = TaskStatus::new(fw.clone(), task_id.clone(), state, UpdateSource::Agent);
        status.agent_id = self.agent_id.clone();
        status.uuid = Some(uuid::Uuid::new_v4());
        status
    }

    /// Tasks whose time is up finish.
    fn fire_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.ends.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, fw, task_id))) = self.ends.pop() else {
                break;
            };
            let update = self.update(&fw, &task_id, TaskState::Finished);
            if let Some(task) = self.tasks.get_mut(&(fw, task_id)) {
                if !task.state.is_terminal() {
                    task.state = TaskState::Finished;
                    task.pending.push_back(update);
                }
            }
        }
    }

    /// A new link: every head update goes out at once.
    fn all_due(&mut self, now: Instant) {
        for task in self.tasks.values_mut() {
            task.resend_at = None;
            task.resend_after = FIRST_RESEND;
        }
        self.fire_due(now);
    }

    /// Heads never sent on this link, and heads whose resend time came, go into `out`.
    fn send_due(&mut self, now: Instant, out: &mut Vec<AgentToMaster>, shared: &Shared) {
        for task in self.tasks.values_mut() {
            let Some(head) = task.pending.front() else {
                continue;
            };
            match task.resend_at {
                None => {
                    shared.updates_sent.fetch_add(1, Ordering::Relaxed);
                }
                Some(at) if at <= now => {
                    shared.updates_resent.fetch_add(1, Ordering::Relaxed);
                    task.resend_after = (task.resend_after * 2).min(MAX_RESEND);
                }
                Some(_) => continue,
            }
            out.push(AgentToMaster::StatusUpdate(head.clone()));
            task.resend_at = Some(now + task.resend_after);
        }
    }

    /// The next time something is due: a task's end or an update's resend.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let end = self.ends.peek().map(|Reverse((at, _, _))| *at);
        let resend = self.tasks.values().filter_map(|t| t.resend_at).min();
        [end, resend].into_iter().flatten().min().unwrap_or(far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            started: Instant::now(),
            registered_at: Vec::new(),
            dials: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            id_changes: AtomicU64::new(0),
            registered_now: AtomicUsize::new(0),
            tasks_started: AtomicU64::new(0),
            tasks_killed: AtomicU64::new(0),
            updates_sent: AtomicU64::new(0),
            updates_resent: AtomicU64::new(0),
        }
    }

    fn task(id: &str, ms: u64) -> TaskInfo {
        TaskInfo {
            task_id: id.into(),
            name: "t".into(),
            agent_id: "a".into(),
            resources: Resources::new(1.0, 256),
            command: None,
            executor: None,
            data: ms.to_le_bytes().to_vec(),
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        }
    }

    fn sent(out: &[AgentToMaster]) -> Vec<TaskState> {
        out.iter()
            .filter_map(|m| match m {
                AgentToMaster::StatusUpdate(s) => Some(s.state),
                _ => None,
            })
            .collect()
    }

    /// The durable-update protocol, in memory: one update per task in flight, the next only
    /// after the ack, resends when unacknowledged, the task forgotten once its end is acked.
    #[test]
    fn updates_go_one_at_a_time_and_are_resent_until_acknowledged() {
        let s = shared();
        let mut a = SimAgent::new(0, Resources::new(4.0, 4096));
        let t0 = Instant::now();
        let fw: FrameworkId = "fw".into();
        a.handle(
            MasterToAgent::RunTasks {
                framework_id: fw.clone(),
                framework_name: "f".into(),
                tasks: vec![task("t1", 100)],
            },
            t0,
            &s,
        );
        let mut out = Vec::new();
        a.send_due(t0, &mut out, &s);
        assert_eq!(sent(&out), [TaskState::Running]);
        let running = match &out[0] {
            AgentToMaster::StatusUpdate(u) => u.clone(),
            _ => unreachable!(),
        };
        // The task ends, but FINISHED waits behind the unacknowledged RUNNING…
        a.fire_due(t0 + Duration::from_millis(150));
        out.clear();
        a.send_due(t0 + Duration::from_millis(150), &mut out, &s);
        assert!(out.is_empty(), "{out:?}");
        // …which is resent once its time comes.
        a.send_due(t0 + FIRST_RESEND, &mut out, &s);
        assert_eq!(sent(&out), [TaskState::Running]);
        out.clear();
        let ack = |u: &TaskStatus| MasterToAgent::Acknowledge {
            framework_id: fw.clone(),
            task_id: "t1".into(),
            uuid: u.uuid.expect("uuid"),
        };
        a.handle(ack(&running), t0, &s);
        a.send_due(t0 + FIRST_RESEND, &mut out, &s);
        assert_eq!(sent(&out), [TaskState::Finished]);
        // Until the end is acknowledged the task is reported on re-registration.
        match a.registration() {
            AgentToMaster::Register { tasks, .. } => {
                assert_eq!(tasks.len(), 1);
                assert_eq!(tasks[0].state, TaskState::Finished);
            }
            other => panic!("{other:?}"),
        }
        let finished = match &out[0] {
            AgentToMaster::StatusUpdate(u) => u.clone(),
            _ => unreachable!(),
        };
        a.handle(ack(&finished), t0, &s);
        assert!(a.tasks.is_empty());
        assert_eq!(s.updates_resent.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn endpoints_get_distinct_loopback_addresses() {
        let ips: std::collections::HashSet<IpAddr> = (0..600).map(source_ip).collect();
        assert_eq!(ips.len(), 600);
        assert!(ips.iter().all(|ip| ip.is_loopback()));
    }
}
