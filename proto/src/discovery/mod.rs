//! Zero-configuration discovery over mDNS: the master advertises `_bramble._udp.local.`, agents
//! (and the CLI) browse for it and keep only masters of their own cluster.
//!
//! Shape, and why:
//! - [`MasterTable`] is the pure core: it takes what mDNS resolved or removed and decides which
//!   masters are ours, which are strangers (logged once each), and which to dial first (the
//!   most recently *changed* answer that has not failed since). It never does I/O, so every
//!   rule is unit-tested without a network.
//! - [`Browser`] is the edge around it: one mdns-sd daemon and one tokio task that feeds the
//!   table. When a cached answer stops working the caller says so ([`Browser::failed`]); the
//!   browser then asks the network to confirm that record (flushing it when nobody answers)
//!   and starts a fresh browse, so a master that moved is found by its new announcement.
//! - [`Advertiser`] is the master's side: it registers the service after the QUIC endpoint is
//!   bound, logs the name actually used (mdns-sd renames on a clash), and says goodbye on stop.
//!
//! mDNS only ever says *where* a master might be. Whether it is alive comes from QUIC
//! heartbeats: records of a node that died silently live on in caches for minutes.
//!
//! Interfaces: by default every interface that is up, multicast-capable and not loopback
//! (mdns-sd would include loopback; we decide explicitly). A configured list of names
//! replaces that default. The SRV target is `<hostname>-bramble.local.` rather than the host's
//! own name, so our address records can never be taken for a conflict by avahi-daemon, which
//! owns `<hostname>.local.` on Raspberry Pi OS and would rename the machine over it.

//!
//! Files: `table.rs` (the pure core), `browser.rs` (its edge), `advertiser.rs` (the master's
//! side), `services.rs` (the master advertising the service framework's healthy instances,
//! `NAME._http._tcp.local.`), `candidates.rs` (replicated masters' candidates finding each other,
//! `[ha] peers = "mdns"`); this one holds the config, the shared daemon setup and the dialing helpers.

mod advertiser;
mod browser;
mod candidates;
mod services;
mod table;

pub use advertiser::{local_hostname, Advertiser, MasterAdvert};
pub use browser::Browser;
pub use candidates::{
    Candidate, CandidateAdvert, CandidateBrowser, CANDIDATE_SERVICE_TYPE, TXT_HA_ID, TXT_MEMBER,
};
pub use services::{ServiceAdvert, ServiceAdverts};
pub use table::{MasterTable, Sighting, Verdict};

use mdns_sd::{IfKind, IfPredicate, ServiceDaemon};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// TXT key: the cluster id (the CA certificate's fingerprint).
pub const TXT_CLUSTER_ID: &str = "cluster_id";
/// TXT key: the wire protocol version the master speaks.
pub const TXT_VERSION: &str = "version";
/// TXT key: the master's QUIC (UDP) port.
pub const TXT_QUIC: &str = "quic";
/// TXT key: the master's HTTP (TCP) port.
pub const TXT_HTTP: &str = "http";
/// TXT key: a replicated master's role, `leader` or `standby` (absent: a single master).
pub const TXT_ROLE: &str = "role";
/// TXT key: the Raft term the role is of (with `role`).
pub const TXT_TERM: &str = "term";

/// What a master advertises itself as (TXT `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MasterRole {
    /// The only master: no `[ha]`, or an older master that advertises no role.
    Single,
    /// The elected leader of a replicated group: the one that serves.
    Leader,
    /// A replicated group's standby: it answers hellos with the leader's address.
    Standby,
}

impl MasterRole {
    /// The TXT value; `None` for a single master, which advertises no role.
    pub fn txt(self) -> Option<&'static str> {
        match self {
            MasterRole::Single => None,
            MasterRole::Leader => Some("leader"),
            MasterRole::Standby => Some("standby"),
        }
    }

    /// A TXT value read: absent or `single` is a single master; an unknown role (a newer
    /// master's) counts as a standby, dialled only when nothing better is known.
    pub fn from_txt(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") | Some("single") => MasterRole::Single,
            Some("leader") => MasterRole::Leader,
            Some(_) => MasterRole::Standby,
        }
    }
}

/// How long a record that failed us may go unconfirmed before mdns-sd flushes it.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// While no master of ours is known, a fresh query goes out this often (growing to the max):
/// a master that was announced while our link was down is found without waiting for
/// mdns-sd's own query backoff, which grows to minutes.
const REQUERY_MIN: Duration = Duration::from_millis(500);
const REQUERY_MAX: Duration = Duration::from_secs(4);
/// How long [`connect_first`] gives one address before also trying the next.
pub const DIAL_STAGGER: Duration = Duration::from_millis(250);

/// The `[discovery]` section of the master's and the agent's config files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Interface names to use for mDNS, e.g. `["eth0"]`. Empty (the default) means every
    /// interface that is up, multicast-capable and not loopback.
    pub interfaces: Vec<String>,
}

impl DiscoveryConfig {
    /// Checks values serde cannot: returns the offending key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(bad) = self.interfaces.iter().find(|i| {
            i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\t']) || *i == "." || *i == ".."
        }) {
            return Err((
                "discovery.interfaces",
                format!("{bad:?} is not an interface name"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
    #[error(
        "no master of cluster {cluster_id} answered on mDNS within {timeout:?}{}",
        strangers_note(strangers)
    )]
    NotFound {
        cluster_id: String,
        timeout: Duration,
        /// Masters of other clusters that did answer.
        strangers: Vec<String>,
    },
    #[error("the mDNS browser stopped")]
    Stopped,
}

fn strangers_note(strangers: &[String]) -> String {
    if strangers.is_empty() {
        String::new()
    } else {
        format!(
            " (masters of other clusters answered: {}; is this the right cluster directory?)",
            strangers.join(", ")
        )
    }
}

/// An mdns-sd daemon restricted to the chosen interfaces (see the module header).
fn daemon(interfaces: &[String]) -> Result<ServiceDaemon, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    daemon.disable_interface(IfKind::All)?;
    if interfaces.is_empty() {
        daemon.enable_interface(IfKind::Predicate(IfPredicate::new(|intf| {
            !intf.is_loopback() && multicast_capable(&intf.name)
        })))?;
    } else {
        let names: Vec<IfKind> = interfaces.iter().map(IfKind::from).collect();
        daemon.enable_interface(names)?;
    }
    Ok(daemon)
}

/// IFF_MULTICAST from sysfs; interfaces we cannot inspect count as capable.
fn multicast_capable(name: &str) -> bool {
    const IFF_MULTICAST: u32 = 0x1000;
    std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .map(|flags| flags & IFF_MULTICAST != 0)
        .unwrap_or(true)
}

fn describe(interfaces: &[String]) -> String {
    if interfaces.is_empty() {
        "every up, multicast-capable, non-loopback interface".to_string()
    } else {
        interfaces.join(", ")
    }
}

/// Finds a master of `cluster_id` on `interfaces` (empty: the default set) within `timeout`
/// and returns its addresses, IPv4 first. For the CLI and tools that dial once.
pub async fn find_master(
    cluster_id: &str,
    interfaces: &[String],
    timeout: Duration,
) -> Result<Vec<SocketAddr>, DiscoveryError> {
    let browser = Browser::start(cluster_id, interfaces)?;
    match tokio::time::timeout(timeout, browser.wait_for_master()).await {
        Ok(found) => found.map(|(_, addrs)| addrs),
        Err(_) => Err(DiscoveryError::NotFound {
            cluster_id: cluster_id.to_string(),
            timeout,
            strangers: browser.table().strangers(),
        }),
    }
}

/// Dials the addresses in order, starting the next one [`DIAL_STAGGER`] after the previous
/// (or at once when it fails), and keeps the first connection that completes its handshake: a
/// master may be reachable on only some of its addresses (IPv4 or IPv6, one interface of
/// several), and on a healthy LAN the first address answers before the second is tried, so the
/// master sees no abandoned handshakes. Fails with every address's error when none answers
/// within `timeout`.
pub async fn connect_first(
    endpoint: &quinn::Endpoint,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<(quinn::Connection, SocketAddr), DialError> {
    if addrs.is_empty() {
        return Err(DialError {
            message: "no address to dial".to_string(),
            foreign: None,
        });
    }
    let mut foreign = None;
    let mut attempts = tokio::task::JoinSet::new();
    let mut pending = addrs.iter().copied();
    let mut errors = Vec::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        // One more address each round: a round ends when one fails or the stagger elapses.
        if let Some(addr) = pending.next() {
            let endpoint = endpoint.clone();
            attempts.spawn(async move { (addr, crate::transport::connect(&endpoint, addr).await) });
        }
        if attempts.is_empty() {
            break;
        }
        let stagger = tokio::time::sleep(DIAL_STAGGER);
        tokio::select! {
            _ = &mut deadline => {
                errors.push(format!("no answer within {timeout:?}"));
                break;
            }
            // Time to start the next address alongside the ones still trying.
            _ = stagger => {}
            next = attempts.join_next() => match next {
                Some(Ok((addr, Ok(conn)))) => return Ok((conn, addr)),
                Some(Ok((addr, Err(e)))) => {
                    if let crate::transport::TransportError::ForeignCluster { cluster, .. } = &e {
                        foreign = Some(cluster.clone());
                    }
                    errors.push(format!("{addr}: {e}"));
                }
                Some(Err(e)) => errors.push(e.to_string()),
                None => {}
            },
        }
    }
    Err(DialError {
        message: errors.join("; "),
        foreign,
    })
}

/// Why [`connect_first`] found no master: every address's error, and whether one of them
/// was a master of another cluster (the caller says that differently: retrying soon will not
/// help).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DialError {
    pub message: String,
    pub foreign: Option<crate::transport::ForeignCluster>,
}

#[cfg(test)]
mod tests;
