//! The paged JSON endpoints, for clusters too big for `/api/v1/state` in one go (it stays,
//! for a full dump): `/api/v1/summary` (the counts, frameworks, jobs and the recently
//! completed tasks: what the web UI's overview needs at any size), and `/api/v1/agents` and `/api/v1/tasks`, a page at a time
//! (`?after=ID&limit=N`; a task's id is `FRAMEWORK/TASK`, unambiguous as no id holds a `/`).
//! Each answer names the cursor of the next page (`next`, `null` at the end) and the total.
//! `/api/v1/tasks?state=…` lists completed tasks too (`task_list.rs`).
//! All of it is `OperatorCall::GetStatePage`, the call the CLI pages with.

use super::api::{call_failed, error, unexpected};
use super::AppState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bramble_proto::ids::check_id;
use bramble_proto::messages::{OperatorCall, OperatorReply, StateCursor, StatePage};
use bramble_proto::{AgentId, FrameworkId, TaskId, SOFTWARE_VERSION};
use serde_json::json;
use std::collections::HashMap;

/// Items a page holds unless asked for fewer.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items a page holds, whatever is asked (larger asks are capped to it).
pub const MAX_LIMIT: u32 = 1000;

/// A page's parameters, or why they are wrong (a 400 with that text).
#[derive(Debug, PartialEq)]
pub(crate) struct PageQuery {
    pub after: Option<String>,
    pub limit: u32,
}

pub(crate) fn page_query(q: &HashMap<String, String>) -> Result<PageQuery, String> {
    if let Some(unknown) = q.keys().find(|k| *k != "after" && *k != "limit") {
        return Err(format!(
            "unknown parameter {unknown:?}: a page takes after=ID and limit=N"
        ));
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<u64>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "limit={l:?} is not a page size: a whole number from 1 (at most {MAX_LIMIT} are returned)"
                ))
            }
            Ok(n) => n.min(u64::from(MAX_LIMIT)) as u32,
        },
    };
    let after = q.get("after").filter(|a| !a.is_empty()).cloned();
    Ok(PageQuery { after, limit })
}

/// `FRAMEWORK/TASK` as a task cursor.
pub(crate) fn task_cursor(after: &str) -> Result<(FrameworkId, TaskId), String> {
    let bad = |why: String| format!("after={after:?} is not a task: {why}");
    let (fw, task) = after
        .split_once('/')
        .ok_or_else(|| bad("expected FRAMEWORK/TASK".into()))?;
    check_id("framework id", fw).map_err(|e| bad(e.to_string()))?;
    check_id("task id", task).map_err(|e| bad(e.to_string()))?;
    Ok((FrameworkId(fw.to_string()), TaskId(task.to_string())))
}

async fn page(app: &AppState, after: StateCursor, limit: u32) -> Result<StatePage, Response> {
    let call = OperatorCall::GetStatePage {
        after: Some(after),
        limit,
    };
    match app.api.call(call).await {
        Ok(OperatorReply::StatePage(page)) => Ok(*page),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(call_failed(e)),
    }
}

/// `GET /api/v1/summary`: the cluster in numbers, its frameworks and jobs.
pub async fn summary(State(app): State<AppState>) -> Response {
    let call = OperatorCall::GetStatePage {
        after: None,
        limit: 0,
    };
    let page = match app.api.call(call).await {
        Ok(OperatorReply::StatePage(page)) => *page,
        Ok(other) => return unexpected(other),
        Err(e) => return call_failed(e),
    };
    let Some(head) = page.head else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the first page had no head",
        );
    };
    let mut summary = json!({
        "name": app.api.name,
        "version": SOFTWARE_VERSION,
        "now": bramble_proto::unix_now(),
        "cluster_id": head.cluster_id,
        "counts": page.counts,
        "frameworks": head.frameworks,
        "jobs": head.jobs,
        // Bounded (the master keeps the last 1,000), so the summary stays small at any size.
        "completed_tasks": head.completed_tasks,
    });
    // With `[ha]`, the group's masters and the leader (the web UI's Masters card), as in
    // `/api/v1/state`; absent on a single master.
    if let (Some(ha), Some(fields)) = (app.api.ha.as_ref(), summary.as_object_mut()) {
        let ha = ha.borrow().clone();
        fields.insert("masters".into(), json!(ha.masters));
        fields.insert("leader".into(), json!(ha.leader.map(|l| l.id)));
    }
    Json(summary).into_response()
}

/// `GET /api/v1/agents?after=ID&limit=N`: agents by id.
pub async fn agents(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q = match page_query(&q) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if let Some(Err(e)) = q.after.as_deref().map(|a| check_id("agent id", a)) {
        return error(StatusCode::BAD_REQUEST, format!("after: {e}"));
    }
    let page = match page(&app, StateCursor::Agents(q.after.map(AgentId)), q.limit).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let next = match &page.next {
        Some(StateCursor::Agents(Some(id))) => Some(id.to_string()),
        _ => None,
    };
    Json(json!({
        "agents": page.agents,
        "next": next,
        "total": page.counts.agents,
    }))
    .into_response()
}

/// `GET /api/v1/tasks?after=FRAMEWORK/TASK&limit=N`: live tasks by framework, then id; with
/// `state=…`, tasks in those states, completed ones too (`task_list.rs`).
pub async fn tasks(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.contains_key("state") {
        return super::task_list::tasks(&app, &q).await;
    }
    let q = match page_query(&q) {
        Ok(q) => q,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let after = match q.after.as_deref().map(task_cursor).transpose() {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let page = match page(&app, StateCursor::Tasks(after), q.limit).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let next = match &page.next {
        Some(StateCursor::Tasks(Some((fw, task)))) => Some(format!("{fw}/{task}")),
        _ => None,
    };
    Json(json!({
        "tasks": page.tasks,
        "next": next,
        "total": page.counts.tasks(),
    }))
    .into_response()
}

/// A query string's parameters as axum hands them to a handler (for the tests here and in
/// `task_list.rs`).
#[cfg(test)]
pub(super) fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parameters_default_cap_and_refuse_what_is_not_a_page() {
        assert_eq!(
            page_query(&query(&[])),
            Ok(PageQuery {
                after: None,
                limit: DEFAULT_LIMIT
            })
        );
        let q = page_query(&query(&[("after", "a7"), ("limit", "5")])).expect("fine");
        assert_eq!((q.after.as_deref(), q.limit), (Some("a7"), 5));
        let q = page_query(&query(&[("limit", "1000000")])).expect("capped");
        assert_eq!(q.limit, MAX_LIMIT);
        for bad in ["0", "-1", "ten", ""] {
            let e = page_query(&query(&[("limit", bad)])).expect_err(bad);
            assert!(e.contains("not a page size"), "{e}");
        }
        let e = page_query(&query(&[("offset", "3")])).expect_err("unknown");
        assert!(e.contains("\"offset\""), "{e}");
    }

    #[test]
    fn a_task_cursor_is_framework_slash_task() {
        let (fw, task) = task_cursor("fw-1/t-2").expect("fine");
        assert_eq!((fw.as_str(), task.as_str()), ("fw-1", "t-2"));
        assert!(task_cursor("no-slash").is_err());
        assert!(task_cursor("/t").is_err());
        assert!(task_cursor("fw/..").is_err());
        assert!(task_cursor("fw/t/extra").is_err(), "a task id holds no /");
    }
}
