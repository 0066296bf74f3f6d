//! `firstboot`: turns a freshly flashed card into a named cluster node, once (see the crate
//! documentation for the steps). The order matters: the marker is written last, so a first boot
//! that fails half way is retried whole on the next boot.

use crate::error::{io_err, NodeError};
use crate::files::{remove_if_present, write_file};
use crate::identity::{hostname_for, node_identity};
use crate::paths::{DONE_MARKER, IMAGE_AUTHORIZED_KEYS, SETTINGS_FILE, WANTS_DIR};
use crate::settings::{parse_settings, NodeSettings, RoleSetting};
use crate::templates::{agent_toml, master_toml};
use crate::units::{enable_unit, AGENT_UNIT, MASTER_UNIT, SERVICES_UNIT};
use crate::users::{create_users, run_tool, share_node_key};
use bramble_firmware::DisplayConfig;
use serde::Serialize;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where first boot works, and whether it is on the live system.
#[derive(Debug, Clone)]
pub struct FirstbootOptions {
    pub root: PathBuf,
    /// The boot partition as mounted (`/boot/firmware` on Bookworm and newer).
    pub boot_dir: PathBuf,
    /// Also act on the running system: set the kernel hostname, create users with the
    /// system's tools, start the master now. False when `root` is not `/`.
    pub live: bool,
}

impl FirstbootOptions {
    /// `root` with its boot partition at `boot/firmware` (or `boot` on older layouts).
    pub fn for_root(root: &Path) -> Self {
        let firmware = root.join("boot/firmware");
        let boot_dir = if firmware.is_dir() {
            firmware
        } else {
            root.join("boot")
        };
        FirstbootOptions {
            root: root.to_path_buf(),
            boot_dir,
            live: root == Path::new("/"),
        }
    }
}

/// What first boot decided, also written into the marker file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstbootReport {
    pub hostname: String,
    pub hostname_source: String,
    /// `master` or `agent`.
    pub role: String,
    pub role_source: String,
    pub enabled_units: Vec<String>,
    pub ssh_keys_added: usize,
}

/// Runs first boot under `opts.root`. `probe_panel` answers whether an SSD1306 answers for
/// the display settings (only asked when the role is `auto`). `Ok(None)`: already done.
pub fn firstboot(
    opts: &FirstbootOptions,
    probe_panel: &mut dyn FnMut(&DisplayConfig) -> bool,
) -> Result<Option<FirstbootReport>, NodeError> {
    let root = opts.root.as_path();
    let marker = root.join(DONE_MARKER);
    if marker.exists() {
        tracing::info!(marker = %marker.display(), "first boot already done");
        return Ok(None);
    }
    let settings_path = opts.boot_dir.join(SETTINGS_FILE);
    let settings = match bramble_proto::config::read_optional(&settings_path, false)? {
        Some(text) => parse_settings(&settings_path, &text)?,
        None => {
            tracing::warn!(path = %settings_path.display(), "no bramble.toml; using defaults (role auto)");
            NodeSettings::default()
        }
    };

    let (hostname, hostname_source) = if settings.hostname.is_empty() {
        let identity = node_identity(root)?;
        (hostname_for(&identity.id), identity.source.to_owned())
    } else {
        (settings.hostname.clone(), "bramble.toml".to_owned())
    };
    set_hostname(opts, &hostname)?;

    create_users(opts)?;
    share_node_key(root)?;

    let (is_master, role_source) = match settings.role {
        RoleSetting::Master => (true, "bramble.toml"),
        RoleSetting::Agent => (false, "bramble.toml"),
        RoleSetting::Auto => (probe_panel(&settings.display), "panel probe"),
    };
    let role = if is_master { "master" } else { "agent" };

    let etc = root.join("etc/bramble");
    let mut agent = agent_toml(&settings);
    // Container-image tasks when the image carries crun (image/debian/mkbase.sh installs it).
    if root.join("usr/bin/crun").is_file() {
        agent.push_str("\n[containers]\nruntime = \"/usr/bin/crun\"\n");
    }
    write_file(&etc.join("agent.toml"), agent.as_bytes(), 0o644)?;
    let master_conf = etc.join("master.toml");
    if is_master {
        write_file(&master_conf, master_toml(&settings).as_bytes(), 0o644)?;
    } else {
        remove_if_present(&master_conf)?;
    }

    let mut enabled_units = vec![AGENT_UNIT.to_owned()];
    enable_unit(root, AGENT_UNIT)?;
    // The service scheduler lives beside the master (it connects over loopback with the node
    // certificate: see its unit).
    for unit in [MASTER_UNIT, SERVICES_UNIT] {
        if is_master {
            enable_unit(root, unit)?;
            enabled_units.push(unit.to_owned());
        } else {
            remove_if_present(&root.join(WANTS_DIR).join(unit))?;
        }
    }

    let ssh_keys_added = install_ssh_keys(root)?;

    let report = FirstbootReport {
        hostname,
        hostname_source,
        role: role.to_owned(),
        role_source: role_source.to_owned(),
        enabled_units,
        ssh_keys_added,
    };
    let summary = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_file(&marker, format!("{summary}\n").as_bytes(), 0o644)?;

    if opts.live && is_master {
        // The boot transaction was computed before the master's link existed. `--no-block`:
        // the master is ordered after this unit, so waiting for it here would deadlock. The
        // service scheduler is ordered after the master.
        run_tool(
            "systemctl",
            &["start", "--no-block", MASTER_UNIT, SERVICES_UNIT],
            "starting the master",
        )?;
    }
    tracing::info!(
        hostname = %report.hostname,
        role = %report.role,
        role_source = %report.role_source,
        ssh_keys = report.ssh_keys_added,
        "first boot done"
    );
    Ok(Some(report))
}

fn set_hostname(opts: &FirstbootOptions, hostname: &str) -> Result<(), NodeError> {
    let root = opts.root.as_path();
    write_file(
        &root.join("etc/hostname"),
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    // Debian resolves its own name through the 127.0.1.1 line.
    let hosts_path = root.join("etc/hosts");
    let hosts = match std::fs::read_to_string(&hosts_path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => "127.0.0.1\tlocalhost\n".to_owned(),
        Err(e) => return Err(io_err("reading", &hosts_path)(e)),
    };
    write_file(
        &hosts_path,
        set_hosts_name(&hosts, hostname).as_bytes(),
        0o644,
    )?;
    if opts.live {
        // Now, not at the next boot: avahi and the DHCP client start after this unit.
        let path = Path::new("/proc/sys/kernel/hostname");
        std::fs::write(path, hostname).map_err(io_err("writing", path))?;
    }
    Ok(())
}

/// `hosts` with its `127.0.1.1` line naming `hostname` (added when there is none).
pub fn set_hosts_name(hosts: &str, hostname: &str) -> String {
    let line = format!("127.0.1.1\t{hostname}");
    let mut found = false;
    let mut out: Vec<String> = hosts
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some("127.0.1.1") {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// Appends the image's keys that root's `authorized_keys` lacks; returns how many.
fn install_ssh_keys(root: &Path) -> Result<usize, NodeError> {
    let source = root.join(IMAGE_AUTHORIZED_KEYS);
    let Some(keys) = bramble_proto::config::read_optional(&source, false)? else {
        return Ok(0);
    };
    let ssh_dir = root.join("root/.ssh");
    std::fs::create_dir_all(&ssh_dir).map_err(io_err("creating", &ssh_dir))?;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", &ssh_dir))?;
    let dest = ssh_dir.join("authorized_keys");
    let existing = match std::fs::read_to_string(&dest) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err("reading", &dest)(e)),
    };
    let have: Vec<&str> = existing.lines().map(str::trim).collect();
    let new: Vec<&str> = keys
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !have.contains(l))
        .collect();
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for k in &new {
        text.push_str(k);
        text.push('\n');
    }
    write_file(&dest, text.as_bytes(), 0o600)?;
    Ok(new.len())
}

/// Asks the I2C bus of `display` whether an SSD1306 answers (the master's own probe).
pub fn probe_panel_on_bus(display: &DisplayConfig) -> bool {
    let mut config = display.clone();
    if config.enabled == bramble_firmware::Enabled::Off {
        return false;
    }
    config.enabled = bramble_firmware::Enabled::Auto;
    bramble_firmware::LinuxDisplayDriver::open(config).has_panel()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First boot on a scratch root (not live) with this `bramble.toml`; `None` when the
    /// machine lacks systemd-sysusers (first boot creates users with it).
    fn first_boot_with(settings: &str, panel: bool) -> Option<(tempfile::TempDir, String)> {
        if std::process::Command::new("systemd-sysusers")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: systemd-sysusers is not installed (first boot creates users with it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("boot/firmware")).expect("boot dir");
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        std::fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .expect("machine-id");
        std::fs::write(root.join("boot/firmware/bramble.toml"), settings).expect("settings");
        let opts = FirstbootOptions::for_root(root);
        let report = firstboot(&opts, &mut |_| panel)
            .expect("first boot")
            .expect("not done before");
        let master =
            std::fs::read_to_string(root.join("etc/bramble/master.toml")).unwrap_or_default();
        assert_eq!(report.role == "master", !master.is_empty());
        Some((dir, master))
    }

    #[test]
    fn master_cards_of_a_replicated_cluster_get_ha_on_mdns_and_a_single_master_none() {
        let Some((_d, single)) = first_boot_with("role = \"master\"\n", false) else {
            return;
        };
        let single: toml::Table = toml::from_str(&single).expect("master.toml");
        assert!(
            single.get("ha").is_none(),
            "the default stays one master: {single:?}"
        );

        for (settings, panel) in [
            ("role = \"master\"\nmasters = 3\n", false),
            // auto: a card with a panel is a master candidate too.
            ("role = \"auto\"\nmasters = 3\n", true),
        ] {
            let (_d, text) = first_boot_with(settings, panel).expect("sysusers found above");
            let master: toml::Table = toml::from_str(&text).expect("master.toml");
            let ha = master["ha"].as_table().expect("[ha]");
            assert_eq!(ha["peers"].as_str(), Some("mdns"), "{settings}");
            assert_eq!(ha["expect"].as_integer(), Some(3), "{settings}");
            assert!(
                ha.get("id").is_none() && ha.get("bootstrap").is_none(),
                "{ha:?}"
            );
        }
        // An agent card of a replicated cluster has no master.toml at all.
        let (_d, agent) =
            first_boot_with("role = \"auto\"\nmasters = 3\n", false).expect("sysusers");
        assert!(agent.is_empty());
    }

    #[test]
    fn hosts_line_is_replaced_or_added_once() {
        let pi = "127.0.0.1\tlocalhost\n::1\t\tlocalhost\n\n127.0.1.1\t\traspberrypi\n";
        let once = set_hosts_name(pi, "bramble-c3d4");
        assert_eq!(once.matches("127.0.1.1").count(), 1);
        assert!(once.contains("127.0.1.1\tbramble-c3d4\n"));
        assert_eq!(set_hosts_name(&once, "bramble-c3d4"), once);
        let bare = set_hosts_name("127.0.0.1 localhost\n", "n1");
        assert_eq!(bare, "127.0.0.1 localhost\n127.0.1.1\tn1\n");
    }
}
