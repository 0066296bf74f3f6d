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
