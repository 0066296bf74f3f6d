//! The agent's checkpoints besides status updates: what a restarted agent needs to find and
//! re-adopt what its previous process left running.
//!
//! **On disk**, under `work_dir/meta/` (next to `agent_id` and `updates/`; `paths.rs` has the
//! whole layout):
//! * `agent.json`: the boot id and the resources and attributes the agent last started with.
//!   A different boot id means the host rebooted: nothing checkpointed runs any more. Different
//!   resources or attributes while runs are checkpointed means the operator changed the node
//!   under running tasks: the agent refuses to start (see [`changes`]) rather than re-adopt
//!   tasks the master would then place against resources that no longer exist.
//! * `runs/<container>.json`: one per executor run (a command task or a custom executor): ids,
//!   sandbox, the executor's token, the leader's pid and start time, its cgroup directories.
//!   Written only when such run-level facts change (the launch, a reboot found, …) — as part of
//!   the agent's group commit, before the updates of the same burst, so a RUNNING sent out
//!   always has its run on disk. Removed once every task of the run is terminal and
//!   acknowledged.
//! * **The run's tasks** are not rewritten into that file as they come and go: an executor
//!   running thousands of tiny tasks would rewrite (and fsync, rename, directory-fsync) a file
//!   listing all of them on every burst. They go into the status update log instead
//!   ([`TaskChange`], `status_updates/`), in the same write and fdatasync as the burst's
//!   updates: [`TaskChange::RunLogged`] says the log holds the run's task list from then on
//!   (a snapshot of it follows), then [`TaskChange::TaskAdded`] / [`TaskChange::TaskRemoved`]
//!   as tasks join and leave, until [`TaskChange::RunRemoved`]. The file's `tasks` and `queued`
//!   hold the task list only until the log does: the run's first write (its launch commit,
//!   written before the log's snapshot in the same commit, so a crash between the two still
//!   finds the tasks) and files written by older agents, which recovery reads as before and
//!   then moves into the log. Once the log holds a run, recovery ignores the file's list.
//! * `runs/<container>.exit`: the exit status a command task's supervisor records (see
//!   `containerizer/recover.rs`), read when the task ends while no agent watches it.
//!
//! Every write goes through `bramble_proto::durable` (temp file → fsync → rename → directory
//! fsync, one directory fsync for all the runs of a commit), in compact JSON (still one `jq`
//! away; the pretty files of older agents read the same); a file that does not parse is moved
//! aside as `<name>.corrupt` and logged, never fatal. Task states are not written on every
//! change: a state in a run file is a lower bound (the state when the file was written), and
//! the log's is the state of the task's latest recorded update; recovery takes the newest
//! unacknowledged update over either.

use crate::paths::{self, WorkDir};
use bramble_proto::durable::{self, FileError};
use bramble_proto::task::{ExecutorInfo, TaskInfo, TaskState};
use bramble_proto::{ExecutorId, FrameworkId, Resources, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tracing::warn;

/// Where the kernel publishes this boot's id.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Hidden override of [`BOOT_ID_PATH`], for tests that simulate a reboot.
pub const BOOT_ID_ENV: &str = "BRAMBLE_BOOT_ID_FILE";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint: {source}")]
    Io {
        #[from]
        source: FileError,
    },
    #[error("checkpoint: encoding {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What the agent started with last time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub boot_id: String,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
}

/// One task of a run, as last written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub info: TaskInfo,
    /// A lower bound: the state when the run file was last written.
    pub state: TaskState,
}

/// One task of a run as the update log holds it (see the module header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedTask {
    pub framework_id: FrameworkId,
    pub info: TaskInfo,
    /// Given to the executor (a `LaunchTask` was released); `false`: queued until the custom
    /// executor registers.
    pub handed: bool,
    /// The state it was added with, moved forward by each update of the task the log records
    /// (acknowledged or not): the state of its latest recorded update.
    pub state: TaskState,
}

/// A change to the task list of an executor run, recorded in the status update log (see the
/// module header). `container` names the run, as its run file does.
// Most changes of a burst are `TaskAdded`s, each moved once into the log: boxing it would add
// an allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TaskChange {
    /// From here on the log holds this run's task list: the run file's is not read any more.
    /// Followed by a `TaskAdded` for each task the run has at that moment.
    RunLogged {
        container: String,
    },
    /// A task joined the run, or changed (handed to its executor): replaces an entry with the
    /// same task id.
    TaskAdded {
        container: String,
        task: LoggedTask,
    },
    TaskRemoved {
        container: String,
        task_id: TaskId,
    },
    /// The run is over (its run file is removed in the same commit): all of it is forgotten.
    RunRemoved {
        container: String,
    },
}

impl TaskChange {
    pub fn container(&self) -> &str {
        match self {
            TaskChange::RunLogged { container }
            | TaskChange::TaskAdded { container, .. }
            | TaskChange::TaskRemoved { container, .. }
            | TaskChange::RunRemoved { container } => container,
        }
    }
}

/// One executor run (see the module header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCheckpoint {
    pub container: String,
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    /// `None` for a command task.
    pub executor: Option<ExecutorInfo>,
    pub sandbox: PathBuf,
    /// The custom executor's token; it reconnects with it after an agent restart.
    pub token: String,
    pub pid: u32,
    pub start_time: u64,
    pub cgroup_dirs: Vec<PathBuf>,
    pub memory_limit_mib: u64,
    /// The run's tasks, while the update log does not hold them yet (see the module header):
    /// empty once it does. Always written, so an older agent still parses the file.
    #[serde(default)]
    pub tasks: Vec<TaskCheckpoint>,
    /// Tasks not yet handed to the custom executor (it had not registered); like `tasks`.
    #[serde(default)]
    pub queued: Vec<TaskInfo>,
    /// Set for a custom executor speaking the Mesos executor HTTP API (absent in files written
    /// before the Mesos API existed: those runs are native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesos: Option<MesosExecutor>,
}

/// A custom executor launched for a Mesos-API task: it subscribes over HTTP
/// (`agent/src/mesos/`) rather than the Unix socket, and these are what its SUBSCRIBED event
/// and its shutdown need, taken from the first task's `TaskInfo.mesos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MesosExecutor {
    /// The framework's Mesos `FrameworkInfo` JSON (with its id).
    pub framework_json: String,
    /// The executor's Mesos `ExecutorInfo` JSON.
    pub executor_json: String,
    /// `FrameworkInfo.checkpoint`: a disconnected executor is given the recovery timeout to
    /// come back instead of being killed at once.
    pub checkpoint: bool,
    /// Between SHUTDOWN and the kill.
    pub shutdown_grace_ms: u64,
}

/// The checkpoint files under one agent's meta directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    work_dir: WorkDir,
}

impl Checkpoints {
    /// Uses `work_dir`'s meta directory, creating its `runs/` if needed, and closes the meta
    /// directory to everyone but the agent's user (0700, also when an older agent left it
    /// open): the run files hold custom executors' tokens, and the work dir above is open to
    /// task users, who pass through it to their sandboxes.
    pub fn open(work_dir: &WorkDir) -> Result<Self, CheckpointError> {
        let runs = work_dir.runs_dir();
        if !runs.is_dir() {
            fs::create_dir_all(&runs).map_err(FileError::at("creating", &runs))?;
            durable::sync_dir(&work_dir.meta_dir())?;
        }
        let meta = work_dir.meta_dir();
        fs::set_permissions(&meta, fs::Permissions::from_mode(0o700))
            .map_err(FileError::at("closing to others", &meta))?;
        Ok(Self {
            work_dir: work_dir.clone(),
        })
    }

    /// Where [`AgentInfo`] is kept.
    pub fn agent_info_file(&self) -> PathBuf {
        self.work_dir.agent_info_file()
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.work_dir.runs_dir()
    }

    /// Where the supervisor of command task run `container` records its exit status.
    pub fn exit_status_file(&self, container: &str) -> PathBuf {
        self.work_dir.exit_status_file(container)
    }

    pub fn load_agent_info(&self) -> Result<Option<AgentInfo>, CheckpointError> {
        let path = self.agent_info_file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::at("reading", &path)(e).into()),
        };
        match serde_json::from_str(&text) {
            Ok(info) => Ok(Some(info)),
            Err(e) => {
                move_aside(&path, &e.to_string())?;
                Ok(None)
            }
        }
    }

    pub fn save_agent_info(&self, info: &AgentInfo) -> Result<(), CheckpointError> {
        let bytes = encode(info, "agent info")?;
        Ok(durable::write(&self.agent_info_file(), &bytes)?)
    }

    /// Every run checkpoint that parses, in no particular order.
    pub fn load_runs(&self) -> Result<Vec<RunCheckpoint>, CheckpointError> {
        let dir = self.runs_dir();
        let mut runs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(FileError::at("listing", &dir))? {
            let entry = entry.map_err(FileError::at("listing", &dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if durable::is_temp_file_name(&name) {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !paths::is_run_file_name(&name) {
                continue;
            }
            let parsed = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<RunCheckpoint>(&t).map_err(|e| e.to_string()));
            match parsed {
                Ok(run) => runs.push(run),
                Err(why) => move_aside(&path, &why)?,
            }
        }
        Ok(runs)
    }

    /// Writes these runs' checkpoints durably, sharing one directory flush.
    pub fn save_runs(&self, runs: &[&RunCheckpoint]) -> Result<(), CheckpointError> {
        if runs.is_empty() {
            return Ok(());
        }
        let files = runs
            .iter()
            .map(|r| {
                let bytes = encode(r, &format!("run {}", r.container))?;
                Ok((paths::run_file_name(&r.container), bytes))
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        Ok(durable::write_batch(&self.runs_dir(), &files)?)
    }

    /// Forgets a run (and its recorded exit status). Not flushed: a run resurrected by a
    /// crash is found ended on recovery and its tasks are reported again, which
    /// at-least-once delivery allows.
    pub fn remove_run(&self, container: &str) {
        for path in [
            self.work_dir.run_file(container),
            self.work_dir.exit_status_file(container),
        ] {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), "could not remove run checkpoint: {e}");
                }
            }
        }
    }
}

/// This boot's id (trimmed), from `path`.
pub fn read_boot_id(path: &Path) -> Result<String, CheckpointError> {
    let text = fs::read_to_string(path).map_err(FileError::at("reading the boot id from", path))?;
    Ok(text.trim().to_string())
}

/// The boot id file: [`BOOT_ID_PATH`] unless [`BOOT_ID_ENV`] names another.
pub fn boot_id_path() -> PathBuf {
    std::env::var_os(BOOT_ID_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BOOT_ID_PATH))
}

/// What differs between the checkpointed and the current resources and attributes, one
/// "what: old → new" entry each. Disk is compared only when `compare_disk` (a detected disk
/// size is the free space, which moves on its own).
pub fn changes(old: &AgentInfo, new: &AgentInfo, compare_disk: bool) -> Vec<String> {
    let (o, n) = (&old.resources, &new.resources);
    let mut out = Vec::new();
    if o.cpus_milli != n.cpus_milli {
        out.push(format!("cpus: {} → {}", o.cpus(), n.cpus()));
    }
    if o.mem_mib != n.mem_mib {
        out.push(format!("mem: {} → {} MiB", o.mem_mib, n.mem_mib));
    }
    if compare_disk && o.disk_mib != n.disk_mib {
        out.push(format!("disk: {} → {} MiB", o.disk_mib, n.disk_mib));
    }
    if o.ports != n.ports {
        let show = |r: &Resources| {
            let v: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
            format!("[{}]", v.join(","))
        };
        out.push(format!("ports: {} → {}", show(o), show(n)));
    }
    let keys: std::collections::BTreeSet<&String> =
        old.attributes.keys().chain(new.attributes.keys()).collect();
    for k in keys {
        let (a, b) = (old.attributes.get(k), new.attributes.get(k));
        if a != b {
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| format!("{v:?}"));
            out.push(format!("attribute {k}: {} → {}", show(a), show(b)));
        }
    }
    out
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, CheckpointError> {
    let mut bytes = serde_json::to_vec(value).map_err(|source| CheckpointError::Encode {
        what: what.to_string(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn move_aside(path: &Path, why: &str) -> Result<(), CheckpointError> {
    let aside = PathBuf::from(format!("{}.corrupt", path.display()));
    warn!(path = %path.display(), moved_to = %aside.display(), "corrupt checkpoint moved aside: {why}");
    fs::rename(path, &aside).map_err(FileError::at("moving aside", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::task::CommandInfo;
    use bramble_proto::{AgentId, TaskId};

    fn run(key: &str) -> RunCheckpoint {
        RunCheckpoint {
            container: key.to_string(),
            framework_id: FrameworkId("fw".into()),
            executor_id: ExecutorId("ex".into()),
            executor: None,
            sandbox: PathBuf::from("/tmp/sb"),
            token: String::new(),
            pid: 42,
            start_time: 7,
            cgroup_dirs: vec![],
            memory_limit_mib: 0,
            tasks: vec![TaskCheckpoint {
                info: TaskInfo {
                    task_id: TaskId("t".into()),
                    name: "t".into(),
                    agent_id: AgentId("a".into()),
                    resources: Resources::new(1.0, 32),
                    command: Some(CommandInfo::shell("true")),
                    executor: None,
                    data: vec![],
                    mesos: None,
                    image: None,
                    artifacts: Vec::new(),
                },
                state: TaskState::Running,
            }],
            queued: vec![],
            mesos: None,
        }
    }

    #[test]
    fn runs_round_trip_and_corrupt_ones_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(&WorkDir::new(dir.path())).unwrap();
        let (a, b) = (run("a"), run("b"));
        cp.save_runs(&[&a, &b]).unwrap();
        std::fs::write(cp.runs_dir().join("c.json"), "{not json").unwrap();
        let mut loaded = cp.load_runs().unwrap();
        loaded.sort_by(|x, y| x.container.cmp(&y.container));
        assert_eq!(loaded, vec![a, b]);
        assert!(cp.runs_dir().join("c.json.corrupt").exists());
        cp.remove_run("a");
        assert_eq!(cp.load_runs().unwrap().len(), 1);
    }

    #[test]
    fn runs_are_written_compact_and_older_agents_pretty_files_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(&WorkDir::new(dir.path())).unwrap();
        let a = run("a");
        cp.save_runs(&[&a]).unwrap();
        let text = std::fs::read_to_string(cp.runs_dir().join("a.json")).unwrap();
        assert_eq!(text.lines().count(), 1, "compact: {text}");
        let pretty = serde_json::to_string_pretty(&run("b")).unwrap();
        std::fs::write(cp.runs_dir().join("b.json"), pretty).unwrap();
        let mut loaded = cp.load_runs().unwrap();
        loaded.sort_by(|x, y| x.container.cmp(&y.container));
        assert_eq!(loaded, vec![a, run("b")]);
    }

    #[test]
    fn a_run_file_without_task_lists_reads_as_having_none() {
        let mut value = serde_json::to_value(run("a")).unwrap();
        let fields = value.as_object_mut().unwrap();
        fields.remove("tasks");
        fields.remove("queued");
        let read: RunCheckpoint = serde_json::from_value(value).unwrap();
        assert!(read.tasks.is_empty() && read.queued.is_empty());
    }

    #[test]
    fn agent_info_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(&WorkDir::new(dir.path())).unwrap();
        assert_eq!(cp.load_agent_info().unwrap(), None);
        let info = AgentInfo {
            boot_id: "b1".into(),
            resources: Resources::new(2.0, 512),
            attributes: [("rack".to_string(), "1".to_string())].into(),
        };
        cp.save_agent_info(&info).unwrap();
        assert_eq!(cp.load_agent_info().unwrap(), Some(info));
    }

    #[test]
    fn changes_name_what_changed_old_to_new() {
        let old = AgentInfo {
            boot_id: "b".into(),
            resources: Resources::new(1.0, 256).with_disk(100),
            attributes: [("rack".to_string(), "1".to_string())].into(),
        };
        assert!(changes(&old, &old, true).is_empty());
        let mut new = old.clone();
        new.resources = Resources::new(2.0, 256).with_disk(90);
        new.attributes.insert("rack".into(), "2".into());
        new.attributes.insert("zone".into(), "a".into());
        assert_eq!(
            changes(&old, &new, false),
            vec![
                "cpus: 1 → 2".to_string(),
                "attribute rack: \"1\" → \"2\"".to_string(),
                "attribute zone: (none) → \"a\"".to_string(),
            ]
        );
        assert!(changes(&old, &new, true).contains(&"disk: 100 → 90 MiB".to_string()));
    }
}
