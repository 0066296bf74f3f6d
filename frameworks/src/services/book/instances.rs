//! Instances and what a status update does to them: adoption after a restart, RUNNING, ends.

use super::rollout::Track;
use super::task::parse_task_id;
use super::Book;
use crate::services::health::Checks;
use crate::services::status::RolloutState;
use bramble_proto::{AgentId, TaskId, TaskState, TaskStatus};
use std::time::{Duration, Instant};

/// Where an instance is in its life, as far as the scheduler knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Launched (or reported STAGING/STARTING), not yet RUNNING.
    Starting,
    Running {
        since: Instant,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub task_id: TaskId,
    pub service: String,
    pub fingerprint: String,
    pub agent_id: AgentId,
    pub phase: Phase,
    /// A kill was asked for: its end is expected and needs no backoff.
    pub killing: bool,
    pub launched_at: Instant,
    /// Where it listens: the agent's hostname and the ports it was given (empty when an
    /// adopted instance's ports are not known: it is then not probed).
    pub host: String,
    pub ports: Vec<u16>,
    pub checks: Checks,
}

impl Instance {
    pub(super) fn running_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { since } => Some(since),
            Phase::Starting => None,
        }
    }
}

/// What an update meant, for the caller's log and events.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Not ours, or nothing changed.
    Nothing,
    Running {
        service: String,
    },
    /// An instance ended; it is replaced after `backoff` (zero: at once; `None`: not at all,
    /// it was asked to end or its service is gone).
    Ended {
        service: String,
        state: TaskState,
        message: String,
        backoff: Option<Duration>,
    },
    /// A live task no spec accounts for (not kept in the book): kill it.
    Stray,
}

impl Book {
    /// Takes in a status update (a launched instance's, or a reconciliation's for a task this
    /// scheduler has not seen since it started).
    pub fn update(&mut self, status: &TaskStatus, now: Instant) -> Seen {
        let id = &status.task_id;
        if !self.instances.contains_key(id) {
            if status.state.is_terminal() {
                return Seen::Nothing;
            }
            // A live task from before a restart: adopt it if its service is known (it is
            // compared with the spec on the next `kills`); anything else is a stray for the
            // caller to kill.
            let Some((service, fingerprint)) = parse_task_id(id) else {
                return Seen::Stray;
            };
            if !self.services.contains_key(service) {
                return Seen::Stray;
            }
            let Some(agent_id) = status.agent_id.clone() else {
                return Seen::Nothing;
            };
            let phase = match status.state {
                TaskState::Running => Phase::Running { since: now },
                _ => Phase::Starting,
            };
            let (host, ports) = self.places.remove(id).unwrap_or_else(|| {
                let host = self.hosts.get(&agent_id).cloned().unwrap_or_default();
                (host, Vec::new())
            });
            let (service, fingerprint) = (service.to_string(), fingerprint.to_string());
            // An old version still running after a restart: its rollout goes on.
            if let Some(s) = self.services.get_mut(&service) {
                if s.fingerprint != fingerprint && s.rollout.is_none() {
                    s.rollout = Some(Track {
                        from: fingerprint.clone(),
                        state: RolloutState::InProgress,
                        failures: 0,
                        back_to: None,
                        message: String::new(),
                    });
                }
            }
            self.instances.insert(
                id.clone(),
                Instance {
                    task_id: id.clone(),
                    service,
                    fingerprint,
                    agent_id,
                    phase,
                    killing: false,
                    launched_at: now,
                    host,
                    ports,
                    checks: Checks::default(),
                },
            );
            return Seen::Nothing;
        }
        match status.state {
            TaskState::Running => {
                let Some(i) = self.instances.get_mut(id) else {
                    return Seen::Nothing;
                };
                if i.phase == Phase::Starting {
                    i.phase = Phase::Running { since: now };
                    return Seen::Running {
                        service: i.service.clone(),
                    };
                }
                Seen::Nothing
            }
            state if state.is_terminal() => {
                let Some(i) = self.instances.remove(id) else {
                    return Seen::Nothing;
                };
                let backoff = self.after_end(&i, status, now);
                Seen::Ended {
                    service: i.service,
                    state,
                    message: status.message.clone(),
                    backoff,
                }
            }
            _ => Seen::Nothing,
        }
    }
}
