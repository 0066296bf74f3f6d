//! `bramble run -- CMD…`: one shell command as a task somewhere on the cluster, its output
//! streamed back, and its exit status as ours.

use anyhow::{bail, Context};
use bramble_client::OperatorClient;
use bramble_proto::task::{CommandInfo, TaskInfo};
use bramble_sdk::{
    async_trait, framework_info, Credentials, Filters, FrameworkId, Offer, Resources, Role,
    Scheduler, SchedulerConfig, SchedulerDriver, TaskState, TaskStatus,
};
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// What happened to the task, for the exit status.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub message: String,
}

struct RunOne {
    task: Option<(String, Resources, String)>,
    events: mpsc::UnboundedSender<TaskStatus>,
    registered: Option<oneshot::Sender<FrameworkId>>,
}

#[async_trait]
impl Scheduler for RunOne {
    async fn registered(&mut self, _: &SchedulerDriver, id: &FrameworkId, _: bool) {
        if let Some(tx) = self.registered.take() {
            let _ = tx.send(id.clone());
        }
    }

    async fn resource_offers(&mut self, driver: &SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let fits = self
                .task
                .as_ref()
                .is_some_and(|(_, need, _)| offer.resources.contains(need));
            if !fits {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 1.0,
                    },
                );
                continue;
            }
            if let Some((id, need, line)) = self.task.take() {
                let task = TaskInfo {
                    task_id: id.clone().into(),
                    name: line.clone(),
                    agent_id: offer.agent_id.clone(),
                    resources: need,
                    command: Some(CommandInfo::shell(line)),
                    executor: None,
                    data: Vec::new(),
                    mesos: None,
                    image: None,
                };
                eprintln!("running {id} on {}", offer.hostname);
                let _ = driver.launch_tasks(vec![offer.id], vec![task], Filters::default());
                let _ = driver.suppress_offers();
            }
        }
    }

    async fn status_update(&mut self, driver: &SchedulerDriver, status: &TaskStatus) {
        let _ = self.events.send(status.clone());
        if status.state.is_terminal() {
            driver.stop(false);
        }
    }
}

/// Runs `line` with `resources`, printing its stdout as it is written, then its stderr.
pub async fn run(
    cluster: &Path,
    principal: Option<&str>,
    master: SocketAddr,
    line: String,
    resources: Resources,
) -> anyhow::Result<RunOutcome> {
    let mut operator = OperatorClient::connect_as(cluster, principal, master).await?;
    let state = operator.state().await?;
    let fits_somewhere = state.agents.iter().any(|a| a.total.contains(&resources));
    if !fits_somewhere {
        let largest = state
            .agents
            .iter()
            .map(|a| a.total.to_string())
            .max()
            .unwrap_or_else(|| "no agents".into());
        bail!(
            "no agent can ever run this: it asks for {resources}, the largest agent has {largest}"
        );
    }
    let creds = Credentials::load_as(cluster, principal, Role::Operator)?;
    let task_id = format!("run-{}", &uuid_like());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (registered, framework) = oneshot::channel();
    let config = SchedulerConfig::new(master, creds, framework_info("bramble-run"));
    let scheduler = RunOne {
        task: Some((task_id.clone(), resources, line)),
        events: tx,
        registered: Some(registered),
    };
    let mut handle = tokio::spawn(bramble_sdk::run_scheduler(config, scheduler));
    let framework = tokio::select! {
        id = framework => id.context("the framework stopped before it registered")?,
        ended = &mut handle => {
            let why = match ended {
                Ok(Err(e)) => e.to_string(),
                _ => "it stopped".to_string(),
            };
            bail!("could not subscribe to the master: {why}");
        }
    };
    // Wait until the task runs (or ends first), then follow its stdout.
    let mut last: Option<TaskStatus> = None;
    while let Some(s) = rx.recv().await {
        let over = s.state.is_terminal();
        let running = s.state == TaskState::Running;
        last = Some(s);
        if over || running {
            break;
        }
    }
    let task = bramble_proto::TaskId(task_id);
    if last.as_ref().is_some_and(|s| s.state == TaskState::Running) {
        operator
            .copy_sandbox_file(&framework, &task, "stdout", true, &mut std::io::stdout())
            .await?;
        while let Some(s) = rx.recv().await {
            let over = s.state.is_terminal();
            last = Some(s);
            if over {
                break;
            }
        }
    }
    let stderr = operator.read_sandbox(&framework, &task, "stderr", 0).await;
    if let Ok(chunk) = stderr {
        use std::io::Write;
        let _ = std::io::stderr().write_all(&chunk.data);
    }
    operator.close();
    let _ = handle.await;
    let last = last.context("the framework ended before the task reported anything")?;
    Ok(RunOutcome {
        state: last.state,
        exit_code: last.exit_code,
        message: last.message,
    })
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}
