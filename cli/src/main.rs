//! `bramble`: the operator's command line. Thin glue over the libraries.

mod cluster;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bramble",
    version,
    about = "Bramble: a cluster kernel for Raspberry Pi clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or inspect a cluster identity (CA and role certificates).
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bramble_proto::logging::init(None);
    match cli.command {
        Command::Cluster { command } => cluster::run(command),
    }
}
