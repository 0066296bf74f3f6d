//! A node's durable Raft state in one redb file, `<dir>/replica.redb`: the log and the vote
//! ([`LogStore`], `log.rs`), and the state machine with its latest snapshot ([`StateMachine`],
//! `state.rs`).
//!
//! Both halves share one `Database` (redb serialises write transactions; each half commits
//! its own). Every write is one transaction committed with redb's default durability (an
//! fsync) before openraft is told it is done. redb calls block, so they run on tokio's
//! blocking pool, never on the Raft core's task.
//!
//! Disk use stays bounded: the state machine is snapshotted every
//! [`crate::Tuning::snapshot_every`] entries and the log before the snapshot purged (openraft
//! drives both), and redb reuses freed pages.

mod log;
mod state;

pub use log::{Joined, LogStore};
pub use state::{SnapshotBody, StateMachine};

use openraft::{AnyError, StorageError, StorageIOError};
use redb::Database;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::types::NodeId;

/// The store's file inside a node's directory.
pub const FILE_NAME: &str = "replica.redb";
/// redb's page cache: the master's state is small and a Pi may have 1 GiB.
const CACHE_BYTES: usize = 16 << 20;
/// How long [`open`] waits for a store this process is still releasing.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the replica directory {path} is unusable: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the replica store {path} is open elsewhere (another replica on the same directory?)")]
    InUse { path: PathBuf },
    #[error("opening the replica store {path}: {source}; it is damaged or not a replica store (move it aside: the node is then rebuilt from the leader)")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("replica store: {0}")]
    Redb(String),
    #[error("replica store: undecodable {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("replica store: encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("replica store: a blocking task failed: {0}")]
    Join(String),
}

/// Any redb error, kept as text: redb has a dozen error types and none is matched on.
pub(crate) fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Encode {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Opens (creating it if needed) the store in `dir`.
pub fn open(dir: &Path) -> Result<Arc<Database>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(FILE_NAME);
    // A replica shut down in this process releases the file once its last task lets go of
    // it (a replication task may still be finishing): wait for that, briefly.
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => return Ok(Arc::new(db)),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse { path });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => return Err(StoreError::Open { path, source }),
        }
    }
}

/// Runs a redb job on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    db: &Arc<Database>,
    job: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || job(&db))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
}

/// Our error as openraft's, for the verb it failed at.
pub(crate) fn io_err(
    make: fn(AnyError) -> StorageIOError<NodeId>,
) -> impl FnOnce(StoreError) -> StorageError<NodeId> {
    move |e| StorageError::IO {
        source: make(AnyError::new(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Response, TypeConfig, Versioned};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
    use tempfile::TempDir;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = TempDir::new().expect("temp dir");
            let db = open(dir.path()).expect("open store");
            Ok((dir, LogStore::new(db.clone()), StateMachine::new(db)))
        }
    }

    /// openraft's own conformance suite for log and state-machine storage (votes, log
    /// ranges, truncation, purge, membership, snapshots' transfer).
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("storage suite");
    }

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            table: "t".into(),
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn cas(key: &str, expected: Option<u64>, value: Option<&str>) -> Command {
        Command::CompareAndSet {
            table: "t".into(),
            key: key.into(),
            expected,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn versioned(version: u64, value: &str) -> Option<Versioned> {
        Some(Versioned {
            version,
            value: value.as_bytes().to_vec(),
        })
    }

    #[tokio::test]
    async fn commands_apply_with_versions_and_batches_are_all_or_nothing() {
        let dir = TempDir::new().unwrap();
        let db = open(dir.path()).unwrap();
        let mut sm = StateMachine::new(db);
        let out = sm
            .apply([
                entry(1, put("a", "1")),
                entry(2, cas("a", None, Some("x"))),
                entry(3, cas("a", Some(1), Some("2"))),
                entry(4, cas("b", None, Some("b"))),
                entry(
                    5,
                    Command::Delete {
                        table: "t".into(),
                        key: "zz".into(),
                    },
                ),
            ])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                Response::Written { version: Some(1) },
                Response::Conflict { current: Some(1) },
                Response::Written { version: Some(3) },
                Response::Written { version: Some(4) },
                Response::Written { version: None },
            ]
        );
        assert_eq!(sm.get("t", "a").await.unwrap(), versioned(3, "2"));
        // A batch with one stale compare-and-set writes nothing.
        let out = sm
            .apply([entry(
                6,
                Command::Batch(vec![put("c", "c"), cas("a", Some(1), Some("no"))]),
            )])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![Response::Batch(vec![
                Response::None,
                Response::Conflict { current: Some(3) }
            ])]
        );
        assert_eq!(sm.get("t", "c").await.unwrap(), None);
        assert_eq!(sm.get("t", "a").await.unwrap(), versioned(3, "2"));
        // A batch whose conditions hold writes everything, at its own index.
        let out = sm
            .apply([entry(
                7,
                Command::Batch(vec![put("c", "c"), cas("a", Some(3), None)]),
            )])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![Response::Batch(vec![
                Response::Written { version: Some(7) },
                Response::Written { version: None }
            ])]
        );
        assert_eq!(sm.get("t", "a").await.unwrap(), None);
        // Listing is by table and prefix, in key order; other tables are not seen.
        sm.apply([
            entry(8, put("c2", "x")),
            entry(
                9,
                Command::Put {
                    table: "u".into(),
                    key: "c3".into(),
                    value: vec![],
                },
            ),
        ])
        .await
        .unwrap();
        let keys: Vec<_> = sm
            .list("t", "c")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["c", "c2"]);
        assert_eq!(sm.applied().await.unwrap().map(|l| l.index), Some(9));
    }

    #[tokio::test]
    async fn a_snapshot_rebuilds_another_node_and_survives_reopening() {
        let a = TempDir::new().unwrap();
        let mut sm = StateMachine::new(open(a.path()).unwrap());
        sm.apply((1..=50).map(|i| entry(i, put(&format!("k{i:03}"), &i.to_string()))))
            .await
            .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(50));

        let b = TempDir::new().unwrap();
        {
            let mut other = StateMachine::new(open(b.path()).unwrap());
            // Something the snapshot must replace, not merge with.
            other.apply([entry(1, put("stale", "x"))]).await.unwrap();
            other
                .install_snapshot(&snap.meta, snap.snapshot)
                .await
                .unwrap();
        }
        // Reopened from disk: the state, the applied id and the snapshot are all there.
        let mut other = StateMachine::new(open(b.path()).unwrap());
        assert_eq!(other.get("t", "stale").await.unwrap(), None);
        assert_eq!(other.get("t", "k007").await.unwrap(), versioned(7, "7"));
        assert_eq!(other.list("t", "k").await.unwrap().len(), 50);
        let (applied, _) = other.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(50));
        let current = other
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.meta, snap.meta);
    }

    #[tokio::test]
    async fn the_log_survives_reopening_and_purge_bounds_it() {
        let dir = TempDir::new().unwrap();
        {
            let mut log = LogStore::new(open(dir.path()).unwrap());
            log.blocking_append((1..=100).map(|i| entry(i, put("k", "v"))))
                .await
                .unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), 60))
                .await
                .unwrap();
            log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 91))
                .await
                .unwrap();
        }
        let mut log = LogStore::new(open(dir.path()).unwrap());
        assert_eq!(log.index_range().await.unwrap(), Some((61, 90)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(60));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(90));
        // Writing and purging again and again keeps the file from growing without bound.
        let size = || std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        let value = "v".repeat(4096);
        let mut sizes = Vec::new();
        for round in 0..6u64 {
            let base = 91 + round * 200;
            log.blocking_append((base..base + 200).map(|i| entry(i, put("k", &value))))
                .await
                .unwrap();
            log.purge(LogId::new(CommittedLeaderId::new(1, 1), base + 199))
                .await
                .unwrap();
            sizes.push(size());
        }
        // Each round writes ~800 KiB; freed pages are reused, so later rounds do not add up.
        assert!(
            sizes[5] <= sizes[1] * 2,
            "log file sizes per round: {sizes:?}"
        );
    }
}
