//! Replicated masters finding each other (`[ha] peers = "mdns"`): every master candidate
//! advertises `_bramble-ha._udp.local.` — its cluster, its stable id, its replication port and
//! whether its replica already belongs to a group — and browses for the others of its
//! cluster. What to do with the candidates seen (bootstrap a group, wait to be added) is the
//! master's decision (`master/src/ha/mdns.rs`); this file only says who is there.
//!
//! Names: the instance is `<host>-<id>` and the SRV target `bramble-ha-<id>.local.`, so two
//! candidates never claim one name even on cards that share a host name.

use super::{daemon, describe, DiscoveryError, TXT_CLUSTER_ID, TXT_VERSION};
use crate::PROTOCOL_VERSION;
use mdns_sd::{DaemonEvent, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The mDNS service type master candidates advertise.
pub const CANDIDATE_SERVICE_TYPE: &str = "_bramble-ha._udp.local.";
/// TXT key: the candidate's master id (`[ha] id`, or derived from the card).
pub const TXT_HA_ID: &str = "ha_id";
/// TXT key: `1` once the candidate's replica belongs to a group (bootstrapped or added).
pub const TXT_MEMBER: &str = "member";

/// One master candidate of this cluster as mDNS says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub fullname: String,
    pub id: u64,
    /// Its replication addresses (IPv4 first).
    pub addrs: Vec<SocketAddr>,
    /// Whether its replica already belongs to a group.
    pub member: bool,
}

impl Candidate {
    /// The address peers use: the first IPv4 one; `None` until one is known. A candidate's
    /// replica listens on `0.0.0.0` (IPv4 only), and mDNS resolves a host's addresses one by
    /// one: a record seen with only its IPv6 addresses so far must not be added to the group
    /// under one of them (it could never be dialled, and the group would wait on it forever).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addrs.iter().find(|a| a.is_ipv4()).copied()
    }
}

/// This candidate's advertisement; [`CandidateAdvert::set_member`] re-announces it.
pub struct CandidateAdvert {
    daemon: ServiceDaemon,
    fullname: String,
    monitor: JoinHandle<()>,
    instance: String,
    cluster_id: String,
    id: u64,
    port: u16,
}

impl CandidateAdvert {
    /// Advertises candidate `id` of `cluster_id` with its replication `port` on every address
    /// of `interfaces` (empty: the default set). Inside a tokio runtime.
    pub fn start(
        host: &str,
        cluster_id: &str,
        id: u64,
        port: u16,
        member: bool,
        interfaces: &[String],
    ) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        let instance = format!("{}-{id}", super::advertiser::dns_label(host));
        let advert = Self {
            daemon,
            fullname: String::new(),
            monitor: tokio::spawn(async {}),
            instance,
            cluster_id: cluster_id.to_string(),
            id,
            port,
        };
        let info = advert.info(member)?;
        let fullname = info.get_fullname().to_string();
        let events = advert.daemon.monitor()?;
        advert.daemon.register(info)?;
        let monitor = tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                match event {
                    DaemonEvent::Error(e) => warn!("mDNS (master candidates): {e}"),
                    other => debug!("mDNS (master candidates): {other:?}"),
                }
            }
        });
        info!(name = %fullname, id, port, member, interfaces = %describe(interfaces),
            "advertising this master candidate on mDNS");
        Ok(Self {
            fullname,
            monitor,
            ..advert
        })
    }

    fn info(&self, member: bool) -> Result<ServiceInfo, DiscoveryError> {
        let txt = [
            (TXT_CLUSTER_ID, self.cluster_id.clone()),
            (TXT_VERSION, PROTOCOL_VERSION.to_string()),
            (TXT_HA_ID, self.id.to_string()),
            (TXT_MEMBER, if member { "1" } else { "0" }.to_string()),
        ];
        let host = format!("bramble-ha-{}.local.", self.id);
        Ok(ServiceInfo::new(
            CANDIDATE_SERVICE_TYPE,
            &self.instance,
            &host,
            "",
            self.port,
            &txt[..],
        )?
        .enable_addr_auto())
    }

    /// Re-announces with `member` (this candidate's replica joined a group).
    pub fn set_member(&self, member: bool) -> Result<(), DiscoveryError> {
        self.daemon.register(self.info(member)?)?;
        info!(name = %self.fullname, member, "master candidate's mDNS advertisement updated");
        Ok(())
    }

    /// Unregisters (goodbye) and stops the daemon.
    pub async fn stop(self) {
        let Self {
            daemon,
            fullname,
            monitor,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(status) = daemon.unregister(&fullname) {
                let _ = status.recv_timeout(Duration::from_secs(2));
            }
            if let Ok(status) = daemon.shutdown() {
                let _ = status.recv_timeout(Duration::from_secs(2));
            }
        })
        .await;
        monitor.abort();
    }
}

/// A browse for the master candidates of one cluster: [`CandidateBrowser::watch`] gives them
/// by full name as they come, change and go.
pub struct CandidateBrowser {
    shared: Arc<BrowseShared>,
    seen: watch::Receiver<BTreeMap<String, Candidate>>,
}

struct BrowseShared {
    daemon: ServiceDaemon,
    task: JoinHandle<()>,
}

impl Drop for BrowseShared {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

impl CandidateBrowser {
    pub fn start(cluster_id: &str, interfaces: &[String]) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        let events = daemon.browse(CANDIDATE_SERVICE_TYPE)?;
        let (tx, seen) = watch::channel(BTreeMap::new());
        let cluster = cluster_id.to_string();
        let requery = daemon.clone();
        let task = tokio::spawn(async move {
            // Re-browse now and then: a candidate announced while our link was down is found
            // without waiting for mdns-sd's query backoff.
            let mut every = tokio::time::interval(Duration::from_secs(2));
            let mut events = events;
            loop {
                tokio::select! {
                    event = events.recv_async() => match event {
                        Ok(event) => handle(&tx, &cluster, event),
                        Err(_) => return,
                    },
                    _ = every.tick() => {
                        let _ = requery.stop_browse(CANDIDATE_SERVICE_TYPE);
                        match requery.browse(CANDIDATE_SERVICE_TYPE) {
                            Ok(rx) => events = rx,
                            Err(e) => {
                                warn!("mDNS browse for master candidates stopped: {e}");
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Self {
            shared: Arc::new(BrowseShared { daemon, task }),
            seen,
        })
    }

    /// The candidates of this cluster seen so far, by full name.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<String, Candidate>> {
        let _ = &self.shared;
        self.seen.clone()
    }
}

fn handle(tx: &watch::Sender<BTreeMap<String, Candidate>>, cluster: &str, event: ServiceEvent) {
    match event {
        ServiceEvent::ServiceResolved(s) => {
            if s.get_property_val_str(TXT_CLUSTER_ID) != Some(cluster) {
                return;
            }
            let Some(id) = s
                .get_property_val_str(TXT_HA_ID)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|id| *id > 0)
            else {
                debug!(
                    name = s.get_fullname(),
                    "a master candidate without a valid id"
                );
                return;
            };
            let mut addrs: Vec<SocketAddr> = s
                .get_addresses()
                .iter()
                .map(|ip| SocketAddr::new(ip.to_ip_addr(), s.get_port()))
                .collect();
            addrs.sort_by_key(|a| (a.is_ipv6(), *a));
            addrs.dedup();
            if addrs.is_empty() {
                return;
            }
            let candidate = Candidate {
                fullname: s.get_fullname().to_string(),
                id,
                addrs,
                member: s.get_property_val_str(TXT_MEMBER) == Some("1"),
            };
            tx.send_if_modified(|seen| {
                if seen.get(&candidate.fullname) == Some(&candidate) {
                    return false;
                }
                info!(name = %candidate.fullname, id, addrs = ?candidate.addrs, member = candidate.member,
                    "master candidate on mDNS");
                seen.insert(candidate.fullname.clone(), candidate);
                true
            });
        }
        ServiceEvent::ServiceRemoved(_, name) => {
            tx.send_if_modified(|seen| seen.remove(&name).is_some());
        }
        other => debug!("mDNS (master candidates): {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(addrs: &[&str]) -> Candidate {
        Candidate {
            fullname: "pi-2._bramble-ha._udp.local.".into(),
            id: 2,
            addrs: addrs
                .iter()
                .map(|a| a.parse().expect("an address"))
                .collect(),
            member: false,
        }
    }

    #[test]
    fn a_candidate_is_dialled_on_ipv4_only_once_that_is_known() {
        let v6_so_far = candidate(&["[fd42::c]:5052", "[fe80::1]:5052"]);
        assert_eq!(v6_so_far.addr(), None);
        let both = candidate(&["[fd42::c]:5052", "198.19.2.12:5052"]);
        assert_eq!(both.addr(), Some("198.19.2.12:5052".parse().unwrap()));
    }
}
