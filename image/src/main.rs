//! `bramble-image`: parses arguments and calls the library (build, inspect, flash).

use anyhow::Context;
use bramble_image::bake::{self, BuildOptions};
use bramble_image::flash::{self, FlashOptions};
use bramble_image::inspect;
use bramble_node::RoleSetting;
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
        #[command(flatten)]
        options: BuildOptions,
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
        #[arg(long)]
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

fn main() -> anyhow::Result<()> {
    bramble_proto::startup::plain_error_reports();
    bramble_proto::logging::init(None);
    match Cli::parse().command {
        Command::Build { options, json } => {
            let report = bake::build(&options)
                .with_context(|| format!("building {}", options.out.display()))?;
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
