//! The service scheduler driven by the SDK's test kit: every call it makes, checked in order.

use super::kit::{service, Service};
use super::*;
use bramble_proto::messages::SchedulerCall;
use bramble_sdk::testing::{offer, update};
use bramble_sdk::{Filters, OfferId, TaskReason, TaskState, TaskStatus};
use std::time::Duration;

fn spec() -> ServiceSpec {
    ServiceSpec {
        name: "svc".into(),
        build: Box::new(|offer, task_id| {
            let task = command_task(
                offer,
                task_id,
                "svc",
                "the service",
                Resources::new(0.5, 64),
                CommandInfo::shell("serve"),
            )?;
            Ok(Launch { task, port: None })
        }),
    }
}

fn big(id: &str, agent: &str) -> Offer {
    offer(id, agent, Resources::new(1.0, 256))
}

fn lost(task: &str, agent: &str) -> TaskStatus {
    let mut s = update(task, agent, TaskState::Lost);
    s.reason = Some(TaskReason::AgentRemoved);
    s
}

fn refuse(secs: f64) -> Filters {
    Filters {
        refuse_seconds: secs,
    }
}

/// The service with its first task launched on `a1` and RUNNING; calls so far taken.
async fn running() -> Service {
    let mut s = service(spec()).await;
    s.t.offers(vec![big("o1", "a1")]).await;
    s.t.update(update("svc-1", "a1", TaskState::Running)).await;
    s.t.take_calls();
    s
}

fn revives(s: &mut Service) -> usize {
    s.t.count(|c| matches!(c, SchedulerCall::Revive))
}

#[tokio::test]
async fn the_first_fitting_offer_launches_one_task_then_offers_are_suppressed() {
    let mut s = service(spec()).await;
    s.t.offers(vec![
        offer("small", "a0", Resources::new(0.1, 256)),
        big("o1", "a1"),
    ])
    .await;
    let calls = s.t.take_calls();
    let [SchedulerCall::Decline { offer_ids, filters }, SchedulerCall::Accept {
        offer_ids: accepted,
        tasks,
        filters: rest,
    }, SchedulerCall::Suppress] = calls.as_slice()
    else {
        panic!("decline, accept, suppress expected: {calls:?}");
    };
    assert_eq!(
        (offer_ids.as_slice(), *filters),
        (&[OfferId::from("small")][..], refuse(REFUSE_UNFIT_SECS))
    );
    assert_eq!(accepted, &[OfferId::from("o1")]);
    assert_eq!(
        *rest,
        refuse(REFUSE_UNUSED_SECS),
        "the unused rest stays out while we run"
    );
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id.as_str(), "svc-1");
    assert_eq!(tasks[0].agent_id.as_str(), "a1");
    // One task is all it wants: later offers go back, for a minute.
    s.t.offers(vec![big("o2", "a2")]).await;
    assert_eq!(
        s.t.declines(),
        vec![("o2".into(), refuse(REFUSE_UNUSED_SECS))]
    );
    assert!(s.t.launched().is_empty());
    let events = s.events();
    assert!(
        matches!(&events[0], ServiceEvent::Registered { .. }),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], ServiceEvent::NoFit { reason } if reason.starts_with("a0 is too small")),
        "{events:?}"
    );
    assert!(
        matches!(&events[2], ServiceEvent::Launched { task_id, .. } if task_id.as_str() == "svc-1"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_unfit_offer_is_reported_once_per_reason() {
    let mut s = service(spec()).await;
    for id in ["o1", "o2", "o3"] {
        s.t.offers(vec![offer(id, "a0", Resources::new(0.1, 256))])
            .await;
    }
    let no_fits = s
        .events()
        .iter()
        .filter(|e| matches!(e, ServiceEvent::NoFit { .. }))
        .count();
    assert_eq!(no_fits, 1, "{:?}", s.events());
    assert_eq!(s.t.declined().len(), 3);
}

#[tokio::test]
async fn a_lost_agent_relaunches_the_task_on_another() {
    let mut s = running().await;
    assert!(s.outcome().was_running);
    s.t.update(lost("svc-1", "a1")).await;
    assert_eq!(
        revives(&mut s),
        1,
        "offers revived for the relaunch: {:?}",
        s.t.calls()
    );
    assert_eq!(s.t.stopped(), None);
    s.t.offers(vec![big("o2", "a2")]).await;
    let launched = s.t.launched();
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].task_id.as_str(), "svc-2");
    assert_eq!(launched[0].agent_id.as_str(), "a2");
    // A late word about the first attempt changes nothing.
    s.t.take_calls();
    s.t.update(update("svc-1", "a1", TaskState::Failed)).await;
    assert_eq!(revives(&mut s), 0);
    assert_eq!(s.t.stopped(), None);
    assert_eq!(s.outcome().relaunches, 1);
    assert_eq!(
        s.outcome().agent_id.as_ref().map(|a| a.as_str()),
        Some("a2")
    );
}

#[tokio::test]
async fn relaunches_are_bounded() {
    let mut s = running().await;
    for attempt in 1..=MAX_RELAUNCHES {
        s.t.update(lost(&format!("svc-{attempt}"), "a1")).await;
        assert_eq!(s.t.stopped(), None, "relaunch {attempt} allowed");
        s.t.offers(vec![big(&format!("o{attempt}"), "a1")]).await;
    }
    let last = format!("svc-{}", MAX_RELAUNCHES + 1);
    assert_eq!(
        s.t.launched().last().map(|t| t.task_id.to_string()),
        Some(last.clone())
    );
    s.t.update(lost(&last, "a1")).await;
    assert_eq!(s.t.stopped(), Some(false), "gives up and tears down");
    assert_eq!(s.outcome().final_state, Some(TaskState::Lost));
    assert_eq!(s.outcome().relaunches, MAX_RELAUNCHES);
}

#[tokio::test]
async fn a_failed_task_ends_the_service() {
    let mut s = running().await;
    let mut failed = update("svc-1", "a1", TaskState::Failed);
    failed.message = "exit status 3".into();
    s.t.update(failed).await;
    assert_eq!(s.t.stopped(), Some(false));
    assert_eq!(revives(&mut s), 0);
    assert_eq!(s.outcome().final_state, Some(TaskState::Failed));
    assert_eq!(s.outcome().message, "exit status 3");
    assert!(matches!(
        s.events().last(),
        Some(ServiceEvent::Ended {
            state: TaskState::Failed,
            ..
        })
    ));
}

#[tokio::test]
async fn stopping_kills_the_task_and_the_end_tears_down() {
    let mut s = running().await;
    s.stop();
    assert_eq!(s.t.killed(), vec![TaskId::from("svc-1")]);
    assert_eq!(s.t.stopped(), None, "waits for the task's end");
    s.t.offers(vec![big("o2", "a2")]).await;
    assert!(s.t.launched().is_empty(), "nothing launched once stopping");
    assert_eq!(s.t.declined(), vec![OfferId::from("o2")]);
    // Even a LOST is final once stopping.
    s.t.update(lost("svc-1", "a1")).await;
    assert_eq!(revives(&mut s), 0);
    assert_eq!(s.t.stopped(), Some(false));
    assert!(
        matches!(
            s.events().iter().rev().nth(1),
            Some(ServiceEvent::Killing { .. })
        ),
        "{:?}",
        s.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_kill_with_no_answer_tears_down_after_the_timeout() {
    let mut s = running().await;
    s.stop();
    assert_eq!(s.t.killed(), vec![TaskId::from("svc-1")]);
    s.t.advance(KILL_TIMEOUT - Duration::from_millis(1)).await;
    assert_eq!(s.t.stopped(), None, "too early");
    s.t.advance(Duration::from_millis(1)).await;
    assert_eq!(s.t.stopped(), Some(false));
}

#[tokio::test]
async fn stopping_before_any_launch_tears_down_at_once() {
    let mut s = service(spec()).await;
    s.stop();
    assert_eq!(s.t.stopped(), Some(false));
    assert!(s.t.killed().is_empty());
}

#[tokio::test]
async fn reregistering_reconciles_the_live_task() {
    let mut s = running().await;
    s.t.disconnect().await;
    s.t.register("fw-test").await;
    assert_eq!(
        s.t.calls(),
        [SchedulerCall::Reconcile {
            task_ids: vec![TaskId::from("svc-1")]
        }]
    );
}
