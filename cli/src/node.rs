//! `bramble node firstboot`: turns a freshly flashed card into a named cluster node, once.
//!
//! `bramble-firstboot.service` runs this before the master and agent start. Everything it
//! touches is under a `root` directory (`/` on a Pi, a temp dir in tests) and the boot
//! partition's directory, so the whole first boot is testable without a Pi:
//!
//! 1. settings from `bramble.toml` on the boot partition (the one file a user edits from any
//!    computer before first boot; missing means defaults, malformed is an error and nothing
//!    is changed, so the next boot tries again);
//! 2. hostname `bramble-XXXX` from the board serial (machine id when there is none, e.g. under
//!    QEMU) unless `bramble.toml` names one;
//! 3. users from `/usr/lib/sysusers.d/bramble.conf` via `systemd-sysusers`, then the node key
//!    made readable to the `bramble` group (the master runs as `bramble`);
//! 4. the role: `master`, `agent`, or `auto` = master when an SSD1306 answers on I2C;
//! 5. `/etc/bramble/agent.toml` everywhere, `master.toml` on the master; the master's unit is
//!    enabled only there (the agent's is enabled by the image: every node runs an agent);
//! 6. the image's ssh key appended to root's `authorized_keys` (works whether the base sets
//!    users up with Bookworm's `userconf` or Trixie's cloud-init, because it needs neither);
//! 7. a marker file, written last: a failed first boot is retried on the next boot.
//!
//! The schema and template of `bramble.toml`, and the config files rendered from it, live
//! here too so that `bramble-image` (which writes and inspects them) and the node agree.

use bramble_firmware::DisplayConfig;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The settings file on the boot partition.
pub const SETTINGS_FILE: &str = "bramble.toml";
/// Written (relative to the root) when first boot has completed; the unit is conditioned on
/// its absence.
pub const DONE_MARKER: &str = "var/lib/bramble/firstboot.done";
/// Where the image keeps the ssh public keys first boot installs for root.
pub const IMAGE_AUTHORIZED_KEYS: &str = "etc/bramble/ssh_authorized_keys";
/// The users and groups Bramble needs, created by `systemd-sysusers`.
pub const SYSUSERS_FILE: &str = "usr/lib/sysusers.d/bramble.conf";
/// Where the image installs Bramble's units (the admin's unit directory: it wins over
/// anything a package ships, and a package upgrade never touches it).
pub const UNIT_DIR: &str = "etc/systemd/system";
/// Directory of the units `multi-user.target` pulls in.
pub const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
pub const MASTER_UNIT: &str = "bramble-master.service";
pub const AGENT_UNIT: &str = "bramble-agent.service";
pub const FIRSTBOOT_UNIT: &str = "bramble-firstboot.service";
/// The master's user (in group `i2c` for the panel) and the user tasks run as.
pub const MASTER_USER: &str = "bramble";
pub const TASK_USER: &str = "bramble-task";
pub const CLUSTER_DIR: &str = "etc/bramble/cluster";

/// `systemd-sysusers` input: declarative, idempotent, and it picks free system ids on the
/// card itself, so the image never edits `/etc/passwd`, `shadow`, `group` and `gshadow` by
/// hand (four files that must agree, with id ranges the base chose).
pub const SYSUSERS_CONF: &str = "\
# Bramble's users (systemd-sysusers, see sysusers.d(5)). Applied by bramble-firstboot.
# i2c exists on Raspberry Pi OS already; plain Debian needs it for /dev/i2c-*.
g i2c -
u bramble - \"Bramble master\" /var/lib/bramble /usr/sbin/nologin
m bramble i2c
u bramble-task - \"Bramble tasks\" /nonexistent /usr/sbin/nologin
";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Config(#[from] bramble_proto::config::ConfigError),
    #[error(
        "no board serial ({0}/proc/device-tree/serial-number, /proc/cpuinfo) and no machine id \
         (/etc/machine-id): cannot make a unique hostname; set hostname in bramble.toml"
    )]
    NoIdentity(String),
    #[error("{0}")]
    Users(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NodeError {
    let path = path.to_path_buf();
    move |source| NodeError::Io { what, path, source }
}

// ---------------------------------------------------------------------------------------
// bramble.toml

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

fn toml_string(s: &str) -> String {
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

// ---------------------------------------------------------------------------------------
// Files rendered from the settings

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
    format!(
        "# Written by bramble-firstboot from bramble.toml; edit freely, it is not rewritten.\n{body}"
    )
}

/// `/etc/bramble/agent.toml`: tasks run as the unprivileged task user, never as root.
pub fn agent_toml(_settings: &NodeSettings) -> String {
    format!(
        "# Written by bramble-firstboot from bramble.toml; edit freely, it is not rewritten.\n\
         # The agent runs as root (cgroups) and starts every task as this user.\n\
         task_user = {}\n",
        toml_string(TASK_USER)
    )
}

// ---------------------------------------------------------------------------------------
// Identity

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

// ---------------------------------------------------------------------------------------
// First boot

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
    write_file(
        &etc.join("agent.toml"),
        agent_toml(&settings).as_bytes(),
        0o644,
    )?;
    let master_conf = etc.join("master.toml");
    if is_master {
        write_file(&master_conf, master_toml(&settings).as_bytes(), 0o644)?;
    } else {
        remove_if_present(&master_conf)?;
    }

    let mut enabled_units = vec![AGENT_UNIT.to_owned()];
    enable_unit(root, AGENT_UNIT)?;
    if is_master {
        enable_unit(root, MASTER_UNIT)?;
        enabled_units.push(MASTER_UNIT.to_owned());
    } else {
        remove_if_present(&root.join(WANTS_DIR).join(MASTER_UNIT))?;
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
        // the master is ordered after this unit, so waiting for it here would deadlock.
        run_tool(
            "systemctl",
            &["start", "--no-block", MASTER_UNIT],
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

fn create_users(opts: &FirstbootOptions) -> Result<(), NodeError> {
    if !opts.root.join(SYSUSERS_FILE).exists() {
        // Not from our image: the admin's sysusers directory (/usr may be read-only here).
        let conf = opts.root.join("etc/sysusers.d/bramble.conf");
        write_file(&conf, SYSUSERS_CONF.as_bytes(), 0o644)?;
    }
    if opts.live {
        if run_tool("systemd-sysusers", &[], "creating users").is_ok() {
            return Ok(());
        }
        // Without systemd-sysusers (a trimmed base): the shadow tools do the same.
        tracing::warn!("systemd-sysusers failed; creating users with groupadd/useradd");
        return create_users_with_shadow_tools();
    }
    let root = opts.root.display().to_string();
    run_tool(
        "systemd-sysusers",
        &["--root", &root],
        "creating users under the root directory",
    )
}

fn create_users_with_shadow_tools() -> Result<(), NodeError> {
    let known = |db: &str, name: &str| {
        std::process::Command::new("getent")
            .args([db, name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !known("group", "i2c") {
        run_tool("groupadd", &["--system", "i2c"], "creating group i2c")?;
    }
    if !known("passwd", MASTER_USER) {
        run_tool(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--groups",
                "i2c",
                "--home-dir",
                "/var/lib/bramble",
                "--shell",
                "/usr/sbin/nologin",
                MASTER_USER,
            ],
            "creating user bramble",
        )?;
    }
    if !known("passwd", TASK_USER) {
        run_tool(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                TASK_USER,
            ],
            "creating user bramble-task",
        )?;
    }
    Ok(())
}

fn run_tool(program: &str, args: &[&str], what: &str) -> Result<(), NodeError> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NodeError::Users(format!("{what}: running {program}: {e}")))?;
    if !out.status.success() {
        return Err(NodeError::Users(format!(
            "{what}: {program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The id of `name` in a `/etc/group`-style file (name:x:id:...).
pub fn id_in(db_text: &str, name: &str) -> Option<u32> {
    db_text.lines().find_map(|l| {
        let mut fields = l.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The master runs as `bramble`: it needs the node key, nobody else does.
fn share_node_key(root: &Path) -> Result<(), NodeError> {
    let group_path = root.join("etc/group");
    let groups = std::fs::read_to_string(&group_path).map_err(io_err("reading", &group_path))?;
    let gid = id_in(&groups, MASTER_USER).ok_or_else(|| {
        NodeError::Users(format!(
            "group {MASTER_USER} missing from {} after creating users",
            group_path.display()
        ))
    })?;
    let dir = root.join(CLUSTER_DIR);
    for (path, mode) in [(dir.clone(), 0o750), (dir.join("node.key"), 0o640)] {
        if !path.exists() {
            continue;
        }
        std::os::unix::fs::chown(&path, Some(0), Some(gid)).map_err(io_err("chown", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

fn enable_unit(root: &Path, unit: &str) -> Result<(), NodeError> {
    let link = root.join(WANTS_DIR).join(unit);
    let target = Path::new("/").join(UNIT_DIR).join(unit);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    remove_if_present(&link)?;
    let dir = root.join(WANTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    std::os::unix::fs::symlink(&target, &link).map_err(io_err("linking", &link))
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

/// Writes `path` whole (temp file + rename), creating its directory.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), NodeError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = path.with_extension("bramble-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("writing", &tmp))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(io_err("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
}

fn remove_if_present(path: &Path) -> Result<(), NodeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
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

// ---------------------------------------------------------------------------------------
// Command line

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Name this Pi, pick its role, write its configs and enable its services (once).
    Firstboot {
        /// Root of the system to set up (tests use a directory; `/` acts on this machine).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// The boot partition (default: ROOT/boot/firmware, else ROOT/boot).
        #[arg(long)]
        boot: Option<PathBuf>,
        /// Role to use when bramble.toml says `auto` and the bus cannot be asked (tests).
        #[arg(long, hide = true)]
        assume_panel: Option<bool>,
    },
}

pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Firstboot {
            root,
            boot,
            assume_panel,
        } => {
            let mut opts = FirstbootOptions::for_root(&root);
            if let Some(boot) = boot {
                opts.boot_dir = boot;
            }
            let mut probe = |d: &DisplayConfig| match assume_panel {
                Some(answer) => answer,
                None => probe_panel_on_bus(d),
            };
            match firstboot(&opts, &mut probe)? {
                Some(report) => println!("{}", serde_json::to_string(&report)?),
                None => println!("first boot already done"),
            }
            Ok(())
        }
    }
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

    #[test]
    fn ids_are_read_from_group_files() {
        let groups = "root:x:0:\ni2c:x:998:bramble\nbramble:x:997:\n";
        assert_eq!(id_in(groups, "bramble"), Some(997));
        assert_eq!(id_in(groups, "i2c"), Some(998));
        assert_eq!(id_in(groups, "bramble-task"), None);
    }

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
        assert_eq!(agent["task_user"].as_str(), Some(TASK_USER));
        // The master must accept what first boot writes for it.
        let parsed: bramble_master::config::MasterConfig =
            toml::from_str(&master_toml(&s)).unwrap();
        assert_eq!(parsed.name, "shelf");
    }
}
