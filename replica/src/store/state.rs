//! The state machine: openraft's `RaftStateMachine` on redb.
//!
//! `kv`: (table, key) → postcard [`Versioned`]; `sm_meta`: the last applied log id and the
//! last membership; `snapshot`: the latest snapshot's meta and bytes, kept so a restarted
//! node can still send it to a follower that fell behind the purged log.
//!
//! Applying a run of entries is one transaction: the writes and the new applied log id land
//! together or not at all, so a crash never applies an entry twice.

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

use super::{blocking, decode, encode, io_err, redb_err, StoreError};
use crate::types::{Command, NodeId, Response, Row, TypeConfig, Versioned};
use openraft::BasicNode;

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

type Membership = StoredMembership<NodeId, BasicNode>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// A snapshot's bytes: every row of the map (the meta travels beside it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub rows: Vec<(String, String, Versioned)>,
}

/// The state-machine half of a node's store; also the snapshot builder (a clone).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
}

macro_rules! open_or_empty {
    ($read:expr, $def:expr, $empty:expr) => {
        match $read.open_table($def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok($empty),
            Err(e) => return Err(redb_err(e)),
        }
    };
}

impl StateMachine {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// One key, as this node has applied it (not linearizable by itself: see
    /// `Replica::read`).
    pub async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let (table, key) = (table.to_string(), key.to_string());
        blocking(&self.db, move |db| {
            let read = db.begin_read().map_err(redb_err)?;
            let kv = open_or_empty!(read, KV, None);
            match kv.get((table.as_str(), key.as_str())).map_err(redb_err)? {
                Some(v) => Ok(Some(decode("value", v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// The rows of `table` whose key starts with `prefix`, in key order.
    pub async fn list(&self, table: &str, prefix: &str) -> Result<Vec<Row>, StoreError> {
        let (table, prefix) = (table.to_string(), prefix.to_string());
        blocking(&self.db, move |db| {
            let read = db.begin_read().map_err(redb_err)?;
            let kv = open_or_empty!(read, KV, Vec::new());
            let mut out = Vec::new();
            let start = (table.as_str(), prefix.as_str());
            for row in kv.range(start..).map_err(redb_err)? {
                let (k, v) = row.map_err(redb_err)?;
                let (t, key) = k.value();
                if t != table || !key.starts_with(prefix.as_str()) {
                    break;
                }
                let Versioned { version, value } = decode("value", v.value())?;
                out.push(Row {
                    key: key.to_string(),
                    version,
                    value,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The last applied log id.
    pub async fn applied(&self) -> Result<Option<LogId<NodeId>>, StoreError> {
        blocking(&self.db, |db| Ok(Self::applied_state_in(db)?.0)).await
    }

    fn applied_state_in(db: &Database) -> Result<(Option<LogId<NodeId>>, Membership), StoreError> {
        let read = db.begin_read().map_err(redb_err)?;
        let meta = open_or_empty!(read, SM_META, (None, Membership::default()));
        let applied = match meta.get(APPLIED).map_err(redb_err)? {
            Some(v) => decode("last applied log id", v.value())?,
            None => None,
        };
        let membership = match meta.get(MEMBERSHIP).map_err(redb_err)? {
            Some(v) => decode("membership", v.value())?,
            None => Membership::default(),
        };
        Ok((applied, membership))
    }

    fn current(
        kv: &redb::Table<(&str, &str), &[u8]>,
        table: &str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        match kv.get((table, key)).map_err(redb_err)? {
            Some(v) => Ok(Some(decode::<Versioned>("value", v.value())?.version)),
            None => Ok(None),
        }
    }

    /// Applies one command at log index `index` inside `txn`.
    /// Applies `cmd` of the entry at `index`, proposed by the leader of `term`.
    fn apply_command(
        kv: &mut redb::Table<(&str, &str), &[u8]>,
        index: u64,
        term: u64,
        cmd: &Command,
    ) -> Result<Response, StoreError> {
        match cmd {
            Command::InTerm {
                term: fence,
                command,
            } => {
                if *fence != term {
                    return Ok(Response::Fenced { term });
                }
                match **command {
                    // Validated at the door; from a newer peer, answered, not applied.
                    Command::InTerm { .. } => Ok(Response::None),
                    ref c => Self::apply_command(kv, index, term, c),
                }
            }
            Command::Put { table, key, value } => {
                Self::set(kv, index, table, key, Some(value))?;
                Ok(Response::Written {
                    version: Some(index),
                })
            }
            Command::Delete { table, key } => {
                Self::set(kv, index, table, key, None)?;
                Ok(Response::Written { version: None })
            }
            Command::CompareAndSet {
                table,
                key,
                expected,
                value,
            } => {
                let current = Self::current(kv, table, key)?;
                if current != *expected {
                    return Ok(Response::Conflict { current });
                }
                Self::set(kv, index, table, key, value.as_ref())?;
                Ok(Response::Written {
                    version: value.as_ref().map(|_| index),
                })
            }
            Command::Batch(commands) => {
                // Conditions first, against the state before the batch: all or nothing.
                let mut checks = Vec::with_capacity(commands.len());
                let mut failed = false;
                for c in commands {
                    match c {
                        Command::CompareAndSet {
                            table,
                            key,
                            expected,
                            ..
                        } => {
                            let current = Self::current(kv, table, key)?;
                            if current != *expected {
                                failed = true;
                                checks.push(Response::Conflict { current });
                            } else {
                                checks.push(Response::None);
                            }
                        }
                        _ => checks.push(Response::None),
                    }
                }
                if failed {
                    return Ok(Response::Batch(checks));
                }
                let mut out = Vec::with_capacity(commands.len());
                for c in commands {
                    out.push(match c {
                        // Validated at the door; a nested batch or fence from a newer
                        // peer is answered, not applied.
                        Command::Batch(_) | Command::InTerm { .. } => Response::None,
                        Command::CompareAndSet {
                            table, key, value, ..
                        } => {
                            Self::set(kv, index, table, key, value.as_ref())?;
                            Response::Written {
                                version: value.as_ref().map(|_| index),
                            }
                        }
                        c => Self::apply_command(kv, index, term, c)?,
                    });
                }
                Ok(Response::Batch(out))
            }
        }
    }

    fn set(
        kv: &mut redb::Table<(&str, &str), &[u8]>,
        index: u64,
        table: &str,
        key: &str,
        value: Option<&Vec<u8>>,
    ) -> Result<(), StoreError> {
        match value {
            Some(value) => {
                let bytes = encode(
                    "value",
                    &Versioned {
                        version: index,
                        value: value.clone(),
                    },
                )?;
                kv.insert((table, key), bytes.as_slice())
                    .map_err(redb_err)?;
            }
            None => {
                kv.remove((table, key)).map_err(redb_err)?;
            }
        }
        Ok(())
    }

    fn put_meta<T: Serialize>(
        txn: &WriteTransaction,
        key: &str,
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(what, value)?;
        txn.open_table(SM_META)
            .map_err(redb_err)?
            .insert(key, bytes.as_slice())
            .map_err(redb_err)?;
        Ok(())
    }

    fn build_in(db: &Database) -> Result<(Meta, Vec<u8>), StoreError> {
        // One read transaction: the rows and the applied id agree.
        let read = db.begin_read().map_err(redb_err)?;
        let (last_log_id, last_membership) = {
            let meta = match read.open_table(SM_META) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(redb_err(e)),
            };
            match meta {
                Some(meta) => {
                    let applied: Option<LogId<NodeId>> =
                        match meta.get(APPLIED).map_err(redb_err)? {
                            Some(v) => decode("last applied log id", v.value())?,
                            None => None,
                        };
                    let membership = match meta.get(MEMBERSHIP).map_err(redb_err)? {
                        Some(v) => decode("membership", v.value())?,
                        None => Membership::default(),
                    };
                    (applied, membership)
                }
                None => (None, Membership::default()),
            }
        };
        let mut body = SnapshotBody::default();
        match read.open_table(KV) {
            Ok(kv) => {
                for row in kv.iter().map_err(redb_err)? {
                    let (k, v) = row.map_err(redb_err)?;
                    let (t, key) = k.value();
                    body.rows
                        .push((t.to_string(), key.to_string(), decode("value", v.value())?));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(redb_err(e)),
        }
        drop(read);
        let data = encode("snapshot", &body)?;
        let snapshot_id = match &last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = Meta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let txn = db.begin_write().map_err(redb_err)?;
        {
            let mut snap = txn.open_table(SNAPSHOT).map_err(redb_err)?;
            // Never replace a newer snapshot (one installed from the leader meanwhile).
            if let Some(stored) = snap.get(SNAPSHOT_META).map_err(redb_err)? {
                let stored: Meta = decode("snapshot meta", stored.value())?;
                if stored.last_log_id > meta.last_log_id {
                    return Ok((meta, data));
                }
            }
            let meta_bytes = encode("snapshot meta", &meta)?;
            snap.insert(SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(redb_err)?;
            snap.insert(SNAPSHOT_DATA, data.as_slice())
                .map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)?;
        Ok((meta, data))
    }

    fn install_in(db: &Database, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
        let body: SnapshotBody = decode("snapshot", data)?;
        let txn = db.begin_write().map_err(redb_err)?;
        {
            // Everything this node had is replaced by the snapshot.
            match txn.delete_table(KV) {
                Ok(_) => {}
                Err(e) => return Err(redb_err(e)),
            }
            let mut kv = txn.open_table(KV).map_err(redb_err)?;
            for (table, key, versioned) in &body.rows {
                let bytes = encode("value", versioned)?;
                kv.insert((table.as_str(), key.as_str()), bytes.as_slice())
                    .map_err(redb_err)?;
            }
        }
        Self::put_meta(&txn, APPLIED, "last applied log id", &meta.last_log_id)?;
        Self::put_meta(&txn, MEMBERSHIP, "membership", &meta.last_membership)?;
        {
            let mut snap = txn.open_table(SNAPSHOT).map_err(redb_err)?;
            let meta_bytes = encode("snapshot meta", meta)?;
            snap.insert(SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(redb_err)?;
            snap.insert(SNAPSHOT_DATA, data).map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }

    fn current_snapshot_in(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
        let read = db.begin_read().map_err(redb_err)?;
        let snap = open_or_empty!(read, SNAPSHOT, None);
        let meta = snap.get(SNAPSHOT_META).map_err(redb_err)?;
        let data = snap.get(SNAPSHOT_DATA).map_err(redb_err)?;
        match (meta, data) {
            (Some(meta), Some(data)) => Ok(Some((
                decode("snapshot meta", meta.value())?,
                data.value().to_vec(),
            ))),
            _ => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, data) = blocking(&self.db, Self::build_in)
            .await
            .map_err(io_err(|e| StorageIOError::write_snapshot(None, e)))?;
        tracing::debug!(
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            "replica: snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        blocking(&self.db, Self::applied_state_in)
            .await
            .map_err(io_err(StorageIOError::read_state_machine))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        blocking(&self.db, move |db| {
            let mut responses = Vec::with_capacity(entries.len());
            let txn = db.begin_write().map_err(redb_err)?;
            let mut last = None;
            let mut membership = None;
            {
                let mut kv = txn.open_table(KV).map_err(redb_err)?;
                for entry in &entries {
                    last = Some(entry.log_id);
                    responses.push(match &entry.payload {
                        EntryPayload::Blank => Response::None,
                        EntryPayload::Normal(cmd) => {
                            let id = entry.log_id;
                            Self::apply_command(&mut kv, id.index, id.leader_id.term, cmd)?
                        }
                        EntryPayload::Membership(m) => {
                            membership = Some(Membership::new(Some(entry.log_id), m.clone()));
                            Response::None
                        }
                    });
                }
            }
            if let Some(last) = last {
                Self::put_meta(&txn, APPLIED, "last applied log id", &Some(last))?;
            }
            if let Some(m) = membership {
                Self::put_meta(&txn, MEMBERSHIP, "membership", &m)?;
            }
            txn.commit().map_err(redb_err)?;
            Ok(responses)
        })
        .await
        .map_err(io_err(StorageIOError::write_state_machine))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        let id = meta.snapshot_id.clone();
        let len = data.len();
        blocking(&self.db, move |db| Self::install_in(db, &meta, &data))
            .await
            .map_err(io_err(|e| StorageIOError::write_snapshot(None, e)))?;
        tracing::info!(snapshot = %id, bytes = len, "replica: snapshot installed from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = blocking(&self.db, Self::current_snapshot_in)
            .await
            .map_err(io_err(|e| StorageIOError::read_snapshot(None, e)))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
