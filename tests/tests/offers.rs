//! Offer life cycle against a real in-process master: decline with a refuse filter, revive,
//! suppress, rescind on timeout, DRF across two frameworks, and at-least-once status updates
//! that are resent until the framework acknowledges them.

use bramble_proto::identity::Role;
use bramble_proto::messages::Filters;
use bramble_proto::{Resources, TaskState};
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::{shell_task, Event, TestFramework};
use bramble_tests::*;
use std::time::Duration;

#[tokio::test]
async fn declined_offers_stay_away_until_revive_and_suppress_rescinds() {
    let c = InProcessCluster::start(|_| {}, &["pi-a"], Resources::new(1.0, 256), false).await;
    let mut fw = c.framework("decliner").await;

    let offer = fw.offer_from("pi-a").await;
    fw.driver
        .decline_offer(
            offer.id.clone(),
            Filters {
                refuse_seconds: 3600.0,
            },
        )
        .expect("decline");
    // The allocator runs every 200 ms; a filtered agent is not offered again. Revive is what
    // brings it back, at once.
    eventually(
        "declined resources back in the pool",
        Duration::from_secs(5),
        || async {
            let s = c.master.state().await.ok()?;
            (s.frameworks.first()?.allocated.cpus_milli == 0).then_some(())
        },
    )
    .await;
    fw.driver.revive_offers().expect("revive");
    let again = fw.offer_from("pi-a").await;
    assert_ne!(again.id, offer.id, "a fresh offer, not the declined one");

    // Suppress: the outstanding offer is rescinded and no new one comes until revive.
    fw.driver.suppress_offers().expect("suppress");
    fw.until("the outstanding offer rescinded", |f| {
        f.other
            .iter()
            .any(|e| matches!(e, Event::Rescinded(id) if *id == again.id))
            .then_some(())
    })
    .await;
    fw.driver.revive_offers().expect("revive");
    fw.offer_from("pi-a").await;
    fw.stop(false).await;
    c.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_offer_is_rescinded_after_the_offer_timeout() {
    let c = InProcessCluster::start(
        |cfg| cfg.offer_timeout_secs = 0.5,
        &["pi-a"],
        Resources::new(1.0, 256),
        false,
    )
    .await;
    let mut fw = c.framework("sleepy").await;
    let offer = fw.offer_from("pi-a").await;
    fw.until("the offer rescinded", |f| {
        f.other
            .iter()
            .any(|e| matches!(e, Event::Rescinded(id) if *id == offer.id))
            .then_some(())
    })
    .await;
    // Using it now is refused as stale.
    fw.launch(&offer, vec![shell_task(&offer, "late", 0.1, 16, "true")]);
    let late = fw.terminal("late").await;
    assert_eq!(late.state, TaskState::Error);
    assert!(late.message.contains("no longer valid"), "{}", late.message);
    fw.stop(false).await;
    c.shutdown().await;
}

#[tokio::test]
async fn two_frameworks_share_agents_by_dominant_share() {
    let c =
        InProcessCluster::start(|_| {}, &["pi-a", "pi-b"], Resources::new(1.0, 256), false).await;
    let mut first = c.framework("first").await;
    // The first framework holds both agents' offers; a second framework arrives.
    first
        .until("offers from both agents", |f| {
            (f.offers.len() == 2).then_some(())
        })
        .await;
    let mut second = c.framework("second").await;
    // The first declines everything without a filter: DRF now hands the freed agent(s) to
    // the second framework, whose share (0) is the lowest.
    for o in first.offers.drain(..).collect::<Vec<_>>() {
        first
            .driver
            .decline_offer(
                o.id,
                Filters {
                    refuse_seconds: 0.0,
                },
            )
            .expect("decline");
    }
    second
        .until("an offer for the newcomer", |f| {
            (!f.offers.is_empty()).then_some(())
        })
        .await;
    first.stop(false).await;
    second.stop(false).await;
    c.shutdown().await;
}

#[tokio::test]
async fn an_unacknowledged_update_is_resent_until_acknowledged() {
    let c = InProcessCluster::start(|_| {}, &["pi-a"], Resources::new(1.0, 256), false).await;
    let mut config = SchedulerConfig::new(
        c.master.addr,
        c.cluster.credentials(Role::Framework),
        framework_info("forgetful"),
    );
    config.implicit_acknowledgements = false;
    let mut fw = TestFramework::start_with(config).await;
    let offer = fw.offer_from("pi-a").await;
    fw.launch(&offer, vec![shell_task(&offer, "once", 0.1, 16, "true")]);
    // RUNNING is never acknowledged. It carries no data, so FINISHED (which tells the
    // framework everything RUNNING did) does not wait behind it; FINISHED, unacknowledged, is
    // sent again (same uuid) after the agent's backoff, and nothing goes back behind it.
    let running = fw.state("once", TaskState::Running).await;
    let finished = fw.terminal("once").await;
    assert_eq!(finished.state, TaskState::Finished);
    let uuid = finished.uuid.expect("agent updates carry a uuid");
    fw.until("the FINISHED update resent", |f| {
        (f.updates.iter().filter(|u| u.uuid == Some(uuid)).count() >= 2).then_some(())
    })
    .await;
    let first_end = fw
        .updates
        .iter()
        .position(|u| u.uuid == Some(uuid))
        .expect("FINISHED seen");
    assert!(
        !fw.updates[first_end..]
            .iter()
            .any(|u| u.task_id.as_str() == "once" && u.uuid == running.uuid),
        "a RUNNING resent after FINISHED: {:?}",
        fw.updates
    );
    assert_eq!(c.agents[0].view().await.expect("view").pending_updates, 2);
    fw.driver.acknowledge(&finished).expect("ack finished");
    eventually(
        "the agent forgets the acknowledged updates",
        Duration::from_secs(10),
        || async { (c.agents[0].view().await?.pending_updates == 0).then_some(()) },
    )
    .await;
    let state = c.master.state().await.expect("state");
    assert!(
        state.tasks.is_empty(),
        "the master forgets an acknowledged terminal task"
    );
    fw.stop(false).await;
    c.shutdown().await;
}
