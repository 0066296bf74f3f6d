//! Replicated state for Bramble's masters: Raft ([openraft] 0.9) with the log and the state
//! machine in redb, replication over QUIC with mutual TLS under the cluster CA
//! (ALPN `bramble-raft/1`).
//!
//! - `types.rs`: what goes through the log ([`Command`]: put, delete, compare-and-set by
//!   version, atomic batches over an ordered `(table, key) → value` map) and what applying it
//!   answers ([`Response`]).
//! - `store/`: one redb file per node (`<dir>/replica.redb`): the log and vote, the state
//!   machine, the latest snapshot.
//! - `network.rs`: openraft's network over QUIC, and the server side; followers forward
//!   writes and reads to the leader.
//! - `replica/`: [`Replica`], the API the master uses (`mod.rs`); peers' requests checked
//!   and answered (`requests.rs`); our election timer (`election.rs`).
//! - `config.rs`: [`ReplicaConfig`] (id, peers) and [`Tuning`] (timeouts for Pis on a LAN).
//!
//! Not yet wired into the master: see ARCHITECTURE.md, "Replicated masters".

pub mod config;
pub mod network;
mod replica;
pub mod store;
pub mod types;

pub use config::{ConfigError, ReplicaConfig, Tuning};
pub use replica::{Member, Replica, ReplicaError};
pub use types::{Command, NodeId, Response, Role, Row, TypeConfig, Versioned};
