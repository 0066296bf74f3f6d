//! The agent's connection to its master: find it, dial, hello, register, then heartbeats and
//! messages both ways until the link dies, and again from the top with backoff.
//!
//! The link is the only place that knows about QUIC on the agent. It asks the agent state for
//! a fresh Register message on every connection, so a re-registration always carries the
//! tasks running *now*. A master that stops answering heartbeats is treated like a closed
//! connection: QUIC's idle timeout alone would take longer, and the agent should go looking
//! for a (possibly new) master promptly.
//!
//! Finding the master is the [`MasterLocator`]'s job, asked again on every attempt: a
//! configured address is resolved afresh (DNS may change); otherwise mDNS says where masters of
//! this cluster are. An mDNS answer that cannot be dialled is reported back to the browser,
//! which verifies it and browses afresh, so a master that moved or was replaced is found by its
//! new announcement rather than by its stale record.

mod leader_probe;
mod resolver;

use crate::fetcher::MasterFetch;
use crate::image_service;
use crate::runtime::Input;
use bramble_proto::backoff::Backoff;
use bramble_proto::codec::{CodecError, MAX_BATCH};
use bramble_proto::discovery;
use bramble_proto::handshake::{self, HandshakeError};
use bramble_proto::masters::{Wait, MAX_REDIRECTS};
use bramble_proto::messages::{AgentToMaster, LeaderHint, MasterToAgent, PeerKind};
use bramble_proto::transport;
use leader_probe::OtherMaster;
use resolver::Resolver;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Dialling a discovered master: its record may be stale, so give up sooner and look again.
const DISCOVERED_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often "still looking" is logged while no master of this cluster is on mDNS.
const STILL_LOOKING_EVERY: Duration = Duration::from_secs(30);
/// Rounds of asking every master who leads, while none names one, before the masters are
/// dialled in turn anyway (each round takes at most a second: `leader_probe`).
const LEADERLESS_ASKS: u32 = 3;
/// Heartbeats that may go unanswered before the master counts as gone.
const MISSED_HEARTBEATS: u32 = 4;
/// How long an agent waits between attempts on a master of another cluster: only someone
/// reflashing the card or copying the cluster directory fixes that, and the master's log
/// should not fill with our refused handshakes meanwhile.
pub const CLUSTER_MISMATCH_RETRY: Duration = Duration::from_secs(60);
/// What the operator does about a mismatch.
const MISMATCH_FIX: &str = "reflash the card or copy the cluster dir (ca.pem, node.pem, node.key) from the master's cluster";

/// How the agent finds its master.
#[derive(Debug, Clone)]
pub enum MasterLocator {
    /// A configured `host:port`, resolved again on every attempt (DNS may change).
    Static(String),
    /// The configured masters of a replicated group (`host:port` each), dialled in turn; a
    /// standby's redirect to the leader is followed (see `bramble_proto::masters`).
    Several(Vec<String>),
    /// Browse mDNS for a master advertising this cluster id, on these interfaces (empty: every
    /// up, multicast-capable, non-loopback one).
    Discover {
        cluster_id: String,
        interfaces: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Locate(String),
    #[error("{0}")]
    Dial(String),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("control stream: {0}")]
    Codec(#[from] CodecError),
    #[error("master refused this agent: {0}")]
    Refused(String),
    /// The master dialled (at `from`) is a standby of a replicated group; `leader` is where
    /// it says the leader is, if one is elected.
    #[error("master {from} is a standby{}", match leader {
        Some(l) => format!(" (the leader is master {} at {})", l.id, l.address),
        None => " and no leader is elected yet".to_string(),
    })]
    NotLeader {
        from: SocketAddr,
        leader: Option<LeaderHint>,
    },
    /// The master we were linked to went quiet, and another master says the leader is now
    /// at `leader` (`HOST:PORT`).
    #[error("master {from} went quiet; the leader is now at {leader}")]
    LeaderMoved { from: SocketAddr, leader: String },
    /// The master is admitting others and gave an appointment: come back then.
    #[error("the master is busy admitting other agents; retrying in {0:?}")]
    Busy(Duration),
    /// The master and this agent are not of one cluster: the message says which side and
    /// what to do. Retrying soon cannot help.
    #[error("{0}")]
    ClusterMismatch(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("master sent {0} before registering us")]
    Unexpected(&'static str),
    #[error("agent is shutting down")]
    Shutdown,
}

/// What the link hands on itself, past the runtime: image pieces to the image service and
/// artifact pieces to the fetcher.
pub struct Relays {
    pub images: mpsc::Sender<image_service::Request>,
    pub artifacts: MasterFetch,
}

/// Runs the link until `shutdown` flips.
///
/// `own_certificate_ok` says whether this agent's certificate was issued by the CA beside it
/// (`transport::issued_by_own_ca`): when the master refuses the certificate, that tells a card
/// flashed with another cluster's certificate from a certificate the master merely denies.
pub async fn run(
    endpoint: quinn::Endpoint,
    locator: MasterLocator,
    inputs: mpsc::Sender<Input>,
    Relays { images, artifacts }: Relays,
    heartbeat: Duration,
    own_certificate_ok: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut resolver = Resolver::new(locator);
    let mut backoff = Backoff::new();
    // Whether the next attempt first asks every master who leads (see `leader_probe`): not
    // when it follows a leader just named, nor after an answer that asking cannot change.
    let mut ask_first = true;
    // Rounds in a row in which no master named a leader (an election under way).
    let mut leaderless_asks = 0;
    // The mismatch last logged: said once at warn, then quietly until it changes.
    let mut mismatch_said: Option<String> = None;
    loop {
        if ask_first {
            match ask_who_leads(&endpoint, &mut resolver, &mut shutdown).await {
                Asked::ShuttingDown => return,
                // Asking again beats dialling a master in turn, which may be the dead one
                // (a whole connect timeout): an election ends within a round or two.
                Asked::NoLeader if leaderless_asks < LEADERLESS_ASKS => {
                    leaderless_asks += 1;
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(leader_probe::PROBE_EVERY) => {}
                    }
                    continue;
                }
                Asked::NoLeader | Asked::Found | Asked::Nobody => leaderless_asks = 0,
            }
        }
        let mut reached = Reached::default();
        let attempt = session(
            &endpoint,
            &mut resolver,
            Sinks {
                inputs: &inputs,
                images: &images,
                artifacts: &artifacts,
            },
            heartbeat,
            &mut shutdown,
            &mut reached,
            own_certificate_ok,
        );
        let started = Instant::now();
        let result = attempt.await;
        let Reached {
            welcomed,
            registered,
        } = reached;
        // Fetches waiting on this connection's answers fail now rather than time out.
        artifacts.connected(None);
        if inputs.send(Input::MasterDisconnected).await.is_err() {
            return;
        }
        if !matches!(result, Err(LinkError::ClusterMismatch(_))) {
            mismatch_said = None;
        }
        // Which master to dial next: the leader again after a lost link, the one a standby
        // named, or the next configured one.
        let next = match &result {
            Err(LinkError::Shutdown) => return,
            Err(LinkError::NotLeader {
                from,
                leader: Some(leader),
            }) => match resolver.redirected(&leader.address) {
                Some(wait) => {
                    info!(
                        "master {from} is a standby; following leader {} at {}",
                        leader.id, leader.address
                    );
                    wait
                }
                None => {
                    warn!(
                        "master {from} is a standby naming leader {} at {}, but {MAX_REDIRECTS} redirects in a row reached no leader; trying the next master",
                        leader.id, leader.address
                    );
                    Wait::Backoff
                }
            },
            // Our leader went quiet and another master says the leader is now elsewhere.
            Err(LinkError::LeaderMoved { from, leader }) => {
                // As a lost link (the quiet master goes last in the rotation), then the
                // redirect to the leader named.
                resolver.welcomed();
                resolver.lost();
                match resolver.redirected(leader) {
                    Some(wait) => {
                        warn!(
                            "master {from} stopped answering heartbeats and another master says the leader is now at {leader}; following it"
                        );
                        wait
                    }
                    None => Wait::Backoff,
                }
            }
            // A busy master is the right one, shedding a reconnect storm: keep the
            // appointment with it rather than moving on (a standby would only send us back).
            Err(LinkError::Busy(_)) => Wait::Backoff,
            Err(LinkError::NotLeader { from, leader: None }) => {
                let then = if resolver.several() {
                    "trying the next master"
                } else {
                    "retrying"
                };
                info!("master {from} is a standby and no leader is elected yet; {then}");
                resolver.no_leader_yet()
            }
            _ if welcomed => {
                resolver.welcomed();
                resolver.lost();
                Wait::Backoff
            }
            _ => resolver.failed(),
        };
        ask_first = next != Wait::Now
            && !matches!(
                result,
                Err(LinkError::Busy(_) | LinkError::ClusterMismatch(_) | LinkError::Refused(_))
            );
        let delay = match (next, result) {
            (_, Err(LinkError::ClusterMismatch(why))) => {
                if mismatch_said.as_deref() != Some(why.as_str()) {
                    warn!(
                        "{why}; retrying every {}s",
                        CLUSTER_MISMATCH_RETRY.as_secs()
                    );
                    mismatch_said = Some(why);
                } else {
                    debug!("{why}");
                }
                CLUSTER_MISMATCH_RETRY
            }
            (_, Err(LinkError::Busy(after))) => busy_delay(&mut backoff, after),
            (_, Err(LinkError::Refused(reason))) => {
                // Retrying quickly will not change the master's mind: log loudly, retry slowly.
                warn!("master refused this agent: {reason}");
                backoff.slowest();
                backoff.next_delay()
            }
            (Wait::Now, _) => Duration::ZERO,
            (Wait::Pause(pause), Err(e)) => {
                if !matches!(e, LinkError::NotLeader { .. }) {
                    warn!("master link down: {e}; trying the next master in {pause:?}");
                }
                pause
            }
            (_, Err(e @ LinkError::NotLeader { .. })) => {
                let delay = backoff.next_delay();
                debug!("{e}; retrying in {delay:?}");
                delay
            }
            (_, Err(e)) => {
                // The link had been healthy for a while, or the master had taken us in (a
                // restarted master is back at once: find it without a grown backoff).
                if registered || started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                warn!("master link down: {e}; retrying in {delay:?}");
                delay
            }
            (_, Ok(())) => backoff.next_delay(),
        };
        if delay.is_zero() {
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What asking every master who leads came to.
enum Asked {
    /// A leader was named: the resolver points at it.
    Found,
    /// Masters were asked and none named a leader.
    NoLeader,
    /// One master or none to ask.
    Nobody,
    ShuttingDown,
}

/// Asks every master at once who leads, and points the resolver at the leader if one is
/// named (see `leader_probe`).
async fn ask_who_leads(
    endpoint: &quinn::Endpoint,
    resolver: &mut Resolver,
    shutdown: &mut watch::Receiver<bool>,
) -> Asked {
    // One master (configured, or alone on mDNS) has nothing to choose between.
    let masters = resolver.others();
    if masters.len() < 2 {
        return Asked::Nobody;
    }
    let found = tokio::select! {
        _ = shutdown.changed() => return Asked::ShuttingDown,
        found = leader_probe::who_leads(endpoint, &masters, None) => found,
    };
    match found {
        Some(leader) => {
            info!(%leader, "asked the masters who leads; dialling the leader");
            resolver.leader_found(&leader);
            Asked::Found
        }
        None => {
            debug!("asked the masters who leads; none named a leader");
            Asked::NoLeader
        }
    }
}

/// How far one attempt got: welcomed by the master (it is the leader), registered with it.
#[derive(Default)]
struct Reached {
    welcomed: bool,
    registered: bool,
}

/// The master answered busy with an appointment: honour it, with jitter, and say so quietly
/// (a master shedding a reconnect storm tells thousands of agents this at once).
fn busy_delay(backoff: &mut Backoff, after: Duration) -> Duration {
    let delay = backoff.busy(after);
    info!("the master is busy admitting other agents; dialling again in {delay:?}");
    delay
}

/// Where what the master sends goes: the runtime's inputs, image transfers, and the
/// fetcher's artifact pieces.
struct Sinks<'a> {
    inputs: &'a mpsc::Sender<Input>,
    images: &'a mpsc::Sender<image_service::Request>,
    artifacts: &'a MasterFetch,
}

/// One connection, from finding the master to the link's death.
async fn session(
    endpoint: &quinn::Endpoint,
    resolver: &mut Resolver,
    sinks: Sinks<'_>,
    heartbeat: Duration,
    shutdown: &mut watch::Receiver<bool>,
    reached: &mut Reached,
    own_certificate_ok: bool,
) -> Result<(), LinkError> {
    let target = tokio::select! {
        _ = shutdown.changed() => return Err(LinkError::Shutdown),
        target = resolver.resolve() => target.map_err(LinkError::Locate)?,
    };
    debug!(master = ?target.addrs, "connecting");
    let dialled = tokio::select! {
        _ = shutdown.changed() => return Err(LinkError::Shutdown),
        dialled = discovery::connect_first(endpoint, &target.addrs, target.dial_timeout) => dialled,
    };
    let (conn, addr) = match dialled {
        Ok(c) => c,
        Err(e) => {
            resolver.report(&target.instance, true);
            let what = target.instance.as_deref().unwrap_or("the master");
            if let Some(cluster) = &e.foreign {
                return Err(LinkError::ClusterMismatch(format!(
                    "dialling {what}: {cluster}: this agent's certificate is from another cluster than the master's; {MISMATCH_FIX}"
                )));
            }
            return Err(LinkError::Dial(format!("dialling {what}: {e}")));
        }
    };
    let others = resolver.others();
    let probe = (!others.is_empty()).then(|| Probe {
        endpoint: endpoint.clone(),
        others,
    });
    let result = registered_session(&conn, addr, sinks, heartbeat, probe, shutdown, reached).await;
    let result = match (result, conn.close_reason()) {
        // The master's end of the handshake refused our certificate: the TLS alert says so.
        (Err(e), Some(closed)) if !reached.registered => {
            match transport::refused_certificate(&closed) {
                Some(alert) => Err(LinkError::ClusterMismatch(certificate_refused(
                    addr,
                    alert,
                    own_certificate_ok,
                ))),
                None => Err(e),
            }
        }
        (result, _) => result,
    };
    match &result {
        Err(LinkError::Shutdown) => {}
        // A standby that knows no leader: prefer the other masters mDNS knows.
        Err(LinkError::NotLeader { leader: None, .. }) => resolver.report(&target.instance, true),
        _ => resolver.report(&target.instance, false),
    }
    let why = match &result {
        Err(LinkError::Shutdown) => "agent shutting down".to_string(),
        Err(e) => e.to_string(),
        Ok(()) => "closed".to_string(),
    };
    conn.close(
        quinn::VarInt::from_u32(0),
        &why.as_bytes()[..why.len().min(200)],
    );
    result
}

/// What to say when the master at `addr` refused our certificate with TLS alert `alert`.
fn certificate_refused(addr: SocketAddr, alert: &str, own_certificate_ok: bool) -> String {
    let why = if !own_certificate_ok {
        format!("this agent's certificate is from another cluster (node.pem was not issued by the ca.pem beside it); {MISMATCH_FIX}")
    } else if alert == "certificate_expired" {
        "this agent's certificate has expired or is not valid yet (check both clocks), or was renewed on the master only; copy a current one from the cluster dir".to_string()
    } else {
        format!(
            "this agent's certificate is from another cluster than the master's; {MISMATCH_FIX}"
        )
    };
    format!("the master at {addr} refused this agent's certificate (TLS alert {alert}): {why}")
}

/// Asking the other masters of a replicated group who leads (see `leader_probe`).
struct Probe {
    endpoint: quinn::Endpoint,
    others: Vec<OtherMaster>,
}

async fn registered_session(
    conn: &quinn::Connection,
    addr: SocketAddr,
    Sinks {
        inputs,
        images,
        artifacts,
    }: Sinks<'_>,
    heartbeat: Duration,
    probe: Option<Probe>,
    shutdown: &mut watch::Receiver<bool>,
    reached: &mut Reached,
) -> Result<(), LinkError> {
    let (mut ctl, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::say_hello(conn, PeerKind::Agent),
    )
    .await
    .map_err(|_| LinkError::Timeout("the master's welcome"))?
    .map_err(|e| match e {
        HandshakeError::Open(e) => LinkError::Connection(e),
        HandshakeError::Send(e) | HandshakeError::Reply(e) => LinkError::Codec(e),
        HandshakeError::Refused(reason) => LinkError::Refused(reason),
        HandshakeError::NotLeader(leader) => LinkError::NotLeader { from: addr, leader },
        HandshakeError::Busy(after) => LinkError::Busy(after),
    })?;
    reached.welcomed = true;
    let (reg_tx, reg_rx) = oneshot::channel();
    inputs
        .send(Input::BuildRegistration(reg_tx))
        .await
        .map_err(|_| LinkError::Shutdown)?;
    let registration = reg_rx.await.map_err(|_| LinkError::Shutdown)?;
    ctl.send(&registration).await?;
    let (agent_id, interval) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ctl.recv()).await {
        Err(_) => return Err(LinkError::Timeout("registration")),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(MasterToAgent::Registered {
            agent_id,
            heartbeat_interval_ms,
        })) => (
            agent_id,
            Duration::from_millis(heartbeat_interval_ms.max(50)),
        ),
        Ok(Ok(_)) => return Err(LinkError::Unexpected("a message")),
    };
    // The master's interval wins over ours: it times us out by it.
    let interval = if interval.is_zero() {
        heartbeat
    } else {
        interval
    };
    info!(master = %addr, agent = %agent_id, "registered with master");
    reached.registered = true;

    let (tx, mut outbound) = mpsc::channel::<AgentToMaster>(4096);
    // Image pieces go to the image service, which answers on this link itself: the core
    // never sees an image's bytes.
    let image_replies = tx.clone();
    // The fetcher asks for artifact pieces on this connection; their answers come back below.
    artifacts.connected(Some(tx.clone()));
    let artifact_answers = artifacts.clone();
    inputs
        .send(Input::MasterConnected { agent_id, tx })
        .await
        .map_err(|_| LinkError::Shutdown)?;

    // Reads run in their own task: a frame read is not cancel-safe inside select!.
    let (mut reader, mut writer) = ctl.split();
    let (ack_tx, mut acks) = mpsc::channel::<()>(16);
    let reader_inputs = inputs.clone();
    let images = images.clone();
    let mut reader_task = tokio::spawn(async move {
        loop {
            match reader.recv::<MasterToAgent>().await {
                Ok(MasterToAgent::HeartbeatAck) => {
                    let _ = ack_tx.try_send(());
                }
                Ok(MasterToAgent::Image { request, piece }) => {
                    // A heartbeat acknowledgement can wait behind a few image chunks on the
                    // stream: each chunk is as much a sign of a live master.
                    let _ = ack_tx.try_send(());
                    let req = image_service::Request {
                        request,
                        piece,
                        reply: image_replies.clone(),
                    };
                    if images.send(req).await.is_err() {
                        return CodecError::Closed;
                    }
                }
                Ok(MasterToAgent::ArtifactData { request, result }) => {
                    let _ = ack_tx.try_send(());
                    if !artifact_answers.answer(request, result) {
                        debug!(request, "artifact piece no fetch waits for; dropped");
                    }
                }
                Ok(msg) => {
                    if reader_inputs.send(Input::FromMaster(msg)).await.is_err() {
                        return CodecError::Closed;
                    }
                }
                Err(e) => return e,
            }
        }
    });

    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ack = Instant::now();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The oldest heartbeat still unacknowledged, when the other masters are next asked who
    // leads, and that question while it is out (see `leader_probe`).
    let mut unacked_since: Option<Instant> = None;
    let mut ask_at: Option<Instant> = None;
    let mut asking: Option<tokio::task::JoinHandle<Option<String>>> = None;
    let grace = leader_probe::ack_grace(interval);
    let result = loop {
        let ask_due = async {
            match ask_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let answered = async {
            match asking.as_mut() {
                Some(task) => task.await.ok().flatten(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break Err(LinkError::Shutdown),
            read_end = &mut reader_task => {
                break Err(match read_end {
                    Ok(e) => LinkError::Codec(e),
                    Err(_) => LinkError::Codec(CodecError::Closed),
                });
            }
            Some(()) = acks.recv() => {
                last_ack = Instant::now();
                unacked_since = None;
                ask_at = None;
                // Our master answers: a question asked during the silence is moot.
                if let Some(task) = asking.take() {
                    task.abort();
                }
            }
            _ = ask_due => {
                ask_at = None;
                // One round at a time (a dead master's answer takes a second).
                if let (Some(p), None) = (&probe, &asking) {
                    let (endpoint, others) = (p.endpoint.clone(), p.others.clone());
                    asking = Some(tokio::spawn(async move {
                        leader_probe::who_leads(&endpoint, &others, Some(addr)).await
                    }));
                }
            }
            leader = answered => {
                asking = None;
                // An acknowledgement that arrived with the answer wins: our master answers,
                // whatever a standby thinks.
                if acks.try_recv().is_ok() {
                    last_ack = Instant::now();
                    unacked_since = None;
                    ask_at = None;
                    continue;
                }
                let Some(since) = unacked_since else { continue };
                match leader {
                    Some(leader) => {
                        debug!(master = %addr, unacked = ?since.elapsed(), %leader, "heartbeats unanswered; another master names a new leader");
                        break Err(LinkError::LeaderMoved { from: addr, leader });
                    }
                    None => ask_at = Some(Instant::now() + leader_probe::PROBE_EVERY),
                }
            }
            // A committed burst's messages leave in one write (see `codec`).
            n = outbound.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break Err(LinkError::Shutdown);
                }
                let sent = writer.send_batch(&batch).await;
                batch.clear();
                sent?;
            }
            _ = tick.tick() => {
                if last_ack.elapsed() > interval * MISSED_HEARTBEATS {
                    break Err(LinkError::Timeout("heartbeat acknowledgements"));
                }
                writer.send(&AgentToMaster::Heartbeat).await?;
                if probe.is_some() && unacked_since.is_none() {
                    let now = Instant::now();
                    unacked_since = Some(now);
                    ask_at = Some(now + grace);
                }
            }
        }
    };
    reader_task.abort();
    if let Some(task) = asking {
        task.abort();
    }
    result
}
