//! The cluster's state in pages and in numbers (`OperatorCall::GetStatePage`): what operators
//! and the web UI read once a cluster is too big for one `ClusterState` (over a frame at a
//! few thousand agents, and one long pause of the state task to build). A page costs one pass
//! over the keys of the part it lists (a selection, not a sort of everything) and builds only
//! the items it returns; the counts cost one pass over agents and tasks.

use super::tasks::task_summary;
use super::Master;
use bramble_proto::codec::{payload_size, MAX_INPUT_BYTES};
use bramble_proto::messages::{ClusterCounts, StateCursor, StatePage};
use bramble_proto::state_page::{MAX_PAGE_ITEMS, MAX_UNHEALTHY_LISTED};
use bramble_proto::Resources;
use serde::Serialize;

/// The `limit` smallest keys above `after`, in order, and whether more remain above them.
/// One pass and a selection: a page of a 50,000-key map costs no sort of all 50,000.
pub(crate) fn first_after<K: Ord + Copy>(
    keys: impl Iterator<Item = K>,
    after: Option<K>,
    limit: usize,
) -> (Vec<K>, bool) {
    let mut above: Vec<K> = keys.filter(|k| after.is_none_or(|a| *k > a)).collect();
    let more = above.len() > limit;
    if more {
        above.select_nth_unstable(limit);
        above.truncate(limit);
    }
    above.sort_unstable();
    (above, more)
}

/// What a page's items may add up to, so the reply fits a frame with its counts and head.
pub(super) struct Budget {
    pub(super) left: usize,
}

impl Budget {
    /// Takes `item`'s bytes if they fit, or if the page has nothing yet (a page always makes
    /// progress; any one item fits a frame, as it entered through an input limit).
    pub(super) fn take(&mut self, item: &impl Serialize, page_empty: bool) -> bool {
        // An item that cannot even be measured cannot be sent either: it ends the page.
        let Ok(size) = payload_size(item) else {
            return false;
        };
        if size > self.left && !page_empty {
            return false;
        }
        self.left = self.left.saturating_sub(size);
        true
    }
}

impl Master {
    /// The cluster in numbers.
    pub fn counts(&self) -> ClusterCounts {
        let mut c = ClusterCounts {
            agents: self.agents.len() as u64,
            frameworks: self.frameworks.len() as u64,
            offers_outstanding: self.offers.len() as u64,
            ..ClusterCounts::default()
        };
        for (id, a) in &self.agents {
            if a.conn.is_none() {
                continue;
            }
            c.agents_connected += 1;
            let no_ports = |r: &Resources| Resources {
                ports: Vec::new(),
                ..r.clone()
            };
            c.total.add(&no_ports(&a.total));
            c.allocated.add(&no_ports(&self.allocated_on(id, &a.total)));
            if let Some(why) = self.unhealthy_reason(id) {
                c.agents_unhealthy += 1;
                if c.unhealthy.len() < MAX_UNHEALTHY_LISTED {
                    c.unhealthy.push((id.clone(), a.hostname.clone(), why));
                }
            }
        }
        c.unhealthy.sort();
        c.agents_draining = self.draining.len() as u64;
        c.draining = self
            .draining
            .iter()
            .take(MAX_UNHEALTHY_LISTED)
            .map(|id| {
                let host = self.agents.get(id).map(|a| a.hostname.clone());
                (id.clone(), host.unwrap_or_else(|| "(not known now)".into()))
            })
            .collect();
        for f in self.frameworks.values() {
            c.frameworks_connected += u64::from(f.conn.is_some());
            for t in f.tasks.values() {
                *c.tasks_by_state.entry(t.state).or_insert(0) += 1;
            }
        }
        c
    }

    /// Up to `limit` items after `after` (agents, then live tasks, then offers); with no
    /// cursor, the first page, carrying the rest of the state as its head.
    pub fn state_page(&self, after: Option<StateCursor>, limit: u32) -> StatePage {
        let limit = limit.min(MAX_PAGE_ITEMS) as usize;
        let mut page = StatePage {
            counts: self.counts(),
            head: after.is_none().then(|| self.head()),
            agents: Vec::new(),
            tasks: Vec::new(),
            offers: Vec::new(),
            next: None,
        };
        let fixed = payload_size(&page).unwrap_or(MAX_INPUT_BYTES);
        let mut budget = Budget {
            left: MAX_INPUT_BYTES.saturating_sub(fixed),
        };
        let listed = |p: &StatePage| p.agents.len() + p.tasks.len() + p.offers.len();
        let mut cursor = after.unwrap_or(StateCursor::Agents(None));
        loop {
            let room = limit - listed(&page);
            match cursor {
                StateCursor::Agents(after) => {
                    let (ids, more) = first_after(self.agents.keys(), after.as_ref(), room);
                    let mut last = after.clone();
                    for id in ids {
                        let Some(a) = self.agents.get(id) else {
                            continue;
                        };
                        let item = self.agent_summary(id, a);
                        if !budget.take(&item, listed(&page) == 0) {
                            page.next = Some(StateCursor::Agents(last));
                            return page;
                        }
                        last = Some(id.clone());
                        page.agents.push(item);
                    }
                    if more {
                        page.next = Some(StateCursor::Agents(last));
                        return page;
                    }
                    cursor = StateCursor::Tasks(None);
                }
                StateCursor::Tasks(after) => {
                    let keys = self
                        .frameworks
                        .iter()
                        .flat_map(|(fid, f)| f.tasks.keys().map(move |tid| (fid, tid)));
                    let from = after.as_ref().map(|(f, t)| (f, t));
                    let (keys, more) = first_after(keys, from, room);
                    let mut last = after.clone();
                    for (fid, tid) in keys {
                        let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid))
                        else {
                            continue;
                        };
                        let item = task_summary(fid, tid, t);
                        if !budget.take(&item, listed(&page) == 0) {
                            page.next = Some(StateCursor::Tasks(last));
                            return page;
                        }
                        last = Some((fid.clone(), tid.clone()));
                        page.tasks.push(item);
                    }
                    if more {
                        page.next = Some(StateCursor::Tasks(last));
                        return page;
                    }
                    cursor = StateCursor::Offers(None);
                }
                StateCursor::Offers(after) => {
                    let (ids, more) = first_after(self.offers.keys(), after.as_ref(), room);
                    let mut last = after.clone();
                    for id in ids {
                        let Some(o) = self.offers.get(id) else {
                            continue;
                        };
                        let item = self.offer_summary(id, o);
                        if !budget.take(&item, listed(&page) == 0) {
                            page.next = Some(StateCursor::Offers(last));
                            return page;
                        }
                        last = Some(id.clone());
                        page.offers.push(item);
                    }
                    if more {
                        page.next = Some(StateCursor::Offers(last));
                    }
                    return page;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{first_after, Budget};
    use crate::state::testing::*;
    use crate::state::Master;
    use bramble_proto::messages::{ClusterState, StateCursor};
    use bramble_proto::rng::XorShift64Star;
    use bramble_proto::{AgentId, TaskState};
    use std::time::Instant;

    #[test]
    fn first_after_is_the_next_keys_in_order_whatever_their_arrangement() {
        let mut rng = XorShift64Star::new(17);
        for _ in 0..200 {
            let n = rng.below(60) as usize;
            let keys: Vec<u64> = (0..n).map(|_| rng.below(1000)).collect();
            let mut distinct = keys.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let after = (rng.below(3) > 0).then(|| rng.below(1000));
            let limit = rng.below(20) as usize;
            let expected: Vec<u64> = distinct
                .iter()
                .copied()
                .filter(|k| after.is_none_or(|a| *k > a))
                .collect();
            let (got, more) = first_after(distinct.iter().copied(), after, limit);
            assert_eq!(
                got,
                expected[..limit.min(expected.len())],
                "after {after:?}"
            );
            assert_eq!(more, expected.len() > limit);
        }
    }

    #[test]
    fn a_budget_stops_a_page_before_it_overflows_but_never_leaves_it_empty() {
        let mut budget = Budget { left: 10 };
        assert!(budget.take(&"this string is longer than ten bytes", true));
        assert_eq!(budget.left, 0);
        assert!(!budget.take(&"x", false), "nothing left");
        let mut budget = Budget { left: 10 };
        assert!(budget.take(&"four", false));
        assert!(!budget.take(&"and six more", false));
    }

    /// 25 agents (ids = hostnames, so the snapshot's order is the pages' too), two tasks on
    /// `a1`, and the offers the rest made.
    fn busy_master(now: Instant) -> Master {
        let mut m = master(now);
        let (_agent, _fw) = launched(&mut m, vec![task_info("t1"), task_info("t2")], now);
        for i in 0..24u64 {
            let _rx = join(&mut m, 100 + i, &format!("b{i:02}"), Vec::new(), now);
        }
        settle(&mut m, now);
        m
    }

    /// Walks every page of `m`'s state, `limit` items at a time.
    fn walk(m: &Master, limit: u32) -> (ClusterState, usize) {
        let first = m.state_page(None, limit);
        let mut state = first.head.clone().expect("the first page has the head");
        let mut next = first.next.clone();
        first.append_to(&mut state);
        let mut pages = 1;
        while let Some(after) = next {
            let page = m.state_page(Some(after), limit);
            assert!(page.head.is_none(), "only the first page has the head");
            let items = page.agents.len() + page.tasks.len() + page.offers.len();
            assert!(items <= limit as usize && (items > 0 || limit == 0));
            next = page.next.clone();
            page.append_to(&mut state);
            pages += 1;
            assert!(pages < 1000, "paging does not end");
        }
        (state, pages)
    }

    #[test]
    fn pages_list_every_agent_task_and_offer_once_and_in_order() {
        let now = Instant::now();
        let m = busy_master(now);
        let whole = m.snapshot();
        assert_eq!(whole.agents.len(), 25);
        assert_eq!(whole.tasks.len(), 2);
        assert!(!whole.offers.is_empty());
        for limit in [1, 2, 7, 25, 1000] {
            let (paged, pages) = walk(&m, limit);
            let items = 25 + 2 + whole.offers.len();
            assert_eq!(
                pages,
                items.div_ceil(limit as usize).max(1),
                "limit {limit}"
            );
            // Heartbeat ages are computed at the moment each page is built.
            let unaged = |s: &ClusterState| {
                let mut agents = s.agents.clone();
                agents.iter_mut().for_each(|a| a.last_heartbeat = 0.0);
                agents
            };
            assert_eq!(unaged(&paged), unaged(&whole), "limit {limit}");
            assert_eq!(paged.tasks, whole.tasks, "limit {limit}");
            assert_eq!(paged.offers, whole.offers, "limit {limit}");
            assert_eq!(paged.frameworks, whole.frameworks);
            assert_eq!(paged.cluster_id, whole.cluster_id);
        }
    }

    #[test]
    fn a_page_of_nothing_is_the_head_and_the_counts() {
        let now = Instant::now();
        let m = busy_master(now);
        let page = m.state_page(None, 0);
        assert!(page.agents.is_empty() && page.tasks.is_empty() && page.offers.is_empty());
        assert_eq!(page.next, Some(StateCursor::Agents(None)));
        assert_eq!(page.head.map(|h| h.frameworks.len()), Some(1));
        let c = page.counts;
        assert_eq!((c.agents, c.agents_connected), (25, 25));
        assert_eq!((c.frameworks, c.frameworks_connected), (1, 1));
        assert_eq!(c.tasks(), 2);
        assert_eq!(c.tasks_by_state.get(&TaskState::Staging), Some(&2));
        assert_eq!(c.offers_outstanding, m.snapshot().offers.len() as u64);
        assert_eq!(c.total.cpus(), 50.0);
        // The two tasks (0.5 CPU each) and every outstanding offer are held.
        let offered: f64 = m.snapshot().offers.iter().map(|o| o.resources.cpus()).sum();
        assert!((c.allocated.cpus() - (1.0 + offered)).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn a_cursor_past_a_part_starts_the_next_one() {
        let now = Instant::now();
        let m = busy_master(now);
        // After the last agent: the tasks come next.
        let page = m.state_page(Some(StateCursor::Agents(Some(AgentId("b23".into())))), 2);
        assert!(page.agents.is_empty());
        let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1", "t2"]);
        // Those were the last tasks: the offers come next.
        assert_eq!(page.next, Some(StateCursor::Offers(None)));
        // Paging the tasks alone from their start.
        let page = m.state_page(Some(StateCursor::Tasks(None)), 1);
        assert_eq!(page.tasks.len(), 1);
        assert_eq!(page.tasks[0].id.as_str(), "t1");
    }
}
