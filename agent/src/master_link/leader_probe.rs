//! Noticing quickly that the leader of a replicated group is gone.
//!
//! A SIGKILLed or unplugged leader sends nothing: no QUIC close, no ICMP the agent's
//! unconnected socket would hear. The heartbeat timeout (`MISSED_HEARTBEATS` intervals, 4 s
//! at the default 1 s) is then the only sign, long after the standbys elected a new leader
//! (Raft's election timeout is 300–400 ms). So as soon as one heartbeat goes unanswered for
//! [`ack_grace`], the agent asks the *other* masters who leads now, and every
//! [`PROBE_EVERY`] after that while acknowledgements stay away:
//!
//! - a standby naming a leader elsewhere, or a master that welcomes us (it leads now): the
//!   link is given up and that leader dialled at once;
//! - a standby naming the master we are linked to: it still leads; we wait on;
//! - no leader known yet, no answer: the next master is asked, then the next round.
//!
//! Nothing is decided on a standby's word alone while our master still answers: a result that
//! arrives after acknowledgements came back is dropped. The heartbeat timeout stays the
//! backstop (a single master, or masters nobody can reach).

use bramble_proto::discovery;
use bramble_proto::handshake::{self, HandshakeError};
use bramble_proto::messages::PeerKind;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::debug;

/// How often the other masters are asked again while acknowledgements stay away.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// One dial and hello to another master: a live one on the LAN answers in milliseconds.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Everything about one master in a round: resolving its name, asking it, resolving the
/// leader it names.
const ONE_MASTER: Duration = Duration::from_secs(2);

/// How long a heartbeat may go unacknowledged before the other masters are asked: half an
/// interval (a live master answers in a round trip), at least 250 ms so a busy one is not
/// suspected for a scheduling hiccup.
pub fn ack_grace(interval: Duration) -> Duration {
    (interval / 2).max(Duration::from_millis(250))
}

/// Another master of the group, as the agent knows it.
#[derive(Debug, Clone)]
pub enum OtherMaster {
    /// A configured `host:port`, resolved when asked (DNS may change).
    Configured(String),
    /// An mDNS-discovered master's addresses.
    Seen(Vec<SocketAddr>),
}

/// What one master said when asked who leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It welcomed us: it leads now.
    Leads,
    /// A standby naming the leader at `HOST:PORT`.
    Names(String),
    /// A standby that knows no leader, or no answer at all.
    Unknown,
}

/// What the agent does about one answer, given `current` (the master it is linked to) and the
/// addresses the named leader resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dial this `HOST:PORT`: it leads now.
    Follow(String),
    /// The master we are linked to still leads, as far as this one knows.
    StillCurrent,
    /// Nothing learnt from this one.
    AskOn,
}

/// The rule, pure: `asked` is where the answering master was reached (`HOST:PORT`), and
/// `resolved` what a named leader's address resolves to.
pub fn verdict(
    answer: &Answer,
    asked: &str,
    current: Option<SocketAddr>,
    resolved: &[SocketAddr],
) -> Verdict {
    match answer {
        Answer::Leads => Verdict::Follow(asked.to_string()),
        Answer::Names(_) if current.is_some_and(|c| resolved.contains(&c)) => Verdict::StillCurrent,
        Answer::Names(_) if resolved.is_empty() => Verdict::AskOn,
        Answer::Names(leader) => Verdict::Follow(leader.clone()),
        Answer::Unknown => Verdict::AskOn,
    }
}

/// Asks the masters at once who leads; `Some(HOST:PORT)` of a leader that is not `current`,
/// `None` when none of them names one (or they name `current`). All are asked together, so a
/// dead master (its dial takes [`ASK_TIMEOUT`]) delays nobody: the first master that leads, or
/// names a leader elsewhere, decides. A standby naming `current` does not end the round while
/// another may know of a newer election. `current` is `None` when the agent has no master yet
/// (then any leader found is followed).
pub async fn who_leads(
    endpoint: &quinn::Endpoint,
    masters: &[OtherMaster],
    current: Option<SocketAddr>,
) -> Option<String> {
    let mut asks = tokio::task::JoinSet::new();
    for master in masters.iter().cloned() {
        let endpoint = endpoint.clone();
        let one = async move {
            let (configured, addrs) = match master {
                OtherMaster::Configured(hostport) => {
                    let addrs = resolve(&hostport).await;
                    (Some(hostport), addrs)
                }
                OtherMaster::Seen(addrs) => (None, addrs),
            };
            // Ourselves, under another name: its answer would be about us.
            if addrs.is_empty() || current.is_some_and(|c| addrs.contains(&c)) {
                return None;
            }
            let (answer, reached) = ask(&endpoint, &addrs).await;
            // A configured name is followed as configured (DNS may move it); a master seen
            // on mDNS at the address that answered (its others may be unreachable from here).
            let asked = configured.or_else(|| reached.map(|a| a.to_string()))?;
            let resolved = match &answer {
                Answer::Names(leader) => resolve(leader).await,
                _ => Vec::new(),
            };
            debug!(%asked, ?answer, "asked a master who leads");
            match verdict(&answer, &asked, current, &resolved) {
                Verdict::Follow(leader) => Some(leader),
                Verdict::StillCurrent | Verdict::AskOn => None,
            }
        };
        // Name lookups included: a `.local` name of a dead Pi can take seconds to fail.
        asks.spawn(async move { tokio::time::timeout(ONE_MASTER, one).await.ok().flatten() });
    }
    // Dropping the set aborts the questions still out.
    while let Some(answer) = asks.join_next().await {
        if let Ok(Some(leader)) = answer {
            return Some(leader);
        }
    }
    None
}

/// One dial and hello to the master at `addrs`, closed again at once; the answer, and the
/// address that answered.
async fn ask(endpoint: &quinn::Endpoint, addrs: &[SocketAddr]) -> (Answer, Option<SocketAddr>) {
    let attempt = async {
        let (conn, reached) = discovery::connect_first(endpoint, addrs, ASK_TIMEOUT)
            .await
            .ok()?;
        let answer = match handshake::say_hello(&conn, PeerKind::Agent).await {
            Ok(_) => Answer::Leads,
            Err(HandshakeError::NotLeader(Some(leader))) => Answer::Names(leader.address),
            Err(_) => Answer::Unknown,
        };
        conn.close(quinn::VarInt::from_u32(0), b"asked who leads");
        Some((answer, reached))
    };
    match tokio::time::timeout(ASK_TIMEOUT, attempt).await {
        Ok(Some((answer, reached))) => (answer, Some(reached)),
        _ => (Answer::Unknown, None),
    }
}

async fn resolve(hostport: &str) -> Vec<SocketAddr> {
    match tokio::net::lookup_host(hostport).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            debug!("resolving {hostport}: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn a_master_that_welcomes_us_is_followed() {
        let v = verdict(
            &Answer::Leads,
            "10.0.0.2:5050",
            Some(a("10.0.0.1:5050")),
            &[],
        );
        assert_eq!(v, Verdict::Follow("10.0.0.2:5050".into()));
    }

    #[test]
    fn a_standby_naming_another_leader_is_followed() {
        let v = verdict(
            &Answer::Names("pi3:5050".into()),
            "10.0.0.2:5050",
            Some(a("10.0.0.1:5050")),
            &[a("10.0.0.3:5050")],
        );
        assert_eq!(v, Verdict::Follow("pi3:5050".into()));
    }

    #[test]
    fn a_standby_naming_our_master_ends_the_round() {
        let v = verdict(
            &Answer::Names("pi1:5050".into()),
            "10.0.0.2:5050",
            Some(a("10.0.0.1:5050")),
            &[a("10.0.0.1:5050")],
        );
        assert_eq!(v, Verdict::StillCurrent);
    }

    #[test]
    fn no_leader_known_or_an_unresolvable_name_asks_on() {
        let current = Some(a("10.0.0.1:5050"));
        assert_eq!(
            verdict(&Answer::Unknown, "x:1", current, &[]),
            Verdict::AskOn
        );
        assert_eq!(
            verdict(&Answer::Names("gone:5050".into()), "x:1", current, &[]),
            Verdict::AskOn
        );
    }

    #[test]
    fn with_no_master_yet_any_named_leader_is_followed() {
        let v = verdict(
            &Answer::Names("pi1:5050".into()),
            "10.0.0.2:5050",
            None,
            &[a("10.0.0.1:5050")],
        );
        assert_eq!(v, Verdict::Follow("pi1:5050".into()));
    }

    #[test]
    fn the_grace_is_half_an_interval_but_never_under_250_ms() {
        assert_eq!(
            ack_grace(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            ack_grace(Duration::from_millis(200)),
            Duration::from_millis(250)
        );
    }
}
