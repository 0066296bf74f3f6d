//! The master's durable facts in one redb file, `<state_dir>/master.redb`: frameworks, admitted
//! agents, every task not yet terminal-and-acknowledged, and each framework's own key/value
//! state (`bramble_proto::framework_state`).
//!
//! The state machine never touches this file. It collects what changed during a burst of
//! inputs into a [`Batch`]; the server loop writes the batch with one [`Store::commit`] (one
//! fsync, however many updates the burst held) and only then releases the burst's outgoing
//! messages. On start, [`Store::open`] hands back everything committed so far ([`Recovered`]).
//!
//! Records are postcard-encoded wire types; the `meta` table holds the store format and the
//! cluster id (CA fingerprint) the store was written for, so a state dir from another cluster
//! is refused instead of being merged into this one.

mod fences;
mod format1;
mod format2;
mod recovery;
pub mod replicated;
mod tables;

pub use tables::{AgentRecord, Batch, FrameworkRecord, Recovered, TaskRecord};

use bramble_proto::dir_lock::DirLock;
use redb::Database;
use std::path::{Path, PathBuf};
// Names the format upgrades (`format1.rs`, `format2.rs`) reach through `super::`.
#[allow(unused_imports)]
use tables::{encode, META, META_FORMAT, TASKS};
use tables::{AGENTS, DRAINING, FRAMEWORKS, FRAMEWORK_STATE, KILLS};

/// The store's file name inside the master's state dir.
pub const FILE_NAME: &str = "master.redb";
/// Bumped whenever a record's encoding changes incompatibly.
pub const FORMAT: u64 = 3;
/// redb's page cache; the store is small and the master may run on a 1 GiB Pi.
const CACHE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the master's state dir {path} is unusable: {source}; {hint}", hint = state_dir_hint(source))]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the master store {path} is open in another process (is another bramble-master running on this state_dir?)")]
    InUse { path: PathBuf },
    #[error("{0} (bramble-master --state-dir DIR, or state_dir in master.toml)")]
    Locked(bramble_proto::dir_lock::DirLockError),
    #[error("opening the master store {path}: {source}; it is not a Bramble master store or it is damaged (move it aside to start with an empty store)")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("{path} is a redb database but not a Bramble master store: {detail}")]
    NotAStore { path: PathBuf, detail: String },
    #[error("the master store {path} was written for cluster {found}, but this master's CA is cluster {expected}; refusing to mix two clusters' state (give this master another state_dir, or move the file aside)")]
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the master store {path} has format {found}; this master reads format {expected}")]
    Format {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("the master store {path}: {what} {key} does not decode: {reason}")]
    Decode {
        path: PathBuf,
        what: &'static str,
        key: String,
        reason: String,
    },
    #[error("the master store {path}: {op}: {source}")]
    Redb {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
}

/// What to do about a state dir that cannot be created or written, by what went wrong.
fn state_dir_hint(err: &std::io::Error) -> &'static str {
    // By errno: the matching `ErrorKind`s are newer than this workspace's minimum Rust.
    const ENOTDIR: i32 = 20;
    const EEXIST: i32 = 17;
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    match (err.kind(), err.raw_os_error()) {
        (std::io::ErrorKind::PermissionDenied, _) | (_, Some(EROFS)) => {
            "give this master a directory its user can write with --state-dir DIR (or state_dir in master.toml), or create this one and chown it to that user"
        }
        (_, Some(ENOTDIR | EEXIST)) => {
            "something that is not a directory is in the way: move it aside, or pass --state-dir DIR"
        }
        (_, Some(ENOSPC)) => "the disk is full: free space, or pass --state-dir DIR on another disk",
        _ => "pass --state-dir DIR to use another directory",
    }
}

/// The open store. Only the master's state task holds it.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// One master per state dir, and the refusal names the running one's pid.
    _lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `state_dir` for the cluster `cluster_id`, and reads
    /// back everything committed in it.
    pub fn open(state_dir: &Path, cluster_id: &str) -> Result<(Store, Recovered), StoreError> {
        let unusable = |source| StoreError::Dir {
            path: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(unusable)?;
        let lock = DirLock::acquire(state_dir, "bramble-master").map_err(|e| match e {
            // Not another master: the directory itself (read-only, not ours).
            bramble_proto::dir_lock::DirLockError::Io { source, .. } => unusable(source),
            held => StoreError::Locked(held),
        })?;
        let path = state_dir.join(FILE_NAME);
        // A file damaged outside redb is reported as corrupted rather than trusted (a plain
        // open may panic on it); the check is cheap for a store this size.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                source => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let store = Store {
            db,
            path,
            _lock: lock,
        };
        store.check_or_init_meta(cluster_id)?;
        let recovered = store.load()?;
        Ok((store, recovered))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn redb<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| StoreError::Redb {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    /// Writes `batch` in one transaction, durable (fsync'd) when this returns.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(self.redb("committing"))?;
        {
            let mut frameworks = txn
                .open_table(FRAMEWORKS)
                .map_err(self.redb("committing"))?;
            for (id, record) in &batch.frameworks {
                match record {
                    Some(r) => frameworks.insert(id.as_str(), encode(r).as_slice()),
                    None => frameworks.remove(id.as_str()),
                }
                .map_err(self.redb("writing a framework"))?;
            }
            let mut agents = txn.open_table(AGENTS).map_err(self.redb("committing"))?;
            for (id, record) in &batch.agents {
                match record {
                    Some(r) => agents.insert(id.as_str(), encode(r).as_slice()),
                    None => agents.remove(id.as_str()),
                }
                .map_err(self.redb("writing an agent"))?;
            }
            let mut tasks = txn.open_table(TASKS).map_err(self.redb("committing"))?;
            for ((fw, task), record) in &batch.tasks {
                let key = (fw.as_str(), task.as_str());
                match record {
                    Some(r) => tasks.insert(key, encode(r).as_slice()),
                    None => tasks.remove(key),
                }
                .map_err(self.redb("writing a task"))?;
            }
            let mut state = txn
                .open_table(FRAMEWORK_STATE)
                .map_err(self.redb("committing"))?;
            for ((fw, key), entry) in &batch.framework_state {
                let k = (fw.as_str(), key.as_str());
                match entry {
                    Some(e) => state.insert(k, encode(e).as_slice()),
                    None => state.remove(k),
                }
                .map_err(self.redb("writing framework state"))?;
            }
            if !batch.draining.is_empty() {
                let mut draining = txn.open_table(DRAINING).map_err(self.redb("committing"))?;
                for (id, drained) in &batch.draining {
                    if *drained {
                        draining.insert(id.as_str(), ())
                    } else {
                        draining.remove(id.as_str())
                    }
                    .map_err(self.redb("writing a drain"))?;
                }
            }
            self.write_fences(&txn, batch)?;
            if !batch.kills.is_empty() {
                let mut kills = txn.open_table(KILLS).map_err(self.redb("committing"))?;
                for ((fw, task), pending) in &batch.kills {
                    let key = (fw.as_str(), task.as_str());
                    if *pending {
                        kills.insert(key, ())
                    } else {
                        kills.remove(key)
                    }
                    .map_err(self.redb("writing a kill"))?;
                }
            }
        }
        txn.commit().map_err(self.redb("committing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::framework_state::StateEntry;
    use bramble_proto::messages::FrameworkInfo;
    use bramble_proto::task::{CommandInfo, TaskInfo, UpdateSource};
    use bramble_proto::{
        AgentId, ExecutorId, FrameworkId, Resources, TaskId, TaskState, TaskStatus,
    };
    use redb::TableDefinition;

    const CLUSTER: &str = "cluster-a";

    fn framework(id: &str) -> FrameworkRecord {
        FrameworkRecord {
            id: FrameworkId(id.into()),
            info: FrameworkInfo {
                framework_id: Some(FrameworkId(id.into())),
                name: format!("{id}-name"),
                role: "*".into(),
                failover_timeout_secs: 60.0,
                principal: None,
                user: String::new(),
                webui_url: None,
                api: bramble_proto::messages::FrameworkApi::Bramble,
            },
        }
    }

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            id: AgentId(id.into()),
            hostname: format!("{id}-host"),
            address: "10.0.0.7:4000".parse().expect("addr"),
            total: Resources::new(4.0, 1024),
            attributes: [("rack".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            executors: vec![(
                FrameworkId("fw".into()),
                ExecutorId("ex".into()),
                Resources::new(0.1, 32),
            )],
        }
    }

    fn task(fw: &str, id: &str, state: TaskState) -> TaskRecord {
        let terminal = state.is_terminal().then(|| {
            let mut s = TaskStatus::new(
                FrameworkId(fw.into()),
                TaskId(id.into()),
                state,
                UpdateSource::Master,
            );
            s.uuid = Some(uuid::Uuid::new_v4());
            s.data = vec![1, 2, 3];
            s
        });
        TaskRecord {
            framework_id: FrameworkId(fw.into()),
            info: TaskInfo {
                task_id: TaskId(id.into()),
                name: id.into(),
                agent_id: AgentId("a1".into()),
                resources: Resources::new(0.5, 64),
                command: Some(CommandInfo::shell("sleep 1")),
                executor: None,
                data: vec![9, 9],
                mesos: None,
                image: None,
                artifacts: Vec::new(),
            },
            state,
            message: "pid 42".into(),
            reason: None,
            launched_at: 1.5,
            started_at: Some(2.5),
            ended_at: None,
            terminal,
            resend_by_master: false,
        }
    }

    fn key(r: &TaskRecord) -> (FrameworkId, TaskId) {
        (r.framework_id.clone(), r.info.task_id.clone())
    }

    #[test]
    fn records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, recovered) = Store::open(dir.path(), CLUSTER).expect("open");
        assert!(recovered.is_empty());
        let running = task("fw1", "t1", TaskState::Running);
        let lost = task("fw1", "t2", TaskState::Lost);
        let gone = task("fw1", "t3", TaskState::Staging);
        store
            .commit(&Batch {
                frameworks: vec![
                    (FrameworkId("fw1".into()), Some(framework("fw1"))),
                    (FrameworkId("fw2".into()), Some(framework("fw2"))),
                ],
                agents: vec![(AgentId("a1".into()), Some(agent("a1")))],
                tasks: vec![
                    (key(&running), Some(running.clone())),
                    (key(&lost), Some(lost.clone())),
                    (key(&gone), Some(gone.clone())),
                ],
                ..Batch::default()
            })
            .expect("commit");
        // A later batch overwrites and deletes.
        let mut finished = running.clone();
        finished.state = TaskState::Finished;
        store
            .commit(&Batch {
                frameworks: vec![(FrameworkId("fw2".into()), None)],
                agents: vec![],
                tasks: vec![(key(&gone), None), (key(&running), Some(finished.clone()))],
                ..Batch::default()
            })
            .expect("commit");
        let now = store.load().expect("load");
        assert_eq!(now.frameworks, vec![framework("fw1")]);
        drop(store);

        let (_store, again) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(again.frameworks, vec![framework("fw1")]);
        assert_eq!(again.agents, vec![agent("a1")]);
        assert_eq!(again.tasks, vec![finished, lost]);
    }

    #[test]
    fn framework_state_round_trips_and_a_store_without_its_table_reads_it_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        // A store written before the framework state existed has no such table.
        assert!(store.load().expect("load").framework_state.is_empty());
        let entry = |key: &str, version| StateEntry {
            key: key.into(),
            value: key.as_bytes().to_vec(),
            version,
        };
        let fw = FrameworkId("fw1".into());
        store
            .commit(&Batch {
                framework_state: vec![
                    ((fw.clone(), "spec/a".into()), Some(entry("spec/a", 1))),
                    ((fw.clone(), "spec/b".into()), Some(entry("spec/b", 4))),
                ],
                ..Batch::default()
            })
            .expect("commit");
        store
            .commit(&Batch {
                framework_state: vec![((fw.clone(), "spec/a".into()), None)],
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let (_store, again) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(again.framework_state, vec![(fw, entry("spec/b", 4))]);
    }

    #[test]
    fn drains_round_trip_and_a_store_without_their_table_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        // A store written before drains existed has no such table.
        assert!(store.load().expect("load").draining.is_empty());
        let (a1, a2) = (AgentId("a1".into()), AgentId("a2".into()));
        store
            .commit(&Batch {
                draining: vec![(a1.clone(), true), (a2.clone(), true)],
                ..Batch::default()
            })
            .expect("commit");
        store
            .commit(&Batch {
                draining: vec![(a1, false)],
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let (_store, again) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(again.draining, vec![a2]);
    }

    #[test]
    fn fencing_epochs_round_trip_and_a_store_without_their_table_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        // A store written before fencing (frameworks and all, but no fences table) loads,
        // every framework at epoch 0.
        store
            .commit(&Batch {
                frameworks: vec![(FrameworkId("fw1".into()), Some(framework("fw1")))],
                ..Batch::default()
            })
            .expect("commit");
        let old = store.load().expect("load");
        assert_eq!(old.frameworks, vec![framework("fw1")]);
        assert!(old.fences.is_empty());
        assert_eq!(old.fence_high, 0);
        let (fw1, fw2) = (FrameworkId("fw1".into()), FrameworkId("fw2".into()));
        store
            .commit(&Batch {
                fences: vec![(fw1.clone(), Some(3)), (fw2.clone(), Some(5))],
                fence_high: Some(5),
                ..Batch::default()
            })
            .expect("commit");
        store
            .commit(&Batch {
                fences: vec![(fw2, None), (fw1.clone(), Some(6))],
                fence_high: Some(6),
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let (_store, again) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(again.fences, vec![(fw1, 6)]);
        assert_eq!(again.fence_high, 6);
    }

    #[test]
    fn kills_round_trip_and_a_store_without_their_table_has_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        // A store written before kills were kept (tasks and all, no kills table) loads.
        let running = task("fw1", "t1", TaskState::Running);
        store
            .commit(&Batch {
                frameworks: vec![(FrameworkId("fw1".into()), Some(framework("fw1")))],
                tasks: vec![(key(&running), Some(running.clone()))],
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let (mut store, old) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(old.tasks, vec![running.clone()]);
        assert!(old.kills.is_empty());
        let (k1, k2) = (
            key(&running),
            (FrameworkId("fw1".into()), TaskId("t2".into())),
        );
        store
            .commit(&Batch {
                kills: vec![(k1.clone(), true), (k2.clone(), true)],
                ..Batch::default()
            })
            .expect("commit");
        store
            .commit(&Batch {
                kills: vec![(k2, false)],
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let (_store, again) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(again.kills, vec![k1]);
        assert_eq!(again.tasks, vec![running]);
    }

    #[test]
    fn an_unusable_state_dir_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let state_dir = file.join("master");
        let msg = Store::open(&state_dir, CLUSTER)
            .expect_err("a path under a file")
            .to_string();
        assert!(msg.contains(&state_dir.display().to_string()), "{msg}");
        assert!(msg.contains("--state-dir DIR"), "{msg}");
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        store.commit(&Batch::default()).expect("commit");
        assert!(store.load().expect("load").is_empty());
    }

    #[test]
    fn a_store_of_another_cluster_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        store
            .commit(&Batch {
                frameworks: vec![(FrameworkId("fw1".into()), Some(framework("fw1")))],
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        let err = Store::open(dir.path(), "cluster-b").expect_err("other cluster");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::OtherCluster { .. }), "{msg}");
        assert!(
            msg.contains("cluster-a") && msg.contains("cluster-b"),
            "{msg}"
        );
        assert!(
            msg.contains(&dir.path().join(FILE_NAME).display().to_string()),
            "{msg}"
        );
        // Nothing was lost by refusing.
        let (_, recovered) = Store::open(dir.path(), CLUSTER).expect("reopen");
        assert_eq!(recovered.frameworks, vec![framework("fw1")]);
    }

    #[test]
    fn a_file_that_is_not_a_store_gives_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            b"this is not a database, just some text ".repeat(200),
        )
        .expect("write");
        let msg = Store::open(dir.path(), CLUSTER)
            .expect_err("garbage")
            .to_string();
        eprintln!("{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a Bramble master store"), "{msg}");
        // The file was left as it was, for the operator to look at.
        assert!(std::fs::read(&path)
            .expect("read")
            .starts_with(b"this is not"));
    }

    #[test]
    fn a_damaged_store_gives_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        let tasks: Vec<_> = (0..200)
            .map(|i| task("fw1", &format!("t{i}"), TaskState::Running))
            .collect();
        store
            .commit(&Batch {
                tasks: tasks.iter().map(|t| (key(t), Some(t.clone()))).collect(),
                ..Batch::default()
            })
            .expect("commit");
        drop(store);
        // Scribble over everything after the header pages.
        let mut bytes = std::fs::read(&path).expect("read");
        let len = bytes.len();
        for b in &mut bytes[8192.min(len)..] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).expect("write");
        let msg = Store::open(dir.path(), CLUSTER)
            .expect_err("damaged")
            .to_string();
        eprintln!("{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn another_redb_file_is_not_taken_for_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let other: TableDefinition<u64, u64> = TableDefinition::new("counters");
                let mut t = txn.open_table(other).expect("table");
                t.insert(1, 2).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = Store::open(dir.path(), CLUSTER).expect_err("foreign");
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert!(err.to_string().contains("counters"), "{err}");
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_in_use_and_by_which_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, _) = Store::open(dir.path(), CLUSTER).expect("open");
        let err = Store::open(dir.path(), CLUSTER).expect_err("in use");
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("--state-dir"),
            "names the flag that fixes it: {msg}"
        );
        assert!(
            msg.contains("in use by another bramble-master")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }
}
