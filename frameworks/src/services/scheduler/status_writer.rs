//! The status writer: each service's `status/<name>` record, rewritten when it changed (at
//! most every `STATUS_EVERY`).

use super::{ServiceScheduler, STATUS_EVERY};
use crate::services::status::status_key;
use bramble_sdk::SchedulerDriver;
use std::time::Instant;
use tracing::debug;

impl ServiceScheduler {
    /// Writes each service's status record if it changed (at most once a second).
    pub(super) fn write_status(&mut self, driver: &SchedulerDriver, now: Instant) {
        if self
            .last_status_write
            .is_some_and(|t| now.duration_since(t) < STATUS_EVERY)
        {
            return;
        }
        self.last_status_write = Some(now);
        for name in self.book.service_names() {
            let Some(status) = self.book.status_of(&name) else {
                continue;
            };
            let bytes = status.to_bytes();
            if self.written.get(&name) == Some(&bytes) {
                continue;
            }
            match driver.put_state(status_key(&name), bytes.clone(), None) {
                Ok(()) => {
                    self.written.insert(name, bytes);
                }
                Err(e) => debug!(service = name, "status not written ({e})"),
            }
        }
    }
}
