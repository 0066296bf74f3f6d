//! A scheduler test kit: drive a [`Scheduler`] with no master and no network, and assert on
//! what it asked the master for, in order.
//!
//! [`SchedulerTest`] plays the master. Each event method (`offers`, `update`, `rescind`, ...)
//! runs the matching callback to completion with a driver that is connected (or not, after
//! [`SchedulerTest::disconnect`]), exactly as the real driver would: one event at a time, and
//! with implicit acknowledgements (the default) the update's `Acknowledge` is recorded after
//! `status_update` returns. What the scheduler did is read back with [`SchedulerTest::calls`]
//! (everything, in order) or the typed views (`launched`, `declined`, `killed`,
//! `acknowledged`, `messages`).
//!
//! [`ExecutorTest`] does the same for an [`Executor`], playing the agent: hand it
//! `registered`, `launch`, `kill`, `message`, `shutdown`; wait for the status updates it
//! sends (its work usually runs on other tasks, so waiting has a deadline); acknowledge
//! them, or not, and see what is still pending.
//!
//! Time: the kit has no clock of its own. Schedulers that wait on `tokio::time` (offer
//! timeouts, retries, backoff) are tested deterministically under tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`): [`SchedulerTest::advance`] moves it forward and
//! lets whatever became due run before returning.
//!
//! ```
//! use bramble_sdk::testing::{offer, SchedulerTest};
//! use bramble_sdk::{async_trait, Filters, Offer, Resources, Scheduler, SchedulerDriver, TaskStatus};
//!
//! struct DeclineAll;
//! #[async_trait]
//! impl Scheduler for DeclineAll {
//!     async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
//!         for o in offers {
//!             let _ = driver.decline_offer(o.id, Filters { refuse_seconds: 5.0 });
//!         }
//!     }
//!     async fn status_update(&mut self, _: &SchedulerDriver, _: &TaskStatus) {}
//! }
//!
//! # tokio_test_block_on(async {
//! let mut t = SchedulerTest::new(DeclineAll);
//! t.register("fw-1").await;
//! t.offers(vec![offer("o1", "a1", Resources::new(1.0, 128))]).await;
//! assert_eq!(t.declined(), vec!["o1".into()]);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use crate::executor::Outbound;
use crate::scheduler::driver::ack_call;
use crate::{Executor, ExecutorDriver, Scheduler, SchedulerDriver, StateEntry};
use bramble_proto::messages::{ExecutorToAgent, Filters, Offer, SchedulerCall};
use bramble_proto::task::{ExecutorInfo, TaskInfo, UpdateSource};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskState, TaskStatus,
};
use std::time::Duration;
use tokio::sync::mpsc;

/// A scheduler under test, with the master played by the test. See the module header.
pub struct SchedulerTest<S: Scheduler> {
    scheduler: S,
    driver: SchedulerDriver,
    outbox: mpsc::UnboundedReceiver<SchedulerCall>,
    calls: Vec<SchedulerCall>,
    framework_id: Option<FrameworkId>,
}

impl<S: Scheduler> SchedulerTest<S> {
    /// A scheduler whose driver acknowledges updates implicitly (the SDK's default).
    pub fn new(scheduler: S) -> Self {
        Self::with_acknowledgements(scheduler, true)
    }

    /// A scheduler whose driver acknowledges implicitly or not
    /// (`SchedulerConfig::implicit_acknowledgements`).
    pub fn with_acknowledgements(scheduler: S, implicit: bool) -> Self {
        let (driver, outbox) = SchedulerDriver::detached(None, implicit);
        Self {
            scheduler,
            driver,
            outbox,
            calls: Vec::new(),
            framework_id: None,
        }
    }

    /// A scheduler started again to fail over to `framework_id` (its config names the id, as
    /// `FrameworkInfo::framework_id` does after a restart): its first
    /// [`register`](Self::register) with that id is a re-registration, as the real driver
    /// reports it.
    pub fn failing_over(scheduler: S, framework_id: &str) -> Self {
        let id = FrameworkId::from(framework_id);
        let (driver, outbox) = SchedulerDriver::detached(Some(id.clone()), true);
        Self {
            scheduler,
            driver,
            outbox,
            calls: Vec::new(),
            framework_id: Some(id),
        }
    }

    /// The master accepts the subscription with `framework_id`: the driver is connected and
    /// `registered` runs. A second call (after [`disconnect`](Self::disconnect), or with the
    /// same id) is a re-registration, as after a reconnect or failover.
    pub async fn register(&mut self, framework_id: &str) {
        let id = FrameworkId::from(framework_id);
        let reregistered = self.framework_id.as_ref() == Some(&id);
        self.framework_id = Some(id.clone());
        self.driver.set_connected(Some(id.clone()), true);
        self.scheduler
            .registered(&self.driver, &id, reregistered)
            .await;
        self.collect();
    }

    /// The master offers `offers`.
    pub async fn offers(&mut self, offers: Vec<Offer>) {
        self.scheduler.resource_offers(&self.driver, offers).await;
        self.collect();
    }

    /// The master rescinds `offer_id`.
    pub async fn rescind(&mut self, offer_id: &str) {
        self.scheduler
            .offer_rescinded(&self.driver, &OfferId::from(offer_id))
            .await;
        self.collect();
    }

    /// A status update arrives. With implicit acknowledgements, its `Acknowledge` (when it
    /// carries a uuid) is recorded after `status_update` returns, as the driver sends it.
    pub async fn update(&mut self, status: TaskStatus) {
        self.scheduler.status_update(&self.driver, &status).await;
        self.collect();
        if self.driver.acknowledges_implicitly() {
            if let Ok(Some(ack)) = ack_call(&status) {
                self.calls.push(ack);
            }
        }
    }

    /// An executor's framework message arrives.
    pub async fn message(&mut self, agent_id: &str, executor_id: &str, data: &[u8]) {
        self.scheduler
            .framework_message(
                &self.driver,
                &AgentId::from(agent_id),
                &ExecutorId::from(executor_id),
                data,
            )
            .await;
        self.collect();
    }

    /// The master removed an agent (its tasks' LOST updates are separate events).
    pub async fn agent_lost(&mut self, agent_id: &str) {
        self.scheduler
            .agent_lost(&self.driver, &AgentId::from(agent_id))
            .await;
        self.collect();
    }

    /// An operator drained (`true`) or undrained the agent.
    pub async fn agent_draining(&mut self, agent_id: &str, draining: bool) {
        self.scheduler
            .agent_draining(&self.driver, &AgentId::from(agent_id), draining)
            .await;
        self.collect();
    }

    /// One of the framework's executors ended with `status`.
    pub async fn executor_lost(&mut self, agent_id: &str, executor_id: &str, status: Option<i32>) {
        self.scheduler
            .executor_lost(
                &self.driver,
                &AgentId::from(agent_id),
                &ExecutorId::from(executor_id),
                status,
            )
            .await;
        self.collect();
    }

    /// The master hands the framework its key/value state (as it does after `Subscribed`).
    pub async fn state(&mut self, entries: Vec<StateEntry>) {
        self.scheduler.state_loaded(&self.driver, entries).await;
        self.collect();
    }

    /// One key of the framework's state changed (`None`: deleted).
    pub async fn state_changed(&mut self, key: &str, entry: Option<StateEntry>) {
        self.scheduler
            .state_changed(&self.driver, key, entry.as_ref())
            .await;
        self.collect();
    }

    /// The master reports a (non-fatal) error.
    pub async fn error(&mut self, message: &str) {
        self.scheduler.error(&self.driver, message).await;
        self.collect();
    }

    /// The driver's timer fires: `Scheduler::tick` runs once (the kit never ticks by itself).
    pub async fn tick(&mut self) {
        self.scheduler.tick(&self.driver).await;
        self.collect();
    }

    /// The connection drops: driver calls fail with `SdkError::Disconnected` until the next
    /// [`register`](Self::register), and `disconnected` runs.
    pub async fn disconnect(&mut self) {
        self.driver.set_connected(None, false);
        self.scheduler.disconnected(&self.driver).await;
        self.collect();
    }

    /// Moves tokio's paused clock forward by `by` and lets the tasks that became due run
    /// (needs `#[tokio::test(start_paused = true)]`). Calls they make are recorded.
    pub async fn advance(&mut self, by: Duration) {
        // Tasks spawned by earlier callbacks first run up to their waits, so their timers
        // start from the time they were spawned at, not from after the jump.
        settle().await;
        tokio::time::advance(by).await;
        // Then the woken ones run to their next wait before their calls are looked at.
        settle().await;
        self.collect();
    }

    /// Every call the scheduler made so far, in order, including implicit acknowledgements.
    pub fn calls(&mut self) -> &[SchedulerCall] {
        self.collect();
        &self.calls
    }

    /// The calls made so far, taken: the next look starts empty.
    pub fn take_calls(&mut self) -> Vec<SchedulerCall> {
        self.collect();
        std::mem::take(&mut self.calls)
    }

    /// Tasks launched so far, in order, across all accepts.
    pub fn launched(&mut self) -> Vec<TaskInfo> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Accept { tasks, .. } => Some(tasks.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Offers declined so far: by `decline_offer`, or by an accept with no tasks.
    pub fn declined(&mut self) -> Vec<OfferId> {
        self.declines().into_iter().map(|(id, _)| id).collect()
    }

    /// Offers declined so far, each with the filter it was declined with (how long the
    /// master is asked not to offer those resources again), in order.
    pub fn declines(&mut self) -> Vec<(OfferId, Filters)> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Decline { offer_ids, filters } => Some((offer_ids, *filters)),
                SchedulerCall::Accept {
                    offer_ids,
                    tasks,
                    filters,
                } if tasks.is_empty() => Some((offer_ids, *filters)),
                _ => None,
            })
            .flat_map(|(ids, filters)| ids.iter().map(move |id| (id.clone(), filters)))
            .collect()
    }

    /// How many calls so far match `which`, e.g.
    /// `t.count(|c| matches!(c, SchedulerCall::Revive))`.
    pub fn count(&mut self, which: impl Fn(&SchedulerCall) -> bool) -> usize {
        self.calls().iter().filter(|c| which(c)).count()
    }

    /// Tasks the scheduler asked to kill, in order.
    pub fn killed(&mut self) -> Vec<TaskId> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Kill { task_id } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Tasks whose updates were acknowledged (implicitly or explicitly), in order.
    pub fn acknowledged(&mut self) -> Vec<TaskId> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Acknowledge { task_id, .. } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// Framework messages sent to executors: (agent, executor, bytes), in order.
    pub fn messages(&mut self) -> Vec<(AgentId, ExecutorId, Vec<u8>)> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Message {
                    agent_id,
                    executor_id,
                    data,
                } => Some((agent_id.clone(), executor_id.clone(), data.clone())),
                _ => None,
            })
            .collect()
    }

    /// The web UI URL the scheduler last published with `set_webui_url`: `None` if it never
    /// did, `Some(None)` once it withdrew it.
    pub fn webui_url(&mut self) -> Option<Option<String>> {
        self.calls().iter().rev().find_map(|c| match c {
            SchedulerCall::SetWebuiUrl(url) => Some(url.clone()),
            _ => None,
        })
    }

    /// Whether the scheduler stopped its driver: `Some(failover)` once it did.
    pub fn stopped(&self) -> Option<bool> {
        self.driver.stop_requested()
    }

    /// The driver the scheduler is given, e.g. to hand to tasks the test spawns.
    pub fn driver(&self) -> &SchedulerDriver {
        &self.driver
    }

    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }

    pub fn scheduler_mut(&mut self) -> &mut S {
        &mut self.scheduler
    }

    pub fn into_scheduler(self) -> S {
        self.scheduler
    }

    fn collect(&mut self) {
        while let Ok(call) = self.outbox.try_recv() {
            self.calls.push(call);
        }
    }
}

/// How long [`ExecutorTest::next_update`] waits by default (tokio time: instant under a
/// paused clock once nothing else can run).
pub const UPDATE_WAIT: Duration = Duration::from_secs(10);

/// An executor under test, with the agent played by the test. See the module header.
pub struct ExecutorTest<E: Executor> {
    executor: E,
    driver: ExecutorDriver,
    frames: mpsc::UnboundedReceiver<Outbound>,
    updates: Vec<TaskStatus>,
    messages: Vec<Vec<u8>>,
    /// Updates recorded but not yet handed out by `next_update`.
    unread: usize,
}

impl<E: Executor> ExecutorTest<E> {
    /// An executor of framework `fw-test`, id `executor-test`, on agent `agent-test`.
    pub fn new(executor: E) -> Self {
        let (driver, frames) = ExecutorDriver::detached(
            FrameworkId::from("fw-test"),
            ExecutorId::from("executor-test"),
            AgentId::from("agent-test"),
        );
        Self {
            executor,
            driver,
            frames,
            updates: Vec::new(),
            messages: Vec::new(),
            unread: 0,
        }
    }

    /// The agent accepted the executor.
    pub async fn register(&mut self, info: &ExecutorInfo) {
        let agent = self.driver.agent_id().clone();
        self.executor.registered(&self.driver, info, &agent).await;
    }

    /// The agent hands over `task`.
    pub async fn launch(&mut self, task: TaskInfo) {
        self.executor.launch_task(&self.driver, task).await;
    }

    /// The scheduler asks to kill `task_id`.
    pub async fn kill(&mut self, task_id: &str) {
        self.executor
            .kill_task(&self.driver, &TaskId::from(task_id))
            .await;
    }

    /// A framework message from the scheduler.
    pub async fn message(&mut self, data: &[u8]) {
        self.executor.framework_message(&self.driver, data).await;
    }

    /// The agent asks the executor to end.
    pub async fn shutdown(&mut self) {
        self.executor.shutdown(&self.driver).await;
    }

    /// The next status update the executor sends, waiting up to [`UPDATE_WAIT`]. Panics with
    /// the updates seen so far when none comes.
    pub async fn next_update(&mut self) -> TaskStatus {
        self.next_update_within(UPDATE_WAIT).await
    }

    /// [`next_update`](Self::next_update) with its own deadline.
    pub async fn next_update_within(&mut self, wait: Duration) -> TaskStatus {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.collect();
            if self.unread > 0 {
                let status = self.updates[self.updates.len() - self.unread].clone();
                self.unread -= 1;
                return status;
            }
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => self.record(frame),
                Ok(None) => panic!(
                    "the executor's driver is gone; updates: {:?}",
                    self.states()
                ),
                Err(_) => panic!(
                    "no status update within {wait:?}; updates so far: {:?}",
                    self.states()
                ),
            }
        }
    }

    /// Waits for `task`'s update in `state` (skipping others) and returns it.
    pub async fn update_in(&mut self, task: &str, state: TaskState) -> TaskStatus {
        loop {
            let status = self.next_update().await;
            if status.task_id.as_str() == task && status.state == state {
                return status;
            }
        }
    }

    /// Every status update sent so far, in order.
    pub fn updates(&mut self) -> &[TaskStatus] {
        self.collect();
        &self.updates
    }

    /// Framework messages sent so far, in order.
    pub fn messages(&mut self) -> &[Vec<u8>] {
        self.collect();
        &self.messages
    }

    /// The agent acknowledges `status` (it was written down): it stops being pending.
    pub fn acknowledge(&self, status: &TaskStatus) {
        if let Some(uuid) = status.uuid {
            self.driver.acknowledge(uuid);
        }
    }

    /// Updates sent and not acknowledged, oldest first (what the driver would resend).
    pub fn pending(&self) -> Vec<TaskStatus> {
        self.driver.pending_updates()
    }

    /// Whether the executor stopped its driver.
    pub fn stopped(&self) -> bool {
        self.driver.stop_requested()
    }

    pub fn driver(&self) -> &ExecutorDriver {
        &self.driver
    }

    pub fn executor(&self) -> &E {
        &self.executor
    }

    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.executor
    }

    fn states(&self) -> Vec<(TaskId, TaskState)> {
        self.updates
            .iter()
            .map(|u| (u.task_id.clone(), u.state))
            .collect()
    }

    fn record(&mut self, out: Outbound) {
        let frame = match out {
            Outbound::Frame(frame) => frame,
            Outbound::Frames(frames) => {
                for frame in frames {
                    self.record(Outbound::Frame(frame));
                }
                return;
            }
            // Nothing is buffered between the driver and the kit: flushed at once.
            Outbound::Flush(done) => {
                let _ = done.send(());
                return;
            }
        };
        match frame {
            ExecutorToAgent::Update(status) => {
                self.updates.push(status);
                self.unread += 1;
            }
            ExecutorToAgent::Message(data) => self.messages.push(data),
            // Registration is the kit's business, not the executor's.
            ExecutorToAgent::Register { .. } | ExecutorToAgent::Reregister { .. } => {}
        }
    }

    fn collect(&mut self) {
        while let Ok(frame) = self.frames.try_recv() {
            self.record(frame);
        }
    }
}

/// A task for an executor under test: `id` on `agent-test`, with `data`.
pub fn task(id: &str, data: Vec<u8>) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::from(id),
        name: id.to_string(),
        agent_id: AgentId::from("agent-test"),
        resources: Resources::new(0.5, 16),
        command: None,
        executor: None,
        data,
        mesos: None,
        image: None,
        artifacts: Vec::new(),
    }
}

/// Lets runnable tasks on this runtime run until they wait again.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// An offer as the master makes it: `id` from `agent` (hostname `agent` too), for the test
/// framework, with no executors running there.
pub fn offer(id: &str, agent: &str, resources: Resources) -> Offer {
    Offer {
        id: OfferId::from(id),
        framework_id: FrameworkId::from("fw-test"),
        agent_id: AgentId::from(agent),
        hostname: agent.to_string(),
        resources,
        attributes: Default::default(),
        executor_ids: Vec::new(),
    }
}

/// An update from `agent` for `task` in `state`, with a uuid (so it is acknowledged), as an
/// executor sends it. Set `data`, `message`, `reason` on the result as needed.
pub fn update(task: &str, agent: &str, state: TaskState) -> TaskStatus {
    let mut s = TaskStatus::new(
        FrameworkId::from("fw-test"),
        TaskId::from(task),
        state,
        UpdateSource::Executor,
    );
    s.agent_id = Some(AgentId::from(agent));
    s.uuid = Some(uuid::Uuid::new_v4());
    s
}
