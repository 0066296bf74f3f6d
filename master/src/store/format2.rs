//! Reading a format-2 store (container images, before fetched artifacts): its task records
//! hold a `TaskInfo` without `artifacts`, and postcard is positional, so they cannot be decoded
//! as today's records. [`Store::open`](super::Store::open) rewrites them once, in one
//! transaction (`format1.rs`'s `upgrade_tasks`), and bumps the format.

use super::{Store, StoreError, TaskRecord};
use bramble_proto::task::{CommandInfo, ExecutorInfo, MesosTask, TaskInfo};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskReason, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

/// The store format this module reads.
pub(super) const FORMAT: u64 = 2;

/// `TaskInfo` as format 2 wrote it (field order matters: postcard is positional).
#[derive(Serialize, Deserialize)]
struct TaskInfoV2 {
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
        let i = old.info;
        TaskRecord {
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
    use super::super::{encode, META, META_FORMAT, TASKS};
    use super::*;

    fn as_format2(r: &TaskRecord) -> Vec<u8> {
        let i = r.info.clone();
        assert!(i.artifacts.is_empty(), "format 2 had no artifacts");
        encode(&TaskRecordV2 {
            framework_id: r.framework_id.clone(),
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
        let dir = tempfile::tempdir().expect("tempdir");
        let running = TaskRecord {
            framework_id: FrameworkId("fw".into()),
            info: TaskInfo {
                task_id: TaskId("t1".into()),
                name: "sleeper".into(),
                agent_id: AgentId("a1".into()),
                resources: Resources::new(0.5, 64),
                command: Some(CommandInfo::shell("sleep 100")),
                executor: None,
                data: vec![7, 7],
                mesos: None,
                image: Some("busybox".into()),
                artifacts: Vec::new(),
            },
            state: TaskState::Running,
            message: "running".into(),
            reason: None,
            launched_at: 1.5,
            started_at: Some(2.5),
            ended_at: None,
            terminal: None,
            resend_by_master: false,
        };
        {
            // A store as a format-2 master left it: its meta says 2, its task lacks artifacts.
            let (store, _) = Store::open(dir.path(), "cluster").expect("open");
            let txn = store.db.begin_write().expect("txn");
            {
                let mut tasks = txn.open_table(TASKS).expect("tasks");
                tasks
                    .insert(("fw", "t1"), as_format2(&running).as_slice())
                    .expect("insert");
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(META_FORMAT, FORMAT.to_le_bytes().as_slice())
                    .expect("meta");
            }
            txn.commit().expect("commit");
        }
        let (store, recovered) = Store::open(dir.path(), "cluster").expect("reopen");
        assert_eq!(recovered.tasks, vec![running.clone()]);
        // Upgraded once: the next open reads it as a current store.
        drop(store);
        let (_store, again) = Store::open(dir.path(), "cluster").expect("third open");
        assert_eq!(again.tasks, vec![running]);
    }
}
