//! Counters of what happened since this master started, for `/metrics`: tasks launched and
//! how they ended (by framework), offers made, declined and rescinded, status updates
//! received, agents registering and being removed, frameworks subscribing and being removed.
//!
//! The gauges in `http/metrics.rs` say how things are; these say how often things happen, so
//! a scrape series shows rates (failures per minute, agents flapping) that no snapshot can.
//! The state task bumps them (atomics, no locks, nothing allocated once a label set exists);
//! the HTTP side registers the same handles at scrape time. They live in the [`super::feed`]
//! like the histograms. In memory only: a restarted master starts from zero, as Prometheus
//! counters may.
//!
//! Tasks, offers and framework events are labelled by framework id: a Pi cluster runs tens of
//! frameworks, not millions, and "which framework's tasks fail", "which one declines
//! everything", "which one keeps reconnecting" are the questions an operator asks.

use bramble_proto::{FrameworkId, TaskState};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An agent's registration or removal, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEvent {
    Registered,
    Reregistered,
    Removed,
}

/// A framework's subscription or removal, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkEvent {
    /// A new framework (a new id).
    Subscribed,
    /// A known framework subscribed again under its id (a reconnect or a failover).
    Resubscribed,
    Removed,
}

/// An offer's fate, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferEvent {
    Made,
    Declined,
    Rescinded,
}

/// The counters; cheap to clone (every clone counts into the same atomics).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    tasks: Family<Labels, Counter>,
    offers: Family<Labels, Counter>,
    agents: Family<Labels, Counter>,
    frameworks: Family<Labels, Counter>,
    status_updates: Counter,
}

impl Counters {
    /// `n` tasks of `fw` sent to an agent.
    pub fn tasks_launched(&self, fw: &FrameworkId, n: usize) {
        self.task_event(fw, "launched").inc_by(n as u64);
    }

    /// A task of `fw` reached terminal state `state` (finished, failed, killed, lost, error).
    pub fn task_ended(&self, fw: &FrameworkId, state: TaskState) {
        let event = state
            .name()
            .trim_start_matches("TASK_")
            .to_ascii_lowercase();
        self.task_event(fw, &event).inc();
    }

    fn task_event(&self, fw: &FrameworkId, event: &str) -> Counter {
        self.tasks
            .get_or_create(&labels(&[("framework", &fw.0), ("event", event)]))
            .clone()
    }

    /// `n` offers to `fw` made, declined by it, or rescinded from it.
    pub fn offers(&self, fw: &FrameworkId, event: OfferEvent, n: usize) {
        let event = match event {
            OfferEvent::Made => "made",
            OfferEvent::Declined => "declined",
            OfferEvent::Rescinded => "rescinded",
        };
        self.offers
            .get_or_create(&labels(&[("framework", &fw.0), ("event", event)]))
            .inc_by(n as u64);
    }

    pub fn agent(&self, event: AgentEvent) {
        let event = match event {
            AgentEvent::Registered => "registered",
            AgentEvent::Reregistered => "reregistered",
            AgentEvent::Removed => "removed",
        };
        self.agents
            .get_or_create(&labels(&[("event", event)]))
            .inc();
    }

    pub fn framework(&self, fw: &FrameworkId, event: FrameworkEvent) {
        let event = match event {
            FrameworkEvent::Subscribed => "subscribed",
            FrameworkEvent::Resubscribed => "resubscribed",
            FrameworkEvent::Removed => "removed",
        };
        self.frameworks
            .get_or_create(&labels(&[("framework", &fw.0), ("event", event)]))
            .inc();
    }

    /// One status update received from an agent.
    pub fn status_update(&self) {
        self.status_updates.inc();
    }

    /// Adds every counter to `registry` (names get `_total` in the exposition).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "task_events",
            "Tasks launched, and tasks ended by terminal state, per framework",
            self.tasks.clone(),
        );
        registry.register(
            "offer_events",
            "Offers made to each framework, declined by it, and rescinded from it",
            self.offers.clone(),
        );
        registry.register(
            "agent_events",
            "Agents registered (new), re-registered, and removed",
            self.agents.clone(),
        );
        registry.register(
            "framework_events",
            "Frameworks subscribed (new id), re-subscribed (reconnect or failover), and removed",
            self.frameworks.clone(),
        );
        registry.register(
            "status_updates",
            "Task status updates received from agents",
            self.status_updates.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn exposition(c: &Counters) -> String {
        let mut registry = Registry::with_prefix("bramble");
        c.register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        out
    }

    #[test]
    fn counts_appear_in_prometheus_text_by_label() {
        let c = Counters::default();
        let fw = FrameworkId("pi-1".into());
        c.tasks_launched(&fw, 3);
        c.task_ended(&fw, TaskState::Finished);
        c.task_ended(&fw, TaskState::Finished);
        c.task_ended(&fw, TaskState::Lost);
        c.offers(&fw, OfferEvent::Made, 2);
        c.offers(&fw, OfferEvent::Declined, 1);
        c.offers(&fw, OfferEvent::Rescinded, 1);
        c.agent(AgentEvent::Registered);
        c.agent(AgentEvent::Removed);
        c.framework(&fw, FrameworkEvent::Subscribed);
        c.framework(&fw, FrameworkEvent::Resubscribed);
        c.framework(&fw, FrameworkEvent::Removed);
        c.status_update();
        let text = exposition(&c);
        for line in [
            "# TYPE bramble_task_events counter",
            r#"bramble_task_events_total{framework="pi-1",event="launched"} 3"#,
            r#"bramble_task_events_total{framework="pi-1",event="finished"} 2"#,
            r#"bramble_task_events_total{framework="pi-1",event="lost"} 1"#,
            "# TYPE bramble_offer_events counter",
            r#"bramble_offer_events_total{framework="pi-1",event="made"} 2"#,
            r#"bramble_offer_events_total{framework="pi-1",event="declined"} 1"#,
            r#"bramble_offer_events_total{framework="pi-1",event="rescinded"} 1"#,
            r#"bramble_agent_events_total{event="registered"} 1"#,
            r#"bramble_agent_events_total{event="removed"} 1"#,
            "# TYPE bramble_framework_events counter",
            r#"bramble_framework_events_total{framework="pi-1",event="subscribed"} 1"#,
            r#"bramble_framework_events_total{framework="pi-1",event="resubscribed"} 1"#,
            r#"bramble_framework_events_total{framework="pi-1",event="removed"} 1"#,
            "bramble_status_updates_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn clones_count_into_the_same_counters() {
        let c = Counters::default();
        c.clone().status_update();
        c.status_update();
        assert!(exposition(&c).contains("bramble_status_updates_total 2"));
    }
}
