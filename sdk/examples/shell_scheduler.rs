//! Runs a shell command as N tasks on a Bramble cluster, printing every status update.
//!
//! ```text
//! shell_scheduler --master 192.168.1.10:5051 --cluster /etc/bramble/cluster \
//!     --command "echo hi from $(hostname)" --tasks 4 [--executor /path/to/shell_executor]
//! ```
//!
//! Each task takes 0.1 CPU and 32 MiB. Without `--executor` the agent's built-in command
//! executor runs the line; with it, the custom executor in `shell_executor.rs` does. Exits 0
//! when every task FINISHED.

use anyhow::Context;
use bramble_sdk::{
    async_trait, framework_info, run_scheduler, CommandInfo, Credentials, ExecutorInfo, Filters,
    Offer, Resources, Role, Scheduler, SchedulerConfig, SchedulerDriver, TaskInfo, TaskState,
    TaskStatus,
};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The master's QUIC address.
    #[arg(long)]
    master: SocketAddr,
    /// Cluster directory holding ca.pem and the framework certificate.
    #[arg(long)]
    cluster: PathBuf,
    /// Shell line each task runs.
    #[arg(long)]
    command: String,
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// Run tasks with this custom executor program instead of the built-in one.
    #[arg(long)]
    executor: Option<String>,
}

struct Shell {
    args: Args,
    executor: Option<ExecutorInfo>,
    launched: usize,
    finished: usize,
    failed: usize,
}

#[async_trait]
impl Scheduler for Shell {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let need = Resources::new(0.1, 32);
        for offer in offers {
            let mut left = offer.resources.clone();
            // A custom executor not yet running on that agent needs room of its own.
            if let Some(e) = &self.executor {
                if !offer.executor_ids.contains(&e.executor_id) {
                    left = left.checked_sub(&e.resources).unwrap_or_default();
                }
            }
            let mut tasks = Vec::new();
            while let Some(rest) = left.checked_sub(&need) {
                if self.launched == self.args.tasks {
                    break;
                }
                left = rest;
                self.launched += 1;
                tasks.push(TaskInfo {
                    task_id: format!("shell-{}", self.launched).into(),
                    name: format!("shell {}", self.launched),
                    agent_id: offer.agent_id.clone(),
                    resources: need.clone(),
                    command: self
                        .executor
                        .is_none()
                        .then(|| CommandInfo::shell(&self.args.command)),
                    executor: self.executor.clone(),
                    data: self.args.command.clone().into_bytes(),
                });
            }
            let answer = if tasks.is_empty() {
                driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 30.0,
                    },
                )
            } else {
                println!("launching {} task(s) on {}", tasks.len(), offer.hostname);
                driver.launch_tasks(vec![offer.id], tasks, Filters::default())
            };
            if let Err(e) = answer {
                eprintln!("answering an offer: {e}");
            }
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        println!("{} {} {}", status.task_id, status.state, status.message);
        if status.state.is_terminal() {
            match status.state {
                TaskState::Finished => self.finished += 1,
                _ => self.failed += 1,
            }
            if self.finished + self.failed == self.args.tasks {
                driver.stop(false);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bramble_sdk::proto::logging::init(None);
    let args = Args::parse();
    let creds = Credentials::load(&args.cluster, Role::Framework).with_context(|| {
        format!(
            "loading the framework certificate from {}",
            args.cluster.display()
        )
    })?;
    let config = SchedulerConfig::new(args.master, creds, framework_info("shell"));
    let executor = args.executor.as_ref().map(|path| ExecutorInfo {
        executor_id: "shell-executor".into(),
        name: "shell executor".into(),
        command: CommandInfo::program(path.clone(), vec![]),
        resources: Resources::new(0.1, 32),
    });
    let shell = Shell {
        args,
        executor,
        launched: 0,
        finished: 0,
        failed: 0,
    };
    let done = run_scheduler(config, shell).await?;
    println!("{} finished, {} did not", done.finished, done.failed);
    std::process::exit(if done.failed == 0 { 0 } else { 1 });
}
