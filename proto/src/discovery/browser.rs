//! The edge around the [`MasterTable`]: one mdns-sd daemon and one tokio task that feeds the
//! table. When a cached answer stops working the caller says so ([`Browser::failed`]); the
//! browser then asks the network to confirm that record (flushing it when nobody answers)
//! and starts a fresh browse, so a master that moved is found by its new announcement.

use super::{
    daemon, describe, DiscoveryError, MasterTable, Sighting, Verdict, REQUERY_MAX, REQUERY_MIN,
    VERIFY_TIMEOUT,
};
use crate::{MDNS_SERVICE_TYPE, PROTOCOL_VERSION};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

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
            let (role, term) = (sighting.role, sighting.term);
            let role_name = role.txt().unwrap_or("single");
            let mut verdict = Verdict::Incomplete;
            let mut before = None;
            table.send_if_modified(|t| {
                before = t.role(&name);
                verdict = t.resolved(sighting);
                matches!(verdict, Verdict::Ours { changed: true, .. })
            });
            match verdict {
                Verdict::Ours { new: true, .. } => {
                    info!(master = %name, addrs = ?addrs, role = role_name, term,
                        "found a master of this cluster on mDNS")
                }
                Verdict::Ours { changed: true, .. } if before.is_some_and(|b| b != (role, term)) => {
                    info!(master = %name, addrs = ?addrs, role = role_name, term,
                        "master's role changed on mDNS")
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
