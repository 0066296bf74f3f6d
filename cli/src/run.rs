//! `bramble run [--image IMAGE] -- CMD…`: one command as a task somewhere on the cluster, its
//! output streamed back, and its exit status as ours. With an image the task goes only to an
//! agent advertising the `containers` attribute, and none in the cluster is an error up front.

use anyhow::{bail, Context};
use bramble_client::OperatorClient;
use bramble_proto::task::{CommandInfo, TaskInfo, CONTAINERS_ATTRIBUTE};
use bramble_sdk::{
    async_trait, framework_info, Credentials, Filters, FrameworkId, Offer, Resources, Role,
    Scheduler, SchedulerConfig, SchedulerDriver, TaskState, TaskStatus,
};
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// What to run: a shell line on the agent's filesystem, or a command in a container image.
#[derive(Debug, Clone, PartialEq)]
pub struct What {
    pub command: CommandInfo,
    pub image: Option<String>,
}

impl What {
    /// `words` joined into one `/bin/sh -c` line; in an image, the first word is the program
    /// and the rest its arguments, as `docker run IMAGE sh -c '...'` takes them (an image may
    /// have no `/bin/sh`, and the quoting the user wrote is kept).
    pub fn new(words: Vec<String>, image: Option<String>) -> What {
        let command = match (&image, words.split_first()) {
            (Some(_), Some((program, args))) => {
                CommandInfo::program(program.clone(), args.to_vec())
            }
            _ => CommandInfo::shell(words.join(" ")),
        };
        What { command, image }
    }

    fn describe(&self) -> String {
        let mut text = self.command.value.clone();
        for a in &self.command.arguments {
            text.push(' ');
            text.push_str(a);
        }
        text
    }
}

/// Whether an agent with these attributes can run `what`.
fn can_run(what: &What, attributes: &std::collections::BTreeMap<String, String>) -> bool {
    what.image.is_none() || attributes.contains_key(CONTAINERS_ATTRIBUTE)
}

/// What happened to the task, for the exit status.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub message: String,
    pub reason: Option<bramble_proto::TaskReason>,
}

impl RunOutcome {
    /// The exit code `bramble run` leaves with (the command's own when it failed with one, 1
    /// for any other unhappy end), and, unless the task finished, the line saying why: its
    /// state, reason and the agent's or master's message, so a task refused before it ran
    /// (a missing image, another architecture) does not end in silence.
    pub fn verdict(&self) -> (i32, Option<String>) {
        if self.state == TaskState::Finished {
            return (0, None);
        }
        let code = match self.state {
            TaskState::Failed => self.exit_code.filter(|c| *c != 0).unwrap_or(1),
            _ => 1,
        };
        let mut line = format!("task ended {}", self.state);
        if let Some(reason) = self.reason {
            line.push_str(&format!(" ({reason:?})"));
        }
        let message = self.message.trim();
        if !message.is_empty() {
            line.push_str(": ");
            line.push_str(message);
        }
        (code, Some(line))
    }
}

struct RunOne {
    task: Option<(String, Resources, What)>,
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
            let fits = self.task.as_ref().is_some_and(|(_, need, what)| {
                offer.resources.contains(need) && can_run(what, &offer.attributes)
            });
            if !fits {
                let _ = driver.decline_offer(
                    offer.id,
                    Filters {
                        refuse_seconds: 1.0,
                    },
                );
                continue;
            }
            if let Some((id, need, what)) = self.task.take() {
                let task = TaskInfo {
                    task_id: id.clone().into(),
                    name: what.describe(),
                    agent_id: offer.agent_id.clone(),
                    resources: need,
                    command: Some(what.command),
                    executor: None,
                    data: Vec::new(),
                    mesos: None,
                    image: what.image,
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

/// Runs `what` with `resources`, printing its stdout as it is written, then its stderr.
pub async fn run(
    cluster: &Path,
    principal: Option<&str>,
    master: SocketAddr,
    what: What,
    resources: Resources,
) -> anyhow::Result<RunOutcome> {
    let mut operator = OperatorClient::connect_as(cluster, principal, master).await?;
    let state = operator.state().await?;
    if let Some(image) = &what.image {
        if !state.agents.iter().any(|a| can_run(&what, &a.attributes)) {
            bail!(
                "no agent can run image {image}: none advertises the {CONTAINERS_ATTRIBUTE:?} \
                 attribute (install crun and set [containers] runtime = \"/usr/bin/crun\" in \
                 the agents' agent.toml)"
            );
        }
    }
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
        task: Some((task_id.clone(), resources, what)),
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
        reason: last.reason,
    })
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_an_image_the_words_are_program_and_arguments() {
        let words = ["sh", "-c", "echo Hey Bramble"].map(String::from).to_vec();
        let boxed = What::new(words.clone(), Some("busybox".into()));
        assert!(!boxed.command.shell);
        assert_eq!(boxed.command.value, "sh");
        assert_eq!(boxed.command.arguments, ["-c", "echo Hey Bramble"]);
        let plain = What::new(words, None);
        assert!(plain.command.shell);
        assert_eq!(plain.command.value, "sh -c echo Hey Bramble");
    }

    #[test]
    fn an_unhappy_end_says_why_and_keeps_the_commands_exit_code() {
        let outcome = |state, exit_code, reason, message: &str| RunOutcome {
            state,
            exit_code,
            message: message.to_string(),
            reason,
        };
        assert_eq!(
            outcome(TaskState::Finished, Some(0), None, "").verdict(),
            (0, None)
        );
        let (code, line) = outcome(
            TaskState::Failed,
            None,
            Some(bramble_proto::TaskReason::LaunchFailed),
            "image \"nosuch:latest\" is not on this agent",
        )
        .verdict();
        assert_eq!(code, 1);
        assert_eq!(
            line.as_deref(),
            Some("task ended TASK_FAILED (LaunchFailed): image \"nosuch:latest\" is not on this agent")
        );
        let (code, line) = outcome(
            TaskState::Failed,
            Some(3),
            Some(bramble_proto::TaskReason::CommandExited),
            "exited with status 3",
        )
        .verdict();
        assert_eq!(code, 3);
        assert!(line.is_some_and(|l| l.contains("exited with status 3")));
        let (code, line) = outcome(TaskState::Killed, None, None, "").verdict();
        assert_eq!((code, line.as_deref()), (1, Some("task ended TASK_KILLED")));
    }

    #[test]
    fn only_agents_with_a_runtime_take_an_image_task() {
        let boxed = What::new(vec!["true".into()], Some("busybox".into()));
        let plain = What::new(vec!["true".into()], None);
        let none = std::collections::BTreeMap::new();
        let crun: std::collections::BTreeMap<String, String> =
            [(CONTAINERS_ATTRIBUTE.to_string(), "crun".to_string())].into();
        assert!(!can_run(&boxed, &none));
        assert!(can_run(&boxed, &crun));
        assert!(can_run(&plain, &none));
    }
}
