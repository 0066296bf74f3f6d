//! Requests the master relays to one agent and answers when that agent replies: sandbox reads
//! and listings (`operator.rs`) and image pieces (`images.rs`). Each waits until its agent
//! answers, its deadline passes, or its agent's connection goes; an answer from another
//! agent is ignored and a late one dropped, both logged.

use bramble_proto::AgentId;
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Requests of one kind, by request id, each answered through its `oneshot` with an `R`.
pub(super) struct AgentRequests<R> {
    /// What these requests are, for the log (`sandbox read`, `image piece`).
    what: &'static str,
    pending: HashMap<u64, Pending<R>>,
}

struct Pending<R> {
    agent: AgentId,
    reply: oneshot::Sender<R>,
    deadline: Instant,
}

/// A request that ended unanswered.
pub(super) struct Unanswered<R> {
    pub agent: AgentId,
    pub reply: oneshot::Sender<R>,
    /// Whether it timed out with its agent still connected (else the agent went away).
    pub timed_out: bool,
}

impl<R> AgentRequests<R> {
    pub(super) fn new(what: &'static str) -> AgentRequests<R> {
        AgentRequests {
            what,
            pending: HashMap::new(),
        }
    }

    /// Records request `id`, sent to `agent`, to be answered through `reply` by `deadline`.
    pub(super) fn insert(
        &mut self,
        id: u64,
        agent: AgentId,
        reply: oneshot::Sender<R>,
        deadline: Instant,
    ) {
        self.pending.insert(
            id,
            Pending {
                agent,
                reply,
                deadline,
            },
        );
    }

    /// Where `agent`'s answer to request `id` goes: `None` (logged) for a request that is no
    /// longer waiting, or one that was sent to another agent (which stays waiting).
    pub(super) fn answer(&mut self, agent: &AgentId, id: u64) -> Option<oneshot::Sender<R>> {
        match self.pending.remove(&id) {
            Some(p) if &p.agent == agent => Some(p.reply),
            Some(p) => {
                warn!(agent = %agent, request = id, "agent answered another agent's {}; ignoring", self.what);
                self.pending.insert(id, p);
                None
            }
            None => {
                debug!(agent = %agent, request = id, "late {} answer dropped", self.what);
                None
            }
        }
    }

    /// Removes and returns the requests past their deadline or whose agent is no longer
    /// connected (as `connected` says).
    pub(super) fn take_unanswered(
        &mut self,
        now: Instant,
        connected: impl Fn(&AgentId) -> bool,
    ) -> Vec<Unanswered<R>> {
        let ended: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now || !connected(&p.agent))
            .map(|(id, _)| *id)
            .collect();
        ended
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| Unanswered {
                timed_out: connected(&p.agent),
                agent: p.agent,
                reply: p.reply,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn agent(name: &str) -> AgentId {
        AgentId::from(name)
    }

    #[test]
    fn answers_reach_the_asker_only_from_the_agent_asked() {
        let now = Instant::now();
        let mut requests = AgentRequests::<u32>::new("test request");
        let (tx, mut rx) = oneshot::channel();
        requests.insert(1, agent("a1"), tx, now + Duration::from_secs(5));
        assert!(requests.answer(&agent("a2"), 1).is_none(), "foreign answer");
        assert!(requests.answer(&agent("a1"), 2).is_none(), "unknown id");
        let reply = requests.answer(&agent("a1"), 1).expect("still waiting");
        reply.send(7).unwrap();
        assert_eq!(rx.try_recv().unwrap(), 7);
        assert!(requests.answer(&agent("a1"), 1).is_none(), "answered twice");
    }

    #[test]
    fn requests_end_at_their_deadline_or_when_their_agent_goes() {
        let now = Instant::now();
        let mut requests = AgentRequests::<u32>::new("test request");
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        let (tx3, _rx3) = oneshot::channel();
        requests.insert(1, agent("slow"), tx1, now + Duration::from_secs(1));
        requests.insert(2, agent("gone"), tx2, now + Duration::from_secs(60));
        requests.insert(3, agent("fine"), tx3, now + Duration::from_secs(60));
        let connected = |a: &AgentId| a.as_str() != "gone";
        let mut ended = requests.take_unanswered(now + Duration::from_secs(2), connected);
        ended.sort_by(|a, b| a.agent.as_str().cmp(b.agent.as_str()));
        let seen: Vec<(&str, bool)> = ended
            .iter()
            .map(|u| (u.agent.as_str(), u.timed_out))
            .collect();
        assert_eq!(seen, vec![("gone", false), ("slow", true)]);
        assert!(requests.answer(&agent("fine"), 3).is_some());
    }
}
