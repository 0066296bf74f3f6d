//! `bramble kv ls|get|put|rm FRAMEWORK …`: a framework's key/value state in the master, read
//! and written by an operator (the SDK's `put_state`/`delete_state` from the outside): the
//! tutorial's hello-bramble takes its instance count from it, and a stuck framework's state can
//! be looked at and fixed by hand. Writes take `--version N` for a compare-and-set.

use super::{print_json, Target};
use anyhow::{bail, Context};
use bramble_client::OperatorClient;
use bramble_proto::framework_state::{StateEntry, StateWrite};
use bramble_proto::messages::ClusterState;
use bramble_proto::FrameworkId;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// The keys (starting with PREFIX, if given), with their versions and sizes.
    Ls {
        /// The framework's id, or its name when one framework has it.
        framework: String,
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One key's value, printed as it is stored.
    Get {
        /// The framework's id, or its name when one framework has it.
        framework: String,
        /// The key.
        key: String,
    },
    /// Sets a key; with --version, only if the key is at that version now (0: only if absent).
    Put {
        /// The framework's id, or its name when one framework has it.
        framework: String,
        /// The key.
        key: String,
        /// The value to store.
        value: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Removes a key; with --version, only if it is at that version now.
    Rm {
        /// The framework's id, or its name when one framework has it.
        framework: String,
        /// The key.
        key: String,
        #[arg(long)]
        version: Option<u64>,
    },
}

pub async fn run(target: &Target<'_>, command: KvCommand) -> anyhow::Result<()> {
    let mut op =
        OperatorClient::connect_as(target.cluster, target.principal, target.master).await?;
    let state = op.state().await?;
    let result = match command {
        KvCommand::Ls {
            framework,
            prefix,
            json,
        } => {
            let fw = framework_named(&state, &framework)?;
            let entries = op
                .read_framework_state(&fw, prefix.as_deref().unwrap_or(""))
                .await?;
            print_entries(&entries, json)
        }
        KvCommand::Get { framework, key } => {
            let fw = framework_named(&state, &framework)?;
            let entries = op.read_framework_state(&fw, &key).await?;
            match entries.into_iter().find(|e| e.key == key) {
                Some(entry) => {
                    println!("{}", String::from_utf8_lossy(&entry.value));
                    Ok(())
                }
                None => bail!("framework {fw} has no key {key:?}"),
            }
        }
        KvCommand::Put {
            framework,
            key,
            value,
            version,
        } => {
            let fw = framework_named(&state, &framework)?;
            let write = StateWrite::Put {
                key: key.clone(),
                value: value.into_bytes(),
                expected_version: version,
            };
            let entry = op
                .write_framework_state(&fw, write)
                .await
                .with_context(|| format!("setting {key:?} of framework {fw}"))?;
            if let Some(entry) = entry {
                println!("{key} is now at version {}", entry.version);
            }
            Ok(())
        }
        KvCommand::Rm {
            framework,
            key,
            version,
        } => {
            let fw = framework_named(&state, &framework)?;
            let write = StateWrite::Delete {
                key: key.clone(),
                expected_version: version,
            };
            op.write_framework_state(&fw, write)
                .await
                .with_context(|| format!("removing {key:?} of framework {fw}"))?;
            Ok(())
        }
    };
    op.close();
    result
}

/// `name_or_id` as a framework the master knows: an id as it is, or a name that exactly one
/// framework has (the connected one when several share it).
fn framework_named(state: &ClusterState, name_or_id: &str) -> anyhow::Result<FrameworkId> {
    if let Some(f) = state
        .frameworks
        .iter()
        .find(|f| f.id.as_str() == name_or_id)
    {
        return Ok(f.id.clone());
    }
    let named: Vec<_> = state
        .frameworks
        .iter()
        .filter(|f| f.name == name_or_id)
        .collect();
    let connected: Vec<_> = named.iter().filter(|f| f.connected).collect();
    match (named.as_slice(), connected.as_slice()) {
        ([], _) => bail!(
            "no framework has the id or name {name_or_id:?} (`bramble frameworks` lists them)"
        ),
        ([one], _) => Ok(one.id.clone()),
        (_, [one]) => Ok(one.id.clone()),
        (several, _) => bail!(
            "{} frameworks are named {name_or_id:?} ({}); give the id",
            several.len(),
            several
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn print_entries(entries: &[StateEntry], json: bool) -> anyhow::Result<()> {
    if json {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            key: &'a str,
            version: u64,
            value: String,
        }
        let rows: Vec<Row> = entries
            .iter()
            .map(|e| Row {
                key: &e.key,
                version: e.version,
                value: String::from_utf8_lossy(&e.value).into_owned(),
            })
            .collect();
        return print_json(&rows);
    }
    let width = entries
        .iter()
        .map(|e| e.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!("{:<width$}  {:>7}  {:>6}", "KEY", "VERSION", "BYTES");
    for e in entries {
        println!(
            "{:<width$}  {:>7}  {:>6}",
            e.key.escape_debug().to_string(),
            e.version,
            e.value.len()
        );
    }
    Ok(())
}
