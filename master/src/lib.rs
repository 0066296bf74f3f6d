//! `bramble-master`: the middle of a Bramble cluster. It admits agents and frameworks over
//! QUIC with mutual TLS, offers agents' resources to frameworks by Dominant Resource Fairness,
//! launches what frameworks accept and relays status updates until they are acknowledged.
//!
//! Where to start reading: `server/` (connections in, messages out), then `state/` (the
//! single-owner state machine), then `allocator.rs` (pure policy) and `store/` (the
//! redb file a restarted master recovers from).

mod admission;
pub mod allocator;
pub mod artifacts;
pub mod certificates;
pub mod config;
pub mod display;
pub mod ha;
pub mod handshakes;
pub mod http;
pub mod images;
pub mod local_scheduler;
pub mod server;
pub mod service_adverts;
pub mod state;
pub mod store;
