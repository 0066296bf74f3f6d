//! `bramble`: the operator's command line. Thin glue over the `bramble` library.

mod cluster;

use anyhow::{bail, Context};
use bramble::demo::{self, DemoOptions};
use bramble::frameworks;
use bramble::ops;
use bramble_client::{locate_master, owner_of, OperatorClient};
use bramble_proto::task::CommandInfo;
use bramble_proto::{FrameworkId, Resources, TaskId, TaskState};
use bramble_sdk::{framework_info, Credentials, Role, SchedulerConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bramble",
    version,
    about = "Bramble: a cluster kernel for Raspberry Pi clusters"
)]
struct Cli {
    /// The master's host:port (default: $BRAMBLE_MASTER, else found by mDNS).
    #[arg(long, global = true, env = "BRAMBLE_MASTER")]
    master: Option<String>,
    /// Cluster directory with the certificates to use.
    #[arg(
        long,
        global = true,
        env = "BRAMBLE_CLUSTER",
        default_value = "/etc/bramble/cluster"
    )]
    cluster: PathBuf,
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
        /// CPUs each agent offers (default: the machine's cores shared out, at least 1).
        #[arg(long)]
        cpus_per_agent: Option<f64>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Agents, resources used/total, frameworks and jobs in flight.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The agents the master knows.
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// The frameworks subscribed.
    Frameworks {
        #[arg(long)]
        json: bool,
    },
    /// The tasks the master tracks.
    Tasks {
        #[arg(long)]
        json: bool,
    },
    /// Kill a task.
    Kill {
        task: String,
        /// The task's framework, when the task id is ambiguous or already finished.
        #[arg(long)]
        framework: Option<String>,
    },
    /// Print a task's stdout (or stderr) from its sandbox.
    Logs {
        task: String,
        #[arg(long)]
        stderr: bool,
        /// Keep printing as the task writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        framework: Option<String>,
    },
    /// Run one shell command on the cluster, stream its output, exit with its status.
    Run {
        #[arg(long, default_value_t = 0.1)]
        cpus: f64,
        /// Memory in MiB.
        #[arg(long, default_value_t = 64)]
        mem: u64,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Compute pi across the cluster from the Leibniz series.
    Pi {
        #[arg(long, default_value = "2e10", value_parser = parse_count)]
        terms: u64,
        #[arg(long, default_value = "64", value_parser = parse_count)]
        tasks: u64,
        /// Path of the `bramble` binary on the agents (default: this program's path).
        #[arg(long)]
        executor: Option<String>,
        #[arg(long)]
        json: bool,
        /// Job journal: a rerun after a crash resumes the job from it (default:
        /// $XDG_STATE_HOME/bramble/pi.journal, else ~/.local/state/bramble/pi.journal).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Start over even if the journal holds an unfinished job.
        #[arg(long)]
        fresh: bool,
        /// Seconds the master keeps the job's tasks running while this command is gone.
        #[arg(long, default_value_t = bramble::pi::command::DEFAULT_FAILOVER_TIMEOUT_SECS)]
        failover_timeout: f64,
    },
    /// n! for each number, exactly, one task each; printed in the order given.
    Factorial {
        #[arg(required = true)]
        numbers: Vec<u64>,
        #[arg(long)]
        json: bool,
    },
    /// A shell task printing a greeting every 5 s until Ctrl-C.
    Hello,
    /// A service task serving its sandbox's directory listing on an offered port until Ctrl-C.
    Http,
    /// Serve a directory listing over HTTP (the `http` task's program).
    #[command(hide = true)]
    ServeDir {
        #[arg(long, env = "PORT")]
        port: u16,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Save what the master's front panel (OLED) shows as a PNG.
    Display {
        /// Where to write the picture.
        #[arg(long)]
        png: PathBuf,
        /// Also save the panel state behind it (JSON), for offline rendering.
        #[arg(long)]
        save_state: Option<PathBuf>,
        /// Render this saved panel state instead of asking a master.
        #[arg(long)]
        from_state: Option<PathBuf>,
        /// Panel size for offline rendering: 128x64 or 128x32.
        #[arg(long, default_value = "128x64")]
        size: String,
        /// Screen for offline rendering: cluster or pi (default: what the panel would show first).
        #[arg(long)]
        screen: Option<String>,
    },
    /// Measurements behind `bench/` (JSON out).
    Bench {
        #[command(subcommand)]
        what: BenchKind,
    },
    /// Set this Pi up as a cluster node (run by bramble-firstboot.service).
    Node {
        #[command(subcommand)]
        command: bramble::node::NodeCommand,
    },
    /// Run an executor (started by an agent, not by hand).
    #[command(hide = true)]
    Executor {
        #[command(subcommand)]
        kind: ExecutorKind,
    },
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// The pi kernel on plain threads, no cluster: the control for the pi job.
    Kernel {
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value = "1e10", value_parser = parse_count)]
        terms: u64,
        #[arg(long, default_value = "64", value_parser = parse_count)]
        tasks: u64,
        /// Accepted for symmetry with the other commands; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tiny tasks through a throwaway cluster: tasks/s and launch→FINISHED latency.
    Tasks {
        #[arg(long, default_value = "10000", value_parser = parse_count)]
        count: u64,
        /// `executor` (no-op tasks on the long-lived custom executor) or `command` (`true`).
        #[arg(long, default_value = "executor")]
        path: String,
        #[arg(long, default_value_t = 1)]
        agents: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ExecutorKind {
    /// The pi job's executor.
    Pi,
    /// The factorial job's executor.
    Factorial,
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

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn framework_creds(cluster: &std::path::Path) -> anyhow::Result<Credentials> {
    Credentials::load(cluster, Role::Framework).with_context(|| {
        format!(
            "loading the framework certificate from {}",
            cluster.display()
        )
    })
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Commands that talk to a running cluster.
async fn cluster_command(cli: Cli) -> anyhow::Result<i32> {
    let master = locate_master(cli.master.as_deref(), &cli.cluster).await?;
    let cluster = cli.cluster.as_path();
    match cli.command {
        Command::Status { json }
        | Command::Agents { json }
        | Command::Frameworks { json }
        | Command::Tasks { json } => {
            let mut op = OperatorClient::connect(cluster, master).await?;
            let state = op.state().await?;
            op.close();
            match (&cli.command, json) {
                (Command::Status { .. }, true) => print_json(&state)?,
                (Command::Status { .. }, false) => ops::print_status(&state),
                (Command::Agents { .. }, true) => print_json(&state.agents)?,
                (Command::Agents { .. }, false) => ops::print_agents(&state),
                (Command::Frameworks { .. }, true) => print_json(&state.frameworks)?,
                (Command::Frameworks { .. }, false) => ops::print_frameworks(&state),
                (_, true) => print_json(&state.tasks)?,
                (_, false) => ops::print_tasks(&state),
            }
            Ok(0)
        }
        Command::Kill { task, framework } => {
            let mut op = OperatorClient::connect(cluster, master).await?;
            let state = op.state().await?;
            let task = TaskId(task);
            let fw = owner_of(&state, &task, framework.map(FrameworkId).as_ref())?;
            op.kill(fw, task.clone()).await?;
            op.close();
            eprintln!("kill sent to {task}");
            Ok(0)
        }
        Command::Logs {
            task,
            stderr,
            follow,
            framework,
        } => {
            let mut op = OperatorClient::connect(cluster, master).await?;
            let state = op.state().await?;
            let task = TaskId(task);
            let fw = owner_of(&state, &task, framework.map(FrameworkId).as_ref())?;
            let file = if stderr { "stderr" } else { "stdout" };
            op.copy_sandbox_file(&fw, &task, file, follow, &mut std::io::stdout())
                .await?;
            op.close();
            Ok(0)
        }
        Command::Run { cpus, mem, command } => {
            anyhow::ensure!(
                cpus > 0.0 && cpus.is_finite(),
                "--cpus must be a positive number"
            );
            let line = command.join(" ");
            let outcome =
                bramble::run::run(cluster, master, line, Resources::new(cpus, mem)).await?;
            Ok(match outcome.state {
                TaskState::Finished => 0,
                TaskState::Failed => outcome.exit_code.filter(|c| *c != 0).unwrap_or(1),
                state => {
                    eprintln!("task ended {state}: {}", outcome.message);
                    1
                }
            })
        }
        Command::Pi {
            terms,
            tasks,
            executor,
            json,
            journal,
            fresh,
            failover_timeout,
        } => {
            let executor = match executor {
                Some(path) => CommandInfo::program(path, vec!["executor".into(), "pi".into()]),
                None => self_executor("pi")?,
            };
            let cmd = bramble::pi::command::PiCommand {
                terms,
                tasks,
                executor,
                journal,
                fresh,
                failover_timeout_secs: failover_timeout,
                json,
            };
            bramble::pi::command::run(cmd, master, framework_creds(cluster)?).await?;
            Ok(0)
        }
        Command::Factorial { numbers, json } => {
            let config = SchedulerConfig::new(
                master,
                framework_creds(cluster)?,
                framework_info("factorial"),
            );
            let report =
                frameworks::factorial::run_factorial(config, numbers, self_executor("factorial")?)
                    .await?;
            if json {
                print_json(&report)?;
            } else {
                for (n, value) in &report.results {
                    println!("{n}! = {value}");
                }
            }
            Ok(0)
        }
        Command::Hello => {
            let config =
                SchedulerConfig::new(master, framework_creds(cluster)?, framework_info("hello"));
            frameworks::hello::run_hello(config, ctrl_c(), frameworks::print_event).await?;
            Ok(0)
        }
        Command::Http => {
            let exe = std::env::current_exe().context("finding this program's path")?;
            let serve = CommandInfo::program(exe.display().to_string(), vec!["serve-dir".into()]);
            let config =
                SchedulerConfig::new(master, framework_creds(cluster)?, framework_info("http"));
            frameworks::http::run_http(
                config,
                frameworks::http::HttpJob::new(serve),
                ctrl_c(),
                frameworks::print_event,
            )
            .await?;
            Ok(0)
        }
        Command::Display {
            png, save_state, ..
        } => {
            bramble::display::from_master(cluster, master, &png, save_state.as_deref()).await?;
            eprintln!("wrote {}", png.display());
            Ok(0)
        }
        // Handled in main() without a master.
        Command::Cluster { .. }
        | Command::Demo { .. }
        | Command::Node { .. }
        | Command::Executor { .. }
        | Command::ServeDir { .. }
        | Command::Bench { .. } => Ok(0),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Cluster { command } => {
            bramble_proto::logging::init(None);
            cluster::run(command)
        }
        Command::Node { command } => {
            bramble_proto::logging::init(None);
            bramble::node::run(command)
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
                    ExecutorKind::Factorial => {
                        bramble_sdk::run_executor(
                            bramble::frameworks::factorial::FactorialExecutor::default(),
                        )
                        .await?;
                    }
                }
                Ok(())
            })
        }
        Command::Display {
            png,
            from_state: Some(state),
            size,
            screen,
            ..
        } => bramble::display::offline(&state, &png, &size, screen.as_deref()),
        Command::Bench { what } => {
            bramble_proto::logging::init(Some("warn"));
            match what {
                BenchKind::Kernel {
                    threads,
                    terms,
                    tasks,
                    ..
                } => print_json(&bramble::bench::kernel(threads, terms, tasks)),
                BenchKind::Tasks {
                    count,
                    path,
                    agents,
                } => {
                    let path = match path.as_str() {
                        "executor" => bramble::bench::TaskPath::Executor,
                        "command" => bramble::bench::TaskPath::Command,
                        other => bail!("--path {other}: use executor or command"),
                    };
                    let runtime = tokio::runtime::Runtime::new()?;
                    let report = runtime.block_on(bramble::bench::tasks(
                        path,
                        count,
                        agents,
                        self_executor("pi")?,
                    ))?;
                    print_json(&report)
                }
            }
        }
        Command::ServeDir { port, dir } => {
            bramble_proto::logging::init(None);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(frameworks::http::serve_dir(port, dir))
        }
        Command::Demo {
            agents,
            terms,
            tasks,
            cpus_per_agent,
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
                cpus_per_agent,
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
        _ => {
            bramble_proto::logging::init(Some("warn"));
            let runtime = tokio::runtime::Runtime::new()?;
            let code = runtime.block_on(cluster_command(cli))?;
            std::process::exit(code);
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
