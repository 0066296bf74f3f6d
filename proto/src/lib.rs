//! `bramble-proto` is the contract every Bramble process shares: the message types that cross
//! the wire, the length-prefixed codec that frames them, the QUIC endpoints with mutual TLS,
//! and the cluster identity (CA and role certificates) those endpoints trust.
//!
//! Nothing here knows about scheduling policy: the master, agent and SDK build on these types
//! and keep their logic to themselves.

pub mod arg_values;
pub mod artifact;
pub mod backoff;
pub mod bounded;
pub mod codec;
pub mod config;
pub mod dir_lock;
pub mod discovery;
pub mod durable;
pub mod framework_state;
pub mod handshake;
pub mod identity;
pub mod ids;
pub mod image_transfer;
pub mod logging;
pub mod masters;
pub mod memory;
pub mod messages;
pub mod proc_net;
pub mod queue;
pub mod resources;
pub mod rng;
pub mod service_status;
pub mod startup;
pub mod state_page;
pub mod task;
pub mod task_list;
pub mod transport;

pub use ids::{check_id, AgentId, ExecutorId, FrameworkId, InvalidId, OfferId, TaskId};
pub use resources::{PortRange, Resources};
pub use task::{TaskReason, TaskState, TaskStatus};

/// Wire protocol version. A master refuses peers whose hello carries another one.
pub const PROTOCOL_VERSION: u32 = 1;
/// ALPN identifier negotiated on every QUIC connection.
pub const ALPN: &[u8] = b"bramble/1";
/// The crate version of the software speaking, sent in every hello for the operator's benefit.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Default UDP port the master's QUIC endpoint listens on.
pub const DEFAULT_QUIC_PORT: u16 = 5051;
/// Default TCP port reserved for the master's HTTP API and web UI.
pub const DEFAULT_HTTP_PORT: u16 = 5050;
/// mDNS service type the master advertises.
pub const MDNS_SERVICE_TYPE: &str = "_bramble._udp.local.";

/// Environment variables the agent gives a custom executor.
pub mod executor_env {
    /// Path of the agent's Unix socket.
    pub const AGENT_SOCKET: &str = "BRAMBLE_AGENT_SOCKET";
    pub const AGENT_ID: &str = "BRAMBLE_AGENT_ID";
    pub const FRAMEWORK_ID: &str = "BRAMBLE_FRAMEWORK_ID";
    pub const EXECUTOR_ID: &str = "BRAMBLE_EXECUTOR_ID";
    /// One-time secret the executor presents when it registers.
    pub const EXECUTOR_TOKEN: &str = "BRAMBLE_EXECUTOR_TOKEN";
    /// The executor's sandbox directory (also its working directory).
    pub const SANDBOX: &str = "BRAMBLE_SANDBOX";
    /// Set for command tasks: the task's id.
    pub const TASK_ID: &str = "BRAMBLE_TASK_ID";
    /// Seconds a custom executor keeps trying to reconnect after losing its agent (the agent
    /// may be restarting and will recover it) before it gives up and exits.
    pub const RECOVERY_TIMEOUT_SECS: &str = "BRAMBLE_RECOVERY_TIMEOUT_SECS";
}

/// Seconds since the Unix epoch as a float, the timestamp format used on the wire.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
