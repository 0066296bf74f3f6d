//! The Raft log and the vote: openraft's `RaftLogStorage` on redb.
//!
//! `log`: index → postcard entry; `log_meta`: the vote, the committed log id and the last
//! purged log id. An append is one transaction, fsync'd before openraft hears it is flushed;
//! so is a vote (a node must never forget whom it voted for).

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use super::{blocking, decode, encode, io_err, redb_err, StoreError};
use crate::types::{NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const JOINED: &str = "joined";

/// How this node's store became part of a group, recorded once (see
/// [`crate::ReplicaConfig::bootstrap`]). Postcard: append variants only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Joined {
    /// It formed the group (`bootstrap` on a fresh store).
    Bootstrapped,
    /// A leader added it (its first membership came from the log).
    Added,
}

/// The log half of a node's store. Cloning shares the database (the reader openraft asks for
/// is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let read = db.begin_read().map_err(redb_err)?;
        let table = match read.open_table(LOG_META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_err(e)),
        };
        match table.get(key).map_err(redb_err)? {
            Some(v) => Ok(Some(decode(what, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(
        db: &Database,
        key: &'static str,
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(what, value)?;
        let txn = db.begin_write().map_err(redb_err)?;
        txn.open_table(LOG_META)
            .map_err(redb_err)?
            .insert(key, bytes.as_slice())
            .map_err(redb_err)?;
        txn.commit().map_err(redb_err)
    }

    fn entries(
        db: &Database,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let read = db.begin_read().map_err(redb_err)?;
        let table = match read.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb_err(e)),
        };
        let mut out = Vec::new();
        for row in table.range::<u64>((start, end)).map_err(redb_err)? {
            let (_, v) = row.map_err(redb_err)?;
            out.push(decode("log entry", v.value())?);
        }
        Ok(out)
    }

    fn last_entry(db: &Database) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        let read = db.begin_read().map_err(redb_err)?;
        let table = match read.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_err(e)),
        };
        let last = match table.last().map_err(redb_err)? {
            Some((_, v)) => Some(decode("log entry", v.value())?),
            None => None,
        };
        Ok(last)
    }

    /// How this store joined its group (`None`: it has not, or predates the record).
    pub async fn joined(&self) -> Result<Option<Joined>, StoreError> {
        blocking(&self.db, |db| Self::meta(db, JOINED, "joined")).await
    }

    /// Records how this store joined its group.
    pub async fn set_joined(&self, how: Joined) -> Result<(), StoreError> {
        blocking(&self.db, move |db| {
            Self::put_meta(db, JOINED, "joined", &how)
        })
        .await
    }

    /// The first and last index held (tests check the log is purged).
    pub async fn index_range(&self) -> Result<Option<(u64, u64)>, StoreError> {
        blocking(&self.db, |db| {
            let read = db.begin_read().map_err(redb_err)?;
            let table = match read.open_table(LOG) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(redb_err(e)),
            };
            let first = table.first().map_err(redb_err)?.map(|(k, _)| k.value());
            let last = table.last().map_err(redb_err)?.map(|(k, _)| k.value());
            Ok(first.zip(last))
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        blocking(&self.db, move |db| Self::entries(db, start, end))
            .await
            .map_err(io_err(StorageIOError::read_logs))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        blocking(&self.db, |db| {
            let purged: Option<LogId<NodeId>> =
                Self::meta(db, PURGED, "last purged log id")?.flatten();
            let last = Self::last_entry(db)?.map(|e| e.log_id).or(purged);
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(io_err(StorageIOError::read_logs))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        blocking(&self.db, move |db| Self::put_meta(db, VOTE, "vote", &vote))
            .await
            .map_err(io_err(StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        blocking(&self.db, |db| Self::meta(db, VOTE, "vote"))
            .await
            .map_err(io_err(StorageIOError::read_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        blocking(&self.db, move |db| {
            Self::put_meta(db, COMMITTED, "committed log id", &committed)
        })
        .await
        .map_err(io_err(StorageIOError::write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        blocking(&self.db, |db| {
            Ok(Self::meta::<Option<LogId<NodeId>>>(db, COMMITTED, "committed log id")?.flatten())
        })
        .await
        .map_err(io_err(StorageIOError::read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = encode("log entry", &entry).map_err(io_err(StorageIOError::write_logs))?;
            rows.push((entry.log_id.index, bytes));
        }
        let written = blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(redb_err)?;
            {
                let mut log = txn.open_table(LOG).map_err(redb_err)?;
                for (index, bytes) in &rows {
                    log.insert(*index, bytes.as_slice()).map_err(redb_err)?;
                }
            }
            txn.commit().map_err(redb_err)
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(StorageIOError::write_logs)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Removes `log_id` and everything after it: a new leader overwrote them.
        blocking(&self.db, move |db| {
            let txn = db.begin_write().map_err(redb_err)?;
            txn.open_table(LOG)
                .map_err(redb_err)?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(redb_err)?;
            txn.commit().map_err(redb_err)
        })
        .await
        .map_err(io_err(StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Removes everything up to and including `log_id`, already in a snapshot.
        blocking(&self.db, move |db| {
            let bytes = encode("last purged log id", &Some(log_id))?;
            let txn = db.begin_write().map_err(redb_err)?;
            txn.open_table(LOG_META)
                .map_err(redb_err)?
                .insert(PURGED, bytes.as_slice())
                .map_err(redb_err)?;
            txn.open_table(LOG)
                .map_err(redb_err)?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(redb_err)?;
            txn.commit().map_err(redb_err)
        })
        .await
        .map_err(io_err(StorageIOError::write_logs))
    }
}
