//! `TaskAdded` records as agents wrote them before tasks carried fetched artifacts
//! (`TaskInfo.artifacts`): postcard is positional, so such a record's task cannot be decoded as
//! today's `LoggedTask`. They keep their variant index in `frame::Record`
//! (`TaskAddedBeforeArtifacts`) and are read into today's shape as they are scanned; new
//! `TaskAdded` records are written under a variant appended after all the others. The task
//! itself is `bramble-proto`'s [`TaskInfoV2`], which the master's store reads too.

use crate::checkpoint::LoggedTask;
use bramble_proto::task::TaskInfoV2;
use bramble_proto::{FrameworkId, TaskState};
use serde::{Deserialize, Serialize};

/// `LoggedTask` holding a [`TaskInfoV2`] (field order matters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LoggedTaskV2 {
    framework_id: FrameworkId,
    info: TaskInfoV2,
    handed: bool,
    state: TaskState,
}

impl From<LoggedTaskV2> for LoggedTask {
    fn from(old: LoggedTaskV2) -> LoggedTask {
        LoggedTask {
            framework_id: old.framework_id,
            info: old.info.into(),
            handed: old.handed,
            state: old.state,
        }
    }
}

#[cfg(test)]
impl LoggedTaskV2 {
    /// How an older agent held `task` (which has no artifacts).
    pub(super) fn of(task: &LoggedTask) -> LoggedTaskV2 {
        LoggedTaskV2 {
            framework_id: task.framework_id.clone(),
            info: TaskInfoV2::try_from(task.info.clone()).expect("older agents had no artifacts"),
            handed: task.handed,
            state: task.state,
        }
    }
}
