//! `bramble bench kernel|tasks|scale|state`: the measurements behind `bench/` (`bramble::bench`),
//! each printed as one JSON object.

use super::{print_json, self_executor, Target};
use anyhow::{bail, Context};
use bramble::bench::BenchCluster;
use clap::Subcommand;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// The pi kernel on plain threads, no cluster: the control for the pi job.
    Kernel {
        /// Threads to run the kernel on.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Terms of the Leibniz series.
        #[arg(long, default_value = "1e10", value_parser = crate::parse_count)]
        terms: u64,
        /// Chunks the series is cut into.
        #[arg(long, default_value = "64", value_parser = crate::parse_count)]
        tasks: u64,
        /// Accepted for symmetry with the other commands; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tiny tasks through a throwaway cluster: tasks/s and launch→FINISHED latency.
    Tasks {
        /// Tasks to run.
        #[arg(long, default_value = "10000", value_parser = crate::parse_count)]
        count: u64,
        /// `executor` (no-op tasks on the long-lived custom executor) or `command` (`true`).
        #[arg(long, default_value = "executor")]
        path: String,
        /// Throwaway agents to run them on.
        #[arg(long, default_value_t = 1)]
        agents: usize,
        /// Throwaway masters: 1 (a single master) or 3 or 5 (a replicated group on loopback,
        /// `[ha]`: every store write on a majority before it is acknowledged; the cost of
        /// replication).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
        masters: u8,
        /// CPUs each throwaway agent offers. 1 keeps a 2-agent run honest on a 2-core machine
        /// (master, agents, executors and the bench all share the cores); tasks need 0.01 each,
        /// so this also caps the tasks in flight per agent (100 at 1 CPU).
        #[arg(long, default_value_t = 1.0)]
        cpus_per_agent: f64,
        /// Most tasks in flight at once (0: as many as the offers hold; 1: one task's
        /// launch→FINISHED round trip alone).
        #[arg(long, default_value_t = 0)]
        in_flight: u64,
        /// N tasks one at a time: the launch→FINISHED round trip (`--count N --in-flight 1`;
        /// each agent's first task, which waits for the executor to start, is reported apart
        /// and left out of the percentiles).
        #[arg(long, value_name = "N", value_parser = crate::parse_count,
              conflicts_with_all = ["count", "in_flight"])]
        rtt: Option<u64>,
        /// Run on the cluster of `--master`/`--cluster` instead of a throwaway one.
        #[arg(long)]
        existing: bool,
    },
    /// A framework's key/value state on a throwaway cluster: write latency (call →
    /// confirmation, the write committed) of plain puts and compare-and-sets, one at a time.
    State {
        /// Writes to time.
        #[arg(long, default_value = "1000", value_parser = crate::parse_count)]
        writes: u64,
        /// Bytes per value (at most 64 KiB).
        #[arg(long, default_value_t = 128)]
        bytes: usize,
        /// Throwaway masters: 1 (a single master) or 3 or 5 (a replicated group on loopback).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
        masters: u8,
        /// Accepted for symmetry with the other commands; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// A real `bramble-master` process against N simulated agents (each its own QUIC
    /// connection) and F frameworks: registration, memory, CPU, allocation cycle, launch
    /// latency, the state API, and a SIGKILL + restart of the master.
    Scale {
        /// Simulated agents.
        #[arg(long, default_value = "10000", value_parser = crate::parse_count)]
        agents: u64,
        /// Frameworks launching tasks.
        #[arg(long, default_value_t = 10)]
        frameworks: usize,
        /// Tasks launched per second, all frameworks together.
        #[arg(long, default_value_t = 1000.0)]
        task_rate: f64,
        /// Seconds of measured load.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Seconds the master is watched idle once every agent is registered.
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
        /// Mean simulated task duration, seconds (drawn uniformly from half to 1.5 times it).
        #[arg(long, default_value_t = 5.0)]
        mean_task: f64,
        /// Seed of the task durations.
        #[arg(long, default_value_t = 17)]
        seed: u64,
        /// Simulated agents per loopback source address. The master's handshake budget is per
        /// address (16 in flight): the default keeps it from binding harder than on a LAN,
        /// where every Pi dials from its own address.
        #[arg(long, default_value_t = 16)]
        agents_per_address: usize,
        /// Simulated agents between dial and registration at once (0: no limit): the
        /// simulator shares the cores with the master, and pacing its dials keeps both from
        /// starving into handshake timeouts.
        #[arg(long, default_value_t = 256)]
        dials_in_flight: usize,
        /// Keep the run's directory (the master's log and store) and print where.
        #[arg(long)]
        keep: bool,
        /// Skip the master's SIGKILL and restart.
        #[arg(long)]
        no_restart: bool,
        /// The `bramble-master` binary (default: beside this program).
        #[arg(long)]
        master_bin: Option<std::path::PathBuf>,
        /// Accepted for symmetry with the other commands; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `master` and `cluster` are the global `--master`/`--cluster`, used by `tasks --existing`.
pub fn run(
    what: BenchKind,
    master: Option<&str>,
    cluster: &Path,
    principal: Option<&str>,
) -> anyhow::Result<()> {
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
            masters,
            cpus_per_agent,
            in_flight,
            rtt,
            existing,
        } => {
            anyhow::ensure!(
                cpus_per_agent.is_finite() && cpus_per_agent > 0.0,
                "--cpus-per-agent {cpus_per_agent}: must be a positive number"
            );
            let (count, in_flight) = match rtt {
                Some(n) => (n, 1),
                None => (count, in_flight),
            };
            let path = match path.as_str() {
                "executor" => bramble::bench::TaskPath::Executor,
                "command" => bramble::bench::TaskPath::Command,
                other => bail!("--path {other}: use executor or command"),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let cluster = if existing {
                    let target = Target::find(master, cluster, principal).await?;
                    BenchCluster::Existing(Box::new(target.scheduler_config("bench")?))
                } else {
                    BenchCluster::Throwaway {
                        masters: usize::from(masters),
                        agents,
                        cpus: cpus_per_agent,
                    }
                };
                bramble::bench::tasks(path, count, in_flight, cluster, self_executor("pi")?).await
            })?;
            print_json(&report)
        }
        BenchKind::State {
            writes,
            bytes,
            masters,
            ..
        } => {
            anyhow::ensure!(writes > 0, "--writes: at least one");
            let runtime = tokio::runtime::Runtime::new()?;
            let report =
                runtime.block_on(bramble::bench::state(usize::from(masters), writes, bytes))?;
            print_json(&report)
        }
        BenchKind::Scale {
            agents,
            frameworks,
            task_rate,
            duration,
            idle,
            mean_task,
            seed,
            agents_per_address,
            dials_in_flight,
            no_restart,
            master_bin,
            keep,
            ..
        } => {
            let seconds = |what: &str, v: f64| {
                Duration::try_from_secs_f64(v)
                    .map_err(|_| anyhow::anyhow!("--{what} {v}: must be a number of seconds >= 0"))
            };
            anyhow::ensure!(
                task_rate.is_finite() && task_rate >= 0.0,
                "--task-rate {task_rate}: must be a number >= 0"
            );
            anyhow::ensure!(agents > 0, "--agents: at least one");
            let master_bin = match master_bin {
                Some(p) => p,
                None => std::env::current_exe()
                    .context("finding this program's path")?
                    .with_file_name("bramble-master"),
            };
            let mut opts = bramble::bench::ScaleOptions::new(agents as usize, master_bin);
            opts.frameworks = frameworks;
            opts.task_rate = task_rate;
            opts.duration = seconds("duration", duration)?;
            opts.idle = seconds("idle", idle)?;
            opts.mean_task = seconds("mean-task", mean_task)?;
            opts.seed = seed;
            opts.agents_per_address = agents_per_address;
            opts.dials_in_flight = dials_in_flight;
            opts.restart = !no_restart;
            opts.keep = keep;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(bramble::bench::scale(opts))?;
            print_json(&report)
        }
    }
}
