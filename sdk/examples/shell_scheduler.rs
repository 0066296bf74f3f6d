//! Runs a shell command as N tasks on a Bramble cluster, printing every status update; exits 0
//! when all FINISHED. `--executor PATH` runs them on `shell_executor` instead of the agent's
//! built-in command executor.
//!
//! `shell_scheduler --master 192.168.1.10:5051 --cluster /etc/bramble/cluster --command "echo hi" --tasks 4`

use bramble_sdk::*;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    master: std::net::SocketAddr,
    #[arg(long)]
    cluster: std::path::PathBuf,
    /// Present this principal's certificate (`bramble cluster add-principal`).
    #[arg(long, env = "BRAMBLE_PRINCIPAL")]
    principal: Option<String>,
    #[arg(long)]
    command: String,
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    #[arg(long)]
    executor: Option<String>,
}

struct Shell {
    args: Args,
    executor: Option<ExecutorInfo>,
    launched: usize,
    ended: Vec<TaskState>,
}

#[async_trait]
impl Scheduler for Shell {
    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        let need = Resources::new(0.1, 32);
        for offer in offers {
            let mut left = offer.resources.clone();
            if let Some(e) = self
                .executor
                .as_ref()
                .filter(|e| !offer.executor_ids.contains(&e.executor_id))
            {
                left = left.checked_sub(&e.resources).unwrap_or_default(); // room for the executor
            }
            let mut tasks = Vec::new();
            while let (true, Some(rest)) =
                (self.launched < self.args.tasks, left.checked_sub(&need))
            {
                left = rest;
                self.launched += 1;
                tasks.push(TaskInfo {
                    task_id: format!("shell-{}", self.launched).into(),
                    name: self.args.command.clone(),
                    agent_id: offer.agent_id.clone(),
                    resources: need.clone(),
                    command: self
                        .executor
                        .is_none()
                        .then(|| CommandInfo::shell(&self.args.command)),
                    executor: self.executor.clone(),
                    data: self.args.command.clone().into_bytes(),
                    mesos: None,
                    image: None,
                    artifacts: Vec::new(),
                });
            }
            let _ = driver.launch_tasks(vec![offer.id], tasks, Filters::default());
            // none = decline
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        println!("{} {} {}", status.task_id, status.state, status.message);
        if status.state.is_terminal() {
            self.ended.push(status.state);
            if self.ended.len() == self.args.tasks {
                driver.stop(false);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = SchedulerConfig::as_principal(
        args.master,
        &args.cluster,
        args.principal.as_deref(),
        framework_info("shell"),
    )?;
    let executor = args.executor.as_ref().map(|path| ExecutorInfo {
        executor_id: "shell-executor".into(),
        name: "shell executor".into(),
        command: CommandInfo::program(path.clone(), vec![]),
        resources: Resources::new(0.1, 32),
    });
    let shell = run_scheduler(
        config,
        Shell {
            args,
            executor,
            launched: 0,
            ended: Vec::new(),
        },
    )
    .await?;
    let ok = shell.ended.iter().all(|s| *s == TaskState::Finished);
    std::process::exit(if ok { 0 } else { 1 });
}
