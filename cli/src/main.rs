//! `bramble`: the operator's command line. Thin glue over the `bramble` library.

mod cluster;

use anyhow::Context;
use bramble::demo::{self, DemoOptions};
use bramble_proto::task::CommandInfo;
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
    /// Bring up a throwaway cluster on loopback, compute pi on it, tear it down.
    Demo {
        /// Number of agents.
        #[arg(long, default_value_t = 2)]
        agents: usize,
        /// Terms of the Leibniz series (accepts forms like 2e10).
        #[arg(long, default_value = "2e10", value_parser = parse_count)]
        terms: u64,
        /// Number of tasks (chunks) the series is cut into.
        #[arg(long, default_value = "64", value_parser = parse_count)]
        tasks: u64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run an executor (started by an agent, not by hand).
    Executor {
        #[command(subcommand)]
        kind: ExecutorKind,
    },
}

#[derive(Debug, Subcommand)]
enum ExecutorKind {
    /// The pi job's executor.
    Pi,
}

/// Parses counts such as `1000`, `1_000_000`, `4e9` or `2.5e6`.
fn parse_count(s: &str) -> Result<u64, String> {
    let cleaned = s.replace('_', "");
    if let Ok(n) = cleaned.parse::<u64>() {
        return Ok(n);
    }
    match cleaned.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => {
            Ok(f as u64)
        }
        _ => Err(format!("{s:?} is not a whole number (examples: 1000, 4e9)")),
    }
}

/// How agents on this machine start an executor of this binary.
fn self_executor(kind: &str) -> anyhow::Result<CommandInfo> {
    let exe = std::env::current_exe().context("finding this program's path for the executor")?;
    Ok(CommandInfo::program(
        exe.display().to_string(),
        vec!["executor".into(), kind.into()],
    ))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Cluster { command } => {
            bramble_proto::logging::init(None);
            cluster::run(command)
        }
        Command::Executor { kind } => {
            bramble_proto::logging::init(None);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                match kind {
                    ExecutorKind::Pi => {
                        bramble_sdk::run_executor(bramble::pi::executor::PiExecutor::default())
                            .await?;
                    }
                }
                Ok(())
            })
        }
        Command::Demo {
            agents,
            terms,
            tasks,
            json,
        } => {
            // The demo's own cluster logs only what is worth seeing; RUST_LOG overrides.
            bramble_proto::logging::init(Some("warn"));
            anyhow::ensure!(agents >= 1, "--agents must be at least 1");
            anyhow::ensure!(
                terms >= 1 && tasks >= 1,
                "--terms and --tasks must be at least 1"
            );
            let opts = DemoOptions {
                agents,
                terms,
                tasks,
                executor: self_executor("pi")?,
                quiet: json,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(demo::run(opts))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "pi ≈ {:.15}  ({} correct digits, error {:.3e})",
                    report.pi, report.correct_digits, report.abs_error
                );
                println!(
                    "{} terms in {} tasks on {} agents: {:.2} s, {:.3e} terms/s (cluster up in {:.2} s)",
                    report.terms, report.tasks, report.agents, report.wall_s, report.terms_per_s, report.startup_s
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn counts_accept_scientific_forms() {
        assert_eq!(parse_count("4e9"), Ok(4_000_000_000));
        assert_eq!(parse_count("1_000"), Ok(1000));
        assert_eq!(parse_count("2.5e3"), Ok(2500));
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("-3").is_err());
        assert!(parse_count("lots").is_err());
    }
}
