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
        /// The directory to create the cluster in (it must not hold one already).
        dir: PathBuf,
        /// A name for the cluster, written into its certificates.
        #[arg(long, default_value = "bramble")]
        name: String,
    },
    /// Print the cluster id and each certificate's role, principal and validity window.
    Show {
        /// The cluster directory.
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Issue a certificate for principal NAME (DIR/principals/NAME.pem and .key): the
    /// frameworks it registers are its own, and only it (or an operator) may fail them over,
    /// kill their tasks or tear them down. Use it with `--principal NAME`.
    AddPrincipal {
        /// The cluster directory (with its CA key).
        dir: PathBuf,
        /// The principal's name.
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
    Revoke {
        /// The cluster directory.
        dir: PathBuf,
        /// The principal to revoke.
        name: String,
    },
    /// Issue new certificates and keys under the same CA for every role and principal not
    /// revoked. The old ones stay valid until they expire: restart daemons and frameworks
    /// with the new files one at a time, with no downtime.
    Renew {
        /// The cluster directory (with its CA key).
        dir: PathBuf,
    },
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
        ClusterCommand::Show { dir, json } => {
            let (id, certs) = identity::describe_cluster(&dir)
                .with_context(|| format!("reading cluster in {}", dir.display()))?;
            let revoked = identity::read_revoked(&dir)?;
            let rows: Vec<CertRow> = certs
                .iter()
                .map(|c| {
                    let principal = c.principal.clone().unwrap_or_else(|| "-".into());
                    CertRow {
                        role: c.role.map(|r| r.to_string()).unwrap_or_else(|| "ca".into()),
                        revoked: revoked.contains(&principal),
                        principal,
                        subject: c.subject.clone(),
                        not_before: c.not_before.format(&Rfc3339).unwrap_or_default(),
                        not_after: c.not_after.format(&Rfc3339).unwrap_or_default(),
                        file: c.file.display().to_string(),
                    }
                })
                .collect();
            if json {
                let out = serde_json::json!({ "cluster_id": id, "certificates": rows });
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("cluster id: {id}");
                print!("{}", certificates_table(&rows));
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

/// One certificate of `bramble cluster show`.
#[derive(Debug, serde::Serialize)]
struct CertRow {
    role: String,
    principal: String,
    subject: String,
    not_before: String,
    not_after: String,
    file: String,
    revoked: bool,
}

fn certificates_table(rows: &[CertRow]) -> String {
    let mut t = bramble::table::Table::new(&[
        "ROLE",
        "PRINCIPAL",
        "SUBJECT",
        "VALID FROM",
        "VALID UNTIL",
        "FILE",
        "REVOKED",
    ]);
    for r in rows {
        t.row(vec![
            r.role.clone(),
            r.principal.clone(),
            r.subject.clone(),
            r.not_before.clone(),
            r.not_after.clone(),
            r.file.clone(),
            if r.revoked { "REVOKED" } else { "" }.to_string(),
        ]);
    }
    t.render()
}
