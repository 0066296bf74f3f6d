//! `bramble hello`: the smallest long-running task — a shell loop printing a greeting every
//! five seconds until it is killed. It needs no executor of ours: a task with a `command` is
//! run by the agent's built-in command executor, in its own session and sandbox, so the
//! greetings land in the sandbox's `stdout` (`bramble logs TASK --follow` shows them).

use crate::service::{
    command_task, run_service, Launch, ServiceEvent, ServiceOutcome, ServiceSpec,
};
use bramble_proto::task::CommandInfo;
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
    let task = command_task(
        offer,
        task_id,
        "hello",
        "hello",
        hello_resources(),
        CommandInfo::shell(HELLO_SCRIPT),
    )?;
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
    let spec = ServiceSpec {
        name: "hello".into(),
        build: Box::new(hello_task),
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
    fn too_small_offers_say_why() {
        let why = hello_task(&offer(Resources::new(0.05, 128)), "hello-1".into()).unwrap_err();
        assert!(why.starts_with("pi-a is too small"), "{why}");
    }
}
