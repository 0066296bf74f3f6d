//! Step 3 — recovering from failure. What step 1 left to chance:
//!
//! - a copy that ends is launched again: at once when its agent was lost (not its fault),
//!   after [`RELAUNCH_DELAY`] when it crashed (a crash loop should not spin the cluster);
//! - the scheduler itself may die: its framework id is kept in a file, and the next run
//!   subscribes under it (failover) within the framework's failover timeout, while its tasks
//!   keep running;
//! - on every (re-)registration it asks the master for the state of all its tasks (implicit
//!   reconciliation) and adopts those still running, killing any beyond `instances`; after a
//!   failover it launches nothing for [`RECONCILE_GRACE`], so the answers arrive before
//!   offers are spent on copies that are in fact still running.
//!
//! Step 2 will move the framework id from the file into the master's per-framework store.

use crate::{hello_task, task_resources};
use anyhow::Context;
use bramble_sdk::{
    async_trait, Filters, FrameworkId, Offer, Scheduler, SchedulerDriver, TaskId, TaskState,
    TaskStatus,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// How long a crashed copy waits before it is launched again.
pub const RELAUNCH_DELAY: Duration = Duration::from_secs(5);
/// Offers we cannot use now come back after this long (or sooner, when we revive).
pub const REFUSE_SECONDS: f64 = 5.0;
/// After a failover, how long offers wait for reconciliation's answers.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(2);

pub struct HelloScheduler {
    pub instances: usize,
    /// Launched (or adopted) and not yet ended.
    pub running: BTreeSet<TaskId>,
    pub relaunches: u64,
    /// Where the framework id is kept between runs.
    id_file: Option<PathBuf>,
    /// After a crash, nothing is launched before this.
    hold_until: Option<Instant>,
}

impl HelloScheduler {
    pub fn new(instances: usize, id_file: Option<PathBuf>) -> Self {
        Self {
            instances,
            running: BTreeSet::new(),
            relaunches: 0,
            id_file,
            hold_until: None,
        }
    }

    fn decline(driver: &SchedulerDriver, offer: Offer, refuse_seconds: f64) {
        let _ = driver.decline_offer(offer.id, Filters { refuse_seconds });
    }

    /// A copy ended: launch another, now or after the crash delay.
    fn relaunch(&mut self, driver: &SchedulerDriver, crashed: bool) {
        self.relaunches += 1;
        if crashed {
            self.hold(driver, RELAUNCH_DELAY);
        } else {
            let _ = driver.revive_offers();
        }
    }

    /// Launches nothing for `how_long`, then revives offers.
    fn hold(&mut self, driver: &SchedulerDriver, how_long: Duration) {
        let at = Instant::now() + how_long;
        self.hold_until = Some(self.hold_until.map_or(at, |t| t.max(at)));
        let driver = driver.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = driver.revive_offers();
        });
    }
}

#[async_trait]
impl Scheduler for HelloScheduler {
    async fn registered(&mut self, driver: &SchedulerDriver, id: &FrameworkId, again: bool) {
        if let Some(file) = &self.id_file {
            if let Err(e) = save_framework_id(file, id) {
                eprintln!("hello-bramble: {e:#}; a restart will register a new framework");
            }
        }
        // Whatever we believed, the master knows: it answers with an update per task.
        let _ = driver.reconcile_tasks(Vec::new());
        if again {
            // Tasks of ours may be running that we have not heard of yet.
            self.hold(driver, RECONCILE_GRACE);
        }
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let held = self
            .hold_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero());
        for offer in offers {
            let fits = offer.resources.checked_sub(&task_resources()).is_some();
            if let Some(left) = held {
                Self::decline(driver, offer, left.as_secs_f64());
            } else if self.running.len() >= self.instances || !fits {
                Self::decline(driver, offer, REFUSE_SECONDS);
            } else {
                let task = hello_task(&offer);
                let id = task.task_id.clone();
                let refuse_now = Filters {
                    refuse_seconds: 0.0,
                };
                if driver
                    .launch_tasks(vec![offer.id], vec![task], refuse_now)
                    .is_ok()
                {
                    self.running.insert(id);
                }
            }
        }
        if self.running.len() >= self.instances {
            let _ = driver.suppress_offers();
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let id = &status.task_id;
        if !status.state.is_terminal() {
            // A task of ours we do not know: launched by an earlier run of this scheduler.
            if !self.running.contains(id) {
                if self.running.len() < self.instances {
                    self.running.insert(id.clone());
                } else {
                    let _ = driver.kill_task(id.clone());
                }
            }
            return;
        }
        if self.running.remove(id) {
            let crashed = matches!(status.state, TaskState::Failed | TaskState::Finished);
            self.relaunch(driver, crashed);
        }
    }
}

/// The framework id an earlier run kept in `file`, if any.
pub fn load_framework_id(file: &Path) -> anyhow::Result<Option<FrameworkId>> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(FrameworkId::from(text.trim()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Keeps `id` in `file` for the next run: written aside, then renamed over, so a crash leaves
/// the old id or the new one.
pub fn save_framework_id(file: &Path, id: &FrameworkId) -> anyhow::Result<()> {
    let aside = file.with_extension("tmp");
    std::fs::write(&aside, id.as_str()).with_context(|| format!("writing {}", aside.display()))?;
    std::fs::rename(&aside, file).with_context(|| format!("renaming to {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update, SchedulerTest};
    use bramble_sdk::{Resources, TaskReason};

    fn big(id: &str, agent: &str) -> Offer {
        offer(id, agent, Resources::new(1.0, 256))
    }

    fn revives(t: &mut SchedulerTest<HelloScheduler>) -> usize {
        t.count(|c| matches!(c, SchedulerCall::Revive))
    }

    /// One copy launched on `a1`; calls so far taken.
    async fn one_running() -> (SchedulerTest<HelloScheduler>, TaskId) {
        let mut t = SchedulerTest::new(HelloScheduler::new(1, None));
        t.register("fw-1").await;
        t.offers(vec![big("o1", "a1")]).await;
        let id = t.launched()[0].task_id.clone();
        t.update(update(id.as_str(), "a1", TaskState::Running))
            .await;
        t.take_calls();
        (t, id)
    }

    #[tokio::test]
    async fn a_copy_on_a_lost_agent_is_launched_again_at_once() {
        let (mut t, id) = one_running().await;
        let mut lost = update(id.as_str(), "a1", TaskState::Lost);
        lost.reason = Some(TaskReason::AgentRemoved);
        t.update(lost).await;
        assert_eq!(revives(&mut t), 1);
        t.offers(vec![big("o2", "a2")]).await;
        let again = t.launched();
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].task_id, id, "a new id for the new copy");
        assert_eq!(again[0].agent_id.as_str(), "a2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_copy_is_launched_again_only_after_the_delay() {
        let (mut t, id) = one_running().await;
        t.update(update(id.as_str(), "a1", TaskState::Failed)).await;
        t.offers(vec![big("o2", "a1")]).await;
        assert!(t.launched().is_empty(), "held back");
        let (declined, filters) = t.declines().remove(0);
        assert_eq!(declined.as_str(), "o2");
        assert!(
            (filters.refuse_seconds - RELAUNCH_DELAY.as_secs_f64()).abs() < 0.01,
            "declined for what is left of the delay: {filters:?}"
        );
        t.advance(RELAUNCH_DELAY - Duration::from_millis(1)).await;
        assert_eq!(revives(&mut t), 0, "too early");
        t.advance(Duration::from_millis(1)).await;
        assert_eq!(revives(&mut t), 1);
        t.offers(vec![big("o3", "a1")]).await;
        assert_eq!(t.launched().len(), 1);
    }

    #[tokio::test]
    async fn registering_reconciles_and_adopts_what_an_earlier_run_left_running() {
        let mut t = SchedulerTest::new(HelloScheduler::new(1, None));
        t.register("fw-1").await;
        assert_eq!(
            t.take_calls(),
            [SchedulerCall::Reconcile {
                task_ids: Vec::new()
            }]
        );
        t.update(update("hello-old", "a1", TaskState::Running))
            .await;
        t.update(update("hello-older", "a2", TaskState::Running))
            .await;
        assert_eq!(
            t.scheduler()
                .running
                .iter()
                .map(|id| id.as_str())
                .collect::<Vec<_>>(),
            ["hello-old"]
        );
        assert_eq!(
            t.killed(),
            vec![TaskId::from("hello-older")],
            "one too many"
        );
        t.offers(vec![big("o1", "a3")]).await;
        assert!(t.launched().is_empty(), "enough copies already");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_over_scheduler_launches_nothing_until_reconciliation_had_its_time() {
        let mut t = SchedulerTest::failing_over(HelloScheduler::new(2, None), "fw-1");
        t.register("fw-1").await;
        t.offers(vec![big("o1", "a1")]).await;
        assert!(
            t.launched().is_empty(),
            "offers wait for the master's answers"
        );
        t.update(update("hello-old", "a2", TaskState::Running))
            .await;
        t.advance(RECONCILE_GRACE).await;
        assert_eq!(revives(&mut t), 1);
        t.offers(vec![big("o2", "a1"), big("o3", "a3")]).await;
        assert_eq!(t.launched().len(), 1, "one adopted, one launched");
    }

    #[tokio::test]
    async fn the_framework_id_is_kept_for_the_next_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("framework-id");
        assert_eq!(load_framework_id(&file).expect("no file yet"), None);
        let mut t = SchedulerTest::new(HelloScheduler::new(1, Some(file.clone())));
        t.register("fw-9").await;
        assert_eq!(
            load_framework_id(&file).expect("read back"),
            Some(FrameworkId::from("fw-9"))
        );
    }
}
