//! The config files first boot writes (`bramble-node`) are ones the daemons accept. Checked
//! here because `bramble-node` must not depend on the master or the agent (the image tool
//! builds on it).

use bramble_node::{master_toml, NodeSettings};

#[test]
fn the_master_accepts_the_master_toml_first_boot_writes() {
    let s = NodeSettings {
        cluster_name: "shelf".into(),
        ..NodeSettings::default()
    };
    let parsed: bramble_master::config::MasterConfig =
        toml::from_str(&master_toml(&s)).expect("master.toml parses as the master's config");
    assert_eq!(parsed.name, "shelf");
}

#[test]
fn the_master_accepts_a_replicated_master_toml_first_boot_writes() {
    let s = NodeSettings {
        masters: 5,
        ..NodeSettings::default()
    };
    let text = master_toml(&s);
    let parsed: bramble_master::config::MasterConfig =
        toml::from_str(&text).expect("master.toml parses as the master's config");
    parsed
        .validate(std::path::Path::new("master.toml"), &text)
        .expect("valid");
    let ha = parsed.ha.expect("[ha]");
    assert!(ha.mdns());
    assert_eq!(ha.expect(), 5);
}
