//! `bramble cluster init|show`: the cluster identity on disk.

use anyhow::Context;
use bramble_proto::identity::{self, files};
use clap::Subcommand;
use std::path::PathBuf;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a new cluster CA and node, framework and operator certificates in DIR.
    Init {
        dir: PathBuf,
        /// A name for the cluster, written into its certificates.
        #[arg(long, default_value = "bramble")]
        name: String,
    },
    /// Print the cluster id and each certificate's role and validity window.
    Show { dir: PathBuf },
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Init { dir, name } => {
            let id = identity::init_cluster(&dir, &name)?;
            println!("cluster {name} created in {}", dir.display());
            println!("cluster id: {id}");
            println!(
                "keep {} private: it signs certificates and is never needed on the Pis",
                dir.join(files::CA_KEY).display()
            );
            Ok(())
        }
        ClusterCommand::Show { dir } => {
            let (id, certs) = identity::describe_cluster(&dir)
                .with_context(|| format!("reading cluster in {}", dir.display()))?;
            println!("cluster id: {id}");
            for c in certs {
                let role = c.role.map(|r| r.to_string()).unwrap_or_else(|| "ca".into());
                println!(
                    "{:<10} {:<40} valid {} .. {}  ({})",
                    role,
                    c.subject,
                    c.not_before.format(&Rfc3339).unwrap_or_default(),
                    c.not_after.format(&Rfc3339).unwrap_or_default(),
                    c.file.display()
                );
            }
            Ok(())
        }
    }
}
