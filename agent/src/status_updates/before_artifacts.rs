//! `TaskAdded` records as agents wrote them before tasks carried fetched artifacts
//! (`TaskInfo.artifacts`): postcard is positional, so such a record's task cannot be decoded as
//! today's `LoggedTask`. They keep their variant index in `frame::Record`
//! (`TaskAddedBeforeArtifacts`) and are read into today's shape as they are scanned; new
//! `TaskAdded` records are written under a variant appended after all the others.

use crate::checkpoint::LoggedTask;
use bramble_proto::task::{CommandInfo, ExecutorInfo, MesosTask, TaskInfo};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskState};
use serde::{Deserialize, Serialize};

/// `TaskInfo` before `artifacts` (field order matters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TaskInfoV2 {
    task_id: TaskId,
    name: String,
    agent_id: AgentId,
    resources: Resources,
    command: Option<CommandInfo>,
    executor: Option<ExecutorInfo>,
    data: Vec<u8>,
    mesos: Option<Box<MesosTask>>,
    image: Option<String>,
}

/// `LoggedTask` holding a [`TaskInfoV2`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LoggedTaskV2 {
    framework_id: FrameworkId,
    info: TaskInfoV2,
    handed: bool,
    state: TaskState,
}

impl From<LoggedTaskV2> for LoggedTask {
    fn from(old: LoggedTaskV2) -> LoggedTask {
        let i = old.info;
        LoggedTask {
            framework_id: old.framework_id,
            info: TaskInfo {
                task_id: i.task_id,
                name: i.name,
                agent_id: i.agent_id,
                resources: i.resources,
                command: i.command,
                executor: i.executor,
                data: i.data,
                mesos: i.mesos,
                image: i.image,
                artifacts: Vec::new(),
            },
            handed: old.handed,
            state: old.state,
        }
    }
}

#[cfg(test)]
impl LoggedTaskV2 {
    /// How an older agent held `task` (which has no artifacts).
    pub(super) fn of(task: &LoggedTask) -> LoggedTaskV2 {
        let i = task.info.clone();
        assert!(i.artifacts.is_empty(), "older agents had no artifacts");
        LoggedTaskV2 {
            framework_id: task.framework_id.clone(),
            info: TaskInfoV2 {
                task_id: i.task_id,
                name: i.name,
                agent_id: i.agent_id,
                resources: i.resources,
                command: i.command,
                executor: i.executor,
                data: i.data,
                mesos: i.mesos,
                image: i.image,
            },
            handed: task.handed,
            state: task.state,
        }
    }
}
