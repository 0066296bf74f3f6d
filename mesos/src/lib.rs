//! The Mesos v1 HTTP API as Bramble speaks it: the JSON form of Mesos's messages (not proto3's
//! JSON mapping: Mesos's own, see `../shared/mesos-v1-http-api.md` §1.1), the RecordIO framing of
//! event streams, the HTTP contract's checks, and the mapping onto the native protocol.
//!
//! The master's scheduler API (`master/src/http/mesos/`) and the agent's executor API both build
//! on this crate; it does no I/O of its own, so every rule here is unit-tested without sockets.
//!
//! Reading is lenient (unknown fields ignored, numbers accepted as strings, pitfall 11); writing
//! is strict: compact, ASCII-only JSON (pitfall 3), defaults written where Mesos writes them.

pub mod http;
pub mod json;
pub mod recordio;
pub mod v1;

pub use v1::Id;

/// The Mesos version we answer on `/version` and in `MasterInfo`: purely numeric and at least
/// 1.0.0, or pymesos crashes (pitfall 9) or goes looking for inverse offers.
pub const MESOS_VERSION: &str = "1.11.0";
