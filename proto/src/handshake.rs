//! The dialing side of the hello handshake, written once for every peer that dials the master
//! (agent, scheduler driver, operator client, tests).
//!
//! A peer counts as admitted only after the master answers its `Hello` with `Welcome` (see
//! `transport/`: a QUIC connect can succeed for a peer the master then refuses). So every
//! dialer does the same three steps on a fresh connection: open the control stream, send
//! `Hello{version, kind}`, read the `HelloReply`. [`say_hello`] does them and turns a refusal
//! into an error; [`exchange_hello`] stops at the raw reply for callers (tests of the
//! master's admission) that want to look at a refusal as a value.

use crate::codec::CodecError;
use crate::messages::{Hello, HelloReply, LeaderHint, PeerKind};
use crate::transport::ControlStream;
use crate::{PROTOCOL_VERSION, SOFTWARE_VERSION};

/// What the master said about itself when it admitted us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub protocol_version: u32,
    pub software_version: String,
    pub cluster_id: String,
}

/// Which step of the handshake failed. The messages name the step, so a caller can report
/// them as they are.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("opening the control stream: {0}")]
    Open(#[source] quinn::ConnectionError),
    #[error("sending hello: {0}")]
    Send(#[source] CodecError),
    #[error("reading the hello reply: {0}")]
    Reply(#[source] CodecError),
    /// The master answered `Refused`; the reason is the master's.
    #[error("the master refused this peer: {0}")]
    Refused(String),
    /// The master is a standby of a replicated group; `leader` is where to go, if it knows.
    #[error("this master is not the leader{}", leader_suffix(.0))]
    NotLeader(Option<LeaderHint>),
    /// The master is busy admitting others: dial again after this (plus some jitter).
    #[error("the master is busy admitting other peers; retry in {} ms", .0.as_millis())]
    Busy(std::time::Duration),
}

fn leader_suffix(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(l) => format!(" (the leader is master {} at {})", l.id, l.address),
        None => " (no leader elected yet)".to_string(),
    }
}

/// The hello this software sends as `kind`.
pub fn hello(kind: PeerKind) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        software_version: SOFTWARE_VERSION.to_string(),
        kind,
    }
}

/// Sends our hello as `kind` on `ctl` and returns the master's reply as it came, refusals
/// included.
pub async fn exchange_hello(
    ctl: &mut ControlStream,
    kind: PeerKind,
) -> Result<HelloReply, HandshakeError> {
    ctl.send(&hello(kind)).await.map_err(HandshakeError::Send)?;
    ctl.recv().await.map_err(HandshakeError::Reply)
}

/// Opens the control stream on `conn`, says hello as `kind` and returns the stream once the
/// master has welcomed us; a refusal is [`HandshakeError::Refused`].
pub async fn say_hello(
    conn: &quinn::Connection,
    kind: PeerKind,
) -> Result<(ControlStream, Welcome), HandshakeError> {
    let mut ctl = ControlStream::open(conn)
        .await
        .map_err(HandshakeError::Open)?;
    match exchange_hello(&mut ctl, kind).await? {
        HelloReply::Welcome {
            protocol_version,
            software_version,
            cluster_id,
        } => Ok((
            ctl,
            Welcome {
                protocol_version,
                software_version,
                cluster_id,
            },
        )),
        HelloReply::Refused { reason } => Err(HandshakeError::Refused(reason)),
        HelloReply::NotLeader { leader } => Err(HandshakeError::NotLeader(leader)),
        HelloReply::Busy { retry_after_ms } => Err(HandshakeError::Busy(
            std::time::Duration::from_millis(retry_after_ms.into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{init_cluster, Credentials, Role};
    use crate::transport::{client_endpoint, connect, server_endpoint, unspecified_for};
    use std::net::SocketAddr;

    /// A one-connection "master" that answers the first hello with `reply`, and the hello it
    /// received.
    async fn answer_once(
        reply: HelloReply,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<(Hello, quinn::Connection)>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), "t").expect("init");
        let node = Credentials::load(dir.path(), Role::Node).expect("node");
        let server = server_endpoint(&node, SocketAddr::from(([127, 0, 0, 1], 0))).expect("server");
        let addr = server.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let conn = server.accept().await.expect("incoming").await.expect("tls");
            let mut ctl = ControlStream::accept(&conn).await.expect("stream");
            let got: Hello = ctl.recv().await.expect("hello");
            ctl.send(&reply).await.expect("reply");
            // Keep the stream open until the client has read the reply.
            let _ = ctl.recv::<u8>().await;
            (got, conn)
        });
        (addr, task, dir)
    }

    async fn dial(dir: &std::path::Path, addr: SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
        let op = Credentials::load(dir, Role::Operator).expect("operator");
        let endpoint = client_endpoint(&op, unspecified_for(addr)).expect("client");
        let conn = connect(&endpoint, addr).await.expect("connect");
        (endpoint, conn)
    }

    #[tokio::test]
    async fn a_welcome_yields_the_stream_and_what_the_master_said() {
        let (addr, master, dir) = answer_once(HelloReply::Welcome {
            protocol_version: PROTOCOL_VERSION,
            software_version: "9.9.9".into(),
            cluster_id: "abc".into(),
        })
        .await;
        let (_endpoint, conn) = dial(dir.path(), addr).await;
        let (ctl, welcome) = say_hello(&conn, PeerKind::Operator).await.expect("hello");
        assert_eq!(welcome.cluster_id, "abc");
        assert_eq!(welcome.software_version, "9.9.9");
        drop(ctl);
        let (sent, _conn) = master.await.expect("master");
        assert_eq!(sent.kind, PeerKind::Operator);
        assert_eq!(sent.protocol_version, PROTOCOL_VERSION);
        assert_eq!(sent.software_version, SOFTWARE_VERSION);
    }

    #[tokio::test]
    async fn busy_is_an_error_carrying_when_to_retry() {
        let (addr, master, dir) = answer_once(HelloReply::Busy {
            retry_after_ms: 1_250,
        })
        .await;
        let (_endpoint, conn) = dial(dir.path(), addr).await;
        match say_hello(&conn, PeerKind::Agent).await {
            Err(HandshakeError::Busy(after)) => {
                assert_eq!(after, std::time::Duration::from_millis(1_250))
            }
            Err(other) => panic!("expected busy, got {other}"),
            Ok(_) => panic!("expected busy, got a welcome"),
        }
        conn.close(quinn::VarInt::from_u32(0), b"done");
        master.await.expect("master");
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_carrying_the_masters_reason() {
        let (addr, master, dir) = answer_once(HelloReply::Refused {
            reason: "not today".into(),
        })
        .await;
        let (_endpoint, conn) = dial(dir.path(), addr).await;
        match say_hello(&conn, PeerKind::Scheduler).await {
            Err(HandshakeError::Refused(reason)) => assert_eq!(reason, "not today"),
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("expected a refusal, got a welcome"),
        }
        conn.close(quinn::VarInt::from_u32(0), b"done");
        let (sent, _conn) = master.await.expect("master");
        assert_eq!(sent.kind, PeerKind::Scheduler);
    }

    #[tokio::test]
    async fn a_standby_master_names_the_leader() {
        let leader = LeaderHint {
            id: 2,
            address: "10.0.0.2:5050".into(),
            http: Some("10.0.0.2:5051".into()),
            term: 7,
        };
        let (addr, _master, dir) = answer_once(HelloReply::NotLeader {
            leader: Some(leader.clone()),
        })
        .await;
        let (_endpoint, conn) = dial(dir.path(), addr).await;
        match say_hello(&conn, PeerKind::Agent).await {
            Err(e @ HandshakeError::NotLeader(_)) => {
                assert!(e.to_string().contains("master 2 at 10.0.0.2:5050"), "{e}");
                let HandshakeError::NotLeader(got) = e else {
                    unreachable!()
                };
                assert_eq!(got, Some(leader));
            }
            Err(other) => panic!("expected NotLeader, got {other}"),
            Ok(_) => panic!("expected NotLeader, got a welcome"),
        }
    }
}
