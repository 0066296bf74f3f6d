//! QUIC endpoints: the limits a peer can make us hold, the master's listening socket, dialers.

use super::{
    client_tls, peer_certificate, server_tls, ForeignCluster, TransportError, IDLE_TIMEOUT,
    KEEP_ALIVE,
};
use crate::identity::{role_of, Credentials, Role, NODE_SERVER_NAME};
use crate::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// What the protocol uses, and no more: a peer can make us hold what these allow and nothing
// else. quinn's defaults (100 + 100 streams a side, an unbounded connection receive window,
// ~1.25 MB per stream, 10 MB buffered per pending connection) suit a web server, not this.

/// Streams a peer may open towards us at once. Every connection carries exactly one
/// bidirectional control stream, opened by the dialer (`ControlStream::open`); nothing opens
/// unidirectional streams, and the master never opens one towards its peers.
const SERVER_BIDI_STREAMS: u32 = 1;
const CLIENT_BIDI_STREAMS: u32 = 0;
/// Bytes a peer may have in flight towards us on the control stream: a few typical frames,
/// and enough for a 1 MiB one to stream through in a handful of round trips on a LAN.
pub(super) const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;
/// The whole connection's receive window: the one stream plus a little slack.
const CONNECTION_RECEIVE_WINDOW: u32 = 320 * 1024;
/// What we buffer towards a slow peer before our writer waits (it then drops the peer if
/// its queue fills; see `master/src/server/connections.rs`).
const SEND_WINDOW: u64 = 1024 * 1024;
/// Unvalidated connection attempts kept waiting for the accept loop, and what each may buffer.
const MAX_PENDING_INCOMING: usize = 1024;
const INCOMING_BUFFER_BYTES: u64 = 16 * 1024;
const INCOMING_BUFFER_TOTAL_BYTES: u64 = 4 * 1024 * 1024;

/// Which end of connections an endpoint is: only the listening side accepts a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

fn transport_config(side: Side) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let bidi = match side {
        Side::Server => SERVER_BIDI_STREAMS,
        Side::Client => CLIENT_BIDI_STREAMS,
    };
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(bidi));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_RECEIVE_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW));
    t.send_window(SEND_WINDOW);
    // No datagrams in the protocol: do not buffer any a peer sends.
    t.datagram_receive_buffer_size(None);
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // IDLE_TIMEOUT is a small constant, always representable.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// A server endpoint (the master) bound to `addr`, requiring client certificates from the
/// cluster CA.
pub fn server_endpoint(
    creds: &Credentials,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let tls = server_tls(creds, ALPN)?;
    let quic = QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Verifier(format!("QUIC server config: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(Side::Server)));
    config.max_incoming(MAX_PENDING_INCOMING);
    config.incoming_buffer_size(INCOMING_BUFFER_BYTES);
    config.incoming_buffer_size_total(INCOMING_BUFFER_TOTAL_BYTES);
    let bind = |source| TransportError::Bind { addr, source };
    let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
    let granted = grow_receive_buffer(&socket, SERVER_RECEIVE_BUFFER);
    tracing::debug!(granted, "the QUIC socket's receive buffer");
    quinn::Endpoint::new(
        endpoint_config(creds),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

/// What the master's one UDP socket may hold unread. Every agent's packets arrive on it: the
/// kernel's default (~208 KiB, a few hundred packets) overflows whenever the master is off the
/// CPU for a moment with thousands of agents connected, and every packet dropped there is a
/// QUIC retransmission, a handshake or heartbeat late, at worst a connection lost
/// (`bench/scale.sh` at 10,000 agents on a loaded machine: a quarter of all datagrams dropped,
/// `RcvbufErrors` in `/proc/net/snmp`).
const SERVER_RECEIVE_BUFFER: usize = 16 << 20;

/// Asks for `bytes` of receive buffer on `socket`: past `net.core.rmem_max` when privileged
/// (`SO_RCVBUFFORCE`), else up to it. Returns what the kernel granted (0 if unknown).
fn grow_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) -> usize {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{getsockopt, setsockopt, sockopt};
        if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
            // Unprivileged: the kernel caps this at rmem_max, which is still more.
            let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
        }
        getsockopt(socket, sockopt::RcvBuf).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, bytes);
        0
    }
}

/// The endpoint settings of a listening endpoint: stateless resets keyed by our private key
/// and connection ids any restart of us accepts (see [`stateless_reset_key`]), so peers of a
/// restarted process learn at once that their old connection is gone.
pub fn endpoint_config(creds: &Credentials) -> quinn::EndpointConfig {
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(stateless_reset_key(creds)));
    endpoint_config.cid_generator(|| Box::new(RandomCids));
    endpoint_config
}

/// The key behind the master's QUIC stateless resets, derived from its private key rather
/// than random per process: a master restarted at the same address then answers packets of its
/// predecessor's connections with a reset those peers accept, so agents and frameworks
/// reconnect at once instead of waiting for missed heartbeats.
fn stateless_reset_key(creds: &Credentials) -> ring::hmac::Key {
    let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, creds.key.secret_der());
    let seed = ring::hmac::sign(&derive, b"bramble/1 quic stateless reset");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_ref())
}

/// Random 8-byte connection ids that any master accepts as possibly its own. quinn's default
/// generator signs its ids with a per-process key and silently drops packets whose id it did
/// not sign, which would keep a restarted master from resetting its predecessor's connections.
struct RandomCids;

const CID_LEN: usize = 8;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        // The system RNG does not fail on Linux; a zero id would still work, just guessably.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A client endpoint presenting `creds` and trusting only the cluster CA.
pub fn client_endpoint(
    creds: &Credentials,
    bind: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let tls = client_tls(creds, ALPN)?;
    let quic = QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Verifier(format!("QUIC client config: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config(Side::Client)));
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The unspecified address of the same family as `target`, for binding a client endpoint.
pub fn unspecified_for(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Dials a master and checks that the certificate it presented is a node's.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect(addr, NODE_SERVER_NAME)
        .map_err(|source| TransportError::Connect { addr, source })?;
    let conn = connecting.await.map_err(|source| {
        let foreign = match &source {
            quinn::ConnectionError::TransportError(e) => ForeignCluster::from_reason(&e.reason),
            _ => None,
        };
        match foreign {
            Some(cluster) => TransportError::ForeignCluster { addr, cluster },
            None => TransportError::Connection { addr, source },
        }
    })?;
    let peer = peer_certificate(&conn)?;
    let role = role_of(&peer).map_err(|e| TransportError::PeerCertificate(e.to_string()))?;
    if role != Role::Node {
        return Err(TransportError::NotANode { addr, role });
    }
    Ok(conn)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use nix::sys::socket::{getsockopt, sockopt};

    #[test]
    fn the_servers_socket_gets_a_bigger_receive_buffer_than_the_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = getsockopt(&socket, sockopt::RcvBuf).expect("SO_RCVBUF");
        let granted = grow_receive_buffer(&socket, SERVER_RECEIVE_BUFFER);
        assert!(default > 0);
        assert!(granted > default, "granted {granted}, default {default}");
    }
}
