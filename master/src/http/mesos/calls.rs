//! Scheduler calls other than SUBSCRIBE: checked at the edge as Mesos checks them (the
//! framework is known, subscribed, on this stream, and of this principal), then sent to the
//! state task as native calls on the framework's current connection and answered 202.
//! Problems inside a well-formed call (a stale offer, an unknown task) come back later as
//! events, never as a 4xx: a 4xx on DECLINE or ACKNOWLEDGE kills pymesos (pitfall 5).

use super::stream::Subscription;
use super::{accepted, refuse, Authenticated, MesosEdge, STREAM_ID};
use crate::state::Input;
use axum::http::HeaderMap;
use axum::response::Response;
use bramble_mesos::http::Refusal;
use bramble_mesos::offer::LaunchContext;
use bramble_mesos::scheduler::{self, CallKind};
use bramble_proto::messages::{Filters, SchedulerCall};
use bramble_proto::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, info};

pub(super) async fn handle(
    edge: &MesosEdge,
    headers: &HeaderMap,
    authenticated: &Authenticated,
    fw: FrameworkId,
    kind: CallKind,
) -> Response {
    let Some(sub) = edge.subscription(&fw) else {
        return if edge.framework_known(&fw).await {
            refuse(Refusal::new(403, "Framework is not subscribed"))
        } else {
            refuse(Refusal::bad_request("Framework cannot be found"))
        };
    };
    if let Authenticated::Principal(caller) = authenticated {
        if sub.principal.as_deref() != Some(caller.as_str()) {
            return refuse(Refusal::new(
                403,
                format!(
                    "Framework {fw} is registered by principal '{}'; principal '{caller}' may not make calls for it",
                    sub.principal.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    match headers.get(STREAM_ID).and_then(|v| v.to_str().ok()) {
        None => {
            return refuse(Refusal::bad_request(
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            ))
        }
        Some(given) if given != sub.stream_id => {
            return refuse(Refusal::bad_request(format!(
                "The stream ID '{given}' included in this request didn't match the stream ID currently associated with framework ID {fw}"
            )))
        }
        Some(_) => {}
    }
    if let CallKind::Ignored(kind) = &kind {
        debug!(framework = %fw, "Mesos {kind} call accepted and ignored");
        return accepted();
    }
    let calls = native_calls(&sub, kind);
    // Held to the input limit here, as the SDK does for native frameworks: whatever the master
    // relays from a call (a framework message, a launch) must fit the agent's frame.
    for call in &calls {
        if let Err(e) = bramble_proto::codec::check_input(call) {
            return refuse(Refusal::new(413, format!("the call is too large: {e}")));
        }
    }
    for call in calls {
        let input = Input::FromScheduler {
            conn: sub.conn,
            call,
        };
        if edge.inputs.send(input).await.is_err() {
            return refuse(Refusal::new(503, "the master is shutting down"));
        }
    }
    accepted()
}

/// A Mesos call as the native calls it means. ACCEPT also reports, on the stream, the tasks
/// it could not translate (TASK_ERROR) and the operations it does not perform
/// (OPERATION_ERROR when they carry an id).
fn native_calls(sub: &Arc<Subscription>, kind: CallKind) -> Vec<SchedulerCall> {
    let call = match kind {
        CallKind::Subscribe(_) | CallKind::Ignored(_) => return Vec::new(),
        CallKind::Teardown => {
            sub.tearing_down.store(true, Ordering::Relaxed);
            SchedulerCall::Teardown
        }
        CallKind::Accept(accept) => {
            let offer_agent = accept.offer_ids.iter().find_map(|id| sub.offer_agent(id));
            let framework_json = sub.framework_json();
            let fw = sub
                .framework_id
                .get()
                .map(|f| f.as_str())
                .unwrap_or_default();
            let launches = accept.to_native(&LaunchContext {
                framework_id: fw,
                framework_json: &framework_json,
                checkpoint: sub.subscribe.checkpoint,
                offer_agent: offer_agent.as_deref(),
            });
            for (task_id, why) in &launches.invalid {
                info!(framework = %fw, task = %task_id, "Mesos task refused at the edge: {why}");
                let _ = sub
                    .edge_events
                    .try_send(scheduler::task_error(task_id, why));
            }
            for (op_id, op_kind) in &launches.dropped {
                let why = format!("{op_kind} operations are not supported by Bramble (only LAUNCH and LAUNCH_GROUP)");
                let _ = sub.edge_events.try_send(scheduler::operation_error(
                    op_id,
                    offer_agent.as_deref(),
                    &why,
                ));
            }
            sub.forget_offers(&accept.offer_ids);
            SchedulerCall::Accept {
                offer_ids: accept.offer_ids.into_iter().map(OfferId).collect(),
                tasks: launches.tasks,
                filters: Filters {
                    refuse_seconds: accept.refuse_seconds,
                },
            }
        }
        CallKind::Decline {
            offer_ids,
            refuse_seconds,
        } => {
            sub.forget_offers(&offer_ids);
            SchedulerCall::Decline {
                offer_ids: offer_ids.into_iter().map(OfferId).collect(),
                filters: Filters { refuse_seconds },
            }
        }
        CallKind::Revive => SchedulerCall::Revive,
        CallKind::Suppress => SchedulerCall::Suppress,
        CallKind::Kill { task_id } => SchedulerCall::Kill {
            task_id: TaskId(task_id),
        },
        CallKind::Shutdown {
            executor_id,
            agent_id,
        } => SchedulerCall::ShutdownExecutor {
            agent_id: AgentId(agent_id),
            executor_id: ExecutorId(executor_id),
        },
        CallKind::Acknowledge {
            agent_id,
            task_id,
            uuid,
        } => SchedulerCall::Acknowledge {
            agent_id: AgentId(agent_id),
            task_id: TaskId(task_id),
            uuid,
        },
        CallKind::Reconcile { task_ids } => SchedulerCall::Reconcile {
            task_ids: task_ids.into_iter().map(TaskId).collect(),
        },
        CallKind::Message {
            agent_id,
            executor_id,
            data,
        } => SchedulerCall::Message {
            agent_id: AgentId(agent_id),
            executor_id: ExecutorId(executor_id),
            data,
        },
    };
    vec![call]
}
