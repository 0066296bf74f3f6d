//! Tasks listed by state, the live ones and those the master remembers after they ended
//! (`OperatorCall::GetTasks`, behind `/api/v1/tasks?state=…`): a page lists live tasks by
//! framework and task id, then the recently completed ones oldest first, each part after a
//! cursor. A completed task's cursor is its sequence number in the master's completed list
//! (counted since the master started), so a page whose cursor was dropped from that bounded
//! list meanwhile resumes with the oldest one left. As with
//! [`crate::state_page`], pages are taken at different moments: a task that ends between two
//! pages may be listed live and then completed.

use crate::ids::{check_id, FrameworkId, TaskId};
use crate::messages::TaskSummary;
use crate::task::TaskState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a page of tasks starts: after a live task, or at a completed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskCursor {
    /// After this live task (by framework id, then task id).
    Live(FrameworkId, TaskId),
    /// At the completed task with this sequence number, or the oldest one after it still
    /// remembered (the live ones are all listed).
    Completed(u64),
}

/// Which tasks to list and from where (the `OperatorCall::GetTasks` request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasksQuery {
    /// The states to list; empty: every state.
    pub states: Vec<TaskState>,
    /// `None`: from the first live task.
    pub after: Option<TaskCursor>,
    /// At most this many tasks (the master also stops where a frame would be full).
    pub limit: u32,
}

/// A page of tasks (the `OperatorReply::Tasks` answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Where the next page starts; `None` once every matching task has been listed.
    pub next: Option<TaskCursor>,
    /// Tasks in the asked states, live and completed, when the page was taken.
    pub total: u64,
}

impl TasksQuery {
    /// Whether `state` is one of those asked for.
    pub fn wants(&self, state: TaskState) -> bool {
        self.states.is_empty() || self.states.contains(&state)
    }
}

/// The prefix of a completed task's cursor in its text form (`completed:17`); a live task's
/// is `FRAMEWORK/TASK`, and no id holds a `/`, so the two never mix.
const COMPLETED_PREFIX: &str = "completed:";

impl fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskCursor::Live(fw, task) => write!(f, "{fw}/{task}"),
            TaskCursor::Completed(seq) => write!(f, "{COMPLETED_PREFIX}{seq}"),
        }
    }
}

impl TaskCursor {
    /// A cursor from its text form (`FRAMEWORK/TASK` or `completed:N`), or why it is not one.
    pub fn parse(text: &str) -> Result<TaskCursor, String> {
        let bad = |why: String| format!("after={text:?} is not a task: {why}");
        if let Some(seq) = text.strip_prefix(COMPLETED_PREFIX) {
            return seq
                .parse()
                .map(TaskCursor::Completed)
                .map_err(|_| bad(format!("expected {COMPLETED_PREFIX}N")));
        }
        let (fw, task) = text
            .split_once('/')
            .ok_or_else(|| bad(format!("expected FRAMEWORK/TASK or {COMPLETED_PREFIX}N")))?;
        check_id("framework id", fw).map_err(|e| bad(e.to_string()))?;
        check_id("task id", task).map_err(|e| bad(e.to_string()))?;
        Ok(TaskCursor::Live(
            FrameworkId(fw.to_string()),
            TaskId(task.to_string()),
        ))
    }
}

/// Words a state filter takes besides the states themselves.
const GROUPS: &str = "completed (every terminal state), live (every other) or all";

/// The states a filter such as `finished`, `TASK_FINISHED`, `running,staging`, `completed`,
/// `live` or `all` names (case-insensitive, comma-separated), in the order of
/// [`TaskState::ALL`]; or a message naming the word it does not know and the words it does.
pub fn parse_states(filter: &str) -> Result<Vec<TaskState>, String> {
    let mut wanted = Vec::new();
    for word in filter.split(',').map(str::trim) {
        let lower = word.to_ascii_lowercase();
        let bare = lower.strip_prefix("task_").unwrap_or(&lower);
        let named = TaskState::ALL
            .iter()
            .copied()
            .filter(|s| s.name()["TASK_".len()..].eq_ignore_ascii_case(bare))
            .collect::<Vec<_>>();
        let group: Vec<TaskState> = match bare {
            "completed" => TaskState::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect(),
            "live" => TaskState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect(),
            "all" => TaskState::ALL.to_vec(),
            _ if !named.is_empty() => named,
            _ => {
                let states: Vec<String> = TaskState::ALL
                    .iter()
                    .map(|s| s.name()["TASK_".len()..].to_ascii_lowercase())
                    .collect();
                return Err(format!(
                    "state={filter:?}: unknown state {word:?}; use {} (or TASK_…), {GROUPS}, \
                     comma-separated",
                    states.join(", ")
                ));
            }
        };
        wanted.extend(group);
    }
    Ok(TaskState::ALL
        .into_iter()
        .filter(|s| wanted.contains(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_as_operators_write_them() {
        use TaskState::*;
        assert_eq!(parse_states("finished"), Ok(vec![Finished]));
        assert_eq!(parse_states("TASK_FINISHED"), Ok(vec![Finished]));
        assert_eq!(parse_states("Finished"), Ok(vec![Finished]));
        assert_eq!(
            parse_states("killed, TASK_RUNNING"),
            Ok(vec![Running, Killed])
        );
        assert_eq!(
            parse_states("completed"),
            Ok(vec![Finished, Failed, Killed, Lost, Error])
        );
        assert_eq!(parse_states("live"), Ok(vec![Staging, Starting, Running]));
        assert_eq!(parse_states("all"), Ok(TaskState::ALL.to_vec()));
        assert_eq!(parse_states("lost,completed"), parse_states("completed"));
    }

    #[test]
    fn an_unknown_state_is_named_with_the_ones_there_are() {
        let e = parse_states("finished,done").expect_err("done is no state");
        assert!(e.contains("unknown state \"done\""), "{e}");
        assert!(e.contains("finished") && e.contains("completed"), "{e}");
        assert!(parse_states("").is_err());
    }

    #[test]
    fn cursors_read_back_as_written() {
        for cursor in [
            TaskCursor::Live("fw-1".into(), "t-2".into()),
            TaskCursor::Completed(17),
        ] {
            assert_eq!(TaskCursor::parse(&cursor.to_string()), Ok(cursor));
        }
        assert!(TaskCursor::parse("no-slash").is_err());
        assert!(TaskCursor::parse("completed:x").is_err());
        assert!(TaskCursor::parse("fw/..").is_err());
    }

    #[test]
    fn an_empty_filter_wants_every_state() {
        let q = TasksQuery {
            states: Vec::new(),
            after: None,
            limit: 10,
        };
        assert!(TaskState::ALL.iter().all(|s| q.wants(*s)));
        let q = TasksQuery {
            states: vec![TaskState::Lost],
            ..q
        };
        assert!(q.wants(TaskState::Lost) && !q.wants(TaskState::Running));
    }
}
