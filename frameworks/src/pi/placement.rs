//! Where the pi job's chunks go: the agents the job has used, where each chunk in flight
//! runs, where each chunk last failed (it goes to another agent next, while there is one),
//! and the agents avoided for a while because chunks keep failing there for the agent's
//! reasons.

use bramble_sdk::{AgentBlocklist, AgentId};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

#[derive(Default)]
pub(super) struct ChunkPlaces {
    agents: HashSet<String>,
    /// Agents where chunks failed repeatedly for the agent's reasons: their offers are
    /// declined for a while.
    pub(super) blocklist: AgentBlocklist,
    /// Where each chunk last failed: it goes to another agent next, while there is one.
    failed_on: HashMap<usize, AgentId>,
    /// Where each chunk in flight was launched, to say what a stalled job waits for.
    running_on: HashMap<usize, AgentId>,
}

impl ChunkPlaces {
    /// How many agents the job has launched chunks on.
    pub(super) fn agents_used(&self) -> usize {
        self.agents.len()
    }

    /// Whether chunk `index` may run on `agent`: not where it last failed, unless no other
    /// agent this job has used is available.
    pub(super) fn may_run_on(&self, index: usize, agent: &AgentId, now: Instant) -> bool {
        if self.failed_on.get(&index) != Some(agent) {
            return true;
        }
        !self.agents.iter().any(|other| {
            other != agent.as_str()
                && !self
                    .blocklist
                    .is_blocked(&AgentId::from(other.as_str()), now)
        })
    }

    /// Chunks that failed on `agent` last time and wait for another agent.
    pub(super) fn avoided_on(&self, agent: &AgentId, now: Instant) -> HashSet<usize> {
        self.failed_on
            .keys()
            .copied()
            .filter(|&i| !self.may_run_on(i, agent, now))
            .collect()
    }

    /// `launched` (chunk, attempt) pairs went to `agent`.
    pub(super) fn launched(&mut self, agent: &AgentId, launched: &[(usize, u32)]) {
        self.agents.insert(agent.to_string());
        for (index, _) in launched {
            self.running_on.insert(*index, agent.clone());
        }
    }

    /// Chunk `index` gave its result: it runs nowhere and has failed nowhere.
    pub(super) fn finished(&mut self, index: usize) {
        self.running_on.remove(&index);
        self.failed_on.remove(&index);
    }

    /// Chunk `index`'s current attempt was lost, on `agent` if known.
    pub(super) fn lost(&mut self, index: usize, agent: Option<&AgentId>) {
        self.running_on.remove(&index);
        if let Some(agent) = agent {
            self.failed_on.insert(index, agent.clone());
        }
    }

    /// The agent chunk `index` was launched on, while it is in flight.
    pub(super) fn running_on(&self, index: usize) -> Option<&AgentId> {
        self.running_on.get(&index)
    }

    /// How many agents run chunks in flight.
    pub(super) fn agents_running(&self) -> usize {
        let agents: HashSet<&AgentId> = self.running_on.values().collect();
        agents.len()
    }
}
