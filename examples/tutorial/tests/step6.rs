//! Step 6 — testing the scheduler. `bramble_sdk::testing::SchedulerTest` plays the master:
//! the test hands the scheduler offers and status updates, moves time, and reads back every
//! call it made, in order. No master, no agents, no network; time is tokio's paused clock.
//!
//! This is the tutorial's last state (step 5's scheduler) through one bad afternoon: two
//! copies up, an agent lost, a crash held back by the relaunch delay, the scheduler restarted
//! and its tasks adopted.

use bramble_sdk::proto::messages::SchedulerCall;
use bramble_sdk::testing::{offer, update, SchedulerTest};
use bramble_sdk::{Resources, TaskReason, TaskState};
use bramble_tutorial::{step3, step5};
use std::time::Duration;

fn big(id: &str, agent: &str) -> bramble_sdk::Offer {
    offer(id, agent, Resources::new(1.0, 256))
}

#[tokio::test(start_paused = true)]
async fn two_copies_survive_a_lost_agent_a_crash_and_a_scheduler_restart() {
    let (scheduler, status) = step5::WithStatusPage::new(step3::HelloScheduler::new(2, None));
    let mut t = SchedulerTest::new(scheduler);
    t.register("fw-1").await;
    t.offers(vec![
        big("o1", "pi-a"),
        big("o2", "pi-b"),
        big("o3", "pi-c"),
    ])
    .await;
    let first = t.launched();
    assert_eq!(first.len(), 2, "two copies: {:?}", t.calls());
    assert_eq!(t.declined(), vec!["o3".into()], "a third is not wanted");
    for task in &first {
        t.update(update(
            task.task_id.as_str(),
            task.agent_id.as_str(),
            TaskState::Running,
        ))
        .await;
    }
    assert_eq!(status.borrow().running.len(), 2);

    // pi-a is unplugged: its copy is LOST, and relaunched on the next offer.
    let mut lost = update(first[0].task_id.as_str(), "pi-a", TaskState::Lost);
    lost.reason = Some(TaskReason::AgentRemoved);
    t.update(lost).await;
    assert_eq!(t.count(|c| matches!(c, SchedulerCall::Revive)), 1);
    t.offers(vec![big("o4", "pi-c")]).await;
    let replacement = t.launched().pop().expect("a replacement");
    assert_eq!(replacement.agent_id.as_str(), "pi-c");

    // The copy on pi-b crashes: nothing is launched for RELAUNCH_DELAY, then offers revive.
    t.take_calls();
    t.update(update(first[1].task_id.as_str(), "pi-b", TaskState::Failed))
        .await;
    t.offers(vec![big("o5", "pi-b")]).await;
    assert!(t.launched().is_empty(), "held back after a crash");
    t.advance(step3::RELAUNCH_DELAY + Duration::from_millis(1))
        .await;
    assert_eq!(t.count(|c| matches!(c, SchedulerCall::Revive)), 1);
    t.offers(vec![big("o6", "pi-b")]).await;
    assert_eq!(t.launched().len(), 1);
    assert_eq!(status.borrow().relaunches, 2);

    // The scheduler restarts: the new one fails over under the same id, reconciles, and adopts
    // the two copies the master reports instead of launching more.
    let running: Vec<String> = status.borrow().running.clone();
    let (scheduler, status) = step5::WithStatusPage::new(step3::HelloScheduler::new(2, None));
    let mut t = SchedulerTest::failing_over(scheduler, "fw-1");
    t.register("fw-1").await;
    assert_eq!(
        t.take_calls(),
        [SchedulerCall::Reconcile {
            task_ids: Vec::new()
        }]
    );
    // An offer before the master's answers is not spent on a third copy.
    t.offers(vec![big("o7", "pi-d")]).await;
    assert!(t.launched().is_empty(), "waiting for reconciliation");
    for id in &running {
        t.update(update(id, "pi-x", TaskState::Running)).await;
    }
    t.advance(step3::RECONCILE_GRACE).await;
    t.offers(vec![big("o8", "pi-d")]).await;
    assert!(t.launched().is_empty(), "both copies adopted");
    assert_eq!(status.borrow().running, running);
    assert_eq!(status.borrow().framework_id.as_deref(), Some("fw-1"));
}
