//! `bramble-image build`: base image in, Bramble image out.
//!
//! Order matters for "bad input loses nothing": every input (cluster directory, ssh key,
//! binaries) is checked before the base is copied; the base is only ever read; the output is
//! deleted again if anything fails after it was created. The partition table is never
//! written, so the disk id and the `root=PARTUUID=` references of the base stay valid.

use crate::edits::{self, CGROUP_ARGS, I2C_DTPARAM};
use crate::ext4::{Edit, RootFs};
use crate::fat::BootFs;
use crate::imagefile;
use crate::osrelease;
use crate::part::Table;
use crate::payload::{self, Binaries, ClusterFiles, RootPayload, Route};
use crate::settings::{self, SettingsUpdate};
use crate::BuildError;
use bramble_node::RoleSetting;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const CROSS_TARGET: &str = "aarch64-unknown-linux-gnu";
const I2C_WHY: &str = "Bramble: the I2C bus on the header, for the front panel (SSD1306)";

/// What to build. Also the arguments of `bramble-image build` (the doc comments are its help).
#[derive(Debug, Clone, clap::Args)]
pub struct BuildOptions {
    /// Cluster directory from `bramble cluster init` (only ca.pem, node.pem and node.key
    /// go on the card).
    #[arg(long)]
    pub cluster: PathBuf,
    /// The image to write (a `.sha256` is written next to it).
    #[arg(long)]
    pub out: PathBuf,
    /// Raspberry Pi OS Lite arm64 (Bookworm or newer), `.img` or `.img.xz`, as downloaded.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Build the base from Debian packages (image/debian/mkbase.sh) instead of --base.
    #[arg(long)]
    pub debian: bool,
    /// ssh public key(s) first boot installs for root (Pi OS has no default user).
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// Role written to bramble.toml: master, agent or auto (default: auto).
    #[arg(long)]
    pub role: Option<RoleSetting>,
    /// Also write OUT.xz (and its .sha256) for release.
    #[arg(long)]
    pub xz: bool,
    /// Directory with prebuilt aarch64 bramble-master, bramble-agent and bramble
    /// (default: cross-build them from the workspace).
    #[arg(long)]
    pub binaries: Option<PathBuf>,
    /// The Bramble workspace to cross-build from.
    // The workspace this tool was built in: image/ is one level below it.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    pub workspace: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub xz: Option<PathBuf>,
    pub cluster_id: String,
    pub base: String,
    pub route: &'static str,
    pub binaries: Vec<(String, u64)>,
    pub seconds: f64,
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let route = match (&opts.base, opts.debian) {
        (Some(_), true) => return Err(BuildError::Usage("--base and --debian exclude each other".into())),
        (None, false) => {
            return Err(BuildError::Usage(
                "give --base RPIOS.img[.xz] (Raspberry Pi OS Lite arm64, Bookworm or newer) or --debian".into(),
            ))
        }
        (Some(_), false) => Route::RaspiOs,
        (None, true) => Route::Debian,
    };
    let cluster = ClusterFiles::load(&opts.cluster)?;
    let ssh_keys = opts
        .ssh_key
        .as_deref()
        .map(payload::load_ssh_keys)
        .transpose()?;
    let bin_dir = match &opts.binaries {
        Some(dir) => dir.clone(),
        None => cross_build(&opts.workspace)?,
    };
    let binaries = Binaries::load(&bin_dir)?;
    if let Some(base) = &opts.base {
        if same_file(base, &opts.out) {
            return Err(BuildError::Usage(format!(
                "--out {} is the base image itself; the base is only read, write elsewhere",
                opts.out.display()
            )));
        }
    }

    let result = (|| {
        match (&opts.base, route) {
            (Some(base), _) => {
                tracing::info!(base = %base.display(), out = %opts.out.display(), "copying the base image");
                imagefile::copy_sparse(base, &opts.out)?;
            }
            (None, _) => run_mkbase(&opts.workspace, &opts.out)?,
        }
        customise(opts, route, &cluster, &binaries, ssh_keys.as_deref())
    })();
    let base = match result {
        Ok(base) => base,
        Err(e) => {
            let _ = std::fs::remove_file(&opts.out);
            return Err(e);
        }
    };

    let bytes = std::fs::metadata(&opts.out)
        .map_err(|e| BuildError::io("reading", &opts.out, e))?
        .len();
    let sha256 = imagefile::write_sha256(&opts.out)?;
    let xz = if opts.xz {
        tracing::info!("compressing (xz, all cores)");
        let xz = imagefile::compress_xz(&opts.out)?;
        imagefile::write_sha256(&xz)?;
        Some(xz)
    } else {
        None
    };
    Ok(BuildReport {
        out: opts.out.clone(),
        bytes,
        sha256,
        xz,
        cluster_id: cluster.cluster_id.clone(),
        base,
        route: route.as_str(),
        binaries: binaries
            .files
            .iter()
            .map(|(n, b)| ((*n).to_owned(), b.len() as u64))
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Edits the image at `opts.out` in place; returns the base's release name.
fn customise(
    opts: &BuildOptions,
    route: Route,
    cluster: &ClusterFiles,
    binaries: &Binaries,
    ssh_keys: Option<&str>,
) -> Result<String, BuildError> {
    let out = &opts.out;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .map_err(|e| BuildError::io("opening", out, e))?;
    let len = file
        .metadata()
        .map_err(|e| BuildError::io("reading", out, e))?
        .len();
    let table = Table::read(&mut file, out)?;
    let (boot_part, root_part) = table.pi_layout(out, len)?;

    let root = RootFs::open(out, root_part)?;
    let os_release = root
        .read_resolving("/etc/os-release")?
        .ok_or_else(|| BuildError::Base("the root partition has no /etc/os-release".into()))?;
    let os_release = String::from_utf8_lossy(&os_release).into_owned();
    osrelease::check_supported(&os_release).map_err(BuildError::Base)?;
    let base = osrelease::describe(&osrelease::parse(&os_release));
    if root.list("/usr/lib/aarch64-linux-gnu")?.is_none() {
        return Err(BuildError::Base(format!(
            "{base} has no arm64 userland (/usr/lib/aarch64-linux-gnu is missing): use the \
             arm64 (64-bit) Raspberry Pi OS Lite image"
        )));
    }
    tracing::info!(base = %base, disk_id = %table.disk_id, "base accepted");

    // Boot partition.
    let boot = BootFs::open(&file, boot_part)?;
    let need = |name: &str, got: Option<Vec<u8>>| {
        got.map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| {
                BuildError::Base(format!(
                    "the boot partition has no {name}: is this a Raspberry Pi image?"
                ))
            })
    };
    let config = need("config.txt", boot.read("config.txt")?)?;
    let cmdline = need("cmdline.txt", boot.read("cmdline.txt")?)?;
    // On the Debian route raspi-firmware regenerates both files from /etc/default/raspi-*
    // (written below) on every kernel update; editing them too makes the settings hold
    // from the very first boot, before any such update.
    let new_config = edits::ensure_config_setting(&config, I2C_DTPARAM, I2C_WHY, true);
    if new_config != config {
        boot.write("config.txt", new_config.as_bytes())?;
    }
    let new_cmdline = edits::ensure_cmdline_args(&cmdline, &CGROUP_ARGS)?;
    if new_cmdline != cmdline {
        boot.write("cmdline.txt", new_cmdline.as_bytes())?;
    }
    // Raspberry Pi OS enables sshd at boot when this file exists (and deletes it).
    if boot.read("ssh")?.is_none() {
        boot.write("ssh", b"")?;
    }
    let existing = boot
        .read(bramble_node::SETTINGS_FILE)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let (settings_text, _) = settings::update(
        existing.as_deref(),
        &SettingsUpdate {
            cluster_name: Some(&cluster.name),
            role: opts.role,
            hostname: None,
        },
    )?;
    if existing.as_deref() != Some(settings_text.as_str()) {
        boot.write(bramble_node::SETTINGS_FILE, settings_text.as_bytes())?;
    }
    boot.close()?;

    // Root partition.
    let mut root_edits = RootPayload {
        cluster,
        binaries,
        ssh_keys,
        base: &base,
        route,
    }
    .edits();
    if route == Route::Debian {
        let custom = text_or_empty(&root, payload::RASPI_FIRMWARE_CUSTOM)?;
        root_edits.push(Edit::file(
            payload::RASPI_FIRMWARE_CUSTOM,
            edits::ensure_config_setting(&custom, I2C_DTPARAM, I2C_WHY, false),
            0o644,
        ));
        let extra = text_or_empty(&root, payload::RASPI_EXTRA_CMDLINE)?;
        root_edits.push(Edit::file(
            payload::RASPI_EXTRA_CMDLINE,
            edits::ensure_extra_cmdline(&extra, &CGROUP_ARGS),
            0o644,
        ));
    }
    payload::check_no_secrets(&root_edits, &cluster.dir)?;
    tracing::info!(files = root_edits.len(), "writing the root partition");
    root.apply(&root_edits)?;
    file.sync_all()
        .map_err(|e| BuildError::io("syncing", out, e))?;
    Ok(base)
}

fn text_or_empty(root: &RootFs, path: &str) -> Result<String, BuildError> {
    Ok(root
        .read(path)?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `cargo build --release --target aarch64-unknown-linux-gnu` of the three binaries in
/// `workspace`; returns the directory holding them.
pub fn cross_build(workspace: &Path) -> Result<PathBuf, BuildError> {
    if !workspace.join("Cargo.toml").exists() {
        return Err(BuildError::Usage(format!(
            "no Bramble workspace at {} to cross-build from: pass --workspace DIR or \
             --binaries DIR (aarch64 builds of bramble-master, bramble-agent, bramble)",
            workspace.display()
        )));
    }
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace).args([
        "build",
        "--release",
        "--target",
        CROSS_TARGET,
        "-p",
        "bramble-master",
        "-p",
        "bramble-agent",
        "-p",
        "bramble",
    ]);
    // Debian's cross linker, unless the environment (or .cargo/config.toml) chose one.
    let linker_var = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
    if std::env::var_os(linker_var).is_none() && !workspace.join(".cargo/config.toml").exists() {
        cmd.env(linker_var, "aarch64-linux-gnu-gcc");
    }
    tracing::info!(workspace = %workspace.display(), "cross-building for {CROSS_TARGET}");
    let status = cmd
        .status()
        .map_err(|e| BuildError::Cross(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(BuildError::Cross(format!(
            "cargo build for {CROSS_TARGET} failed ({status}); needs `rustup target add \
             {CROSS_TARGET}` and `apt-get install gcc-aarch64-linux-gnu`"
        )));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target_dir.join(CROSS_TARGET).join("release"))
}

/// `image/debian/mkbase.sh OUT`: the Debian-packages base (see that script).
fn run_mkbase(workspace: &Path, out: &Path) -> Result<(), BuildError> {
    let script = workspace.join("image/debian/mkbase.sh");
    if !script.exists() {
        return Err(BuildError::Usage(format!(
            "--debian needs the base recipe {}, which is missing (use --base with a Raspberry \
             Pi OS Lite image instead)",
            script.display()
        )));
    }
    tracing::info!(script = %script.display(), "building the Debian base image (mmdebstrap)");
    let status = std::process::Command::new(&script)
        .arg(out)
        .status()
        .map_err(|e| BuildError::Cross(format!("running {}: {e}", script.display())))?;
    if !status.success() {
        return Err(BuildError::Base(format!(
            "{} {} failed ({status})",
            script.display(),
            out.display()
        )));
    }
    Ok(())
}
