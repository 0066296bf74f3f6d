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
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            role: RoleSetting::Auto,
            cluster_name: "bramble".into(),
            hostname: String::new(),
            display: DisplayConfig::default(),
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
