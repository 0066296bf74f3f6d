//! Who is connected and what the master says to them. Every message and operator answer goes
//! into the outbox first; [`Master::flush_outbox`] releases it only after the burst that
//! produced it is committed (see the module above). The exception, agents' status updates
//! relayed to frameworks, goes out before the commit ([`Master::flush_early`]) unless
//! something for the same connection is already held, so each peer's order is kept. A peer whose queue is full is closed, never
//! waited for. Also here: which certificate roles may connect as which kind of peer.

use super::{ConnId, Master, PeerTx};
use bramble_proto::messages::{MasterEvent, MasterToAgent, OperatorReply, PeerKind};
use bramble_proto::transport::PeerIdentity;
use bramble_proto::{AgentId, FrameworkId, TaskStatus};
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// An admitted connection: who it is, where its messages go, and what it registered as.
pub(super) struct Conn {
    pub(super) identity: PeerIdentity,
    pub(super) tx: PeerTx,
    pub(super) handle: Option<PeerHandle>,
    pub(super) bound: Option<Bound>,
}

/// How the state closes a peer it gives up on (a full queue, a protocol error): a QUIC
/// connection is closed with a code, an HTTP event stream (the Mesos scheduler API) is told to
/// end through a watch its writer selects on. Either way the edge then reports `Disconnected`.
#[derive(Debug, Clone)]
pub enum PeerHandle {
    Quic(quinn::Connection),
    Stream(tokio::sync::watch::Sender<Option<String>>),
}

impl PeerHandle {
    pub(super) fn close(&self, code: u32, reason: &str) {
        match self {
            PeerHandle::Quic(conn) => conn.close(quinn::VarInt::from_u32(code), reason.as_bytes()),
            PeerHandle::Stream(end) => {
                end.send_replace(Some(reason.to_string()));
            }
        }
    }
}

/// What a connection registered (an agent) or subscribed (a framework) as.
#[derive(Debug, Clone)]
pub(super) enum Bound {
    Agent(AgentId),
    Framework(FrameworkId),
    /// A scheduler instance standing by for this framework (`election.rs`).
    Standby(FrameworkId),
}

/// A message held until the burst that produced it is committed.
pub(super) enum Outgoing {
    Agent(ConnId, MasterToAgent),
    Scheduler(ConnId, MasterEvent),
    Reply(oneshot::Sender<OperatorReply>, OperatorReply),
}

impl Master {
    /// Releases the burst's relayed status updates, before its commit (see `state/mod.rs`).
    pub fn flush_early(&mut self) {
        let early = std::mem::take(&mut self.early);
        self.release(early);
    }

    /// Releases what the committed burst said: into each peer's queue (a full queue drops
    /// that peer), and operators' answers.
    pub fn flush_outbox(&mut self) {
        // Anything early not yet released goes first: it was queued before anything held for
        // its connection.
        self.flush_early();
        self.held.clear();
        let outbox = std::mem::take(&mut self.outbox);
        self.release(outbox);
    }

    fn release(&mut self, messages: Vec<Outgoing>) {
        // A peer dropped for a full queue is dropped once, not once per message that follows.
        let mut dropped: Vec<ConnId> = Vec::new();
        for out in messages {
            match &out {
                Outgoing::Agent(conn, _) | Outgoing::Scheduler(conn, _)
                    if dropped.contains(conn) =>
                {
                    continue
                }
                _ => {}
            }
            let full = match out {
                Outgoing::Agent(conn, msg) => match self.conns.get(&conn).map(|c| &c.tx) {
                    Some(PeerTx::Agent(tx)) => tx.try_send(msg).is_err().then_some(conn),
                    _ => None,
                },
                Outgoing::Scheduler(conn, event) => match self.conns.get(&conn).map(|c| &c.tx) {
                    Some(PeerTx::Scheduler(tx)) => tx.try_send(event).is_err().then_some(conn),
                    _ => None,
                },
                Outgoing::Reply(reply, answer) => {
                    // The operator may have hung up; nothing to do then.
                    let _ = reply.send(answer);
                    None
                }
            };
            if let Some(conn) = full {
                self.drop_slow_peer(conn);
                dropped.push(conn);
            }
        }
    }

    pub(super) fn reply(&mut self, reply: oneshot::Sender<OperatorReply>, answer: OperatorReply) {
        self.outbox.push(Outgoing::Reply(reply, answer));
    }

    pub(super) fn send_agent(&mut self, agent_id: &AgentId, msg: MasterToAgent) {
        let Some(conn) = self.agents.get(agent_id).and_then(|a| a.conn) else {
            debug!(agent = %agent_id, message = variant(&msg), "agent not connected; dropping a message");
            return;
        };
        self.send_conn_agent(conn, msg);
    }

    pub(super) fn send_conn_agent(&mut self, conn: ConnId, msg: MasterToAgent) {
        self.held.insert(conn);
        self.outbox.push(Outgoing::Agent(conn, msg));
    }

    /// Relays an agent's status update to its framework ahead of the burst's commit, or
    /// behind what is already held for the framework's connection.
    pub(super) fn relay_update(&mut self, framework_id: &FrameworkId, status: TaskStatus) {
        let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) else {
            return;
        };
        let event = MasterEvent::Update(status);
        if self.held.contains(&conn) {
            self.outbox.push(Outgoing::Scheduler(conn, event));
        } else {
            self.early.push(Outgoing::Scheduler(conn, event));
        }
    }

    pub(super) fn send_framework(&mut self, framework_id: &FrameworkId, event: MasterEvent) {
        let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) else {
            return;
        };
        self.send_conn_scheduler(conn, event);
    }

    pub(super) fn send_conn_scheduler(&mut self, conn: ConnId, event: MasterEvent) {
        self.held.insert(conn);
        self.outbox.push(Outgoing::Scheduler(conn, event));
    }

    fn drop_slow_peer(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            warn!(peer = %c.identity.address, subject = %c.identity.subject,
                "closing peer: its outbound queue is full (too slow or stuck)");
            if let Some(h) = &c.handle {
                h.close(2, "outbound queue full");
            }
        }
    }

    pub(super) fn close_conn(&mut self, conn: ConnId, reason: &str) {
        if let Some(c) = self.conns.get(&conn) {
            warn!(peer = %c.identity.address, subject = %c.identity.subject, "closing peer: {reason}");
            if let Some(h) = &c.handle {
                h.close(1, reason);
            }
        }
    }

    pub(super) fn disconnected(
        &mut self,
        conn: ConnId,
        reason: &str,
        graceful: bool,
        now: Instant,
    ) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.bound {
            Some(Bound::Agent(id)) => self.agent_disconnected(&id, conn, reason, graceful),
            Some(Bound::Framework(id)) => self.framework_disconnected(&id, conn, reason, now),
            Some(Bound::Standby(id)) => self.standby_disconnected(&id, conn),
            None => debug!(peer = %c.identity.address, "unregistered peer disconnected: {reason}"),
        }
    }

    /// Whether a hello of `kind` is allowed for a certificate of `role` from `peer`.
    ///
    /// A node certificate may also connect as a scheduler from this host's loopback: that is
    /// the service scheduler beside the master (`bramble-services.service`), which has no
    /// other certificate on a card (cards never carry the framework key). Every card holds
    /// the node key, so the loopback condition is what makes it the master node's own
    /// scheduler, and [`Master::node_scheduler_may_call`] keeps it to that one framework.
    pub fn admits(
        kind: PeerKind,
        role: bramble_proto::identity::Role,
        peer: std::net::IpAddr,
    ) -> Result<(), String> {
        use bramble_proto::identity::Role;
        match (kind, role) {
            (PeerKind::Agent, Role::Node) => Ok(()),
            (PeerKind::Scheduler, Role::Framework | Role::Operator) => Ok(()),
            (PeerKind::Scheduler, Role::Node) if peer.to_canonical().is_loopback() => Ok(()),
            (PeerKind::Operator, Role::Operator) => Ok(()),
            (kind, role) => Err(format!(
                "a {role} certificate may not connect as {}",
                match kind {
                    PeerKind::Agent => "an agent (needs a node certificate)",
                    PeerKind::Scheduler =>
                        "a scheduler (needs a framework or operator certificate; a node certificate only from the master's own host)",
                    PeerKind::Operator => "an operator (needs an operator certificate)",
                }
            )),
        }
    }
}

/// The name of `msg`'s variant (`RunTasks`, …), for logs; read off its `Debug` form so that
/// no list of names has to follow the enum.
fn variant(msg: &impl std::fmt::Debug) -> String {
    let text = format!("{msg:?}");
    let end = text.find([' ', '{', '(']).unwrap_or(text.len());
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::*;
    use bramble_proto::identity::Role;
    use bramble_proto::messages::{MasterEvent, MasterToAgent};
    use std::time::Instant;
    use tokio::sync::mpsc::error::TryRecvError;

    #[test]
    fn replies_wait_in_the_outbox_until_the_burst_is_taken_for_commit() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent(&mut m, 1, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        let mut fw = connect_framework(&mut m, 2, None, now);
        m.end_burst(now);
        assert!(matches!(agent.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(fw.try_recv(), Err(TryRecvError::Empty)));
        let batch = m.take_writes();
        assert_eq!(batch.agents.len(), 1);
        assert!(batch.agents[0].1.is_some());
        assert_eq!(batch.frameworks.len(), 1);
        m.flush_outbox();
        assert!(matches!(
            agent.try_recv(),
            Ok(MasterToAgent::Registered { .. })
        ));
        assert!(matches!(fw.try_recv(), Ok(MasterEvent::Subscribed { .. })));
        // Nothing changed since: the next batch is empty.
        assert!(m.take_writes().is_empty());
    }

    #[test]
    fn a_peer_whose_queue_holds_too_many_bytes_is_dropped_not_fed_more() {
        let now = Instant::now();
        let mut m = master(now);
        let mut agent = connect_agent_with_queue(&mut m, 1, 1 << 20, now);
        register(&mut m, 1, "a1", Vec::new(), now);
        let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
        settle(&mut m, now);
        drain(&mut agent);
        // The agent reads nothing while a framework sends it eight 300 KiB messages: a
        // count of 64 would take them all (2.4 MB held); 1 MiB of bytes takes three.
        for _ in 0..8 {
            m.handle(
                crate::state::Input::FromScheduler {
                    conn: 2,
                    call: bramble_proto::messages::SchedulerCall::Message {
                        agent_id: "a1".into(),
                        executor_id: "e".into(),
                        data: vec![0; 300 * 1024],
                    },
                },
                now,
            );
        }
        settle(&mut m, now);
        assert_eq!(drain(&mut agent).len(), 3);
    }

    #[test]
    fn a_certificate_may_connect_only_as_what_its_role_allows() {
        let allowed = [
            (PeerKind::Agent, Role::Node),
            (PeerKind::Scheduler, Role::Framework),
            (PeerKind::Scheduler, Role::Operator),
            (PeerKind::Operator, Role::Operator),
        ];
        let remote: std::net::IpAddr = [192, 168, 1, 20].into();
        for kind in [PeerKind::Agent, PeerKind::Scheduler, PeerKind::Operator] {
            for role in [Role::Node, Role::Framework, Role::Operator] {
                let verdict = Master::admits(kind, role, remote);
                assert_eq!(
                    verdict.is_ok(),
                    allowed.contains(&(kind, role)),
                    "{kind:?} as {role:?}: {verdict:?}"
                );
            }
        }
        // The service scheduler beside the master: a node certificate over loopback only.
        let loopback: std::net::IpAddr = std::net::Ipv6Addr::LOCALHOST.into();
        assert!(Master::admits(PeerKind::Scheduler, Role::Node, loopback).is_ok());
        assert!(Master::admits(PeerKind::Scheduler, Role::Node, [127, 0, 0, 1].into()).is_ok());
        // A dual-stack socket reports an IPv4 peer as IPv4-mapped.
        let mapped: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().into();
        assert!(Master::admits(PeerKind::Scheduler, Role::Node, mapped).is_ok());
        let refusal = Master::admits(PeerKind::Scheduler, Role::Node, remote).unwrap_err();
        assert!(
            refusal.contains("only from the master's own host"),
            "{refusal}"
        );
        assert!(Master::admits(PeerKind::Operator, Role::Node, loopback).is_err());
        let refusal = Master::admits(PeerKind::Operator, Role::Framework, remote).unwrap_err();
        assert!(
            refusal.contains("needs an operator certificate"),
            "{refusal}"
        );
    }
}
