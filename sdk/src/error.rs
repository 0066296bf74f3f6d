//! The one error type of the SDK.
//!
//! Variants are split by what the framework author can do about them: a refusal or a fatal
//! master error means "fix the configuration or give up", a failover timeout means "the master
//! was unreachable for too long", `Disconnected` on a driver call means "wait for
//! `registered(.., reregistered = true)` and decide again".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The master (or its hello) refused this peer; retrying with the same credentials will
    /// not help.
    #[error("the master refused this scheduler: {0}")]
    Refused(String),

    /// Building the local QUIC endpoint failed (bad credentials, no UDP socket).
    #[error("setting up the QUIC client endpoint: {0}")]
    Endpoint(#[source] bramble_proto::transport::TransportError),

    /// The master's certificate is not a node's, or the handshake can never succeed.
    #[error("connecting to the master at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: bramble_proto::transport::TransportError,
    },

    /// No (re)subscription succeeded within the framework's failover timeout.
    #[error("could not subscribe to the master at {addr} for {waited:.1?} (failover timeout {failover_timeout_secs}s, {attempts} attempts); last error: {last_error}")]
    FailoverTimeout {
        addr: SocketAddr,
        waited: Duration,
        failover_timeout_secs: f64,
        attempts: u32,
        last_error: String,
    },

    /// The master ended this framework (`MasterEvent::Error { fatal: true }`).
    #[error("the master ended this framework: {0}")]
    Fatal(String),

    /// `stop(false)` was called while disconnected and the Teardown could not be delivered;
    /// the master removes the framework once its failover timeout passes.
    #[error("teardown not delivered to the master at {addr}: {reason}; the master removes the framework after its failover timeout")]
    TeardownNotDelivered { addr: SocketAddr, reason: String },

    /// A driver call made while the driver has no subscribed connection. Offers are void
    /// after a disconnect; decide again after `registered(.., reregistered = true)`.
    #[error(
        "not connected to the master (the driver is reconnecting); try again after re-registration"
    )]
    Disconnected,

    /// A driver call made after `stop()` or after the driver's run ended.
    #[error("the driver has stopped")]
    Stopped,

    /// `run` was called twice on the same driver.
    #[error("the driver is already running (run may be called once per driver)")]
    AlreadyRunning,

    /// A driver call that makes no sense in the driver's configuration.
    #[error("invalid driver call: {0}")]
    InvalidCall(String),

    /// An executor was started without the environment a Bramble agent provides.
    #[error("environment variable {var} is not set: was this executor started by a Bramble agent? (tests can call run_executor_with)")]
    MissingEnv { var: &'static str },

    /// The agent's Unix socket could not be reached.
    #[error("connecting to the agent socket {path}: {source}")]
    AgentSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The agent went away or spoke out of turn.
    #[error("agent connection: {0}")]
    Agent(String),

    /// A call, update or message bigger than the cluster accepts from its callers
    /// (`bramble_proto::codec::MAX_INPUT_BYTES`): refused here, nothing was sent. Split the
    /// data, or send it another way (a file in the sandbox, a URI).
    #[error("{what} is {len} bytes encoded, over the {limit}-byte limit; nothing was sent")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },

    /// A codec or stream error while doing something named in `context`.
    #[error("{context}: {source}")]
    Protocol {
        context: String,
        #[source]
        source: bramble_proto::codec::CodecError,
    },
}

impl SdkError {
    /// Checks a message about to leave for the cluster against the input limit.
    pub(crate) fn check_size<T: serde::Serialize>(
        what: &'static str,
        msg: &T,
    ) -> Result<(), SdkError> {
        use bramble_proto::codec::{check_input, CodecError};
        match check_input(msg) {
            Ok(()) => Ok(()),
            Err(CodecError::FrameTooLarge { len, limit }) => {
                Err(SdkError::TooLarge { what, len, limit })
            }
            Err(e) => Err(SdkError::protocol(format!("encoding {what}"), e)),
        }
    }

    pub(crate) fn protocol(
        context: impl Into<String>,
        source: bramble_proto::codec::CodecError,
    ) -> Self {
        SdkError::Protocol {
            context: context.into(),
            source,
        }
    }
}
