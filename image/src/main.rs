//! `bramble-image`: parses arguments and calls the library (build, inspect, flash).

use anyhow::Context;
use bramble::node::RoleSetting;
use bramble_image::bake::{self, BuildOptions};
use bramble_image::flash::{self, FlashOptions};
use bramble_image::inspect;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Bake Bramble into a Raspberry Pi image (no mounts, no loop devices), inspect one, flash one
#[derive(Debug, Parser)]
#[command(name = "bramble-image", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a flashable image: a base image plus Bramble, its units, configs and certificates.
    Build {
        /// Cluster directory from `bramble cluster init` (only ca.pem, node.pem and node.key
        /// go on the card).
        #[arg(long)]
        cluster: PathBuf,
        /// The image to write (a `.sha256` is written next to it).
        #[arg(long)]
        out: PathBuf,
        /// Raspberry Pi OS Lite arm64 (Bookworm or newer), `.img` or `.img.xz`, as downloaded.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Build the base from Debian packages (image/debian/mkbase.sh) instead of --base.
        #[arg(long)]
        debian: bool,
        /// ssh public key(s) first boot installs for root (Pi OS has no default user).
        #[arg(long)]
        ssh_key: Option<PathBuf>,
        /// Role written to bramble.toml: master, agent or auto (default: auto).
        #[arg(long, value_parser = parse_role)]
        role: Option<RoleSetting>,
        /// Also write OUT.xz (and its .sha256) for release.
        #[arg(long)]
        xz: bool,
        /// Directory with prebuilt aarch64 bramble-master, bramble-agent and bramble
        /// (default: cross-build them from the workspace).
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// The Bramble workspace to cross-build from.
        #[arg(long, default_value = default_workspace())]
        workspace: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show what an image holds: partitions, Bramble version and arch, cluster, role, units.
    Inspect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write an image to a card and verify it; optionally set this card's role and hostname.
    Flash {
        image: PathBuf,
        /// The card's whole disk, e.g. /dev/sdb or /dev/mmcblk0 (a regular file works too).
        device: PathBuf,
        #[arg(long, value_parser = parse_role)]
        role: Option<RoleSetting>,
        #[arg(long)]
        hostname: Option<String>,
        /// Write even though the kernel does not call the disk removable. Never overrides
        /// the refusal of a mounted disk or of the one holding /.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

fn default_workspace() -> &'static str {
    // The workspace this tool was built in: image/ is one level below it.
    concat!(env!("CARGO_MANIFEST_DIR"), "/..")
}

fn parse_role(s: &str) -> Result<RoleSetting, String> {
    RoleSetting::parse(s).ok_or_else(|| format!("{s:?}: use master, agent or auto"))
}

fn main() -> anyhow::Result<()> {
    bramble_proto::logging::init(None);
    match Cli::parse().command {
        Command::Build {
            cluster,
            out,
            base,
            debian,
            ssh_key,
            role,
            xz,
            binaries,
            workspace,
            json,
        } => {
            let report = bake::build(&BuildOptions {
                cluster,
                out: out.clone(),
                base,
                debian,
                ssh_key,
                role,
                xz,
                binaries,
                workspace,
            })
            .with_context(|| format!("building {}", out.display()))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "built {} ({} MiB) from {} in {:.1} s",
                    report.out.display(),
                    report.bytes >> 20,
                    report.base,
                    report.seconds
                );
                println!("sha256 {}", report.sha256);
                println!("cluster id {}", report.cluster_id);
                for (name, bytes) in &report.binaries {
                    println!("  {name:<15} {:>6} KiB (aarch64)", bytes >> 10);
                }
                if let Some(xz) = &report.xz {
                    println!("release {}", xz.display());
                }
            }
        }
        Command::Inspect { image, json } => {
            let i = inspect::inspect(&image)
                .with_context(|| format!("inspecting {}", image.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{}", inspect::render(&i));
            }
        }
        Command::Flash {
            image,
            device,
            role,
            hostname,
            force,
            json,
        } => {
            let report = flash::flash(&FlashOptions {
                image: image.clone(),
                device: device.clone(),
                role,
                hostname,
                force,
                progress: std::io::stderr().is_terminal() && !json,
            })
            .with_context(|| format!("flashing {} to {}", image.display(), device.display()))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "wrote and verified {} MiB to {} ({:.1} s writing, {:.1} s verifying)",
                    report.bytes >> 20,
                    report.device.display(),
                    report.write_seconds,
                    report.verify_seconds
                );
            }
        }
    }
    Ok(())
}
