//! What a peer asks of this node: checked before openraft sees it (a member's name, a sane
//! term, a snapshot chunk that fits), then answered; and the network kept admitting the
//! group's members as the membership changes.

use openraft::raft::AppendEntriesResponse;
use std::time::Instant;

use super::election::stand_if_better;
use super::{ensure_linearizable, lock, write_local, Inner};
use crate::network::{Refusal, Reply, Request};
use crate::types::{NodeId, TypeConfig};

/// The largest snapshot a node accepts: snapshots are held in memory, and the master's
/// state is megabytes.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

/// How far above our term a peer's may be. Terms grow by one an election (a few a second
/// at most, even for a node cut off and standing alone: centuries to cover this); a term
/// beyond it is hostile, and near `u64::MAX` openraft's `term + 1` would overflow.
const MAX_TERM_AHEAD: u64 = 1 << 32;

/// Checks a Raft RPC's sender before openraft sees it: the leader or candidate it names must
/// be a member (of the effective or the committed membership, so a leader committing its own
/// removal is still heard; a node with no membership yet, waiting to be added, hears
/// anyone), and its term not absurdly ahead. A partial defence: any node certificate may
/// claim any node id (certificates carry none yet; see ARCHITECTURE.md).
async fn admit_sender(
    inner: &Inner,
    vote: &openraft::Vote<NodeId>,
    empty_ok: bool,
) -> Result<(), String> {
    let term = vote.leader_id().term;
    let ours = inner.raft.metrics().borrow().current_term;
    if term > ours.saturating_add(MAX_TERM_AHEAD) {
        return Err(format!(
            "term {term} is absurdly far ahead of ours ({ours})"
        ));
    }
    let Some(id) = vote.leader_id().voted_for() else {
        return Err("no node named".into());
    };
    let member = inner
        .raft
        .with_raft_state(move |st| {
            let ms = &st.membership_state;
            let (eff, com) = (ms.effective().membership(), ms.committed().membership());
            (empty_ok && eff.nodes().next().is_none())
                || eff.get_node(&id).is_some()
                || com.get_node(&id).is_some()
        })
        .await
        .unwrap_or(false);
    if member {
        Ok(())
    } else {
        Err(format!("node {id} is not a member"))
    }
}

/// Checks a snapshot chunk: its offset must be within what this node has received of that
/// snapshot (a resent chunk is fine; a gap is not: openraft would grow its buffer to the
/// offset), and the total under [`MAX_SNAPSHOT_BYTES`].
fn admit_chunk(
    inner: &Inner,
    rpc: &openraft::raft::InstallSnapshotRequest<TypeConfig>,
) -> Result<(), String> {
    let id = &rpc.meta.snapshot_id;
    let mut receiving = lock(&inner.receiving);
    let received = match &*receiving {
        _ if rpc.offset == 0 => 0,
        Some((rid, n)) if rid == id => *n,
        _ => return Err(format!("chunk at {} of a snapshot not begun", rpc.offset)),
    };
    if rpc.offset > received {
        return Err(format!(
            "chunk at {} while {received} bytes were received",
            rpc.offset
        ));
    }
    let end = rpc.offset.saturating_add(rpc.data.len() as u64);
    if end > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "a snapshot over the {MAX_SNAPSHOT_BYTES}-byte limit"
        ));
    }
    *receiving = Some((id.clone(), received.max(end)));
    Ok(())
}

/// Answers one request from a peer; `None`: refused (the stream is reset, a warning logged).
/// Keeps the network admitting every member of the group's membership as it changes (a
/// member added elsewhere, then elected, must reach this node), for as long as the replica
/// lives.
pub(super) async fn admit_members(inner: std::sync::Weak<Inner>) {
    let mut metrics = match inner.upgrade() {
        Some(i) => i.raft.metrics(),
        None => return,
    };
    loop {
        let members: Vec<std::net::IpAddr> = metrics
            .borrow_and_update()
            .membership_config
            .nodes()
            .filter_map(|(_, node)| node.addr.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip())
            .collect();
        {
            let Some(inner) = inner.upgrade() else { return };
            // The configured peers, the membership as it is now (a member removed is no
            // longer admitted, unless configured), and learners still being added.
            let mut adding = lock(&inner.adding);
            adding.retain(|ip| !members.contains(ip));
            let admitted: Vec<std::net::IpAddr> = inner
                .configured
                .iter()
                .chain(&members)
                .chain(adding.iter())
                .copied()
                .collect();
            drop(adding);
            inner.net.admit_only(admitted);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

pub(super) async fn handle(inner: &Inner, req: Request) -> Option<Reply> {
    let check = match &req {
        Request::AppendEntries(rpc) => admit_sender(inner, &rpc.vote, true).await,
        Request::InstallSnapshot(rpc) => match admit_sender(inner, &rpc.vote, true).await {
            Ok(()) => admit_chunk(inner, rpc),
            e => e,
        },
        Request::Vote(rpc) => admit_sender(inner, &rpc.vote, false).await,
        _ => Ok(()),
    };
    if let Err(reason) = check {
        tracing::warn!(id = inner.id, %reason, "replica: refusing a peer's request");
        return None;
    }
    Some(answer(inner, req).await)
}

async fn answer(inner: &Inner, req: Request) -> Reply {
    let raft = &inner.raft;
    let tuning = &inner.tuning;
    let stopped = || Refusal::Failed("the replica is shutting down".into());
    match req {
        Request::AppendEntries(rpc) => {
            let reply = raft.append_entries(rpc).await;
            if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                *lock(&inner.leader_contact) = Some(Instant::now());
            }
            Reply::AppendEntries(reply)
        }
        Request::Vote(rpc) => {
            let reply = raft.vote(rpc.clone()).await;
            if let Ok(resp) = &reply {
                stand_if_better(inner, &rpc, resp);
            }
            if matches!(&reply, Ok(r) if r.vote_granted) {
                // Granting a vote restarts the election timer, as in Raft.
                *lock(&inner.leader_contact) = Some(Instant::now());
            }
            Reply::Vote(reply)
        }
        Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        Request::Write(cmd) => Reply::Write(write_local(raft, tuning, cmd).await),
        Request::Read { table, key } => {
            Reply::Read(match ensure_linearizable(raft, tuning).await {
                Ok(()) => match inner.sm() {
                    Ok(sm) => sm
                        .get(&table, &key)
                        .await
                        .map_err(|e| Refusal::Failed(e.to_string())),
                    Err(_) => Err(stopped()),
                },
                Err(e) => Err(e),
            })
        }
        Request::List { table, prefix } => {
            Reply::List(match ensure_linearizable(raft, tuning).await {
                Ok(()) => match inner.sm() {
                    Ok(sm) => sm
                        .list(&table, &prefix)
                        .await
                        .map_err(|e| Refusal::Failed(e.to_string())),
                    Err(_) => Err(stopped()),
                },
                Err(e) => Err(e),
            })
        }
    }
}
