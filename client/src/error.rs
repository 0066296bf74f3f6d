//! What can go wrong between an operator and the master, by step: finding it, dialling it,
//! being admitted, and the calls themselves. Messages say what was being done; the cause is
//! the error's source.

use bramble_proto::codec::CodecError;
use bramble_proto::discovery::DiscoveryError;
use bramble_proto::handshake::HandshakeError;
use bramble_proto::identity::IdentityError;
use bramble_proto::transport::TransportError;
use bramble_proto::TaskId;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What to do about operator credentials that could not be loaded.
fn credentials_hint(source: &IdentityError) -> &'static str {
    if source.is_missing_cluster() {
        bramble_proto::identity::missing_cluster_hint(source)
    } else {
        " (operator commands need operator.pem/operator.key, or an operator principal's with --principal)"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // Finding the master.
    #[error("resolving the master address {hostport}")]
    Resolve {
        hostport: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("no --master given, and no cluster CA to look for it by mDNS in {}{}", dir.display(), bramble_proto::identity::missing_cluster_hint(source))]
    NoClusterCa {
        dir: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error(
        "no --master given and none found by mDNS (pass --master HOST:PORT or set BRAMBLE_MASTER)"
    )]
    NotDiscovered(#[source] DiscoveryError),
    #[error("mDNS found the master without an address")]
    DiscoveredWithoutAddress,

    // Dialling and hello.
    #[error(
        "loading the operator certificate from {}{}",
        dir.display(),
        credentials_hint(source)
    )]
    Credentials {
        dir: PathBuf,
        #[source]
        source: IdentityError,
    },
    #[error(transparent)]
    Endpoint(TransportError),
    #[error(
        "nothing answered at {addr} over QUIC within {}s: is bramble-master running there? Its QUIC port is {} by default ({} is HTTP, for the web UI); pass --master HOST:{} or set BRAMBLE_MASTER, or leave both unset to find the master by mDNS",
        waited.as_secs(),
        bramble_proto::DEFAULT_QUIC_PORT,
        bramble_proto::DEFAULT_HTTP_PORT,
        bramble_proto::DEFAULT_QUIC_PORT
    )]
    NoAnswer {
        addr: SocketAddr,
        waited: std::time::Duration,
    },
    #[error("connecting to the master at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: TransportError,
    },
    #[error(transparent)]
    Hello(HandshakeError),
    #[error("the master refused this operator: {0}")]
    Refused(String),
    /// The master is a standby of a replicated group and did not lead us to the leader: it
    /// knows none (an election is under way), or redirects went round in circles.
    #[error("the master at {addr} is a standby{}", match leader {
        Some(l) => format!(" naming {l} as the leader, but the redirects reached no leader"),
        None => " and no leader is elected yet: try again in a moment, or name the other masters (--master a,b,c)".to_string(),
    })]
    NotLeader {
        addr: SocketAddr,
        /// The leader it named, as `master ID at HOST:PORT`.
        leader: Option<String>,
    },
    #[error("no master to dial")]
    NoMaster,

    // Calls.
    #[error(transparent)]
    Call(#[from] CodecError),
    /// The master answered the call with an error of its own.
    #[error("{0}")]
    Master(String),
    #[error("unexpected answer from the master: {0}")]
    Unexpected(String),
    #[error("reading {file} of task {task}")]
    ReadSandbox {
        file: String,
        task: TaskId,
        #[source]
        source: Box<ClientError>,
    },
    #[error("writing out {file} of task {task}")]
    WriteOut {
        file: String,
        task: TaskId,
        #[source]
        source: std::io::Error,
    },

    // Naming a task's framework.
    #[error("no task {0} is known to the master, live or recently finished (pass --framework for an older one)")]
    UnknownTask(TaskId),
    #[error("several frameworks have a task {0}: pass --framework")]
    AmbiguousTask(TaskId),

    // Uploading an image.
    #[error("reading the image {}", path.display())]
    ReadImage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
