//! Replication over QUIC: openraft's `RaftNetwork` as one bidirectional stream per call on a
//! cached connection between masters, and the server answering those streams.
//!
//! Every replica has one QUIC endpoint at its own address, listening and dialing. TLS is the
//! project's (`bramble_proto::transport::{server_tls, client_tls}`): TLS 1.3, both sides
//! present a certificate of the cluster CA, and the peer's must carry the `node` role; the ALPN
//! is [`ALPN`], so a replication endpoint and the master's `bramble/1` can never be mistaken
//! for each other. Calls are postcard frames (`bramble_proto::codec`) with a limit of
//! [`MAX_FRAME_BYTES`]; a frame that does not decode is dropped with a warning and its stream
//! reset, never a panic.
//!
//! Besides Raft's own RPCs a follower forwards its callers' writes and reads to the leader
//! ([`Request::Write`], [`Request::Read`], [`Request::List`]); the leader answers them itself
//! and never forwards again, so a request crosses at most one hop.

use bramble_proto::codec::{FrameReader, FrameWriter};
use bramble_proto::identity::{role_of, Credentials, Role, NODE_SERVER_NAME};
use bramble_proto::transport::{self, TransportError};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::types::{Command, NodeId, Response, Row, TypeConfig, Versioned};

/// The replication protocol's ALPN.
pub const ALPN: &[u8] = b"bramble-raft/1";
/// Largest frame either way: an append of `max_payload_entries` commands of
/// `MAX_COMMAND_BYTES`, or a snapshot chunk, with room to spare.
pub const MAX_FRAME_BYTES: usize = 24 << 20;
/// Streams a peer may have open towards us at once (Raft pipelines a few per peer).
const MAX_STREAMS: u32 = 64;
/// Dialing a peer: a LAN answers in milliseconds; a dial runs on its own, callers wait for it
/// only as long as their call may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// A bound port released by a replica shut down in this process: how long binding waits.
const REBIND_WAIT: Duration = Duration::from_secs(3);
/// How long the server waits for a request's frame once its stream is open.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Quick to notice a peer that vanished without closing.
const KEEP_ALIVE: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const INITIAL_RTT: Duration = Duration::from_millis(20);

/// One call on a stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower's caller's write, for the leader to make.
    Write(Command),
    /// A follower's caller's linearizable read.
    Read {
        table: String,
        key: String,
    },
    List {
        table: String,
        prefix: String,
    },
}

/// The answer on the same stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Write(Result<Response, Refusal>),
    Read(Result<Option<Versioned>, Refusal>),
    List(Result<Vec<Row>, Refusal>),
}

/// Why the leader did not carry out a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It is not (or no longer) the leader; this one is, if known.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    Invalid(String),
    /// No majority answered within the request timeout.
    Timeout(Duration),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("peer {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr}: {reason}")]
    Failed { addr: String, reason: String },
    #[error("peer {addr} did not answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("this replica is isolated (fault injection)")]
    Isolated,
    /// The request went out (all or part of it) and no answer came back: the peer may have
    /// carried it out. A forwarded write's outcome is unknown.
    #[error("peer {addr} got the request but no answer came back: {reason}")]
    NoAnswer { addr: String, reason: String },
}

impl CallError {
    /// Whether the peer may have received and carried out the request.
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, CallError::NoAnswer { .. })
    }
}

/// What the client side and the server share: the endpoint, connections to peers (live or
/// being dialed), the isolation switch tests use to partition a node.
#[derive(Clone)]
pub struct Net {
    endpoint: quinn::Endpoint,
    conns: Arc<Mutex<HashMap<String, Slot>>>,
    isolated: Arc<AtomicBool>,
    /// The addresses connections are accepted from (`None`: any). A node certificate is no
    /// proof of being a master — every card holds one — so a replica takes connections only
    /// from its group's members' addresses ([`Net::admit_only`], [`Net::admit`]).
    admitted: Arc<Mutex<Option<HashSet<IpAddr>>>>,
}

type Dialed = Option<Result<quinn::Connection, String>>;

/// A peer's connection, or the dial under way that callers wait on. Dials run in their own
/// task: openraft gives a heartbeat only a heartbeat interval, shorter than a TLS handshake
/// on a loaded Pi may take, and a dial abandoned with each timed-out call would never finish.
enum Slot {
    Ready(quinn::Connection),
    Dialing(watch::Receiver<Dialed>),
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(4 << 20));
    t.receive_window(quinn::VarInt::from_u32(16 << 20));
    t.send_window(16 << 20);
    t.datagram_receive_buffer_size(None);
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Masters share a LAN: quinn's default first guess (333 ms) would make a lost handshake
    // packet cost a second before it is sent again, longer than an election.
    t.initial_rtt(INITIAL_RTT);
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

impl Net {
    /// Binds this replica's endpoint at `addr`.
    pub async fn bind(creds: &Credentials, addr: SocketAddr) -> Result<Self, TransportError> {
        let transport = Arc::new(transport_config());
        let server_tls = transport::server_tls(creds, ALPN)?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| TransportError::Verifier(format!("QUIC server config: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport.clone());
        let client_tls = transport::client_tls(creds, ALPN)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| TransportError::Verifier(format!("QUIC client config: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(transport);
        let bind = |source| TransportError::Bind { addr, source };
        // A replica of this process shut down a moment ago may still be draining its
        // connections on this port: wait for it, briefly (a new process never waits).
        let deadline = tokio::time::Instant::now() + REBIND_WAIT;
        let socket = loop {
            match std::net::UdpSocket::bind(addr) {
                Ok(socket) => break socket,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(bind(e)),
            }
        };
        let mut endpoint = quinn::Endpoint::new(
            transport::endpoint_config(creds),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            conns: Arc::default(),
            isolated: Arc::default(),
            admitted: Arc::default(),
        })
    }

    /// From now on, connections are accepted only from `ips` (and what [`Net::admit`] adds).
    pub fn admit_only(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let set = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        *self.lock_admitted() = Some(set);
    }

    /// Accepts connections from `ip` too (a member added to the group).
    pub fn admit(&self, ip: IpAddr) {
        if let Some(set) = self.lock_admitted().as_mut() {
            set.insert(ip.to_canonical());
        }
    }

    fn admits(&self, ip: IpAddr) -> bool {
        self.lock_admitted()
            .as_ref()
            .is_none_or(|set| set.contains(&ip.to_canonical()))
    }

    fn lock_admitted(&self) -> std::sync::MutexGuard<'_, Option<HashSet<IpAddr>>> {
        // A set of addresses: a panic elsewhere cannot leave it half-updated.
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::SeqCst);
        if isolated {
            let conns: Vec<_> = self.lock_conns().drain().collect();
            for (_, slot) in conns {
                if let Slot::Ready(c) = slot {
                    c.close(quinn::VarInt::from_u32(1), b"isolated");
                }
            }
        }
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// Closes the endpoint: peers see our connections end at once.
    pub fn close(&self) {
        self.lock_conns().clear();
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
    }

    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock leaves only a map of connections behind.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connection(&self, addr: &str) -> Result<quinn::Connection, CallError> {
        let mut dialed = {
            let mut conns = self.lock_conns();
            match conns.get(addr) {
                Some(Slot::Ready(c)) if c.close_reason().is_none() => return Ok(c.clone()),
                Some(Slot::Dialing(rx)) => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    conns.insert(addr.to_string(), Slot::Dialing(rx.clone()));
                    tokio::spawn(self.clone().dial(addr.to_string(), tx));
                    rx
                }
            }
        };
        let unreachable = |reason: String| CallError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let result = dialed
            .wait_for(|d| d.is_some())
            .await
            .map_err(|_| unreachable("the dial was abandoned".into()))?
            .clone();
        match result {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(reason)) => Err(unreachable(reason)),
            None => Err(unreachable("the dial was abandoned".into())),
        }
    }

    async fn dial(self, addr: String, done: watch::Sender<Dialed>) {
        let result = self.dial_inner(&addr).await;
        {
            let mut conns = self.lock_conns();
            // Isolation may have cleared the slot meanwhile: then nothing is kept.
            if matches!(conns.get(&addr), Some(Slot::Dialing(_))) {
                match &result {
                    Ok(conn) if !self.is_isolated() => {
                        conns.insert(addr.clone(), Slot::Ready(conn.clone()));
                    }
                    _ => {
                        conns.remove(&addr);
                    }
                }
            }
        }
        if let Err(reason) = &result {
            tracing::debug!(peer = %addr, %reason, "replica: dialing a peer failed");
        }
        let _ = done.send(Some(result));
    }

    async fn dial_inner(&self, addr: &str) -> Result<quinn::Connection, String> {
        let target = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| "no address".to_string())?;
        let connecting = self
            .endpoint
            .connect(target, NODE_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("no handshake within {DIAL_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        check_node(&conn)?;
        Ok(conn)
    }

    /// Drops a connection that failed a call (not a dial in flight).
    fn forget(&self, addr: &str) {
        let mut conns = self.lock_conns();
        if matches!(conns.get(addr), Some(Slot::Ready(_))) {
            conns.remove(addr);
        }
    }

    /// One call: a stream, the request, the reply, within `ttl`.
    pub async fn call(&self, addr: &str, req: &Request, ttl: Duration) -> Result<Reply, CallError> {
        if self.is_isolated() {
            return Err(CallError::Isolated);
        }
        // Set once the first byte of the request may have left: from then on a failure
        // cannot tell whether the peer acted on it.
        let sent = AtomicBool::new(false);
        let result = tokio::time::timeout(ttl, self.call_inner(addr, req, &sent)).await;
        let no_answer = |reason: String| CallError::NoAnswer {
            addr: addr.to_string(),
            reason,
        };
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.forget(addr);
                if sent.load(Ordering::SeqCst) {
                    Err(no_answer(e.to_string()))
                } else {
                    Err(e)
                }
            }
            Err(_) if sent.load(Ordering::SeqCst) => {
                Err(no_answer(format!("no answer within {ttl:?}")))
            }
            Err(_) => Err(CallError::Timeout {
                addr: addr.to_string(),
                after: ttl,
            }),
        }
    }

    async fn call_inner(
        &self,
        addr: &str,
        req: &Request,
        sent: &AtomicBool,
    ) -> Result<Reply, CallError> {
        let conn = self.connection(addr).await?;
        let failed = |reason: String| CallError::Failed {
            addr: addr.to_string(),
            reason,
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| failed(e.to_string()))?;
        let mut writer = FrameWriter::with_limit(send, MAX_FRAME_BYTES);
        sent.store(true, Ordering::SeqCst);
        writer.send(req).await.map_err(|e| failed(e.to_string()))?;
        let mut send = writer.into_inner();
        send.finish().map_err(|e| failed(e.to_string()))?;
        let mut reader = FrameReader::with_limit(recv, MAX_FRAME_BYTES);
        reader.recv().await.map_err(|e| failed(e.to_string()))
    }

    /// The accept loop: every connection from a cluster node, every stream one request,
    /// answered by `handler`; a request the handler refuses (`None`) gets its stream reset.
    pub async fn serve<H, F>(self, handler: H)
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Option<Reply>> + Send + 'static,
    {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.is_isolated() {
                incoming.refuse();
                continue;
            }
            let remote = incoming.remote_address();
            if !self.admits(remote.ip()) {
                tracing::warn!(%remote, "replica: refusing a connection from an address that is no member of this group");
                incoming.refuse();
                continue;
            }
            let handler = handler.clone();
            let net = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let conn = match tokio::time::timeout(DIAL_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "replica: a peer's handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                if let Err(reason) = check_node(&conn) {
                    tracing::warn!(%remote, %reason, "replica: refusing a peer that is not a node");
                    conn.close(quinn::VarInt::from_u32(2), b"not a node");
                    return;
                }
                net.serve_connection(conn, remote, handler).await;
            });
        }
    }

    async fn serve_connection<H, F>(&self, conn: quinn::Connection, remote: SocketAddr, handler: H)
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Option<Reply>> + Send + 'static,
    {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return,
            };
            if self.is_isolated() {
                conn.close(quinn::VarInt::from_u32(1), b"isolated");
                return;
            }
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut reader = FrameReader::with_limit(recv, MAX_FRAME_BYTES);
                let req: Request = match tokio::time::timeout(REQUEST_READ_TIMEOUT, reader.recv())
                    .await
                {
                    Ok(Ok(req)) => req,
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "replica: dropping an undecodable request from a peer");
                        let mut send = send;
                        let _ = send.reset(quinn::VarInt::from_u32(3));
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "replica: a peer opened a stream and sent no request");
                        return;
                    }
                };
                let Some(reply) = handler(req).await else {
                    let mut send = send;
                    let _ = send.reset(quinn::VarInt::from_u32(4));
                    return;
                };
                let mut writer = FrameWriter::with_limit(send, MAX_FRAME_BYTES);
                if let Err(e) = writer.send(&reply).await {
                    tracing::debug!(%remote, error = %e, "replica: could not answer a peer");
                    return;
                }
                let _ = writer.into_inner().finish();
            });
        }
    }
}

/// The peer must hold a node certificate (masters do; frameworks and operators never speak
/// replication).
fn check_node(conn: &quinn::Connection) -> Result<(), String> {
    let cert = transport::peer_certificate(conn).map_err(|e| e.to_string())?;
    match role_of(&cert) {
        Ok(Role::Node) => Ok(()),
        Ok(role) => Err(format!("its certificate has role {role}, not node")),
        Err(e) => Err(e.to_string()),
    }
}

/// openraft's factory: one [`Peer`] per target.
pub struct Network {
    pub net: Net,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            net: self.net.clone(),
        }
    }
}

/// An append carries at most this many bytes of entries (but always one entry). Openraft
/// gives every append one heartbeat interval to come back; sent megabytes at once (a big
/// task record kept in 200 KiB chunks, up to 32 entries an append) a follower on a busy Pi
/// cannot answer in time, and the leader would resend the same too-big append forever while
/// its followers, hearing no heartbeat, elect someone else who then does the same. 256 KiB
/// takes ~21 ms on 100 Mbit Ethernet; a link under ~25 Mbit (Wi-Fi) wants a longer
/// heartbeat.
const APPEND_BUDGET_BYTES: usize = 256 * 1024;

/// Drops the entries of `rpc` past `budget` bytes (keeping at least the first) and says up
/// to which log id the shortened append reaches, or `None` when nothing was dropped. A
/// follower commits no further than the last entry it was sent, so a shortened append is
/// safe; the leader sends the rest next.
fn trim_to_budget(
    rpc: &mut AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Option<LogId<NodeId>> {
    let mut total = 0usize;
    let mut keep = 0usize;
    for entry in &rpc.entries {
        // An entry that cannot be sized is counted as over the budget: it goes alone.
        let size = bramble_proto::codec::payload_size(entry).unwrap_or(budget);
        if keep > 0 && total + size > budget {
            break;
        }
        total += size;
        keep += 1;
    }
    if keep == rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id)
}

/// The client towards one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    net: Net,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn to_rpc<E: std::error::Error>(e: CallError) -> RpcErr<E> {
    match e {
        CallError::Unreachable { .. } | CallError::Isolated => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RpcErr<E> {
    let e = CallError::Failed {
        addr: String::new(),
        reason: format!("unexpected reply to {what}"),
    };
    RPCError::Network(NetworkError::new(&e))
}

impl Peer {
    fn remote<E: std::error::Error>(&self, e: RaftError<NodeId, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let sent_up_to = trim_to_budget(&mut rpc, APPEND_BUDGET_BYTES);
        let reply = self
            .net
            .call(&self.addr, &Request::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(to_rpc)?;
        match reply {
            Reply::AppendEntries(Ok(AppendEntriesResponse::Success)) if sent_up_to.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(sent_up_to))
            }
            Reply::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            _ => Err(unexpected("append entries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let reply = self
            .net
            .call(
                &self.addr,
                &Request::InstallSnapshot(rpc),
                option.hard_ttl(),
            )
            .await
            .map_err(to_rpc)?;
        match reply {
            Reply::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(unexpected("install snapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let reply = self
            .net
            .call(&self.addr, &Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(to_rpc)?;
        match reply {
            Reply::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(unexpected("vote")),
        }
    }

    fn backoff(&self) -> Backoff {
        // An unreachable peer is retried often enough that a restarted master rejoins
        // within a heartbeat or two.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, Vote};

    fn put(index: u64, bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Put {
                table: "t".into(),
                key: format!("k{index}"),
                value: vec![7; bytes],
            }),
        }
    }

    fn append(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: sizes
                .iter()
                .enumerate()
                .map(|(i, &b)| put(i as u64 + 1, b))
                .collect(),
            leader_commit: None,
        }
    }

    #[test]
    fn a_small_append_is_sent_whole() {
        let mut rpc = append(&[10, 20, 30]);
        assert_eq!(trim_to_budget(&mut rpc, 1024), None);
        assert_eq!(rpc.entries.len(), 3);
        let mut empty = append(&[]);
        assert_eq!(trim_to_budget(&mut empty, 1024), None);
    }

    #[test]
    fn a_big_append_is_cut_at_the_budget_and_names_its_last_entry() {
        let mut rpc = append(&[400, 400, 400, 400]);
        let last = trim_to_budget(&mut rpc, 1000).expect("cut");
        assert_eq!(rpc.entries.len(), 2);
        assert_eq!(last.index, 2);
    }

    #[test]
    fn an_entry_over_the_budget_still_goes_alone() {
        let mut rpc = append(&[5000, 10]);
        let last = trim_to_budget(&mut rpc, 1000).expect("cut");
        assert_eq!(rpc.entries.len(), 1);
        assert_eq!(last.index, 1);
    }
}
