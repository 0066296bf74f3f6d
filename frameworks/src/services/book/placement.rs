//! What goes on an offer: how many instances each service still needs, and which fit where.

use super::instances::{Instance, Phase};
use super::task::new_task_id;
use super::Book;
use crate::services::health::Checks;
use crate::services::launch::task_info;
use crate::services::spec::{glob_matches, Spec};
use bramble_proto::task::{TaskInfo, CONTAINERS_ATTRIBUTE};
use bramble_proto::{PortRange, Resources};
use bramble_sdk::Offer;
use std::time::Instant;

impl Book {
    /// Current instances of `name` that are not being killed and stay where they are.
    fn live_current(&self, name: &str, fingerprint: &str) -> usize {
        self.instances
            .values()
            .filter(|i| i.service == name && !i.killing && !self.leaving(i, fingerprint))
            .count()
    }

    /// How many instances `name` still needs, ignoring its backoff.
    pub(super) fn missing(&self, name: &str) -> u32 {
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

    /// Whether any service needs an instance (so offers are worth having).
    pub fn wants_offers(&self) -> bool {
        self.services.keys().any(|n| self.missing(n) > 0)
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
