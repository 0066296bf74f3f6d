//! The hello: what a peer says first on its control stream, and whether it is admitted (the
//! protocol version, a peer kind its certificate's role allows, and for a node certificate
//! asking to be a scheduler, the local-scheduler check of `local_scheduler.rs`).

use crate::handshakes::{Admission, Admissions, Ticket};
use crate::local_scheduler;
use crate::state::Master;
use bramble_proto::identity::Role;
use bramble_proto::messages::{Hello, HelloReply, LeaderHint, PeerKind};
use bramble_proto::transport::{ControlStream, PeerIdentity};
use bramble_proto::{PROTOCOL_VERSION, SOFTWARE_VERSION};
use std::time::{Duration, Instant};

/// How long a peer may take from handshake to hello; one that connects and says nothing is
/// dropped then, with one log line.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame accepted before a peer is admitted: a hello is a few dozen bytes.
const HELLO_MAX_BYTES: usize = 4 * 1024;
/// How long a refused peer gets to receive the reason before its connection is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Why a peer's hello was not welcomed.
pub(crate) enum NotAdmitted {
    Refused(String),
    /// Answered `Busy` with an appointment.
    Busy,
}

impl From<String> for NotAdmitted {
    fn from(reason: String) -> Self {
        NotAdmitted::Refused(reason)
    }
}

/// Accepts the control stream and answers the hello: the peer is admitted only once this
/// returns. Agents are admitted a bounded number at a time (`admissions`, see
/// `handshakes.rs`): the ticket is held until the agent's registration is with the state task.
pub(crate) async fn admit(
    conn: &quinn::Connection,
    identity: &PeerIdentity,
    cluster_id: &str,
    admissions: &Admissions,
) -> Result<(PeerKind, ControlStream, Option<Ticket>), NotAdmitted> {
    let (mut ctl, hello) = read_hello(conn).await?;
    let refusal = if hello.protocol_version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} is not supported: this master (Bramble {SOFTWARE_VERSION}) speaks version {PROTOCOL_VERSION}; upgrade the peer (it runs {})",
            hello.protocol_version, hello.software_version
        ))
    } else if let Err(why) = Master::admits(hello.kind, identity.role, identity.address.ip()) {
        Some(why)
    } else if hello.kind == PeerKind::Scheduler && identity.role == Role::Node {
        // Loopback alone does not make it the master node's own service scheduler.
        let peer = identity.address;
        match tokio::task::spawn_blocking(move || local_scheduler::check(peer)).await {
            Ok(verdict) => verdict.err(),
            Err(e) => Some(format!("checking the local scheduler's socket: {e}")),
        }
    } else {
        None
    };
    if let Some(reason) = refusal {
        // Best effort: tell the peer why before closing.
        let _ = ctl
            .send(&HelloReply::Refused {
                reason: reason.clone(),
            })
            .await;
        linger(&mut ctl).await;
        return Err(NotAdmitted::Refused(reason));
    }
    let ticket = match hello.kind {
        PeerKind::Agent => match admissions.admit(Instant::now()) {
            Admission::Admitted(ticket) => Some(ticket),
            Admission::Busy(after) => {
                let retry_after_ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
                let _ = ctl.send(&HelloReply::Busy { retry_after_ms }).await;
                linger(&mut ctl).await;
                return Err(NotAdmitted::Busy);
            }
        },
        // Schedulers and operators are few, and an operator looking at a storm gets in.
        PeerKind::Scheduler | PeerKind::Operator => None,
    };
    ctl.send(&HelloReply::Welcome {
        protocol_version: PROTOCOL_VERSION,
        software_version: SOFTWARE_VERSION.to_string(),
        cluster_id: cluster_id.to_string(),
    })
    .await
    .map_err(|e| format!("sending welcome: {e}"))?;
    Ok((hello.kind, ctl, ticket))
}

/// A standby master's answer to any peer: reads its hello and replies `NotLeader` naming the
/// leader (`None`: an election is under way), then closes. Returns what the peer asked to be.
pub(crate) async fn refer(
    conn: &quinn::Connection,
    leader: Option<LeaderHint>,
) -> Result<PeerKind, String> {
    let (mut ctl, hello) = read_hello(conn).await?;
    ctl.send(&HelloReply::NotLeader { leader })
        .await
        .map_err(|e| format!("sending not-leader: {e}"))?;
    linger(&mut ctl).await;
    conn.close(quinn::VarInt::from_u32(0), b"not the leader");
    Ok(hello.kind)
}

/// Accepts the control stream and reads the hello on it. One deadline for both: a peer that
/// connects and says nothing (or part of a hello) is dropped when it passes.
async fn read_hello(conn: &quinn::Connection) -> Result<(ControlStream, Hello), String> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut ctl = tokio::time::timeout_at(deadline, ControlStream::accept(conn))
        .await
        .map_err(|_| format!("no control stream within {HELLO_TIMEOUT:?} of the handshake"))?
        .map_err(|e| format!("connection lost before hello: {e}"))?;
    ctl.reader.set_limit(HELLO_MAX_BYTES);
    let hello: Hello = tokio::time::timeout_at(deadline, ctl.recv())
        .await
        .map_err(|_| format!("no hello within {HELLO_TIMEOUT:?} of the handshake"))?
        .map_err(|e| format!("bad hello: {e}"))?;
    Ok((ctl, hello))
}

/// Finishes our side after a last answer (a refusal, busy, not-leader) and waits, briefly,
/// until the peer has it: closing the connection at once would discard it in flight.
async fn linger(ctl: &mut ControlStream) {
    let send = ctl.writer.get_mut();
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(REFUSAL_LINGER, send.stopped()).await;
    }
}
