//! Pictures of the cluster: [`Master::snapshot`], everything operators and the web UI see
//! (every task included), and [`Master::summary`], the cheap view published on the feed for
//! the front panel (agents' loads and jobs, no tasks), rebuilt at most every
//! `feed::SUMMARY_EVERY` and only while watched.

use super::agents::AgentEntry;
use super::feed::{AgentLoad, ClusterSummary};
use super::offers::OfferEntry;
use super::tasks::task_summary;
use super::{feed, Master};
use bramble_proto::messages::{
    AgentSummary, ClusterState, ExecutorSummary, FrameworkSummary, JobSummary, OfferSummary,
};
use bramble_proto::{AgentId, OfferId, Resources};
use std::collections::BTreeMap;
use std::time::Instant;

impl Master {
    /// Rebuilds the summary for its watchers, if anyone watches and it is time.
    pub(super) fn publish_summary(&mut self, now: Instant) {
        if now < self.next_summary || !self.feed.summary_watched() {
            return;
        }
        self.next_summary = now + feed::SUMMARY_EVERY;
        self.feed.publish_summary(self.summary());
    }

    /// Agents' loads and jobs' progress: what the front panel draws, without the tasks.
    pub fn summary(&self) -> ClusterSummary {
        let mut agents: Vec<AgentLoad> = self
            .agents
            .iter()
            .map(|(id, a)| AgentLoad {
                id: id.clone(),
                hostname: a.hostname.clone(),
                connected: a.conn.is_some(),
                total: a.total.clone(),
                allocated: self.allocated_on(id, &a.total),
                unhealthy: self.unhealthy_reason(id).is_some(),
            })
            .collect();
        agents.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        ClusterSummary {
            agents,
            jobs: self.jobs(),
        }
    }

    /// What frameworks hold on an agent with `total` resources.
    pub(super) fn allocated_on(&self, id: &AgentId, total: &Resources) -> Resources {
        let free = self.allocator.agent_free(id);
        total.saturating_sub(free.as_ref().unwrap_or(total))
    }

    fn jobs(&self) -> Vec<JobSummary> {
        let mut jobs: Vec<JobSummary> = self
            .progress
            .iter()
            .map(|(id, p)| JobSummary {
                framework_id: id.clone(),
                framework_name: self
                    .frameworks
                    .get(id)
                    .map(|f| f.info.name.clone())
                    .unwrap_or_default(),
                progress: p.clone(),
            })
            .collect();
        jobs.sort_by(|a, b| a.framework_id.cmp(&b.framework_id));
        jobs
    }

    /// One agent as operators see it.
    pub(super) fn agent_summary(&self, id: &AgentId, a: &AgentEntry) -> AgentSummary {
        let mut executors: Vec<ExecutorSummary> = a
            .executors
            .iter()
            .map(|((fw, ex), r)| ExecutorSummary {
                framework_id: fw.clone(),
                executor_id: ex.clone(),
                resources: r.clone(),
            })
            .collect();
        executors.sort_by(|a, b| {
            (&a.framework_id, &a.executor_id).cmp(&(&b.framework_id, &b.executor_id))
        });
        AgentSummary {
            id: id.clone(),
            hostname: a.hostname.clone(),
            address: a.address.to_string(),
            connected: a.conn.is_some(),
            total: a.total.clone(),
            allocated: self.allocated_on(id, &a.total),
            attributes: a.attributes.clone(),
            last_heartbeat: bramble_proto::unix_now() - a.last_seen.elapsed().as_secs_f64(),
            unhealthy: self.unhealthy_reason(id),
            executors,
            draining: self.draining.contains(id),
        }
    }

    pub(super) fn offer_summary(&self, id: &OfferId, o: &OfferEntry) -> OfferSummary {
        OfferSummary {
            id: id.clone(),
            framework_id: o.framework_id.clone(),
            agent_id: o.agent_id.clone(),
            resources: o.resources.clone(),
        }
    }

    /// Everything operators and the web UI see, every agent, task and offer included.
    pub fn snapshot(&self) -> ClusterState {
        let mut state = self.head();
        state.agents = self
            .agents
            .iter()
            .map(|(id, a)| self.agent_summary(id, a))
            .collect();
        state
            .agents
            .sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        state.tasks = self
            .frameworks
            .iter()
            .flat_map(|(fid, f)| {
                f.tasks
                    .iter()
                    .map(move |(tid, t)| task_summary(fid, tid, t))
            })
            .collect();
        state
            .tasks
            .sort_by(|a, b| a.framework_id.cmp(&b.framework_id).then(a.id.cmp(&b.id)));
        state.offers = self
            .offers
            .iter()
            .map(|(id, o)| self.offer_summary(id, o))
            .collect();
        state.offers.sort_by(|a, b| a.id.cmp(&b.id));
        state
    }

    /// The cluster without its agents, live tasks and offers (the parts that grow with its
    /// size): frameworks, jobs and recently completed tasks, for the first page of a paged
    /// listing (`paging.rs`) and as the base of [`Master::snapshot`].
    pub(super) fn head(&self) -> ClusterState {
        let mut frameworks: Vec<FrameworkSummary> = self
            .frameworks
            .iter()
            .map(|(id, f)| FrameworkSummary {
                id: id.clone(),
                name: f.info.name.clone(),
                role: f.info.role.clone(),
                connected: f.conn.is_some(),
                allocated: self.allocator.framework_allocation(id),
                tasks_by_state: f
                    .tasks
                    .values()
                    .map(|t| t.state)
                    .chain(
                        self.completed
                            .iter()
                            .filter(|t| &t.framework_id == id && !f.tasks.contains_key(&t.id))
                            .map(|t| t.state),
                    )
                    .fold(BTreeMap::new(), |mut m, s| {
                        *m.entry(s).or_insert(0) += 1;
                        m
                    }),
                api: f.info.api,
                user: f.info.user.clone(),
                principal: f.info.principal.clone(),
                webui_url: f.info.webui_url.clone(),
                failover_timeout_secs: f.info.failover_timeout_secs,
            })
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        ClusterState {
            cluster_id: self.cluster_id.clone(),
            agents: Vec::new(),
            frameworks,
            tasks: Vec::new(),
            jobs: self.jobs(),
            offers_outstanding: self.offers.len() as u64,
            completed_tasks: self
                .completed
                .iter()
                .filter(|t| {
                    self.frameworks
                        .get(&t.framework_id)
                        .is_none_or(|f| !f.tasks.contains_key(&t.id))
                })
                .cloned()
                .collect(),
            offers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use bramble_proto::Resources;
    use std::time::{Duration, Instant};

    #[test]
    fn the_summary_shows_what_frameworks_hold_on_each_agent() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        let offer = offers(&drain(&mut fw)).remove(0);
        // While offered, the whole agent counts as allocated.
        assert_eq!(m.summary().agents[0].allocated, Resources::new(2.0, 1024));
        accept(&mut m, &offer, vec![task_info("t1")], now);
        let summary = m.summary();
        assert_eq!(summary.agents.len(), 1);
        let a1 = &summary.agents[0];
        assert_eq!((a1.hostname.as_str(), a1.connected), ("a1", true));
        assert_eq!(a1.total, Resources::new(2.0, 1024));
        assert_eq!(a1.allocated, task_info("t1").resources);
        assert_eq!(m.snapshot().agents[0].allocated, a1.allocated);
    }

    #[test]
    fn the_summary_is_published_while_watched_and_at_most_every_interval() {
        let now = Instant::now();
        let mut m = master(now);
        let feed = m.feed();
        let mut watcher = feed.watch_summary();
        let _agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        settle(&mut m, now);
        assert!(watcher.has_changed().expect("feed alive"));
        assert_eq!(watcher.borrow_and_update().agents.len(), 1);
        // Another agent within the interval waits for the next publication.
        let _other = connect_agent(&mut m, 3, now);
        register(&mut m, 3, "a2", Vec::new(), now);
        settle(&mut m, now);
        assert!(!watcher.has_changed().expect("feed alive"));
        m.tick(now + Duration::from_millis(300));
        assert!(watcher.has_changed().expect("feed alive"));
        assert_eq!(watcher.borrow_and_update().agents.len(), 2);
    }
}
