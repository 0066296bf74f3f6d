//! Step 1 — a framework generated from the template, then made into hello-mesos: keep
//! `instances` copies of [`COMMAND`](crate::COMMAND) running, one per offer. A copy that ends
//! is only forgotten here; step 3 launches it again.

use crate::{hello_task, task_resources};
use bramble_sdk::{async_trait, Filters, Offer, Scheduler, SchedulerDriver, TaskId, TaskStatus};
use std::collections::BTreeSet;

/// Offers we cannot use now come back after this long (or sooner, when we revive).
pub const REFUSE_SECONDS: f64 = 5.0;

pub struct HelloScheduler {
    pub instances: usize,
    /// Launched and not yet ended.
    pub running: BTreeSet<TaskId>,
}

impl HelloScheduler {
    pub fn new(instances: usize) -> Self {
        Self {
            instances,
            running: BTreeSet::new(),
        }
    }
}

#[async_trait]
impl Scheduler for HelloScheduler {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let fits = offer.resources.checked_sub(&task_resources()).is_some();
            if self.running.len() >= self.instances || !fits {
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
            // What the task leaves of the offer comes back at once: the next copy may want it.
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
        if self.running.len() >= self.instances {
            // All copies are up: stop holding the allocator's attention.
            let _ = driver.suppress_offers();
        }
    }

    async fn status_update(&mut self, _driver: &SchedulerDriver, status: &TaskStatus) {
        if status.state.is_terminal() {
            self.running.remove(&status.task_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update, SchedulerTest};
    use bramble_sdk::{Resources, TaskState};

    #[tokio::test]
    async fn one_copy_per_offer_until_enough_then_offers_are_declined_and_suppressed() {
        let mut t = SchedulerTest::new(HelloScheduler::new(2));
        t.register("fw-1").await;
        t.offers(vec![
            offer("o1", "a1", Resources::new(1.0, 256)),
            offer("o2", "a2", Resources::new(1.0, 256)),
            offer("o3", "a3", Resources::new(1.0, 256)),
        ])
        .await;
        let launched = t.launched();
        let agents: Vec<&str> = launched.iter().map(|t| t.agent_id.as_str()).collect();
        assert_eq!(agents, ["a1", "a2"]);
        assert!(launched
            .iter()
            .all(|t| t.command.as_ref().map(|c| c.value.as_str()) == Some(crate::COMMAND)));
        assert_eq!(
            t.declines(),
            vec![(
                "o3".into(),
                Filters {
                    refuse_seconds: REFUSE_SECONDS
                }
            )]
        );
        assert_eq!(t.count(|c| matches!(c, SchedulerCall::Suppress)), 1);
    }

    #[tokio::test]
    async fn offers_too_small_are_declined() {
        let mut t = SchedulerTest::new(HelloScheduler::new(1));
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(0.05, 256))])
            .await;
        assert!(t.launched().is_empty());
        assert_eq!(t.declined(), vec!["o1".into()]);
    }

    #[tokio::test]
    async fn an_ended_copy_is_forgotten() {
        let mut t = SchedulerTest::new(HelloScheduler::new(1));
        t.register("fw-1").await;
        t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        let id = t.launched()[0].task_id.clone();
        t.update(update(id.as_str(), "a1", TaskState::Failed)).await;
        assert!(t.scheduler().running.is_empty());
        assert_eq!(t.acknowledged(), vec![id]);
    }
}
