//! `bramble cluster init|show|add-principal|revoke|renew`: the cluster identity on disk.

use anyhow::Context;
use bramble_proto::identity::{self, files, Role};
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
    /// Print the cluster id and each certificate's role, principal and validity window.
    Show { dir: PathBuf },
    /// Issue a certificate for principal NAME (DIR/principals/NAME.pem and .key): the
    /// frameworks it registers are its own, and only it (or an operator) may fail them over,
    /// kill their tasks or tear them down. Use it with `--principal NAME`.
    AddPrincipal {
        dir: PathBuf,
        name: String,
        /// What the principal may do: framework (run frameworks) or operator (everything).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = identity::LEAF_VALIDITY_DAYS)]
        days: i64,
    },
    /// Add principal NAME to DIR/revoked: the master (reading DIR) refuses its connections
    /// and closes the open ones within a second or two. Copy the file to the master's
    /// cluster directory if it is not this one.
    Revoke { dir: PathBuf, name: String },
    /// Issue new certificates and keys under the same CA for every role and principal not
    /// revoked. The old ones stay valid until they expire: restart daemons and frameworks
    /// with the new files one at a time, with no downtime.
    Renew { dir: PathBuf },
}

fn parse_role(s: &str) -> Result<Role, String> {
    match Role::parse(s) {
        Some(role @ (Role::Framework | Role::Operator)) => Ok(role),
        _ => Err(format!("{s:?}: use framework or operator")),
    }
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
            let revoked = identity::read_revoked(&dir)?;
            println!("cluster id: {id}");
            for c in certs {
                let role = c.role.map(|r| r.to_string()).unwrap_or_else(|| "ca".into());
                let principal = c.principal.clone().unwrap_or_else(|| "-".into());
                let note = if revoked.contains(&principal) {
                    " REVOKED"
                } else {
                    ""
                };
                println!(
                    "{:<10} {:<16} {:<40} valid {} .. {}  ({}){note}",
                    role,
                    principal,
                    c.subject,
                    c.not_before.format(&Rfc3339).unwrap_or_default(),
                    c.not_after.format(&Rfc3339).unwrap_or_default(),
                    c.file.display()
                );
            }
            Ok(())
        }
        ClusterCommand::AddPrincipal {
            dir,
            name,
            role,
            days,
        } => {
            anyhow::ensure!(days > 0, "--days must be at least 1");
            let cert = identity::add_principal(&dir, &name, role, days)
                .with_context(|| format!("adding principal {name} to {}", dir.display()))?;
            println!("principal {name} ({role}) issued: {}", cert.display());
            println!(
                "use it with: bramble --cluster {} --principal {name} ...",
                dir.display()
            );
            Ok(())
        }
        ClusterCommand::Revoke { dir, name } => {
            let added = identity::revoke(&dir, &name)
                .with_context(|| format!("revoking {name} in {}", dir.display()))?;
            let list = dir.join(files::REVOKED);
            if added {
                println!("principal {name} revoked ({})", list.display());
            } else {
                println!("principal {name} was already revoked ({})", list.display());
            }
            Ok(())
        }
        ClusterCommand::Renew { dir } => {
            let renewed = identity::renew(&dir)
                .with_context(|| format!("renewing the certificates in {}", dir.display()))?;
            for path in &renewed {
                println!("renewed {}", path.display());
            }
            println!(
                "{} certificates renewed under the same CA; the old ones stay valid until they expire",
                renewed.len()
            );
            Ok(())
        }
    }
}
