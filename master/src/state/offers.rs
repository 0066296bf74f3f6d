//! Offers: one allocation pass turns the allocator's decisions into offers per framework;
//! declined or unused resources go back behind a refuse filter; offers expire, and are
//! rescinded when their agent or framework goes away. Which framework gets what is the
//! allocator's policy; this module keeps the offers outstanding.

use super::counters::OfferEvent;
use super::Master;
use bramble_proto::messages::{Filters, MasterEvent, Offer};
use bramble_proto::{AgentId, FrameworkId, OfferId, Resources};
use std::collections::HashMap;
use std::time::Instant;
use tracing::debug;

/// An offer made and not yet answered: its resources count as allocated to the framework.
pub(super) struct OfferEntry {
    pub(super) framework_id: FrameworkId,
    pub(super) agent_id: AgentId,
    pub(super) resources: Resources,
    pub(super) expires: Instant,
}

impl Master {
    pub(super) fn allocate(&mut self, now: Instant) {
        // Wall time for the metric only (`now` may be a test's clock): the pass itself reads
        // no clock.
        let started = Instant::now();
        self.allocation_due = false;
        self.next_allocation = now + self.timeouts.allocation_interval;
        let mut by_framework: HashMap<FrameworkId, Vec<Offer>> = HashMap::new();
        for a in self.allocator.allocate(now) {
            let Some(agent) = self.agents.get(&a.agent_id) else {
                self.allocator
                    .recover(&a.agent_id, &a.framework_id, &a.resources);
                continue;
            };
            let id = OfferId(bramble_proto::ids::fresh("offer"));
            let executor_ids = agent
                .executors
                .keys()
                .filter(|(f, _)| f == &a.framework_id)
                .map(|(_, e)| e.clone())
                .collect();
            let offer = Offer {
                id: id.clone(),
                framework_id: a.framework_id.clone(),
                agent_id: a.agent_id.clone(),
                hostname: agent.hostname.clone(),
                resources: a.resources.clone(),
                attributes: agent.attributes.clone(),
                executor_ids,
            };
            self.offers.insert(
                id,
                OfferEntry {
                    framework_id: a.framework_id.clone(),
                    agent_id: a.agent_id.clone(),
                    resources: a.resources,
                    expires: now + self.timeouts.offer_timeout,
                },
            );
            by_framework.entry(a.framework_id).or_default().push(offer);
        }
        for (fw, offers) in by_framework {
            debug!(framework = %fw, count = offers.len(), "sending offers");
            self.feed
                .counters()
                .offers(&fw, OfferEvent::Made, offers.len());
            self.send_framework(&fw, MasterEvent::Offers(offers));
        }
        self.feed.observe_allocation_cycle(started.elapsed());
    }

    /// Declines one offer: its resources go back to the pool behind a refuse filter.
    pub(super) fn answer_offer(
        &mut self,
        fw: &FrameworkId,
        id: &OfferId,
        filters: Filters,
        now: Instant,
    ) {
        match self.offers.get(id) {
            Some(o) if &o.framework_id == fw => {}
            _ => return, // already gone (rescinded/expired) or not theirs: nothing to give back
        }
        if let Some(o) = self.offers.remove(id) {
            self.feed.counters().offers(fw, OfferEvent::Declined, 1);
            self.release_with_filter(fw, &o.agent_id, &o.resources, filters, now);
        }
    }

    pub(super) fn release_with_filter(
        &mut self,
        fw: &FrameworkId,
        agent: &AgentId,
        resources: &Resources,
        filters: Filters,
        now: Instant,
    ) {
        if resources.is_empty() {
            return;
        }
        self.allocator.recover(agent, fw, resources);
        let refuse_for = crate::allocator::refuse_duration(filters.refuse_seconds);
        if refuse_for.is_zero() {
            self.allocation_due = true;
        } else {
            self.allocator
                .add_refuse_filter(fw, agent, resources.clone(), now, refuse_for);
        }
    }

    pub(super) fn expire_offers(&mut self, now: Instant) {
        let expired: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            debug!(offer = %id, "offer timed out; rescinding");
            self.rescind(&id);
        }
    }

    fn rescind(&mut self, id: &OfferId) {
        if let Some(o) = self.offers.remove(id) {
            self.feed
                .counters()
                .offers(&o.framework_id, OfferEvent::Rescinded, 1);
            self.allocator
                .recover(&o.agent_id, &o.framework_id, &o.resources);
            self.send_framework(
                &o.framework_id,
                MasterEvent::Rescind {
                    offer_id: id.clone(),
                },
            );
            self.allocation_due = true;
        }
    }

    pub(super) fn rescind_agent_offers(&mut self, agent: &AgentId) {
        self.rescind_where(|o| &o.agent_id == agent);
    }

    pub(super) fn rescind_framework_offers(&mut self, fw: &FrameworkId) {
        self.rescind_where(|o| &o.framework_id == fw);
    }

    /// Rescinds every outstanding offer `which` picks.
    fn rescind_where(&mut self, which: impl Fn(&OfferEntry) -> bool) {
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, o)| which(o))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.rescind(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use bramble_proto::messages::{Filters, MasterEvent, SchedulerCall};
    use bramble_proto::Resources;
    use std::time::{Duration, Instant};

    #[test]
    fn a_registered_agent_is_offered_whole_to_a_subscribed_framework() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        let offered = offers(&drain(&mut fw));
        assert_eq!(offered.len(), 1, "{offered:?}");
        assert_eq!(offered[0].agent_id.as_str(), "a1");
        assert_eq!(offered[0].resources, Resources::new(2.0, 1024));
        assert_eq!(m.snapshot().offers_outstanding, 1);
    }

    #[test]
    fn a_declined_offer_is_not_made_again_while_its_filter_lasts() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        let offer = offers(&drain(&mut fw)).remove(0);
        let decline = SchedulerCall::Decline {
            offer_ids: vec![offer.id],
            filters: Filters {
                refuse_seconds: 1.0,
            },
        };
        call(&mut m, 2, decline, now);
        settle(&mut m, now);
        m.tick(now + Duration::from_millis(500));
        m.flush_outbox();
        assert!(offers(&drain(&mut fw)).is_empty());
        m.tick(now + Duration::from_millis(1500));
        m.flush_outbox();
        assert_eq!(offers(&drain(&mut fw)).len(), 1);
    }

    #[test]
    fn offers_on_an_agent_that_disconnects_are_rescinded() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        let offer = offers(&drain(&mut fw)).remove(0);
        disconnect(&mut m, 1, now);
        settle(&mut m, now);
        let events = drain(&mut fw);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, MasterEvent::Rescind { offer_id } if *offer_id == offer.id)),
            "{events:?}"
        );
        assert_eq!(m.snapshot().offers_outstanding, 0);
    }
}
