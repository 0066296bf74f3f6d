//! `bramble bench kernel|tasks`: the measurements behind `bench/` (`bramble::bench`), each
//! printed as one JSON object.

use super::{print_json, self_executor, Target};
use anyhow::bail;
use bramble::bench::BenchCluster;
use clap::Subcommand;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// The pi kernel on plain threads, no cluster: the control for the pi job.
    Kernel {
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value = "1e10", value_parser = crate::parse_count)]
        terms: u64,
        #[arg(long, default_value = "64", value_parser = crate::parse_count)]
        tasks: u64,
        /// Accepted for symmetry with the other commands; the output is always JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tiny tasks through a throwaway cluster: tasks/s and launch→FINISHED latency.
    Tasks {
        #[arg(long, default_value = "10000", value_parser = crate::parse_count)]
        count: u64,
        /// `executor` (no-op tasks on the long-lived custom executor) or `command` (`true`).
        #[arg(long, default_value = "executor")]
        path: String,
        #[arg(long, default_value_t = 1)]
        agents: usize,
        /// Most tasks in flight at once (0: as many as the offers hold; 1: one task's
        /// launch→FINISHED round trip alone).
        #[arg(long, default_value_t = 0)]
        in_flight: u64,
        /// Run on the cluster of `--master`/`--cluster` instead of a throwaway one.
        #[arg(long)]
        existing: bool,
    },
}

/// `master` and `cluster` are the global `--master`/`--cluster`, used by `tasks --existing`.
pub fn run(what: BenchKind, master: Option<&str>, cluster: &Path) -> anyhow::Result<()> {
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
            in_flight,
            existing,
        } => {
            let path = match path.as_str() {
                "executor" => bramble::bench::TaskPath::Executor,
                "command" => bramble::bench::TaskPath::Command,
                other => bail!("--path {other}: use executor or command"),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let cluster = if existing {
                    let target = Target::find(master, cluster).await?;
                    BenchCluster::Existing(Box::new(target.scheduler_config("bench")?))
                } else {
                    BenchCluster::Throwaway(agents)
                };
                bramble::bench::tasks(path, count, in_flight, cluster, self_executor("pi")?).await
            })?;
            print_json(&report)
        }
    }
}
