//! Spec changes, rolling updates and rollbacks.

use super::{Book, Service};
use crate::services::spec::Spec;
use crate::services::status::RolloutState;

/// A failed rollout: write `spec` (the previous version) back as the service's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    pub service: String,
    pub spec: Spec,
    pub reason: String,
}

/// How a spec change was taken.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecChange {
    Created,
    /// Same version (e.g. scaled), or removed.
    Same,
    /// A new version is rolling out over `previous`.
    NewVersion {
        previous: Box<Spec>,
    },
    /// The rollback this book asked for arrived.
    RolledBack,
}

/// A rollout being carried out.
#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) from: String,
    pub(super) state: RolloutState,
    /// New-version failures so far.
    pub(super) failures: u32,
    /// Set once a rollback is asked for: the fingerprint going back to.
    pub(super) back_to: Option<String>,
    pub(super) message: String,
}

impl Book {
    /// The spec of `name` changed (`None`: removed). Its instances are compared with it on
    /// the next [`Book::kills`].
    pub fn set_spec(&mut self, name: &str, spec: Option<Spec>) -> SpecChange {
        let Some(spec) = spec else {
            self.services.remove(name);
            return SpecChange::Same;
        };
        let fingerprint = spec.fingerprint();
        let old_live: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.service == name && !i.killing && i.fingerprint != fingerprint)
            .map(|i| i.fingerprint.clone())
            .collect();
        let Some(s) = self.services.get_mut(name) else {
            self.services.insert(name.to_string(), Service::new(spec));
            return SpecChange::Created;
        };
        if s.fingerprint == fingerprint {
            s.spec = spec.clone();
            s.versions.insert(fingerprint, spec);
            return SpecChange::Same;
        }
        // A new version starts with a clean slate.
        s.failures = 0;
        s.not_before = None;
        let previous = std::mem::replace(&mut s.spec, spec.clone());
        let previous_fp = std::mem::replace(&mut s.fingerprint, fingerprint.clone());
        s.versions.insert(fingerprint.clone(), spec);
        let back = s
            .rollout
            .as_ref()
            .is_some_and(|t| t.back_to.as_deref() == Some(fingerprint.as_str()));
        if back {
            if let Some(t) = s.rollout.as_mut() {
                t.state = RolloutState::RolledBack;
                t.from = previous_fp;
                t.back_to = None;
            }
            return SpecChange::RolledBack;
        }
        s.rollout = (!old_live.is_empty()).then(|| Track {
            from: previous_fp,
            state: RolloutState::InProgress,
            failures: 0,
            back_to: None,
            message: String::new(),
        });
        SpecChange::NewVersion {
            previous: Box::new(previous),
        }
    }

    /// The newest spec of `name`'s history: what a failed rollout goes back to when this run
    /// of the scheduler never saw it (it was applied before a restart).
    pub fn set_previous(&mut self, name: &str, spec: Spec) {
        if let Some(s) = self.services.get_mut(name) {
            s.versions.entry(spec.fingerprint()).or_insert(spec);
        }
    }

    /// Rollbacks asked for since the last call.
    pub fn take_rollbacks(&mut self) -> Vec<Rollback> {
        std::mem::take(&mut self.rollbacks)
    }

    /// A rollout is done once only new instances are left, as many as wanted, all healthy.
    pub(super) fn refresh_rollouts(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(s) = self.services.get(&name) else {
                continue;
            };
            if !s
                .rollout
                .as_ref()
                .is_some_and(|t| t.state == RolloutState::InProgress && t.back_to.is_none())
            {
                continue;
            }
            let mine = self.instances.values().filter(|i| i.service == name);
            let old = mine
                .clone()
                .filter(|i| i.fingerprint != s.fingerprint)
                .count();
            let healthy_new = mine
                .filter(|i| i.fingerprint == s.fingerprint && !i.killing && self.healthy(i))
                .count();
            if old == 0 && healthy_new >= s.spec.instances as usize {
                if let Some(t) = self
                    .services
                    .get_mut(&name)
                    .and_then(|s| s.rollout.as_mut())
                {
                    t.state = RolloutState::Done;
                    t.message.clear();
                }
            }
        }
    }

    /// A new-version instance of `name` failed: during a rollout, enough of those ask for a
    /// rollback to the version it replaces.
    pub(super) fn new_version_failed(&mut self, name: &str, fingerprint: &str, why: &str) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        if s.fingerprint != fingerprint {
            return;
        }
        let Some(t) = s.rollout.as_mut() else { return };
        if t.state != RolloutState::InProgress || t.back_to.is_some() {
            return;
        }
        t.failures = t.failures.saturating_add(1);
        if t.failures < s.spec.rollout.rollback_after {
            t.message = format!(
                "{} of {} new-version failures before a rollback; last: {why}",
                t.failures, s.spec.rollout.rollback_after
            );
            return;
        }
        let Some(previous) = s.versions.get(&t.from).cloned() else {
            t.message = format!(
                "the new version failed {} times (last: {why}) but the previous spec is not known; not rolled back",
                t.failures
            );
            return;
        };
        t.back_to = Some(t.from.clone());
        t.message = format!(
            "rolled back to {}: {} instance(s) of version {fingerprint} failed; last: {why}",
            t.from, t.failures
        );
        self.rollbacks.push(Rollback {
            service: name.to_string(),
            spec: previous,
            reason: t.message.clone(),
        });
    }
}
