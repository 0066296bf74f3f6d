//! The master's allocator: decides which framework is offered each agent's free resources,
//! by weighted Dominant Resource Fairness (Ghodsi et al., NSDI 2011), the way Mesos's
//! hierarchical allocator does for a single role.
//!
//! It is a pure state machine: no I/O, no clocks, no tasks. The master feeds it events
//! (agents and frameworks coming and going, offers answered, tasks ended) and calls
//! [`Allocator::allocate`] with the current time; it returns the bundles to offer. Keeping it
//! pure is what makes 10,000-agent simulations and exhaustive unit tests cheap.
//!
//! Allocation is coarse-grained, as in Mesos: "allocated" means offered-and-not-yet-answered
//! *plus* used by launched tasks, and both count towards a framework's share. A pass walks the
//! agents in id order and gives each agent's whole free bundle to the eligible framework with
//! the lowest weighted dominant share (`dominant share / weight`; ties go to the framework that
//! subscribed first), then recomputes that framework's share before the next agent. Because the
//! whole free bundle goes to one framework, an agent is offered at most once per pass.
//!
//! Invariants (checked by `random_allocate_recover_sequences_keep_bookkeeping_consistent`):
//! - An agent's per-framework allocations together fit in its total. The one exception is
//!   [`Allocator::update_agent_total`] shrinking an agent below what is already allocated:
//!   running tasks are not undone, the agent's free resources clamp at zero until enough is
//!   recovered.
//! - A framework's cached allocation equals the sum of its per-agent allocations for cpus, mem
//!   and disk. Ports are tracked exactly per agent but never summed across agents: port 31000
//!   on two agents is two different ports, so cluster-wide sums leave ports empty.
//! - No per-agent allocation entry is empty, and entries exist only for known frameworks.
//! - Ids and amounts come from peers, so nothing here panics or underflows on them: unknown
//!   ids are no-ops (logged at debug), recovering more than is allocated releases what is there.

use bramble_proto::{AgentId, FrameworkId, Resources};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest refuse filter honoured; longer requests are capped (Mesos caps them too, so a
/// framework cannot make an agent invisible to itself forever by mistake).
pub const MAX_REFUSE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Tunables of the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// Mesos's "minimum allocatable" resources: an agent whose free resources have neither
    /// this many cpus nor [`AllocatorConfig::min_mem_mib`] of memory is not offered, so
    /// frameworks are not flooded with offers nothing can run on.
    pub min_cpus_milli: u64,
    pub min_mem_mib: u64,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            min_cpus_milli: 10,
            min_mem_mib: 32,
        }
    }
}

impl AllocatorConfig {
    fn is_allocatable(&self, free: &Resources) -> bool {
        !free.is_empty()
            && (free.cpus_milli >= self.min_cpus_milli || free.mem_mib >= self.min_mem_mib)
    }
}

/// One bundle the master should turn into an offer. It is already counted as allocated to
/// `framework_id`; whatever is not used must come back through [`Allocator::recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorError {
    #[error("allocating to framework {framework} on agent {agent}: the agent is not known to the allocator; add it first")]
    UnknownAgent {
        agent: AgentId,
        framework: FrameworkId,
    },
    #[error("allocating on agent {agent} to framework {framework}: the framework is not known to the allocator; add it (and deactivate it if it has not subscribed yet) first")]
    UnknownFramework {
        agent: AgentId,
        framework: FrameworkId,
    },
    #[error("allocating {wanted} to framework {framework} on agent {agent}: only {free} is free ({shortfall})")]
    DoesNotFit {
        agent: AgentId,
        framework: FrameworkId,
        // Boxed: the error travels through `Result`s on the hot path and should stay small.
        wanted: Box<Resources>,
        free: Box<Resources>,
        shortfall: String,
    },
}

/// Converts a framework's `refuse_seconds` from the wire into a filter duration: NaN, zero and
/// negative mean "no filter", anything above [`MAX_REFUSE`] (including infinity) is capped.
///
/// Mesos instead applies its 5 s default to negative values; Bramble treats them as "no filter".
pub fn refuse_duration(refuse_seconds: f64) -> Duration {
    if refuse_seconds.is_nan() || refuse_seconds <= 0.0 {
        Duration::ZERO
    } else if refuse_seconds >= MAX_REFUSE.as_secs_f64() {
        MAX_REFUSE
    } else {
        Duration::from_secs_f64(refuse_seconds)
    }
}

/// The DRF progressive-filling core, for tests and simulations: given the total capacity and
/// each user's per-task demand, repeatedly launch one task for the user with the lowest
/// dominant share (ties: lowest index) whose next task still fits. A user whose next task does
/// not fit is saturated and drops out; the others keep filling. Returns tasks per user.
///
/// A user with an empty demand gets zero tasks (it would otherwise fit forever).
pub fn progressive_filling(total: &Resources, demands: &[Resources]) -> Vec<u32> {
    let cluster = Scalars::of(total);
    let mut left = total.clone();
    let mut consumed = vec![Scalars::default(); demands.len()];
    let mut tasks = vec![0u32; demands.len()];
    let mut saturated: Vec<bool> = demands.iter().map(Resources::is_empty).collect();
    loop {
        let next = (0..demands.len())
            .filter(|&i| !saturated[i])
            .min_by(|&a, &b| {
                dominant_share_of(consumed[a], cluster)
                    .total_cmp(&dominant_share_of(consumed[b], cluster))
                    .then(a.cmp(&b))
            });
        let Some(i) = next else {
            return tasks;
        };
        match left.checked_sub(&demands[i]) {
            Some(rest) => {
                left = rest;
                consumed[i].add(Scalars::of(&demands[i]));
                tasks[i] += 1;
            }
            None => saturated[i] = true,
        }
    }
}

/// Cluster-wide sums: cpus, mem and disk add up across agents, ports do not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Scalars {
    cpus_milli: u64,
    mem_mib: u64,
    disk_mib: u64,
}

impl Scalars {
    fn of(r: &Resources) -> Self {
        Self {
            cpus_milli: r.cpus_milli,
            mem_mib: r.mem_mib,
            disk_mib: r.disk_mib,
        }
    }

    // Saturating both ways: totals come from peers and must not be able to panic the master.
    fn add(&mut self, o: Scalars) {
        self.cpus_milli = self.cpus_milli.saturating_add(o.cpus_milli);
        self.mem_mib = self.mem_mib.saturating_add(o.mem_mib);
        self.disk_mib = self.disk_mib.saturating_add(o.disk_mib);
    }

    fn sub(&mut self, o: Scalars) {
        self.cpus_milli = self.cpus_milli.saturating_sub(o.cpus_milli);
        self.mem_mib = self.mem_mib.saturating_sub(o.mem_mib);
        self.disk_mib = self.disk_mib.saturating_sub(o.disk_mib);
    }

    fn to_resources(self) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
            ports: Vec::new(),
        }
    }
}

/// max over cpus, mem and disk of allocated / total, skipping kinds the cluster has none of
/// (a cluster without disk must not make every share NaN).
fn dominant_share_of(allocated: Scalars, total: Scalars) -> f64 {
    [
        (allocated.cpus_milli, total.cpus_milli),
        (allocated.mem_mib, total.mem_mib),
        (allocated.disk_mib, total.disk_mib),
    ]
    .into_iter()
    .filter(|&(_, t)| t > 0)
    .map(|(a, t)| a as f64 / t as f64)
    .fold(0.0, f64::max)
}

fn normalize_weight(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        1.0
    }
}

#[derive(Debug)]
struct AgentState {
    total: Resources,
    /// False while the agent is marked unhealthy: kept (its allocations still count) but
    /// never offered.
    offerable: bool,
    /// Per framework, never empty.
    allocated: BTreeMap<FrameworkId, Resources>,
}

impl AgentState {
    fn free(&self) -> Resources {
        self.allocated
            .values()
            .fold(self.total.clone(), |free, a| free.saturating_sub(a))
    }
}

#[derive(Debug)]
struct RefuseFilter {
    resources: Resources,
    until: Instant,
}

#[derive(Debug)]
struct FrameworkState {
    weight: f64,
    /// Subscription order, the deterministic tie-break between equal shares.
    order: u64,
    active: bool,
    suppressed: bool,
    /// Sum over agents of this framework's allocations (ports excluded).
    allocated: Scalars,
    filters: BTreeMap<AgentId, Vec<RefuseFilter>>,
}

impl FrameworkState {
    /// A filter blocks an offer only if the offer is contained in the refused resources, so
    /// an agent that has since freed more is offered again (Mesos semantics).
    fn refuses(&self, agent: &AgentId, offer: &Resources, now: Instant) -> bool {
        self.filters.get(agent).is_some_and(|fs| {
            fs.iter()
                .any(|f| now < f.until && f.resources.contains(offer))
        })
    }
}

/// Weighted DRF allocator; see the module documentation for its invariants.
#[derive(Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: BTreeMap<AgentId, AgentState>,
    frameworks: BTreeMap<FrameworkId, FrameworkState>,
    /// Sum of all agents' totals (ports excluded).
    total: Scalars,
    next_order: u64,
}

impl Allocator {
    pub fn new(config: AllocatorConfig) -> Self {
        Self {
            config,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            total: Scalars::default(),
            next_order: 0,
        }
    }

    /// Adds an agent with nothing allocated. Adding a known agent again only changes its
    /// total, as [`Allocator::update_agent_total`] does.
    pub fn add_agent(&mut self, agent: AgentId, total: Resources) {
        if self.agents.contains_key(&agent) {
            self.update_agent_total(&agent, total);
            return;
        }
        self.total.add(Scalars::of(&total));
        self.agents.insert(
            agent,
            AgentState {
                total,
                offerable: true,
                allocated: BTreeMap::new(),
            },
        );
    }

    /// Changes an agent's total (it re-registered with different hardware or reservations).
    /// Allocations are kept even if they no longer fit; free resources clamp at zero.
    pub fn update_agent_total(&mut self, agent: &AgentId, total: Resources) {
        let Some(state) = self.agents.get_mut(agent) else {
            tracing::debug!(%agent, "allocator: total update for unknown agent ignored");
            return;
        };
        self.total.sub(Scalars::of(&state.total));
        self.total.add(Scalars::of(&total));
        state.total = total;
    }

    /// Stops (false) or resumes (true) offering an agent's free resources; what is allocated
    /// there stays allocated. Unknown agent: ignored.
    pub fn set_agent_offerable(&mut self, agent: &AgentId, offerable: bool) {
        if let Some(state) = self.agents.get_mut(agent) {
            state.offerable = offerable;
        }
    }

    /// Forgets an agent and returns what each framework had allocated there, in framework id
    /// order, so the master can rescind offers and mark tasks lost. Unknown agent: empty.
    pub fn remove_agent(&mut self, agent: &AgentId) -> Vec<(FrameworkId, Resources)> {
        let Some(state) = self.agents.remove(agent) else {
            tracing::debug!(%agent, "allocator: removal of unknown agent ignored");
            return Vec::new();
        };
        self.total.sub(Scalars::of(&state.total));
        for fw in self.frameworks.values_mut() {
            fw.filters.remove(agent);
        }
        for (fw_id, held) in &state.allocated {
            if let Some(fw) = self.frameworks.get_mut(fw_id) {
                fw.allocated.sub(Scalars::of(held));
            }
        }
        state.allocated.into_iter().collect()
    }

    /// Adds an active, unsuppressed framework. `weight` that is not finite and positive is
    /// taken as 1.0. Adding a known framework again (failover) updates its weight and
    /// activates it, keeping its allocations, filters, suppression and tie-break position.
    pub fn add_framework(&mut self, fw: FrameworkId, weight: f64) {
        let weight = normalize_weight(weight);
        if let Some(state) = self.frameworks.get_mut(&fw) {
            state.weight = weight;
            state.active = true;
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.frameworks.insert(
            fw,
            FrameworkState {
                weight,
                order,
                active: true,
                suppressed: false,
                allocated: Scalars::default(),
                filters: BTreeMap::new(),
            },
        );
    }

    /// Forgets a framework and releases everything it held on every agent.
    pub fn remove_framework(&mut self, fw: &FrameworkId) {
        if self.frameworks.remove(fw).is_none() {
            tracing::debug!(framework = %fw, "allocator: removal of unknown framework ignored");
            return;
        }
        for agent in self.agents.values_mut() {
            agent.allocated.remove(fw);
        }
    }

    /// A reconnected framework is offered resources again.
    pub fn activate_framework(&mut self, fw: &FrameworkId) {
        self.with_framework(fw, "activate", |f| f.active = true);
    }

    /// A disconnected framework keeps its allocations (they still count towards its share)
    /// but is offered nothing until it is activated again.
    pub fn deactivate_framework(&mut self, fw: &FrameworkId) {
        self.with_framework(fw, "deactivate", |f| f.active = false);
    }

    /// The framework wants no offers for now.
    pub fn suppress(&mut self, fw: &FrameworkId) {
        self.with_framework(fw, "suppress", |f| f.suppressed = true);
    }

    /// The framework wants offers again, including those its refuse filters were blocking.
    pub fn revive(&mut self, fw: &FrameworkId) {
        self.with_framework(fw, "revive", |f| {
            f.suppressed = false;
            f.filters.clear();
        });
    }

    fn with_framework(
        &mut self,
        fw: &FrameworkId,
        what: &str,
        f: impl FnOnce(&mut FrameworkState),
    ) {
        match self.frameworks.get_mut(fw) {
            Some(state) => f(state),
            None => tracing::debug!(framework = %fw, what, "allocator: unknown framework ignored"),
        }
    }

    /// Marks resources as allocated without an offer: an agent re-registered with tasks
    /// already running. Refuses, changing nothing, if agent or framework is unknown or the
    /// resources are not free there.
    pub fn allocate_existing(
        &mut self,
        agent: &AgentId,
        fw: &FrameworkId,
        resources: &Resources,
    ) -> Result<(), AllocatorError> {
        let Some(agent_state) = self.agents.get_mut(agent) else {
            return Err(AllocatorError::UnknownAgent {
                agent: agent.clone(),
                framework: fw.clone(),
            });
        };
        let Some(fw_state) = self.frameworks.get_mut(fw) else {
            return Err(AllocatorError::UnknownFramework {
                agent: agent.clone(),
                framework: fw.clone(),
            });
        };
        let free = agent_state.free();
        if let Some(shortfall) = free.shortfall(resources) {
            return Err(AllocatorError::DoesNotFit {
                agent: agent.clone(),
                framework: fw.clone(),
                wanted: Box::new(resources.clone()),
                free: Box::new(free),
                shortfall,
            });
        }
        if resources.is_empty() {
            return Ok(());
        }
        agent_state
            .allocated
            .entry(fw.clone())
            .or_default()
            .add(resources);
        fw_state.allocated.add(Scalars::of(resources));
        Ok(())
    }

    /// Gives resources back: an offer declined, rescinded or expired, the unused part of an
    /// accepted offer, or a task that ended. Unknown agent or framework, or nothing allocated
    /// there: no-op. More than is allocated: releases what is allocated.
    pub fn recover(&mut self, agent: &AgentId, fw: &FrameworkId, resources: &Resources) {
        let Some(agent_state) = self.agents.get_mut(agent) else {
            tracing::debug!(%agent, framework = %fw, "allocator: recover on unknown agent ignored");
            return;
        };
        let Some(held) = agent_state.allocated.get_mut(fw) else {
            tracing::debug!(%agent, framework = %fw, "allocator: recover of nothing allocated ignored");
            return;
        };
        if !held.contains(resources) {
            tracing::debug!(%agent, framework = %fw, %held, recovering = %resources,
                "allocator: recovering more than allocated; releasing what is there");
        }
        let left = held.saturating_sub(resources);
        let released = held.saturating_sub(&left);
        if left.is_empty() {
            agent_state.allocated.remove(fw);
        } else {
            *held = left;
        }
        if let Some(fw_state) = self.frameworks.get_mut(fw) {
            fw_state.allocated.sub(Scalars::of(&released));
        }
    }

    /// Mesos refuse filter: from `now` for `refuse_for`, do not offer `fw` a bundle on `agent`
    /// that is contained in `resources`. A zero duration adds no filter; durations are capped
    /// at [`MAX_REFUSE`]. Use [`refuse_duration`] to convert the wire's `refuse_seconds`.
    pub fn add_refuse_filter(
        &mut self,
        fw: &FrameworkId,
        agent: &AgentId,
        resources: Resources,
        now: Instant,
        refuse_for: Duration,
    ) {
        if refuse_for.is_zero() {
            return;
        }
        if !self.agents.contains_key(agent) {
            tracing::debug!(%agent, framework = %fw, "allocator: filter on unknown agent ignored");
            return;
        }
        let Some(until) = now.checked_add(refuse_for.min(MAX_REFUSE)) else {
            return;
        };
        self.with_framework(fw, "filter", |f| {
            f.filters
                .entry(agent.clone())
                .or_default()
                .push(RefuseFilter { resources, until });
        });
    }

    /// One allocation pass at time `now`. Expires filters that have run out, then walks the
    /// agents in id order and gives each agent's whole free bundle to the active, unsuppressed,
    /// unfiltered framework with the lowest weighted dominant share, recomputing that share
    /// before the next agent. Agents below the minimum allocatable are skipped. The returned
    /// bundles are already counted as allocated.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        for fw in self.frameworks.values_mut() {
            fw.filters.retain(|_, filters| {
                filters.retain(|f| now < f.until);
                !filters.is_empty()
            });
        }
        let total = self.total;
        let mut out = Vec::new();
        for (agent_id, agent) in &mut self.agents {
            let free = agent.free();
            if !agent.offerable || !self.config.is_allocatable(&free) {
                continue;
            }
            // Linear in frameworks per agent; a sorted structure would pay off only with
            // hundreds of frameworks, which a Pi cluster does not have.
            let chosen = self
                .frameworks
                .iter_mut()
                .filter(|(_, f)| f.active && !f.suppressed && !f.refuses(agent_id, &free, now))
                .min_by(|(_, a), (_, b)| {
                    let share =
                        |f: &FrameworkState| dominant_share_of(f.allocated, total) / f.weight;
                    share(a).total_cmp(&share(b)).then(a.order.cmp(&b.order))
                });
            let Some((fw_id, fw)) = chosen else {
                continue;
            };
            fw.allocated.add(Scalars::of(&free));
            agent.allocated.entry(fw_id.clone()).or_default().add(&free);
            out.push(Allocation {
                framework_id: fw_id.clone(),
                agent_id: agent_id.clone(),
                resources: free,
            });
        }
        out
    }

    /// The framework's dominant share of the cluster, unweighted (0.0 for unknown ids).
    pub fn dominant_share(&self, fw: &FrameworkId) -> f64 {
        self.frameworks
            .get(fw)
            .map_or(0.0, |f| dominant_share_of(f.allocated, self.total))
    }

    /// The share DRF orders frameworks by: dominant share divided by weight.
    pub fn weighted_share(&self, fw: &FrameworkId) -> f64 {
        self.frameworks.get(fw).map_or(0.0, |f| {
            dominant_share_of(f.allocated, self.total) / f.weight
        })
    }

    /// Everything allocated to the framework across agents (cpus, mem, disk; ports are
    /// per agent and left empty). Empty for unknown ids.
    pub fn framework_allocation(&self, fw: &FrameworkId) -> Resources {
        self.frameworks
            .get(fw)
            .map_or_else(Resources::default, |f| f.allocated.to_resources())
    }

    /// What is allocated to the framework on one agent, ports included.
    pub fn allocation_on(&self, agent: &AgentId, fw: &FrameworkId) -> Resources {
        self.agents
            .get(agent)
            .and_then(|a| a.allocated.get(fw))
            .cloned()
            .unwrap_or_default()
    }

    /// The agent's unallocated resources, or `None` for an unknown agent.
    pub fn agent_free(&self, agent: &AgentId) -> Option<Resources> {
        self.agents.get(agent).map(AgentState::free)
    }

    /// The sum of all agents' totals (cpus, mem, disk; ports left empty).
    pub fn total(&self) -> Resources {
        self.total.to_resources()
    }
}

#[cfg(test)]
mod tests;
