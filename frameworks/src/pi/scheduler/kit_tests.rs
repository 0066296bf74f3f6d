//! The pi scheduler driven by the SDK's test kit: no master, no network, every call checked.

use super::*;
use crate::pi::kernel::leibniz_range;
use bramble_sdk::testing::{offer, update, SchedulerTest};
use bramble_sdk::{CommandInfo, Resources};

fn job(terms: u64, tasks: u64) -> PiJob {
    PiJob::new(terms, tasks, CommandInfo::shell("bramble executor pi"))
}

fn scheduler(job: PiJob) -> SchedulerTest<PiScheduler> {
    let (progress, _) = watch::channel(initial_progress(&job));
    SchedulerTest::new(PiScheduler::new(job, progress, None))
}

/// What the executor would answer: FINISHED with the chunk's sum as data.
fn finished(task: &TaskInfo) -> TaskStatus {
    let chunk = PiChunk::from_bytes(&task.data).expect("a pi chunk");
    let mut status = update(
        task.task_id.as_str(),
        task.agent_id.as_str(),
        TaskState::Finished,
    );
    status.data = leibniz_range(chunk.begin, chunk.end).to_bytes().to_vec();
    status
}

#[tokio::test]
async fn a_job_runs_to_the_exact_sum_and_acknowledges_every_update() {
    let mut t = scheduler(job(64_000, 4));
    t.register("fw-1").await;
    // Half a cpu a chunk: a 1-cpu agent takes two.
    t.offers(vec![offer("o1", "a1", Resources::new(1.0, 512))])
        .await;
    let first = t.launched();
    assert_eq!(first.len(), 2, "{:?}", t.calls());
    assert!(first.iter().all(|task| task.agent_id.as_str() == "a1"));
    for task in &first {
        t.update(finished(task)).await;
    }
    t.offers(vec![offer("o2", "a2", Resources::new(1.0, 512))])
        .await;
    let all = t.launched();
    assert_eq!(all.len(), 4);
    for task in &all[2..] {
        assert_eq!(t.stopped(), None, "not done before the last chunk");
        t.update(finished(task)).await;
    }
    assert_eq!(t.stopped(), Some(false), "a finished job tears itself down");
    let acked = t.acknowledged();
    assert_eq!(acked.len(), 4, "{acked:?}");
    let result = t.into_scheduler().result.expect("a result");
    let exact = leibniz_range(0, 64_000).value() * 4.0;
    assert!(
        (result.pi - exact).abs() < 1e-12,
        "{} vs {exact}",
        result.pi
    );
    assert_eq!(result.relaunches, 0);
    // Chunks are disjoint and cover the series.
    let mut ranges: Vec<_> = all
        .iter()
        .map(|task| {
            let c = PiChunk::from_bytes(&task.data).expect("chunk");
            (c.begin, c.end)
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges.first().map(|r| r.0), Some(0));
    assert_eq!(ranges.last().map(|r| r.1), Some(64_000));
    assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{ranges:?}");
}

#[tokio::test]
async fn a_lost_chunk_is_launched_again_on_the_next_offer() {
    let mut t = scheduler(job(8_000, 2));
    t.register("fw-1").await;
    t.offers(vec![offer("o1", "a1", Resources::new(1.0, 512))])
        .await;
    let first = t.launched();
    assert_eq!(first.len(), 2);
    let mut lost = update(first[0].task_id.as_str(), "a1", TaskState::Lost);
    lost.reason = Some(bramble_sdk::TaskReason::AgentRemoved);
    t.update(lost).await;
    t.update(finished(&first[1])).await;
    assert_eq!(t.stopped(), None);
    t.take_calls();
    t.offers(vec![offer("o2", "a2", Resources::new(1.0, 512))])
        .await;
    let again = t.launched();
    assert_eq!(again.len(), 1, "only the lost chunk: {:?}", t.calls());
    let (chunk, attempt) = parse_task_id(again[0].task_id.as_str()).expect("pi task id");
    let (lost_chunk, _) = parse_task_id(first[0].task_id.as_str()).expect("pi task id");
    assert_eq!(
        (chunk, attempt),
        (lost_chunk, 2),
        "same chunk, second attempt"
    );
    assert_eq!(again[0].agent_id.as_str(), "a2");
    t.update(finished(&again[0])).await;
    assert_eq!(t.stopped(), Some(false));
    assert_eq!(t.scheduler().result.as_ref().map(|r| r.relaunches), Some(1));
}

fn failed_for_the_agent(task: &TaskInfo) -> TaskStatus {
    let mut s = update(
        task.task_id.as_str(),
        task.agent_id.as_str(),
        TaskState::Failed,
    );
    s.source = bramble_sdk::UpdateSource::Agent;
    s.reason = Some(bramble_sdk::TaskReason::ExecutorRegistrationTimeout);
    s.message = "executor pi-executor did not register within 30s".into();
    s
}

/// Issue 22: a chunk that failed on an agent was relaunched there forever while another
/// agent sat idle.
#[tokio::test]
async fn a_chunk_that_failed_on_an_agent_goes_to_another_one() {
    let mut t = scheduler(job(8_000, 2));
    t.register("fw-1").await;
    t.offers(vec![offer("o1", "a1", Resources::new(0.5, 512))])
        .await;
    t.offers(vec![offer("o2", "a2", Resources::new(0.5, 512))])
        .await;
    let first = t.launched();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].agent_id.as_str(), "a1");
    t.update(failed_for_the_agent(&first[0])).await;
    let waiting = t.scheduler().snapshot(false).waiting_for;
    assert_eq!(waiting.as_deref(), Some("an offer for 1 chunk"));
    t.take_calls();
    t.offers(vec![offer("o3", "a1", Resources::new(1.0, 512))])
        .await;
    assert!(t.launched().is_empty(), "not again on a1: {:?}", t.calls());
    assert_eq!(t.declined(), vec![bramble_sdk::OfferId::from("o3")]);
    t.update(finished(&first[1])).await;
    t.offers(vec![offer("o4", "a2", Resources::new(1.0, 512))])
        .await;
    let again = t.launched();
    assert_eq!(again.len(), 1, "{:?}", t.calls());
    assert_eq!(again[0].agent_id.as_str(), "a2");
    assert_eq!(
        t.scheduler().snapshot(false).waiting_for.as_deref(),
        Some("chunk 0 attempt 2 on agent a2")
    );
    t.update(finished(&again[0])).await;
    assert_eq!(t.stopped(), Some(false));
}

/// With a single agent, a chunk that failed there runs there again, unless the agent
/// failed repeatedly: then its offers are declined for a while.
#[tokio::test]
async fn an_agent_where_chunks_keep_failing_is_avoided_for_a_while() {
    let mut t = scheduler(job(8_000, 2));
    t.register("fw-1").await;
    t.offers(vec![offer("o1", "a1", Resources::new(1.0, 512))])
        .await;
    let first = t.launched();
    assert_eq!(first.len(), 2);
    t.update(failed_for_the_agent(&first[0])).await;
    t.take_calls();
    t.offers(vec![offer("o2", "a1", Resources::new(0.5, 512))])
        .await;
    let again = t.launched();
    assert_eq!(again.len(), 1, "the only agent gets it back once");
    t.update(failed_for_the_agent(&again[0])).await;
    t.take_calls();
    t.offers(vec![offer("o3", "a1", Resources::new(1.0, 512))])
        .await;
    assert!(t.launched().is_empty(), "blocked: {:?}", t.calls());
    assert_eq!(t.declined(), vec![bramble_sdk::OfferId::from("o3")]);
    t.offers(vec![offer("o4", "a2", Resources::new(1.0, 512))])
        .await;
    assert_eq!(t.launched().len(), 1);
}

#[tokio::test]
async fn offers_too_small_for_a_chunk_are_declined_and_nothing_launches() {
    let mut t = scheduler(job(8_000, 2));
    t.register("fw-1").await;
    t.offers(vec![offer("o1", "a1", Resources::new(0.1, 8))])
        .await;
    assert!(t.launched().is_empty());
    assert_eq!(t.declined(), vec![bramble_sdk::OfferId::from("o1")]);
}
