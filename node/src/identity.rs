//! A node's name: `bramble-XXXX` from the board serial (device tree, then `/proc/cpuinfo`),
//! else from the machine id (e.g. under QEMU), so every Pi of a cluster gets a distinct,
//! stable name with nobody typing one.

use crate::error::NodeError;
use serde::Serialize;
use std::path::Path;

/// Where the node's unique suffix came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    pub source: &'static str,
    pub id: String,
}

/// The board serial (device tree, then `/proc/cpuinfo`), else the machine id.
pub fn node_identity(root: &Path) -> Result<NodeIdentity, NodeError> {
    let dt_paths = [
        "proc/device-tree/serial-number",
        "sys/firmware/devicetree/base/serial-number",
    ];
    for p in dt_paths {
        if let Some(s) = read_trimmed(&root.join(p)) {
            return Ok(NodeIdentity {
                source: "device tree serial",
                id: s,
            });
        }
    }
    if let Some(cpuinfo) = read_trimmed(&root.join("proc/cpuinfo")) {
        let serial = cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "Serial").then(|| v.trim().to_owned())
        });
        if let Some(s) = serial.filter(|s| !s.is_empty() && s.chars().any(|c| c != '0')) {
            return Ok(NodeIdentity {
                source: "/proc/cpuinfo serial",
                id: s,
            });
        }
    }
    match read_trimmed(&root.join("etc/machine-id")) {
        Some(id) if id != "uninitialized" => Ok(NodeIdentity {
            source: "machine id",
            id,
        }),
        _ => Err(NodeError::NoIdentity(root.display().to_string())),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let s = String::from_utf8_lossy(&bytes)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned();
    (!s.is_empty()).then_some(s)
}

/// `bramble-` and the last four hex digits of `id` (lowercase). Four hex digits keep names
/// short enough for the panel; a clash on a home network is rare and mDNS renames on one.
pub fn hostname_for(id: &str) -> String {
    let hex: Vec<char> = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let tail: String = hex[hex.len().saturating_sub(4)..].iter().collect();
    format!("bramble-{tail:0>4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_takes_the_last_four_hex_digits() {
        assert_eq!(hostname_for("10000000a1b2C3D4"), "bramble-c3d4");
        assert_eq!(hostname_for("ab"), "bramble-00ab");
        assert_eq!(
            hostname_for("4f9d0c2b8e4a4d6f9c1b2a3d4e5f6071"),
            "bramble-6071"
        );
    }

    #[test]
    fn identity_prefers_the_serial_then_cpuinfo_then_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(matches!(node_identity(root), Err(NodeError::NoIdentity(_))));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        assert_eq!(node_identity(root).unwrap().source, "machine id");
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(
            root.join("proc/cpuinfo"),
            "processor\t: 0\nSerial\t\t: 10000000deadbeef\nModel\t: Raspberry Pi 4\n",
        )
        .unwrap();
        let id = node_identity(root).unwrap();
        assert_eq!(
            (id.source, id.id.as_str()),
            ("/proc/cpuinfo serial", "10000000deadbeef")
        );
        std::fs::create_dir_all(root.join("sys/firmware/devicetree/base")).unwrap();
        std::fs::write(
            root.join("sys/firmware/devicetree/base/serial-number"),
            "10000000a1b2c3d4\0",
        )
        .unwrap();
        let id = node_identity(root).unwrap();
        assert_eq!(id.id, "10000000a1b2c3d4");
        assert_eq!(hostname_for(&id.id), "bramble-c3d4");
    }
}
