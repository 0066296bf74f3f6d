//! A scriptable framework for tests: a `Scheduler` that forwards every event to the test,
//! which then acts through the driver. Tests read like the protocol: wait for offers, launch,
//! wait for an update. Also the task builders the tests share: shell commands and tasks for
//! the tests' custom executor.

use async_trait::async_trait;
use bramble_proto::identity::Credentials;
use bramble_proto::messages::{Filters, Offer};
use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskState, TaskStatus,
};
use bramble_sdk::{framework_info, Scheduler, SchedulerConfig, SchedulerDriver, SdkError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub enum Event {
    Registered(FrameworkId, bool),
    Offers(Vec<Offer>),
    Rescinded(OfferId),
    Update(TaskStatus),
    Message(AgentId, ExecutorId, Vec<u8>),
    AgentLost(AgentId),
    /// The master says the agent is draining (`true`) or undrained.
    AgentDraining(AgentId, bool),
    Disconnected,
    Error(String),
}

struct Forwarder(mpsc::UnboundedSender<Event>);

#[async_trait]
impl Scheduler for Forwarder {
    async fn registered(&mut self, _: &SchedulerDriver, id: &FrameworkId, again: bool) {
        let _ = self.0.send(Event::Registered(id.clone(), again));
    }
    async fn resource_offers(&mut self, _: &SchedulerDriver, offers: Vec<Offer>) {
        let _ = self.0.send(Event::Offers(offers));
    }
    async fn offer_rescinded(&mut self, _: &SchedulerDriver, id: &OfferId) {
        let _ = self.0.send(Event::Rescinded(id.clone()));
    }
    async fn status_update(&mut self, _: &SchedulerDriver, status: &TaskStatus) {
        let _ = self.0.send(Event::Update(status.clone()));
    }
    async fn framework_message(
        &mut self,
        _: &SchedulerDriver,
        a: &AgentId,
        e: &ExecutorId,
        data: &[u8],
    ) {
        let _ = self
            .0
            .send(Event::Message(a.clone(), e.clone(), data.to_vec()));
    }
    async fn agent_lost(&mut self, _: &SchedulerDriver, a: &AgentId) {
        let _ = self.0.send(Event::AgentLost(a.clone()));
    }
    async fn agent_draining(&mut self, _: &SchedulerDriver, a: &AgentId, draining: bool) {
        let _ = self.0.send(Event::AgentDraining(a.clone(), draining));
    }
    async fn disconnected(&mut self, _: &SchedulerDriver) {
        let _ = self.0.send(Event::Disconnected);
    }
    async fn error(&mut self, _: &SchedulerDriver, message: &str) {
        let _ = self.0.send(Event::Error(message.to_string()));
    }
}

/// A framework driven step by step from a test.
pub struct TestFramework {
    pub driver: SchedulerDriver,
    pub id: FrameworkId,
    events: mpsc::UnboundedReceiver<Event>,
    /// Offers received and not yet taken by the test.
    pub offers: Vec<Offer>,
    /// Every update received, in order.
    pub updates: Vec<TaskStatus>,
    /// Everything else received, in order.
    pub other: Vec<Event>,
    run: Option<JoinHandle<Result<(), SdkError>>>,
}

pub const WAIT: Duration = Duration::from_secs(20);

impl TestFramework {
    pub async fn start(master: SocketAddr, credentials: Credentials, name: &str) -> Self {
        let mut info = framework_info(name);
        info.failover_timeout_secs = 5.0;
        Self::start_with(SchedulerConfig::new(master, credentials, info)).await
    }

    pub async fn start_with(config: SchedulerConfig) -> Self {
        let (tx, mut events) = mpsc::unbounded_channel();
        let driver = SchedulerDriver::new(config);
        let run_driver = driver.clone();
        let run = tokio::spawn(async move { run_driver.run(Forwarder(tx)).await.map(|_| ()) });
        let id = match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Registered(id, _))) => id,
            other => panic!(
                "framework {:?} did not register: {other:?}",
                driver.framework_id()
            ),
        };
        Self {
            driver,
            id,
            events,
            offers: Vec::new(),
            updates: Vec::new(),
            other: Vec::new(),
            run: Some(run),
        }
    }

    fn absorb(&mut self, event: Event) {
        match event {
            Event::Offers(o) => self.offers.extend(o),
            Event::Rescinded(id) => {
                self.offers.retain(|o| o.id != id);
                self.other.push(Event::Rescinded(id));
            }
            Event::Update(s) => self.updates.push(s),
            e => self.other.push(e),
        }
    }

    /// Receives events until `done` says the picture is complete, or panics after `WAIT`.
    pub async fn until<T>(&mut self, what: &str, mut done: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = done(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.absorb(e),
                Ok(None) => panic!("framework event stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; offers {:?}, updates {:?}, other {:?}",
                    self.offers
                        .iter()
                        .map(|o| (&o.hostname, o.resources.to_string()))
                        .collect::<Vec<_>>(),
                    self.updates
                        .iter()
                        .map(|u| (&u.task_id, u.state, &u.message))
                        .collect::<Vec<_>>(),
                    self.other
                ),
            }
        }
    }

    /// Whether a terminal update of `task` has arrived, taking in what is queued without
    /// waiting.
    pub fn seen_terminal(&mut self, task: &str) -> bool {
        while let Ok(e) = self.events.try_recv() {
            self.absorb(e);
        }
        self.updates
            .iter()
            .any(|u| u.task_id.as_str() == task && u.state.is_terminal())
    }

    /// Waits for an offer from the agent called `hostname` and takes it.
    pub async fn offer_from(&mut self, hostname: &str) -> Offer {
        let offer = self
            .until(&format!("an offer from {hostname}"), |f| {
                f.offers.iter().find(|o| o.hostname == hostname).cloned()
            })
            .await;
        self.offers.retain(|o| o.id != offer.id);
        offer
    }

    /// Waits for any offer, takes the first and drops the rest (a one-agent cluster offers one).
    pub async fn first_offer(&mut self) -> Offer {
        let offer = self.until("an offer", |f| f.offers.first().cloned()).await;
        self.offers.clear();
        offer
    }

    /// Waits for the first update of `task` in a state satisfying `pred`.
    pub async fn update_where(
        &mut self,
        task: &str,
        what: &str,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        self.until(&format!("task {task}: {what}"), |f| {
            f.updates
                .iter()
                .find(|u| u.task_id.as_str() == task && pred(u))
                .cloned()
        })
        .await
    }

    pub async fn state(&mut self, task: &str, state: TaskState) -> TaskStatus {
        self.update_where(task, state.name(), |u| u.state == state)
            .await
    }

    pub async fn terminal(&mut self, task: &str) -> TaskStatus {
        self.update_where(task, "a terminal state", |u| u.state.is_terminal())
            .await
    }

    pub fn launch(&self, offer: &Offer, tasks: Vec<TaskInfo>) {
        self.driver
            .launch_tasks(
                vec![offer.id.clone()],
                tasks,
                Filters {
                    refuse_seconds: 0.0,
                },
            )
            .expect("launch");
    }

    /// Launches the one task `task` on `offer` and waits until it is RUNNING.
    pub async fn launch_one(&mut self, offer: &Offer, task: TaskInfo) -> TaskStatus {
        let id = task.task_id.as_str().to_string();
        self.launch(offer, vec![task]);
        self.state(&id, TaskState::Running).await
    }

    /// Sends `data` to the executor `executor` on `agent` and waits for the first framework
    /// message back; returns the executor it came from and its data.
    pub async fn round_trip(
        &mut self,
        agent: &AgentId,
        executor: &str,
        data: &[u8],
    ) -> (ExecutorId, Vec<u8>) {
        self.driver
            .send_framework_message(agent.clone(), executor.into(), data.to_vec())
            .expect("message");
        self.until("the executor's echo", |f| {
            f.other.iter().find_map(|e| match e {
                Event::Message(_, exec, data) => Some((exec.clone(), data.clone())),
                _ => None,
            })
        })
        .await
    }

    /// Stops the driver (teardown unless `failover`) and waits for its run to end.
    pub async fn stop(mut self, failover: bool) {
        self.driver.stop(failover);
        if let Some(run) = self.run.take() {
            let _ = tokio::time::timeout(WAIT, run).await;
        }
    }
}

/// A shell command task for `offer`'s agent.
pub fn shell_task(offer: &Offer, id: &str, cpus: f64, mem_mib: u64, line: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId(id.to_string()),
        name: id.to_string(),
        agent_id: offer.agent_id.clone(),
        resources: Resources::new(cpus, mem_mib),
        command: Some(CommandInfo::shell(line)),
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}

/// The pid a RUNNING update of a command task or an executor carries (`"pid N"`).
pub fn pid_of(running: &TaskStatus) -> i32 {
    running
        .message
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("RUNNING carries the pid: {:?}", running.message))
}

/// The tests' custom executor (`tests/src/bin/test-executor.rs`) at its built path. Only the
/// integration tests know that path (`env!("CARGO_BIN_EXE_test-executor")`), so each holds
/// one of these: `const EXECUTOR: TestExecutor = TestExecutor(env!(...));`.
pub struct TestExecutor(pub &'static str);

impl TestExecutor {
    /// A task for `offer`'s agent on the one executor "test-executor"; `data` tells the
    /// executor what to do (`sleep` runs until killed, `echo:X` finishes with X, `fail`,
    /// `wait:PATH`), and it echoes framework messages back.
    pub fn task(&self, offer: &Offer, id: &str, data: &str) -> TaskInfo {
        TaskInfo {
            task_id: id.into(),
            name: id.into(),
            agent_id: offer.agent_id.clone(),
            resources: Resources::new(0.1, 16),
            command: None,
            executor: Some(ExecutorInfo {
                executor_id: "test-executor".into(),
                name: "test executor".into(),
                command: CommandInfo::program(self.0, vec![]),
                resources: Resources::new(0.1, 32),
            }),
            data: data.as_bytes().to_vec(),
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        }
    }
}
