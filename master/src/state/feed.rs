//! What the master's core tells whoever watches it, besides its peers: one feed of change
//! events and a running summary of the cluster. The web UI streams the events, the front panel
//! draws the summary, metrics read the update latency; the core knows none of them.
//!
//! Publishing never waits. Events go into a bounded `tokio::sync::broadcast`: a subscriber that
//! falls behind loses the oldest ones and learns how many it missed (the web UI then refetches
//! the state). The summary sits in a `tokio::sync::watch` that holds only the newest value, and
//! it is built from agents and jobs alone (never from every task), at most every
//! [`SUMMARY_EVERY`] and only while someone watches it, so a panel costs the state task next to
//! nothing however many tasks run.

use bramble_proto::messages::{JobProgress, JobSummary, TaskSummary};
use bramble_proto::{AgentId, FrameworkId, Resources};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Events buffered per subscriber before a slow one misses some.
const EVENT_BUFFER: usize = 1024;
/// How often at most the summary is rebuilt for its watchers.
pub const SUMMARY_EVERY: Duration = Duration::from_millis(250);

/// One change in the cluster. Serialized as JSON with a `type` tag (the web UI's SSE event
/// name is that tag).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    AgentRegistered {
        agent_id: AgentId,
        hostname: String,
        returning: bool,
    },
    AgentDisconnected {
        agent_id: AgentId,
    },
    AgentRemoved {
        agent_id: AgentId,
        reason: String,
    },
    /// The agent was marked unhealthy (no offers, `unhealthy` says why) or is offered again.
    AgentHealth {
        agent_id: AgentId,
        unhealthy: Option<String>,
    },
    /// An operator drained the agent (no offers until undrained) or undrained it.
    AgentDraining {
        agent_id: AgentId,
        draining: bool,
    },
    FrameworkSubscribed {
        framework_id: FrameworkId,
        name: String,
    },
    FrameworkDisconnected {
        framework_id: FrameworkId,
    },
    FrameworkRemoved {
        framework_id: FrameworkId,
        reason: String,
    },
    /// A task was launched or changed state (the summary is the task as it is now).
    Task(TaskSummary),
    Progress {
        framework_id: FrameworkId,
        progress: JobProgress,
    },
}

/// The cluster at a glance: each agent's load and each job's progress, no tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSummary {
    /// Sorted by hostname, then id.
    pub agents: Vec<AgentLoad>,
    /// Sorted by framework id.
    pub jobs: Vec<JobSummary>,
}

/// One agent's resources and how much of them frameworks hold.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLoad {
    pub id: AgentId,
    pub hostname: String,
    pub connected: bool,
    pub total: Resources,
    pub allocated: Resources,
    /// Marked unhealthy: no offers for now.
    pub unhealthy: bool,
}

/// The feed: the core publishes into it, the edges subscribe. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    events: broadcast::Sender<ClusterEvent>,
    summary: watch::Sender<ClusterSummary>,
    /// The service framework's services (`services.rs`), replaced when they change.
    services: watch::Sender<std::sync::Arc<super::services::ServicesView>>,
    update_latency: Histogram,
    /// How long each allocation pass took (the allocator and the offers it became).
    allocation_cycle: Histogram,
    /// How often things happen (`counters.rs`).
    counters: super::counters::Counters,
}

/// The allocation-cycle buckets: 50 µs growing by 1.25 to ~1.1 s, fine enough that a p99
/// read off them (`bench/scale.sh` does) is within 25% of the truth.
fn allocation_cycle_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 1.25, 46)
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            events,
            summary: watch::Sender::new(ClusterSummary::default()),
            services: watch::Sender::new(Default::default()),
            // 1 ms .. ~16 s
            update_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            allocation_cycle: Histogram::new(allocation_cycle_buckets()),
            counters: super::counters::Counters::default(),
        }
    }

    /// Publishes `event` to whoever listens; costs nothing when nobody does.
    pub fn emit(&self, event: impl FnOnce() -> ClusterEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
        }
    }

    /// Whether anyone watches the summary (else it is not worth building).
    pub fn summary_watched(&self) -> bool {
        self.summary.receiver_count() > 0
    }

    /// Replaces the summary, waking its watchers only if it changed.
    pub fn publish_summary(&self, summary: ClusterSummary) {
        self.summary.send_if_modified(|current| {
            let changed = *current != summary;
            if changed {
                *current = summary;
            }
            changed
        });
    }

    /// Records how long an agent's status update took from being produced (its `timestamp`,
    /// the agent's clock) to being forwarded by the master. Clock skew can make it negative;
    /// that is clamped to zero.
    pub fn observe_update_latency(&self, produced_at: f64) {
        let latency = (bramble_proto::unix_now() - produced_at).max(0.0);
        self.update_latency.observe(latency);
    }

    /// Every change event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Replaces the services' view, waking its watchers only if it changed.
    pub fn publish_services(&self, view: super::services::ServicesView) {
        self.services.send_if_modified(|current| {
            let changed = **current != view;
            if changed {
                *current = std::sync::Arc::new(view);
            }
            changed
        });
    }

    /// Whether the services' view is empty (nothing to publish over it).
    pub fn services_empty(&self) -> bool {
        self.services.borrow().services.is_empty()
    }

    /// The services as last published.
    pub fn services(&self) -> std::sync::Arc<super::services::ServicesView> {
        self.services.borrow().clone()
    }

    /// The services, and a way to wait for their next change (the mDNS adverts watch it).
    pub fn watch_services(&self) -> watch::Receiver<std::sync::Arc<super::services::ServicesView>> {
        self.services.subscribe()
    }

    /// The newest summary, and a way to wait for the next one.
    pub fn watch_summary(&self) -> watch::Receiver<ClusterSummary> {
        self.summary.subscribe()
    }

    pub fn update_latency(&self) -> Histogram {
        self.update_latency.clone()
    }

    /// Records one allocation pass's duration.
    pub fn observe_allocation_cycle(&self, took: std::time::Duration) {
        self.allocation_cycle.observe(took.as_secs_f64());
    }

    /// The event counters, shared with whoever exposes them.
    pub fn counters(&self) -> &super::counters::Counters {
        &self.counters
    }

    pub fn allocation_cycle(&self) -> Histogram {
        self.allocation_cycle.clone()
    }

    /// How many subscribe to the change events.
    pub fn subscribers(&self) -> usize {
        self.events.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_built_only_when_someone_listens() {
        let feed = Feed::new();
        feed.emit(|| unreachable!("nobody subscribed, so the event is never built"));
        let mut rx = feed.subscribe();
        feed.emit(|| ClusterEvent::AgentDisconnected {
            agent_id: AgentId("a1".into()),
        });
        assert!(matches!(
            rx.try_recv(),
            Ok(ClusterEvent::AgentDisconnected { .. })
        ));
    }

    #[test]
    fn an_unchanged_summary_does_not_wake_its_watchers() {
        let feed = Feed::new();
        let mut rx = feed.watch_summary();
        assert!(feed.summary_watched());
        feed.publish_summary(ClusterSummary::default());
        assert!(!rx.has_changed().expect("feed alive"));
        let busy = ClusterSummary {
            agents: vec![AgentLoad {
                id: AgentId("a1".into()),
                hostname: "pi-1".into(),
                connected: true,
                total: Resources::new(4.0, 2048),
                allocated: Resources::new(1.0, 256),
                unhealthy: false,
            }],
            jobs: Vec::new(),
        };
        feed.publish_summary(busy.clone());
        assert!(rx.has_changed().expect("feed alive"));
        assert_eq!(*rx.borrow_and_update(), busy);
    }

    #[test]
    fn the_json_type_tag_names_each_event() {
        let json = serde_json::to_value(ClusterEvent::FrameworkRemoved {
            framework_id: FrameworkId("fw1".into()),
            reason: "teardown".into(),
        })
        .expect("serializes");
        assert_eq!(json["type"], "framework_removed");
    }
}
