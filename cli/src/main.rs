//! `bramble`: the operator's command line. Parses the arguments and hands each subcommand to
//! its module under `commands/`, which does the work through the libraries and prints.

mod commands;

use clap::{Parser, Subcommand};
use commands::bench::BenchKind;
use commands::cluster::ClusterCommand;
use commands::executor::ExecutorKind;
use commands::kv::KvCommand;
use commands::masters::MastersCommand;
use commands::service::ServiceCommand;
use commands::state::View;
use commands::Target;
use std::path::PathBuf;

/// Bramble: a cluster kernel for Raspberry Pi clusters
#[derive(Debug, Parser)]
#[command(name = "bramble", version)]
struct Cli {
    /// The master's host:port (default: $BRAMBLE_MASTER, else found by mDNS); several,
    /// comma-separated, for a replicated group's masters (the leader is found).
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
    /// Present this principal's certificate (from `bramble cluster add-principal`) instead of
    /// the shared framework or operator one.
    #[arg(long, global = true, env = "BRAMBLE_PRINCIPAL")]
    principal: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum NewCommand {
    /// A framework crate: a scheduler launching one task per offer, tests written with the
    /// SDK's test kit, a README; `--executor` adds a custom executor.
    Framework {
        /// Crate and binary name (lowercase letters, digits, '-').
        name: String,
        /// Also write a custom executor (the same binary, started as `NAME executor`).
        #[arg(long)]
        executor: bool,
        /// Where to create the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The bramble-sdk to depend on: the sdk/ directory of a Bramble source checkout
        /// (default: the one this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum FrameworkCommand {
    /// End a framework now, as if it had torn itself down: the master kills its tasks and
    /// removes it for good, so its id cannot subscribe again (operator certificate only).
    Teardown {
        /// The framework's id (see `bramble frameworks`).
        id: String,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Take an agent out of service before maintenance: it is offered nothing more (until
    /// undrained, across restarts of the master and of the agent) and frameworks are told to
    /// move what runs there; services move their instances, keeping their healthy minimum.
    Drain {
        /// The agent's hostname (every agent on it), or its id (see `bramble agents`).
        host: String,
    },
    /// Put a drained agent back in service: it is offered again.
    Undrain {
        /// The agent's hostname (every agent on it), or its id (see `bramble agents`).
        host: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or inspect a cluster identity (CA and role certificates).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Start something new from a template.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
    /// Bring up a throwaway cluster on loopback, compute pi on it, tear it down.
    Demo {
        /// Number of agents.
        #[arg(long, default_value_t = 2)]
        agents: usize,
        /// Terms of the Leibniz series (accepts forms like 2e10).
        #[arg(long, default_value = "2e10", allow_negative_numbers = true, value_parser = parse_count)]
        terms: u64,
        /// Number of tasks (chunks) the series is cut into.
        #[arg(long, default_value = "64", allow_negative_numbers = true, value_parser = parse_count)]
        tasks: u64,
        /// CPUs each agent offers (default: the machine's cores shared out, at least 1).
        #[arg(long, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_number)]
        cpus_per_agent: Option<f64>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Agents, resources used/total, frameworks and jobs in flight.
    Status {
        /// Print the master's whole picture as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A replicated group's masters (id, role, term, addresses, how far each one's log is);
    /// `add` and `remove` change the group without downtime.
    Masters {
        #[command(subcommand)]
        command: Option<MastersCommand>,
        /// Print the group as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The agents the master knows.
    Agents {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every agent (without it, the first 50; `--json` always lists every one).
        #[arg(long)]
        all: bool,
    },
    /// The frameworks subscribed.
    Frameworks {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The tasks the master tracks (with --all, the recently finished ones too).
    Tasks {
        /// Also list finished tasks the master still remembers, with their framework.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Act on one agent: `drain HOST` before maintenance, `undrain HOST` after.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Act on one framework: `teardown ID` ends it now (its tasks killed, its id retired).
    Framework {
        #[command(subcommand)]
        command: FrameworkCommand,
    },
    /// Kill a task (an error if it had already ended).
    Kill {
        /// The task's id (see `bramble tasks`).
        task: String,
        /// The task's framework, when the task id is ambiguous or older than the master
        /// remembers.
        #[arg(long)]
        framework: Option<String>,
        /// Print what was sent as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's stdout (or stderr) from its sandbox, live or finished.
    Logs {
        /// The task's id (see `bramble tasks --all`).
        task: String,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing as the task writes, until it ends.
        #[arg(long, short, conflicts_with = "json")]
        follow: bool,
        /// The task's framework, when the task id is ambiguous or older than the master
        /// remembers.
        #[arg(long)]
        framework: Option<String>,
        /// Print one JSON object: the task's framework, agent and state, and the file's text.
        #[arg(long)]
        json: bool,
    },
    /// Run one shell command on the cluster, stream its output, exit with its status.
    Run {
        /// CPUs for the task (above 0).
        #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_number)]
        cpus: f64,
        /// Memory in MiB (at least 1): the task's memory limit.
        #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = bramble_proto::arg_values::positive_mib)]
        mem: u64,
        /// Run it in this container image (on an agent advertising `containers`); the
        /// words are then the program and its arguments, as `docker run` takes them.
        #[arg(long)]
        image: Option<String>,
        /// Fetch this into the task's sandbox before it starts: http(s)://… or master:NAME (a
        /// file of the master's artifacts directory); .tar, .tar.gz and .tgz are unpacked.
        /// Repeatable.
        #[arg(long = "fetch", value_name = "URI", value_parser = parse_artifact)]
        fetch: Vec<bramble_proto::task::Artifact>,
        /// Print the final status as one JSON object (task, agent, state, exit code, why,
        /// and the task's stdout and stderr) instead of streaming the output.
        #[arg(long)]
        json: bool,
        /// The command and its arguments (for `/bin/sh -c`, or the image's program).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Compute pi across the cluster from the Leibniz series.
    Pi {
        /// Terms of the Leibniz series (accepts forms like 2e10).
        #[arg(long, default_value = "2e10", allow_negative_numbers = true, value_parser = parse_count)]
        terms: u64,
        /// Number of tasks (chunks) the series is cut into.
        #[arg(long, default_value = "64", allow_negative_numbers = true, value_parser = parse_count)]
        tasks: u64,
        /// Path of the `bramble` binary on the agents (default: this program's path).
        #[arg(long)]
        executor: Option<String>,
        /// Print the result as one JSON object (and no progress bar).
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
        #[arg(long, default_value_t = commands::pi::DEFAULT_FAILOVER_TIMEOUT_SECS)]
        failover_timeout: f64,
    },
    /// n! for each number, exactly, one task each; printed in the order given.
    Factorial {
        /// The numbers whose factorials to compute.
        #[arg(required = true)]
        numbers: Vec<u64>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A shell task printing a greeting every 5 s until Ctrl-C.
    Hello {
        /// Run it in this container image, as the Mesos workshop's hello-mesos does in
        /// `busybox`.
        #[arg(long)]
        image: Option<String>,
    },
    /// A service task serving its sandbox's directory listing on an offered port until Ctrl-C.
    Http,
    /// Services kept up from TOML specs: apply, ls, show, scale, restart, rollback, rm; and the
    /// scheduler that keeps them up.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// A framework's key/value state in the master: ls, get, put, rm (compare-and-set with
    /// --version).
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
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
    /// Container images: import/load through the master to every agent (or --local), pull
    /// and ls on this node's agent.
    Images {
        #[command(subcommand)]
        command: commands::images::ImagesCommand,
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

/// Parses counts such as `1000`, `1_000_000`, `4e9` or `2.5e6`.
/// A `--fetch` uri, checked as the agent will check it.
fn parse_artifact(uri: &str) -> Result<bramble_proto::task::Artifact, String> {
    let artifact = bramble_proto::task::Artifact::new(uri);
    artifact.check().map_err(|e| e.to_string())?;
    Ok(artifact)
}

fn parse_count(s: &str) -> Result<u64, String> {
    bramble_proto::arg_values::whole_count(s)
}

/// Commands that talk to a running cluster: the master is found first.
async fn cluster_command(cli: Cli) -> anyhow::Result<i32> {
    let target = Target::find(
        cli.master.as_deref(),
        &cli.cluster,
        cli.principal.as_deref(),
    )
    .await?;
    let target = &target;
    match cli.command {
        Command::Status { json } => commands::state::show(target, View::Status, json).await?,
        Command::Masters { command, json } => commands::masters::run(target, command, json).await?,
        Command::Agents { json, all } => {
            let view = if all { View::AllAgents } else { View::Agents };
            commands::state::show(target, view, json).await?
        }
        Command::Frameworks { json } => {
            commands::state::show(target, View::Frameworks, json).await?
        }
        Command::Tasks { all, json } => {
            commands::state::show(target, View::Tasks { all }, json).await?
        }
        Command::Framework {
            command: FrameworkCommand::Teardown { id, json },
        } => commands::state::teardown(target, id, json).await?,
        Command::Agent { command } => {
            let (host, drain) = match command {
                AgentCommand::Drain { host } => (host, true),
                AgentCommand::Undrain { host } => (host, false),
            };
            commands::state::drain(target, &host, drain).await?
        }
        Command::Kill {
            task,
            framework,
            json,
        } => commands::state::kill(target, task, framework, json).await?,
        Command::Logs {
            task,
            stderr,
            follow,
            framework,
            json,
        } => commands::state::logs(target, task, stderr, follow, framework, json).await?,
        Command::Run {
            cpus,
            mem,
            image,
            fetch,
            json,
            command,
        } => {
            let what = bramble::run::What {
                artifacts: fetch,
                ..bramble::run::What::new(command, image)
            };
            return commands::run::run(target, cpus, mem, what, json).await;
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
            let cmd = commands::pi::PiCommand {
                terms,
                tasks,
                executor: commands::pi::executor(executor)?,
                journal,
                fresh,
                failover_timeout_secs: failover_timeout,
                json,
            };
            commands::pi::run(cmd, target).await?
        }
        Command::Factorial { numbers, json } => {
            commands::frameworks::factorial(target, numbers, json).await?
        }
        Command::Hello { image } => commands::frameworks::hello(target, image).await?,
        Command::Http => commands::frameworks::http(target).await?,
        Command::Service { command } => commands::service::run(target, command).await?,
        Command::Kv { command } => commands::kv::run(target, command).await?,
        Command::Images { command } => commands::images::run_cluster(target, command).await?,
        Command::Display {
            png, save_state, ..
        } => commands::display::from_master(target, &png, save_state.as_deref()).await?,
        // Handled in main() without a master.
        Command::Cluster { .. }
        | Command::New { .. }
        | Command::Demo { .. }
        | Command::Node { .. }
        | Command::Executor { .. }
        | Command::ServeDir { .. }
        | Command::Bench { .. } => {}
    }
    Ok(0)
}

fn main() -> anyhow::Result<()> {
    bramble_proto::startup::plain_error_reports();
    let cli = Cli::parse();
    match cli.command {
        Command::Cluster { command } => {
            bramble_proto::logging::init_cli(None);
            commands::cluster::run(command)
        }
        Command::Node { command } => {
            bramble_proto::logging::init_cli(None);
            bramble::node::run(command)
        }
        Command::Images { command } if command.is_local() => {
            bramble_proto::logging::init_cli(None);
            commands::images::run(command)
        }
        Command::New {
            what:
                NewCommand::Framework {
                    name,
                    executor,
                    dir,
                    sdk,
                },
        } => {
            let sdk = sdk
                .or_else(bramble::new_framework::default_sdk_path)
                .unwrap_or_else(|| PathBuf::from("sdk"));
            let made = bramble::new_framework::generate(&dir, &name, executor, &sdk)?;
            println!("created {}:", made.dir.display());
            for f in &made.files {
                println!("  {}", f.strip_prefix(&made.dir).unwrap_or(f).display());
            }
            println!(
                "next: cd {} && cargo test, then BRAMBLE_MASTER=HOST:5051 cargo run -- --tasks 5",
                made.dir.display()
            );
            Ok(())
        }
        Command::Executor { kind } => {
            bramble_proto::logging::init(None);
            commands::executor::run(kind)
        }
        Command::Display {
            png,
            from_state: Some(state),
            size,
            screen,
            ..
        } => bramble::display::offline(&state, &png, &size, screen.as_deref()),
        Command::Bench { what } => {
            bramble_proto::logging::init_cli(Some("warn"));
            commands::bench::run(
                what,
                cli.master.as_deref(),
                &cli.cluster,
                cli.principal.as_deref(),
            )
        }
        Command::ServeDir { port, dir } => {
            bramble_proto::logging::init(None);
            commands::frameworks::serve(port, dir)
        }
        Command::Demo {
            agents,
            terms,
            tasks,
            cpus_per_agent,
            json,
        } => {
            // The demo's own cluster logs only what is worth seeing; RUST_LOG overrides.
            bramble_proto::logging::init_cli(Some("warn"));
            commands::demo::run(commands::demo::DemoCommand {
                agents,
                terms,
                tasks,
                cpus_per_agent,
                json,
            })
        }
        _ => {
            // The service scheduler is a daemon: it logs what it does.
            // Plain lines for a person; the daemon's usual log lines for the scheduler.
            match &cli.command {
                Command::Service {
                    command: ServiceCommand::Scheduler { .. },
                } => bramble_proto::logging::init(None),
                _ => bramble_proto::logging::init_cli(Some("warn")),
            }
            let runtime = tokio::runtime::Runtime::new()?;
            let code = runtime.block_on(cluster_command(cli))?;
            std::process::exit(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_count, Cli};
    use clap::CommandFactory;

    /// Every visible subcommand, as its path of names from `bramble`.
    fn commands() -> Vec<(String, clap::Command)> {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
            out.push((path.to_string(), cmd.clone()));
            // clap's own `help` subcommand is clap's, not ours.
            let ours = |c: &&clap::Command| !c.is_hide_set() && c.get_name() != "help";
            for sub in cmd.get_subcommands().filter(ours) {
                walk(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        // Environment values hidden: a developer's BRAMBLE_MASTER must not change the text.
        let mut cli = Cli::command()
            .term_width(100)
            .mut_args(|a| a.hide_env_values(true));
        cli.build();
        let mut out = Vec::new();
        walk(&cli, "bramble", &mut out);
        out
    }

    #[test]
    fn every_flag_and_argument_has_help() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "no help text for:\n{}",
            missing.join("\n")
        );
    }

    /// The help of every command, as an operator sees it: a change shows up in review.
    #[test]
    fn help_snapshots() {
        for (path, mut cmd) in commands() {
            let name = path.replace(' ', "_");
            insta::assert_snapshot!(name, cmd.render_long_help().to_string());
        }
    }

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
