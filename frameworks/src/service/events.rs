//! What a service reports as it runs, and how it ended.

use bramble_sdk::{AgentId, FrameworkId, TaskId, TaskState};
use std::fmt;

/// What happened, as it happens: `main.rs` prints these, tests watch them.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceEvent {
    Registered {
        framework_id: FrameworkId,
    },
    /// No offer fits yet (reported when the reason changes, not for every offer).
    NoFit {
        reason: String,
    },
    Launched {
        task_id: TaskId,
        hostname: String,
        port: Option<u16>,
    },
    Running {
        framework_id: Option<FrameworkId>,
        task_id: TaskId,
        agent_id: AgentId,
        hostname: String,
        port: Option<u16>,
    },
    Relaunching {
        task_id: TaskId,
        state: TaskState,
        message: String,
    },
    Killing {
        task_id: TaskId,
    },
    Ended {
        task_id: TaskId,
        state: TaskState,
        message: String,
    },
}

impl fmt::Display for ServiceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceEvent::Registered { framework_id } => {
                write!(f, "framework {framework_id} registered; waiting for an offer")
            }
            ServiceEvent::NoFit { reason } => write!(f, "no offer fits yet: {reason}"),
            ServiceEvent::Launched {
                task_id, hostname, ..
            } => write!(f, "launching {task_id} on {hostname}"),
            ServiceEvent::Running {
                task_id,
                hostname,
                port: Some(port),
                ..
            } => write!(
                f,
                "{task_id} is RUNNING on {hostname}: serving http://{hostname}:{port}/ (Ctrl-C stops it)"
            ),
            ServiceEvent::Running {
                task_id, hostname, ..
            } => write!(
                f,
                "{task_id} is RUNNING on {hostname}; watch it with `bramble logs {task_id} --follow` (Ctrl-C stops it)"
            ),
            ServiceEvent::Relaunching {
                task_id,
                state,
                message,
            } => write!(f, "{task_id} ended {state} ({message}); launching it again"),
            ServiceEvent::Killing { task_id } => write!(f, "killing {task_id}"),
            ServiceEvent::Ended {
                task_id,
                state,
                message,
            } => {
                write!(f, "{task_id} ended {state}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// How the service ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceOutcome {
    pub framework_id: Option<FrameworkId>,
    /// The last task launched; `None` when no offer ever fitted.
    pub task_id: Option<TaskId>,
    pub agent_id: Option<AgentId>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    /// Whether the task was ever seen RUNNING.
    pub was_running: bool,
    /// The last task's terminal state; `None` if it never ended (or never started).
    pub final_state: Option<TaskState>,
    pub message: String,
    pub relaunches: u32,
}

impl ServiceOutcome {
    /// The service's address, for a task that was given a port.
    pub fn url(&self) -> Option<String> {
        Some(format!(
            "http://{}:{}/",
            self.hostname.as_deref()?,
            self.port?
        ))
    }
}
