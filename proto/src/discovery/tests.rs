use super::advertiser::dns_label;
use super::*;
use crate::PROTOCOL_VERSION;

const OURS: &str = "ab12";
/// A master of ours the table knew, answering at new addresses.
const KNOWN_MASTER_MOVED: Verdict = Verdict::Ours {
    new: false,
    changed: true,
};
/// A master of ours the table knew, answering as before (a cache replay).
const KNOWN_MASTER_UNCHANGED: Verdict = Verdict::Ours {
    new: false,
    changed: false,
};

fn sighting(name: &str, cluster: Option<&str>, addrs: &[&str]) -> Sighting {
    Sighting {
        fullname: format!("{name}._bramble._udp.local."),
        cluster_id: cluster.map(str::to_string),
        version: Some(PROTOCOL_VERSION),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        role: MasterRole::Single,
        term: 0,
    }
}

/// A master of ours at `addr` advertising `role` in `term`.
fn replicated(name: &str, addr: &str, role: MasterRole, term: u64) -> Sighting {
    Sighting {
        role,
        term,
        ..sighting(name, Some(OURS), &[addr])
    }
}

/// A table that has resolved masters of our cluster named `names`, the i-th at 10.0.0.<i+1>
/// (so the last one is the most recent).
fn table_of(names: &[&str]) -> MasterTable {
    let mut t = MasterTable::new(OURS);
    for (i, name) in names.iter().enumerate() {
        let addr = format!("10.0.0.{}:5051", i + 1);
        t.resolved(sighting(name, Some(OURS), &[addr.as_str()]));
    }
    t
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
    let mut t = table_of(&["a", "b"]);
    assert_eq!(t.best().unwrap().0, full("b"));
    // "a" moved: its new address is the freshest news.
    assert_eq!(
        t.resolved(sighting("a", Some(OURS), &["10.0.0.3:5051"])),
        KNOWN_MASTER_MOVED
    );
    assert_eq!(
        t.best(),
        Some((full("a"), vec!["10.0.0.3:5051".parse().unwrap()]))
    );
}

#[test]
fn a_failed_master_drops_back_until_its_addresses_change() {
    let mut t = table_of(&["a", "b"]);
    t.failed(&full("b"));
    assert_eq!(t.best().unwrap().0, full("a"));
    // A cache replay of the same answer does not make it fresh again.
    assert_eq!(
        t.resolved(sighting("b", Some(OURS), &["10.0.0.2:5051"])),
        KNOWN_MASTER_UNCHANGED
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
    let mut t = table_of(&["a"]);
    assert!(t.removed(&full("a")));
    assert!(!t.removed(&full("a")));
    assert_eq!(t.best(), None);
    t.resolved(sighting("a", Some(OURS), &["10.0.0.1:5051"]));
    t.resolved(sighting("a", Some("ff00"), &["10.0.0.1:5051"]));
    assert_eq!(t.best(), None);
}

#[test]
fn a_resync_drops_what_the_cache_replay_did_not_mention() {
    let mut t = table_of(&["a", "b"]);
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

#[test]
fn the_advertised_leader_comes_before_singles_and_standbys_whatever_their_freshness() {
    let mut t = MasterTable::new(OURS);
    t.resolved(replicated("leader", "10.0.0.1:5050", MasterRole::Leader, 3));
    t.resolved(sighting("single", Some(OURS), &["10.0.0.2:5050"]));
    t.resolved(replicated(
        "standby",
        "10.0.0.3:5050",
        MasterRole::Standby,
        3,
    ));
    let order: Vec<String> = t.candidates().into_iter().map(|(n, _)| n).collect();
    assert_eq!(order, [full("leader"), full("single"), full("standby")]);
}

#[test]
fn of_two_leaders_the_higher_term_wins_even_when_older_news() {
    let mut t = MasterTable::new(OURS);
    t.resolved(replicated("new", "10.0.0.2:5050", MasterRole::Leader, 8));
    // The deposed leader has not said goodbye yet and re-announces its old term.
    t.resolved(replicated("old", "10.0.0.1:5050", MasterRole::Leader, 7));
    assert_eq!(t.best().unwrap().0, full("new"));
}

#[test]
fn a_standby_is_never_best_while_a_leader_is_known_even_a_failed_one() {
    let mut t = MasterTable::new(OURS);
    t.resolved(replicated("a", "10.0.0.1:5050", MasterRole::Leader, 2));
    t.resolved(replicated("b", "10.0.0.2:5050", MasterRole::Standby, 2));
    t.failed(&full("a"));
    assert_eq!(t.best().unwrap().0, full("a"));
    // Only standbys known: one of them, to be redirected by.
    let mut only = MasterTable::new(OURS);
    only.resolved(replicated("b", "10.0.0.2:5050", MasterRole::Standby, 2));
    assert_eq!(only.best().unwrap().0, full("b"));
}

#[test]
fn a_standby_elected_leader_is_news_and_takes_the_lead() {
    let mut t = MasterTable::new(OURS);
    t.resolved(replicated("a", "10.0.0.1:5050", MasterRole::Leader, 2));
    t.resolved(replicated("b", "10.0.0.2:5050", MasterRole::Standby, 2));
    t.failed(&full("b"));
    // Same addresses, new role and term: not a cache replay.
    assert_eq!(
        t.resolved(replicated("b", "10.0.0.2:5050", MasterRole::Leader, 3)),
        KNOWN_MASTER_MOVED
    );
    assert_eq!(t.role(&full("b")), Some((MasterRole::Leader, 3)));
    assert_eq!(t.best().unwrap().0, full("b"));
    // The same again is a replay.
    assert_eq!(
        t.resolved(replicated("b", "10.0.0.2:5050", MasterRole::Leader, 3)),
        KNOWN_MASTER_UNCHANGED
    );
}

#[test]
fn roles_read_from_txt_keep_older_and_newer_masters_usable() {
    assert_eq!(MasterRole::from_txt(None), MasterRole::Single);
    assert_eq!(MasterRole::from_txt(Some("single")), MasterRole::Single);
    assert_eq!(MasterRole::from_txt(Some("leader")), MasterRole::Leader);
    assert_eq!(MasterRole::from_txt(Some("standby")), MasterRole::Standby);
    // A role this version does not know: dialled last, never preferred.
    assert_eq!(MasterRole::from_txt(Some("learner")), MasterRole::Standby);
    for role in [MasterRole::Leader, MasterRole::Standby] {
        assert_eq!(MasterRole::from_txt(role.txt()), role);
    }
    assert_eq!(MasterRole::Single.txt(), None);
}

#[test]
fn a_resolved_service_carries_role_and_term_and_an_old_one_neither() {
    use mdns_sd::ServiceInfo;
    let service = |txt: &[(&str, &str)]| {
        let mut props = vec![
            (TXT_CLUSTER_ID, OURS),
            (TXT_VERSION, "1"),
            (TXT_QUIC, "5050"),
        ];
        props.extend_from_slice(txt);
        ServiceInfo::new(
            crate::MDNS_SERVICE_TYPE,
            "pi",
            "pi-bramble.local.",
            "10.0.0.1",
            5050,
            &props[..],
        )
        .expect("service info")
        .as_resolved_service()
    };
    let old = Sighting::from_resolved(&service(&[]));
    assert_eq!((old.role, old.term), (MasterRole::Single, 0));
    let leader = Sighting::from_resolved(&service(&[(TXT_ROLE, "leader"), (TXT_TERM, "12")]));
    assert_eq!((leader.role, leader.term), (MasterRole::Leader, 12));
    let junk = Sighting::from_resolved(&service(&[(TXT_ROLE, "standby"), (TXT_TERM, "x")]));
    assert_eq!((junk.role, junk.term), (MasterRole::Standby, 0));
}
