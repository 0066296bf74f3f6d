//! Health probes: which are due, and what a result means (`health.rs` keeps the counts).

use super::instances::Instance;
use super::Book;
use crate::services::health::Verdict;
use crate::services::spec::HealthCheck;
use crate::services::status::{KillRecord, MAX_KILLS};
use bramble_proto::TaskId;
use std::time::Instant;

/// A health probe to run: check `index` of `check`'s spec against an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub task_id: TaskId,
    pub index: usize,
    pub check: HealthCheck,
    pub host: String,
    pub ports: Vec<u16>,
}

/// What a probe's result meant.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthEvent {
    Nothing,
    Healthy {
        service: String,
    },
    Failing {
        service: String,
        message: String,
    },
    /// The instance is to be killed (it is marked so), for `reason`.
    Kill {
        service: String,
        reason: String,
    },
}

impl Book {
    /// Whether an instance counts as healthy: RUNNING and passing its version's checks.
    pub(super) fn healthy(&self, i: &Instance) -> bool {
        i.running_since().is_some() && (!self.probed(i) || i.checks.healthy())
    }

    /// The checks `i` is held to: its own version's (none for a version not known, or when
    /// its ports are not known).
    pub(super) fn checks_of(&self, i: &Instance) -> &[HealthCheck] {
        let Some(spec) = self
            .services
            .get(&i.service)
            .and_then(|s| s.versions.get(&i.fingerprint))
        else {
            return &[];
        };
        if i.ports.len() < spec.ports as usize {
            return &[];
        }
        &spec.health
    }

    pub(super) fn probed(&self, i: &Instance) -> bool {
        !self.checks_of(i).is_empty()
    }

    /// Health probes due now, each marked in flight until [`Book::probe_result`].
    pub fn due_probes(&mut self, now: Instant) -> Vec<Probe> {
        let mut probes = Vec::new();
        let ids: Vec<TaskId> = self.instances.keys().cloned().collect();
        for id in ids {
            let Some(i) = self.instances.get(&id) else {
                continue;
            };
            if i.killing || i.running_since().is_none() {
                continue;
            }
            let checks = self.checks_of(i).to_vec();
            if checks.is_empty() {
                continue;
            }
            let Some(i) = self.instances.get_mut(&id) else {
                continue;
            };
            for index in i.checks.due(&checks, now) {
                probes.push(Probe {
                    task_id: id.clone(),
                    index,
                    check: checks[index].clone(),
                    host: i.host.clone(),
                    ports: i.ports.clone(),
                });
            }
        }
        probes
    }

    /// Takes in a probe's result.
    pub fn probe_result(
        &mut self,
        task_id: &TaskId,
        index: usize,
        outcome: Result<(), String>,
        now: Instant,
        unix_now: f64,
    ) -> HealthEvent {
        let Some(i) = self.instances.get(task_id) else {
            return HealthEvent::Nothing;
        };
        let checks = self.checks_of(i).to_vec();
        let Some(since) = i.running_since() else {
            return HealthEvent::Nothing;
        };
        if i.killing {
            return HealthEvent::Nothing;
        }
        let Some(i) = self.instances.get_mut(task_id) else {
            return HealthEvent::Nothing;
        };
        let service = i.service.clone();
        let fingerprint = i.fingerprint.clone();
        match i.checks.result(&checks, index, outcome, since, now) {
            Verdict::Nothing => HealthEvent::Nothing,
            Verdict::Healthy => HealthEvent::Healthy { service },
            Verdict::Failing(message) => HealthEvent::Failing { service, message },
            Verdict::Kill(reason) => {
                i.killing = true;
                if let Some(s) = self.services.get_mut(&service) {
                    if s.fingerprint == fingerprint {
                        s.failed(now);
                    }
                    s.kills.push(KillRecord {
                        task_id: task_id.to_string(),
                        reason: reason.clone(),
                        at: unix_now,
                    });
                    let extra = s.kills.len().saturating_sub(MAX_KILLS);
                    s.kills.drain(..extra);
                }
                self.new_version_failed(&service, &fingerprint, &reason);
                HealthEvent::Kill { service, reason }
            }
        }
    }
}
