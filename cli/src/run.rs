//! `bramble run [--image IMAGE] -- CMD…`: one command as a task somewhere on the cluster, its
//! output streamed back, and its exit status as ours. With an image the task goes only to an
//! agent advertising the `containers` attribute, and none in the cluster is an error up front.
//! With `--json` nothing is streamed: the task's output is kept and printed with its final
//! status as one JSON object ([`RunOutcome::json`]), its state spelled as the text says it.

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
    /// Fetched into the task's sandbox before it starts (`--fetch`).
    pub artifacts: Vec<bramble_proto::task::Artifact>,
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
        What {
            command,
            image,
            artifacts: Vec::new(),
        }
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

/// Where the task's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Printed as they are written: stdout live, stderr once the task ended.
    Stream,
    /// Kept in the outcome (`--json`).
    Capture,
}

/// What happened to the task, for the exit status.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub task: String,
    pub framework: String,
    /// The hostname of the agent it was launched on, if it was.
    pub agent: Option<String>,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub message: String,
    pub reason: Option<bramble_proto::TaskReason>,
    /// With [`Output::Capture`]: the task's stdout and stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
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

    /// The final status as `bramble run --json` prints it: the state spelled as in the text
    /// (`TASK_FAILED`), the exit code `bramble run` leaves with, why (when it did not finish),
    /// and the output (decoded lossily).
    pub fn json(&self) -> serde_json::Value {
        let (exit, why) = self.verdict();
        serde_json::json!({
            "task": self.task,
            "framework": self.framework,
            "agent": self.agent,
            "state": self.state.name(),
            "exit_code": self.exit_code,
            "reason": self.reason.map(|r| format!("{r:?}")),
            "message": self.message,
            "why": why,
            "exit": exit,
            "stdout": String::from_utf8_lossy(&self.stdout),
            "stderr": String::from_utf8_lossy(&self.stderr),
        })
    }
}

struct RunOne {
    task: Option<(String, Resources, What)>,
    events: mpsc::UnboundedSender<TaskStatus>,
    registered: Option<oneshot::Sender<FrameworkId>>,
    /// The hostname of the agent the task was launched on.
    launched_on: Option<oneshot::Sender<String>>,
    /// Whether to say where it runs (not with `--json`: stdout is the JSON object alone,
    /// stderr the task's).
    say_where: bool,
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
                    artifacts: what.artifacts,
                };
                if self.say_where {
                    eprintln!("running {id} on {}", offer.hostname);
                }
                if let Some(tx) = self.launched_on.take() {
                    let _ = tx.send(offer.hostname.clone());
                }
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

/// Runs `what` with `resources`; with [`Output::Stream`] prints its stdout as it is written,
/// then its stderr, with [`Output::Capture`] keeps both in the outcome.
pub async fn run(
    cluster: &Path,
    principal: Option<&str>,
    master: SocketAddr,
    what: What,
    resources: Resources,
    output: Output,
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
    let (launched_on, agent) = oneshot::channel();
    let config = SchedulerConfig::new(master, creds, framework_info("bramble-run"));
    let scheduler = RunOne {
        task: Some((task_id.clone(), resources, what)),
        events: tx,
        registered: Some(registered),
        launched_on: Some(launched_on),
        say_where: output == Output::Stream,
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
    let mut stdout = Vec::new();
    if last.as_ref().is_some_and(|s| s.state == TaskState::Running) {
        match output {
            Output::Stream => {
                operator
                    .copy_sandbox_file(&framework, &task, "stdout", true, &mut std::io::stdout())
                    .await?
            }
            Output::Capture => {
                operator
                    .copy_sandbox_file(&framework, &task, "stdout", true, &mut stdout)
                    .await?
            }
        }
        while let Some(s) = rx.recv().await {
            let over = s.state.is_terminal();
            last = Some(s);
            if over {
                break;
            }
        }
    }
    // A task that never ran has no sandbox: its stderr is simply empty.
    let mut stderr = Vec::new();
    let _ = operator
        .copy_sandbox_file(&framework, &task, "stderr", false, &mut stderr)
        .await;
    if output == Output::Stream {
        use std::io::Write;
        let _ = std::io::stderr().write_all(&stderr);
        stderr.clear();
    }
    operator.close();
    let _ = handle.await;
    let last = last.context("the framework ended before the task reported anything")?;
    Ok(RunOutcome {
        task: task.0,
        framework: framework.0,
        agent: agent.await.ok(),
        state: last.state,
        exit_code: last.exit_code,
        message: last.message,
        reason: last.reason,
        stdout,
        stderr,
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
            task: "run-1".into(),
            framework: "fw-1".into(),
            agent: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
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
    fn the_json_status_spells_the_state_as_the_text_does() {
        let outcome = RunOutcome {
            task: "run-1".into(),
            framework: "fw-1".into(),
            agent: Some("pi-2".into()),
            state: TaskState::Failed,
            exit_code: Some(3),
            message: "exited with status 3".into(),
            reason: Some(bramble_proto::TaskReason::CommandExited),
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
        };
        let (code, line) = outcome.verdict();
        let json = outcome.json();
        assert_eq!(json["state"], "TASK_FAILED");
        assert!(line.is_some_and(|l| l.contains("TASK_FAILED")));
        assert_eq!(json["exit"], code);
        assert_eq!(json["exit_code"], 3);
        assert_eq!(json["reason"], "CommandExited");
        assert_eq!(json["agent"], "pi-2");
        assert_eq!(json["stdout"], "out\n");
        assert_eq!(json["stderr"], "err\n");
        assert!(json["why"]
            .as_str()
            .is_some_and(|w| w.contains("exited with status 3")));
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
