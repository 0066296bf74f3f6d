//! The healthy instances of the service framework's services, advertised on mDNS: service
//! `web` with three healthy instances becomes `web._http._tcp.local.`, `web-2…` and `web-3…`
//! (or the spec's `service_type`), each with its agent's address and its first port, and an
//! instance that is condemned by its checks, ends or is lost is withdrawn with an mDNS
//! goodbye. "Healthy" is what `bramble service endpoints` lists ([`Health::serving`]): an
//! instance that passed its checks stays advertised through a failure or two, until the
//! scheduler's `max_failures` condemn it, so one slow answer does not make it flap.
//!
//! [`Names`] is the pure core: it turns the feed's services view into adverts and keeps each
//! instance's name for as long as it stays healthy (the instance called `web` keeps that name
//! when `web-2` dies; a new instance takes the lowest free number). [`start`] is the edge: a
//! task that watches the view and registers or withdraws the difference through
//! `bramble_proto::discovery::ServiceAdverts`. Like the master's own advert, this only says
//! where an instance might be; its health is the service scheduler's checks'.

use crate::state::services::ServicesView;
use bramble_proto::discovery::{ServiceAdvert, ServiceAdverts};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Instance names per service, kept while the instances stay healthy.
#[derive(Debug, Default)]
pub struct Names {
    /// (service, task id) → number (1 is the bare name).
    numbers: HashMap<(String, String), u32>,
}

impl Names {
    /// The adverts for `view`, by full name.
    pub fn adverts(&mut self, view: &ServicesView) -> BTreeMap<String, ServiceAdvert> {
        let healthy: Vec<_> = view
            .services
            .iter()
            .flat_map(|s| s.instances.iter().map(move |i| (s, i)))
            .filter(|(_, i)| i.health.serving() && !i.ports.is_empty())
            .collect();
        // Names of instances no longer serving are free again.
        self.numbers.retain(|(service, task), _| {
            healthy
                .iter()
                .any(|(s, i)| &s.name == service && &i.task_id == task)
        });
        let mut out = BTreeMap::new();
        for (s, i) in healthy {
            let key = (s.name.clone(), i.task_id.clone());
            let n = match self.numbers.get(&key) {
                Some(n) => *n,
                None => {
                    let n = (1..)
                        .find(|n| {
                            !self
                                .numbers
                                .iter()
                                .any(|((service, _), m)| service == &s.name && m == n)
                        })
                        .unwrap_or(1);
                    self.numbers.insert(key, n);
                    n
                }
            };
            let instance = if n == 1 {
                s.name.clone()
            } else {
                format!("{}-{n}", s.name)
            };
            let ad = ServiceAdvert {
                instance,
                service_type: s.service_type.clone(),
                address: i
                    .address
                    .filter(|a| !a.is_loopback() && !a.is_unspecified()),
                port: i.ports[0],
                txt: vec![
                    ("task".into(), i.task_id.clone()),
                    ("host".into(), i.host.clone()),
                ],
            };
            out.insert(ad.fullname(), ad);
        }
        out
    }
}

/// The running adverts task.
pub struct ServiceAdvertsTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServiceAdvertsTask {
    /// Withdraws every advert (goodbyes) and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts advertising the healthy instances of `services` on `interfaces` (empty: the default
/// set, as for the master's own advert).
pub fn start(
    mut services: watch::Receiver<Arc<ServicesView>>,
    interfaces: &[String],
) -> Result<ServiceAdvertsTask, bramble_proto::discovery::DiscoveryError> {
    let adverts = ServiceAdverts::start(interfaces)?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut names = Names::default();
        let mut current: BTreeMap<String, ServiceAdvert> = BTreeMap::new();
        loop {
            let view = services.borrow_and_update().clone();
            let wanted = names.adverts(&view);
            for (name, ad) in &current {
                if wanted.get(name) != Some(ad) {
                    info!(name, "withdrawing a service instance from mDNS");
                    if let Err(e) = adverts.unregister(name) {
                        warn!(name, "withdrawing a service instance from mDNS: {e}");
                    }
                }
            }
            for (name, ad) in &wanted {
                if current.get(name) != Some(ad) {
                    info!(name, address = ?ad.address, port = ad.port, task = %ad.txt[0].1,
                        "advertising a service instance on mDNS");
                    if let Err(e) = adverts.register(ad) {
                        warn!(name, "advertising a service instance on mDNS: {e}");
                    }
                }
            }
            current = wanted;
            tokio::select! {
                changed = services.changed() => if changed.is_err() { break },
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        adverts.stop(current.into_keys().collect()).await;
    });
    Ok(ServiceAdvertsTask { stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::services::{Health, InstanceView, ServiceView};
    use std::net::{IpAddr, Ipv4Addr};

    fn instance(task: &str, health: Health, last: u8) -> InstanceView {
        InstanceView {
            task_id: task.into(),
            agent_id: "a".into(),
            host: "pi".into(),
            address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
            ports: vec![31000 + last as u16],
            health,
            last_failure: None,
        }
    }

    fn view(instances: Vec<InstanceView>) -> ServicesView {
        ServicesView {
            services: vec![ServiceView {
                name: "web".into(),
                framework_id: "fw".into(),
                scheduler_connected: true,
                service_type: "_http._tcp".into(),
                instances,
            }],
        }
    }

    /// (instance name, task id), sorted.
    fn names(ads: &BTreeMap<String, ServiceAdvert>) -> Vec<(String, String)> {
        let mut v: Vec<_> = ads
            .values()
            .map(|a| (a.instance.clone(), a.txt[0].1.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_healthy_instances_are_advertised_and_keep_their_names() {
        let mut n = Names::default();
        let ads = n.adverts(&view(vec![
            instance("t1", Health::Healthy, 1),
            instance("t2", Health::Healthy, 2),
            instance("t3", Health::Starting, 3),
        ]));
        assert_eq!(
            names(&ads),
            [("web".into(), "t1".into()), ("web-2".into(), "t2".into())]
        );
        let ad = &ads["web._http._tcp.local."];
        assert_eq!(ad.port, 31001);
        assert_eq!(ad.address, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        // Failing now and then is still serving; gone is not: t2 keeps web-2, and t3,
        // healthy now, takes the free bare name.
        let ads = n.adverts(&view(vec![
            instance("t1", Health::Failing, 1),
            instance("t2", Health::Healthy, 2),
        ]));
        assert_eq!(
            names(&ads),
            [("web".into(), "t1".into()), ("web-2".into(), "t2".into())]
        );
        let ads = n.adverts(&view(vec![
            instance("t1", Health::Gone, 1),
            instance("t2", Health::Healthy, 2),
            instance("t3", Health::Healthy, 3),
        ]));
        assert_eq!(
            names(&ads),
            [("web".into(), "t3".into()), ("web-2".into(), "t2".into())]
        );
        // Gone entirely: nothing advertised.
        let ads = n.adverts(&view(vec![instance("t2", Health::Gone, 2)]));
        assert!(ads.is_empty(), "{ads:?}");
    }

    #[test]
    fn an_instance_seen_on_loopback_is_advertised_with_this_machines_addresses() {
        let mut n = Names::default();
        let mut i = instance("t1", Health::Healthy, 1);
        i.address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let ads = n.adverts(&view(vec![i]));
        assert_eq!(ads["web._http._tcp.local."].address, None);
    }
}
