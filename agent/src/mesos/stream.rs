//! A Mesos executor's subscription: the SUBSCRIBE handshake with the core, and the task that
//! turns what the core sends the executor into the RecordIO event stream (contract §3.1).
//!
//! Translation: `Registered` → SUBSCRIBED (the executor's and framework's infos as the master
//! wrote them, so `executor_id` and `framework_info.id` are exactly `{"value":..}`, pitfall
//! 14); `LaunchTask` → LAUNCH with the task's own Mesos JSON, or one LAUNCH_GROUP for the
//! tasks of one group (they arrive in one batch); `KillTask` → KILL; `UpdateAck` →
//! ACKNOWLEDGED with the task the uuid was received for; `Message` → MESSAGE; `Shutdown` →
//! SHUTDOWN (the core kills the container after the shutdown grace period). The core never
//! hands a task over twice, so no task is LAUNCHed twice, even across re-subscriptions.

use super::{new_connection, Edge, Subscription};
use crate::core::{self, Admission, ExecutorAuth};
use crate::runtime::Input;
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use bramble_mesos::executor::{AgentInfo, Event, Subscribe, Subscribed};
use bramble_mesos::http::Refusal;
use bramble_mesos::Id;
use bramble_proto::messages::AgentToExecutor;
use bramble_proto::{ExecutorId, FrameworkId, TaskId};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

/// How often an idle stream carries a HEARTBEAT (Mesos: 30 min; more often here so a stream
/// whose reader vanished is noticed, and pymesos ignores them).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// Events buffered for a reader before its stream is cut as stuck.
const STREAM_BUFFER: usize = 1024;

/// SUBSCRIBE: asks the core to accept the executor, replaces an older stream of the same
/// executor, and answers 200 with the event stream. Unacknowledged updates the executor
/// resends go through the usual update path (the log drops duplicates by uuid).
pub(super) async fn subscribe(
    edge: &Edge,
    local: SocketAddr,
    peer: SocketAddr,
    fw: FrameworkId,
    executor: ExecutorId,
    sub: Subscribe,
    shutdown: watch::Receiver<bool>,
) -> Result<Response, Refusal> {
    let session = edge.peer_session(local, peer).await;
    let unacknowledged_tasks: Vec<TaskId> = sub
        .unacknowledged_tasks
        .iter()
        .filter_map(|t| t.pointer("/task_id/value").and_then(Value::as_str))
        .map(TaskId::from)
        .collect();
    let serial = edge
        .inner
        .serials
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = new_connection();
    let (reply, answer) = oneshot::channel();
    let connected = Input::ExecutorConnected {
        serial,
        framework_id: fw.clone(),
        executor_id: executor.clone(),
        auth: ExecutorAuth::Mesos {
            session,
            unacknowledged_tasks,
        },
        tx,
        reply,
    };
    let down = || Refusal::new(503, "the agent is shutting down");
    edge.inner
        .inputs
        .send(connected)
        .await
        .map_err(|_| down())?;
    let admission = match answer.await.map_err(|_| down())? {
        Ok(a) => a,
        Err(why) => {
            warn!(framework = %fw, executor = %executor, %peer, "refusing Mesos executor subscription: {why}");
            // An executor never launched here is "not found" (400); one launched here that
            // fails the checks is forbidden (403).
            let status = if why.starts_with("no executor") {
                400
            } else {
                403
            };
            return Err(Refusal::new(status, why));
        }
    };
    let (close, closed) = oneshot::channel();
    let replaced = edge.subs().insert(
        (fw.clone(), executor.clone()),
        Subscription {
            serial,
            container: admission.container.clone(),
            session: session.unwrap_or_default(),
            _close: close,
            pending_acks: Default::default(),
        },
    );
    if replaced.is_some() {
        debug!(framework = %fw, executor = %executor, "new subscription closes the older stream");
    }
    for update in sub.unacknowledged_updates {
        if let Err(r) = edge
            .forward_update(&admission.container, &fw, &executor, update)
            .await
        {
            debug!(framework = %fw, executor = %executor, "resent update refused: {r}");
        }
    }
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let stream = Stream {
        edge: edge.clone(),
        fw,
        executor,
        serial,
        admission,
        hostname: edge.inner.hostname.clone(),
        port: local.port(),
    };
    tokio::spawn(stream.run(rx, body_tx, closed, shutdown));
    let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(|e| Refusal::new(500, e.to_string()))
}

struct Stream {
    edge: Edge,
    fw: FrameworkId,
    executor: ExecutorId,
    serial: u64,
    admission: Admission,
    hostname: String,
    port: u16,
}

impl Stream {
    async fn run(
        self,
        mut from_core: mpsc::Receiver<Vec<AgentToExecutor>>,
        body: mpsc::Sender<Bytes>,
        mut closed: oneshot::Receiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.tick().await;
        loop {
            let events = tokio::select! {
                batch = from_core.recv() => match batch {
                    Some(batch) => self.translate(batch),
                    None => break,
                },
                _ = heartbeat.tick() => vec![Event::Heartbeat],
                _ = &mut closed => break,
                _ = body.closed() => break,
                _ = shutdown.changed() => break,
            };
            let mut cut = false;
            for event in events {
                // A reader that does not keep up is cut, never waited for.
                if body.try_send(Bytes::from(event.to_record())).is_err() {
                    warn!(framework = %self.fw, executor = %self.executor, "Mesos executor's stream is closed or stuck; ending it");
                    cut = true;
                    break;
                }
            }
            if cut {
                break;
            }
        }
        let current = {
            let mut subs = self.edge.subs();
            let key = (self.fw.clone(), self.executor.clone());
            let current = subs.get(&key).is_some_and(|s| s.serial == self.serial);
            if current {
                subs.remove(&key);
            }
            current
        };
        debug!(framework = %self.fw, executor = %self.executor, current, "Mesos executor stream ended");
        let gone = core::Input::ExecutorDisconnected {
            container: self.admission.container.clone(),
            serial: self.serial,
        };
        let _ = self.edge.inner.inputs.send(Input::Core(gone)).await;
    }

    /// One committed burst's messages as events; the tasks of one group become one
    /// LAUNCH_GROUP.
    fn translate(&self, batch: Vec<AgentToExecutor>) -> Vec<Event> {
        let mut events = Vec::with_capacity(batch.len());
        let mut group: Option<(u32, Vec<Value>)> = None;
        for msg in batch {
            if let AgentToExecutor::LaunchTask(task) = &msg {
                let Some(mesos) = task.mesos.as_deref() else {
                    warn!(task = %task.task_id, "a task without Mesos JSON for a Mesos executor; dropped");
                    continue;
                };
                let json = match serde_json::from_str::<Value>(&mesos.task_json) {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(task = %task.task_id, "task's Mesos JSON does not parse ({e}); dropped");
                        continue;
                    }
                };
                match (mesos.group, &mut group) {
                    (Some(g), Some((open, tasks))) if *open == g => tasks.push(json),
                    (Some(g), _) => {
                        if let Some((_, tasks)) = group.take() {
                            events.push(Event::LaunchGroup(tasks));
                        }
                        group = Some((g, vec![json]));
                    }
                    (None, _) => {
                        if let Some((_, tasks)) = group.take() {
                            events.push(Event::LaunchGroup(tasks));
                        }
                        events.push(Event::Launch(json));
                    }
                }
                continue;
            }
            if let Some((_, tasks)) = group.take() {
                events.push(Event::LaunchGroup(tasks));
            }
            if let Some(event) = self.event_for(msg) {
                events.push(event);
            }
        }
        if let Some((_, tasks)) = group.take() {
            events.push(Event::LaunchGroup(tasks));
        }
        events
    }

    fn event_for(&self, msg: AgentToExecutor) -> Option<Event> {
        Some(match msg {
            AgentToExecutor::Registered { agent_id, .. } => {
                let mesos = self.admission.mesos.as_ref()?;
                let parse = |what: &str, text: &str| {
                    serde_json::from_str::<Value>(text).unwrap_or_else(|e| {
                        warn!(executor = %self.executor, "{what} JSON does not parse ({e}); sending {{}}");
                        Value::Object(Default::default())
                    })
                };
                Event::Subscribed(Subscribed {
                    executor_info: parse("executor info", &mesos.executor_json),
                    framework_info: parse("framework info", &mesos.framework_json),
                    agent_info: AgentInfo {
                        id: Id::from(&agent_id),
                        hostname: self.hostname.clone(),
                        port: u32::from(self.port),
                    },
                    container_id: Some(Id::new(self.admission.container.clone())),
                })
            }
            AgentToExecutor::LaunchTask(_) => return None,
            AgentToExecutor::KillTask(task_id) => Event::Kill {
                task_id: Id::from(&task_id),
            },
            AgentToExecutor::UpdateAck(uuid) => {
                let task_id = self
                    .edge
                    .subs()
                    .get_mut(&(self.fw.clone(), self.executor.clone()))
                    .and_then(|s| s.pending_acks.remove(&uuid));
                let Some(task_id) = task_id else {
                    debug!(%uuid, "acknowledgement for an update this stream did not carry");
                    return None;
                };
                Event::Acknowledged {
                    task_id: Id::from(&task_id),
                    uuid: bramble_mesos::v1::encode_uuid(&uuid),
                }
            }
            AgentToExecutor::Message(data) => Event::Message {
                data: bramble_mesos::v1::b64::encode(&data),
            },
            AgentToExecutor::Shutdown => Event::Shutdown,
        })
    }
}
