//! Reading a format-1 store (before container images): its task records hold a `TaskInfo`
//! without `image`, and postcard is positional, so they cannot be decoded as today's records.
//! [`Store::open`](super::Store::open) rewrites them once, in one transaction, and bumps the
//! format: a master upgraded on a card with running tasks keeps them.

use super::{encode, Store, StoreError, TaskRecord, META, META_FORMAT, TASKS};
use bramble_proto::task::{CommandInfo, ExecutorInfo, MesosTask, TaskInfoV2};
use bramble_proto::{AgentId, FrameworkId, Resources, TaskId, TaskReason, TaskState, TaskStatus};
use redb::ReadableTable;
use serde::Deserialize;

/// The store format this module reads.
pub(super) const FORMAT: u64 = 1;

/// `TaskInfo` as format 1 wrote it (field order matters: postcard is positional).
#[derive(Deserialize)]
struct TaskInfoV1 {
    task_id: TaskId,
    name: String,
    agent_id: AgentId,
    resources: Resources,
    command: Option<CommandInfo>,
    executor: Option<ExecutorInfo>,
    data: Vec<u8>,
    mesos: Option<Box<MesosTask>>,
}

/// `TaskRecord` as format 1 wrote it.
#[derive(Deserialize)]
struct TaskRecordV1 {
    framework_id: FrameworkId,
    info: TaskInfoV1,
    state: TaskState,
    message: String,
    reason: Option<TaskReason>,
    launched_at: f64,
    started_at: Option<f64>,
    ended_at: Option<f64>,
    terminal: Option<TaskStatus>,
    resend_by_master: bool,
}

impl From<TaskRecordV1> for TaskRecord {
    fn from(old: TaskRecordV1) -> TaskRecord {
        let i = old.info;
        TaskRecord {
            framework_id: old.framework_id,
            info: TaskInfoV2 {
                task_id: i.task_id,
                name: i.name,
                agent_id: i.agent_id,
                resources: i.resources,
                command: i.command,
                executor: i.executor,
                data: i.data,
                mesos: i.mesos,
                image: None,
            }
            .into(),
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
    /// Rewrites every task record, decoded as `Old` (an older format's `TaskRecord`), in
    /// today's encoding and marks the store current; all or nothing (one redb transaction).
    /// Returns how many records were rewritten.
    pub(super) fn upgrade_tasks<Old>(&self, what: &'static str) -> Result<usize, StoreError>
    where
        Old: serde::de::DeserializeOwned + Into<TaskRecord>,
    {
        let txn = self.db.begin_write().map_err(self.redb("upgrading"))?;
        let mut rewritten = 0;
        {
            let mut tasks = txn.open_table(TASKS).map_err(self.redb("upgrading"))?;
            let mut records = Vec::new();
            for row in tasks.iter().map_err(self.redb("upgrading"))? {
                let (k, v) = row.map_err(self.redb("upgrading"))?;
                let (fw, task) = k.value();
                let old: Old = self.decode(what, &format!("{fw}/{task}"), v.value())?;
                records.push(((fw.to_string(), task.to_string()), old.into()));
            }
            for ((fw, task), record) in records {
                let record: TaskRecord = record;
                tasks
                    .insert((fw.as_str(), task.as_str()), encode(&record).as_slice())
                    .map_err(self.redb("upgrading"))?;
                rewritten += 1;
            }
            let mut meta = txn.open_table(META).map_err(self.redb("upgrading"))?;
            meta.insert(META_FORMAT, super::FORMAT.to_le_bytes().as_slice())
                .map_err(self.redb("upgrading"))?;
        }
        txn.commit().map_err(self.redb("upgrading"))?;
        Ok(rewritten)
    }

    pub(super) fn upgrade_from_format1(&self) -> Result<usize, StoreError> {
        self.upgrade_tasks::<TaskRecordV1>("format-1 task")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde::Serialize;

    /// The format-1 encoding, for writing an old store in the test.
    #[derive(Serialize)]
    struct TaskInfoV1Out<'a> {
        task_id: &'a TaskId,
        name: &'a str,
        agent_id: &'a AgentId,
        resources: &'a Resources,
        command: &'a Option<CommandInfo>,
        executor: &'a Option<ExecutorInfo>,
        data: &'a [u8],
        mesos: &'a Option<Box<MesosTask>>,
    }

    #[derive(Serialize)]
    struct TaskRecordV1Out<'a> {
        framework_id: &'a FrameworkId,
        info: TaskInfoV1Out<'a>,
        state: TaskState,
        message: &'a str,
        reason: Option<TaskReason>,
        launched_at: f64,
        started_at: Option<f64>,
        ended_at: Option<f64>,
        terminal: &'a Option<TaskStatus>,
        resend_by_master: bool,
    }

    fn as_format1(r: &TaskRecord) -> Vec<u8> {
        let i = &r.info;
        encode(&TaskRecordV1Out {
            framework_id: &r.framework_id,
            info: TaskInfoV1Out {
                task_id: &i.task_id,
                name: &i.name,
                agent_id: &i.agent_id,
                resources: &i.resources,
                command: &i.command,
                executor: &i.executor,
                data: &i.data,
                mesos: &i.mesos,
            },
            state: r.state,
            message: &r.message,
            reason: r.reason,
            launched_at: r.launched_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            terminal: &r.terminal,
            resend_by_master: r.resend_by_master,
        })
    }

    /// A running task's record as today's store keeps it, in container `image` or none.
    pub(in crate::store) fn running(image: Option<&str>) -> TaskRecord {
        TaskRecord {
            framework_id: FrameworkId("fw".into()),
            info: bramble_proto::task::TaskInfo {
                task_id: TaskId("t1".into()),
                name: "sleeper".into(),
                agent_id: AgentId("a1".into()),
                resources: Resources::new(0.5, 64),
                command: Some(CommandInfo::shell("sleep 100")),
                executor: None,
                data: vec![7, 7],
                mesos: None,
                image: image.map(str::to_string),
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
        }
    }

    /// Writes a store as a format-`format` master left it (its meta says `format`, its one
    /// task record is `old`, `running`'s older encoding), then checks that it opens with
    /// `running`, and once upgraded opens again as a current store.
    pub(in crate::store) fn an_old_store_opens_with(format: u64, old: &[u8], running: TaskRecord) {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, _) = Store::open(dir.path(), "cluster").expect("open");
            let txn = store.db.begin_write().expect("txn");
            {
                let mut tasks = txn.open_table(TASKS).expect("tasks");
                tasks.insert(("fw", "t1"), old).expect("insert");
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(META_FORMAT, format.to_le_bytes().as_slice())
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

    #[test]
    fn a_format1_store_opens_with_its_running_tasks() {
        let running = running(None);
        an_old_store_opens_with(FORMAT, &as_format1(&running), running);
    }
}
