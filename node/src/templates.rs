//! The config files first boot renders from `bramble.toml`: `/etc/bramble/agent.toml` on every
//! node, `master.toml` on the master. Only what differs from the daemons' defaults is written,
//! so a node picks up better defaults with new software.

use crate::settings::{toml_string, NodeSettings};
use crate::users::TASK_UIDS;
use bramble_firmware::DisplayConfig;
use serde::Serialize;

/// `/etc/bramble/master.toml`: every key not set here keeps the master's default.
pub fn master_toml(settings: &NodeSettings) -> String {
    #[derive(Serialize)]
    struct File<'a> {
        name: &'a str,
        display: &'a DisplayConfig,
    }
    let body = toml::to_string(&File {
        name: &settings.cluster_name,
        display: &settings.display,
    })
    .unwrap_or_default();
    let mut text = format!(
        "# Written by bramble-firstboot from bramble.toml; edit freely, it is not rewritten.\n{body}"
    );
    if settings.masters > 1 {
        // No addresses: the candidates find each other on mDNS; the id is derived from
        // this card's machine id by the master itself.
        text.push_str(&format!(
            "\n# One of {n} replicated masters (bramble.toml masters = {n}), found on mDNS.\n\
             [ha]\npeers = \"mdns\"\nexpect = {n}\n",
            n = settings.masters
        ));
    }
    text
}

/// `/etc/bramble/agent.toml`: each framework's tasks run as its own unprivileged uid, never as
/// root and never as another framework's (tenants on a shared shelf cannot read each other's
/// sandboxes or signal each other's tasks).
pub fn agent_toml(_settings: &NodeSettings) -> String {
    format!(
        "# Written by bramble-firstboot from bramble.toml; edit freely, it is not rewritten.\n\
         # The agent runs as root (cgroups) and starts each framework's tasks as its own uid\n\
         # from this range (kept across restarts in the work dir).\n\
         task_uids = {}\n",
        toml_string(TASK_UIDS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_configs_carry_the_settings() {
        let s = NodeSettings {
            cluster_name: "shelf".into(),
            ..NodeSettings::default()
        };
        let master: toml::Table = toml::from_str(&master_toml(&s)).unwrap();
        assert_eq!(master["name"].as_str(), Some("shelf"));
        assert_eq!(master["display"]["address"].as_integer(), Some(0x3C));
        let agent: toml::Table = toml::from_str(&agent_toml(&s)).unwrap();
        assert_eq!(agent["task_uids"].as_str(), Some(TASK_UIDS));
        assert!(agent.get("task_user").is_none());
        // That the master accepts what first boot writes for it is checked where the master
        // is a dependency: tests/tests/node_configs.rs.
        assert!(master.get("ha").is_none(), "one master by default: no [ha]");
    }

    #[test]
    fn replicated_masters_get_ha_on_mdns_with_no_addresses() {
        let s = NodeSettings {
            masters: 3,
            ..NodeSettings::default()
        };
        let master: toml::Table = toml::from_str(&master_toml(&s)).unwrap();
        let ha = master["ha"].as_table().expect("[ha]");
        assert_eq!(ha["peers"].as_str(), Some("mdns"));
        assert_eq!(ha["expect"].as_integer(), Some(3));
        assert!(
            ha.get("id").is_none(),
            "the master derives its id from the card"
        );
        assert_eq!(ha.len(), 2, "nothing else to type: {ha:?}");
        assert_eq!(master["name"].as_str(), Some("bramble"));
    }
}
