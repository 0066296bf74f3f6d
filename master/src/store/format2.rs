//! Reading a format-2 store (container images, before fetched artifacts): its task records
//! hold a `TaskInfo` without `artifacts`, and postcard is positional, so they cannot be decoded
//! as today's records. [`Store::open`](super::Store::open) rewrites them once, in one
//! transaction (`format1.rs`'s `upgrade_tasks`), and bumps the format.

use super::{Store, StoreError, TaskRecord};
use bramble_proto::task::TaskInfoV2;
use bramble_proto::{FrameworkId, TaskReason, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

/// The store format this module reads.
pub(super) const FORMAT: u64 = 2;

/// `TaskRecord` as format 2 wrote it.
#[derive(Serialize, Deserialize)]
struct TaskRecordV2 {
    framework_id: FrameworkId,
    info: TaskInfoV2,
    state: TaskState,
    message: String,
    reason: Option<TaskReason>,
    launched_at: f64,
    started_at: Option<f64>,
    ended_at: Option<f64>,
    terminal: Option<TaskStatus>,
    resend_by_master: bool,
}

impl From<TaskRecordV2> for TaskRecord {
    fn from(old: TaskRecordV2) -> TaskRecord {
        TaskRecord {
            framework_id: old.framework_id,
            info: old.info.into(),
            state: old.state,
            message: old.message,
            reason: old.reason,
            launched_at: old.launched_at,
            started_at: old.started_at,
            ended_at: old.ended_at,
            terminal: old.terminal,
            resend_by_master: old.resend_by_master,
        }
    }
}

impl Store {
    pub(super) fn upgrade_from_format2(&self) -> Result<usize, StoreError> {
        self.upgrade_tasks::<TaskRecordV2>("format-2 task")
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::super::format1::tests::{an_old_store_opens_with, running};
    use super::*;

    fn as_format2(r: &TaskRecord) -> Vec<u8> {
        encode(&TaskRecordV2 {
            framework_id: r.framework_id.clone(),
            info: TaskInfoV2::try_from(r.info.clone()).expect("format 2 had no artifacts"),
            state: r.state,
            message: r.message.clone(),
            reason: r.reason,
            launched_at: r.launched_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            terminal: r.terminal.clone(),
            resend_by_master: r.resend_by_master,
        })
    }

    #[test]
    fn a_format2_store_opens_with_its_running_tasks() {
        // Its task lacks artifacts.
        let running = running(Some("busybox"));
        an_old_store_opens_with(FORMAT, &as_format2(&running), running);
    }
}
