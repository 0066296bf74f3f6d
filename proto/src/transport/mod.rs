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

mod endpoint;
mod tls;

pub use endpoint::{client_endpoint, connect, endpoint_config, server_endpoint, unspecified_for};
pub use tls::{client_tls, issued_by_own_ca, refused_certificate, server_tls, ForeignCluster};

use crate::codec::{CodecError, FrameReader, FrameWriter};
use crate::identity::{principal_of, role_of, subject_of, Role};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// QUIC keep-alive: frequent enough that NAT-free LANs and our idle timeout never bite a
/// healthy but quiet connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection with no packets for this long is dead. Application heartbeats decide what a
/// dead connection *means* (agent removal has its own, longer, timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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
    use super::*;
    use crate::identity::{init_cluster, Credentials};
    use endpoint::STREAM_RECEIVE_WINDOW;

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
