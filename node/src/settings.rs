//! `bramble.toml`, the one file on the boot partition a user edits from any computer before
//! first boot: its schema, the commented template an image starts with, and its checks.

use crate::error::NodeError;
use bramble_firmware::DisplayConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which services a node runs. Every node runs an agent; the master node also the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleSetting {
    Master,
    Agent,
    /// Master if an SSD1306 panel answers on the I2C bus, else agent.
    #[default]
    Auto,
}

impl RoleSetting {
    pub fn parse(s: &str) -> Option<RoleSetting> {
        match s {
            "master" => Some(RoleSetting::Master),
            "agent" => Some(RoleSetting::Agent),
            "auto" => Some(RoleSetting::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoleSetting::Master => "master",
            RoleSetting::Agent => "agent",
            RoleSetting::Auto => "auto",
        }
    }
}

/// For command lines (`--role`): the error says what is accepted.
impl std::str::FromStr for RoleSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoleSetting::parse(s).ok_or_else(|| format!("{s:?}: use master, agent or auto"))
    }
}

/// `bramble.toml` on the boot partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    pub role: RoleSetting,
    /// Shown on the panel and in the master's logs.
    pub cluster_name: String,
    /// Empty: `bramble-XXXX` from the board serial.
    pub hostname: String,
    /// The master's front panel; also where `auto` looks for it.
    pub display: DisplayConfig,
    /// How many replicated masters the cluster has: 1 (the default) is the single master,
    /// unchanged; 3 or 5 make every master card (`role = "master"`, or `auto` with a panel)
    /// a candidate of a replicated group found on mDNS (`[ha] peers = "mdns"` in its
    /// master.toml), formed once that many are seen.
    pub masters: usize,
}

/// The replicated group sizes `masters` accepts besides 1: an even count tolerates no more
/// failures than one fewer, and more than five voters only slow every write.
pub const REPLICATED_MASTERS: [usize; 2] = [3, 5];

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            role: RoleSetting::Auto,
            cluster_name: "bramble".into(),
            hostname: String::new(),
            display: DisplayConfig::default(),
            masters: 1,
        }
    }
}

/// The `bramble.toml` an image starts with: every setting, commented, for people editing it
/// on a laptop with the card in a reader.
pub fn settings_template(cluster_name: &str, role: RoleSetting, hostname: &str) -> String {
    format!(
        r#"# Bramble settings for this card. Edit them before the first boot: this file is on the
# boot partition, readable from any computer. The card reads it once, on first boot
# (bramble-firstboot.service); afterwards edit /etc/bramble/*.toml on the Pi instead.

# master | agent | auto (auto: master if an SSD1306 panel answers on I2C, else agent).
# Every node runs an agent; the master node also runs the master.
role = "{role}"

# Shown on the front panel and in the master's logs.
cluster_name = {cluster_name}

# Empty: bramble-XXXX from the board's serial number.
hostname = "{hostname}"

# How many masters: 1 (one master card). 3 or 5: replicated masters with a leader elected
# among them; put role = "master" on that many cards (or more: the extra ones wait as
# spares). They find each other on the network by themselves: no addresses to type.
masters = 1

# The master's front panel (SSD1306 OLED on the I2C header).
[display]
enabled = "auto"   # auto | on | off
bus = 1            # /dev/i2c-1
address = 0x3C     # 0x3D with the address jumper moved
size = "128x64"    # or "128x32"
rotation = 0       # or 180
"#,
        role = role.as_str(),
        cluster_name = toml_string(cluster_name),
    )
}

pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Parses and checks `bramble.toml` (`path` is used in messages).
pub fn parse_settings(path: &Path, text: &str) -> Result<NodeSettings, NodeError> {
    let settings: NodeSettings = bramble_proto::config::load_toml(path, text)?;
    if !settings.hostname.is_empty() {
        check_hostname(&settings.hostname)
            .map_err(|m| bramble_proto::config::ConfigError::invalid(path, text, "hostname", m))?;
    }
    if settings.cluster_name.trim().is_empty() {
        return Err(bramble_proto::config::ConfigError::invalid(
            path,
            text,
            "cluster_name",
            "must not be empty",
        )
        .into());
    }
    if settings.masters != 1 && !REPLICATED_MASTERS.contains(&settings.masters) {
        return Err(bramble_proto::config::ConfigError::invalid(
            path,
            text,
            "masters",
            format!(
                "{} is not a group size: use 1 (one master), 3 or 5 (replicated masters)",
                settings.masters
            ),
        )
        .into());
    }
    Ok(settings)
}

/// A hostname mDNS and DHCP accept: one label of letters, digits and inner hyphens.
pub fn check_hostname(h: &str) -> Result<(), String> {
    let ok_chars = h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if h.is_empty() || h.len() > 63 || !ok_chars || h.starts_with('-') || h.ends_with('-') {
        return Err(format!(
            "{h:?} is not a hostname: use 1-63 letters, digits and inner hyphens"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_the_defaults_it_documents() {
        let text = settings_template("pis", RoleSetting::Auto, "");
        let s = parse_settings(Path::new("bramble.toml"), &text).unwrap();
        assert_eq!(
            s,
            NodeSettings {
                cluster_name: "pis".into(),
                ..NodeSettings::default()
            }
        );
        let text = settings_template("a \"quoted\" name", RoleSetting::Master, "node-7");
        let s = parse_settings(Path::new("bramble.toml"), &text).unwrap();
        assert_eq!(s.cluster_name, "a \"quoted\" name");
        assert_eq!(s.role, RoleSetting::Master);
        assert_eq!(s.hostname, "node-7");
    }

    #[test]
    fn masters_is_one_by_default_and_only_a_sensible_group_size() {
        let s = parse_settings(Path::new("bramble.toml"), "").unwrap();
        assert_eq!(s.masters, 1);
        let s = parse_settings(Path::new("bramble.toml"), "masters = 5\n").unwrap();
        assert_eq!(s.masters, 5);
        for bad in [
            "masters = 0\n",
            "masters = 2\n",
            "masters = 4\n",
            "masters = 7\n",
        ] {
            let err = parse_settings(Path::new("bramble.toml"), bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("masters") && err.contains("line 1"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_settings_name_the_key_and_line() {
        let err = parse_settings(Path::new("bramble.toml"), "role = \"boss\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("role"), "{err}");
        let err = parse_settings(Path::new("bramble.toml"), "\nhostname = \"-x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: key \"hostname\""), "{err}");
    }
}
