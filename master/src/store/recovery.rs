//! Opening an existing store: its meta must name this cluster and a format this master reads
//! (older formats are upgraded, `format1.rs`, `format2.rs`), then every record is read back.

use super::tables::{
    AGENTS, DRAINING, FRAMEWORKS, FRAMEWORK_STATE, KILLS, META, META_CLUSTER_ID, META_FORMAT, TASKS,
};
use super::{format1, format2, Recovered, Store, StoreError, FORMAT};
use bramble_proto::{AgentId, FrameworkId, TaskId};
use redb::{ReadableDatabase, ReadableTable, TableHandle};
use serde::de::DeserializeOwned;

impl Store {
    /// A new store gets its meta (and empty tables); an existing one must be ours.
    pub(super) fn check_or_init_meta(&self, cluster_id: &str) -> Result<(), StoreError> {
        let read = self.db.begin_read().map_err(self.redb("reading"))?;
        let meta = match read.open_table(META) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(redb::TableError::TableTypeMismatch { .. }) => {
                return Err(StoreError::NotAStore {
                    path: self.path.clone(),
                    detail: "its meta table has other types".into(),
                })
            }
            Err(e) => return Err(self.redb("opening the meta table")(e)),
        };
        let Some(meta) = meta else {
            let tables: Vec<String> = read
                .list_tables()
                .map_err(self.redb("listing tables"))?
                .map(|t| t.name().to_string())
                .collect();
            drop(read);
            if !tables.is_empty() {
                return Err(StoreError::NotAStore {
                    path: self.path.clone(),
                    detail: format!("no meta table, but tables {tables:?}"),
                });
            }
            return self.init(cluster_id);
        };
        let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta
                .get(key)
                .map_err(self.redb("reading meta"))?
                .map(|v| v.value().to_vec()))
        };
        let format = get(META_FORMAT)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes);
        let found_cluster = get(META_CLUSTER_ID)?.map(|v| String::from_utf8_lossy(&v).into_owned());
        let (Some(format), Some(found_cluster)) = (format, found_cluster) else {
            return Err(StoreError::NotAStore {
                path: self.path.clone(),
                detail: "its meta table lacks the format or the cluster id".into(),
            });
        };
        if found_cluster != cluster_id {
            return Err(StoreError::OtherCluster {
                path: self.path.clone(),
                found: found_cluster,
                expected: cluster_id.to_string(),
            });
        }
        if format == format1::FORMAT {
            let rewritten = self.upgrade_from_format1()?;
            tracing::info!(store = %self.path.display(), tasks = rewritten, "upgraded the master store from format 1 (tasks gained a container image)");
            return Ok(());
        }
        if format == format2::FORMAT {
            let rewritten = self.upgrade_from_format2()?;
            tracing::info!(store = %self.path.display(), tasks = rewritten, "upgraded the master store from format 2 (tasks gained fetched artifacts)");
            return Ok(());
        }
        if format != FORMAT {
            return Err(StoreError::Format {
                path: self.path.clone(),
                found: format,
                expected: FORMAT,
            });
        }
        Ok(())
    }

    fn init(&self, cluster_id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(self.redb("initialising"))?;
        {
            let mut meta = txn.open_table(META).map_err(self.redb("initialising"))?;
            meta.insert(META_FORMAT, FORMAT.to_le_bytes().as_slice())
                .map_err(self.redb("initialising"))?;
            meta.insert(META_CLUSTER_ID, cluster_id.as_bytes())
                .map_err(self.redb("initialising"))?;
            txn.open_table(FRAMEWORKS)
                .map_err(self.redb("initialising"))?;
            txn.open_table(AGENTS).map_err(self.redb("initialising"))?;
            txn.open_table(TASKS).map_err(self.redb("initialising"))?;
        }
        txn.commit().map_err(self.redb("initialising"))
    }

    /// Reads every record.
    pub fn load(&self) -> Result<Recovered, StoreError> {
        let read = self.db.begin_read().map_err(self.redb("reading"))?;
        let mut out = Recovered::default();
        let frameworks = read.open_table(FRAMEWORKS).map_err(self.redb("reading"))?;
        for row in frameworks.iter().map_err(self.redb("reading"))? {
            let (k, v) = row.map_err(self.redb("reading"))?;
            out.frameworks
                .push(self.decode("framework", k.value(), v.value())?);
        }
        let agents = read.open_table(AGENTS).map_err(self.redb("reading"))?;
        for row in agents.iter().map_err(self.redb("reading"))? {
            let (k, v) = row.map_err(self.redb("reading"))?;
            out.agents.push(self.decode("agent", k.value(), v.value())?);
        }
        let tasks = read.open_table(TASKS).map_err(self.redb("reading"))?;
        for row in tasks.iter().map_err(self.redb("reading"))? {
            let (k, v) = row.map_err(self.redb("reading"))?;
            let (fw, task) = k.value();
            out.tasks
                .push(self.decode("task", &format!("{fw}/{task}"), v.value())?);
        }
        match read.open_table(FRAMEWORK_STATE) {
            Ok(state) => {
                for row in state.iter().map_err(self.redb("reading"))? {
                    let (k, v) = row.map_err(self.redb("reading"))?;
                    let (fw, key) = k.value();
                    let entry =
                        self.decode("framework state", &format!("{fw}/{key}"), v.value())?;
                    out.framework_state
                        .push((FrameworkId(fw.to_string()), entry));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.redb("reading")(e)),
        }
        match read.open_table(DRAINING) {
            Ok(draining) => {
                for row in draining.iter().map_err(self.redb("reading"))? {
                    let (k, _) = row.map_err(self.redb("reading"))?;
                    out.draining.push(AgentId(k.value().to_string()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.redb("reading")(e)),
        }
        match read.open_table(KILLS) {
            Ok(kills) => {
                for row in kills.iter().map_err(self.redb("reading"))? {
                    let (k, _) = row.map_err(self.redb("reading"))?;
                    let (fw, task) = k.value();
                    out.kills
                        .push((FrameworkId(fw.to_string()), TaskId(task.to_string())));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.redb("reading")(e)),
        }
        self.load_fences(&read, &mut out)?;
        Ok(out)
    }

    pub(super) fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            what,
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}
