//! The scheduler test kit itself: order of calls, implicit and explicit acknowledgements,
//! disconnection, and time under tokio's paused clock.

use bramble_sdk::proto::messages::SchedulerCall;
use bramble_sdk::testing::{offer, update, SchedulerTest};
use bramble_sdk::{
    async_trait, Filters, Offer, Resources, Scheduler, SchedulerDriver, SdkError, TaskId,
    TaskState, TaskStatus,
};
use std::time::Duration;

/// Declines every offer; kills a task that reports FAILED; after an error, revives offers
/// 5 s later (a retry with a delay, as real schedulers do).
#[derive(Default)]
struct Picky {
    decline_errors: Vec<SdkError>,
}

#[async_trait]
impl Scheduler for Picky {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for o in offers {
            if let Err(e) = driver.decline_offer(o.id, Filters::default()) {
                self.decline_errors.push(e);
            }
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        if status.state == TaskState::Failed {
            let _ = driver.kill_task(status.task_id.clone());
        }
    }

    async fn error(&mut self, driver: &SchedulerDriver, _message: &str) {
        let driver = driver.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = driver.revive_offers();
        });
    }
}

#[tokio::test]
async fn calls_are_recorded_in_order_with_the_implicit_acknowledgement_after_the_callback() {
    let mut t = SchedulerTest::new(Picky::default());
    t.register("fw-1").await;
    t.offers(vec![
        offer("o1", "a1", Resources::new(1.0, 64)),
        offer("o2", "a2", Resources::new(1.0, 64)),
    ])
    .await;
    t.update(update("t1", "a1", TaskState::Failed)).await;
    let calls = t.take_calls();
    let names: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            SchedulerCall::Decline { .. } => "decline",
            SchedulerCall::Kill { .. } => "kill",
            SchedulerCall::Acknowledge { .. } => "ack",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["decline", "decline", "kill", "ack"]);
    assert!(t.calls().is_empty(), "taken");
}

#[tokio::test]
async fn declines_carry_their_filters_whether_declined_or_accepted_empty() {
    /// Declines the first offer for 30 s and accepts the second with no tasks (Mesos's
    /// other way to decline), leaving its resources out for 7 s.
    struct TwoWays;
    #[async_trait]
    impl Scheduler for TwoWays {
        async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
            let mut offers = offers.into_iter();
            if let Some(o) = offers.next() {
                let _ = driver.decline_offer(
                    o.id,
                    Filters {
                        refuse_seconds: 30.0,
                    },
                );
            }
            if let Some(o) = offers.next() {
                let _ = driver.launch_tasks(
                    vec![o.id],
                    vec![],
                    Filters {
                        refuse_seconds: 7.0,
                    },
                );
            }
        }
        async fn status_update(&mut self, _: &SchedulerDriver, _: &TaskStatus) {}
    }
    let mut t = SchedulerTest::new(TwoWays);
    t.register("fw-1").await;
    t.offers(vec![
        offer("o1", "a1", Resources::new(1.0, 64)),
        offer("o2", "a2", Resources::new(1.0, 64)),
    ])
    .await;
    assert_eq!(
        t.declines(),
        vec![
            (
                "o1".into(),
                Filters {
                    refuse_seconds: 30.0
                }
            ),
            (
                "o2".into(),
                Filters {
                    refuse_seconds: 7.0
                }
            ),
        ]
    );
    assert_eq!(t.count(|c| matches!(c, SchedulerCall::Accept { .. })), 1);
}

#[tokio::test]
async fn explicit_acknowledgements_record_nothing_by_themselves() {
    let mut t = SchedulerTest::with_acknowledgements(Picky::default(), false);
    t.register("fw-1").await;
    t.update(update("t1", "a1", TaskState::Running)).await;
    assert!(t.acknowledged().is_empty());
    let status = update("t2", "a1", TaskState::Finished);
    t.driver().acknowledge(&status).expect("explicit ack");
    assert_eq!(t.acknowledged(), vec![TaskId::from("t2")]);
}

#[tokio::test]
async fn a_disconnected_driver_refuses_calls_until_registered_again() {
    let mut t = SchedulerTest::new(Picky::default());
    t.register("fw-1").await;
    t.disconnect().await;
    t.offers(vec![offer("o1", "a1", Resources::new(1.0, 64))])
        .await;
    assert!(matches!(
        t.scheduler().decline_errors.as_slice(),
        [SdkError::Disconnected]
    ));
    assert!(t.declined().is_empty());
    t.register("fw-1").await;
    t.offers(vec![offer("o2", "a1", Resources::new(1.0, 64))])
        .await;
    assert_eq!(t.declined(), vec!["o2".into()]);
}

#[tokio::test(start_paused = true)]
async fn time_moves_only_when_the_test_says() {
    let mut t = SchedulerTest::new(Picky::default());
    t.register("fw-1").await;
    t.error("something went wrong").await;
    t.advance(Duration::from_millis(4_999)).await;
    assert!(
        !t.calls().iter().any(|c| matches!(c, SchedulerCall::Revive)),
        "too early"
    );
    t.advance(Duration::from_millis(1)).await;
    assert!(t.calls().iter().any(|c| matches!(c, SchedulerCall::Revive)));
}

mod executor_kit {
    use bramble_sdk::testing::{task, ExecutorTest};
    use bramble_sdk::{async_trait, status, Executor, ExecutorDriver, TaskId, TaskInfo, TaskState};
    use std::time::Duration;

    /// Echoes a task's data back as its FINISHED data, from a spawned task (as real executors
    /// do their work off the callback); a kill reports KILLED.
    struct Echo;

    #[async_trait]
    impl Executor for Echo {
        async fn launch_task(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
            let _ = driver.send_status_update(status(&task, TaskState::Running));
            let driver = driver.clone();
            tokio::spawn(async move {
                let mut done = status(&task, TaskState::Finished);
                done.data = task.data.clone();
                let _ = driver.send_status_update(done);
            });
        }

        async fn kill_task(&mut self, driver: &ExecutorDriver, task_id: &TaskId) {
            let t = super::super_task(task_id);
            let _ = driver.send_status_update(status(&t, TaskState::Killed));
        }

        async fn framework_message(&mut self, driver: &ExecutorDriver, data: &[u8]) {
            let _ = driver.send_framework_message(data.iter().rev().copied().collect());
        }
    }

    #[tokio::test]
    async fn updates_come_in_order_and_stay_pending_until_acknowledged() {
        let mut t = ExecutorTest::new(Echo);
        t.launch(task("t1", b"hi".to_vec())).await;
        let running = t.next_update().await;
        assert_eq!(running.state, TaskState::Running);
        let finished = t.update_in("t1", TaskState::Finished).await;
        assert_eq!(finished.data, b"hi");
        assert_eq!(
            finished.agent_id.as_ref().map(|a| a.as_str()),
            Some("agent-test")
        );
        assert_eq!(t.pending().len(), 2, "nothing acknowledged yet");
        t.acknowledge(&running);
        t.acknowledge(&finished);
        assert!(t.pending().is_empty());
    }

    #[tokio::test]
    async fn kills_and_messages_are_recorded() {
        let mut t = ExecutorTest::new(Echo);
        t.kill("t9").await;
        assert_eq!(t.next_update().await.state, TaskState::Killed);
        t.message(b"abc").await;
        assert_eq!(t.messages(), [b"cba".to_vec()]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_an_update_that_never_comes_fails_with_what_was_seen() {
        let mut t = ExecutorTest::new(Echo);
        t.kill("t1").await;
        let _ = t.next_update().await;
        let waited =
            tokio::spawn(async move { t.next_update_within(Duration::from_secs(1)).await });
        let err = waited.await.expect_err("no second update");
        assert!(err.is_panic());
    }
}

fn super_task(task_id: &TaskId) -> bramble_sdk::TaskInfo {
    bramble_sdk::testing::task(task_id.as_str(), Vec::new())
}

#[tokio::test]
async fn a_scheduler_failing_over_is_told_it_reregistered_from_its_first_registration() {
    #[derive(Default)]
    struct Registrations(Vec<bool>);
    #[async_trait]
    impl Scheduler for Registrations {
        async fn registered(
            &mut self,
            _: &SchedulerDriver,
            _: &bramble_sdk::FrameworkId,
            again: bool,
        ) {
            self.0.push(again);
        }
        async fn resource_offers(&mut self, _: &SchedulerDriver, _: Vec<Offer>) {}
        async fn status_update(&mut self, _: &SchedulerDriver, _: &TaskStatus) {}
    }
    let mut fresh = SchedulerTest::new(Registrations::default());
    fresh.register("fw-1").await;
    fresh.register("fw-1").await;
    assert_eq!(fresh.scheduler().0, [false, true]);
    let mut restarted = SchedulerTest::failing_over(Registrations::default(), "fw-1");
    restarted.register("fw-1").await;
    assert_eq!(restarted.scheduler().0, [true]);
    assert_eq!(restarted.driver().framework_id(), Some("fw-1".into()));
}
