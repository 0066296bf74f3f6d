//! `bramble-image inspect IMG`: what an image holds, read without mounting: partitions and
//! disk id, the base release, Bramble's version and the binaries' architecture (from their
//! ELF headers), the cluster id (from the CA certificate on the card), the role settings in
//! `bramble.toml`, which units are enabled, and whether the boot settings are in place.

use crate::edits::{self, CGROUP_ARGS, I2C_DTPARAM};
use crate::ext4::RootFs;
use crate::fat::BootFs;
use crate::part::{Partition, Table};
use crate::payload::{self, BINARIES, BIN_DIR, IMAGE_INFO};
use crate::{elf, osrelease, BuildError};
use bramble_node::{self as node, NodeSettings};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: String,
    pub bytes: u64,
    pub disk_id: String,
    pub partitions: Vec<PartitionView>,
    /// PRETTY_NAME of the root partition's os-release.
    pub base: Option<String>,
    /// `None`: not a Bramble image.
    pub bramble: Option<BrambleView>,
    /// `bramble.toml` on the boot partition, as first boot will read it.
    pub settings: Option<NodeSettings>,
    pub settings_error: Option<String>,
    /// Units `multi-user.target` pulls in (`/etc/systemd/system/multi-user.target.wants`).
    pub enabled_units: Vec<String>,
    pub boot: BootView,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    #[serde(flatten)]
    pub partition: Partition,
    pub filesystem: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrambleView {
    /// From `/etc/bramble/image.toml`, written at build.
    pub version: Option<String>,
    pub route: Option<String>,
    /// Each binary in /usr/local/bin with the architecture its ELF header names.
    pub binaries: Vec<BinaryView>,
    /// SHA-256 of the CA certificate on the card.
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    /// Files in /etc/bramble/cluster.
    pub cluster_files: Vec<String>,
    pub ssh_key_installed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BinaryView {
    pub name: String,
    pub arch: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BootView {
    pub i2c_enabled: bool,
    pub memory_cgroup: bool,
    pub ssh_marker: bool,
    pub cmdline: String,
}

pub fn inspect(path: &Path) -> Result<Inspection, BuildError> {
    let mut file = std::fs::File::open(path).map_err(|e| BuildError::io("opening", path, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| BuildError::io("reading", path, e))?
        .len();
    let table = Table::read(&mut file, path)?;
    let (boot_part, root_part) = table.pi_layout(path, bytes)?;
    let boot = BootFs::open(&file, boot_part)?;
    let root = RootFs::open(path, root_part)?;

    let partitions = table
        .partitions
        .iter()
        .map(|p| {
            let (filesystem, label) = if *p == boot_part {
                ("vfat".to_owned(), boot.label())
            } else if *p == root_part {
                ("ext4".to_owned(), root.info().label.clone())
            } else {
                ("unknown".to_owned(), String::new())
            };
            PartitionView {
                partition: *p,
                filesystem,
                label,
            }
        })
        .collect();

    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    let config = text(boot.read("config.txt")?).unwrap_or_default();
    let cmdline = text(boot.read("cmdline.txt")?).unwrap_or_default();
    let boot_view = BootView {
        i2c_enabled: edits::ensure_config_setting(&config, I2C_DTPARAM, "", true) == config,
        memory_cgroup: edits::ensure_cmdline_args(&cmdline, &CGROUP_ARGS)
            .ok()
            .as_ref()
            == Some(&cmdline),
        ssh_marker: boot.read("ssh")?.is_some(),
        cmdline: cmdline.trim().to_owned(),
    };
    let (settings, settings_error) = match text(boot.read(node::SETTINGS_FILE)?) {
        None => (None, None),
        Some(t) => match node::parse_settings(Path::new(node::SETTINGS_FILE), &t) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    boot.close()?;

    let base = text(root.read_resolving("/etc/os-release")?)
        .map(|t| osrelease::describe(&osrelease::parse(&t)));
    let wants = format!("/{}", node::WANTS_DIR);
    let mut enabled_units: Vec<String> = root
        .list(&wants)?
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    enabled_units.sort();

    let bramble = bramble_view(&root)?;
    Ok(Inspection {
        image: path.display().to_string(),
        bytes,
        disk_id: table.disk_id,
        partitions,
        base,
        bramble,
        settings,
        settings_error,
        enabled_units,
        boot: boot_view,
    })
}

fn bramble_view(root: &RootFs) -> Result<Option<BrambleView>, BuildError> {
    let mut binaries = Vec::new();
    let bin_entries = root.list(BIN_DIR)?.unwrap_or_default();
    for name in BINARIES {
        if let Some(entry) = bin_entries.iter().find(|e| e.name == name) {
            let bytes = root.read(&format!("{BIN_DIR}/{name}"))?.unwrap_or_default();
            let arch = elf::parse(&bytes)
                .map(|i| i.arch())
                .unwrap_or_else(|| "not ELF".into());
            binaries.push(BinaryView {
                name: name.to_owned(),
                arch,
                bytes: entry.size,
            });
        }
    }
    let info: Option<toml::Table> = root
        .read(IMAGE_INFO)?
        .and_then(|b| toml::from_str(&String::from_utf8_lossy(&b)).ok());
    if binaries.is_empty() && info.is_none() {
        return Ok(None);
    }
    let info_str = |k: &str| {
        info.as_ref()
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let cluster_dir = format!("/{}", node::CLUSTER_DIR);
    let mut cluster_files: Vec<String> = root
        .list(&cluster_dir)?
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.name)
        .collect();
    cluster_files.sort();
    let cluster_id = root
        .read(&format!(
            "{cluster_dir}/{}",
            bramble_proto::identity::files::CA_CERT
        ))?
        .and_then(|pem| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(&pem).ok()
        })
        .map(|der| bramble_proto::identity::cluster_id(&der));
    let ssh_key_installed = root
        .read(&format!("/{}", node::IMAGE_AUTHORIZED_KEYS))?
        .is_some_and(|k| payload::load_ssh_keys_text(&String::from_utf8_lossy(&k)).is_ok());
    Ok(Some(BrambleView {
        version: info_str("version"),
        route: info_str("route"),
        binaries,
        cluster_id,
        cluster_name: info_str("cluster_name"),
        cluster_files,
        ssh_key_installed,
    }))
}

/// The human form of an inspection.
pub fn render(i: &Inspection) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("image      {} ({} MiB)", i.image, i.bytes >> 20));
    line(format!("disk id    {}", i.disk_id));
    for p in &i.partitions {
        line(format!(
            "  part {}  {:<5} {:<8} type {:#04x}  start {:>10}  size {:>6} MiB",
            p.partition.number,
            p.filesystem,
            p.label,
            p.partition.kind,
            p.partition.start,
            p.partition.len >> 20
        ));
    }
    line(format!(
        "base       {}",
        i.base.as_deref().unwrap_or("unknown")
    ));
    match &i.bramble {
        None => line("bramble    not installed (not a Bramble image)".into()),
        Some(b) => {
            line(format!(
                "bramble    version {} ({} route)",
                b.version.as_deref().unwrap_or("unknown"),
                b.route.as_deref().unwrap_or("unknown")
            ));
            for bin in &b.binaries {
                line(format!(
                    "  {:<15} {:<8} {:>6} KiB",
                    bin.name,
                    bin.arch,
                    bin.bytes >> 10
                ));
            }
            line(format!(
                "cluster    {} id {}",
                b.cluster_name.as_deref().unwrap_or("?"),
                b.cluster_id.as_deref().unwrap_or("none")
            ));
            line(format!("  certs    {}", b.cluster_files.join(" ")));
            line(format!(
                "ssh key    {}",
                if b.ssh_key_installed {
                    "installed by first boot"
                } else {
                    "none"
                }
            ));
        }
    }
    match (&i.settings, &i.settings_error) {
        (Some(s), _) => line(format!(
            "settings   role {}, cluster {}, hostname {}, display {} on i2c-{} at {:#04x}",
            s.role.as_str(),
            s.cluster_name,
            if s.hostname.is_empty() {
                "from serial"
            } else {
                &s.hostname
            },
            format!("{:?}", s.display.enabled).to_lowercase(),
            s.display.bus,
            s.display.address
        )),
        (None, Some(e)) => line(format!("settings   INVALID: {e}")),
        (None, None) => line("settings   no bramble.toml".into()),
    }
    line(format!("enabled    {}", i.enabled_units.join(" ")));
    line(format!(
        "boot       i2c {}, memory cgroup {}, ssh marker {}",
        yes(i.boot.i2c_enabled),
        yes(i.boot.memory_cgroup),
        yes(i.boot.ssh_marker)
    ));
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
