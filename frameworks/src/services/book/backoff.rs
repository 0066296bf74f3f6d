//! The restart policy: an instance that ends without being asked to is replaced after a
//! backoff that grows with consecutive failures.

use super::instances::{Instance, Phase};
use super::{Book, Service};
use bramble_proto::{TaskReason, TaskState, TaskStatus};
use std::time::{Duration, Instant};

impl Service {
    /// The backoff after an instance of this service failed (ended or killed unhealthy).
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.spec.restart.delay(self.failures);
        self.not_before = Some(now + delay);
        delay
    }
}

impl Book {
    /// The earliest moment a service that needs instances may launch one, if all that need
    /// one are backing off; `None` when one may launch now or none needs any.
    pub fn backing_off_until(&self, now: Instant) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for (name, s) in &self.services {
            if self.missing(name) == 0 {
                continue;
            }
            match s.not_before {
                Some(t) if t > now => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                _ => return None,
            }
        }
        earliest
    }

    /// The restart policy for an instance that ended: its service's backoff, if any.
    pub(super) fn after_end(
        &mut self,
        i: &Instance,
        status: &TaskStatus,
        now: Instant,
    ) -> Option<Duration> {
        let service = self.services.get_mut(&i.service)?;
        if i.killing || i.fingerprint != service.fingerprint {
            return None;
        }
        let not_its_fault = status.state == TaskState::Lost
            || matches!(
                status.reason,
                Some(TaskReason::InvalidOffer | TaskReason::ResourcesNotInOffer)
            );
        if not_its_fault {
            return Some(Duration::ZERO);
        }
        if let Phase::Running { since } = i.phase {
            if now.duration_since(since).as_secs_f64() >= service.spec.restart.min_uptime_secs {
                service.failures = 0;
            }
        }
        let delay = service.failed(now);
        let why = format!("{} ended {}: {}", i.task_id, status.state, status.message);
        self.new_version_failed(&i.service, &i.fingerprint, &why);
        Some(delay)
    }
}
