//! Membership changes an operator asks the leader for (`bramble masters add|remove`): who is
//! a member and how far it has caught up, which members answer right now, adding a node (a
//! learner until it has caught up, then a voter) and removing one, refused with a clear reason
//! where the change would be unsafe or would stall the group.

use super::{client_write_error, Replica, ReplicaError};
use crate::types::{Command, NodeId};
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;
use std::time::Duration;

/// A member of the group as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Its replication address.
    pub addr: String,
    pub voter: bool,
    /// The last log index the leader knows it holds (on the leader itself: its last index).
    pub matched: Option<u64>,
}

/// How long a committed membership change may take before its outcome is called unknown.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);

impl Replica {
    /// The members (voters and learners) by id, with what the leader knows of their logs
    /// (`matched` only on the leader).
    pub fn members(&self) -> Vec<Member> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched: if *id == self.inner.id {
                    m.last_log_index
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                },
            })
            .collect()
    }

    /// On the leader: the members that answer now. A no-op entry is committed (so a majority
    /// of the voters must answer at all), then every member that has it within `within` is
    /// counted; the leader always is. A member that is down holds nothing new, however
    /// up to date it was when it went.
    pub async fn answering(&self, within: Duration) -> Result<BTreeSet<NodeId>, ReplicaError> {
        self.leading()?;
        let written = tokio::time::timeout(
            self.inner.tuning.request_timeout,
            self.inner.raft.client_write(Command::Batch(Vec::new())),
        )
        .await
        .map_err(|_| ReplicaError::Timeout(self.inner.tuning.request_timeout))?
        .map_err(client_write_error)?;
        let index = written.log_id.index;
        let has_it = |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
            let mut ids: BTreeSet<NodeId> = m
                .replication
                .iter()
                .flatten()
                .filter(|(_, l)| l.as_ref().is_some_and(|l| l.index >= index))
                .map(|(id, _)| *id)
                .collect();
            ids.insert(self.inner.id);
            ids
        };
        let all: BTreeSet<NodeId> = self.members().into_iter().map(|m| m.id).collect();
        let mut metrics = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let now = has_it(&metrics.borrow_and_update());
            if now.is_superset(&all) {
                return Ok(now);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(has_it(&metrics.borrow())),
            }
        }
    }

    /// On the leader: adds node `id` at `addr` (`IP:PORT`) as a learner, waits up to
    /// `catch_up` until it has caught up, then makes it a voter. Refused while `id` is a
    /// voter: a node whose store was wiped forgot its vote and log, and counted as the voter
    /// it was it could help outvote the nodes holding acknowledged writes; it must be removed
    /// first, then added back as a new learner. Also refused for an address another member
    /// has.
    pub async fn add_voter(
        &self,
        id: NodeId,
        addr: &str,
        catch_up: Duration,
    ) -> Result<(), ReplicaError> {
        self.leading()?;
        let socket: std::net::SocketAddr = addr.parse().map_err(|_| {
            ReplicaError::Membership(format!("{addr:?} is not an IP:PORT replication address"))
        })?;
        let members = self.members();
        if let Some(m) = members.iter().find(|m| m.id == id) {
            if m.voter {
                return Err(ReplicaError::Membership(format!(
                    "master {id} is still a voter of the group (at {}); a master whose store \
                     was wiped or replaced must not rejoin as the voter it was: remove it first \
                     (`bramble masters remove {id}`), then add it again",
                    m.addr
                )));
            }
            if m.addr.parse::<std::net::SocketAddr>().ok() != Some(socket) {
                return Err(ReplicaError::Membership(format!(
                    "master {id} is already being added at {}, not {addr}: remove it first \
                     (`bramble masters remove {id}`)",
                    m.addr
                )));
            }
        }
        if let Some(other) = members
            .iter()
            .find(|m| m.id != id && m.addr.parse::<std::net::SocketAddr>().ok() == Some(socket))
        {
            return Err(ReplicaError::Membership(format!(
                "{addr} is master {}'s replication address",
                other.id
            )));
        }
        tracing::info!(
            id,
            addr,
            "replica: adding a learner, waiting for it to catch up"
        );
        match tokio::time::timeout(catch_up, self.learner_caught_up(id, &socket.to_string())).await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(ReplicaError::Membership(format!(
                    "master {id} at {addr} has not caught up within {catch_up:?}: is it \
                     running, with `[ha] id = {id}`, no `bootstrap`, this cluster's \
                     certificates, and the leader among its `peers`? It stays a learner (it \
                     does not vote): add it again to wait more, or remove it"
                )))
            }
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await?;
        tracing::info!(id, addr, "replica: a new voter joined the group");
        Ok(())
    }

    /// On the leader: removes member `id` (a voter, or a learner being added). Refused for
    /// the last voter, and when fewer than a majority of the voters left would answer now
    /// (the change could not commit, or the group would stop right after): `answering` is
    /// what [`Self::answering`] found within `probe`.
    pub async fn remove_member(&self, id: NodeId, probe: Duration) -> Result<(), ReplicaError> {
        self.leading()?;
        let members = self.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
            return Err(ReplicaError::Membership(format!(
                "master {id} is not a member of the group (members: {})",
                ids.join(", ")
            )));
        };
        if !member.voter {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await?;
            tracing::info!(id, "replica: a learner was removed from the group");
            return Ok(());
        }
        let left: BTreeSet<NodeId> = members
            .iter()
            .filter(|m| m.voter && m.id != id)
            .map(|m| m.id)
            .collect();
        if left.is_empty() {
            return Err(ReplicaError::Membership(format!(
                "master {id} is the group's last voter: a group cannot remove its last master"
            )));
        }
        let answering = self.answering(probe).await?;
        let alive: BTreeSet<NodeId> = left.intersection(&answering).copied().collect();
        let majority = left.len() / 2 + 1;
        if alive.len() < majority {
            let down: Vec<String> = left.difference(&alive).map(|id| id.to_string()).collect();
            return Err(ReplicaError::Membership(format!(
                "refusing to remove master {id}: of the {} voters that would be left, only {} \
                 answer (not answering: {}); a majority ({majority}) must be alive for the \
                 change to commit and the group to go on. Bring those masters back first, or \
                 remove one that is down instead",
                left.len(),
                alive.len(),
                down.join(", ")
            )));
        }
        self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await?;
        tracing::info!(id, "replica: a voter was removed from the group");
        Ok(())
    }

    /// Adds `id` as a learner and returns once it holds the leader's whole log as of then
    /// (openraft's own blocking add counts a learner within 5,000 entries as caught up).
    async fn learner_caught_up(&self, id: NodeId, addr: &str) -> Result<(), ReplicaError> {
        self.add_learner(id, addr).await?;
        let mut metrics = self.inner.raft.metrics();
        let target = metrics.borrow().last_log_index;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    drop(m);
                    return self.leading();
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index);
                if matched.is_some() && matched >= target {
                    return Ok(());
                }
            }
            if metrics.changed().await.is_err() {
                return Err(ReplicaError::Stopped);
            }
        }
    }

    fn leading(&self) -> Result<(), ReplicaError> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return Ok(());
        }
        let leader = m.current_leader.and_then(|l| {
            let node = m.membership_config.membership().get_node(&l)?;
            Some((l, node.addr.clone()))
        });
        Err(ReplicaError::NotLeader { leader })
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, openraft::BasicNode>,
        retain: bool,
    ) -> Result<(), ReplicaError> {
        match tokio::time::timeout(
            CHANGE_DEADLINE,
            self.inner.raft.change_membership(change, retain),
        )
        .await
        {
            Err(_) => Err(ReplicaError::Timeout(CHANGE_DEADLINE)),
            Ok(r) => r.map(|_| ()).map_err(client_write_error),
        }
    }
}
