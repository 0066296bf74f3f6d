//! `[ha] peers = "mdns"`: master candidates of one cluster find each other on mDNS and form
//! exactly one group, with no addresses typed (the appliance: one image on every card).
//!
//! Each candidate has a stable id (`[ha] id`, or derived once from `/etc/machine-id` and kept
//! in `<state_dir>/ha-id`, so it never changes for this card's store) and advertises
//! `_bramble-ha._udp.local.` (`bramble-proto`'s `discovery/candidates.rs`): cluster, id,
//! replication port, and `member` once its replica belongs to a group.
//!
//! **Forming the group once.** The danger is two candidates each forming a group of their
//! own (two leaders, two stores, a split cluster that never heals). The rule:
//! 1. A candidate whose store already belongs to a group never forms another (the replica
//!    refuses: `Replica::bootstrap` checks the store's `joined` record).
//! 2. A fresh candidate that sees any candidate advertising `member` forms nothing: a group
//!    exists, and its leader adds this one (below). This also covers a card whose store was
//!    wiped: it sees the others as members and waits to be added back, never re-bootstraps.
//! 3. Otherwise, once at least `expect` fresh candidates are seen (itself included) and that
//!    view has not changed for [`SETTLE`] (mDNS announces a new record at once and repeats
//!    it within a second, so a candidate booting meanwhile is seen before anyone acts), the
//!    group is the `expect` lowest ids seen, and only the lowest of them forms it: a group of
//!    itself, which elects it at once, and which as leader then adds the rest of the set
//!    (learners, then voters in one change). Only the former ever initializes a membership:
//!    a node with none refuses to vote, so the others only ever join by being added, and no
//!    second initial membership exists among nodes that saw the same view. Two candidates with the same view pick the
//!    same set and the same former, so only differing views could form two groups: that
//!    needs two candidates that each see `expect` fresh candidates but not each other's
//!    `member` announcement for the whole settle time (a partitioned LAN at first boot).
//!    That remains possible in principle, as with any discovery without a prior quorum; the
//!    former logs the set it formed, and a candidate that sees a `member` candidate which its
//!    own group does not hold says so loudly.
//! 4. Two candidates advertising one id (two cards with one machine id, a copied card)
//!    stop the rule: nothing is formed until one goes away, and the clash is logged.
//!
//! **Growing.** The serving leader adds every fresh candidate it sees that is not in the group
//! (as a learner, caught up, then a voter) until the group has [`HA_MAX_VOTERS`] voters; the
//! rest stay candidates. A not-yet-member admits replication connections from the candidates
//! it sees (its own group's leader is one of them): every card holds a node certificate, so
//! this is no stronger than the group's own address check (see ARCHITECTURE.md).

use super::HaStatus;
use crate::config::HA_MAX_VOTERS;
use bramble_proto::discovery::{Candidate, CandidateAdvert, CandidateBrowser};
use bramble_replica::{NodeId, Replica};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long the view of candidates must stay the same before the lowest forms the group.
pub const SETTLE: Duration = Duration::from_secs(3);
/// How often the rule is looked at again besides changes.
const TICK: Duration = Duration::from_millis(500);
/// Where the card's stable identity is read from.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// The file in the state dir holding the id derived for this card.
const ID_FILE: &str = "ha-id";

/// What a fresh candidate does with the candidates it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Fewer than `expect` fresh candidates seen (this one included).
    Wait { seen: usize },
    /// A group exists (a candidate advertises `member`): wait to be added by its leader.
    Join,
    /// Form the group of exactly these ids (this candidate is the lowest).
    Form(Vec<NodeId>),
    /// The lowest of these ids forms the group, this one among them: wait for its leader.
    Formed(Vec<NodeId>),
    /// Two candidates advertise this id: nothing is formed.
    Clash(NodeId),
}

/// The rule (see the module header) for fresh candidate `me`, from the candidates `seen`
/// (itself included).
pub fn decide(me: NodeId, seen: &[Candidate], expect: usize) -> Decision {
    let mut by_id: BTreeMap<NodeId, &Candidate> = BTreeMap::new();
    for c in seen {
        if let Some(other) = by_id.insert(c.id, c) {
            if other.fullname != c.fullname {
                return Decision::Clash(c.id);
            }
        }
    }
    if seen.iter().any(|c| c.member && c.id != me) {
        return Decision::Join;
    }
    if !by_id.contains_key(&me) || by_id.len() < expect {
        return Decision::Wait { seen: by_id.len() };
    }
    let set: Vec<NodeId> = by_id.keys().take(expect).copied().collect();
    if set.first() == Some(&me) {
        Decision::Form(set)
    } else {
        Decision::Formed(set)
    }
}

/// This card's master id: `<state_dir>/ha-id` if written before, else derived from the
/// machine id (31 bits of its SHA-256, never 0) and written there.
pub fn card_id(state_dir: &Path, machine_id: &Path) -> Result<NodeId, String> {
    let file = state_dir.join(ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            return text
                .trim()
                .parse::<NodeId>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| format!("{}: not a master id: {:?}", file.display(), text.trim()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    }
    let machine = std::fs::read_to_string(machine_id).map_err(|e| {
        format!(
            "reading {} for this card's master id: {e} (or set [ha] id)",
            machine_id.display()
        )
    })?;
    let machine = machine.trim();
    if machine.is_empty() || machine == "uninitialized" {
        return Err(format!(
            "{} is empty: no stable identity to derive the master id from (set [ha] id)",
            machine_id.display()
        ));
    }
    let id = id_from(machine);
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("creating {}: {e}", state_dir.display()))?;
    std::fs::write(&file, format!("{id}\n"))
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    info!(id, from = %machine_id.display(), "derived this card's master id");
    Ok(id)
}

fn id_from(machine: &str) -> NodeId {
    let d = ring::digest::digest(&ring::digest::SHA256, machine.as_bytes());
    let b = d.as_ref();
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
    NodeId::from(n.max(1))
}

/// Whether this replica belongs to a group (its membership holds any node).
fn joined(replica: &Replica) -> bool {
    replica
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .next()
        .is_some()
}

/// Runs the rule and the growing until `stop`: admits the candidates seen while not a
/// member, forms the group when the rule says so, re-announces `member` once joined, and
/// while serving adds fresh candidates.
pub(super) async fn run(
    replica: Replica,
    advert: CandidateAdvert,
    browser: CandidateBrowser,
    expect: usize,
    mut status: watch::Receiver<HaStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let me = replica.id();
    let mut seen = browser.watch();
    let mut metrics = replica.metrics();
    let mut said_member = joined(&replica);
    let mut view: Vec<(NodeId, bool, String)> = Vec::new();
    let mut stable_since = Instant::now();
    let mut last_decision = None;
    let mut strangers_said = BTreeSet::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let candidates: Vec<Candidate> = seen.borrow_and_update().values().cloned().collect();
        let now_view: Vec<(NodeId, bool, String)> = candidates
            .iter()
            .map(|c| (c.id, c.member, c.fullname.clone()))
            .collect();
        if now_view != view {
            view = now_view;
            stable_since = Instant::now();
        }
        let member = joined(&replica);
        if member && !said_member {
            match advert.set_member(true) {
                Ok(()) => said_member = true,
                Err(e) => warn!("announcing this candidate as a member: {e}"),
            }
        }
        if !member {
            for c in &candidates {
                for a in &c.addrs {
                    replica.admit(a.ip());
                }
            }
            let decision = decide(me, &candidates, expect);
            if last_decision.as_ref() != Some(&decision) {
                match &decision {
                    Decision::Wait { seen } => info!(seen, expect, "master candidates: waiting for {expect} to be seen"),
                    Decision::Join => info!("master candidates: a group exists; waiting for its leader to add this master"),
                    Decision::Form(set) => info!(?set, "master candidates: this master forms the group once the view settles"),
                    Decision::Formed(set) => info!(?set, "master candidates: the lowest id forms the group; waiting for it"),
                    Decision::Clash(id) => error!(id, "master candidates: two candidates advertise id {id}; forming nothing until one goes (set [ha] id on one)"),
                }
                last_decision = Some(decision.clone());
            }
            if let Decision::Form(set) = &decision {
                if stable_since.elapsed() >= SETTLE {
                    form(&replica, set, &candidates).await;
                }
            }
        } else if status.borrow().serving {
            grow(&replica, &candidates).await;
        } else {
            // A member seeing another group's member: say so once per candidate.
            let ours: BTreeSet<NodeId> = members(&replica);
            for c in candidates
                .iter()
                .filter(|c| c.member && !ours.contains(&c.id))
            {
                if strangers_said.insert(c.id) {
                    error!(id = c.id, name = %c.fullname, "a master candidate of this cluster belongs to another group than this master's");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = seen.changed() => if r.is_err() { break },
            r = metrics.changed() => if r.is_err() { break },
            _ = status.changed() => {}
            _ = tick.tick() => {}
        }
    }
    advert.stop().await;
    drop(browser);
}

fn members(replica: &Replica) -> BTreeSet<NodeId> {
    replica
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

fn voters(replica: &Replica) -> BTreeSet<NodeId> {
    replica
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// Forms the group: this node alone first (a group of one elects itself at once), then, as its
/// leader, it adds the rest of `set` ([`grow`]). Only the former ever initializes a
/// membership: the others never vote before a leader has added them (a node with no
/// membership refuses votes), so no second, different initial membership can exist among
/// the nodes that saw the same view.
async fn form(replica: &Replica, set: &[NodeId], candidates: &[Candidate]) {
    let me = replica.id();
    let Some(addr) = candidates
        .iter()
        .find(|c| c.id == me)
        .and_then(Candidate::addr)
    else {
        return;
    };
    match replica.bootstrap([(me, addr)].into_iter().collect()).await {
        Ok(()) => {
            info!(?set, %addr, "formed the masters' group from the candidates seen on mDNS; adding the others as its leader")
        }
        Err(e) => warn!("forming the masters' group: {e}"),
    }
}

/// On the serving leader: every fresh candidate not in the group added as a learner (caught
/// up), then all made voters in one membership change, up to [`HA_MAX_VOTERS`] voters (the
/// lowest ids first).
async fn grow(replica: &Replica, candidates: &[Candidate]) {
    let voters = voters(replica);
    let room = HA_MAX_VOTERS.saturating_sub(voters.len());
    if room == 0 {
        return;
    }
    let all = members(replica);
    let mut fresh: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !c.member && !all.contains(&c.id))
        .collect();
    fresh.sort_by_key(|c| c.id);
    fresh.dedup_by_key(|c| c.id);
    let mut next = voters.clone();
    for c in fresh.into_iter().take(room) {
        let Some(addr) = c.addr() else { continue };
        info!(id = c.id, %addr, "adding a master candidate seen on mDNS to the group");
        match replica.add_learner(c.id, &addr.to_string()).await {
            Ok(()) => {
                next.insert(c.id);
            }
            Err(e) => warn!(
                id = c.id,
                "adding master candidate {} as a learner: {e}", c.id
            ),
        }
    }
    if next == voters {
        return;
    }
    match replica.change_membership(next.clone()).await {
        Ok(()) => info!(voters = ?next, "master candidates added to the group as voters"),
        Err(e) => warn!(voters = ?next, "making master candidates voters: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn c(id: NodeId, member: bool) -> Candidate {
        Candidate {
            fullname: format!("pi-{id}._bramble-ha._udp.local."),
            id,
            addrs: vec![SocketAddr::from(([198, 18, 0, id as u8], 5052))],
            member,
        }
    }

    #[test]
    fn the_lowest_of_the_first_expected_forms_the_group_with_exactly_them() {
        let seen = [c(30, false), c(10, false), c(20, false)];
        assert_eq!(decide(10, &seen, 3), Decision::Form(vec![10, 20, 30]));
        assert_eq!(decide(20, &seen, 3), Decision::Formed(vec![10, 20, 30]));
        assert_eq!(decide(30, &seen, 3), Decision::Formed(vec![10, 20, 30]));
        // Every candidate with the same view names the same set and the same former.
        let five = [
            c(50, false),
            c(40, false),
            c(30, false),
            c(20, false),
            c(10, false),
        ];
        let formers: Vec<NodeId> = [10, 20, 30, 40, 50]
            .into_iter()
            .filter(|me| matches!(decide(*me, &five, 3), Decision::Form(_)))
            .collect();
        assert_eq!(formers, vec![10]);
        assert_eq!(decide(40, &five, 3), Decision::Formed(vec![10, 20, 30]));
    }

    #[test]
    fn too_few_seen_or_not_seeing_itself_forms_nothing() {
        assert_eq!(
            decide(10, &[c(10, false), c(20, false)], 3),
            Decision::Wait { seen: 2 }
        );
        // Its own advert not seen yet: it does not know its own address.
        assert!(matches!(
            decide(5, &[c(10, false), c(20, false), c(30, false)], 3),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn an_existing_group_is_joined_never_formed_again() {
        // The lowest id boots late (or was wiped): the others already form a group.
        let seen = [c(1, false), c(20, true), c(30, true), c(40, true)];
        assert_eq!(decide(1, &seen, 3), Decision::Join);
        // A member's own advert does not count as someone else's group.
        assert_eq!(
            decide(1, &[c(1, true), c(2, false), c(3, false)], 3),
            Decision::Form(vec![1, 2, 3])
        );
    }

    #[test]
    fn two_candidates_with_one_id_stop_the_rule() {
        let mut twin = c(10, false);
        twin.fullname = "copy-10._bramble-ha._udp.local.".into();
        let seen = [c(10, false), twin, c(20, false), c(30, false)];
        assert_eq!(decide(10, &seen, 3), Decision::Clash(10));
        assert_eq!(decide(20, &seen, 3), Decision::Clash(10));
    }

    #[test]
    fn a_cards_id_is_derived_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let machine = dir.path().join("machine-id");
        std::fs::write(&machine, "0123456789abcdef0123456789abcdef\n").expect("write");
        let state = dir.path().join("state");
        let id = card_id(&state, &machine).expect("derived");
        assert!(id > 0 && id <= 0x7fff_ffff);
        assert_eq!(id, id_from("0123456789abcdef0123456789abcdef"));
        // Kept: a changed machine id does not change the master id of this store.
        std::fs::write(&machine, "fedcba9876543210fedcba9876543210\n").expect("write");
        assert_eq!(card_id(&state, &machine).expect("kept"), id);
        // Another card, another id.
        let other = dir.path().join("other");
        assert_ne!(card_id(&other, &machine).expect("derived"), id);
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let err = card_id(&dir.path().join("s3"), &dir.path().join("empty")).expect_err("empty");
        assert!(err.contains("[ha] id"), "{err}");
    }
}
