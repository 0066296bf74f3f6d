//! Which master to dial next, as the link asks before every attempt: configured masters
//! (one or several, through `bramble_proto::masters`) resolved afresh, or mDNS's answer, and
//! a standby's redirect to the leader followed; the other masters to ask who leads when the
//! leader goes quiet (`leader_probe`).

use super::leader_probe::OtherMaster;
use super::{MasterLocator, DISCOVERED_DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, STILL_LOOKING_EVERY};
use bramble_proto::discovery::Browser;
use bramble_proto::masters::{MasterList, Wait, MAX_REDIRECTS};
use std::net::SocketAddr;
use std::time::Duration;
use tracing::info;

/// Where to dial this attempt.
pub(super) struct Target {
    /// The mDNS instance, when discovered.
    pub(super) instance: Option<String>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) dial_timeout: Duration,
}

/// The locator at run time: the mDNS browser lives as long as the link.
pub(super) enum Resolver {
    /// Configured masters (one or several) and where the agent stands among them.
    Static(MasterList<String>),
    Mdns {
        cluster_id: String,
        interfaces: Vec<String>,
        browser: Option<Browser>,
        /// A leader a standby named: dialled next instead of asking the browser.
        follow: Option<String>,
        /// Redirects followed in a row.
        redirects: u32,
    },
}

impl Resolver {
    pub(super) fn new(locator: MasterLocator) -> Self {
        let list = |masters: Vec<String>| {
            // The config refuses an empty list; an empty one here would be a caller's bug,
            // dialled as a name that says so.
            MasterList::new(masters)
                .unwrap_or_else(|| MasterList::single("no-master-configured:0".into()))
        };
        match locator {
            MasterLocator::Static(hostport) => Resolver::Static(list(vec![hostport])),
            MasterLocator::Several(masters) => Resolver::Static(list(masters)),
            MasterLocator::Discover {
                cluster_id,
                interfaces,
            } => Resolver::Mdns {
                cluster_id,
                interfaces,
                browser: None,
                follow: None,
                redirects: 0,
            },
        }
    }

    pub(super) async fn resolve(&mut self) -> Result<Target, String> {
        match self {
            Resolver::Static(masters) => {
                // A dead master of several is given less time: the next one may be the leader.
                let dial_timeout = if masters.several() {
                    DISCOVERED_DIAL_TIMEOUT
                } else {
                    HANDSHAKE_TIMEOUT
                };
                resolve_hostport(masters.current(), dial_timeout).await
            }
            Resolver::Mdns {
                cluster_id,
                interfaces,
                browser,
                follow,
                ..
            } => {
                if let Some(leader) = follow.take() {
                    return resolve_hostport(&leader, DISCOVERED_DIAL_TIMEOUT).await;
                }
                let browser = match browser {
                    Some(b) => b,
                    None => {
                        let b = Browser::start(cluster_id, interfaces)
                            .map_err(|e| format!("starting the mDNS browser: {e}"))?;
                        info!(cluster_id = %cluster_id, interfaces = ?interfaces,
                            "no master configured: looking for one on mDNS");
                        browser.insert(b)
                    }
                };
                let (instance, addrs) = loop {
                    match tokio::time::timeout(STILL_LOOKING_EVERY, browser.wait_for_master()).await
                    {
                        Ok(found) => break found.map_err(|e| e.to_string())?,
                        Err(_) => {
                            let strangers = browser.table().strangers();
                            info!(cluster_id = %cluster_id, ?strangers,
                                "still no master of this cluster on mDNS");
                        }
                    }
                };
                Ok(Target {
                    instance: Some(instance),
                    addrs,
                    dial_timeout: DISCOVERED_DIAL_TIMEOUT,
                })
            }
        }
    }

    /// Dialling `instance` failed, or a link to it ended.
    pub(super) fn report(&self, instance: &Option<String>, dial_failed: bool) {
        if let (
            Resolver::Mdns {
                browser: Some(b), ..
            },
            Some(name),
        ) = (self, instance)
        {
            if dial_failed {
                b.failed(name);
            } else {
                b.lost(name);
            }
        }
    }

    /// Whether there are other masters to try (several configured, or mDNS).
    pub(super) fn several(&self) -> bool {
        match self {
            Resolver::Static(masters) => masters.several(),
            Resolver::Mdns { .. } => true,
        }
    }

    /// The master dialled welcomed us.
    pub(super) fn welcomed(&mut self) {
        match self {
            Resolver::Static(masters) => masters.welcomed(),
            Resolver::Mdns { redirects, .. } => *redirects = 0,
        }
    }

    /// The masters of a replicated group, to ask who leads when ours goes quiet or before
    /// dialling (`leader_probe`): the configured ones, or those mDNS has seen. Empty for one
    /// master.
    pub(super) fn others(&self) -> Vec<OtherMaster> {
        match self {
            Resolver::Static(masters) if masters.several() => masters
                .configured()
                .iter()
                .cloned()
                .map(OtherMaster::Configured)
                .collect(),
            Resolver::Static(_) => Vec::new(),
            Resolver::Mdns {
                browser: Some(b), ..
            } => b
                .table()
                .candidates()
                .into_iter()
                .map(|(_, addrs)| OtherMaster::Seen(addrs))
                .collect(),
            Resolver::Mdns { browser: None, .. } => Vec::new(),
        }
    }

    /// The master dialled is a standby naming the leader at `leader` (`HOST:PORT`), or the
    /// leader moved there: `Some(Wait::Now)` when the redirect is followed, `None` after too
    /// many in a row (then the backoff, and the next master).
    pub(super) fn redirected(&mut self, leader: &str) -> Option<Wait> {
        let leader = leader.to_string();
        match self {
            Resolver::Static(masters) => masters.redirected(leader),
            Resolver::Mdns {
                follow, redirects, ..
            } => {
                if *redirects >= MAX_REDIRECTS {
                    *redirects = 0;
                    *follow = None;
                    return None;
                }
                *redirects += 1;
                *follow = Some(leader);
                Some(Wait::Now)
            }
        }
    }

    /// The master dialled did not take us in (no answer, the link ended, refused): how long
    /// to wait before the next one.
    pub(super) fn failed(&mut self) -> Wait {
        match self {
            Resolver::Static(masters) => masters.failed(),
            Resolver::Mdns { .. } => Wait::Backoff,
        }
    }

    /// Asking the masters found the leader at `leader` (`HOST:PORT`): dial it next. Configured
    /// masters count it as a redirect, so masters naming each other in a loop still end in the
    /// rotation; with mDNS it is followed once and the browser is asked after.
    pub(super) fn leader_found(&mut self, leader: &str) {
        match self {
            Resolver::Static(masters) => {
                let _ = masters.redirected(leader.to_string());
            }
            Resolver::Mdns { follow, .. } => *follow = Some(leader.to_string()),
        }
    }

    /// The master dialled is a standby that knows no leader yet: an election is under way.
    pub(super) fn no_leader_yet(&mut self) -> Wait {
        match self {
            Resolver::Static(masters) => masters.no_leader_yet(),
            Resolver::Mdns { .. } => Wait::Backoff,
        }
    }

    /// The link to the master that had welcomed us ended: the other masters first, it last
    /// ([`MasterList::lost`]).
    pub(super) fn lost(&mut self) {
        if let Resolver::Static(masters) = self {
            masters.lost();
        }
    }
}

/// A configured or redirected-to `host:port`, resolved now (DNS may change).
async fn resolve_hostport(hostport: &str, dial_timeout: Duration) -> Result<Target, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| format!("resolving {hostport}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{hostport} resolves to no address"));
    }
    Ok(Target {
        instance: None,
        addrs,
        dial_timeout,
    })
}
