//! `GET /api/v1/tasks?state=S[,S…]&after=CURSOR&limit=N`: tasks in those states, the live
//! ones and those the master remembers after they ended, a page at a time
//! (`OperatorCall::GetTasks`). States are written as operators write them: `finished`,
//! `TASK_FINISHED`, comma lists, `completed` (every terminal state), `live`, `all`; an unknown
//! one is a 400 naming it and the ones there are. The cursor (`next`) is `FRAMEWORK/TASK`
//! within the live tasks and `completed:N` within the completed ones. Without `state`,
//! `/api/v1/tasks` pages the live tasks alone (`pages.rs`).

use super::api::{call_failed, error, unexpected};
use super::pages::{page_query, PageQuery};
use super::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bramble_proto::messages::{OperatorCall, OperatorReply, TaskCursor, TasksQuery};
use bramble_proto::task_list::parse_states;
use serde_json::json;
use std::collections::HashMap;

/// The query `state`, `after` and `limit` make, or why they do not make one (a 400).
pub(crate) fn tasks_query(q: &HashMap<String, String>) -> Result<TasksQuery, String> {
    let states = parse_states(q.get("state").map(String::as_str).unwrap_or_default())?;
    let mut paging = q.clone();
    paging.remove("state");
    let PageQuery { after, limit } = page_query(&paging)
        .map_err(|why| why.replace("after=ID and limit=N", "state=S, after=ID and limit=N"))?;
    let after = after.as_deref().map(TaskCursor::parse).transpose()?;
    Ok(TasksQuery {
        states,
        after,
        limit,
    })
}

/// Answers `/api/v1/tasks` with a `state` parameter.
pub(crate) async fn tasks(app: &AppState, q: &HashMap<String, String>) -> Response {
    let query = match tasks_query(q) {
        Ok(query) => query,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let states: Vec<&str> = query.states.iter().map(|s| s.name()).collect();
    match app.api.call(OperatorCall::GetTasks(query)).await {
        Ok(OperatorReply::Tasks(list)) => Json(json!({
            "tasks": list.tasks,
            "next": list.next.map(|c| c.to_string()),
            "total": list.total,
            "states": states,
        }))
        .into_response(),
        Ok(other) => unexpected(other),
        Err(e) => call_failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pages::query;
    use bramble_proto::TaskState;

    #[test]
    fn state_after_and_limit_make_a_query() {
        let q = tasks_query(&query(&[
            ("state", "finished,TASK_KILLED"),
            ("after", "completed:4"),
            ("limit", "2"),
        ]))
        .expect("fine");
        assert_eq!(q.states, [TaskState::Finished, TaskState::Killed]);
        assert_eq!(q.after, Some(TaskCursor::Completed(4)));
        assert_eq!(q.limit, 2);
        let q = tasks_query(&query(&[("state", "running"), ("after", "fw/t")])).expect("fine");
        assert_eq!(q.after, Some(TaskCursor::Live("fw".into(), "t".into())));
    }

    #[test]
    fn what_is_not_a_query_says_why() {
        let e = tasks_query(&query(&[("state", "sleeping")])).expect_err("no such state");
        assert!(e.contains("unknown state \"sleeping\""), "{e}");
        let e = tasks_query(&query(&[("state", "all"), ("offset", "1")])).expect_err("unknown");
        assert!(e.contains("state=S, after=ID and limit=N"), "{e}");
        let e = tasks_query(&query(&[("state", "all"), ("after", "x")])).expect_err("cursor");
        assert!(e.contains("is not a task"), "{e}");
    }
}
