//! Agent drain (`bramble agent drain HOST`): an operator takes an agent out of service before
//! unplugging it. A draining agent is offered nothing (the allocator's `offerable`, with its
//! health), its outstanding offers are rescinded, and every connected framework is told
//! (`MasterEvent::AgentDraining`, also after each subscription) so it can move what runs there
//! in its own way — the service framework starts replacements elsewhere and stops the old
//! instances only while each service keeps its healthy minimum. The master kills nothing:
//! a framework that ignores the event keeps its tasks there.
//!
//! The drain is durable (the store's `draining` table) and kept by agent id even while the
//! agent is unknown, so a drained Pi that was removed while unplugged comes back drained;
//! undrain makes it offerable again.

use super::feed::ClusterEvent;
use super::{ConnId, Master};
use bramble_proto::messages::MasterEvent;
use bramble_proto::{AgentId, FrameworkId};
use tracing::info;

impl Master {
    /// Drains (`drain`) or undrains `agent`. Draining needs an agent this master knows (or
    /// one already drained); undraining also takes one it has forgotten since.
    pub(super) fn drain(&mut self, agent: &AgentId, drain: bool) -> Result<(), String> {
        let known = self.agents.get(agent);
        if drain && known.is_none() && !self.draining.contains(agent) {
            return Err(format!("no agent {agent} is known to this master"));
        }
        if !drain && known.is_none() && !self.draining.contains(agent) {
            return Err(format!(
                "no agent {agent} is known to this master, nor drained"
            ));
        }
        let hostname = known.map(|a| a.hostname.clone()).unwrap_or_default();
        let changed = if drain {
            self.draining.insert(agent.clone())
        } else {
            self.draining.remove(agent)
        };
        if !changed {
            return Ok(());
        }
        self.dirty_draining.insert(agent.clone());
        if drain {
            info!(agent = %agent, %hostname, "agent drained by an operator: no more offers from it; frameworks are told to move what runs there");
            self.rescind_agent_offers(agent);
        } else {
            info!(agent = %agent, %hostname, "agent undrained by an operator: offered again");
            self.allocation_due = true;
        }
        if self.agents.get(agent).is_some_and(|a| a.conn.is_some()) {
            self.sync_offerable(agent);
        }
        let fws: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.conn.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for fw in fws {
            self.send_framework(
                &fw,
                MasterEvent::AgentDraining {
                    agent_id: agent.clone(),
                    draining: drain,
                },
            );
        }
        self.feed.emit(|| ClusterEvent::AgentDraining {
            agent_id: agent.clone(),
            draining: drain,
        });
        Ok(())
    }

    /// Tells a framework just subscribed on `conn` which agents are draining.
    pub(super) fn tell_draining(&mut self, conn: ConnId) {
        let draining: Vec<AgentId> = self.draining.iter().cloned().collect();
        for agent_id in draining {
            self.send_conn_scheduler(
                conn,
                MasterEvent::AgentDraining {
                    agent_id,
                    draining: true,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::testing::*;
    use crate::state::{Input, Master};
    use crate::store::Batch;
    use bramble_proto::messages::{MasterEvent, OperatorCall, OperatorReply};
    use bramble_proto::AgentId;
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    /// Drains or undrains `agent`: the answer, and what the burst would commit.
    fn drain_call(
        m: &mut Master,
        agent: &str,
        drain: bool,
        now: Instant,
    ) -> (OperatorReply, Batch) {
        let (reply, mut rx) = oneshot::channel();
        let call = OperatorCall::DrainAgent {
            agent_id: AgentId::from(agent),
            drain,
        };
        m.handle(Input::Operator { call, reply }, now);
        m.end_burst(now);
        let batch = m.take_writes();
        m.flush_outbox();
        (rx.try_recv().expect("answered after the burst"), batch)
    }

    fn told_draining(events: &[MasterEvent]) -> Vec<(String, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                MasterEvent::AgentDraining { agent_id, draining } => {
                    Some((agent_id.to_string(), *draining))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_drained_agent_is_offered_nothing_durably_frameworks_are_told_and_undrain_brings_offers_back(
    ) {
        let now = Instant::now();
        let mut m = master(now);
        let (_agent, mut fw) = agent_and_framework(&mut m, now);
        assert_eq!(offers(&drain(&mut fw)).len(), 1, "a1 is offered");

        let (answer, _) = drain_call(&mut m, "nobody", true, now);
        assert!(matches!(answer, OperatorReply::Error { .. }), "{answer:?}");
        let (answer, batch) = drain_call(&mut m, "a1", true, now);
        assert_eq!(answer, OperatorReply::Done);
        assert_eq!(batch.draining, vec![(AgentId::from("a1"), true)]);
        let told = drain(&mut fw);
        assert!(
            told.iter()
                .any(|e| matches!(e, MasterEvent::Rescind { .. })),
            "the outstanding offer is rescinded: {told:?}"
        );
        assert_eq!(told_draining(&told), vec![("a1".to_string(), true)]);
        assert!(m.snapshot().agents.iter().all(|a| a.draining));
        // No offers from it, however long.
        for ms in [400, 800, 1200] {
            let t = now + Duration::from_millis(ms);
            m.tick(t);
            settle(&mut m, t);
        }
        let later = now + Duration::from_millis(1200);
        assert!(
            m.snapshot().agents.iter().all(|a| a.connected),
            "still there, within the agent timeout"
        );
        assert!(offers(&drain(&mut fw)).is_empty());
        // Draining again changes nothing.
        let (answer, batch) = drain_call(&mut m, "a1", true, later);
        assert_eq!(answer, OperatorReply::Done);
        assert!(batch.draining.is_empty());

        // A framework subscribing now is told.
        let mut other = connect_framework(&mut m, 3, Some("fw2"), later);
        settle(&mut m, later);
        assert_eq!(
            told_draining(&drain(&mut other)),
            vec![("a1".to_string(), true)]
        );

        // A master recovering from the store keeps the drain, even for an agent it does not
        // know (removed while unplugged).
        let mut stored = recovered(&[]);
        stored.agents.clear();
        stored.draining = vec![AgentId::from("a1")];
        let mut m2 = master(now);
        m2.recover(stored, now);
        let _agent2 = join(&mut m2, 1, "a1", Vec::new(), now);
        let mut fw2 = connect_framework(&mut m2, 2, Some("fw1"), now);
        settle(&mut m2, now);
        let told = drain(&mut fw2);
        assert!(offers(&told).is_empty(), "still drained: {told:?}");
        assert_eq!(told_draining(&told), vec![("a1".to_string(), true)]);

        // Undrained: offered again.
        let (answer, batch) = drain_call(&mut m, "a1", false, later);
        assert_eq!(answer, OperatorReply::Done);
        assert_eq!(batch.draining, vec![(AgentId::from("a1"), false)]);
        assert!(m.snapshot().agents.iter().all(|a| !a.draining));
        let again = later + Duration::from_millis(400);
        m.tick(again);
        settle(&mut m, again);
        let (told, told_other) = (drain(&mut fw), drain(&mut other));
        assert_eq!(told_draining(&told), vec![("a1".to_string(), false)]);
        assert_eq!(
            offers(&told).len() + offers(&told_other).len(),
            1,
            "a1 is offered again"
        );
    }
}
