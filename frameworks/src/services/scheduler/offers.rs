//! The offer path: an offer becomes the launches the book places on it, or a decline for as
//! long as nothing will fit.

use super::{ServiceScheduler, REFUSE_BRIEFLY_SECS, REFUSE_UNUSED_SECS};
use bramble_sdk::{Filters, FrameworkId, Offer, OfferId, SchedulerDriver, TaskId, TaskStatus};
use std::time::Instant;
use tracing::{debug, info, warn};

impl ServiceScheduler {
    fn decline(driver: &SchedulerDriver, offer: OfferId, refuse_seconds: f64) {
        let _ = driver.decline_offer(offer, Filters { refuse_seconds });
    }

    pub(super) fn offer(&mut self, driver: &SchedulerDriver, offer: Offer, now: Instant) {
        if self.reconciling.is_some() {
            return Self::decline(driver, offer.id, REFUSE_BRIEFLY_SECS);
        }
        match self.book.place(&offer, now) {
            Ok(tasks) if tasks.is_empty() => {
                let refuse = match self.book.backing_off_until(now) {
                    Some(t) => t.duration_since(now).as_secs_f64().clamp(0.1, 5.0),
                    None if self.book.wants_offers() => REFUSE_BRIEFLY_SECS,
                    None => REFUSE_UNUSED_SECS,
                };
                Self::decline(driver, offer.id, refuse);
            }
            Ok(tasks) => {
                for t in &tasks {
                    info!(task = %t.task_id, host = %offer.hostname, ports = ?t.resources.ports, "launching instance");
                }
                let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
                if let Err(e) = driver.launch_tasks(
                    vec![offer.id],
                    tasks,
                    Filters {
                        refuse_seconds: 0.0,
                    },
                ) {
                    // The launch never left: forget these instances so they are placed again.
                    warn!("launching failed ({e}); placing those instances again later");
                    for id in ids {
                        let mut lost = TaskStatus::new(
                            FrameworkId(String::new()),
                            id,
                            bramble_sdk::TaskState::Lost,
                            bramble_sdk::proto::task::UpdateSource::Master,
                        );
                        lost.reason = Some(bramble_sdk::TaskReason::InvalidOffer);
                        self.book.update(&lost, now);
                    }
                }
            }
            Err(why) => {
                debug!(host = %offer.hostname, "offer declined: {why}");
                Self::decline(driver, offer.id, REFUSE_BRIEFLY_SECS);
            }
        }
    }
}
