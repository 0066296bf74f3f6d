//! QUIC endpoints with mutual TLS, and the control stream every peer speaks on.
//!
//! Both sides trust exactly one root, the cluster CA, so a peer from another cluster fails the
//! handshake (`UnknownIssuer`) before any of our code sees it. The master presents its CA
//! after its own certificate, so a dialer of another cluster can say *which* cluster it
//! reached (`ForeignCluster`: both CA fingerprints) instead of a bare `UnknownIssuer`; and a
//! dialer whose own certificate the master refused learns it from the TLS alert
//! ([`refused_certificate`]). The server requires a client
//! certificate; the role inside it is read here and handed to the master, which enforces what
//! each role may do. Note that quinn's client `connect()` can succeed even when the server
//! rejects the client's certificate; callers must treat a peer as admitted only after the
//! hello/welcome exchange on the control stream.

use crate::codec::{CodecError, FrameReader, FrameWriter};
use crate::identity::{principal_of, role_of, subject_of, Credentials, Role, NODE_SERVER_NAME};
use crate::ALPN;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// QUIC keep-alive: frequent enough that NAT-free LANs and our idle timeout never bite a
/// healthy but quiet connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection with no packets for this long is dead. Application heartbeats decide what a
/// dead connection *means* (agent removal has its own, longer, timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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
const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;
/// The whole connection's receive window: the one stream plus a little slack.
const CONNECTION_RECEIVE_WINDOW: u32 = 320 * 1024;
/// What we buffer towards a slow peer before our writer waits (it then drops the peer if
/// its queue fills; see `master/src/server.rs`).
const SEND_WINDOW: u64 = 1024 * 1024;
/// Unvalidated connection attempts kept waiting for the accept loop, and what each may buffer.
const MAX_PENDING_INCOMING: usize = 1024;
const INCOMING_BUFFER_BYTES: u64 = 16 * 1024;
const INCOMING_BUFFER_TOTAL_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("building TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(String),
    #[error("binding QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
    #[error("connection to {addr} failed: {source}")]
    Connection {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectionError,
    },
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate: {0}")]
    PeerCertificate(String),
    #[error("peer at {addr} has role {role}, expected a node (master)")]
    NotANode { addr: SocketAddr, role: Role },
    #[error("{addr}: {cluster}")]
    ForeignCluster {
        addr: SocketAddr,
        cluster: ForeignCluster,
    },
}

/// A master whose certificate chain leads to another cluster's CA.
#[derive(Clone, PartialEq, Eq)]
pub struct ForeignCluster {
    /// The fingerprint (cluster id) of the CA the master presented.
    pub theirs: String,
    /// Ours.
    pub ours: String,
}

/// How a [`ForeignCluster`] travels through quinn, which keeps only the text of the TLS error
/// (rustls prints our error with `Debug`): a marker, then both fingerprints.
const FOREIGN_MARKER: &str = "bramble-foreign-cluster:";

impl std::fmt::Display for ForeignCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this master belongs to a different cluster (CA fingerprint {}, ours {})",
            short(&self.theirs),
            short(&self.ours)
        )
    }
}

impl std::fmt::Debug for ForeignCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{FOREIGN_MARKER}{}/{}", self.theirs, self.ours)
    }
}

impl std::error::Error for ForeignCluster {}

impl ForeignCluster {
    /// Finds one in the text of a TLS error (see [`FOREIGN_MARKER`]).
    fn from_reason(reason: &str) -> Option<Self> {
        let rest = &reason[reason.find(FOREIGN_MARKER)? + FOREIGN_MARKER.len()..];
        let is_hex = |c: char| c.is_ascii_hexdigit();
        let end = rest
            .find(|c: char| !is_hex(c) && c != '/')
            .unwrap_or(rest.len());
        let (theirs, ours) = rest[..end].split_once('/')?;
        if theirs.is_empty() || ours.is_empty() {
            return None;
        }
        Some(Self {
            theirs: theirs.to_string(),
            ours: ours.to_string(),
        })
    }
}

/// The first 16 hex digits of a fingerprint: enough to tell clusters apart in a log line.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// The TLS alert a master sent when it refused *our* certificate, by name, if that is how
/// `err` ended the connection.
pub fn refused_certificate(err: &quinn::ConnectionError) -> Option<&'static str> {
    let code = match err {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        _ => return None,
    };
    // QUIC carries a TLS alert as the CRYPTO_ERROR 0x100 + alert (RFC 9001, 4.8).
    match code.checked_sub(0x100)? {
        42 => Some("bad_certificate"),
        45 => Some("certificate_expired"),
        46 => Some("certificate_unknown"),
        48 => Some("unknown_ca"),
        51 => Some("decrypt_error"),
        _ => None,
    }
}

/// Whether `creds`' own certificate was issued by the CA beside it. A card flashed with one
/// cluster's CA and another's certificate fails only at the master's end of the handshake;
/// this says why without asking the master.
pub fn issued_by_own_ca(creds: &Credentials) -> bool {
    let verifier = roots(creds).ok().and_then(|roots| {
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .ok()
    });
    verifier.is_some_and(|v| {
        v.verify_client_cert(&creds.cert, &[], UnixTime::now())
            .is_ok()
    })
}

/// The server verifier every dialer uses: the cluster CA's webpki verifier, which on failure
/// looks at the CA the master sent after its certificate to say which cluster it belongs to.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ours: String,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (&verified, intermediates.last()) {
            (Err(rustls::Error::InvalidCertificate(_)), Some(ca)) => {
                let theirs = crate::identity::cluster_id(ca);
                if theirs == self.ours {
                    return verified;
                }
                let foreign = ForeignCluster {
                    theirs,
                    ours: self.ours.clone(),
                };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(foreign)),
                )))
            }
            _ => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(creds: &Credentials) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(creds.ca.clone())?;
    Ok(roots)
}

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

/// The listening side's TLS: TLS 1.3 only, a client certificate from the cluster CA required,
/// the CA sent after our certificate (a dialer of another cluster can then name ours), and
/// `alpn` the one protocol spoken. Shared by the master's endpoint (`bramble/1`) and the
/// masters' replication (`bramble-raft/1`).
pub fn server_tls(
    creds: &Credentials,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(creds)?), provider.clone())
            .build()
            .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![creds.cert.clone(), creds.ca.clone()],
            creds.clone_key(),
        )?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The dialing side's TLS: TLS 1.3 only, trusting only the cluster CA (naming a foreign
/// cluster's CA on failure), presenting `creds`, speaking `alpn`.
pub fn client_tls(
    creds: &Credentials,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(creds)?), provider.clone())
            .build()
            .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let verifier = ClusterServerVerifier {
        inner,
        ours: creds.cluster_id.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![creds.cert.clone()], creds.clone_key())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
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
        use nix::libc;
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let set = |opt| {
            // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&want as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            }
        };
        if !set(libc::SO_RCVBUFFORCE) {
            // Unprivileged: the kernel caps this at rmem_max, which is still more.
            let _ = set(libc::SO_RCVBUF);
        }
    }
    receive_buffer(socket)
}

/// What the kernel reports as `socket`'s receive buffer (0 if unknown).
fn receive_buffer(socket: &std::net::UdpSocket) -> usize {
    #[cfg(target_os = "linux")]
    {
        use nix::libc;
        use std::os::fd::AsRawFd;
        let mut got: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int we own, with its size.
        let ok = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut got as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
        };
        if ok {
            usize::try_from(got).unwrap_or(0)
        } else {
            0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
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

/// The leaf certificate the peer presented during the handshake.
pub fn peer_certificate(
    conn: &quinn::Connection,
) -> Result<CertificateDer<'static>, TransportError> {
    let identity = conn
        .peer_identity()
        .ok_or(TransportError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TransportError::NoPeerCertificate)?;
    certs
        .into_iter()
        .next()
        .ok_or(TransportError::NoPeerCertificate)
}

/// Who is on the other end of an accepted connection, as their certificate says.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub role: Role,
    pub subject: String,
    /// Who the peer proved it speaks for: its certificate's principal (the role's name for a
    /// shared role certificate), or at the Mesos HTTP edge the HTTP Basic principal (`None`
    /// when that API runs without credentials).
    pub principal: Option<String>,
    pub address: SocketAddr,
}

pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, TransportError> {
    let cert = peer_certificate(conn)?;
    let role = role_of(&cert).map_err(|e| TransportError::PeerCertificate(e.to_string()))?;
    let principal =
        principal_of(&cert).map_err(|e| TransportError::PeerCertificate(e.to_string()))?;
    Ok(PeerIdentity {
        role,
        subject: subject_of(&cert),
        principal: Some(principal),
        address: conn.remote_address(),
    })
}

/// One bidirectional control stream with framed messages both ways.
pub struct ControlStream {
    pub reader: FrameReader<quinn::RecvStream>,
    pub writer: FrameWriter<quinn::SendStream>,
}

impl ControlStream {
    /// Opens the control stream from the dialing side.
    pub async fn open(conn: &quinn::Connection) -> Result<Self, quinn::ConnectionError> {
        let (send, recv) = conn.open_bi().await?;
        Ok(Self::from_parts(send, recv))
    }

    /// Accepts the control stream on the listening side.
    pub async fn accept(conn: &quinn::Connection) -> Result<Self, quinn::ConnectionError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(Self::from_parts(send, recv))
    }

    pub fn from_parts(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self {
            reader: FrameReader::new(recv),
            writer: FrameWriter::new(send),
        }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), CodecError> {
        self.writer.send(msg).await
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        self.reader.recv().await
    }

    pub fn split(
        self,
    ) -> (
        FrameReader<quinn::RecvStream>,
        FrameWriter<quinn::SendStream>,
    ) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_servers_socket_gets_a_bigger_receive_buffer_than_the_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let default = receive_buffer(&socket);
        let granted = grow_receive_buffer(&socket, SERVER_RECEIVE_BUFFER);
        assert!(default > 0);
        assert!(granted > default, "granted {granted}, default {default}");
    }

    use super::*;
    use crate::identity::init_cluster;

    /// A fresh cluster directory (removed when the guard drops).
    fn new_cluster(name: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), name).expect("init");
        dir
    }

    fn creds(cluster: &tempfile::TempDir, role: Role) -> Credentials {
        Credentials::load(cluster.path(), role).expect("credentials")
    }

    /// A server endpoint on an ephemeral loopback port, and that port's address.
    fn serve(creds: &Credentials) -> (quinn::Endpoint, SocketAddr) {
        let server = server_endpoint(creds, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server");
        let addr = server.local_addr().expect("addr");
        (server, addr)
    }

    #[tokio::test]
    async fn mutual_tls_reads_the_client_role() {
        let cluster = new_cluster("t");
        let fw = creds(&cluster, Role::Framework);
        let (server, addr) = serve(&creds(&cluster, Role::Node));
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.expect("incoming");
            let conn = incoming.await.expect("handshake");
            let id = peer_identity(&conn).expect("identity");
            let mut ctl = ControlStream::accept(&conn).await.expect("stream");
            let n: u32 = ctl.recv().await.expect("recv");
            (id.role, n)
        });
        let client = client_endpoint(&fw, unspecified_for(addr)).expect("client");
        let conn = connect(&client, addr).await.expect("connect");
        let mut ctl = ControlStream::open(&conn).await.expect("open");
        ctl.send(&7u32).await.expect("send");
        let (role, n) = accept.await.expect("join");
        assert_eq!(role, Role::Framework);
        assert_eq!(n, 7);
    }

    #[tokio::test]
    async fn a_peer_from_another_cluster_is_refused_at_the_handshake() {
        let (ours, theirs) = (new_cluster("ours"), new_cluster("theirs"));
        let stranger = creds(&theirs, Role::Node);
        let (server, addr) = serve(&creds(&ours, Role::Node));
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.expect("incoming");
            incoming.await.map(|_| ())
        });
        let client = client_endpoint(&stranger, unspecified_for(addr)).expect("client");
        // The stranger does not trust our master's certificate either, so connect fails, and
        // says which cluster the master belongs to.
        match connect(&client, addr).await {
            Err(TransportError::ForeignCluster { cluster, .. }) => {
                assert_eq!(cluster.theirs, creds(&ours, Role::Node).cluster_id);
                assert_eq!(cluster.ours, stranger.cluster_id);
                let said = TransportError::ForeignCluster { addr, cluster }.to_string();
                assert!(
                    said.contains("this master belongs to a different cluster (CA fingerprint"),
                    "{said}"
                );
            }
            Err(other) => panic!("expected ForeignCluster, got {other}"),
            Ok(_) => panic!("foreign cluster must not connect"),
        }
        let server_side = accept.await.expect("join");
        assert!(server_side.is_err(), "server must refuse the handshake");
    }

    #[tokio::test]
    async fn a_certificate_from_another_cluster_beside_our_ca_is_refused_by_an_alert() {
        let (ours, theirs) = (new_cluster("ours"), new_cluster("theirs"));
        let own = creds(&ours, Role::Node);
        let foreign = creds(&theirs, Role::Node);
        // Our CA, their certificate: the master is trusted, we are not.
        let mixed = Credentials {
            cert: foreign.cert.clone(),
            key: foreign.clone_key(),
            ..creds(&ours, Role::Node)
        };
        assert!(issued_by_own_ca(&own));
        assert!(!issued_by_own_ca(&mixed));
        let (server, addr) = serve(&own);
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.expect("incoming");
            let refused = incoming.await.is_err();
            (refused, server)
        });
        let client = client_endpoint(&mixed, unspecified_for(addr)).expect("client");
        // TLS 1.3: the client's side completes before the master has looked at its
        // certificate; the refusal arrives on the first stream.
        let conn = connect(&client, addr).await.expect("connect");
        let err = match ControlStream::open(&conn).await {
            Ok(mut ctl) => {
                let _ = ctl.send(&1u32).await;
                ctl.recv::<u32>()
                    .await
                    .expect_err("refused peer got an answer");
                conn.closed().await
            }
            Err(e) => e,
        };
        assert_eq!(refused_certificate(&err), Some("unknown_ca"), "{err}");
        let (refused, _server) = accept.await.expect("join");
        assert!(refused, "server must refuse the handshake");
    }

    #[test]
    fn a_foreign_cluster_survives_the_trip_through_the_error_text() {
        let f = ForeignCluster {
            theirs: "ab".repeat(32),
            ours: "cd".repeat(32),
        };
        let reason = format!("invalid peer certificate: Other(OtherError({f:?}))");
        assert_eq!(ForeignCluster::from_reason(&reason), Some(f));
        assert_eq!(
            ForeignCluster::from_reason("invalid peer certificate: UnknownIssuer"),
            None
        );
    }

    /// A client connected to a server that accepts the connection and its control stream
    /// but never reads: what the client can push is what the server would hold.
    async fn connected_to_a_server_that_never_reads() -> (
        quinn::Connection,
        ControlStream,
        tokio::task::JoinHandle<()>,
        quinn::Endpoint,
        tempfile::TempDir,
    ) {
        let cluster = new_cluster("t");
        let fw = creds(&cluster, Role::Framework);
        let (server, addr) = serve(&creds(&cluster, Role::Node));
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.expect("incoming").await.expect("tls");
            let _ctl = ControlStream::accept(&conn).await.expect("stream");
            let _ = held_rx.await;
            drop(conn);
        });
        let client = client_endpoint(&fw, unspecified_for(addr)).expect("client");
        let conn = connect(&client, addr).await.expect("connect");
        let mut ctl = ControlStream::open(&conn).await.expect("open");
        // The server sees a stream only once something is sent on it.
        ctl.send(&1u32).await.expect("send");
        let holder = tokio::spawn(async move {
            let _held = held_tx;
            std::future::pending::<()>().await;
        });
        // Detached: the server side lives until `holder` is aborted.
        drop(accept);
        (conn, ctl, holder, client, cluster)
    }

    #[tokio::test]
    async fn a_peer_cannot_open_streams_the_protocol_does_not_use() {
        let (conn, _ctl, holder, _client, _cluster) =
            connected_to_a_server_that_never_reads().await;
        // Both must wait for stream credit the server never gives (no positive event to
        // wait for: a short bound is the test).
        let bound = Duration::from_millis(300);
        assert!(
            tokio::time::timeout(bound, conn.open_uni()).await.is_err(),
            "the server allowed a unidirectional stream"
        );
        assert!(
            tokio::time::timeout(bound, conn.open_bi()).await.is_err(),
            "the server allowed a second bidirectional stream"
        );
        holder.abort();
    }

    #[tokio::test]
    async fn a_peer_can_push_only_a_small_window_at_a_server_that_does_not_read() {
        let (_conn, ctl, holder, _client, _cluster) =
            connected_to_a_server_that_never_reads().await;
        let (_reader, mut writer) = ctl.split();
        let send = writer.get_mut();
        let chunk = vec![0u8; 16 * 1024];
        let mut pushed = 0usize;
        // Writes complete while the server's flow-control window has room, then block.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), send.write(&chunk)).await
        {
            pushed += n;
            assert!(pushed < 8 << 20, "the window never closed");
        }
        assert!(
            pushed <= STREAM_RECEIVE_WINDOW as usize + chunk.len(),
            "a server that does not read accepted {pushed} bytes"
        );
        holder.abort();
    }
}
