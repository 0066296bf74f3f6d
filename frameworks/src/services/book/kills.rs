//! What to kill: instances of removed services, of old versions or on draining agents
//! (keeping `min_healthy`), and those above the count.

use super::instances::{Instance, Phase};
use super::Book;
use bramble_proto::TaskId;

impl Book {
    /// The instances to kill now (each returned once until it ends or `forget_kills`): those
    /// of a removed service or another fingerprint, and those above the count.
    pub fn kills(&mut self) -> Vec<TaskId> {
        let mut doomed: Vec<TaskId> = Vec::new();
        let by_service = |book: &Book, name: &str| -> Vec<Instance> {
            book.instances
                .values()
                .filter(|i| i.service == name && !i.killing)
                .cloned()
                .collect()
        };
        let names: Vec<String> = {
            let mut n: Vec<String> = self.instances.values().map(|i| i.service.clone()).collect();
            n.sort();
            n.dedup();
            n
        };
        for name in names {
            let live = by_service(self, &name);
            let Some(service) = self.services.get(&name) else {
                doomed.extend(live.into_iter().map(|i| i.task_id));
                continue;
            };
            let healthy_total = live.iter().filter(|i| self.healthy(i)).count();
            let (mut current, mut outdated): (Vec<Instance>, Vec<Instance>) = live
                .into_iter()
                .partition(|i| !self.leaving(i, &service.fingerprint));
            // Old instances (and those on draining agents) go unhealthy first, then oldest
            // first, and a healthy one only while `min_healthy` stay healthy without it: its
            // replacement elsewhere is started first and counted once healthy.
            let min_healthy = service
                .spec
                .rollout
                .min_healthy_count(service.spec.instances) as usize;
            outdated.sort_by_key(|i| (self.healthy(i), i.launched_at));
            let mut healthy_left = healthy_total;
            for i in outdated {
                if !self.healthy(&i) {
                    doomed.push(i.task_id);
                } else if healthy_left > min_healthy {
                    healthy_left -= 1;
                    doomed.push(i.task_id);
                }
            }
            let keep = service.spec.instances as usize;
            if current.len() > keep {
                // Keep the running ones, oldest first: kill starting ones, then the newest.
                current.sort_by_key(|i| {
                    (
                        matches!(i.phase, Phase::Running { .. }),
                        std::cmp::Reverse(i.launched_at),
                    )
                });
                let excess = current.len() - keep;
                doomed.extend(current.into_iter().take(excess).map(|i| i.task_id));
            }
        }
        for id in &doomed {
            if let Some(i) = self.instances.get_mut(id) {
                i.killing = true;
            }
        }
        self.refresh_rollouts();
        doomed
    }
}
