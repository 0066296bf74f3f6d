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

use crate::{MDNS_SERVICE_TYPE, PROTOCOL_VERSION};
use mdns_sd::{
    DaemonEvent, IfKind, IfPredicate, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent,
    ServiceInfo,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// TXT key: the cluster id (the CA certificate's fingerprint).
pub const TXT_CLUSTER_ID: &str = "cluster_id";
/// TXT key: the wire protocol version the master speaks.
pub const TXT_VERSION: &str = "version";
/// TXT key: the master's QUIC (UDP) port.
pub const TXT_QUIC: &str = "quic";
/// TXT key: the master's HTTP (TCP) port.
pub const TXT_HTTP: &str = "http";

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

/// One answer from mDNS, reduced to what discovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The instance's full name, e.g. `pi-master._bramble._udp.local.`.
    pub fullname: String,
    pub cluster_id: Option<String>,
    pub version: Option<u32>,
    /// Every address of the instance with the QUIC port, IPv6 link-local ones scoped.
    pub addrs: Vec<SocketAddr>,
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
            Some(e) if same_set(&e.addrs, &s.addrs) => {
                e.confirmed = true;
                Verdict::Ours {
                    new: false,
                    changed: false,
                }
            }
            Some(e) => {
                e.addrs = s.addrs;
                e.changed = now;
                e.failed = None;
                e.confirmed = true;
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
                    },
                );
                Verdict::Ours {
                    new: true,
                    changed: true,
                }
            }
        }
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

    /// Masters of ours, best first: those that have not failed since they last changed,
    /// most recently changed first; then the ones that failed, least recently failed first.
    pub fn candidates(&self) -> Vec<(String, Vec<SocketAddr>)> {
        let mut v: Vec<(&String, &Entry)> = self.ours.iter().collect();
        v.sort_by_key(|(_, e)| match e.failed {
            None => (0, u64::MAX - e.changed),
            Some(f) => (1, f),
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

/// This machine's host name (for the instance name), without a domain.
pub fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().split('.').next().unwrap_or("").to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "bramble-master".to_string())
}

/// A DNS label from `s`: letters, digits and '-', at most 50 characters.
fn dns_label(s: &str) -> String {
    let label: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "bramble".to_string()
    } else {
        label.to_string()
    }
}

/// What the master advertises.
#[derive(Debug, Clone)]
pub struct MasterAdvert {
    /// Instance name, normally the host name.
    pub instance: String,
    pub cluster_id: String,
    /// The bound QUIC address: its port is advertised; an unspecified IPv4 address limits the
    /// advertised addresses to IPv4, a specific one to itself.
    pub quic: SocketAddr,
    pub http_port: u16,
}

/// The master's advertisement; stop it with [`Advertiser::stop`] to say goodbye.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    monitor: JoinHandle<()>,
}

impl Advertiser {
    /// Registers the service. Must run inside a tokio runtime (a task logs renames).
    pub fn start(ad: &MasterAdvert, interfaces: &[String]) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        let instance = ad.instance.replace('.', "-");
        let host = format!("{}-bramble.local.", dns_label(&ad.instance));
        let txt = [
            (TXT_CLUSTER_ID, ad.cluster_id.clone()),
            (TXT_VERSION, PROTOCOL_VERSION.to_string()),
            (TXT_QUIC, ad.quic.port().to_string()),
            (TXT_HTTP, ad.http_port.to_string()),
        ];
        let ip = ad.quic.ip();
        let mut info = if ip.is_unspecified() {
            let info = ServiceInfo::new(
                MDNS_SERVICE_TYPE,
                &instance,
                &host,
                "",
                ad.quic.port(),
                &txt[..],
            )?
            .enable_addr_auto();
            if ip.is_ipv4() {
                // Bound to 0.0.0.0: an IPv6 address would only waste an agent's attempt.
                daemon.disable_interface(IfKind::IPv6)?;
            }
            info
        } else {
            ServiceInfo::new(
                MDNS_SERVICE_TYPE,
                &instance,
                &host,
                ip,
                ad.quic.port(),
                &txt[..],
            )?
        };
        if !ip.is_unspecified() {
            info.set_interfaces(vec![IfKind::Addr(ip)]);
        }
        let fullname = info.get_fullname().to_string();
        let events = daemon.monitor()?;
        daemon.register(info)?;
        info!(
            name = %fullname, cluster_id = %ad.cluster_id, quic = ad.quic.port(), http = ad.http_port,
            interfaces = %describe(interfaces), "advertising the master on mDNS"
        );
        let monitor = tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                match event {
                    DaemonEvent::NameChange(change) => info!(
                        "mDNS name {} is taken on this network: advertising as {} instead",
                        change.original, change.new_name
                    ),
                    DaemonEvent::Error(e) => warn!("mDNS: {e}"),
                    other => debug!("mDNS: {other:?}"),
                }
            }
        });
        Ok(Self {
            daemon,
            fullname,
            monitor,
        })
    }

    /// The full name registered (before any rename on a clash, which is logged).
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Unregisters (mDNS goodbye, so browsers drop us at once) and stops the daemon.
    pub async fn stop(self) {
        let Self {
            daemon,
            fullname,
            monitor,
        } = self;
        let done = tokio::task::spawn_blocking(move || {
            if let Ok(status) = daemon.unregister(&fullname) {
                let _ = status.recv_timeout(Duration::from_secs(2));
            }
            if let Ok(status) = daemon.shutdown() {
                let _ = status.recv_timeout(Duration::from_secs(2));
            }
            fullname
        })
        .await;
        monitor.abort();
        if let Ok(fullname) = done {
            info!(name = %fullname, "mDNS advertisement withdrawn");
        }
    }
}

enum Command {
    /// Re-query now, verifying these instances first.
    Rebrowse(Vec<String>),
}

struct Shared {
    daemon: ServiceDaemon,
    table: watch::Sender<MasterTable>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    interfaces: Vec<String>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

/// A long-lived browse for masters of one cluster. Cheap to clone; the daemon stops when
/// the last clone is dropped. Must be created inside a tokio runtime.
#[derive(Clone)]
pub struct Browser {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("cluster_id", &self.shared.table.borrow().cluster_id())
            .field("interfaces", &self.shared.interfaces)
            .finish()
    }
}

impl Browser {
    pub fn start(cluster_id: &str, interfaces: &[String]) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        let first = daemon.browse(MDNS_SERVICE_TYPE)?;
        let (table, _) = watch::channel(MasterTable::new(cluster_id));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(browse_loop(
            daemon.clone(),
            first,
            table.clone(),
            command_rx,
        ));
        debug!(cluster_id, interfaces = %describe(interfaces), "browsing mDNS for masters");
        Ok(Self {
            shared: Arc::new(Shared {
                daemon,
                table,
                commands,
                task,
                interfaces: interfaces.to_vec(),
            }),
        })
    }

    /// The best master right now, if any.
    pub fn best(&self) -> Option<(String, Vec<SocketAddr>)> {
        self.shared.table.borrow().best()
    }

    /// A snapshot of what is known.
    pub fn table(&self) -> MasterTable {
        self.shared.table.borrow().clone()
    }

    /// Waits until a master of ours is known and returns the best one, querying the network
    /// again now and then while there is none.
    pub async fn wait_for_master(&self) -> Result<(String, Vec<SocketAddr>), DiscoveryError> {
        let mut rx = self.shared.table.subscribe();
        let mut requery = REQUERY_MIN;
        loop {
            if let Some(best) = rx.borrow_and_update().best() {
                return Ok(best);
            }
            match tokio::time::timeout(requery, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(DiscoveryError::Stopped),
                Err(_) => {
                    let _ = self.shared.commands.send(Command::Rebrowse(Vec::new()));
                    requery = (requery * 2).min(REQUERY_MAX);
                }
            }
        }
    }

    /// Dialling `fullname` failed: stop preferring it, ask the network whether it still
    /// exists (mdns-sd flushes it when nobody answers) and browse afresh.
    pub fn failed(&self, fullname: &str) {
        self.shared.table.send_modify(|t| t.failed(fullname));
        let _ = self
            .shared
            .commands
            .send(Command::Rebrowse(vec![fullname.to_string()]));
    }

    /// We lost a master we were connected to: look again right away (it may have moved).
    pub fn lost(&self, fullname: &str) {
        let _ = self
            .shared
            .commands
            .send(Command::Rebrowse(vec![fullname.to_string()]));
    }
}

async fn browse_loop(
    daemon: ServiceDaemon,
    mut events: mdns_sd::Receiver<ServiceEvent>,
    table: watch::Sender<MasterTable>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    loop {
        tokio::select! {
            event = events.recv_async() => match event {
                Ok(event) => handle_event(&table, event),
                // The daemon ended the subscription (e.g. our receiver fell behind): renew.
                Err(_) => match daemon.browse(MDNS_SERVICE_TYPE) {
                    Ok(rx) => events = rx,
                    Err(e) => {
                        warn!("mDNS browse stopped: {e}");
                        return;
                    }
                },
            },
            command = commands.recv() => match command {
                Some(Command::Rebrowse(verify)) => {
                    for name in verify {
                        let _ = daemon.verify(name, VERIFY_TIMEOUT);
                    }
                    let _ = daemon.stop_browse(MDNS_SERVICE_TYPE);
                    events = match daemon.browse(MDNS_SERVICE_TYPE) {
                        Ok(rx) => rx,
                        Err(e) => {
                            warn!("mDNS browse stopped: {e}");
                            return;
                        }
                    };
                    resync(&daemon, &events, &table).await;
                }
                None => return,
            },
        }
    }
}

/// After a fresh browse: the daemon replays its cache into `events` while handling the browse
/// command. A status request queued behind it is answered once that is done, so everything
/// the replay produced is then already in `events`; whatever it did not mention is gone.
async fn resync(
    daemon: &ServiceDaemon,
    events: &mdns_sd::Receiver<ServiceEvent>,
    table: &watch::Sender<MasterTable>,
) {
    let Ok(status) = daemon.status() else {
        return;
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await,
        Ok(Ok(_))
    ) {
        return;
    }
    table.send_modify(MasterTable::begin_sync);
    while let Ok(event) = events.try_recv() {
        handle_event(table, event);
    }
    let mut gone = Vec::new();
    table.send_if_modified(|t| {
        gone = t.end_sync();
        !gone.is_empty()
    });
    for name in gone {
        info!(master = %name, "master no longer on mDNS");
    }
}

fn handle_event(table: &watch::Sender<MasterTable>, event: ServiceEvent) {
    match event {
        ServiceEvent::ServiceResolved(service) => {
            let sighting = Sighting::from_resolved(&service);
            let name = sighting.fullname.clone();
            let addrs = sighting.addrs.clone();
            let mut verdict = Verdict::Incomplete;
            table.send_if_modified(|t| {
                verdict = t.resolved(sighting);
                matches!(verdict, Verdict::Ours { changed: true, .. })
            });
            match verdict {
                Verdict::Ours { new: true, .. } => {
                    info!(master = %name, addrs = ?addrs, "found a master of this cluster on mDNS")
                }
                Verdict::Ours { changed: true, .. } => {
                    info!(master = %name, addrs = ?addrs, "master's addresses changed on mDNS")
                }
                Verdict::Ours { .. } | Verdict::Incomplete => {}
                Verdict::Stranger {
                    cluster_id,
                    first: true,
                } => info!("ignoring master {name} of another cluster (cluster_id {cluster_id})"),
                Verdict::WrongVersion {
                    version,
                    first: true,
                } => warn!(
                    "ignoring master {name}: it speaks protocol version {}, this node {PROTOCOL_VERSION}",
                    version.map_or("unknown".to_string(), |v| v.to_string())
                ),
                Verdict::Stranger { .. } | Verdict::WrongVersion { .. } => {}
            }
        }
        ServiceEvent::ServiceRemoved(_, name) => {
            if table.send_if_modified(|t| t.removed(&name)) {
                info!(master = %name, "master withdrawn from mDNS");
            }
        }
        other => debug!("mDNS: {other:?}"),
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
) -> Result<(quinn::Connection, SocketAddr), String> {
    if addrs.is_empty() {
        return Err("no address to dial".to_string());
    }
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
                Some(Ok((addr, Err(e)))) => errors.push(format!("{addr}: {e}")),
                Some(Err(e)) => errors.push(e.to_string()),
                None => {}
            },
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "ab12";

    fn sighting(name: &str, cluster: Option<&str>, addrs: &[&str]) -> Sighting {
        Sighting {
            fullname: format!("{name}._bramble._udp.local."),
            cluster_id: cluster.map(str::to_string),
            version: Some(PROTOCOL_VERSION),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn full(name: &str) -> String {
        format!("{name}._bramble._udp.local.")
    }

    #[test]
    fn a_master_of_another_cluster_is_ignored_and_noted_once() {
        let mut t = MasterTable::new(OURS);
        let s = sighting("other", Some("ff00"), &["10.0.0.9:5051"]);
        assert_eq!(
            t.resolved(s.clone()),
            Verdict::Stranger {
                cluster_id: "ff00".into(),
                first: true
            }
        );
        assert_eq!(
            t.resolved(s),
            Verdict::Stranger {
                cluster_id: "ff00".into(),
                first: false
            }
        );
        assert_eq!(t.best(), None);
        assert_eq!(
            t.strangers(),
            vec!["other._bramble._udp.local. (ff00)".to_string()]
        );
    }

    #[test]
    fn answers_without_cluster_id_or_address_or_with_another_version_are_not_used() {
        let mut t = MasterTable::new(OURS);
        assert_eq!(
            t.resolved(sighting("m", None, &["10.0.0.1:5051"])),
            Verdict::Incomplete
        );
        assert_eq!(
            t.resolved(sighting("m", Some(OURS), &[])),
            Verdict::Incomplete
        );
        let mut old = sighting("m", Some(OURS), &["10.0.0.1:5051"]);
        old.version = Some(PROTOCOL_VERSION + 1);
        assert!(matches!(
            t.resolved(old),
            Verdict::WrongVersion { first: true, .. }
        ));
        assert_eq!(t.best(), None);
    }

    #[test]
    fn the_most_recently_changed_master_comes_first() {
        let mut t = MasterTable::new(OURS);
        t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
        t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"]));
        assert_eq!(t.best().unwrap().0, full("b"));
        // "a" moved: its new address is the freshest news.
        assert_eq!(
            t.resolved(sighting("a", Some(OURS), &["10.0.0.3:5051"])),
            Verdict::Ours {
                new: false,
                changed: true
            }
        );
        assert_eq!(
            t.best(),
            Some((full("a"), vec!["10.0.0.3:5051".parse().unwrap()]))
        );
    }

    #[test]
    fn a_failed_master_drops_back_until_its_addresses_change() {
        let mut t = MasterTable::new(OURS);
        t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
        t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"]));
        t.failed(&full("b"));
        assert_eq!(t.best().unwrap().0, full("a"));
        // A cache replay of the same answer does not make it fresh again.
        assert_eq!(
            t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"])),
            Verdict::Ours {
                new: false,
                changed: false
            }
        );
        assert_eq!(t.best().unwrap().0, full("a"));
        // Both failed: the one that failed longest ago is retried first.
        t.failed(&full("a"));
        assert_eq!(t.best().unwrap().0, full("b"));
        // "b" re-announced on a new address: first again.
        t.resolved(sighting(
            "b",
            Some(OURS),
            &["10.0.0.7:5051", "[fd00::7]:5051"],
        ));
        assert_eq!(t.best().unwrap().1.len(), 2);
        assert_eq!(t.best().unwrap().0, full("b"));
    }

    #[test]
    fn a_removed_master_is_forgotten_and_a_stranger_reusing_a_name_replaces_it() {
        let mut t = MasterTable::new(OURS);
        t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
        assert!(t.removed(&full("a")));
        assert!(!t.removed(&full("a")));
        assert_eq!(t.best(), None);
        t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
        t.resolved(sighting("a", Some("ff00"), &["10.0.0.1:5051"]));
        assert_eq!(t.best(), None);
    }

    #[test]
    fn a_resync_drops_what_the_cache_replay_did_not_mention() {
        let mut t = MasterTable::new(OURS);
        t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
        t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"]));
        t.begin_sync();
        t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"]));
        assert_eq!(t.end_sync(), vec![full("a")]);
        assert_eq!(t.candidates().len(), 1);
        t.begin_sync();
        assert_eq!(t.end_sync(), vec![full("b")]);
        assert_eq!(t.best(), None);
    }

    #[test]
    fn discovery_config_refuses_impossible_interface_names() {
        assert!(DiscoveryConfig::default().validate().is_ok());
        let ok = DiscoveryConfig {
            interfaces: vec!["eth0".into(), "wlan0".into()],
        };
        assert!(ok.validate().is_ok());
        for bad in ["", "a/b", "averyverylongname0", "e th0"] {
            let c = DiscoveryConfig {
                interfaces: vec![bad.into()],
            };
            assert_eq!(
                c.validate().unwrap_err().0,
                "discovery.interfaces",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn labels_and_hostnames_are_usable_in_dns() {
        assert_eq!(dns_label("pi-master"), "pi-master");
        assert_eq!(dns_label("my_pi.lan"), "my-pi-lan");
        assert_eq!(dns_label("__"), "bramble");
        assert!(!local_hostname().is_empty());
    }
}
