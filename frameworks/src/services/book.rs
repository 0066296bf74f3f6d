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

use super::health::{Checks, Verdict};
use super::launch::task_info;
use super::spec::{glob_matches, HealthCheck, Spec};
use super::status::{
    InstanceStatus, KillRecord, RolloutState, RolloutStatus, ServiceStatus, MAX_KILLS,
};
use bramble_proto::task::{TaskInfo, CONTAINERS_ATTRIBUTE};
use bramble_proto::{AgentId, PortRange, Resources, TaskId, TaskReason, TaskState, TaskStatus};
use bramble_sdk::Offer;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    fn running_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { since } => Some(since),
            Phase::Starting => None,
        }
    }
}

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
struct Track {
    from: String,
    state: RolloutState,
    /// New-version failures so far.
    failures: u32,
    /// Set once a rollback is asked for: the fingerprint going back to.
    back_to: Option<String>,
    message: String,
}

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

    /// The backoff after an instance of this service failed (ended or killed unhealthy).
    fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.spec.restart.delay(self.failures);
        self.not_before = Some(now + delay);
        delay
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

/// `<service>.<fingerprint>.<unique>` split back, if it is one of ours.
pub fn parse_task_id(task_id: &TaskId) -> Option<(&str, &str)> {
    let mut parts = task_id.as_str().splitn(3, '.');
    let service = parts.next()?;
    let fingerprint = parts.next()?;
    let unique = parts.next()?;
    (!service.is_empty() && !fingerprint.is_empty() && !unique.is_empty())
        .then_some((service, fingerprint))
}

fn new_task_id(service: &str, fingerprint: &str) -> TaskId {
    let fresh = bramble_proto::ids::fresh("i");
    // `i-` then 32 hex digits: 12 of them are plenty to tell one service's instances apart.
    let unique: String = fresh.chars().skip(2).take(12).collect();
    TaskId(format!("{service}.{fingerprint}.{unique}"))
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

    /// Hosts and ports of instances from a stored status record, for adopting them.
    pub fn remember_places(&mut self, status: &ServiceStatus) {
        for i in &status.instances {
            self.places
                .insert(TaskId(i.task_id.clone()), (i.host.clone(), i.ports.clone()));
        }
    }

    /// Rollbacks asked for since the last call.
    pub fn take_rollbacks(&mut self) -> Vec<Rollback> {
        std::mem::take(&mut self.rollbacks)
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

    /// Current instances of `name` that are not being killed and stay where they are.
    fn live_current(&self, name: &str, fingerprint: &str) -> usize {
        self.instances
            .values()
            .filter(|i| i.service == name && !i.killing && !self.leaving(i, fingerprint))
            .count()
    }

    /// How many instances `name` still needs, ignoring its backoff.
    fn missing(&self, name: &str) -> u32 {
        let Some(s) = self.services.get(name) else {
            return 0;
        };
        let live = self.live_current(name, &s.fingerprint) as u32;
        let want = s.spec.instances.saturating_sub(live);
        let old = self
            .instances
            .values()
            .filter(|i| i.service == name && !i.killing && self.leaving(i, &s.fingerprint))
            .count() as u32;
        if old == 0 {
            return want;
        }
        // Rolling out (or off a draining agent): at most `instances + max_surge` live at once.
        let room = (s.spec.instances + s.spec.rollout.max_surge).saturating_sub(live + old);
        want.min(room)
    }

    /// Whether an instance counts as healthy: RUNNING and passing its version's checks.
    fn healthy(&self, i: &Instance) -> bool {
        i.running_since().is_some() && (!self.probed(i) || i.checks.healthy())
    }

    /// The checks `i` is held to: its own version's (none for a version not known, or when
    /// its ports are not known).
    fn checks_of(&self, i: &Instance) -> &[HealthCheck] {
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

    fn probed(&self, i: &Instance) -> bool {
        !self.checks_of(i).is_empty()
    }

    /// Whether any service needs an instance (so offers are worth having).
    pub fn wants_offers(&self) -> bool {
        self.services.keys().any(|n| self.missing(n) > 0)
    }

    /// The earliest moment a service that needs instances may launch one, if all that need
    /// one are backing off; `None` when one may launch now or none needs any.
    pub fn backing_off_until(&self, now: Instant) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for (name, s) in &self.services {
            if self.missing(name) == 0 {
                continue;
            }
            match s.not_before {
                Some(t) if t > now => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                _ => return None,
            }
        }
        earliest
    }

    /// The instances to kill now (each returned once until it ends or `forget_kills`): those
    /// of a removed service or another fingerprint, and those above the count.
    pub fn kills(&mut self) -> Vec<TaskId> {
        let mut doomed: Vec<TaskId> = Vec::new();
        let by_service = |book: &Book, name: &str| -> Vec<Instance> {
            book.instances
                .values()
                .filter(|i| i.service == name && !i.killing)
                .cloned()
                .collect()
        };
        let names: Vec<String> = {
            let mut n: Vec<String> = self.instances.values().map(|i| i.service.clone()).collect();
            n.sort();
            n.dedup();
            n
        };
        for name in names {
            let live = by_service(self, &name);
            let Some(service) = self.services.get(&name) else {
                doomed.extend(live.into_iter().map(|i| i.task_id));
                continue;
            };
            let healthy_total = live.iter().filter(|i| self.healthy(i)).count();
            let (mut current, mut outdated): (Vec<Instance>, Vec<Instance>) = live
                .into_iter()
                .partition(|i| !self.leaving(i, &service.fingerprint));
            // Old instances (and those on draining agents) go unhealthy first, then oldest
            // first, and a healthy one only while `min_healthy` stay healthy without it: its
            // replacement elsewhere is started first and counted once healthy.
            let min_healthy = service
                .spec
                .rollout
                .min_healthy_count(service.spec.instances) as usize;
            outdated.sort_by_key(|i| (self.healthy(i), i.launched_at));
            let mut healthy_left = healthy_total;
            for i in outdated {
                if !self.healthy(&i) {
                    doomed.push(i.task_id);
                } else if healthy_left > min_healthy {
                    healthy_left -= 1;
                    doomed.push(i.task_id);
                }
            }
            let keep = service.spec.instances as usize;
            if current.len() > keep {
                // Keep the running ones, oldest first: kill starting ones, then the newest.
                current.sort_by_key(|i| {
                    (
                        matches!(i.phase, Phase::Running { .. }),
                        std::cmp::Reverse(i.launched_at),
                    )
                });
                let excess = current.len() - keep;
                doomed.extend(current.into_iter().take(excess).map(|i| i.task_id));
            }
        }
        for id in &doomed {
            if let Some(i) = self.instances.get_mut(id) {
                i.killing = true;
            }
        }
        self.refresh_rollouts();
        doomed
    }

    /// A rollout is done once only new instances are left, as many as wanted, all healthy.
    fn refresh_rollouts(&mut self) {
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
    fn new_version_failed(&mut self, name: &str, fingerprint: &str, why: &str) {
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

    /// Tasks to launch on `offer` (as many instances as fit, for services in name order), or
    /// `Err` with why none fits when some were wanted.
    pub fn place(&mut self, offer: &Offer, now: Instant) -> Result<Vec<TaskInfo>, String> {
        self.saw_agent(&offer.agent_id, &offer.hostname);
        if self.draining.contains(&offer.agent_id) {
            return Err(format!("{} is being drained", offer.hostname));
        }
        let mut room = offer.resources.clone();
        let mut tasks = Vec::new();
        let mut last_refusal: Option<String> = None;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            while let Some(service) = self.services.get(&name) {
                if self.missing(&name) == 0 || service.not_before.is_some_and(|t| t > now) {
                    break;
                }
                let service = service.clone();
                match self.fit(&service.spec, offer, &room) {
                    Ok((resources, ports)) => {
                        let task_id = new_task_id(&name, &service.fingerprint);
                        room = room.checked_sub(&resources).unwrap_or_default();
                        tasks.push(task_info(&service.spec, offer, &task_id, resources, &ports));
                        let ports = ports.clone();
                        self.instances.insert(
                            task_id.clone(),
                            Instance {
                                task_id,
                                service: name.clone(),
                                fingerprint: service.fingerprint.clone(),
                                agent_id: offer.agent_id.clone(),
                                phase: Phase::Starting,
                                killing: false,
                                launched_at: now,
                                host: offer.hostname.clone(),
                                ports,
                                checks: Checks::new(service.spec.health.len()),
                            },
                        );
                    }
                    Err(why) => {
                        last_refusal = Some(format!("{name}: {why}"));
                        break;
                    }
                }
            }
        }
        match (tasks.is_empty(), last_refusal) {
            (true, Some(why)) => Err(why),
            _ => Ok(tasks),
        }
    }

    /// Whether one more instance of `spec` may go on `offer`'s agent, and with which
    /// resources and ports from `room` (what is left of the offer).
    fn fit(
        &self,
        spec: &Spec,
        offer: &Offer,
        room: &Resources,
    ) -> Result<(Resources, Vec<u16>), String> {
        let c = &spec.constraints;
        let host = &offer.hostname;
        if let Some(image) = &spec.image {
            if !offer.attributes.contains_key(CONTAINERS_ATTRIBUTE) {
                return Err(format!("{host} cannot run images (for {image})"));
            }
        }
        if let Some(pattern) = &c.hostname_like {
            if !glob_matches(pattern, host) {
                return Err(format!("{host} is not like {pattern:?}"));
            }
        }
        for (key, want) in &c.attributes {
            match offer.attributes.get(key) {
                Some(have) if have == want => {}
                Some(have) => return Err(format!("{host} has {key}={have}, not {want}")),
                None => return Err(format!("{host} has no attribute {key}")),
            }
        }
        let here = self
            .instances
            .values()
            .filter(|i| i.service == spec.name && !i.killing);
        let on_agent = here
            .clone()
            .filter(|i| i.agent_id == offer.agent_id)
            .count();
        let on_host = here
            .filter(|i| i.agent_id == offer.agent_id || self.hosts.get(&i.agent_id) == Some(host))
            .count();
        if c.unique_hostname && on_host > 0 {
            return Err(format!("{host} already runs an instance (unique_hostname)"));
        }
        if let Some(max) = c.max_per_agent {
            if on_agent >= max as usize {
                return Err(format!(
                    "{host} already runs {on_agent} (max_per_agent = {max})"
                ));
            }
        }
        let ports = take_ports(&room.ports, spec.ports as usize)
            .ok_or_else(|| format!("{host} offers fewer than {} free ports", spec.ports))?;
        let resources = spec
            .footprint()
            .with_ports(ports.iter().map(|&p| PortRange::new(p, p)));
        if let Some(short) = room.shortfall(&resources) {
            return Err(format!("{host} is too small ({short})"));
        }
        Ok((resources, ports))
    }

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

    /// The restart policy for an instance that ended: its service's backoff, if any.
    fn after_end(&mut self, i: &Instance, status: &TaskStatus, now: Instant) -> Option<Duration> {
        let service = self.services.get_mut(&i.service)?;
        if i.killing || i.fingerprint != service.fingerprint {
            return None;
        }
        let not_its_fault = status.state == TaskState::Lost
            || matches!(
                status.reason,
                Some(TaskReason::InvalidOffer | TaskReason::ResourcesNotInOffer)
            );
        if not_its_fault {
            return Some(Duration::ZERO);
        }
        if let Phase::Running { since } = i.phase {
            if now.duration_since(since).as_secs_f64() >= service.spec.restart.min_uptime_secs {
                service.failures = 0;
            }
        }
        let delay = service.failed(now);
        let why = format!("{} ended {}: {}", i.task_id, status.state, status.message);
        self.new_version_failed(&i.service, &i.fingerprint, &why);
        Some(delay)
    }
}

/// `count` single ports from `ranges`, lowest first; `None` if there are fewer.
fn take_ports(ranges: &[PortRange], count: usize) -> Option<Vec<u16>> {
    let mut ports = Vec::with_capacity(count);
    for r in ranges {
        if r.is_empty() {
            continue;
        }
        let mut p = r.begin;
        while ports.len() < count {
            ports.push(p);
            if p == r.end {
                break;
            }
            p += 1;
        }
        if ports.len() == count {
            break;
        }
    }
    (ports.len() == count).then_some(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::{status, TaskStatusExt};

    fn spec(name: &str, instances: u32) -> Spec {
        Spec::parse(
            "t.toml",
            &format!(
                "name = \"{name}\"\ninstances = {instances}\ncmd = \"exec sleep 100\"\ncpus = 0.5\nmem = 32\nports = 1\n[env]\nA = \"b\"\n"
            ),
        )
        .expect("valid")
    }

    fn offer_on(agent: &str, host: &str, cpus: f64) -> Offer {
        Offer {
            id: format!("o-{agent}").into(),
            framework_id: "fw".into(),
            agent_id: agent.into(),
            hostname: host.into(),
            resources: Resources::new(cpus, 1024).with_ports([PortRange::new(31000, 31009)]),
            attributes: [("rack".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            executor_ids: vec![],
        }
    }

    fn running(book: &mut Book, task: &TaskInfo, now: Instant) {
        let s = status(task, TaskState::Running);
        assert!(matches!(book.update(&s, now), Seen::Running { .. }));
    }

    #[test]
    fn an_offer_takes_as_many_instances_as_fit_each_with_its_own_ports_and_env() {
        let now = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(spec("web", 3)));
        assert!(book.wants_offers());
        let tasks = book.place(&offer_on("a1", "pi-1", 1.0), now).expect("fits");
        assert_eq!(tasks.len(), 2, "1 cpu holds two 0.5-cpu instances");
        let env = |t: &TaskInfo, k: &str| {
            t.command
                .as_ref()
                .and_then(|c| c.environment.get(k).cloned())
        };
        assert_eq!(env(&tasks[0], "PORT0").as_deref(), Some("31000"));
        assert_eq!(env(&tasks[1], "PORT0").as_deref(), Some("31001"));
        assert_eq!(env(&tasks[1], "PORT").as_deref(), Some("31001"));
        assert_eq!(env(&tasks[0], "A").as_deref(), Some("b"));
        assert_eq!(tasks[0].resources.ports, vec![PortRange::new(31000, 31000)]);
        for t in &tasks {
            let (service, fp) = parse_task_id(&t.task_id).expect("ours");
            assert_eq!(service, "web");
            assert_eq!(fp, spec("web", 3).fingerprint());
        }
        let more = book.place(&offer_on("a2", "pi-2", 4.0), now).expect("fits");
        assert_eq!(more.len(), 1, "only the third is still missing");
        assert!(!book.wants_offers());
        assert!(book
            .place(&offer_on("a3", "pi-3", 4.0), now)
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn constraints_refuse_offers_with_the_reason() {
        let now = Instant::now();
        let mut s = spec("web", 2);
        s.constraints.unique_hostname = true;
        let mut book = Book::default();
        book.set_spec("web", Some(s.clone()));
        let tasks = book
            .place(&offer_on("a1", "pi-1", 4.0), now)
            .expect("one fits");
        assert_eq!(tasks.len(), 1);
        let refused = book
            .place(&offer_on("a1", "pi-1", 4.0), now)
            .expect_err("unique");
        assert!(refused.contains("unique_hostname"), "{refused}");
        // Another agent on the same host counts as the same host.
        book.saw_agent(&"a1b".into(), "pi-1");
        assert!(book.place(&offer_on("a1b", "pi-1", 4.0), now).is_err());

        s.constraints.unique_hostname = false;
        s.constraints.hostname_like = Some("pi-*".into());
        s.constraints.attributes = [("rack".to_string(), "b".to_string())]
            .into_iter()
            .collect();
        let mut book = Book::default();
        book.set_spec("web", Some(s.clone()));
        let refused = book
            .place(&offer_on("a1", "pi-1", 4.0), now)
            .expect_err("attr");
        assert!(refused.contains("rack=a, not b"), "{refused}");
        s.constraints.attributes.clear();
        book.set_spec("web", Some(s.clone()));
        let refused = book
            .place(&offer_on("a1", "nas", 4.0), now)
            .expect_err("like");
        assert!(refused.contains("not like"), "{refused}");
        s.constraints.max_per_agent = Some(1);
        book.set_spec("web", Some(s));
        assert_eq!(
            book.place(&offer_on("a1", "pi-1", 4.0), now)
                .expect("one")
                .len(),
            1
        );
        let refused = book
            .place(&offer_on("a1", "pi-1", 4.0), now)
            .expect_err("max");
        assert!(refused.contains("max_per_agent"), "{refused}");
        let mut no_ports = offer_on("a9", "pi-9", 4.0);
        no_ports.resources.ports.clear();
        let refused = book.place(&no_ports, now).expect_err("ports");
        assert!(refused.contains("free ports"), "{refused}");
    }

    #[test]
    fn a_failed_instance_is_replaced_after_a_growing_backoff_reset_by_a_long_run() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(spec("web", 1)));
        let task = book
            .place(&offer_on("a1", "pi-1", 4.0), t0)
            .expect("fits")
            .remove(0);
        running(&mut book, &task, t0);
        let failed = status(&task, TaskState::Failed).message("exited 137");
        let seen = book.update(&failed, t0 + Duration::from_secs(1));
        assert_eq!(
            seen,
            Seen::Ended {
                service: "web".into(),
                state: TaskState::Failed,
                message: "exited 137".into(),
                backoff: Some(Duration::from_secs(1))
            }
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(book.wants_offers());
        assert_eq!(
            book.backing_off_until(t1),
            Some(t1 + Duration::from_secs(1))
        );
        assert!(book
            .place(&offer_on("a1", "pi-1", 4.0), t1)
            .expect("gated")
            .is_empty());
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(book.backing_off_until(t2), None);
        let second = book
            .place(&offer_on("a1", "pi-1", 4.0), t2)
            .expect("fits")
            .remove(0);
        // It dies at once again: the backoff doubles.
        let seen = book.update(&status(&second, TaskState::Failed), t2);
        assert!(
            matches!(seen, Seen::Ended { backoff: Some(d), .. } if d == Duration::from_secs(2))
        );
        let t3 = t2 + Duration::from_secs(2);
        let third = book
            .place(&offer_on("a1", "pi-1", 4.0), t3)
            .expect("fits")
            .remove(0);
        running(&mut book, &third, t3);
        // A run past min_uptime resets the count: back to the first delay.
        let t4 = t3 + Duration::from_secs(11);
        let seen = book.update(&status(&third, TaskState::Failed), t4);
        assert!(
            matches!(seen, Seen::Ended { backoff: Some(d), .. } if d == Duration::from_secs(1))
        );
    }

    #[test]
    fn lost_instances_are_replaced_at_once_and_killed_ones_not_counted_as_failures() {
        let now = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(spec("web", 2)));
        let tasks = book.place(&offer_on("a1", "pi-1", 4.0), now).expect("fits");
        let lost = status(&tasks[0], TaskState::Lost).reason(TaskReason::AgentRemoved);
        assert!(
            matches!(book.update(&lost, now), Seen::Ended { backoff: Some(d), .. } if d.is_zero())
        );
        assert_eq!(book.backing_off_until(now), None);
        // Scaled down to none: the other is killed, and its end is no failure.
        book.set_spec("web", Some(spec("web", 0)));
        let killed = book.kills();
        assert_eq!(killed, vec![tasks[1].task_id.clone()]);
        assert!(book.kills().is_empty(), "asked once");
        let end = status(&tasks[1], TaskState::Killed);
        assert!(matches!(
            book.update(&end, now),
            Seen::Ended { backoff: None, .. }
        ));
        assert!(!book.wants_offers());
    }

    #[test]
    fn scaling_down_kills_starting_then_newest_and_a_new_version_replaces_all() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(spec("web", 3)));
        let a = book.place(&offer_on("a1", "pi-1", 0.5), t0).expect("fits");
        let b = book
            .place(&offer_on("a2", "pi-2", 0.5), t0 + Duration::from_secs(1))
            .expect("fits");
        let c = book
            .place(&offer_on("a3", "pi-3", 0.5), t0 + Duration::from_secs(2))
            .expect("fits");
        running(&mut book, &a[0], t0);
        running(&mut book, &c[0], t0);
        book.set_spec("web", Some(spec("web", 1)));
        let mut killed = book.kills();
        killed.sort();
        let mut expected = vec![b[0].task_id.clone(), c[0].task_id.clone()];
        expected.sort();
        assert_eq!(
            killed, expected,
            "the starting one, then the newest running one"
        );
        // Scaling changed no fingerprint; a changed command does.
        let mut v2 = spec("web", 1);
        v2.cmd = "exec sleep 200".into();
        book.set_spec("web", Some(v2));
        // The old one keeps serving (min_healthy 1.0) until its replacement runs (surge 1).
        assert!(book.kills().is_empty());
        assert!(book.wants_offers());
        let t3 = t0 + Duration::from_secs(3);
        let new = book.place(&offer_on("a4", "pi-4", 0.5), t3).expect("fits");
        assert_eq!(new.len(), 1);
        assert!(book.kills().is_empty(), "not before the new one runs");
        running(&mut book, &new[0], t3);
        assert_eq!(book.kills(), vec![a[0].task_id.clone()]);
        book.set_spec("web", None);
        assert!(!book.wants_offers());
    }

    #[test]
    fn after_a_restart_live_tasks_are_adopted_and_strays_reported() {
        let now = Instant::now();
        let mut book = Book::default();
        let web = spec("web", 1);
        book.set_spec("web", Some(web.clone()));
        let id = TaskId(format!("web.{}.abc", web.fingerprint()));
        let mut live = status(&id, TaskState::Running);
        live.agent_id = Some("a1".into());
        assert_eq!(book.update(&live, now), Seen::Nothing);
        assert!(!book.wants_offers(), "the adopted instance counts");
        assert!(book.kills().is_empty());
        let mut other = status(&TaskId::from("gone.0000.x"), TaskState::Running);
        other.agent_id = Some("a1".into());
        assert_eq!(book.update(&other, now), Seen::Stray);
        assert!(
            book.kills().is_empty(),
            "a stray is the caller's to kill, once"
        );
        let weird = status(&TaskId::from("not-ours"), TaskState::Running);
        assert_eq!(book.update(&weird, now), Seen::Stray);
    }
    fn checked(name: &str, instances: u32, cmd: &str) -> Spec {
        Spec::parse(
            "t.toml",
            &format!(
                "name = \"{name}\"\ninstances = {instances}\ncmd = \"{cmd}\"\ncpus = 0.1\nmem = 32\nports = 1\n[[health]]\nprotocol = \"http\"\npath = \"/\"\ngrace_secs = 0.0\ninterval_secs = 1.0\nmax_failures = 2\n[rollout]\nmin_healthy = 1.0\nmax_surge = 1\nrollback_after = 2\n"
            ),
        )
        .expect("valid")
    }

    /// Every due probe of the book answered with `outcome`; the kills they led to.
    fn answer_all(book: &mut Book, now: Instant, outcome: Result<(), String>) -> Vec<String> {
        let mut killed = Vec::new();
        for p in book.due_probes(now) {
            if let HealthEvent::Kill { reason, .. } =
                book.probe_result(&p.task_id, p.index, outcome.clone(), now, 0.0)
            {
                killed.push(reason);
            }
        }
        killed
    }

    #[test]
    fn a_failing_health_check_kills_the_instance_with_the_reason_and_it_is_replaced() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(checked("web", 1, "v1")));
        let task = book
            .place(&offer_on("a1", "pi-1", 4.0), t0)
            .expect("fits")
            .remove(0);
        assert!(book.due_probes(t0).is_empty(), "not probed before RUNNING");
        running(&mut book, &task, t0);
        let probes = book.due_probes(t0);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].host, "pi-1");
        assert_eq!(probes[0].ports, vec![31000]);
        book.probe_result(&probes[0].task_id, 0, Ok(()), t0, 0.0);
        assert!(book.status_of("web").expect("known").instances[0].healthy);
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            answer_all(&mut book, t1, Err("answered 500".into())).is_empty(),
            "1 of 2"
        );
        let status = book.status_of("web").expect("known");
        assert!(status.instances[0].healthy, "not condemned by one failure");
        assert!(status.instances[0]
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("500")));
        let t2 = t1 + Duration::from_secs(1);
        let killed = answer_all(&mut book, t2, Err("answered 500".into()));
        assert_eq!(killed.len(), 1);
        assert!(
            killed[0].contains("http GET / on PORT0") && killed[0].contains("500"),
            "{killed:?}"
        );
        assert!(
            book.kills().is_empty(),
            "the scheduler kills it, not kills()"
        );
        let status = book.status_of("web").expect("known");
        assert_eq!(status.kills.len(), 1);
        assert_eq!(status.kills[0].task_id, task.task_id.to_string());
        // Replaced after the restart backoff (1 s by default).
        assert!(book.wants_offers());
        assert!(book
            .place(&offer_on("a1", "pi-1", 4.0), t2)
            .expect("gated")
            .is_empty());
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(
            book.place(&offer_on("a1", "pi-1", 4.0), t3)
                .expect("fits")
                .len(),
            1
        );
    }

    #[test]
    fn a_draining_agents_instances_move_one_at_a_time_keeping_min_healthy() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(checked("web", 2, "v1")));
        let old = book.place(&offer_on("a1", "pi-1", 4.0), t0).expect("fits");
        assert_eq!(old.len(), 2);
        for t in &old {
            running(&mut book, t, t0);
        }
        answer_all(&mut book, t0, Ok(()));
        assert!(!book.wants_offers());
        book.set_draining(&AgentId::from("a1"), true);
        assert!(book.wants_offers(), "replacements are wanted elsewhere");
        assert!(
            book.kills().is_empty(),
            "both are needed healthy (min_healthy = 1.0)"
        );
        let refused = book.place(&offer_on("a1", "pi-1", 4.0), t0);
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("drained")),
            "{refused:?}"
        );
        let t1 = t0 + Duration::from_secs(1);
        let first = book.place(&offer_on("a2", "pi-2", 4.0), t1).expect("fits");
        assert_eq!(
            first.len(),
            1,
            "one above the count at most (max_surge = 1)"
        );
        running(&mut book, &first[0], t1);
        assert!(book.kills().is_empty(), "RUNNING is not yet healthy");
        answer_all(&mut book, t1, Ok(()));
        let killed = book.kills();
        assert_eq!(
            killed.len(),
            1,
            "one leaves once its replacement is healthy"
        );
        assert!(old.iter().any(|t| t.task_id == killed[0]));
        let ended = book.update(&status(&killed[0], TaskState::Killed), t1);
        assert!(
            matches!(ended, Seen::Ended { backoff: None, .. }),
            "a move is no failure: {ended:?}"
        );
        let second = book.place(&offer_on("a2", "pi-2", 4.0), t1).expect("fits");
        assert_eq!(second.len(), 1);
        running(&mut book, &second[0], t1);
        let t2 = t1 + Duration::from_secs(1);
        answer_all(&mut book, t2, Ok(()));
        let last = book.kills();
        assert_eq!(last.len(), 1);
        book.update(&status(&last[0], TaskState::Killed), t2);
        assert!(book.kills().is_empty());
        assert!(!book.wants_offers(), "both run on a2 now");
        assert!(book.instances().all(|i| i.agent_id == AgentId::from("a2")));
        assert_eq!(
            book.status_of("web").and_then(|s| s.rollout),
            None,
            "a move is not a new version"
        );
        // Undrained: a1 takes instances again.
        book.set_draining(&AgentId::from("a1"), false);
        book.set_spec("web", Some(checked("web", 3, "v1")));
        assert_eq!(
            book.place(&offer_on("a1", "pi-1", 4.0), t2)
                .expect("fits")
                .len(),
            1
        );
    }

    #[test]
    fn a_rollout_keeps_min_healthy_and_surge_and_finishes() {
        let t0 = Instant::now();
        let mut book = Book::default();
        book.set_spec("web", Some(checked("web", 2, "v1")));
        let old = book.place(&offer_on("a1", "pi-1", 4.0), t0).expect("fits");
        assert_eq!(old.len(), 2);
        for t in &old {
            running(&mut book, t, t0);
        }
        answer_all(&mut book, t0, Ok(()));
        let change = book.set_spec("web", Some(checked("web", 2, "v2")));
        assert!(
            matches!(change, SpecChange::NewVersion { .. }),
            "{change:?}"
        );
        assert!(book.kills().is_empty(), "both old ones are needed healthy");
        let t1 = t0 + Duration::from_secs(1);
        let new = book.place(&offer_on("a1", "pi-1", 4.0), t1).expect("fits");
        assert_eq!(new.len(), 1, "one above the count at most (max_surge = 1)");
        running(&mut book, &new[0], t1);
        assert!(book.kills().is_empty(), "RUNNING is not yet healthy");
        answer_all(&mut book, t1, Ok(()));
        let killed = book.kills();
        assert_eq!(
            killed.len(),
            1,
            "one old one goes once the new one is healthy"
        );
        assert!(old.iter().any(|t| t.task_id == killed[0]));
        book.update(
            &status(&TaskId(killed[0].to_string()), TaskState::Killed),
            t1,
        );
        let rollout = book
            .status_of("web")
            .and_then(|s| s.rollout)
            .expect("rolling");
        assert_eq!(rollout.state, RolloutState::InProgress);
        let second = book.place(&offer_on("a1", "pi-1", 4.0), t1).expect("fits");
        assert_eq!(second.len(), 1);
        running(&mut book, &second[0], t1);
        let t2 = t1 + Duration::from_secs(1);
        answer_all(&mut book, t2, Ok(()));
        let last = book.kills();
        assert_eq!(last.len(), 1);
        book.update(&status(&TaskId(last[0].to_string()), TaskState::Killed), t2);
        book.kills();
        let rollout = book
            .status_of("web")
            .and_then(|s| s.rollout)
            .expect("rolled");
        assert_eq!(rollout.state, RolloutState::Done);
        assert_eq!((rollout.healthy, rollout.wanted), (2, 2));
        assert!(book.take_rollbacks().is_empty());
    }

    #[test]
    fn a_new_version_that_fails_its_checks_asks_for_a_rollback_and_the_old_ones_keep_serving() {
        let t0 = Instant::now();
        let mut book = Book::default();
        let v1 = checked("web", 2, "v1");
        book.set_spec("web", Some(v1.clone()));
        let old = book.place(&offer_on("a1", "pi-1", 4.0), t0).expect("fits");
        for t in &old {
            running(&mut book, t, t0);
        }
        answer_all(&mut book, t0, Ok(()));
        book.set_spec("web", Some(checked("web", 2, "v2")));
        let mut now = t0;
        for round in 0..2 {
            now += Duration::from_secs(5);
            let new = book.place(&offer_on("a1", "pi-1", 4.0), now).expect("fits");
            assert_eq!(new.len(), 1, "round {round}");
            running(&mut book, &new[0], now);
            // The old ones pass, the new one fails twice: killed.
            for _ in 0..2 {
                now += Duration::from_secs(1);
                for p in book.due_probes(now) {
                    let bad = p.task_id == new[0].task_id;
                    let outcome = if bad {
                        Err("answered 500".into())
                    } else {
                        Ok(())
                    };
                    book.probe_result(&p.task_id, p.index, outcome, now, 0.0);
                }
            }
            assert!(book.kills().is_empty(), "no old one is given up");
            book.update(&status(&new[0], TaskState::Killed), now);
        }
        let rollbacks = book.take_rollbacks();
        assert_eq!(rollbacks.len(), 1, "after rollback_after = 2 failures");
        assert_eq!(rollbacks[0].spec, v1);
        assert!(
            rollbacks[0].reason.contains("answered 500"),
            "{}",
            rollbacks[0].reason
        );
        // The scheduler writes v1 back; it arrives as a spec change.
        assert_eq!(book.set_spec("web", Some(v1)), SpecChange::RolledBack);
        assert!(
            book.kills().is_empty(),
            "the old instances are current again"
        );
        assert!(!book.wants_offers());
        let rollout = book
            .status_of("web")
            .and_then(|s| s.rollout)
            .expect("recorded");
        assert_eq!(rollout.state, RolloutState::RolledBack);
        assert!(
            rollout.message.contains("rolled back"),
            "{}",
            rollout.message
        );
    }

    #[test]
    fn image_services_go_only_to_agents_that_run_images() {
        let now = Instant::now();
        let mut s = spec("web", 1);
        s.image = Some("docker.io/library/busybox".into());
        let mut book = Book::default();
        book.set_spec("web", Some(s));
        let refused = book
            .place(&offer_on("a1", "pi-1", 4.0), now)
            .expect_err("no runtime");
        assert!(refused.contains("cannot run images"), "{refused}");
        let mut able = offer_on("a2", "pi-2", 4.0);
        able.attributes
            .insert(CONTAINERS_ATTRIBUTE.into(), "crun".into());
        let tasks = book.place(&able, now).expect("fits");
        assert_eq!(tasks[0].image.as_deref(), Some("docker.io/library/busybox"));
    }
}
