//! `bramble masters [add|remove]` at the serving leader: the operator calls `GetMasters`,
//! `AddMaster` and `RemoveMaster`, answered at the operator connection's edge (they wait on the
//! replica, never on the state task): the group as the leader sees it, and membership changes
//! through the replica (`Replica::add_voter`, `Replica::remove_member`), refused with a reason.

use crate::store::replicated::Replicated;
use bramble_proto::messages::{MasterMember, MastersView, OperatorCall, OperatorReply};
use bramble_replica::{Replica, ReplicaError};
use std::time::Duration;
use tracing::{info, warn};

/// How long an added master has to catch up (a snapshot of the whole state, on a Pi's SD
/// card) before the add gives up, leaving it a learner.
const CATCH_UP: Duration = Duration::from_secs(60);
/// How long the members have to take a fresh entry to count as alive for a removal.
const ALIVE_PROBE: Duration = Duration::from_secs(2);

/// The serving leader's membership side.
#[derive(Clone)]
pub struct Membership {
    replica: Replica,
}

impl Membership {
    pub fn new(replica: Replica) -> Self {
        Self { replica }
    }

    /// Answers a membership call (`None`: a single master, which has no group).
    pub async fn answer(this: Option<&Membership>, call: OperatorCall) -> OperatorReply {
        let Some(this) = this else {
            return error("this master is not replicated (no [ha] in its master.toml): it has no group of masters");
        };
        let done = match call {
            OperatorCall::GetMasters => Ok(()),
            OperatorCall::AddMaster { id, address } => this.add(id, &address).await,
            OperatorCall::RemoveMaster { id } => {
                info!(id, "an operator asked to remove a master from the group");
                this.replica
                    .remove_member(id, ALIVE_PROBE)
                    .await
                    .map_err(|e| explain(e, "removing master"))
            }
            other => Err(format!("not a membership call: {other:?}")),
        };
        match done {
            Ok(()) => OperatorReply::Masters(this.view().await),
            Err(message) => {
                warn!("membership change refused: {message}");
                error(&message)
            }
        }
    }

    async fn add(&self, id: u64, address: &str) -> Result<(), String> {
        if id == 0 {
            return Err("a master's id is a positive number ([ha] id)".into());
        }
        let resolved = tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("resolving {address:?} (HOST:PORT): {e}"))?
            .next()
            .ok_or_else(|| format!("{address:?} resolves to no address"))?;
        info!(id, %resolved, "an operator asked to add a master to the group");
        self.replica
            .add_voter(id, &resolved.to_string(), CATCH_UP)
            .await
            .map_err(|e| explain(e, "adding master"))
    }

    /// The group as this (leading) replica sees it now.
    pub async fn view(&self) -> MastersView {
        let addresses = Replicated::addresses(&self.replica).await;
        let me = self.replica.id();
        let (term, last_log, leader) = {
            let m = self.replica.metrics();
            let m = m.borrow();
            (m.current_term, m.last_log_index, m.current_leader)
        };
        let masters = self
            .replica
            .members()
            .into_iter()
            .map(|m| {
                let a = addresses.iter().find(|(i, _)| *i == m.id).map(|(_, a)| a);
                MasterMember {
                    id: m.id,
                    role: if Some(m.id) == leader {
                        "leader"
                    } else if m.voter {
                        "follower"
                    } else {
                        "learner"
                    }
                    .into(),
                    replication: m.addr,
                    address: a.map(|a| a.quic.clone()),
                    http: a.and_then(|a| a.http.clone()),
                    voter: m.voter,
                    matched: m.matched,
                }
            })
            .collect();
        MastersView {
            leader: leader.unwrap_or(me),
            term,
            last_log,
            masters,
        }
    }
}

fn error(message: &str) -> OperatorReply {
    OperatorReply::Error {
        message: message.to_string(),
    }
}

fn explain(e: ReplicaError, doing: &str) -> String {
    match e {
        ReplicaError::Membership(why) => why,
        ReplicaError::NotLeader { .. } => {
            format!("{doing}: this master no longer leads (an election is under way); try again")
        }
        e if e.outcome_unknown() => {
            format!("{doing}: {e}; check with `bramble masters` whether the change was made")
        }
        e => format!("{doing}: {e}"),
    }
}
