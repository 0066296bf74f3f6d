//! Advertising other machines' services: the master announces each healthy instance of the
//! service framework's services (`NAME._http._tcp.local.`, SRV target `NAME.local.` with the
//! instance's agent's address), so a phone on the same Wi-Fi finds them without DNS. Which
//! instances and under which names is the master's business (`master/src/service_adverts.rs`);
//! this is only the mdns-sd side: register, withdraw (an mDNS goodbye, so browsers drop the
//! instance at once) and stop.

use super::{daemon, describe, DiscoveryError};
use mdns_sd::{ServiceDaemon, ServiceInfo};
use std::net::IpAddr;
use std::time::Duration;
use tracing::{debug, info};

/// One advertised instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAdvert {
    /// The instance name: `web`, `web-2`, …
    pub instance: String,
    /// The service type without the domain: `_http._tcp`.
    pub service_type: String,
    /// Its address; `None`: this machine's own (an instance on the master's node, whose agent
    /// the master sees on loopback).
    pub address: Option<IpAddr>,
    pub port: u16,
    /// TXT properties.
    pub txt: Vec<(String, String)>,
}

impl ServiceAdvert {
    /// `web._http._tcp.local.`
    pub fn fullname(&self) -> String {
        format!("{}.{}.local.", self.instance, self.service_type)
    }

    fn info(&self) -> Result<ServiceInfo, DiscoveryError> {
        let ty = format!("{}.local.", self.service_type);
        let host = format!("{}.local.", self.instance);
        let txt: Vec<(&str, &str)> = self
            .txt
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(match self.address {
            Some(ip) => ServiceInfo::new(&ty, &self.instance, &host, ip, self.port, &txt[..])?,
            None => ServiceInfo::new(&ty, &self.instance, &host, "", self.port, &txt[..])?
                .enable_addr_auto(),
        })
    }
}

/// The master's adverts of service instances, on their own mdns-sd daemon.
pub struct ServiceAdverts {
    daemon: ServiceDaemon,
}

impl ServiceAdverts {
    pub fn start(interfaces: &[String]) -> Result<Self, DiscoveryError> {
        let daemon = daemon(interfaces)?;
        info!(interfaces = %describe(interfaces), "advertising healthy service instances on mDNS");
        Ok(Self { daemon })
    }

    /// Announces `ad` (replacing an advert of the same full name).
    pub fn register(&self, ad: &ServiceAdvert) -> Result<(), DiscoveryError> {
        let info = ad.info()?;
        debug!(name = %ad.fullname(), address = ?ad.address, port = ad.port, "advertising a service instance");
        self.daemon.register(info)?;
        Ok(())
    }

    /// Withdraws `fullname` with a goodbye; does not wait for it to be sent.
    pub fn unregister(&self, fullname: &str) -> Result<(), DiscoveryError> {
        debug!(name = %fullname, "withdrawing a service instance");
        self.daemon.unregister(fullname)?;
        Ok(())
    }

    /// Withdraws everything (goodbyes) and stops the daemon.
    pub async fn stop(self, fullnames: Vec<String>) {
        let daemon = self.daemon;
        let _ = tokio::task::spawn_blocking(move || {
            for name in fullnames {
                if let Ok(status) = daemon.unregister(&name) {
                    let _ = status.recv_timeout(Duration::from_secs(2));
                }
            }
            if let Ok(status) = daemon.shutdown() {
                let _ = status.recv_timeout(Duration::from_secs(2));
            }
        })
        .await;
    }
}
