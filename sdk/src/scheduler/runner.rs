//! The run loop's outer half: connect, say hello, subscribe, and after a lost connection do it
//! again with backoff until the framework's failover timeout has passed. A refusal, a fatal
//! error from the master or a peer that is not the cluster's master ends the run: retrying
//! cannot help.

use super::driver::SchedulerDriver;
use super::session::{SessionEnd, CLOSE_OK};
use super::{Scheduler, SchedulerConfig};
use crate::error::SdkError;
use bramble_proto::backoff::Backoff;
use bramble_proto::codec::{FrameReader, FrameWriter};
use bramble_proto::handshake::{self, HandshakeError};
use bramble_proto::masters::{MasterList, Wait, MAX_REDIRECTS};
use bramble_proto::messages::{FrameworkInfo, LeaderHint, MasterEvent, PeerKind, SchedulerCall};
use bramble_proto::transport::{self, ControlStream, TransportError};
use bramble_proto::FrameworkId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

/// Upper bound for one connect + hello + subscribe attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one attempt when there are several masters: a dead one should not keep
/// the driver from the next, which may be the leader.
const SEVERAL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lower bound for a reconnect attempt even when little failover time is left.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Used when the master announces a zero heartbeat interval.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(1);
/// QUIC close code the master uses when it refuses a peer.
const CLOSE_REFUSED: u32 = 1;

/// A subscribed connection.
pub(super) struct Session {
    pub(super) conn: quinn::Connection,
    pub(super) reader: FrameReader<quinn::RecvStream>,
    pub(super) writer: FrameWriter<quinn::SendStream>,
    pub(super) framework_id: FrameworkId,
    pub(super) heartbeat: Duration,
    /// The fencing token the master gave this subscription.
    pub(super) fencing_token: u64,
}

/// A campaigning instance's connection while another instance is the active scheduler.
pub(super) struct Standby {
    conn: quinn::Connection,
    ctl: ControlStream,
    framework_id: FrameworkId,
    leader: String,
}

/// What one attempt to subscribe (or campaign) got.
enum Attempt {
    Subscribed(Session),
    Standby(Standby),
}

/// How standing by ended.
enum StandbyEnd {
    Promoted(Session),
    Stopped,
    Fatal(SdkError),
    Lost(String),
}

/// Why one attempt to subscribe failed.
enum AttemptError {
    /// Retrying cannot help.
    Fatal(SdkError),
    Retry(String),
    /// The master is a standby of a replicated group, naming the leader if one is elected.
    NotLeader(Option<LeaderHint>),
}

pub(super) struct Runner {
    pub(super) driver: SchedulerDriver,
    pub(super) config: SchedulerConfig,
    /// The master dialled now: [`Runner::masters`]' current one.
    pub(super) addr: SocketAddr,
    /// The configured masters (one, or a replicated group's) and where the driver stands.
    pub(super) masters: MasterList<SocketAddr>,
    /// What the next Subscribe sends: carries the framework id once assigned.
    pub(super) info: FrameworkInfo,
    pub(super) calls: mpsc::UnboundedReceiver<SchedulerCall>,
    pub(super) stop: watch::Receiver<Option<bool>>,
}

impl Runner {
    pub(super) async fn run<S: Scheduler>(&mut self, scheduler: &mut S) -> Result<(), SdkError> {
        let endpoint = transport::client_endpoint(
            &self.config.credentials,
            transport::unspecified_for(self.addr),
        )
        .map_err(SdkError::Endpoint)?;
        let result = self.run_sessions(&endpoint, scheduler).await;
        endpoint.close(quinn::VarInt::from_u32(CLOSE_OK), b"scheduler stopped");
        // Lets the CONNECTION_CLOSE reach the master; bounded in case it never answers.
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        result
    }

    async fn run_sessions<S: Scheduler>(
        &mut self,
        endpoint: &quinn::Endpoint,
        scheduler: &mut S,
    ) -> Result<(), SdkError> {
        let mut down_since = Instant::now();
        let mut first = true;
        loop {
            let Some(session) = self
                .establish(endpoint, down_since, first, scheduler)
                .await?
            else {
                info!("scheduler stopped while disconnected (failover): the master keeps the framework until its failover timeout");
                return Ok(());
            };
            first = false;
            let reregistered = self.info.framework_id.is_some();
            let id = session.framework_id.clone();
            self.info.framework_id = Some(id.clone());
            // Token and connected at once: no write goes out on this session with the last
            // one's token.
            self.driver
                .set_subscribed(id.clone(), session.fencing_token);
            let stop_requested = *self.stop.borrow();
            if let Some(failover) = stop_requested {
                // stop() was called while reconnecting: finish what it asked for.
                return self.finish(session, failover).await;
            }
            info!(framework = %id, master = %self.addr, name = %self.info.name, reregistered,
                "framework {}", if reregistered { "re-registered" } else { "registered" });
            scheduler.registered(&self.driver, &id, reregistered).await;
            match self.serve(session, scheduler).await? {
                SessionEnd::Stopped => return Ok(()),
                SessionEnd::Fatal(message) => return Err(SdkError::Fatal(message)),
                SessionEnd::Lost(reason) => {
                    // The other masters first (they name the new leader), the lost one last.
                    self.masters.lost();
                    self.addr = *self.masters.current();
                    self.driver.set_connected(None, false);
                    warn!(framework = %id, master = %self.addr, "disconnected from the master: {reason}; reconnecting");
                    scheduler.disconnected(&self.driver).await;
                    down_since = Instant::now();
                }
            }
        }
    }

    /// Connects and subscribes, retrying with backoff until the failover timeout has passed
    /// since `down_since`. `None` when `stop(true)` was called meanwhile.
    async fn establish<S: Scheduler>(
        &mut self,
        endpoint: &quinn::Endpoint,
        mut down_since: Instant,
        first: bool,
        scheduler: &mut S,
    ) -> Result<Option<Session>, SdkError> {
        let failover_timeout_secs = self.info.failover_timeout_secs;
        let failover_timeout =
            Duration::try_from_secs_f64(failover_timeout_secs.max(0.0)).unwrap_or(Duration::MAX);
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            let stop_requested = *self.stop.borrow();
            if stop_requested == Some(true) {
                return Ok(None);
            }
            attempts += 1;
            self.addr = *self.masters.current();
            let remaining = failover_timeout.saturating_sub(down_since.elapsed());
            let cap = if self.masters.several() {
                SEVERAL_ATTEMPT_TIMEOUT
            } else {
                ATTEMPT_TIMEOUT
            };
            let attempt_timeout = if first {
                cap
            } else {
                remaining.clamp(MIN_ATTEMPT_TIMEOUT, cap)
            };
            // How long to wait before the next attempt: `None` is the backoff.
            let mut pause = None;
            let last_error = match tokio::time::timeout(attempt_timeout, self.attempt(endpoint))
                .await
            {
                Ok(Ok(Attempt::Subscribed(session))) => {
                    self.masters.welcomed();
                    return Ok(Some(session));
                }
                Ok(Ok(Attempt::Standby(standby))) => {
                    self.masters.welcomed();
                    scheduler
                        .standing_by(&self.driver, &standby.framework_id, &standby.leader)
                        .await;
                    match self.stand_by(standby).await {
                        StandbyEnd::Promoted(session) => return Ok(Some(session)),
                        StandbyEnd::Stopped => return Ok(None),
                        StandbyEnd::Fatal(e) => {
                            error!(master = %self.addr, "standing by ended: {e}");
                            return Err(e);
                        }
                        StandbyEnd::Lost(why) => {
                            // Waiting as a standby is not being down: the failover
                            // clock starts when the standby connection is lost.
                            down_since = Instant::now();
                            backoff = Backoff::new();
                            self.masters.lost();
                            why
                        }
                    }
                }
                Ok(Err(AttemptError::Fatal(e))) => {
                    error!(master = %self.addr, "cannot subscribe: {e}");
                    return Err(e);
                }
                Ok(Err(AttemptError::NotLeader(Some(leader)))) => {
                    let from = self.addr;
                    match self.follow(&leader).await {
                            Ok(Some(Wait::Now)) => {
                                info!(
                                    "master {from} is a standby; following leader {} at {}",
                                    leader.id, leader.address
                                );
                                continue;
                            }
                            Ok(_) => format!(
                                "master {from} is a standby naming leader {} at {}, but {MAX_REDIRECTS} redirects in a row reached no leader",
                                leader.id, leader.address
                            ),
                            Err(why) => {
                                // The standby answered; the leader it named is unusable.
                                pause = wait_of(self.masters.no_leader_yet());
                                format!("master {from} is a standby naming leader {} at {}: {why}", leader.id, leader.address)
                            }
                        }
                }
                Ok(Err(AttemptError::NotLeader(None))) => {
                    pause = wait_of(self.masters.no_leader_yet());
                    format!(
                        "master {} is a standby and no leader is elected yet",
                        self.addr
                    )
                }
                Ok(Err(AttemptError::Retry(why))) => {
                    pause = wait_of(self.masters.failed());
                    why
                }
                Err(_) => {
                    pause = wait_of(self.masters.failed());
                    format!("no answer within {attempt_timeout:?}")
                }
            };
            if stop_requested == Some(false) {
                return Err(SdkError::TeardownNotDelivered {
                    addr: self.addr,
                    reason: last_error,
                });
            }
            let waited = down_since.elapsed();
            if waited >= failover_timeout {
                let e = SdkError::FailoverTimeout {
                    addr: self.addr,
                    waited,
                    failover_timeout_secs,
                    attempts,
                    last_error,
                };
                error!("giving up: {e}");
                return Err(e);
            }
            let delay = pause
                .unwrap_or_else(|| backoff.next_delay())
                .min(failover_timeout.saturating_sub(waited));
            let tried = self.addr;
            let next = *self.masters.current();
            if next == tried {
                warn!(master = %tried, attempt = attempts, "subscribing failed: {last_error}; retrying in {delay:?}");
            } else {
                warn!(master = %tried, attempt = attempts, "subscribing failed: {last_error}; trying {next} in {delay:?}");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // stop() interrupts the wait; the loop head decides what it means.
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    /// Resolves the address a standby named and makes it the next master to dial (`None`:
    /// too many redirects in a row, the next configured master instead).
    async fn follow(&mut self, leader: &LeaderHint) -> Result<Option<Wait>, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(leader.address.as_str())
            .await
            .map_err(|e| format!("resolving {}: {e}", leader.address))?
            .collect();
        // The endpoint is bound for one address family: prefer an address of it.
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4() == self.addr.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{} resolves to no address", leader.address))?;
        Ok(self.masters.redirected(addr))
    }

    /// One connect + hello + subscribe.
    async fn attempt(&self, endpoint: &quinn::Endpoint) -> Result<Attempt, AttemptError> {
        let addr = self.addr;
        let conn = transport::connect(endpoint, addr)
            .await
            .map_err(|e| match e {
                TransportError::NotANode { .. }
                | TransportError::PeerCertificate(_)
                | TransportError::NoPeerCertificate => {
                    AttemptError::Fatal(SdkError::Connect { addr, source: e })
                }
                other => AttemptError::Retry(other.to_string()),
            })?;
        // A refused peer can see connect() succeed and fail only on the stream, with the
        // master's reason in the close frame: check for that on every failure below.
        let mut ctl = match handshake::say_hello(&conn, PeerKind::Scheduler).await {
            Ok((ctl, welcome)) => {
                debug!(master = %addr, software_version = %welcome.software_version,
                    cluster_id = %welcome.cluster_id, "welcomed by the master");
                ctl
            }
            Err(HandshakeError::Refused(reason)) => {
                return Err(AttemptError::Fatal(SdkError::Refused(reason)))
            }
            Err(HandshakeError::NotLeader(leader)) => {
                conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"following the leader");
                return Err(AttemptError::NotLeader(leader));
            }
            Err(e) => return Err(refusal_or_retry(&conn, e.to_string())),
        };
        let failed = |what: String| refusal_or_retry(&conn, what);
        let call = if self.config.leader_election {
            SchedulerCall::Campaign(self.info.clone())
        } else {
            SchedulerCall::Subscribe(self.info.clone())
        };
        ctl.send(&call)
            .await
            .map_err(|e| failed(format!("sending subscribe: {e}")))?;
        loop {
            match ctl.recv::<MasterEvent>().await {
                Ok(MasterEvent::Subscribed {
                    framework_id,
                    heartbeat_interval_ms,
                    fencing_token,
                }) => {
                    return Ok(Attempt::Subscribed(session(
                        conn,
                        ctl,
                        framework_id,
                        heartbeat_interval_ms,
                        fencing_token,
                    )))
                }
                Ok(MasterEvent::Standby {
                    framework_id,
                    leader,
                }) => {
                    return Ok(Attempt::Standby(Standby {
                        conn,
                        ctl,
                        framework_id,
                        leader,
                    }))
                }
                Ok(MasterEvent::Error {
                    message,
                    fatal: true,
                }) => return Err(AttemptError::Fatal(SdkError::Fatal(message))),
                Ok(other) => debug!(?other, "ignoring an event before Subscribed"),
                Err(e) => return Err(failed(format!("waiting for Subscribed: {e}"))),
            }
        }
    }
}

impl Runner {
    /// Waits, connected, until the master makes this instance the active scheduler; no
    /// deadline (standing by is the point), but `stop()` ends it at once.
    async fn stand_by(&mut self, standby: Standby) -> StandbyEnd {
        let Standby {
            conn,
            mut ctl,
            framework_id,
            leader,
        } = standby;
        info!(framework = %framework_id, leader = %leader, master = %self.addr,
            "standing by: another instance is the framework's active scheduler");
        loop {
            if self.stop.borrow().is_some() {
                conn.close(quinn::VarInt::from_u32(CLOSE_OK), b"standby stopped");
                return StandbyEnd::Stopped;
            }
            tokio::select! {
                Ok(()) = self.stop.changed() => {}
                event = ctl.recv::<MasterEvent>() => match event {
                    Ok(MasterEvent::Subscribed { framework_id, heartbeat_interval_ms, fencing_token }) => {
                        info!(framework = %framework_id, fencing_token, "taking over as the framework's active scheduler");
                        return StandbyEnd::Promoted(session(conn, ctl, framework_id, heartbeat_interval_ms, fencing_token));
                    }
                    Ok(MasterEvent::Error { message, fatal: true }) => {
                        return StandbyEnd::Fatal(SdkError::Fatal(message));
                    }
                    Ok(other) => debug!(?other, "ignoring an event while standing by"),
                    Err(e) => return StandbyEnd::Lost(format!("standing by: {e}")),
                },
            }
        }
    }
}

/// A subscribed connection from its control stream and the master's `Subscribed`.
fn session(
    conn: quinn::Connection,
    ctl: ControlStream,
    framework_id: FrameworkId,
    heartbeat_interval_ms: u64,
    fencing_token: u64,
) -> Session {
    let heartbeat = match heartbeat_interval_ms {
        0 => FALLBACK_HEARTBEAT,
        ms => Duration::from_millis(ms),
    };
    let (reader, writer) = ctl.split();
    Session {
        conn,
        reader,
        writer,
        framework_id,
        heartbeat,
        fencing_token,
    }
}

/// A handshake-phase failure: a close with the master's refusal code carries the reason the
/// master gave; anything else is worth retrying.
fn refusal_or_retry(conn: &quinn::Connection, what: String) -> AttemptError {
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(CLOSE_REFUSED) =>
        {
            AttemptError::Fatal(SdkError::Refused(
                String::from_utf8_lossy(&close.reason).into_owned(),
            ))
        }
        _ => AttemptError::Retry(what),
    }
}

/// A pause the master list asks for; `None`: the caller's backoff.
fn wait_of(wait: Wait) -> Option<Duration> {
    match wait {
        Wait::Now => Some(Duration::ZERO),
        Wait::Pause(pause) => Some(pause),
        Wait::Backoff => None,
    }
}
