//! Every message that crosses a Bramble connection, grouped by who sends it to whom.
//!
//! A connection starts with [`Hello`] from the dialing side and [`HelloReply`] from the master;
//! only after a `Welcome` does the peer count as admitted. After that each side speaks the
//! enum for its direction on the same control stream. Keeping one enum per direction means an
//! agent sending a scheduler's call is a decode error, which closes that peer.

use crate::framework_state::{StateEntry, StateWrite};
use crate::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use crate::resources::Resources;
pub use crate::state_page::{ClusterCounts, StateCursor, StatePage};
use crate::task::{ExecutorInfo, TaskInfo, TaskReason, TaskState, TaskStatus};
pub use crate::task_list::{TaskCursor, TaskList, TasksQuery};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// What the dialing peer intends to be on this connection. The master checks it against the
/// role in the peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerKind {
    Agent,
    Scheduler,
    Operator,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub software_version: String,
    pub kind: PeerKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        protocol_version: u32,
        software_version: String,
        cluster_id: String,
    },
    Refused {
        reason: String,
    },
    /// This master is a follower (or a candidate) of a replicated group: it serves no one.
    /// `leader` is where the elected leader listens, if this master knows one; a dialer
    /// reconnects there (or, with no leader known yet, retries its master list after a pause).
    /// Appended: older peers never see it from a single master.
    NotLeader {
        leader: Option<LeaderHint>,
    },
    /// The master is admitting as many peers as it can at once: dial again in
    /// `retry_after_ms` (an appointment the master spreads, so returning peers arrive at the
    /// pace it admits them; add a little jitter). Nothing is wrong with the peer. Appended:
    /// older peers read it as an unknown reply and retry with their backoff.
    Busy {
        retry_after_ms: u32,
    },
}

/// Where a replicated group's leader serves, as a follower knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's `[ha] id`.
    pub id: u64,
    /// The leader's QUIC address (`HOST:PORT`) for agents, schedulers and operators.
    pub address: String,
    /// The leader's HTTP address (`HOST:PORT`), if it serves HTTP.
    pub http: Option<String>,
    /// The Raft term the leader was elected in.
    pub term: u64,
}

// One vocabulary in several files: each file takes the shared imports and the other files'
// types through `use super::*`, and everything is re-exported here, so paths stay
// `bramble_proto::messages::X`.
mod agent;
mod executor;
mod images;
mod operator;
mod scheduler;

pub use agent::*;
pub use executor::*;
pub use images::*;
pub use operator::*;
pub use scheduler::*;

#[cfg(test)]
mod wire_tests {
    use super::*;

    /// `MasterEvent` as SDKs before fencing tokens knew its first variant.
    #[derive(Debug, Deserialize)]
    enum OldMasterEvent {
        Subscribed {
            framework_id: FrameworkId,
            heartbeat_interval_ms: u64,
        },
    }

    #[test]
    fn an_older_sdk_still_reads_subscribed_with_the_fencing_token_appended() {
        let event = MasterEvent::Subscribed {
            framework_id: FrameworkId("fw-1".into()),
            heartbeat_interval_ms: 1500,
            fencing_token: 42,
        };
        let bytes = postcard::to_allocvec(&event).expect("encode");
        let old: OldMasterEvent = crate::codec::decode_payload(&bytes).expect("old decode");
        let OldMasterEvent::Subscribed {
            framework_id,
            heartbeat_interval_ms,
        } = old;
        assert_eq!(framework_id.as_str(), "fw-1");
        assert_eq!(heartbeat_interval_ms, 1500);
        let new: MasterEvent = crate::codec::decode_payload(&bytes).expect("new decode");
        assert_eq!(new, event);
    }
}
