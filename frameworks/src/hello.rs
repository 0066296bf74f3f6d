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
    run_service(config, hello_spec_in(image), until, report).await
}

/// The hello service: tasks `hello-1`, `hello-2`, … built by [`hello_task`].
#[cfg(test)]
fn hello_spec() -> ServiceSpec {
    hello_spec_in(None)
}

/// The hello service in container image `image` (none: on the agent's filesystem).
fn hello_spec_in(image: Option<String>) -> ServiceSpec {
    ServiceSpec {
        name: "hello".into(),
        build: Box::new(move |offer, id| hello_task_in(offer, id, image.as_deref())),
    }
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

/// The hello scheduler driven by the SDK's test kit.
#[cfg(test)]
mod kit_tests {
    use super::*;
    use crate::service::kit::service;
    use bramble_proto::messages::SchedulerCall;
    use bramble_sdk::testing::{offer, update};
    use bramble_sdk::{TaskReason, TaskState};

    #[tokio::test]
    async fn hello_runs_its_shell_loop_on_the_first_offer_that_fits() {
        let mut s = service(hello_spec()).await;
        s.t.offers(vec![
            offer("tiny", "a0", Resources::new(0.05, 256)),
            offer("o1", "a1", Resources::new(1.0, 256)),
        ])
        .await;
        let launched = s.t.launched();
        assert_eq!(launched.len(), 1, "{:?}", s.t.calls());
        let task = &launched[0];
        assert_eq!(task.task_id.as_str(), "hello-1");
        assert_eq!(task.agent_id.as_str(), "a1");
        assert_eq!(task.resources, hello_resources());
        let cmd = task.command.as_ref().expect("a command task");
        assert_eq!(cmd.value, HELLO_SCRIPT);
        assert!(
            task.executor.is_none(),
            "the agent's command executor runs it"
        );
        assert_eq!(s.t.declined(), vec!["tiny".into()]);
        assert_eq!(s.t.count(|c| matches!(c, SchedulerCall::Suppress)), 1);
    }

    #[tokio::test]
    async fn hello_moves_to_another_agent_when_its_agent_is_lost_and_is_killed_on_stop() {
        let mut s = service(hello_spec()).await;
        s.t.offers(vec![offer("o1", "a1", Resources::new(1.0, 256))])
            .await;
        s.t.update(update("hello-1", "a1", TaskState::Running))
            .await;
        let mut lost = update("hello-1", "a1", TaskState::Lost);
        lost.reason = Some(TaskReason::AgentRemoved);
        s.t.update(lost).await;
        assert_eq!(s.t.count(|c| matches!(c, SchedulerCall::Revive)), 1);
        s.t.offers(vec![offer("o2", "a2", Resources::new(1.0, 256))])
            .await;
        let again = s.t.launched();
        assert_eq!(again.len(), 2);
        assert_eq!(
            (again[1].task_id.as_str(), again[1].agent_id.as_str()),
            ("hello-2", "a2")
        );
        s.t.update(update("hello-2", "a2", TaskState::Running))
            .await;
        s.stop();
        assert_eq!(s.t.killed(), vec![TaskId::from("hello-2")]);
        s.t.update(update("hello-2", "a2", TaskState::Killed)).await;
        assert_eq!(s.t.stopped(), Some(false));
        assert_eq!(s.outcome().final_state, Some(TaskState::Killed));
        assert_eq!(s.outcome().relaunches, 1);
    }
}
