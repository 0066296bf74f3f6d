//! Subscription, failover under a known id, and disconnection (the failover timeout starts).

use super::{checked_webui_url, FrameworkEntry};
use crate::state::counters::FrameworkEvent;
use crate::state::feed::ClusterEvent;
use crate::state::peers::Bound;
use crate::state::{ConnId, Master};
use bramble_proto::identity::Role;
use bramble_proto::messages::{FrameworkApi, FrameworkInfo, MasterEvent};
use bramble_proto::{FrameworkId, TaskStatus};
use std::collections::HashMap;
use std::time::Instant;
use tracing::info;

/// What the old connection of a framework that failed over is told (Mesos's words).
pub const FAILED_OVER: &str = "Framework failed over";
/// What a Mesos framework re-subscribing under a removed id is told (Mesos's words).
pub const FRAMEWORK_REMOVED: &str = "Framework has been removed";

/// Who is subscribing, as its connection proved it.
pub(in crate::state) struct Caller {
    principal: Option<String>,
    /// Operators may fail over (and so kill and tear down) any framework.
    operator: bool,
}

impl Master {
    pub(in crate::state) fn subscribe(&mut self, conn: ConnId, info: FrameworkInfo, now: Instant) {
        let id = info
            .framework_id
            .clone()
            .unwrap_or_else(|| FrameworkId(bramble_proto::ids::fresh("fw")));
        // A named id becomes a key here and a directory on every agent it runs tasks on.
        if let Err(e) = id.check() {
            info!("refusing a subscription: {e}");
            let message = e.to_string();
            let event = MasterEvent::Error {
                message,
                fatal: true,
            };
            return self.send_conn_scheduler(conn, event);
        }
        let caller = self.caller_of(conn);
        if let Some(refusal) = self.subscription_refusal(&id, &caller, &info) {
            info!(framework = %id, principal = ?caller.principal, "refusing a subscription: {refusal}");
            self.send_conn_scheduler(
                conn,
                MasterEvent::Error {
                    message: refusal,
                    fatal: true,
                },
            );
            return;
        }
        let failover = self.frameworks.contains_key(&id);
        if let Some(old) = self.frameworks.get(&id).and_then(|f| f.conn) {
            if old != conn {
                self.send_conn_scheduler(
                    old,
                    MasterEvent::Error {
                        message: FAILED_OVER.into(),
                        fatal: true,
                    },
                );
                if let Some(c) = self.conns.get_mut(&old) {
                    c.bound = None;
                }
            }
        }
        if failover {
            // Offers made to the previous connection are unknown to the new scheduler: take
            // them back now instead of leaving the resources out until the offer timeout.
            self.rescind_framework_offers(&id);
        }
        let mut info = info;
        info.framework_id = Some(id.clone());
        info.webui_url = checked_webui_url(&id, info.webui_url.take());
        // A framework belongs to the principal that registered it, and stays theirs when an
        // operator fails it over; one registered before principals existed (none recorded)
        // becomes its next subscriber's.
        info.principal = self
            .frameworks
            .get(&id)
            .and_then(|f| f.info.principal.clone())
            .or(caller.principal);
        let entry = self
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| FrameworkEntry {
                info: info.clone(),
                conn: None,
                disconnected_at: None,
                tasks: HashMap::new(),
                epoch: 0,
            });
        entry.info = info.clone();
        entry.conn = Some(conn);
        entry.disconnected_at = None;
        // A new active scheduler: a new fencing epoch, above any this master ever gave, so
        // whatever the previous instance still sends with its token is refused.
        self.fence_high += 1;
        entry.epoch = self.fence_high;
        let epoch = entry.epoch;
        self.fence_high_dirty = true;
        self.dirty_frameworks.insert(id.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.bound = Some(Bound::Framework(id.clone()));
        }
        if !failover {
            self.allocator.add_framework(id.clone(), 1.0);
        }
        self.allocator.activate_framework(&id);
        info!(framework = %id, name = %info.name, role = %info.role, fencing_token = epoch,
            "framework {}", if failover { "re-subscribed (failover)" } else { "subscribed" });
        self.feed.counters().framework(
            &id,
            if failover {
                FrameworkEvent::Resubscribed
            } else {
                FrameworkEvent::Subscribed
            },
        );
        self.feed.emit(|| ClusterEvent::FrameworkSubscribed {
            framework_id: id.clone(),
            name: info.name.clone(),
        });
        self.send_conn_scheduler(
            conn,
            MasterEvent::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_ms: self.timeouts.heartbeat_interval.as_millis() as u64,
                fencing_token: epoch,
            },
        );
        let state = self.framework_state_event(&id);
        self.send_conn_scheduler(conn, state);
        self.tell_draining(conn);
        self.resend_master_updates(&id);
        let _ = now;
        self.allocation_due = true;
    }

    /// Who subscribes on `conn`: what the connection proved (certificate, or HTTP Basic at
    /// the Mesos edge), never what the scheduler's info claims.
    pub(in crate::state) fn caller_of(&self, conn: ConnId) -> Caller {
        let caller = self.conns.get(&conn).map(|c| Caller {
            principal: c.identity.principal.clone(),
            operator: c.identity.role == Role::Operator,
        });
        caller.unwrap_or(Caller {
            principal: None,
            operator: false,
        })
    }

    /// Why a subscription under `id` must be refused, if it must: a framework bound to a
    /// principal is failed over only by that principal or an operator (which is what makes
    /// its tasks, its updates and its teardown its own: every scheduler call acts on the
    /// framework its connection subscribed as), and (as in Mesos) a Mesos framework that was
    /// removed stays removed. Native frameworks keep re-subscribing under a removed id as a new
    /// framework, as they always have.
    pub(in crate::state) fn subscription_refusal(
        &self,
        id: &FrameworkId,
        caller: &Caller,
        info: &FrameworkInfo,
    ) -> Option<String> {
        if let Some(bound) = self
            .frameworks
            .get(id)
            .and_then(|f| f.info.principal.as_ref())
        {
            if caller.principal.as_ref() != Some(bound) && !caller.operator {
                return Some(format!(
                    "Framework {id} is bound to principal '{bound}'; {} may not fail it over (only '{bound}' or an operator may)",
                    match &caller.principal {
                        Some(p) => format!("principal '{p}'"),
                        None => "an unauthenticated scheduler".to_string(),
                    }
                ));
            }
        }
        let removed =
            !self.frameworks.contains_key(id) && self.removed_frameworks.get(id).is_some();
        (removed && info.api == FrameworkApi::MesosV1).then(|| FRAMEWORK_REMOVED.to_string())
    }

    /// Sends the framework the terminal updates only the master resends (until acknowledged).
    pub(in crate::state) fn resend_master_updates(&mut self, fw: &FrameworkId) {
        let pending: Vec<TaskStatus> = self
            .frameworks
            .get(fw)
            .map(|f| {
                f.tasks
                    .values()
                    .filter(|t| t.resend_by_master)
                    .filter_map(|t| t.terminal.clone())
                    .collect()
            })
            .unwrap_or_default();
        for status in pending {
            self.send_framework(fw, MasterEvent::Update(status));
        }
    }

    /// The framework's connection `conn` ended: no offers, and its failover timeout starts.
    pub(in crate::state) fn framework_disconnected(
        &mut self,
        id: &FrameworkId,
        conn: ConnId,
        reason: &str,
        now: Instant,
    ) {
        let Some(f) = self.frameworks.get_mut(id).filter(|f| f.conn == Some(conn)) else {
            return; // a connection the framework has already replaced
        };
        f.conn = None;
        f.disconnected_at = Some(now);
        info!(framework = %id, failover_timeout_secs = f.info.failover_timeout_secs,
            "framework disconnected: {reason}; its tasks keep running until the failover timeout");
        self.feed.emit(|| ClusterEvent::FrameworkDisconnected {
            framework_id: id.clone(),
        });
        self.allocator.deactivate_framework(id);
        self.rescind_framework_offers(id);
        self.promote_standby(id, now);
    }
}
