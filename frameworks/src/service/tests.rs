//! The pure policy (what a terminal update leads to) and how events read.

use super::scheduler::{after_end, AfterEnd};
use super::*;
use bramble_sdk::{status, TaskReason, TaskState, TaskStatus, TaskStatusExt};

fn ended(state: TaskState) -> TaskStatus {
    status(&TaskId::from("svc-1"), state)
}

#[test]
fn lost_tasks_are_relaunched_a_bounded_number_of_times() {
    let lost = ended(TaskState::Lost).reason(TaskReason::AgentRemoved);
    assert_eq!(after_end(&lost, false, 0), AfterEnd::Relaunch);
    assert_eq!(
        after_end(&lost, false, MAX_RELAUNCHES - 1),
        AfterEnd::Relaunch
    );
    assert_eq!(after_end(&lost, false, MAX_RELAUNCHES), AfterEnd::Finish);
}

#[test]
fn nothing_is_relaunched_once_stopping() {
    let lost = ended(TaskState::Lost);
    assert_eq!(after_end(&lost, true, 0), AfterEnd::Finish);
}

#[test]
fn failures_and_kills_end_the_service() {
    for state in [TaskState::Failed, TaskState::Killed, TaskState::Finished] {
        assert_eq!(after_end(&ended(state), false, 0), AfterEnd::Finish);
    }
    let refused = ended(TaskState::Error).reason(TaskReason::InvalidTask);
    assert_eq!(after_end(&refused, false, 0), AfterEnd::Finish);
    let raced = ended(TaskState::Error).reason(TaskReason::InvalidOffer);
    assert_eq!(after_end(&raced, false, 0), AfterEnd::Relaunch);
}

#[test]
fn events_read_as_instructions() {
    let running = ServiceEvent::Running {
        framework_id: None,
        task_id: "hello-1".into(),
        agent_id: "a".into(),
        hostname: "pi-a".into(),
        port: None,
    };
    assert!(running
        .to_string()
        .contains("bramble logs hello-1 --follow"));
    let serving = ServiceEvent::Running {
        framework_id: None,
        task_id: "http-1".into(),
        agent_id: "a".into(),
        hostname: "pi-a".into(),
        port: Some(31000),
    };
    assert!(serving.to_string().contains("http://pi-a:31000/"));
    let outcome = ServiceOutcome {
        hostname: Some("pi-a".into()),
        port: Some(31000),
        ..ServiceOutcome::default()
    };
    assert_eq!(outcome.url().as_deref(), Some("http://pi-a:31000/"));
}
