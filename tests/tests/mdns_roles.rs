//! Replicated masters' roles on real mDNS packets (root only: a bridge in a network
//! namespace, joined from this process's namespace by a veth): two advertisers on that veth,
//! a standby and a leader, and a browser that must prefer the leader — and follow it when the
//! roles swap at run time (`Advertiser::set_role`, a re-announcement with no goodbye).

use bramble_proto::discovery::{Advertiser, Browser, MasterAdvert, MasterRole};
use bramble_tests::eventually;
use bramble_tests::netns::{self, Net};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const CLUSTER: &str = "c0ffee";
const DEADLINE: Duration = Duration::from_secs(20);

fn advert(instance: &str, ip: IpAddr, port: u16) -> MasterAdvert {
    MasterAdvert {
        instance: instance.to_string(),
        cluster_id: CLUSTER.to_string(),
        quic: SocketAddr::new(ip, port),
        http_port: None,
    }
}

/// Waits until the browser's best master is `instance` advertising `role` in `term`.
async fn best_is(browser: &Browser, instance: &str, role: MasterRole, term: u64) {
    let what = format!("{instance} the best master as {role:?} in term {term}");
    eventually(&what, DEADLINE, || {
        let table = browser.table();
        let found = table.best().and_then(|(name, _)| {
            (name.starts_with(&format!("{instance}.")) && table.role(&name) == Some((role, term)))
                .then_some(())
        });
        async move { found }
    })
    .await
}

/// Waits until the browser knows `instance` advertising `role` in `term`, best or not.
async fn seen_as(browser: &Browser, instance: &str, role: MasterRole, term: u64) {
    let what = format!("{instance} seen as {role:?} in term {term}");
    eventually(&what, DEADLINE, || {
        let table = browser.table();
        let found = table
            .candidates()
            .into_iter()
            .find(|(name, _)| name.starts_with(&format!("{instance}.")))
            .and_then(|(name, _)| (table.role(&name) == Some((role, term))).then_some(()));
        async move { found }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_prefers_the_advertised_leader_and_follows_a_role_change() {
    if netns::skip("the_browser_prefers_the_advertised_leader_and_follows_a_role_change") {
        return;
    }
    bramble_tests::init_logs();
    let net = Net::new();
    let interfaces = vec![net.uplink().to_string()];
    let ip = IpAddr::V4(net.ipv4(254));
    let a = Advertiser::start_as(&advert("ma", ip, 5050), &interfaces, MasterRole::Standby, 2)
        .expect("advertising ma");
    let b = Advertiser::start_as(&advert("mb", ip, 5051), &interfaces, MasterRole::Leader, 2)
        .expect("advertising mb");
    let browser = Browser::start(CLUSTER, &interfaces).expect("browsing");
    // Both must be known before "prefers" means anything: the leader's records may well
    // arrive first, and a browser that has seen only it would pass trivially.
    seen_as(&browser, "ma", MasterRole::Standby, 2).await;
    seen_as(&browser, "mb", MasterRole::Leader, 2).await;
    let best = browser.best().map(|(name, _)| name);
    assert!(
        best.as_deref().is_some_and(|n| n.starts_with("mb.")),
        "the leader is preferred over the standby, got {best:?}"
    );

    // An election: ma leads in term 3, mb stands by.
    a.set_role(MasterRole::Leader, 3).expect("re-announcing ma");
    b.set_role(MasterRole::Standby, 3)
        .expect("re-announcing mb");
    best_is(&browser, "ma", MasterRole::Leader, 3).await;

    a.stop().await;
    b.stop().await;
}
