//! `bramble masters [add|remove]`: a replicated group's masters, and membership changes
//! without downtime, through the leader (the operator certificate; `--master` may name any
//! master of the group: a standby leads the CLI to the leader).

use super::{print_json, Target};
use bramble::masters;
use bramble_client::OperatorClient;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum MastersCommand {
    /// Add a master to the group: start it first with `[ha]` (its id, the group's peers and
    /// itself, no `bootstrap`); the leader sends it the log (or a snapshot), waits until it
    /// has caught up (up to a minute), then makes it a voter. A master whose store was wiped
    /// rejoins the same way, after `bramble masters remove ID`.
    Add {
        /// The new master's `[ha] id` and replication address, `ID=HOST:PORT`.
        #[arg(value_parser = masters::parse_member)]
        member: (u64, String),
        /// Print the group afterwards as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a master from the group (refused for the last one, and while fewer than a
    /// majority of the masters left would be alive). Stop its process afterwards.
    Remove {
        /// The master's `[ha] id` (see `bramble masters`).
        id: u64,
        /// Print the group afterwards as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Lists the group (`command: None`) or changes it.
pub async fn run(
    target: &Target<'_>,
    command: Option<MastersCommand>,
    json: bool,
) -> anyhow::Result<()> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let (view, json) = match command {
        None => (op.masters().await?, json),
        Some(MastersCommand::Add {
            member: (id, address),
            json,
        }) => {
            eprintln!("adding master {id} at {address}: waiting for it to catch up…");
            let view = op.add_master(id, address).await?;
            eprintln!("master {id} is a voter of the group");
            (view, json)
        }
        Some(MastersCommand::Remove { id, json }) => {
            let view = op.remove_master(id).await?;
            eprintln!("master {id} was removed from the group; stop its process");
            (view, json)
        }
    };
    op.close();
    if json {
        print_json(&view)?;
    } else {
        print!("{}", masters::masters_table(&view));
    }
    Ok(())
}
