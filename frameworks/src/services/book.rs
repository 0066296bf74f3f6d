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
//!   the instances already placed (including those placed on the same offer).

use super::spec::{glob_matches, Spec};
use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_proto::{AgentId, PortRange, Resources, TaskId, TaskReason, TaskState, TaskStatus};
use bramble_sdk::Offer;
use std::collections::{BTreeMap, HashMap};
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
    pub fn set_spec(&mut self, name: &str, spec: Option<Spec>) {
        match spec {
            Some(spec) => {
                let fingerprint = spec.fingerprint();
                match self.services.get_mut(name) {
                    Some(s) => {
                        if s.fingerprint != fingerprint {
                            // A new version starts with a clean slate.
                            s.failures = 0;
                            s.not_before = None;
                        }
                        s.spec = spec;
                        s.fingerprint = fingerprint;
                    }
                    None => {
                        self.services.insert(
                            name.to_string(),
                            Service {
                                spec,
                                fingerprint,
                                failures: 0,
                                not_before: None,
                            },
                        );
                    }
                }
            }
            None => {
                self.services.remove(name);
            }
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

    /// After a reconnect, kills asked for before may not have reached the master: ask again.
    pub fn forget_kills(&mut self) {
        for i in self.instances.values_mut() {
            i.killing = false;
        }
    }

    /// Current instances of `name` that are not being killed.
    fn live_current(&self, name: &str, fingerprint: &str) -> usize {
        self.instances
            .values()
            .filter(|i| i.service == name && i.fingerprint == fingerprint && !i.killing)
            .count()
    }

    /// How many instances `name` still needs, ignoring its backoff.
    fn missing(&self, name: &str) -> u32 {
        let Some(s) = self.services.get(name) else {
            return 0;
        };
        let live = self.live_current(name, &s.fingerprint) as u32;
        s.spec.instances.saturating_sub(live)
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
            let (mut current, outdated): (Vec<Instance>, Vec<Instance>) = live
                .into_iter()
                .partition(|i| i.fingerprint == service.fingerprint);
            doomed.extend(outdated.into_iter().map(|i| i.task_id));
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
        doomed
    }

    /// Tasks to launch on `offer` (as many instances as fit, for services in name order), or
    /// `Err` with why none fits when some were wanted.
    pub fn place(&mut self, offer: &Offer, now: Instant) -> Result<Vec<TaskInfo>, String> {
        self.saw_agent(&offer.agent_id, &offer.hostname);
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
        let resources = Resources::new(spec.cpus, spec.mem)
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
            self.instances.insert(
                id.clone(),
                Instance {
                    task_id: id.clone(),
                    service: service.to_string(),
                    fingerprint: fingerprint.to_string(),
                    agent_id,
                    phase,
                    killing: false,
                    launched_at: now,
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
        service.failures = service.failures.saturating_add(1);
        let delay = service.spec.restart.delay(service.failures);
        service.not_before = Some(now + delay);
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

/// The command task for one instance: `/bin/sh -c cmd` with the spec's environment and the
/// ports as `PORT0`… (and `PORT` for the first, the Marathon habit).
fn task_info(
    spec: &Spec,
    offer: &Offer,
    task_id: &TaskId,
    resources: Resources,
    ports: &[u16],
) -> TaskInfo {
    let mut command = CommandInfo::shell(spec.cmd.clone());
    command.environment.extend(spec.env.clone());
    for (n, port) in ports.iter().enumerate() {
        command
            .environment
            .insert(format!("PORT{n}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        command.environment.insert("PORT".into(), first.to_string());
    }
    TaskInfo {
        task_id: task_id.clone(),
        name: spec.name.clone(),
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(command),
        executor: None,
        data: Vec::new(),
        mesos: None,
        image: None,
    }
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
        assert_eq!(book.kills(), vec![a[0].task_id.clone()]);
        assert!(book.wants_offers());
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
}
