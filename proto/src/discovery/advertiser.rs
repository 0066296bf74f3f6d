//! The master's side of discovery: registering `_bramble._udp.local.` once the QUIC endpoint
//! is bound, logging the name actually used (mdns-sd renames on a clash), and saying goodbye
//! on stop. Also the names it advertises under.

use super::{
    daemon, describe, DiscoveryError, MasterRole, TXT_CLUSTER_ID, TXT_HTTP, TXT_QUIC, TXT_ROLE,
    TXT_TERM, TXT_VERSION,
};
use crate::{MDNS_SERVICE_TYPE, PROTOCOL_VERSION};
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// What the master advertises.
#[derive(Debug, Clone)]
pub struct MasterAdvert {
    /// Instance name, normally the host name.
    pub instance: String,
    pub cluster_id: String,
    /// The bound QUIC address: its port is advertised; an unspecified IPv4 address limits the
    /// advertised addresses to IPv4, a specific one to itself.
    pub quic: SocketAddr,
    /// The HTTP API's port, `None` when the master is not serving it (its port was taken):
    /// then no port is advertised, rather than another process's.
    pub http_port: Option<u16>,
}

impl MasterAdvert {
    /// The TXT record: cluster id, protocol version, QUIC port, the HTTP port if served, and
    /// a replicated master's role and term (nothing for a single master: as before roles).
    fn txt_as(&self, role: MasterRole, term: u64) -> Vec<(&'static str, String)> {
        let mut txt = self.txt();
        if let Some(name) = role.txt() {
            txt.push((TXT_ROLE, name.to_string()));
            txt.push((TXT_TERM, term.to_string()));
        }
        txt
    }

    /// The TXT record of a single master.
    fn txt(&self) -> Vec<(&'static str, String)> {
        let mut txt = vec![
            (TXT_CLUSTER_ID, self.cluster_id.clone()),
            (TXT_VERSION, PROTOCOL_VERSION.to_string()),
            (TXT_QUIC, self.quic.port().to_string()),
        ];
        if let Some(port) = self.http_port {
            txt.push((TXT_HTTP, port.to_string()));
        }
        txt
    }
}

/// The master's advertisement; stop it with [`Advertiser::stop`] to say goodbye.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
    monitor: JoinHandle<()>,
    /// What was advertised, to re-announce it with another role.
    advert: MasterAdvert,
}

impl Advertiser {
    /// Registers the service as a single master. Must run inside a tokio runtime (a task
    /// logs renames).
    pub fn start(ad: &MasterAdvert, interfaces: &[String]) -> Result<Self, DiscoveryError> {
        Self::start_as(ad, interfaces, MasterRole::Single, 0)
    }

    /// Registers the service as a master in `role` of a replicated group, in Raft term
    /// `term` (ignored for [`MasterRole::Single`]).
    pub fn start_as(
        ad: &MasterAdvert,
        interfaces: &[String],
        role: MasterRole,
        term: u64,
    ) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        let info = service_info(ad, role, term)?;
        if ad.quic.ip().is_unspecified() && ad.quic.is_ipv4() {
            // Bound to 0.0.0.0: an IPv6 address would only waste an agent's attempt.
            daemon.disable_interface(IfKind::IPv6)?;
        }
        let fullname = info.get_fullname().to_string();
        let events = daemon.monitor()?;
        daemon.register(info)?;
        info!(
            name = %fullname, cluster_id = %ad.cluster_id, quic = ad.quic.port(), http = ?ad.http_port,
            role = role.txt().unwrap_or("single"), term,
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
            advert: ad.clone(),
        })
    }

    /// Re-announces the advertisement with this master's new `role` and `term` (a standby
    /// elected leader, a leader stepping down): browsers see the change at once, without
    /// a goodbye in between.
    pub fn set_role(&self, role: MasterRole, term: u64) -> Result<(), DiscoveryError> {
        let info = service_info(&self.advert, role, term)?;
        self.daemon.register(info)?;
        info!(name = %self.fullname, role = role.txt().unwrap_or("single"), term,
            "mDNS advertisement updated");
        Ok(())
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
            ..
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

/// The service record for `ad` as a master in `role`, in `term`.
fn service_info(
    ad: &MasterAdvert,
    role: MasterRole,
    term: u64,
) -> Result<ServiceInfo, DiscoveryError> {
    let instance = ad.instance.replace('.', "-");
    let host = format!("{}-bramble.local.", dns_label(&ad.instance));
    let txt = ad.txt_as(role, term);
    let ip = ad.quic.ip();
    let info = if ip.is_unspecified() {
        ServiceInfo::new(
            MDNS_SERVICE_TYPE,
            &instance,
            &host,
            "",
            ad.quic.port(),
            &txt[..],
        )?
        .enable_addr_auto()
    } else {
        let mut info = ServiceInfo::new(
            MDNS_SERVICE_TYPE,
            &instance,
            &host,
            ip,
            ad.quic.port(),
            &txt[..],
        )?;
        info.set_interfaces(vec![IfKind::Addr(ip)]);
        info
    };
    Ok(info)
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
pub(super) fn dns_label(s: &str) -> String {
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

#[cfg(test)]
mod txt_tests {
    use super::*;

    fn advert(http_port: Option<u16>) -> MasterAdvert {
        MasterAdvert {
            instance: "pi".into(),
            cluster_id: "abc".into(),
            quic: SocketAddr::from(([127, 0, 0, 1], 5051)),
            http_port,
        }
    }

    #[test]
    fn a_served_http_port_is_advertised() {
        let txt = advert(Some(5050)).txt();
        assert!(txt.contains(&(TXT_HTTP, "5050".to_string())), "{txt:?}");
        assert!(txt.contains(&(TXT_QUIC, "5051".to_string())), "{txt:?}");
    }

    #[test]
    fn a_single_master_advertises_no_role_and_a_replicated_one_its_role_and_term() {
        let single = advert(None).txt_as(MasterRole::Single, 9);
        assert_eq!(single, advert(None).txt());
        assert!(single.iter().all(|(k, _)| *k != TXT_ROLE && *k != TXT_TERM));
        let leader = advert(None).txt_as(MasterRole::Leader, 7);
        assert!(
            leader.contains(&(TXT_ROLE, "leader".to_string())),
            "{leader:?}"
        );
        assert!(leader.contains(&(TXT_TERM, "7".to_string())), "{leader:?}");
        let standby = advert(None).txt_as(MasterRole::Standby, 7);
        assert!(
            standby.contains(&(TXT_ROLE, "standby".to_string())),
            "{standby:?}"
        );
    }

    #[test]
    fn no_http_port_is_advertised_when_the_master_serves_none() {
        let txt = advert(None).txt();
        assert!(txt.iter().all(|(k, _)| *k != TXT_HTTP), "{txt:?}");
        assert!(
            txt.contains(&(TXT_CLUSTER_ID, "abc".to_string())),
            "{txt:?}"
        );
    }
}
