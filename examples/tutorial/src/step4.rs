//! Step 4 — leader election: run the same scheduler on several machines and let the master
//! pick one. Step 2's scheduler needs no change for it: every instance *campaigns* instead of
//! subscribing ([`SchedulerConfig::leader_election`]); the master makes one the active
//! scheduler and keeps the others connected as standbys. When the active one goes away
//! (crash, power cut, `Ctrl-C`), the first standby is subscribed in its place at once, under
//! the same framework id: it gets `registered`, then the stored state (step 2), adopts the
//! copies the store lists and reconciles them. Nothing is killed on the way.
//!
//! What this module adds is only what a standby shows: [`Elected`] wraps any scheduler and
//! remembers who leads while this instance waits.

use bramble_sdk::{
    async_trait, FrameworkId, Offer, Scheduler, SchedulerConfig, SchedulerDriver, StateEntry,
    TaskStatus,
};

/// `config` made to campaign: several processes started with it share one framework.
pub fn campaigning(mut config: SchedulerConfig) -> SchedulerConfig {
    config.leader_election = true;
    config
}

/// A scheduler that remembers whether it leads: `standing_by` holds the active instance's
/// address while this one waits, `None` once it leads.
pub struct Elected<S> {
    pub inner: S,
    pub standing_by: Option<String>,
}

impl<S> Elected<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            standing_by: None,
        }
    }
}

#[async_trait]
impl<S: Scheduler> Scheduler for Elected<S> {
    async fn standing_by(&mut self, _driver: &SchedulerDriver, _fw: &FrameworkId, leader: &str) {
        self.standing_by = Some(leader.to_string());
    }

    async fn registered(&mut self, driver: &SchedulerDriver, fw: &FrameworkId, again: bool) {
        self.standing_by = None;
        self.inner.registered(driver, fw, again).await;
    }

    async fn state_loaded(&mut self, driver: &SchedulerDriver, entries: Vec<StateEntry>) {
        self.inner.state_loaded(driver, entries).await;
    }

    async fn state_changed(&mut self, driver: &SchedulerDriver, key: &str, e: Option<&StateEntry>) {
        self.inner.state_changed(driver, key, e).await;
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        self.inner.resource_offers(driver, offers).await;
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        self.inner.status_update(driver, status).await;
    }

    async fn disconnected(&mut self, driver: &SchedulerDriver) {
        self.inner.disconnected(driver).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step2;
    use bramble_sdk::testing::SchedulerTest;

    #[tokio::test]
    async fn a_standby_shows_who_leads_until_it_is_registered() {
        let mut t = SchedulerTest::new(Elected::new(step2::HelloScheduler::new(1)));
        let driver = t.driver().clone();
        t.scheduler_mut()
            .standing_by(&driver, &"fw-1".into(), "10.0.0.7:40000")
            .await;
        assert_eq!(t.scheduler().standing_by.as_deref(), Some("10.0.0.7:40000"));
        t.register("fw-1").await;
        assert_eq!(t.scheduler().standing_by, None);
    }
}
