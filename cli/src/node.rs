//! `bramble node firstboot`: the command line over `bramble-node`, which owns the card's schema,
//! paths and the first-boot steps. Here: the arguments, and printing what first boot did.

use bramble_firmware::DisplayConfig;
use bramble_node::{firstboot, probe_panel_on_bus, FirstbootOptions};
use std::path::PathBuf;

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
