//! The JSON endpoints: state, services, health and version, sandbox files (list, read, follow), and
//! killing a task. (Login and logout are `auth/`'s.)
//!
//! Sandbox paths are checked twice: here (relative, no `..`, bounded length) so an obviously
//! hostile path never leaves the master, and on the agent, which alone can see symlinks and so
//! has the final word (`agent/src/sandbox.rs`). The agent's refusals come back as text and are
//! mapped to status codes in [`sandbox_error`].

use super::{AppState, CallError, StreamPermit};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bramble_proto::messages::{
    ClusterState, OperatorCall, OperatorReply, SandboxList, SandboxRead, MAX_SANDBOX_READ,
};
use bramble_proto::{FrameworkId, TaskId, PROTOCOL_VERSION, SOFTWARE_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Component;
use std::time::Duration;

/// Longest sandbox path accepted.
const MAX_PATH: usize = 1024;
/// Bytes a read returns unless asked for fewer (at most `MAX_SANDBOX_READ`).
const DEFAULT_READ: u32 = 64 * 1024;
/// How often a followed file is polled once nothing new is there.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) fn call_failed(e: CallError) -> Response {
    match e {
        CallError::Stopped => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        ),
        CallError::TimedOut => error(StatusCode::GATEWAY_TIMEOUT, "the master did not answer"),
    }
}

pub(crate) fn unexpected(reply: OperatorReply) -> Response {
    match reply {
        OperatorReply::Error { message } => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "unexpected answer"),
    }
}

/// Where the tasks the master remembers after they ended are listed, a page at a time.
pub const COMPLETED_TASKS_URL: &str = "/api/v1/tasks?state=completed";

/// `GET /api/v1/state`: the cluster as the master sees it, plus who is answering. The tasks
/// it remembers after they ended are counted, not listed: `completed_tasks_url` pages them.
#[derive(Serialize)]
struct StateView {
    name: String,
    version: &'static str,
    /// The master's clock, so pages can show ages without trusting the browser's.
    now: f64,
    #[serde(flatten)]
    state: ClusterState,
    completed_tasks_count: usize,
    completed_tasks_url: &'static str,
    /// With `[ha]`: every master of the group (`{id, address, role, term}`) and the leader's
    /// id; absent on a single master.
    #[serde(skip_serializing_if = "Option::is_none")]
    masters: Option<Vec<crate::ha::MasterView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<u64>,
}

pub async fn state(State(app): State<AppState>) -> Response {
    match app.api.call(OperatorCall::GetState).await {
        Ok(OperatorReply::State(mut state)) => {
            let completed = std::mem::take(&mut state.completed_tasks);
            let ha = app.api.ha.as_ref().map(|h| h.borrow().clone());
            let view = StateView {
                masters: ha.as_ref().map(|h| h.masters.clone()),
                leader: ha.as_ref().and_then(|h| h.leader.as_ref().map(|l| l.id)),
                name: app.api.name.clone(),
                version: SOFTWARE_VERSION,
                now: bramble_proto::unix_now(),
                state,
                completed_tasks_count: completed.len(),
                completed_tasks_url: COMPLETED_TASKS_URL,
            };
            // The list itself is left out, not sent empty: a reader looking for it is
            // pointed at the URL by its absence.
            match serde_json::to_value(&view) {
                Ok(mut value) => {
                    if let Some(fields) = value.as_object_mut() {
                        fields.remove("completed_tasks");
                    }
                    Json(value).into_response()
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Ok(other) => unexpected(other),
        Err(e) => call_failed(e),
    }
}

/// `GET /api/v1/panel.png`: the master's front panel exactly as the OLED shows it now;
/// 404 before the display has drawn anything (or when the master runs without it).
pub async fn panel(State(app): State<AppState>) -> Response {
    match app.api.panel.reply() {
        OperatorReply::Panel { png, .. } => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        OperatorReply::Error { message } => (StatusCode::NOT_FOUND, message).into_response(),
        other => unexpected(other),
    }
}

/// `GET /health`: 200 while the state task answers; `certificates_expiring` lists the
/// certificates the master has seen (its own and its peers') that end within 30 days.
pub async fn health(State(app): State<AppState>) -> Response {
    let expiring = app
        .api
        .certificates
        .expiry
        .expiring(time::OffsetDateTime::now_utc());
    // The counts, not the whole state: health checks come often and clusters may be big.
    let counts = OperatorCall::GetStatePage {
        after: None,
        limit: 0,
    };
    match app.api.call(counts).await {
        Ok(OperatorReply::StatePage(page)) => Json(json!({
            "status": "ok",
            "agents": page.counts.agents_connected,
            "certificates_expiring": expiring,
        }))
        .into_response(),
        Ok(other) => unexpected(other),
        Err(e) => call_failed(e),
    }
}

/// `GET /version`: Mesos's shape (a purely numeric `version`, pitfall 9, and the build
/// fields) with Bramble's own version beside it, and what the web page may do.
pub async fn version(State(app): State<AppState>) -> Response {
    let mut v = json!({
        "version": bramble_mesos::MESOS_VERSION,
        "bramble_version": SOFTWARE_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "cluster_id": app.api.cluster_id,
        "name": app.api.name,
        "auth": app.auth_enabled(),
        "can_kill": app.auth_enabled(),
    });
    if let (Some(obj), Some(build)) = (
        v.as_object_mut(),
        super::mesos::readonly::build_info().as_object(),
    ) {
        obj.extend(build.clone());
    }
    Json(v).into_response()
}

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    path: Option<String>,
    offset: Option<u64>,
    length: Option<u32>,
    /// Follow only: start this many bytes before the end instead of at `offset`.
    tail: Option<u64>,
}

/// Refuses paths that are obviously out of bounds before asking any agent.
/// The error is the reason, for a 400.
fn check_path(path: Option<&str>, default: Option<&str>) -> Result<String, String> {
    let path = match (path.filter(|p| !p.is_empty()), default) {
        (Some(p), _) => p,
        (None, Some(d)) => d,
        (None, None) => return Err("path is required".into()),
    };
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err("path too long or not text".into());
    }
    let p = std::path::Path::new(path);
    if p.is_absolute() {
        return Err(format!(
            "{path}: absolute paths are not allowed; paths are relative to the sandbox"
        ));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{path}: path leaves the sandbox"));
    }
    Ok(path.to_string())
}

/// Maps an agent's (or the master's) refusal to a status code.
fn sandbox_error(message: String) -> Response {
    let status = if message.contains("outside the sandbox") {
        StatusCode::FORBIDDEN
    } else if message.contains("leaves the sandbox")
        || message.contains("absolute paths")
        || message.contains("not a regular file")
        || message.contains("not a directory")
        || message.contains("empty path")
    {
        StatusCode::BAD_REQUEST
    } else if message.contains("No such file")
        || message.contains("no sandbox for task")
        || message.contains("is known to this master")
    {
        StatusCode::NOT_FOUND
    } else if message.contains("not connected") || message.contains("did not answer") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    error(status, message)
}

/// `GET /api/v1/tasks/{framework}/{task}/files?path=DIR`: the sandbox's files under DIR.
pub async fn list_files(
    State(app): State<AppState>,
    Path((framework, task)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let path = match check_path(q.path.as_deref(), Some(".")) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let call = OperatorCall::ListSandbox(SandboxList {
        framework_id: FrameworkId(framework),
        task_id: TaskId(task),
        path,
    });
    match app.api.call(call).await {
        Ok(OperatorReply::SandboxListing(listing)) => Json(listing).into_response(),
        Ok(OperatorReply::Error { message }) => sandbox_error(message),
        Ok(other) => unexpected(other),
        Err(e) => call_failed(e),
    }
}

/// A piece of a sandbox file as JSON. `data` is text; a UTF-8 character cut by the end of
/// the range is left for the next read (`next_offset` says where that starts).
#[derive(Serialize)]
struct FileChunk {
    path: String,
    offset: u64,
    next_offset: u64,
    size: u64,
    data: String,
    task_ended: bool,
    /// The task has ended and everything has been read.
    eof: bool,
}

async fn read_chunk(
    app: &AppState,
    framework: &str,
    task: &str,
    path: &str,
    offset: u64,
    length: u32,
) -> Result<FileChunk, Response> {
    let call = OperatorCall::ReadSandbox(SandboxRead {
        framework_id: FrameworkId(framework.to_string()),
        task_id: TaskId(task.to_string()),
        path: path.to_string(),
        offset,
        max_bytes: length.min(MAX_SANDBOX_READ),
    });
    match app.api.call(call).await {
        Ok(OperatorReply::Sandbox(chunk)) => {
            let end = chunk.offset + chunk.data.len() as u64;
            let complete = end >= chunk.size;
            let (data, used) = utf8_prefix(&chunk.data, complete);
            let next_offset = chunk.offset + used as u64;
            Ok(FileChunk {
                path: path.to_string(),
                offset: chunk.offset,
                next_offset,
                size: chunk.size,
                data,
                task_ended: chunk.task_ended,
                eof: chunk.task_ended && next_offset >= chunk.size,
            })
        }
        Ok(OperatorReply::Error { message }) => Err(sandbox_error(message)),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(call_failed(e)),
    }
}

/// The longest prefix of `data` that is whole UTF-8 (lossy inside), and its length in bytes.
/// At the end of a file an incomplete character is kept (lossily): nothing more will come.
fn utf8_prefix(data: &[u8], at_end: bool) -> (String, usize) {
    match std::str::from_utf8(data) {
        Ok(s) => (s.to_string(), data.len()),
        Err(e) if e.error_len().is_none() && !at_end => {
            let cut = e.valid_up_to();
            (String::from_utf8_lossy(&data[..cut]).into_owned(), cut)
        }
        Err(_) => (String::from_utf8_lossy(data).into_owned(), data.len()),
    }
}

/// `GET /api/v1/tasks/{framework}/{task}/files/read?path=P&offset=N&length=M`.
pub async fn read_file(
    State(app): State<AppState>,
    Path((framework, task)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let (offset, length) = (q.offset.unwrap_or(0), q.length.unwrap_or(DEFAULT_READ));
    let chunk = match check_path(q.path.as_deref(), None) {
        Ok(path) => read_chunk(&app, &framework, &task, &path, offset, length).await,
        Err(why) => Err(error(StatusCode::BAD_REQUEST, why)),
    };
    chunk.map_or_else(|r| r, |c| Json(c).into_response())
}

/// `GET /api/v1/tasks/{framework}/{task}/files/follow?path=P[&offset=N|&tail=BYTES]`: SSE.
/// `data` events carry new text as it appears, then one `eof` once the task has ended and
/// all was sent; `error` if the file cannot be read. Polls the agent while nothing is new,
/// and ends with the master's shutdown or when the client goes away.
pub async fn follow_file(
    State(app): State<AppState>,
    Path((framework, task)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let path = match check_path(q.path.as_deref(), None) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    // Fail as a plain HTTP error while we still can (unknown task, refused path).
    let first = match read_chunk(&app, &framework, &task, &path, 0, 0).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(permit) = app.stream_permit() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open event streams",
        );
    };
    let offset = match q.tail {
        Some(tail) => first.size.saturating_sub(tail),
        None => q.offset.unwrap_or(0),
    };
    let follow = Follow {
        app,
        framework,
        task,
        path,
        offset,
        done: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), f))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct Follow {
    app: AppState,
    framework: String,
    task: String,
    path: String,
    offset: u64,
    done: bool,
    _permit: StreamPermit,
}

impl Follow {
    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        let mut shutdown = self.app.api.shutdown.clone();
        loop {
            if self.done || *shutdown.borrow() {
                return None;
            }
            let chunk = read_chunk(
                &self.app,
                &self.framework,
                &self.task,
                &self.path,
                self.offset,
                DEFAULT_READ,
            )
            .await;
            match chunk {
                Ok(c) if c.next_offset > self.offset => {
                    self.offset = c.next_offset;
                    return Event::default().event("data").json_data(&c).ok();
                }
                Ok(c) if c.eof || (c.task_ended && c.size < self.offset) => {
                    self.done = true;
                    return Some(
                        Event::default()
                            .event("eof")
                            .data(format!("{{\"size\":{}}}", c.size)),
                    );
                }
                Ok(_) => {}
                Err(_) => {
                    self.done = true;
                    return Some(Event::default().event("error").data(format!(
                        "{{\"error\":\"cannot read {} any more\"}}",
                        self.path.replace(['"', '\\'], "")
                    )));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

/// `POST /api/v1/tasks/{framework}/{task}/kill` (routed only when a token is configured).
pub async fn kill(
    State(app): State<AppState>,
    Path((framework, task)): Path<(String, String)>,
) -> Response {
    let call = OperatorCall::KillTask {
        framework_id: FrameworkId(framework),
        task_id: TaskId(task),
    };
    match app.api.call(call).await {
        Ok(OperatorReply::Done) => (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "kill requested" })),
        )
            .into_response(),
        Ok(OperatorReply::Error { message }) => error(StatusCode::NOT_FOUND, message),
        Ok(other) => unexpected(other),
        Err(e) => call_failed(e),
    }
}

/// `GET /api/v1/services`: the service framework's services, each instance with its agent,
/// host, address, ports and health (`state/services.rs`); read off the feed, not the state
/// task, so polling it costs the master nothing.
pub async fn services(State(app): State<AppState>) -> Response {
    Json(&*app.api.events.services()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obviously_escaping_paths_are_refused_here() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "x\0y"] {
            assert!(check_path(Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(
            check_path(Some("stdout"), None).ok().as_deref(),
            Some("stdout")
        );
        assert_eq!(check_path(None, Some(".")).ok().as_deref(), Some("."));
        assert!(check_path(None, None).is_err());
    }

    #[test]
    fn a_character_cut_by_the_range_waits_for_the_next_read() {
        let text = "π≈3.14".as_bytes();
        let (s, used) = utf8_prefix(&text[..1], false);
        assert_eq!((s.as_str(), used), ("", 0));
        let (s, used) = utf8_prefix(&text[..4], false);
        assert_eq!((s.as_str(), used), ("π", 2));
        let (s, used) = utf8_prefix(text, true);
        assert_eq!((s.as_str(), used), ("π≈3.14", text.len()));
    }
}
