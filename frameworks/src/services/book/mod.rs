//! The service scheduler's pure core: the specs it was given, the instances it knows, and
//! what to do about the difference. No driver and no clock of its own (`now` comes in), so
//! every decision — what to launch on an offer, what to kill, how long to back off — is
//! unit-tested without a master.
//!
//! An instance is a task whose id is `<service>.<fingerprint>.<unique>`: the fingerprint says
//! which spec it runs (everything but the instance count, `Spec::fingerprint`), so a scheduler
//! that restarts learns, from the master's reconciliation alone, which service each live task
//! belongs to and whether it is current.
//!
//! Policy:
//! - a service wants `instances` live instances of its current fingerprint; instances of
//!   another fingerprint (the spec changed, or `restart`) and those above the count are killed,
//!   starting (not yet RUNNING) ones first, then the newest;
//! - an instance that ends without being asked to is replaced after the spec's backoff
//!   (`restart` policy), which grows with consecutive failures and is reset by a run longer
//!   than `min_uptime_secs`; an instance lost with its agent is replaced at once (not its
//!   fault);
//! - offers are used for services in name order; constraints are checked per instance against
//!   the instances already placed (including those placed on the same offer);
//! - health checks (`health.rs` for the bookkeeping, the probes are the scheduler's) run on
//!   RUNNING instances; one that fails `max_failures` times in a row is killed, with the check
//!   and what it saw as the reason, and replaced after the restart backoff;
//! - a new version (another fingerprint) rolls out: new instances start while at most
//!   `instances + max_surge` are live, and old ones are killed only while at least
//!   `min_healthy` instances stay healthy (unhealthy old ones go first). New-version instances
//!   that fail `rollback_after` times (health kills, or ending by themselves) before the
//!   rollout is done ask for a rollback to the previous spec ([`Book::take_rollbacks`]); the
//!   scheduler writes it back to the store, and it arrives here as one more spec change;
//! - an agent being drained (the master says which) gets nothing placed on it, and its
//!   instances leave it as old versions do in a rollout: a replacement starts elsewhere, and
//!   one is killed only while `min_healthy` stay healthy without it.
//!
//! The modules, one job each: `instances.rs` (what a status update does to an instance),
//! `placement.rs` (what goes on an offer), `task.rs` (an instance's task id; the
//! `TaskInfo` is `launch.rs`'s), `kills.rs` (what to kill), `rollout.rs` (spec changes, rollouts and
//! rollbacks), `probes.rs` (health probes and what they mean), `backoff.rs` (the restart
//! policy).

mod backoff;
mod instances;
mod kills;
mod placement;
mod probes;
mod rollout;
mod task;
#[cfg(test)]
mod tests;

pub use instances::{Instance, Phase, Seen};
pub use probes::{HealthEvent, Probe};
pub use rollout::{Rollback, SpecChange};
pub use task::parse_task_id;

use super::spec::Spec;
use super::status::{InstanceStatus, KillRecord, RolloutStatus, ServiceStatus};
use bramble_proto::{AgentId, TaskId};
use rollout::Track;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// A service's spec as stored, and its restart bookkeeping.
#[derive(Debug, Clone)]
struct Service {
    spec: Spec,
    fingerprint: String,
    /// Ends in a row that were not asked for (reset by a long enough run).
    failures: u32,
    /// No replacement is launched before this (the backoff after a failure).
    not_before: Option<Instant>,
    /// Specs this service ran, by fingerprint (the current one, the previous ones seen, and
    /// the newest of its history): an old instance is probed with its own version's checks,
    /// and a rollback goes to `rollout.from`'s.
    versions: HashMap<String, Spec>,
    rollout: Option<Track>,
    kills: Vec<KillRecord>,
}

impl Service {
    fn new(spec: Spec) -> Self {
        let fingerprint = spec.fingerprint();
        Self {
            versions: [(fingerprint.clone(), spec.clone())].into_iter().collect(),
            spec,
            fingerprint,
            failures: 0,
            not_before: None,
            rollout: None,
            kills: Vec::new(),
        }
    }
}

/// The services and their instances.
#[derive(Debug, Default)]
pub struct Book {
    services: BTreeMap<String, Service>,
    instances: BTreeMap<TaskId, Instance>,
    /// Which host each agent is on, from offers (for `unique_hostname` and `hostname_like`).
    hosts: HashMap<AgentId, String>,
    /// Hosts and ports of instances from before a restart (the stored status records), for
    /// adopting them.
    places: HashMap<TaskId, (String, Vec<u16>)>,
    rollbacks: Vec<Rollback>,
    /// Agents being drained (`bramble agent drain`): nothing is placed there, and their
    /// instances move elsewhere as in a rolling update.
    draining: HashSet<AgentId>,
}

impl Book {
    /// Hosts and ports of instances from a stored status record, for adopting them.
    pub fn remember_places(&mut self, status: &ServiceStatus) {
        for i in &status.instances {
            self.places
                .insert(TaskId(i.task_id.clone()), (i.host.clone(), i.ports.clone()));
        }
    }

    pub fn spec(&self, name: &str) -> Option<&Spec> {
        self.services.get(name).map(|s| &s.spec)
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Remembers the host of an agent seen in an offer.
    pub fn saw_agent(&mut self, agent_id: &AgentId, hostname: &str) {
        self.hosts.insert(agent_id.clone(), hostname.to_string());
    }

    /// Whether agent `agent` is being drained (the master says so on every subscription and
    /// when an operator drains or undrains it).
    pub fn set_draining(&mut self, agent: &AgentId, draining: bool) {
        if draining {
            self.draining.insert(agent.clone());
        } else {
            self.draining.remove(agent);
        }
    }

    /// Forgets which agents drain (before the master tells again, on a new subscription).
    pub fn forget_draining(&mut self) {
        self.draining.clear();
    }

    /// Whether `i` has to go: it runs another version than its service's, or on an agent
    /// being drained.
    fn leaving(&self, i: &Instance, fingerprint: &str) -> bool {
        i.fingerprint != fingerprint || self.draining.contains(&i.agent_id)
    }

    /// After a reconnect, kills asked for before may not have reached the master: ask again.
    pub fn forget_kills(&mut self) {
        for i in self.instances.values_mut() {
            i.killing = false;
        }
    }

    /// What `bramble service show` is told about `name`.
    pub fn status_of(&self, name: &str) -> Option<ServiceStatus> {
        let s = self.services.get(name)?;
        let instances = self
            .instances
            .values()
            .filter(|i| i.service == name)
            .map(|i| InstanceStatus {
                task_id: i.task_id.to_string(),
                agent_id: i.agent_id.to_string(),
                host: i.host.clone(),
                ports: i.ports.clone(),
                running: i.running_since().is_some(),
                healthy: !i.killing && self.healthy(i),
                last_failure: i.checks.last_failure().map(str::to_string),
            })
            .collect();
        let rollout = s.rollout.as_ref().map(|t| {
            let healthy = self
                .instances
                .values()
                .filter(|i| i.service == name && i.fingerprint == s.fingerprint)
                .filter(|i| !i.killing && self.healthy(i))
                .count() as u32;
            RolloutStatus {
                from: t.from.clone(),
                to: s.fingerprint.clone(),
                state: t.state,
                healthy,
                wanted: s.spec.instances,
                message: t.message.clone(),
            }
        });
        Some(ServiceStatus {
            instances,
            kills: s.kills.clone(),
            rollout,
            service_type: s.spec.service_type.clone(),
        })
    }
}
