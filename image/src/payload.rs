//! What goes into an image, decided before anything is written: the aarch64 binaries, the
//! units, the configs, the node's certificates, and the boot partition's settings.
//!
//! The cluster directory holds the CA key and the framework and operator credentials too.
//! Only three files are ever read from it (`ca.pem`, `node.pem`, `node.key`), and
//! [`check_no_secrets`] refuses any edit carrying the bytes of the CA key or of the operator
//! or framework credentials, whatever path it would have: a card that is lost or lent out
//! must not be able to sign certificates or act as the operator.

use crate::elf;
use crate::ext4::Edit;
use bramble_node::{self as node, NodeSettings};
use bramble_proto::identity::{self, files, Role};
use std::path::{Path, PathBuf};

pub const BIN_DIR: &str = "/usr/local/bin";
pub const BINARIES: [&str; 3] = ["bramble-master", "bramble-agent", "bramble"];
pub const IMAGE_INFO: &str = "/etc/bramble/image.toml";
pub const MODULES_CONF: &str = "/etc/modules-load.d/bramble.conf";
pub const UDEV_RULE: &str = "/etc/udev/rules.d/60-bramble-i2c.rules";
/// systemd (>= 247) starts the clock no earlier than this file's modification time. A Pi has
/// no real-time clock: without network time it would boot at systemd's build date, before the
/// cluster certificates' start of validity, and every TLS handshake would fail. Written at
/// build time, after `bramble cluster init` made the certificates (backdated a day).
pub const CLOCK_EPOCH: &str = "/usr/lib/clock-epoch";
pub const SSH_UNIT: &str = "/usr/lib/systemd/system/ssh.service";
pub const RASPI_FIRMWARE_CUSTOM: &str = "/etc/default/raspi-firmware-custom";
pub const RASPI_EXTRA_CMDLINE: &str = "/etc/default/raspi-extra-cmdline";

/// The units, compiled in so the tool carries exactly the files in `systemd/`.
pub const UNITS: [(&str, &str); 4] = [
    (
        node::MASTER_UNIT,
        include_str!("../../systemd/bramble-master.service"),
    ),
    (
        node::AGENT_UNIT,
        include_str!("../../systemd/bramble-agent.service"),
    ),
    (
        node::FIRSTBOOT_UNIT,
        include_str!("../../systemd/bramble-firstboot.service"),
    ),
    (
        node::SERVICES_UNIT,
        include_str!("../../systemd/bramble-services.service"),
    ),
];

const UDEV_RULE_TEXT: &str = "\
# Bramble: /dev/i2c-* for group i2c (Raspberry Pi OS ships the same rule; plain Debian does
# not). The master runs as bramble, a member of i2c, to drive the front panel.
SUBSYSTEM==\"i2c-dev\", GROUP=\"i2c\", MODE=\"0660\"
";

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cluster directory {dir}: {detail}")]
    Cluster { dir: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Binary { path: PathBuf, detail: String },
    #[error("ssh key {path}: {detail}")]
    SshKey { path: PathBuf, detail: String },
    #[error("refusing to put {what} on the card (at {path}): cards carry the CA certificate and the node certificate and key only")]
    Secret { what: String, path: String },
}

/// The three files a card carries from the cluster directory.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub node_pem: Vec<u8>,
    pub node_key: Vec<u8>,
    pub cluster_id: String,
    /// The name given to `bramble cluster init --name`.
    pub name: String,
}

impl ClusterFiles {
    pub fn load(dir: &Path) -> Result<ClusterFiles, PayloadError> {
        let err = |detail: String| PayloadError::Cluster {
            dir: dir.to_path_buf(),
            detail,
        };
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                err(format!(
                    "reading {name}: {e} (make one with `bramble cluster init DIR`)"
                ))
            })
        };
        if !dir.join(files::CA_CERT).exists() {
            return Err(err(format!(
                "no {} here: make a cluster with `bramble cluster init DIR`",
                files::CA_CERT
            )));
        }
        let ca_der =
            identity::load_cert(&dir.join(files::CA_CERT)).map_err(|e| err(e.to_string()))?;
        let node_cert_path = dir.join(files::cert(Role::Node));
        let node_der = identity::load_cert(&node_cert_path).map_err(|e| err(e.to_string()))?;
        match identity::role_of(&node_der) {
            Ok(Role::Node) => {}
            Ok(other) => {
                return Err(err(format!(
                    "{} carries role {other}, not node",
                    node_cert_path.display()
                )))
            }
            Err(e) => return Err(err(format!("{}: {e}", node_cert_path.display()))),
        }
        identity::load_key(&dir.join(files::key(Role::Node))).map_err(|e| err(e.to_string()))?;
        let subject = identity::subject_of(&node_der);
        let name = subject
            .split_once('@')
            .map(|(_, n)| n.to_owned())
            .unwrap_or_else(|| "bramble".to_owned());
        Ok(ClusterFiles {
            dir: dir.to_path_buf(),
            ca_pem: read(files::CA_CERT)?,
            node_pem: read(&files::cert(Role::Node))?,
            node_key: read(&files::key(Role::Node))?,
            cluster_id: identity::cluster_id(&ca_der),
            name,
        })
    }
}

/// The three aarch64 binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub files: Vec<(&'static str, Vec<u8>)>,
}

impl Binaries {
    /// Reads `bramble-master`, `bramble-agent` and `bramble` from `dir`, refusing any that is
    /// not an aarch64 executable.
    pub fn load(dir: &Path) -> Result<Binaries, PayloadError> {
        let mut files = Vec::new();
        for name in BINARIES {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| PayloadError::Binary {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            if let Some(why) = elf::why_not_aarch64(&bytes) {
                return Err(PayloadError::Binary {
                    path,
                    detail: format!(
                        "{why}; build with `cargo build --release --target \
                         aarch64-unknown-linux-gnu` (or omit --binaries)"
                    ),
                });
            }
            files.push((name, bytes));
        }
        Ok(Binaries {
            dir: dir.to_path_buf(),
            files,
        })
    }
}

/// Reads an ssh public key file, refusing private keys and anything that is not one.
pub fn load_ssh_keys(path: &Path) -> Result<String, PayloadError> {
    let err = |detail: String| PayloadError::SshKey {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    load_ssh_keys_text(&text).map_err(err)
}

/// The public keys in `text`, one per line, or why it is not a public key file.
pub fn load_ssh_keys_text(text: &str) -> Result<String, String> {
    if text.contains("PRIVATE KEY") {
        return Err(
            "this is a private key; pass the public one (usually the same name + .pub)".into(),
        );
    }
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let looks_like_key = |l: &&str| {
        let mut words = l.split_whitespace();
        matches!(
            (words.next(), words.next()),
            (Some(kind), Some(_)) if kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-")
        )
    };
    if keys.is_empty() || !keys.iter().all(looks_like_key) {
        return Err(
            "expected OpenSSH public keys, one per line (ssh-ed25519 AAAA... comment)".into(),
        );
    }
    Ok(keys.join("\n") + "\n")
}

/// How the base image is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Raspberry Pi OS as downloaded: settings in `config.txt` and `cmdline.txt`.
    RaspiOs,
    /// Built from Debian packages: `raspi-firmware` regenerates `config.txt` and
    /// `cmdline.txt` on every kernel update from `/etc/default/raspi-*`.
    Debian,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::RaspiOs => "raspios",
            Route::Debian => "debian",
        }
    }
}

/// Everything one build writes into the root partition, apart from edits of files the base
/// already has (those need the base's text, see `build.rs`).
pub struct RootPayload<'a> {
    pub cluster: &'a ClusterFiles,
    pub binaries: &'a Binaries,
    pub ssh_keys: Option<&'a str>,
    pub base: &'a str,
    pub route: Route,
}

impl RootPayload<'_> {
    pub fn edits(&self) -> Vec<Edit> {
        let mut edits = Vec::new();
        for (name, bytes) in &self.binaries.files {
            edits.push(Edit::file(
                &format!("{BIN_DIR}/{name}"),
                bytes.clone(),
                0o755,
            ));
        }
        for (name, text) in UNITS {
            edits.push(Edit::file(
                &format!("/{}/{name}", node::UNIT_DIR),
                text,
                0o644,
            ));
        }
        // The image enables first boot and the agent (every node runs one) and ssh; first
        // boot enables the master on the master node.
        for name in [node::FIRSTBOOT_UNIT, node::AGENT_UNIT] {
            edits.push(Edit::Symlink {
                path: format!("/{}/{name}", node::WANTS_DIR),
                target: format!("/{}/{name}", node::UNIT_DIR),
            });
        }
        edits.push(Edit::Symlink {
            path: format!("/{}/ssh.service", node::WANTS_DIR),
            target: SSH_UNIT.to_owned(),
        });
        edits.push(Edit::Symlink {
            path: format!("/{}/sshd.service", node::UNIT_DIR),
            target: SSH_UNIT.to_owned(),
        });

        let settings = NodeSettings {
            cluster_name: self.cluster.name.clone(),
            ..NodeSettings::default()
        };
        edits.push(Edit::Dir {
            path: "/etc/bramble".into(),
            mode: 0o755,
        });
        edits.push(Edit::file(
            "/etc/bramble/agent.toml",
            node::agent_toml(&settings),
            0o644,
        ));
        edits.push(Edit::file(
            "/etc/bramble/master.toml",
            node::master_toml(&settings),
            0o644,
        ));
        let cluster_dir = format!("/{}", node::CLUSTER_DIR);
        edits.push(Edit::Dir {
            path: cluster_dir.clone(),
            mode: 0o750,
        });
        edits.push(Edit::file(
            &format!("{cluster_dir}/{}", files::CA_CERT),
            self.cluster.ca_pem.clone(),
            0o644,
        ));
        edits.push(Edit::file(
            &format!("{cluster_dir}/{}", files::cert(Role::Node)),
            self.cluster.node_pem.clone(),
            0o644,
        ));
        edits.push(Edit::file(
            &format!("{cluster_dir}/{}", files::key(Role::Node)),
            self.cluster.node_key.clone(),
            0o600,
        ));
        let keys_path = format!("/{}", node::IMAGE_AUTHORIZED_KEYS);
        match self.ssh_keys {
            Some(keys) => edits.push(Edit::file(&keys_path, keys, 0o644)),
            None => edits.push(Edit::Remove { path: keys_path }),
        }
        edits.push(Edit::file(
            &format!("/{}", node::SYSUSERS_FILE),
            node::SYSUSERS_CONF,
            0o644,
        ));
        edits.push(Edit::file(
            MODULES_CONF,
            "# Bramble: the I2C bus as /dev/i2c-1, for the front panel\ni2c-dev\n",
            0o644,
        ));
        edits.push(Edit::file(UDEV_RULE, UDEV_RULE_TEXT, 0o644));
        edits.push(Edit::file(CLOCK_EPOCH, "", 0o644));
        edits.push(Edit::file(IMAGE_INFO, self.image_info(), 0o644));
        edits
    }

    /// `/etc/bramble/image.toml`: what `inspect` reports about the build.
    fn image_info(&self) -> String {
        #[derive(serde::Serialize)]
        struct Info<'a> {
            version: &'a str,
            arch: &'a str,
            cluster_id: &'a str,
            cluster_name: &'a str,
            base: &'a str,
            route: &'a str,
            binaries: std::collections::BTreeMap<&'a str, String>,
        }
        let binaries = self
            .binaries
            .files
            .iter()
            .map(|(name, bytes)| (*name, sha256_hex(bytes)))
            .collect();
        let body = toml::to_string(&Info {
            version: env!("CARGO_PKG_VERSION"),
            arch: "aarch64",
            cluster_id: &self.cluster.cluster_id,
            cluster_name: &self.cluster.name,
            base: self.base,
            route: self.route.as_str(),
            binaries,
        })
        .unwrap_or_default();
        format!("# Written by bramble-image build; read by bramble-image inspect.\n# [binaries]: sha256 of each file in {BIN_DIR}.\n{body}")
    }
}

const PEM_START: &[u8] = b"-----BEGIN";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Refuses edits that would carry the CA key or the operator's or a framework's
/// credentials, compared by content (a renamed copy is caught too).
pub fn check_no_secrets(edits: &[Edit], cluster_dir: &Path) -> Result<(), PayloadError> {
    let mut forbidden: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names = vec![files::CA_KEY.to_owned()];
    for role in [Role::Operator, Role::Framework] {
        names.push(files::cert(role));
        names.push(files::key(role));
    }
    for name in names {
        if let Ok(bytes) = std::fs::read(cluster_dir.join(&name)) {
            let trimmed = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
            if !trimmed.is_empty() {
                forbidden.push((name, trimmed));
            }
        }
    }
    for e in edits {
        let Edit::File { path, contents, .. } = e else {
            continue;
        };
        let file_name = path.rsplit('/').next().unwrap_or(path);
        if file_name == files::CA_KEY || file_name.starts_with("operator.") {
            return Err(PayloadError::Secret {
                what: file_name.to_owned(),
                path: path.clone(),
            });
        }
        // The secrets are PEM: look only where a PEM block starts.
        let starts: Vec<usize> = contents
            .windows(PEM_START.len())
            .enumerate()
            .filter(|(_, w)| *w == PEM_START)
            .map(|(i, _)| i)
            .collect();
        for (name, secret) in &forbidden {
            if starts.iter().any(|&i| contents[i..].starts_with(secret)) {
                return Err(PayloadError::Secret {
                    what: format!("the contents of {name}"),
                    path: path.clone(),
                });
            }
        }
    }
    Ok(())
}
