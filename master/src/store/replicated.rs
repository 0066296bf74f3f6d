//! The store of replicated masters (`[ha]`): the same records as the local redb file, kept as
//! tables of the replica's map (`bramble-replica`), so that whichever master leads reads what
//! every leader before it committed.
//!
//! Tables (keys are strings): `frameworks` (framework id), `agents` (agent id), `tasks`
//! (`<framework id>/<task id>`), `framework_state` (`<framework id>/<key>`), `draining` (agent
//! id, empty value), `fences` (framework id, and `""` for the highest epoch given; u64
//! little-endian), `meta` (`cluster_id`, `format`). Values are the records' postcard encoding,
//! as in the local file. `masters` (master id → [`MasterAddress`]) says where each master
//! serves clients, for standbys' redirects.
//!
//! A burst's [`Batch`] is written as one `Command::Batch` through
//! [`Replica::write_as_leader`], so nothing is acknowledged before a majority holds it and a
//! deposed leader's write fails instead of being forwarded. A batch larger than one log entry
//! may hold is split into several entries, written in order, each acknowledged before the
//! next; the burst's messages still wait for the last.

use super::tables::encode;
use super::{Batch, Recovered, FORMAT};
use bramble_replica::types::MAX_COMMAND_BYTES;
use bramble_replica::{Command, Replica, ReplicaError, Response, Row};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const FRAMEWORKS: &str = "frameworks";
pub const AGENTS: &str = "agents";
pub const TASKS: &str = "tasks";
pub const FRAMEWORK_STATE: &str = "framework_state";
pub const DRAINING: &str = "draining";
pub const FENCES: &str = "fences";
pub const META: &str = "meta";
/// Master id → where it serves agents, frameworks and operators.
pub const MASTERS: &str = "masters";

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
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("id", &self.replica.id())
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

    /// On the leader: waits until it has applied everything committed (a read barrier), checks
    /// (or, on a new group, writes) the cluster id, and reads every record back.
    pub async fn open(
        replica: Replica,
        cluster_id: &str,
    ) -> Result<(Replicated, Recovered), ReplicatedError> {
        replica
            .read_barrier()
            .await
            .map_err(failed("waiting to catch up"))?;
        let store = Replicated { replica };
        store.check_or_init_meta(cluster_id).await?;
        let recovered = store.load().await?;
        Ok((store, recovered))
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
                match self.replica.write_as_leader(cmd).await {
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

    async fn rows(&self, table: &'static str) -> Result<Vec<Row>, ReplicatedError> {
        // After `open`'s read barrier this node's applied state is the committed state.
        self.replica
            .list_local(table, "")
            .await
            .map_err(failed("reading"))
    }

    /// Reads every record (what [`super::Store::load`] reads from the local file).
    pub async fn load(&self) -> Result<Recovered, ReplicatedError> {
        let mut out = Recovered::default();
        for row in self.rows(FRAMEWORKS).await? {
            out.frameworks.push(decode(FRAMEWORKS, &row)?);
        }
        for row in self.rows(AGENTS).await? {
            out.agents.push(decode(AGENTS, &row)?);
        }
        for row in self.rows(TASKS).await? {
            out.tasks.push(decode(TASKS, &row)?);
        }
        for row in self.rows(FRAMEWORK_STATE).await? {
            let (fw, _) = split_key(&row.key).ok_or_else(|| ReplicatedError::Decode {
                table: FRAMEWORK_STATE,
                key: row.key.clone(),
                reason: "not FRAMEWORK/KEY".into(),
            })?;
            let entry = decode(FRAMEWORK_STATE, &row)?;
            out.framework_state
                .push((bramble_proto::FrameworkId(fw), entry));
        }
        for row in self.rows(DRAINING).await? {
            out.draining.push(bramble_proto::AgentId(row.key));
        }
        for row in self.rows(FENCES).await? {
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
        Ok(out)
    }

    /// Writes `batch` through the log: done once a majority holds it.
    pub async fn commit(&self, batch: &Batch) -> Result<(), ReplicatedError> {
        for entry in entries(batch) {
            match self.replica.write_as_leader(entry).await {
                Ok(_) => {}
                Err(e) => return Err(failed("committing")(e)),
            }
        }
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
        self.replica
            .write_as_leader(Command::Put {
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

/// The batch as commands, in as few log entries as fit.
pub(crate) fn entries(batch: &Batch) -> Vec<Command> {
    let mut commands = Vec::with_capacity(batch.len());
    for (id, r) in &batch.frameworks {
        let key = id.as_str().to_string();
        commands.push(match r {
            Some(r) => put(FRAMEWORKS, key, encode(r)),
            None => delete(FRAMEWORKS, key),
        });
    }
    for (id, r) in &batch.agents {
        let key = id.as_str().to_string();
        commands.push(match r {
            Some(r) => put(AGENTS, key, encode(r)),
            None => delete(AGENTS, key),
        });
    }
    for ((fw, task), r) in &batch.tasks {
        let key = format!("{}/{}", escape(fw.as_str()), task.as_str());
        commands.push(match r {
            Some(r) => put(TASKS, key, encode(r)),
            None => delete(TASKS, key),
        });
    }
    for ((fw, k), e) in &batch.framework_state {
        let key = format!("{}/{k}", escape(fw.as_str()));
        commands.push(match e {
            Some(e) => put(FRAMEWORK_STATE, key, encode(e)),
            None => delete(FRAMEWORK_STATE, key),
        });
    }
    for (id, drained) in &batch.draining {
        let key = id.as_str().to_string();
        commands.push(if *drained {
            put(DRAINING, key, Vec::new())
        } else {
            delete(DRAINING, key)
        });
    }
    for (id, epoch) in &batch.fences {
        let key = id.as_str().to_string();
        commands.push(match epoch {
            Some(e) => put(FENCES, key, e.to_le_bytes().to_vec()),
            None => delete(FENCES, key),
        });
    }
    if let Some(high) = batch.fence_high {
        commands.push(put(FENCES, String::new(), high.to_le_bytes().to_vec()));
    }
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for c in commands {
        let len = postcard::to_allocvec(&c).map(|v| v.len()).unwrap_or(0);
        if !current.is_empty() && size + len > MAX_COMMAND_BYTES - ENTRY_SLACK {
            out.push(Command::Batch(std::mem::take(&mut current)));
            size = 0;
        }
        size += len;
        current.push(c);
    }
    if !current.is_empty() {
        out.push(Command::Batch(current));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRecord, FrameworkRecord};
    use bramble_proto::{AgentId, FrameworkId, Resources};

    #[test]
    fn framework_ids_with_slashes_make_distinct_keys() {
        let a = format!("{}/{}", escape("a/b"), "c");
        let b = format!("{}/{}", escape("a"), "b/c");
        assert_ne!(a, b);
        assert_eq!(split_key(&a), Some(("a/b".to_string(), "c")));
        assert_eq!(split_key(&b), Some(("a".to_string(), "b/c")));
        let odd = format!("{}/k", escape("50%2F"));
        assert_eq!(split_key(&odd), Some(("50%2F".to_string(), "k")));
    }

    #[test]
    fn a_batch_becomes_one_entry_and_a_huge_one_several_in_order() {
        let agent = |i: usize| AgentRecord {
            id: AgentId(format!("a{i}")),
            hostname: "x".repeat(1000),
            address: "127.0.0.1:1".parse().expect("addr"),
            total: Resources::new(1.0, 1),
            attributes: Default::default(),
            executors: Vec::new(),
        };
        let small = Batch {
            agents: vec![(AgentId("a1".into()), Some(agent(1)))],
            fences: vec![(FrameworkId("fw".into()), Some(3))],
            fence_high: Some(3),
            ..Batch::default()
        };
        let e = entries(&small);
        assert_eq!(e.len(), 1);
        let Command::Batch(cmds) = &e[0] else {
            panic!("{e:?}")
        };
        assert_eq!(cmds.len(), 3);
        let big = Batch {
            agents: (0..2000)
                .map(|i| (AgentId(format!("a{i}")), Some(agent(i))))
                .collect(),
            frameworks: vec![(FrameworkId("fw".into()), None::<FrameworkRecord>)],
            ..Batch::default()
        };
        let e = entries(&big);
        assert!(e.len() > 1, "{}", e.len());
        let mut n = 0;
        for entry in &e {
            let bytes = postcard::to_allocvec(entry).expect("encode");
            assert!(bytes.len() <= MAX_COMMAND_BYTES, "{}", bytes.len());
            let Command::Batch(cmds) = entry else {
                panic!("not a batch")
            };
            assert!(entry.validate().is_ok());
            n += cmds.len();
        }
        assert_eq!(n, 2001);
    }
}
