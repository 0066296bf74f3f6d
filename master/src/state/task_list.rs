//! Tasks by state, live and recently completed, a page at a time (`OperatorCall::GetTasks`,
//! `/api/v1/tasks?state=…`; the cursors are in [`bramble_proto::task_list`]). The live part
//! costs one pass over the tracked tasks' keys (a selection, as in `paging.rs`); the
//! completed part walks the bounded list of recently forgotten tasks from the cursor on.

use super::paging::{first_after, Budget};
use super::tasks::task_summary;
use super::Master;
use bramble_proto::codec::{payload_size, MAX_INPUT_BYTES};
use bramble_proto::messages::TaskSummary;
use bramble_proto::messages::{TaskCursor, TaskList, TasksQuery};
use bramble_proto::state_page::MAX_PAGE_ITEMS;

impl Master {
    /// A completed entry that is not also a tracked task (a task being killed with its
    /// framework is both for a moment): the live part lists those.
    fn only_completed(&self, t: &TaskSummary) -> bool {
        self.frameworks
            .get(&t.framework_id)
            .is_none_or(|f| !f.tasks.contains_key(&t.id))
    }

    /// Up to `q.limit` tasks (at least one) in `q.states` from `q.after` on: live ones by
    /// framework and task id, then completed ones oldest first.
    pub fn task_list(&self, q: &TasksQuery) -> TaskList {
        let limit = q.limit.clamp(1, MAX_PAGE_ITEMS) as usize;
        let live_total: usize = self
            .frameworks
            .values()
            .map(|f| f.tasks.values().filter(|t| q.wants(t.state)).count())
            .sum();
        let completed_total = self
            .completed
            .iter()
            .filter(|t| q.wants(t.state) && self.only_completed(t))
            .count();
        let mut page = TaskList {
            tasks: Vec::new(),
            next: None,
            total: (live_total + completed_total) as u64,
        };
        let fixed = payload_size(&page).unwrap_or(MAX_INPUT_BYTES);
        let mut budget = Budget {
            left: MAX_INPUT_BYTES.saturating_sub(fixed),
        };
        // The live part, unless the cursor is past it.
        let completed_from = match &q.after {
            Some(TaskCursor::Completed(seq)) => Some(*seq),
            live_after => {
                let after = match live_after {
                    Some(TaskCursor::Live(fw, task)) => Some((fw, task)),
                    _ => None,
                };
                let keys = self.frameworks.iter().flat_map(|(fid, f)| {
                    f.tasks
                        .iter()
                        .filter(|(_, t)| q.wants(t.state))
                        .map(move |(tid, _)| (fid, tid))
                });
                let (keys, more) = first_after(keys, after, limit);
                let mut last = after.map(|(f, t)| TaskCursor::Live(f.clone(), t.clone()));
                for (fid, tid) in keys {
                    let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid)) else {
                        continue;
                    };
                    let item = task_summary(fid, tid, t);
                    if !budget.take(&item, page.tasks.is_empty()) {
                        page.next = last;
                        return page;
                    }
                    last = Some(TaskCursor::Live(fid.clone(), tid.clone()));
                    page.tasks.push(item);
                }
                if more {
                    page.next = last;
                    return page;
                }
                None
            }
        };
        // The completed part: entry `i` has sequence number `completed_dropped + i`.
        let from = completed_from.unwrap_or(0);
        let first = from.saturating_sub(self.completed_dropped) as usize;
        for (i, t) in self.completed.iter().enumerate().skip(first) {
            if !q.wants(t.state) || !self.only_completed(t) {
                continue;
            }
            if page.tasks.len() >= limit || !budget.take(t, page.tasks.is_empty()) {
                page.next = Some(TaskCursor::Completed(self.completed_dropped + i as u64));
                return page;
            }
            page.tasks.push(t.clone());
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::RECENT_COMPLETED;
    use bramble_proto::messages::TaskSummary;
    use bramble_proto::messages::{TaskCursor, TasksQuery};
    use bramble_proto::{Resources, TaskState};
    use std::time::Instant;

    fn ended(i: usize, state: TaskState) -> TaskSummary {
        TaskSummary {
            id: format!("t{i}").into(),
            name: String::new(),
            framework_id: "fw".into(),
            agent_id: "a".into(),
            state,
            message: String::new(),
            resources: Resources::new(0.1, 1),
            reason: None,
            launched_at: 0.0,
            started_at: None,
            ended_at: None,
        }
    }

    fn query(states: &[TaskState], after: Option<TaskCursor>, limit: u32) -> TasksQuery {
        TasksQuery {
            states: states.to_vec(),
            after,
            limit,
        }
    }

    #[test]
    fn completed_tasks_page_in_order_and_a_dropped_cursor_resumes_at_the_oldest_left() {
        let now = Instant::now();
        let mut m = master(now);
        // Even ones finished, odd ones failed; three more than the list keeps.
        for i in 0..RECENT_COMPLETED + 3 {
            let state = if i % 2 == 0 {
                TaskState::Finished
            } else {
                TaskState::Failed
            };
            m.remember_completed(ended(i, state));
        }
        let finished = m.task_list(&query(&[TaskState::Finished], None, 2));
        let ids: Vec<&str> = finished.tasks.iter().map(|t| t.id.as_str()).collect();
        // t0..t2 were dropped: t4 and t6 are the oldest finished ones left.
        assert_eq!(ids, ["t4", "t6"]);
        assert_eq!(finished.total as usize, (RECENT_COMPLETED + 3) / 2 - 1);
        // The next page starts at t8 (sequence number 8).
        assert_eq!(finished.next, Some(TaskCursor::Completed(8)));
        let next = m.task_list(&query(&[TaskState::Finished], finished.next, 1));
        assert_eq!(next.tasks[0].id.as_str(), "t8");
        // A cursor already dropped from the list: the oldest one left.
        let dropped = m.task_list(&query(&[], Some(TaskCursor::Completed(0)), 1));
        assert_eq!(dropped.tasks[0].id.as_str(), "t3");
        // Every task, a thousand a page: the whole list once, then the end.
        let mut after = None;
        let mut seen = 0;
        loop {
            let page = m.task_list(&query(&[], after, 1000));
            seen += page.tasks.len();
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, RECENT_COMPLETED);
    }

    #[test]
    fn live_tasks_come_first_filtered_by_state() {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, _fw) = launched(&mut m, vec![task_info("live1"), task_info("live2")], now);
        m.remember_completed(ended(0, TaskState::Killed));
        let all = m.task_list(&query(&[], None, 1));
        assert_eq!(all.total, 3);
        assert!(matches!(all.next, Some(TaskCursor::Live(..))), "{all:?}");
        let rest = m.task_list(&query(&[], all.next, 10));
        let ids: Vec<&str> = rest.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["live2", "t0"]);
        assert_eq!(rest.next, None);
        let killed = m.task_list(&query(&[TaskState::Killed], None, 10));
        let ids: Vec<&str> = killed.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t0"]);
    }
}
