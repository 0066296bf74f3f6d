//! Step 2 — step 1 plus state kept in the master (the workshop kept it in ZooKeeper): the
//! number of copies wanted is the key [`INSTANCES_KEY`], which an operator changes while the
//! framework runs (`bramble state put FRAMEWORK_ID instances 5`), and every copy launched is
//! recorded under [`COPY_PREFIX`]`<task id>` until it ends, so a scheduler restarted anywhere
//! knows what it had launched before it launches anything.

use crate::{hello_task, task_resources};
use bramble_sdk::{
    async_trait, Filters, Offer, Scheduler, SchedulerDriver, StateEntry, TaskId, TaskStatus,
};
use std::collections::BTreeSet;

/// The key holding how many copies to keep, as decimal text.
pub const INSTANCES_KEY: &str = "instances";
/// Each running copy's key: this prefix and its task id; the value is its agent's id.
pub const COPY_PREFIX: &str = "copies/";
/// Offers we cannot use now come back after this long (or sooner, when we revive).
pub const REFUSE_SECONDS: f64 = 5.0;

pub struct HelloScheduler {
    /// Copies wanted: the stored value once read, `default_instances` until then.
    pub instances: usize,
    /// Launched and not yet ended, as recorded in the store.
    pub running: BTreeSet<TaskId>,
    /// Whether the stored state has arrived since the last registration. Until it has, no
    /// offer is used: a restarted scheduler would otherwise launch a full set next to the
    /// copies it launched before.
    loaded: bool,
}

impl HelloScheduler {
    pub fn new(default_instances: usize) -> Self {
        Self {
            instances: default_instances,
            running: BTreeSet::new(),
            loaded: false,
        }
    }

    /// Takes a stored `instances` value; a malformed one (written by hand) is ignored, loudly.
    fn set_instances(&mut self, driver: &SchedulerDriver, entry: &StateEntry) {
        match std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) => {
                self.instances = n;
                self.converge(driver);
            }
            None => tracing::warn!(
                key = INSTANCES_KEY,
                value = %String::from_utf8_lossy(&entry.value),
                "ignoring a stored instance count that is not a whole number"
            ),
        }
    }

    /// Asks for offers when copies are missing, and kills the newest-named extras when there
    /// are more copies than wanted.
    fn converge(&mut self, driver: &SchedulerDriver) {
        if self.running.len() < self.instances {
            let _ = driver.revive_offers();
        }
        while self.running.len() > self.instances {
            let Some(extra) = self.running.pop_last() else {
                break;
            };
            let _ = driver.kill_task(extra.clone());
            let _ = driver.delete_state(format!("{COPY_PREFIX}{extra}"), None);
        }
    }
}

#[async_trait]
impl Scheduler for HelloScheduler {
    async fn registered(
        &mut self,
        _driver: &SchedulerDriver,
        _framework_id: &bramble_sdk::FrameworkId,
        _reregistered: bool,
    ) {
        // The master sends the stored state right after this; wait for it.
        self.loaded = false;
    }

    async fn state_loaded(&mut self, driver: &SchedulerDriver, entries: Vec<StateEntry>) {
        self.running = entries
            .iter()
            .filter_map(|e| e.key.strip_prefix(COPY_PREFIX))
            .map(TaskId::from)
            .collect();
        self.loaded = true;
        match entries.iter().find(|e| e.key == INSTANCES_KEY) {
            Some(entry) => self.set_instances(driver, entry),
            None => {
                // First run: store the default, unless an operator beats us to it (version 0:
                // create only), so the count can be changed from then on.
                let _ = driver.put_state(
                    INSTANCES_KEY,
                    self.instances.to_string().into_bytes(),
                    Some(0),
                );
                self.converge(driver);
            }
        }
        // Copies launched before the restart report their state again; those that ended
        // while we were away come back as terminal updates and are forgotten then.
        if !self.running.is_empty() {
            let _ = driver.reconcile_tasks(self.running.iter().cloned().collect());
        }
    }

    async fn state_changed(
        &mut self,
        driver: &SchedulerDriver,
        key: &str,
        entry: Option<&StateEntry>,
    ) {
        if let (INSTANCES_KEY, Some(entry)) = (key, entry) {
            self.set_instances(driver, entry);
        }
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let fits = offer.resources.checked_sub(&task_resources()).is_some();
            if !self.loaded || self.running.len() >= self.instances || !fits {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: REFUSE_SECONDS,
                    },
                );
                continue;
            }
            let task = hello_task(&offer);
            let id = task.task_id.clone();
            let refuse_now = Filters {
                refuse_seconds: 0.0,
            };
            if driver
                .launch_tasks(vec![offer.id], vec![task], refuse_now)
                .is_ok()
            {
                let _ = driver.put_state(
                    format!("{COPY_PREFIX}{id}"),
                    offer.agent_id.as_str().as_bytes().to_vec(),
                    None,
                );
                self.running.insert(id);
            }
        }
        if self.loaded && self.running.len() >= self.instances {
            let _ = driver.suppress_offers();
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        if status.state.is_terminal() && self.running.remove(&status.task_id) {
            let _ = driver.delete_state(format!("{COPY_PREFIX}{}", status.task_id), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::proto::framework_state::StateWrite;
    use bramble_sdk::proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update, SchedulerTest};
    use bramble_sdk::{Resources, TaskState};

    fn entry(key: &str, value: &str, version: u64) -> StateEntry {
        StateEntry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            version,
        }
    }

    /// The state writes among the calls made, in order.
    fn writes(t: &mut SchedulerTest<HelloScheduler>) -> Vec<StateWrite> {
        t.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                SchedulerCall::WriteState(w) => Some(w),
                _ => None,
            })
            .collect()
    }

    fn big(id: &str, agent: &str) -> Offer {
        offer(id, agent, Resources::new(1.0, 256))
    }

    #[tokio::test]
    async fn nothing_is_launched_before_the_stored_state_arrives() {
        let mut t = SchedulerTest::new(HelloScheduler::new(2));
        t.register("fw-1").await;
        t.offers(vec![big("o1", "a1")]).await;
        assert!(t.launched().is_empty());
        assert_eq!(t.declined(), vec!["o1".into()]);
    }

    #[tokio::test]
    async fn a_first_run_stores_its_count_and_records_each_copy() {
        let mut t = SchedulerTest::new(HelloScheduler::new(2));
        t.register("fw-1").await;
        t.state(Vec::new()).await;
        assert_eq!(
            writes(&mut t),
            vec![StateWrite::Put {
                key: INSTANCES_KEY.into(),
                value: b"2".to_vec(),
                expected_version: Some(0),
            }]
        );
        t.offers(vec![big("o1", "a1"), big("o2", "a2")]).await;
        let launched = t.launched();
        assert_eq!(launched.len(), 2);
        let recorded: Vec<(String, Vec<u8>)> = writes(&mut t)
            .into_iter()
            .filter_map(|w| match w {
                StateWrite::Put { key, value, .. } => Some((key, value)),
                _ => None,
            })
            .collect();
        let expected: Vec<(String, Vec<u8>)> = launched
            .iter()
            .map(|task| {
                (
                    format!("{COPY_PREFIX}{}", task.task_id),
                    task.agent_id.as_str().as_bytes().to_vec(),
                )
            })
            .collect();
        assert_eq!(recorded, expected);

        // A copy that ends is crossed off.
        let ended = launched[0].task_id.clone();
        t.update(update(ended.as_str(), "a1", TaskState::Failed))
            .await;
        assert_eq!(
            writes(&mut t),
            vec![StateWrite::Delete {
                key: format!("{COPY_PREFIX}{ended}"),
                expected_version: None,
            }]
        );
    }

    #[tokio::test]
    async fn a_restarted_scheduler_adopts_its_recorded_copies_and_launches_nothing_more() {
        let mut t = SchedulerTest::failing_over(HelloScheduler::new(5), "fw-1");
        t.register("fw-1").await;
        t.state(vec![
            entry(INSTANCES_KEY, "2", 3),
            entry("copies/hello-a", "a1", 1),
            entry("copies/hello-b", "a2", 1),
        ])
        .await;
        assert_eq!(t.scheduler().instances, 2, "the stored count wins");
        let calls = t.take_calls();
        assert!(
            calls.contains(&SchedulerCall::Reconcile {
                task_ids: vec!["hello-a".into(), "hello-b".into()]
            }),
            "{calls:?}"
        );
        t.offers(vec![big("o1", "a3")]).await;
        assert!(t.launched().is_empty());
        assert_eq!(t.declined(), vec!["o1".into()]);
    }

    #[tokio::test]
    async fn an_operator_changing_the_count_scales_up_and_down() {
        let mut t = SchedulerTest::new(HelloScheduler::new(1));
        t.register("fw-1").await;
        t.state(vec![entry(INSTANCES_KEY, "1", 1)]).await;
        t.offers(vec![big("o1", "a1")]).await;
        assert_eq!(t.launched().len(), 1);
        t.take_calls();

        t.state_changed(INSTANCES_KEY, Some(entry(INSTANCES_KEY, "3", 2)))
            .await;
        assert_eq!(t.count(|c| matches!(c, SchedulerCall::Revive)), 1);
        t.offers(vec![big("o2", "a2"), big("o3", "a3")]).await;
        assert_eq!(t.scheduler().running.len(), 3);
        t.take_calls();

        t.state_changed(INSTANCES_KEY, Some(entry(INSTANCES_KEY, "1", 3)))
            .await;
        assert_eq!(t.killed().len(), 2);
        assert_eq!(t.scheduler().running.len(), 1);

        // A hand-written value that is not a count changes nothing.
        t.state_changed(INSTANCES_KEY, Some(entry(INSTANCES_KEY, "many", 4)))
            .await;
        assert_eq!(t.scheduler().instances, 1);
    }
}
