//! A service under the SDK's test kit, for this module's tests and `hello`'s and `http`'s:
//! the scheduler, the handle that stops it, and the events it reported.

use super::scheduler::StopHandle;
use super::*;
use bramble_sdk::testing::SchedulerTest;
use std::sync::{Arc, Mutex};

pub(crate) struct Service {
    pub(crate) t: SchedulerTest<ServiceScheduler>,
    stop: StopHandle,
    events: Arc<Mutex<Vec<ServiceEvent>>>,
}

/// `spec` registered as framework `fw-test`.
pub(crate) async fn service(spec: ServiceSpec) -> Service {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let (scheduler, stop) = ServiceScheduler::new(spec, move |e: &ServiceEvent| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e.clone())
    });
    let mut t = SchedulerTest::new(scheduler);
    t.register("fw-test").await;
    Service { t, stop, events }
}

impl Service {
    /// What the caller's `until` resolving does.
    pub(crate) fn stop(&mut self) {
        self.stop.stop(self.t.driver());
    }

    pub(crate) fn events(&self) -> Vec<ServiceEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn outcome(&self) -> &ServiceOutcome {
        &self.t.scheduler().outcome
    }
}
