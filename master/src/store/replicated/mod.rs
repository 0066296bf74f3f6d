//! The store of replicated masters (`[ha]`): the same records as the local redb file, kept as
//! tables of the replica's map (`bramble-replica`), so that whichever master leads reads what
//! every leader before it committed.
//!
//! Tables (keys are strings): `frameworks` (framework id), `agents` (agent id), `tasks`
//! (`<framework id>/<task id>`), `framework_state` (`<framework id>/<key>`), `draining` (agent
//! id, empty value), `fences` (framework id, and `""` for the highest epoch given; u64
//! little-endian), `kills` (`<framework id>/<task id>`, empty value), `meta` (`cluster_id`,
//! `format`). Values are the records' postcard encoding,
//! as in the local file. `masters` (master id → [`MasterAddress`]) says where each master
//! serves clients, for standbys' redirects.
//!
//! A burst's [`Batch`] is written as one `Command::Batch` through
//! [`Replica::write_in_term`], fenced to the term this master was elected in: nothing is
//! acknowledged before a majority holds it, and a write made after that term ended (the
//! master deposed, even if elected again since: its records were loaded in the old term)
//! writes nothing and fails, instead of being forwarded or landing on a newer leader's state. A batch larger than one log entry
//! may hold is split into several entries, written in order, each acknowledged before the
//! next; the burst's messages still wait for the last.
//!
//! Large rows: the replica holds at most `MAX_VALUE_BYTES` (256 KiB) a value and
//! `MAX_COMMAND_BYTES` (512 KiB) an entry, while a single master's redb file holds a task
//! record of any size (its TaskInfo data and its last update's data, up to a frame each). A
//! row whose encoding is over [`CHUNK_BYTES`] is kept in pieces: `chunks` holds them
//! (`TABLE/KEY/GENERATION/INDEX`, generation and index in fixed-width hex, parsed from the
//! right), `chunked` the row's manifest (`TABLE/KEY` → generation, pieces, length), and the
//! row's own table nothing under its key. The pieces go first, in entries of their own; the
//! manifest, with the deletion of the row's plain value and of the previous generation's
//! pieces, goes in the batch's last entries, in one command batch: a leader dying in between
//! leaves the previous value whole and pieces no manifest names, which the next leader deletes
//! when it opens the store. Overwriting a row with a small value or deleting it deletes its
//! manifest and pieces in the same command batch. The tables and `load` never see pieces.

use super::tables::encode;
use super::{Batch, Recovered, FORMAT};
use bramble_replica::types::MAX_COMMAND_BYTES;
use bramble_replica::{Command, Replica, ReplicaError, Response, Row};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub const FRAMEWORKS: &str = "frameworks";
pub const AGENTS: &str = "agents";
pub const TASKS: &str = "tasks";
pub const FRAMEWORK_STATE: &str = "framework_state";
pub const DRAINING: &str = "draining";
pub const FENCES: &str = "fences";
pub const META: &str = "meta";
/// `FRAMEWORK/TASK` → nothing: a kill asked for and not yet seen to end.
pub const KILLS: &str = "kills";
/// Master id → where it serves agents, frameworks and operators.
pub const MASTERS: &str = "masters";
/// `TABLE/KEY` → the [`Manifest`] of a row kept in pieces.
pub const CHUNKED: &str = "chunked";
/// `TABLE/KEY/GENERATION/INDEX` → one piece of a large row.
pub const CHUNKS: &str = "chunks";
/// Rows encoded larger than this are kept in pieces of at most this size: under the replica's
/// value limit, and two pieces with their keys fit one log entry.
pub const CHUNK_BYTES: usize = 200 * 1024;

const META_CLUSTER_ID: &str = "cluster_id";
const META_FORMAT: &str = "format";
/// Room left in a log entry for the batch's own framing.
const ENTRY_SLACK: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplicatedError {
    #[error("the replicated master store: {op}: {source}")]
    Replica {
        op: &'static str,
        #[source]
        source: ReplicaError,
    },
    #[error("the replicated master store was written for cluster {found}, but this master's CA is cluster {expected}; refusing to mix two clusters' state")]
    OtherCluster { found: String, expected: String },
    #[error("the replicated master store has format {found}; this master reads format {expected}")]
    Format { found: String, expected: u64 },
    #[error("the replicated master store: {table} {key} does not decode: {reason}")]
    Decode {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("the replicated master store: a write conflicted ({0:?})")]
    Conflict(Response),
    #[error("the replicated master store: an earlier write failed, so what it holds is not known here; the master must reopen it")]
    Poisoned,
}

/// What `chunked` says of a row kept in pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    pieces: u32,
    len: u64,
}

/// The leader's picture of the rows kept in pieces, from `load` and kept by every commit.
#[derive(Debug, Default, Clone)]
struct Chunking {
    /// `TABLE/KEY` → its manifest.
    chunked: HashMap<String, Manifest>,
    /// The generation the next large write takes: above every one ever seen.
    next_generation: u64,
    /// A commit failed: its outcome is unknown, so this picture may be wrong.
    poisoned: bool,
    /// Pieces no manifest names (a leader died writing them), found by `load`.
    orphans: Vec<String>,
}

/// Where a master serves clients: what a standby names in its redirects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterAddress {
    /// QUIC, `HOST:PORT`.
    pub quic: String,
    /// HTTP, `HOST:PORT`, if it serves HTTP.
    pub http: Option<String>,
}

/// The replicated store, as the leading master's state task holds it.
#[derive(Clone)]
pub struct Replicated {
    replica: Replica,
    /// The term this master leads in: every write is fenced to it.
    term: u64,
    chunking: Arc<Mutex<Chunking>>,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("id", &self.replica.id())
            .field("term", &self.term)
            .finish()
    }
}

fn failed(op: &'static str) -> impl FnOnce(ReplicaError) -> ReplicatedError {
    move |source| ReplicatedError::Replica { op, source }
}

impl Replicated {
    /// The replica under the store (membership calls at the leader's edge).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// On the leader elected in `term`: waits until it has applied everything committed (a
    /// read barrier), checks (or, on a new group, writes) the cluster id, and reads every
    /// record back. Every write is then fenced to `term`.
    pub async fn open(
        replica: Replica,
        cluster_id: &str,
        term: u64,
    ) -> Result<(Replicated, Recovered), ReplicatedError> {
        replica
            .read_barrier()
            .await
            .map_err(failed("waiting to catch up"))?;
        let store = Replicated {
            replica,
            term,
            chunking: Arc::default(),
        };
        store.check_or_init_meta(cluster_id).await?;
        let recovered = store.load().await?;
        store.delete_orphans().await?;
        Ok((store, recovered))
    }

    /// Commits `cmd` if this master still leads in the term it opened the store in.
    async fn write(&self, cmd: Command) -> Result<Response, ReplicaError> {
        self.replica.write_in_term(self.term, cmd).await
    }

    fn chunking(&self) -> std::sync::MutexGuard<'_, Chunking> {
        self.chunking.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the pieces `load` found no manifest naming.
    async fn delete_orphans(&self) -> Result<(), ReplicatedError> {
        let orphans = std::mem::take(&mut self.chunking().orphans);
        if orphans.is_empty() {
            return Ok(());
        }
        tracing::info!(
            pieces = orphans.len(),
            "deleting pieces of large rows a previous leader wrote but never completed"
        );
        let groups = orphans
            .into_iter()
            .map(|key| vec![delete(CHUNKS, key)])
            .collect();
        for entry in pack(groups) {
            self.write(entry)
                .await
                .map_err(failed("deleting unfinished pieces"))?;
        }
        Ok(())
    }

    async fn check_or_init_meta(&self, cluster_id: &str) -> Result<(), ReplicatedError> {
        let found = self
            .replica
            .read_local(META, META_CLUSTER_ID)
            .await
            .map_err(failed("reading meta"))?;
        match found {
            Some(v) if v.value != cluster_id.as_bytes() => Err(ReplicatedError::OtherCluster {
                found: String::from_utf8_lossy(&v.value).into_owned(),
                expected: cluster_id.to_string(),
            }),
            Some(_) => {
                let format = self
                    .replica
                    .read_local(META, META_FORMAT)
                    .await
                    .map_err(failed("reading meta"))?
                    .map(|v| v.value);
                if format.as_deref() == Some(FORMAT.to_le_bytes().as_slice()) {
                    Ok(())
                } else {
                    Err(ReplicatedError::Format {
                        found: format!("{format:?}"),
                        expected: FORMAT,
                    })
                }
            }
            None => {
                // Only if still absent: two leaders in a row racing on a new group agree.
                let cmd = Command::Batch(vec![
                    Command::CompareAndSet {
                        table: META.into(),
                        key: META_CLUSTER_ID.into(),
                        expected: None,
                        value: Some(cluster_id.as_bytes().to_vec()),
                    },
                    Command::Put {
                        table: META.into(),
                        key: META_FORMAT.into(),
                        value: FORMAT.to_le_bytes().to_vec(),
                    },
                ]);
                match self.write(cmd).await {
                    Ok(Response::Batch(r))
                        if !r.iter().any(|r| matches!(r, Response::Conflict { .. })) =>
                    {
                        Ok(())
                    }
                    Ok(other) => Err(ReplicatedError::Conflict(other)),
                    Err(e) => Err(failed("writing meta")(e)),
                }
            }
        }
    }

    async fn list(&self, table: &'static str) -> Result<Vec<Row>, ReplicatedError> {
        // After `open`'s read barrier this node's applied state is the committed state.
        self.replica
            .list_local(table, "")
            .await
            .map_err(failed("reading"))
    }

    /// `table`'s rows, those kept in pieces (`large`, by table) put together, in key order.
    async fn rows(
        &self,
        table: &'static str,
        large: &mut HashMap<String, Vec<Row>>,
    ) -> Result<Vec<Row>, ReplicatedError> {
        let mut rows = self.list(table).await?;
        if let Some(more) = large.remove(table) {
            rows.extend(more);
            rows.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(rows)
    }

    /// Puts the rows kept in pieces together (by table) and rebuilds the leader's picture of
    /// them; pieces no manifest names are noted for deletion.
    async fn large_rows(&self) -> Result<HashMap<String, Vec<Row>>, ReplicatedError> {
        let mut pieces: HashMap<(String, u64), BTreeMap<u32, Vec<u8>>> = HashMap::new();
        let mut next_generation = 0;
        let mut unparsed = Vec::new();
        for row in self.list(CHUNKS).await? {
            match parse_chunk_key(&row.key) {
                Some((head, generation, index)) => {
                    next_generation = next_generation.max(generation + 1);
                    pieces
                        .entry((head.to_string(), generation))
                        .or_default()
                        .insert(index, row.value);
                }
                None => unparsed.push(row.key),
            }
        }
        let mut chunking = Chunking::default();
        let mut out: HashMap<String, Vec<Row>> = HashMap::new();
        for row in self.list(CHUNKED).await? {
            let bad = |reason: String| ReplicatedError::Decode {
                table: CHUNKED,
                key: row.key.clone(),
                reason,
            };
            let manifest: Manifest = decode(CHUNKED, &row)?;
            let (table, key) = row
                .key
                .split_once('/')
                .ok_or_else(|| bad("not TABLE/KEY".into()))?;
            next_generation = next_generation.max(manifest.generation + 1);
            let mut found = pieces
                .remove(&(row.key.clone(), manifest.generation))
                .unwrap_or_default();
            let mut value = Vec::with_capacity(manifest.len as usize);
            for i in 0..manifest.pieces {
                let piece = found
                    .remove(&i)
                    .ok_or_else(|| bad(format!("piece {i} of {} is missing", manifest.pieces)))?;
                value.extend_from_slice(&piece);
            }
            if value.len() as u64 != manifest.len {
                return Err(bad(format!(
                    "its pieces hold {} bytes, not {}",
                    value.len(),
                    manifest.len
                )));
            }
            chunking.chunked.insert(row.key.clone(), manifest);
            out.entry(table.to_string()).or_default().push(Row {
                key: key.to_string(),
                version: row.version,
                value,
            });
        }
        for ((head, generation), rest) in pieces {
            for index in rest.into_keys() {
                chunking.orphans.push(chunk_key(&head, generation, index));
            }
        }
        chunking.orphans.extend(unparsed);
        chunking.next_generation = next_generation;
        *self.chunking() = chunking;
        Ok(out)
    }

    /// Reads every record (what [`super::Store::load`] reads from the local file).
    pub async fn load(&self) -> Result<Recovered, ReplicatedError> {
        let mut out = Recovered::default();
        let mut large = self.large_rows().await?;
        for row in self.rows(FRAMEWORKS, &mut large).await? {
            out.frameworks.push(decode(FRAMEWORKS, &row)?);
        }
        for row in self.rows(AGENTS, &mut large).await? {
            out.agents.push(decode(AGENTS, &row)?);
        }
        for row in self.rows(TASKS, &mut large).await? {
            out.tasks.push(decode(TASKS, &row)?);
        }
        for row in self.rows(FRAMEWORK_STATE, &mut large).await? {
            let (fw, _) = split_row_key(FRAMEWORK_STATE, &row.key, "FRAMEWORK/KEY")?;
            let entry = decode(FRAMEWORK_STATE, &row)?;
            out.framework_state
                .push((bramble_proto::FrameworkId(fw), entry));
        }
        for row in self.rows(DRAINING, &mut large).await? {
            out.draining.push(bramble_proto::AgentId(row.key));
        }
        for row in self.rows(FENCES, &mut large).await? {
            let epoch = <[u8; 8]>::try_from(row.value.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| ReplicatedError::Decode {
                    table: FENCES,
                    key: row.key.clone(),
                    reason: format!("{} bytes, not a u64", row.value.len()),
                })?;
            if row.key.is_empty() {
                out.fence_high = epoch;
            } else {
                out.fences
                    .push((bramble_proto::FrameworkId(row.key), epoch));
            }
        }
        out.fence_high = out
            .fences
            .iter()
            .map(|(_, e)| *e)
            .fold(out.fence_high, u64::max);
        for row in self.rows(KILLS, &mut large).await? {
            let (fw, task) = split_row_key(KILLS, &row.key, "FRAMEWORK/TASK")?;
            out.kills.push((
                bramble_proto::FrameworkId(fw),
                bramble_proto::TaskId(task.to_string()),
            ));
        }
        Ok(out)
    }

    /// Writes `batch` through the log: done once a majority holds it.
    pub async fn commit(&self, batch: &Batch) -> Result<(), ReplicatedError> {
        let (entries, after) = {
            let chunking = self.chunking();
            if chunking.poisoned {
                return Err(ReplicatedError::Poisoned);
            }
            let mut after = chunking.clone();
            (entries(batch, &mut after), after)
        };
        for entry in entries {
            if let Err(e) = self.write(entry).await {
                // What committed is not known: no later commit may trust the picture.
                self.chunking().poisoned = true;
                return Err(failed("committing")(e));
            }
        }
        *self.chunking() = after;
        Ok(())
    }

    /// Records where this master serves clients (through the leader, from any master).
    pub async fn publish_address(
        replica: &Replica,
        address: &MasterAddress,
    ) -> Result<(), ReplicaError> {
        replica
            .write(Command::Put {
                table: MASTERS.into(),
                key: replica.id().to_string(),
                value: encode(address),
            })
            .await
            .map(|_| ())
    }

    /// Records where this (leading) master serves clients.
    pub async fn record_address(&self, address: &MasterAddress) -> Result<(), ReplicaError> {
        self.write(Command::Put {
            table: MASTERS.into(),
            key: self.replica.id().to_string(),
            value: encode(address),
        })
        .await
        .map(|_| ())
    }

    /// Every master's client addresses as this node has applied them (possibly stale).
    pub async fn addresses(replica: &Replica) -> Vec<(u64, MasterAddress)> {
        let rows = replica.list_local(MASTERS, "").await.unwrap_or_default();
        rows.into_iter()
            .filter_map(|r| {
                let id = r.key.parse().ok()?;
                let address = postcard::from_bytes(&r.value).ok()?;
                Some((id, address))
            })
            .collect()
    }
}

fn decode<T: DeserializeOwned>(table: &'static str, row: &Row) -> Result<T, ReplicatedError> {
    postcard::from_bytes(&row.value).map_err(|e| ReplicatedError::Decode {
        table,
        key: row.key.clone(),
        reason: e.to_string(),
    })
}

/// A framework id as the first part of a `FRAMEWORK/REST` key: `%` and `/` escaped, since a
/// framework may name its own id (Mesos failover), and `a/b` + `c` must not meet `a` + `b/c`.
fn escape(fw: &str) -> String {
    fw.replace('%', "%25").replace('/', "%2F")
}

/// `FRAMEWORK/REST` back into the framework id and the rest.
fn split_key(key: &str) -> Option<(String, &str)> {
    let (fw, rest) = key.split_once('/')?;
    Some((fw.replace("%2F", "/").replace("%25", "%"), rest))
}

/// [`split_key`] for a row of `table` whose key must read `shape`: a key that does not is a
/// decode error naming the table, the key and the shape expected.
fn split_row_key<'k>(
    table: &'static str,
    key: &'k str,
    shape: &str,
) -> Result<(String, &'k str), ReplicatedError> {
    split_key(key).ok_or_else(|| ReplicatedError::Decode {
        table,
        key: key.to_string(),
        reason: format!("not {shape}"),
    })
}

fn put(table: &str, key: String, value: Vec<u8>) -> Command {
    Command::Put {
        table: table.into(),
        key,
        value,
    }
}

fn delete(table: &str, key: String) -> Command {
    Command::Delete {
        table: table.into(),
        key,
    }
}

/// One row written (`Some`) or deleted.
type RowWrite = (&'static str, String, Option<Vec<u8>>);

/// The batch's rows, in order.
fn row_writes(batch: &Batch) -> Vec<RowWrite> {
    let mut rows: Vec<RowWrite> = Vec::with_capacity(batch.len());
    for (id, r) in &batch.frameworks {
        rows.push((FRAMEWORKS, id.as_str().to_string(), r.as_ref().map(encode)));
    }
    for (id, r) in &batch.agents {
        rows.push((AGENTS, id.as_str().to_string(), r.as_ref().map(encode)));
    }
    for ((fw, task), r) in &batch.tasks {
        let key = format!("{}/{}", escape(fw.as_str()), task.as_str());
        rows.push((TASKS, key, r.as_ref().map(encode)));
    }
    for ((fw, k), e) in &batch.framework_state {
        let key = format!("{}/{k}", escape(fw.as_str()));
        rows.push((FRAMEWORK_STATE, key, e.as_ref().map(encode)));
    }
    for (id, drained) in &batch.draining {
        let value = drained.then(Vec::new);
        rows.push((DRAINING, id.as_str().to_string(), value));
    }
    for (id, epoch) in &batch.fences {
        let value = epoch.map(|e| e.to_le_bytes().to_vec());
        rows.push((FENCES, id.as_str().to_string(), value));
    }
    if let Some(high) = batch.fence_high {
        rows.push((FENCES, String::new(), Some(high.to_le_bytes().to_vec())));
    }
    for ((fw, task), pending) in &batch.kills {
        let key = format!("{}/{}", escape(fw.as_str()), task.as_str());
        rows.push((KILLS, key, pending.then(Vec::new)));
    }
    rows
}

/// `TABLE/KEY/GENERATION/INDEX`: fixed-width hex, so the key parses from the right whatever
/// `/` the row's key holds.
fn chunk_key(head: &str, generation: u64, index: u32) -> String {
    format!("{head}/{generation:016x}/{index:08x}")
}

/// A piece's key back into `TABLE/KEY`, generation and index.
fn parse_chunk_key(key: &str) -> Option<(&str, u64, u32)> {
    let (rest, index) = key.rsplit_once('/')?;
    let (head, generation) = rest.rsplit_once('/')?;
    if index.len() != 8 || generation.len() != 16 || !head.contains('/') {
        return None;
    }
    Some((
        head,
        u64::from_str_radix(generation, 16).ok()?,
        u32::from_str_radix(index, 16).ok()?,
    ))
}

/// The batch as commands, in as few log entries as fit, with `chunking` as it will be once
/// they are all written: the pieces of large rows first, then each row's commands as a group
/// no entry boundary splits.
fn entries(batch: &Batch, chunking: &mut Chunking) -> Vec<Command> {
    let mut pieces = Vec::new();
    let mut groups = Vec::new();
    for (table, key, value) in row_writes(batch) {
        let head = format!("{table}/{key}");
        let mut group = Vec::with_capacity(2);
        let previous = chunking.chunked.remove(&head);
        match value {
            Some(value) if value.len() > CHUNK_BYTES => {
                let manifest = Manifest {
                    generation: chunking.next_generation,
                    pieces: value.len().div_ceil(CHUNK_BYTES) as u32,
                    len: value.len() as u64,
                };
                chunking.next_generation += 1;
                for (i, piece) in value.chunks(CHUNK_BYTES).enumerate() {
                    let piece_key = chunk_key(&head, manifest.generation, i as u32);
                    pieces.push(vec![put(CHUNKS, piece_key, piece.to_vec())]);
                }
                group.push(put(CHUNKED, head.clone(), encode(&manifest)));
                group.push(delete(table, key));
                chunking.chunked.insert(head.clone(), manifest);
            }
            Some(value) => {
                group.push(put(table, key, value));
                if previous.is_some() {
                    group.push(delete(CHUNKED, head.clone()));
                }
            }
            None => {
                group.push(delete(table, key));
                if previous.is_some() {
                    group.push(delete(CHUNKED, head.clone()));
                }
            }
        }
        if let Some(old) = previous {
            for i in 0..old.pieces {
                group.push(delete(CHUNKS, chunk_key(&head, old.generation, i)));
            }
        }
        groups.push(group);
    }
    pieces.extend(groups);
    pack(pieces)
}

/// Groups of commands as batches of at most one log entry each, in order; a group is never
/// split (every group fits an entry).
fn pack(groups: Vec<Vec<Command>>) -> Vec<Command> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for group in groups {
        let len: usize = group
            .iter()
            .map(|c| postcard::to_allocvec(c).map(|v| v.len()).unwrap_or(0))
            .sum();
        if !current.is_empty() && size + len > MAX_COMMAND_BYTES - ENTRY_SLACK {
            out.push(Command::Batch(std::mem::take(&mut current)));
            size = 0;
        }
        size += len;
        current.extend(group);
    }
    if !current.is_empty() {
        out.push(Command::Batch(current));
    }
    out
}

#[cfg(test)]
mod tests;
