//! What goes through the log ([`Command`]) and what applying it answers ([`Response`]), and
//! the openraft type configuration built from them.
//!
//! The state machine is an ordered map `(table, key) → (version, value)`: tables stand for the
//! master store's tables (frameworks, agents, tasks, ids, kills, draining, framework state…),
//! keys are ordered within a table (list by prefix), and a key's version is the log index of
//! the entry that last wrote it, so versions only grow and compare-and-set is exact.
//!
//! Commands are postcard on disk and on the wire: positional, so new variants go at the end
//! of [`Command`] and [`Response`], never in between.

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// A node's id in the replica group (the `[ha] id` of a master).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for Bramble: our commands and responses, u64 ids, nodes known by
    /// address, snapshots held in memory (the master's state is megabytes, not gigabytes).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The largest value one key may hold.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The largest encoded command [`crate::Replica::write`] accepts: one log entry, so that a
/// batch of entries always fits a replication frame (see `network.rs`).
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;
/// Snapshot bytes per `InstallSnapshot` call.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// One change to the replicated map. Appended variants only (postcard is positional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value` whatever it held.
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
    },
    /// Removes `key` (nothing if absent).
    Delete { table: String, key: String },
    /// Sets (`value: Some`) or removes (`None`) `key` only if its version is `expected`
    /// (`None`: only if the key is absent).
    CompareAndSet {
        table: String,
        key: String,
        expected: Option<u64>,
        value: Option<Vec<u8>>,
    },
    /// Several commands applied together or not at all: every compare-and-set inside is
    /// checked against the state before the batch, and if any fails nothing is written.
    /// Batches do not nest.
    Batch(Vec<Command>),
    /// `command` (a batch or a single command), applied only if its log entry was proposed
    /// by the leader of `term`; otherwise nothing is written and the answer is
    /// [`Response::Fenced`]. A master serving as the leader of one term writes through this
    /// (`Replica::write_in_term`): once it has lost that term, none of its writes lands, even
    /// if it is elected again (its records were loaded in the old term; another leader may
    /// have written in between). Decided by the log entry itself, so every replica agrees.
    /// Appended; does not nest, and is not allowed inside a batch.
    InTerm { term: u64, command: Box<Command> },
}

impl Command {
    /// Checks what the state machine cannot refuse later (it must apply whatever is
    /// committed): sizes, no batch inside a batch, no term fence inside anything.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Command::Put { value, .. }
            | Command::CompareAndSet {
                value: Some(value), ..
            } if value.len() > MAX_VALUE_BYTES => Err(format!(
                "a value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            )),
            Command::Batch(commands) => {
                for c in commands {
                    match c {
                        Command::Batch(_) => return Err("a batch inside a batch".into()),
                        Command::InTerm { .. } => return Err("a term fence inside a batch".into()),
                        c => c.validate()?,
                    }
                }
                Ok(())
            }
            Command::InTerm { command, .. } => match **command {
                Command::InTerm { .. } => Err("a term fence inside a term fence".into()),
                ref c => c.validate(),
            },
            _ => Ok(()),
        }
    }
}

/// What applying one log entry answered. Appended variants only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Not a command (a leader's blank entry, a membership change).
    None,
    /// Written: the key's version now (`None`: the key is absent now).
    Written { version: Option<u64> },
    /// A compare-and-set found another version (`None`: absent); nothing was written.
    Conflict { current: Option<u64> },
    /// A batch's responses, one per command; if any is `Conflict` nothing was written and the
    /// others are `None`.
    Batch(Vec<Response>),
    /// A [`Command::InTerm`] whose entry was proposed in another term (`term`, the entry's):
    /// nothing was written. Appended.
    Fenced { term: u64 },
}

/// A value and the version (log index) that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// One row of a table listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub key: String,
    pub version: u64,
    pub value: Vec<u8>,
}

/// A node's role, as [`crate::Replica::role`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        })
    }
}

impl From<openraft::ServerState> for Role {
    fn from(s: openraft::ServerState) -> Self {
        match s {
            openraft::ServerState::Leader => Role::Leader,
            openraft::ServerState::Follower => Role::Follower,
            openraft::ServerState::Candidate => Role::Candidate,
            openraft::ServerState::Learner => Role::Learner,
            openraft::ServerState::Shutdown => Role::Shutdown,
        }
    }
}
