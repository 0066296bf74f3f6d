//! What the frameworks' unit tests share: offers as the master would make them.

use bramble_sdk::{AgentId, FrameworkId, Offer, OfferId, Resources};

/// An offer of `resources` from agent `a1` on host `pi-a`, with no executors running there.
pub fn offer(resources: Resources) -> Offer {
    Offer {
        id: OfferId::from("o1"),
        framework_id: FrameworkId::from("f"),
        agent_id: AgentId::from("a1"),
        hostname: "pi-a".into(),
        resources,
        attributes: Default::default(),
        executor_ids: Vec::new(),
    }
}
