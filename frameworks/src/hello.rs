//! `bramble hello`: the smallest long-running task — a shell loop printing a greeting every
//! five seconds until it is killed. It needs no executor of ours: a task with a `command` is
//! run by the agent's built-in command executor, in its own session and sandbox, so the
//! greetings land in the sandbox's `stdout` (`bramble logs TASK --follow` shows them).
//! With an image (`bramble hello --image busybox`) the same loop runs in that container
//! image, as the Mesos workshop's hello-mesos does, on an agent advertising `containers`.

use crate::service::{
    command_task, run_service, Launch, ServiceEvent, ServiceOutcome, ServiceSpec,
};
use bramble_proto::task::{CommandInfo, CONTAINERS_ATTRIBUTE};
use bramble_sdk::{Offer, Resources, SchedulerConfig, SdkError, TaskId};
use std::future::Future;

/// The shell loop. The first line is printed at once, so a watcher need not wait 5 s;
/// `hostname` is not on every minimal image, hence the fallback.
pub const HELLO_SCRIPT: &str = "while :; do \
     echo \"hello from $(hostname 2>/dev/null || uname -n) at $(date '+%Y-%m-%d %H:%M:%S')\"; \
     sleep 5; \
     done";

/// How the hello service ended.
pub type HelloOutcome = ServiceOutcome;

/// A shell loop needs almost nothing.
pub fn hello_resources() -> Resources {
    Resources::new(0.1, 16)
}

/// The hello task for `offer`, or why the offer cannot take it.
pub fn hello_task(offer: &Offer, task_id: TaskId) -> Result<Launch, String> {
    hello_task_in(offer, task_id, None)
}

/// The hello task in container image `image` (none: on the agent's filesystem) for `offer`,
/// or why the offer cannot take it.
pub fn hello_task_in(
    offer: &Offer,
    task_id: TaskId,
    image: Option<&str>,
) -> Result<Launch, String> {
    if let Some(image) = image {
        if !offer.attributes.contains_key(CONTAINERS_ATTRIBUTE) {
            return Err(format!(
                "{} has no container runtime for image {image} (no {CONTAINERS_ATTRIBUTE:?} attribute)",
                offer.hostname
            ));
        }
    }
    let mut task = command_task(
        offer,
        task_id,
        "hello",
        "hello",
        hello_resources(),
        CommandInfo::shell(HELLO_SCRIPT),
    )?;
    task.image = image.map(str::to_string);
    Ok(Launch { task, port: None })
}

/// Launches the hello task on the first offer that fits, reports each step to `report`
/// (RUNNING names the agent and the task id), and when `until` resolves kills the task,
/// waits for KILLED and tears the framework down.
pub async fn run_hello(
    config: SchedulerConfig,
    until: impl Future<Output = ()> + Send,
    report: impl FnMut(&ServiceEvent) + Send + 'static,
) -> Result<HelloOutcome, SdkError> {
    run_hello_in(config, None, until, report).await
}

/// [`run_hello`] in container image `image` (none: on the agent's filesystem).
pub async fn run_hello_in(
    config: SchedulerConfig,
    image: Option<String>,
    until: impl Future<Output = ()> + Send,
    report: impl FnMut(&ServiceEvent) + Send + 'static,
) -> Result<HelloOutcome, SdkError> {
    let spec = ServiceSpec {
        name: "hello".into(),
        build: Box::new(move |offer, id| hello_task_in(offer, id, image.as_deref())),
    };
    run_service(config, spec, until, report).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::offer;
    use bramble_sdk::AgentId;

    #[test]
    fn hello_is_a_shell_task_on_the_offering_agent() {
        let launch = hello_task(&offer(Resources::new(1.0, 128)), "hello-1".into()).unwrap();
        assert_eq!(launch.task.agent_id, AgentId::from("a1"));
        assert!(launch.task.executor.is_none());
        let cmd = launch.task.command.expect("a command task");
        assert!(cmd.shell);
        assert!(cmd.value.contains("hello from"));
        assert_eq!(launch.port, None);
    }

    #[test]
    fn hello_in_an_image_goes_only_to_an_agent_with_a_runtime() {
        let mut o = offer(Resources::new(1.0, 128));
        let why = hello_task_in(&o, "hello-1".into(), Some("busybox")).unwrap_err();
        assert!(why.contains("no container runtime"), "{why}");
        o.attributes
            .insert(CONTAINERS_ATTRIBUTE.to_string(), "crun".to_string());
        let launch = hello_task_in(&o, "hello-1".into(), Some("busybox")).unwrap();
        assert_eq!(launch.task.image.as_deref(), Some("busybox"));
        assert!(launch.task.command.expect("a command task").shell);
    }

    #[test]
    fn too_small_offers_say_why() {
        let why = hello_task(&offer(Resources::new(0.05, 128)), "hello-1".into()).unwrap_err();
        assert!(why.starts_with("pi-a is too small"), "{why}");
    }
}
