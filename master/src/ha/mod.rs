//! Replicated masters (`[ha]` in master.toml): every master process runs a [`Replica`] of the
//! group's map (`bramble-replica`); the one the group elects leader serves, the others stand by.
//!
//! - **Leader**: once Raft makes this node leader, it waits until it has applied everything
//!   committed (a read barrier), records where it serves clients (`masters/<id>`), loads the
//!   records from the map (`store/replicated.rs`) and runs the ordinary master service
//!   (`server::start_with`: state, QUIC, HTTP) exactly as a restarted single master does:
//!   agents re-register, frameworks fail over, nothing is killed. Each burst's batch is one
//!   log entry written as leader only (never forwarded), so nothing is acknowledged before a
//!   majority holds it.
//! - **Stepping down**: when the metrics say it no longer leads (or its term changed), or a
//!   write failed (deposed, no majority, outcome unknown), the service is stopped at once (as
//!   a killed master: nothing more is sent) and the master stands by.
//! - **Standby** (`standby.rs`): its QUIC endpoint answers every hello with
//!   `HelloReply::NotLeader` naming the leader's client addresses; its HTTP side redirects API
//!   calls to the leader (307), serves Mesos's `/master/redirect`, and answers
//!   `/api/v1/state` itself with the group's picture.
//!
//! - **Found on mDNS** (`peers = "mdns"`, `mdns.rs`): no addresses configured; the candidates
//!   of the cluster find each other and form exactly one group (the rule is there).
//!
//! [`HaMaster::status`] publishes this master's role, term and the leader on a watch (for the
//! mDNS advert and the front panel to follow).

pub mod mdns;
pub mod membership;
pub mod panel;
mod standby;

pub use membership::Membership;

use crate::config::{HaConfig, MasterConfig};
use crate::server::{self, Backend, MasterHandle};
use crate::store::replicated::{MasterAddress, Replicated};
use bramble_proto::dir_lock::DirLock;
use bramble_proto::identity::Credentials;
use bramble_proto::messages::LeaderHint;
use bramble_replica::{Replica, Role};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How long a new leader keeps trying to bind the client ports its standby side just left.
const REBIND_DEADLINE: Duration = Duration::from_secs(5);
/// How long a master that could not serve as leader leaves the leadership to the others
/// before it may stand again (an election takes about a second).
const HAND_OVER_HOLD: Duration = Duration::from_secs(5);
/// How often the status is refreshed besides the replica's own changes (the masters table).
const STATUS_REFRESH: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("[ha]: {0}")]
    Config(String),
    #[error("{0} (bramble-master --state-dir DIR, or state_dir in master.toml)")]
    Locked(bramble_proto::dir_lock::DirLockError),
    #[error("starting the replica: {0}")]
    Replica(#[from] bramble_replica::ReplicaError),
}

/// One master of the group as this one sees it (`/api/v1/state`'s `masters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterView {
    pub id: u64,
    /// Its QUIC address for agents, frameworks and operators, once it has recorded it.
    pub address: Option<String>,
    /// Its HTTP address, once recorded.
    pub http: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner` (this master's own role exactly; the
    /// others' as far as this one knows: the leader it follows, the rest followers).
    pub role: String,
    /// The Raft term as this master knows it.
    pub term: u64,
}

/// This master's place in the group, published on [`HaMaster::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaStatus {
    pub id: u64,
    pub role: Role,
    pub term: u64,
    /// Where the leader serves, once known (and recorded).
    pub leader: Option<LeaderHint>,
    /// Whether this master runs the master service now (leading, caught up).
    pub serving: bool,
    pub masters: Vec<MasterView>,
}

/// A master of a replicated group: its replica, and whichever side (leader or standby) it
/// runs now. Dropping it does not stop it; call [`HaMaster::shutdown`].
pub struct HaMaster {
    replica: Replica,
    status: watch::Receiver<HaStatus>,
    leading: watch::Receiver<Option<Leading>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _lock: DirLock,
}

/// The master service while this master leads: its summaries and its panel's picture (what
/// its operators' `GetPanel` and `/api/v1/panel.png` read).
#[derive(Clone)]
pub struct Leading {
    pub feed: crate::state::feed::Feed,
    pub panel: crate::display::PanelFeed,
}

impl HaMaster {
    /// The serving side's feeds while this master leads, `None` while it stands by.
    pub fn leading(&self) -> watch::Receiver<Option<Leading>> {
        self.leading.clone()
    }

    /// Role, term, leader and whether this master serves, as they change.
    pub fn status(&self) -> watch::Receiver<HaStatus> {
        self.status.clone()
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Stops serving (leader or standby) and the replica.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.replica.shutdown().await {
            warn!("stopping the replica: {e}");
        }
    }
}

/// Where clients reach `listen` from other machines: an unspecified address (`0.0.0.0`) is
/// named by this master's replication address, which its peers reach.
fn reachable(listen: SocketAddr, replication: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        SocketAddr::new(replication.ip(), listen.port()).to_string()
    } else {
        listen.to_string()
    }
}

/// Starts this master's replica and its standby side; it serves once elected.
pub async fn start(
    creds: Arc<Credentials>,
    cfg: &MasterConfig,
    ha: &HaConfig,
) -> Result<HaMaster, HaError> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| HaError::Config(format!("the state dir {}: {e}", cfg.state_dir.display())))?;
    let lock = DirLock::acquire(&cfg.state_dir, "bramble-master").map_err(HaError::Locked)?;
    let (replica, replication, discovery) = if ha.mdns() {
        let (replica, replication, found) = start_found(&creds, cfg, ha).await?;
        (replica, replication, Some(found))
    } else {
        let replica_config = ha
            .replica_config()
            .map_err(|(key, why)| HaError::Config(format!("{key}: {why}")))?;
        let replication = replica_config
            .listen()
            .ok_or_else(|| HaError::Config(format!("ha.id {} is not among ha.peers", ha.id)))?;
        let replica =
            Replica::start(replica_config, &cfg.state_dir.join("replica"), &creds).await?;
        (replica, replication, None)
    };
    let me = MasterAddress {
        quic: reachable(cfg.listen, replication),
        http: Some(reachable(cfg.http, replication)),
    };
    let (stop, stop_rx) = watch::channel(false);
    let stop_rx_mdns = stop_rx.clone();
    let (serving_tx, serving_rx) = watch::channel(false);
    let (leading_tx, leading) = watch::channel(None);
    let (status_tx, status) = watch::channel(HaStatus {
        id: replica.id(),
        role: Role::Follower,
        term: 0,
        leader: None,
        serving: false,
        masters: Vec::new(),
    });
    let mut tasks = vec![
        tokio::spawn(publish_address(
            replica.clone(),
            me.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(keep_status(
            replica.clone(),
            status_tx,
            serving_rx,
            stop_rx.clone(),
        )),
        tokio::spawn(run(
            creds,
            cfg.clone(),
            replica.clone(),
            me,
            status.clone(),
            (serving_tx, leading_tx),
            stop_rx,
        )),
    ];
    if let Some((advert, browser)) = discovery {
        tasks.push(tokio::spawn(mdns::run(
            replica.clone(),
            advert,
            browser,
            ha.expect(),
            status.clone(),
            stop_rx_mdns,
        )));
    }
    info!(id = replica.id(), %replication, "replicated master started (standing by until elected)");
    Ok(HaMaster {
        replica,
        status,
        leading,
        stop,
        tasks,
        _lock: lock,
    })
}

/// How long a candidate waits to see its own mDNS advert (which tells it its own address).
const OWN_ADVERT_DEADLINE: Duration = Duration::from_secs(30);

type Found = (
    bramble_proto::discovery::CandidateAdvert,
    bramble_proto::discovery::CandidateBrowser,
);

/// `peers = "mdns"`: this card's id, its replica on the replication port of every address,
/// its candidate advert and the browse for the others; returns once its own advert is seen
/// (the address the others reach it at).
async fn start_found(
    creds: &Credentials,
    cfg: &MasterConfig,
    ha: &HaConfig,
) -> Result<(Replica, SocketAddr, Found), HaError> {
    use bramble_proto::discovery::{CandidateAdvert, CandidateBrowser};
    let id = if ha.id > 0 {
        ha.id
    } else {
        mdns::card_id(&cfg.state_dir, std::path::Path::new(mdns::MACHINE_ID))
            .map_err(HaError::Config)?
    };
    let bind = SocketAddr::from(([0, 0, 0, 0], ha.port()));
    let config = bramble_replica::ReplicaConfig {
        id,
        peers: [(id, bind)].into_iter().collect(),
        bootstrap: false,
        tuning: bramble_replica::Tuning::default(),
    };
    let replica = Replica::start(config, &cfg.state_dir.join("replica"), creds).await?;
    let member = replica.joined().await?.is_some();
    let mdns_err = |e: bramble_proto::discovery::DiscoveryError| {
        HaError::Config(format!("peers = \"mdns\": {e}"))
    };
    let interfaces = &cfg.discovery.interfaces;
    let browser = CandidateBrowser::start(&creds.cluster_id, interfaces).map_err(mdns_err)?;
    let advert = CandidateAdvert::start(
        &bramble_proto::discovery::local_hostname(),
        &creds.cluster_id,
        id,
        ha.port(),
        member,
        interfaces,
    )
    .map_err(mdns_err)?;
    let mut seen = browser.watch();
    let own = match tokio::time::timeout(
        OWN_ADVERT_DEADLINE,
        seen.wait_for(|s| s.values().any(|c| c.id == id && c.addr().is_some())),
    )
    .await
    {
        Ok(Ok(s)) => s.values().find(|c| c.id == id).and_then(|c| c.addr()),
        _ => None,
    };
    let Some(own) = own else {
        let _ = replica.shutdown().await;
        return Err(HaError::Config(format!(
            "peers = \"mdns\": this master's own advert was not seen on mDNS within {OWN_ADVERT_DEADLINE:?} (is multicast possible on {}?)",
            if interfaces.is_empty() { "any interface".to_string() } else { interfaces.join(", ") }
        )));
    };
    info!(id, replication = %own, member, "master candidate on mDNS (peers = \"mdns\")");
    Ok((replica, own, (advert, browser)))
}

/// Records this master's client addresses in the group (through the leader), retrying until
/// a leader takes it.
async fn publish_address(replica: Replica, me: MasterAddress, mut stop: watch::Receiver<bool>) {
    loop {
        match Replicated::publish_address(&replica, &me).await {
            Ok(()) => {
                info!(quic = %me.quic, http = ?me.http, "recorded this master's client addresses in the group");
                return;
            }
            Err(e) => tracing::debug!("recording this master's addresses: {e} (retrying)"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Keeps `tx` up to date with the replica's metrics and the masters table.
async fn keep_status(
    replica: Replica,
    tx: watch::Sender<HaStatus>,
    mut serving: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = replica.metrics();
    let mut tick = tokio::time::interval(STATUS_REFRESH);
    loop {
        let serving_now = *serving.borrow_and_update();
        let now = status_now(&replica, serving_now).await;
        tx.send_if_modified(|s| {
            if *s == now {
                false
            } else {
                *s = now;
                true
            }
        });
        tokio::select! {
            _ = stop.changed() => return,
            r = metrics.changed() => if r.is_err() { return },
            _ = serving.changed() => {}
            _ = tick.tick() => {}
        }
    }
}

async fn status_now(replica: &Replica, serving: bool) -> HaStatus {
    let addresses = Replicated::addresses(replica).await;
    let (role, term, leader_id, members, voters) = {
        let m = replica.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let voters: Vec<u64> = membership.voter_ids().collect();
        (
            Role::from(m.state),
            m.current_term,
            m.current_leader,
            members,
            voters,
        )
    };
    let me = replica.id();
    let address_of = |id: u64| addresses.iter().find(|(i, _)| *i == id).map(|(_, a)| a);
    let masters = members
        .iter()
        .map(|&id| MasterView {
            id,
            address: address_of(id).map(|a| a.quic.clone()),
            http: address_of(id).and_then(|a| a.http.clone()),
            role: if id == me {
                role.to_string()
            } else if Some(id) == leader_id {
                Role::Leader.to_string()
            } else if !voters.contains(&id) {
                Role::Learner.to_string()
            } else {
                Role::Follower.to_string()
            },
            term,
        })
        .collect();
    // This master leading but not serving (taking over, or handing the leadership away)
    // names no leader: sending clients to itself would only send them round.
    let leader = leader_id.filter(|&id| id != me || serving).and_then(|id| {
        let a = address_of(id)?;
        Some(LeaderHint {
            id,
            address: a.quic.clone(),
            http: a.http.clone(),
            term,
        })
    });
    HaStatus {
        id: me,
        role,
        term,
        leader,
        serving,
        masters,
    }
}

/// Returns the term once this node leads (and is not handing the leadership over).
async fn elected(replica: &Replica) -> u64 {
    let mut m = replica.metrics();
    loop {
        let term = {
            let now = m.borrow_and_update();
            (Role::from(now.state) == Role::Leader && now.current_leader == Some(replica.id()))
                .then_some(now.current_term)
        };
        match (term, replica.holding_back()) {
            (Some(term), None) => return term,
            // Handing over: woken by another's election, or by the hold's end.
            (Some(_), Some(left)) => {
                let _ = tokio::time::timeout(left, m.changed()).await;
            }
            (None, _) => {
                if m.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Returns once this node no longer leads in `term`, or can no longer show that it does.
async fn deposed(replica: &Replica, term: u64) {
    tokio::select! {
        _ = role_changed(replica, term) => {}
        _ = quorum_lost(replica) => {}
    }
}

/// Returns once the metrics show another role or term.
async fn role_changed(replica: &Replica, term: u64) {
    let mut m = replica.metrics();
    loop {
        {
            let now = m.borrow_and_update();
            if Role::from(now.state) != Role::Leader || now.current_term != term {
                return;
            }
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}

/// How often a serving leader confirms with a heartbeat round that a majority still follows it.
const QUORUM_CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a serving leader goes on without a majority confirming it before it stops serving.
/// openraft never steps a leader down by itself when it is cut off from the others: its
/// writes fail, but bursts that write nothing (heartbeats, offers, relayed updates) would go
/// on while the majority elects another leader, which then marks this one's agents' tasks
/// LOST. The others elect no one before their lease (`election_max`) plus `election_min` has
/// passed since the last heartbeat they got, 700 ms by default, and a new leader then still
/// catches up and loads before it serves: stopping 500 ms after the last confirmation keeps
/// the two from ever serving at once, and leaves a loaded machine's slow round room before a
/// healthy leader would stop for nothing.
const QUORUM_LEASE: Duration = Duration::from_millis(500);

/// Returns once no heartbeat round has confirmed this node's leadership for
/// [`QUORUM_LEASE`].
async fn quorum_lost(replica: &Replica) {
    let mut confirmed = Instant::now();
    loop {
        // A round may take what is left of the lease, no more.
        let left = QUORUM_LEASE.saturating_sub(confirmed.elapsed());
        let round = tokio::time::timeout(left, replica.read_barrier()).await;
        if matches!(round, Ok(Ok(()))) {
            confirmed = Instant::now();
        }
        let since = confirmed.elapsed();
        if since >= QUORUM_LEASE {
            warn!(
                ?since,
                "no majority of the masters has confirmed this leader"
            );
            return;
        }
        tokio::time::sleep(QUORUM_CHECK_EVERY).await;
    }
}

/// Standby until elected, leader until deposed, and again, until stopped.
async fn run(
    creds: Arc<Credentials>,
    cfg: MasterConfig,
    replica: Replica,
    me: MasterAddress,
    status: watch::Receiver<HaStatus>,
    (serving, leading): (watch::Sender<bool>, watch::Sender<Option<Leading>>),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let standby = standby::start(&creds, &cfg, status.clone()).await;
        let term = tokio::select! {
            term = elected(&replica) => term,
            _ = stop.changed() => {
                standby.stop().await;
                return;
            }
        };
        let elected_at = Instant::now();
        standby.stop().await;
        let master = match take_over(&creds, &cfg, &replica, term, &me, status.clone()).await {
            Ok(m) => m,
            Err(e) => {
                // Still the Raft leader, it would be named by every standby while serving
                // no one: clients would go round between them. Another master takes over.
                error!(
                    term,
                    "not serving as leader: {e}; handing the leadership to another master"
                );
                hand_over(&replica, term);
                continue;
            }
        };
        let _ = serving.send(true);
        leading.send_replace(Some(Leading {
            feed: master.feed(),
            panel: master.panel_feed(),
        }));
        info!(term, took = ?elected_at.elapsed(), quic = %master.addr, "elected leader: serving as the master");
        let why = tokio::select! {
            _ = deposed(&replica, term) => "no longer the leader".to_string(),
            reason = master.failed() => reason,
            _ = stop.changed() => {
                let _ = serving.send(false);
                leading.send_replace(None);
                master.shutdown().await;
                return;
            }
        };
        warn!(
            term,
            "stepping down to standby: {why}; stopping the master service at once"
        );
        let _ = serving.send(false);
        leading.send_replace(None);
        master.kill().await;
        // Still leading (its service failed, not its election): another master takes over.
        hand_over(&replica, term);
    }
}

/// Hands the leadership of `term` to another master ([`Replica::abdicate`]) if this one
/// still holds it; [`elected`] then waits until it is gone, or until [`HAND_OVER_HOLD`] has passed and no
/// other could be elected (this one tries again). Already deposed (a take-over fails so when
/// an election interrupts it), there is nothing to hand over and nothing is held back.
fn hand_over(replica: &Replica, term: u64) {
    replica.abdicate(term, HAND_OVER_HOLD);
}

/// Becomes the serving master of `term`: catches up, records its addresses, loads the
/// records and runs the master service on them, every write fenced to `term`.
async fn take_over(
    creds: &Credentials,
    cfg: &MasterConfig,
    replica: &Replica,
    term: u64,
    me: &MasterAddress,
    status: watch::Receiver<HaStatus>,
) -> Result<MasterHandle, String> {
    let (store, recovered) = Replicated::open(replica.clone(), &creds.cluster_id, term)
        .await
        .map_err(|e| e.to_string())?;
    store
        .record_address(me)
        .await
        .map_err(|e| format!("recording this master's addresses: {e}"))?;
    info!(
        frameworks = recovered.frameworks.len(),
        agents = recovered.agents.len(),
        tasks = recovered.tasks.len(),
        "loaded the replicated master store"
    );
    // The standby side just let go of the ports: its sockets may take a moment to close.
    let deadline = Instant::now() + REBIND_DEADLINE;
    let mut recovered = Some(recovered);
    loop {
        let r = recovered.take().unwrap_or_default();
        match server::start_with(
            creds,
            cfg,
            Backend::Replicated(store.clone()),
            r,
            Some(status.clone()),
        )
        .await
        {
            Ok(m) => return Ok(m),
            Err(server::ServerError::Transport(e)) if Instant::now() < deadline => {
                tracing::debug!("binding the master's endpoint: {e} (retrying)");
                recovered = Some(store.load().await.map_err(|e| e.to_string())?);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
