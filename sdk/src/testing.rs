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

use crate::scheduler::driver::ack_call;
use crate::{Scheduler, SchedulerDriver};
use bramble_proto::messages::{Offer, SchedulerCall};
use bramble_proto::task::{TaskInfo, UpdateSource};
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

    /// The master reports a (non-fatal) error.
    pub async fn error(&mut self, message: &str) {
        self.scheduler.error(&self.driver, message).await;
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
        self.calls()
            .iter()
            .filter_map(|c| match c {
                SchedulerCall::Decline { offer_ids, .. } => Some(offer_ids.clone()),
                SchedulerCall::Accept {
                    offer_ids, tasks, ..
                } if tasks.is_empty() => Some(offer_ids.clone()),
                _ => None,
            })
            .flatten()
            .collect()
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
