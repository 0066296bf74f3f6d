//! Small answers to offers that every framework here gives the same way: what an offer
//! leaves for tasks once their executor is paid for, launching a batch of tasks on it, and
//! declining an offer for a while.

use bramble_sdk::{
    ExecutorInfo, Filters, Offer, OfferId, Resources, SchedulerDriver, SdkError, TaskInfo,
};

/// What `offer` leaves for tasks: the executor's own resources are charged once per agent,
/// so only when it is not running there already.
pub fn room_for_tasks(offer: &Offer, executor: &ExecutorInfo) -> Resources {
    if offer.executor_ids.contains(&executor.executor_id) {
        offer.resources.clone()
    } else {
        offer
            .resources
            .checked_sub(&executor.resources)
            .unwrap_or_default()
    }
}

/// Launches `tasks` on `offer`. What they leave unused comes straight back (no refuse
/// filter): a batch job's next task may be ready any moment.
pub fn launch(
    driver: &SchedulerDriver,
    offer: OfferId,
    tasks: Vec<TaskInfo>,
) -> Result<(), SdkError> {
    driver.launch_tasks(
        vec![offer],
        tasks,
        Filters {
            refuse_seconds: 0.0,
        },
    )
}

/// Declines `offer`; the master offers those resources to us again after `refuse_seconds`
/// (or sooner, when we revive offers). Best effort: a driver that is gone holds no offers.
pub fn decline(driver: &SchedulerDriver, offer: OfferId, refuse_seconds: f64) {
    let _ = driver.decline_offer(offer, Filters { refuse_seconds });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::offer;
    use bramble_sdk::CommandInfo;

    #[test]
    fn the_executor_is_paid_for_once_per_agent() {
        let executor = ExecutorInfo {
            executor_id: "pi-executor".into(),
            name: "pi executor".into(),
            command: CommandInfo::shell("true"),
            resources: Resources::new(0.0, 32),
        };
        let mut fresh = offer(Resources::new(2.0, 128));
        assert_eq!(room_for_tasks(&fresh, &executor), Resources::new(2.0, 96));
        fresh.executor_ids.push(executor.executor_id.clone());
        assert_eq!(room_for_tasks(&fresh, &executor), Resources::new(2.0, 128));
        let tiny = offer(Resources::new(1.0, 16));
        assert_eq!(room_for_tasks(&tiny, &executor), Resources::default());
    }
}
