//! The pure core of discovery: what mDNS said, reduced to [`Sighting`]s, and the
//! [`MasterTable`] that decides which masters are ours, which are strangers (noted once each),
//! and which to dial first. No I/O, so every rule is unit-tested without a network.

use super::{MasterRole, TXT_CLUSTER_ID, TXT_QUIC, TXT_ROLE, TXT_TERM, TXT_VERSION};
use crate::PROTOCOL_VERSION;
use mdns_sd::{ResolvedService, ScopedIp};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

/// One answer from mDNS, reduced to what discovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The instance's full name, e.g. `pi-master._bramble._udp.local.`.
    pub fullname: String,
    pub cluster_id: Option<String>,
    pub version: Option<u32>,
    /// Every address of the instance with the QUIC port, IPv6 link-local ones scoped.
    pub addrs: Vec<SocketAddr>,
    /// TXT `role`: [`MasterRole::Single`] when absent (older masters, no `[ha]`).
    pub role: MasterRole,
    /// TXT `term`: the Raft term of the role; 0 when absent or unreadable.
    pub term: u64,
}

impl Sighting {
    /// Reads a resolved service: the QUIC port from TXT (falling back to the SRV port).
    pub fn from_resolved(service: &ResolvedService) -> Self {
        let port = service
            .get_property_val_str(TXT_QUIC)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .unwrap_or(service.get_port());
        let mut addrs: Vec<SocketAddr> = service
            .get_addresses()
            .iter()
            .map(|ip| socket_addr(ip, port))
            .collect();
        // IPv4 first, then global IPv6, then link-local: the order connections start in.
        addrs.sort_by_key(|a| (a.is_ipv6(), a.ip().is_ipv6() && is_link_local(a.ip()), *a));
        addrs.dedup();
        Self {
            fullname: service.get_fullname().to_string(),
            cluster_id: service
                .get_property_val_str(TXT_CLUSTER_ID)
                .map(str::to_string),
            version: service
                .get_property_val_str(TXT_VERSION)
                .and_then(|v| v.parse().ok()),
            addrs,
            role: MasterRole::from_txt(service.get_property_val_str(TXT_ROLE)),
            term: service
                .get_property_val_str(TXT_TERM)
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        }
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn socket_addr(ip: &ScopedIp, port: u16) -> SocketAddr {
    match ip {
        ScopedIp::V6(v6) if is_link_local(IpAddr::V6(*v6.addr())) => {
            SocketAddr::V6(SocketAddrV6::new(*v6.addr(), port, 0, v6.scope_id().index))
        }
        other => SocketAddr::new(other.to_ip_addr(), port),
    }
}

/// What the table made of a sighting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A master of our cluster; `new` the first time, `changed` when its addresses are news.
    Ours { new: bool, changed: bool },
    /// A master of another cluster; `first` the first time this one is seen.
    Stranger { cluster_id: String, first: bool },
    /// Ours by cluster id but speaking another protocol version.
    WrongVersion { version: Option<u32>, first: bool },
    /// No cluster id, or no address: not usable (yet).
    Incomplete,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<SocketAddr>,
    /// When (in table events) the addresses last changed.
    changed: u64,
    /// When they last failed us, if since then they have not changed.
    failed: Option<u64>,
    /// Seen again since the last [`MasterTable::begin_sync`].
    confirmed: bool,
    role: MasterRole,
    term: u64,
}

/// The masters mDNS told us about, for one cluster. Pure: see the module header.
#[derive(Debug, Clone)]
pub struct MasterTable {
    cluster_id: String,
    ours: BTreeMap<String, Entry>,
    /// (fullname, cluster id or version) already logged about.
    noted: HashSet<(String, String)>,
    clock: u64,
}

impl MasterTable {
    pub fn new(cluster_id: &str) -> Self {
        Self {
            cluster_id: cluster_id.to_string(),
            ours: BTreeMap::new(),
            noted: HashSet::new(),
            clock: 0,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Takes in a resolved (or re-resolved) instance.
    pub fn resolved(&mut self, s: Sighting) -> Verdict {
        self.clock += 1;
        let Some(cluster_id) = s.cluster_id.clone() else {
            return Verdict::Incomplete;
        };
        if cluster_id != self.cluster_id {
            // A stranger that reuses a name we thought was ours replaces it.
            self.ours.remove(&s.fullname);
            let first = self.noted.insert((s.fullname, cluster_id.clone()));
            return Verdict::Stranger { cluster_id, first };
        }
        if s.version != Some(PROTOCOL_VERSION) {
            self.ours.remove(&s.fullname);
            let key = (s.fullname, format!("version {:?}", s.version));
            let first = self.noted.insert(key);
            return Verdict::WrongVersion {
                version: s.version,
                first,
            };
        }
        if s.addrs.is_empty() {
            return Verdict::Incomplete;
        }
        let now = self.clock;
        match self.ours.get_mut(&s.fullname) {
            // The same answer again (a cache replay, a periodic refresh) is not news: it
            // must not make an answer that just failed look fresh.
            Some(e) if same_set(&e.addrs, &s.addrs) && (e.role, e.term) == (s.role, s.term) => {
                e.confirmed = true;
                Verdict::Ours {
                    new: false,
                    changed: false,
                }
            }
            // New addresses, or a new role or term (a standby elected leader): news, and
            // a failure before it no longer counts.
            Some(e) => {
                e.addrs = s.addrs;
                e.changed = now;
                e.failed = None;
                e.confirmed = true;
                e.role = s.role;
                e.term = s.term;
                Verdict::Ours {
                    new: false,
                    changed: true,
                }
            }
            None => {
                self.ours.insert(
                    s.fullname,
                    Entry {
                        addrs: s.addrs,
                        changed: now,
                        failed: None,
                        confirmed: true,
                        role: s.role,
                        term: s.term,
                    },
                );
                Verdict::Ours {
                    new: true,
                    changed: true,
                }
            }
        }
    }

    /// The role and term `fullname` advertises, if it is a master of ours.
    pub fn role(&self, fullname: &str) -> Option<(MasterRole, u64)> {
        self.ours.get(fullname).map(|e| (e.role, e.term))
    }

    /// The instance said goodbye, or its records expired or failed verification.
    pub fn removed(&mut self, fullname: &str) -> bool {
        self.clock += 1;
        self.ours.remove(fullname).is_some()
    }

    /// A fresh browse is about to replay what the mDNS cache holds: entries not replayed
    /// before [`MasterTable::end_sync`] are gone (their removal may have been reported to the
    /// browse that was replaced).
    pub fn begin_sync(&mut self) {
        for e in self.ours.values_mut() {
            e.confirmed = false;
        }
    }

    /// Drops the entries the replay did not confirm; returns their names.
    pub fn end_sync(&mut self) -> Vec<String> {
        let gone: Vec<String> = self
            .ours
            .iter()
            .filter(|(_, e)| !e.confirmed)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            self.ours.remove(name);
        }
        gone
    }

    /// Dialling every address of `fullname` failed.
    pub fn failed(&mut self, fullname: &str) {
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self.ours.get_mut(fullname) {
            e.failed = Some(now);
        }
    }

    /// Masters of ours, best first: a replicated group's advertised leaders, highest term
    /// first (an old leader that has not said goodbye yet advertises a lower term); then
    /// single masters; then standbys, so a standby is never the best while a leader is
    /// known. Within each: those that have not failed since they last changed, most recently
    /// changed first; then the ones that failed, least recently failed first.
    pub fn candidates(&self) -> Vec<(String, Vec<SocketAddr>)> {
        let mut v: Vec<(&String, &Entry)> = self.ours.iter().collect();
        v.sort_by_key(|(_, e)| {
            let (rank, term) = match e.role {
                MasterRole::Leader => (0, u64::MAX - e.term),
                MasterRole::Single => (1, 0),
                MasterRole::Standby => (2, 0),
            };
            let freshness = match e.failed {
                None => (0, u64::MAX - e.changed),
                Some(f) => (1, f),
            };
            (rank, term, freshness)
        });
        v.into_iter()
            .map(|(name, e)| (name.clone(), e.addrs.clone()))
            .collect()
    }

    /// The best candidate, if any.
    pub fn best(&self) -> Option<(String, Vec<SocketAddr>)> {
        self.candidates().into_iter().next()
    }

    /// Strangers seen so far, as `fullname (cluster id)`.
    pub fn strangers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .noted
            .iter()
            .filter(|(_, id)| !id.starts_with("version "))
            .map(|(name, id)| format!("{name} ({id})"))
            .collect();
        v.sort();
        v
    }
}

fn same_set(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
