//! The containerizer: runs executors (a `/bin/sh -c CMD` task or a custom executor program)
//! as sandboxed processes with cgroup limits.
//!
//! Public API:
//! * [`Containerizer::detect`] probes cgroups once (logging one line with the mode chosen) and
//!   [`Containerizer::without_cgroups`] opts out; [`Containerizer::launch`] starts a
//!   [`LaunchSpec`] and returns a [`Container`].
//! * [`Container::wait`] yields an [`ExitReport`]; [`Container::killer`] gives a cloneable
//!   [`Killer`] whose `kill(grace)` is SIGTERM → grace → SIGKILL on the whole process group.
//!
//! What every container gets:
//! * its own session and process group (the leader's pid is its sid and pgid), so one signal
//!   reaches everything it starts and nothing reaches the agent's terminal;
//! * its sandbox directory (created if missing) as working directory, stdin from /dev/null,
//!   stdout/stderr appended to `<sandbox>/stdout` and `<sandbox>/stderr`;
//! * a clean environment: only `PATH` ([`DEFAULT_PATH`]), `HOME` (the sandbox, absolute) and
//!   `LaunchSpec::env`, which may override those two. Nothing leaks from the agent's own
//!   environment (credentials, `RUST_LOG`, ...);
//! * its own cgroup with the limits of `LaunchSpec::limits` and the containerizer's pids cap,
//!   entered before exec; removed
//!   once it ends. Where the cgroups live and why: `cgroups.rs`. How the process joins
//!   its cgroup without a race: `process.rs`.
//!
//! * when the agent is root and has task users, its user's ids from just before exec (for a
//!   supervised command task: the task's, by `setpriv`, its supervisor staying root), and its
//!   sandbox chowned to that user, 0700 (`user.rs`): one uid per framework
//!   ([`LaunchSpec::owner`], `framework_users.rs`), or one for all in the single-user mode;
//! * a clear [`ContainerError::DiskFull`] instead of an I/O error when the work dir's disk has
//!   no room for a new sandbox (checked before creating it, and for ENOSPC while creating it).
//!
//!
//! Surviving the agent: a container never dies with the agent. [`LaunchSpec::exit_status_file`]
//! runs it under a tiny shell supervisor that records its exit status, and
//! [`Containerizer::recover`] re-adopts a (pid, start time) left by a previous agent process,
//! with its cgroup, as an ordinary [`Container`] (see `recover.rs`). Nor does it outlive an
//! agent that never comes back by more than the recovery timeout (`liveness.rs`).
//!
//! Files: `cgroups.rs` (everything under /sys/fs/cgroup), `process.rs` (spawn, reap, kill),
//! `recover.rs` (exit-status supervisor, process identity, waiting for a non-child),
//! `liveness.rs` (the agent's heartbeat, and ending command tasks it left for good),
//! `report.rs` (the exit report and its wording), `user.rs` (the task user). This file
//! validates specs and wires them.

mod cgroups;
pub mod framework_users;
mod liveness;
pub mod oci;
mod process;
mod recover;
mod report;
mod sandbox_files;
#[cfg(test)]
mod tests;
mod user;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

pub use cgroups::CgroupMode;
use cgroups::{Backend, CgroupLimits};
pub use framework_users::UidRange;
pub use liveness::{beat, OrphanWatch};
pub use oci::{ImageRuntime, SANDBOX_IN_CONTAINER};
pub use process::{Container, Killer};
pub use recover::{is_same_process, process_start_time};
pub use report::ExitReport;
pub use user::{TaskUser, TaskUsers};

/// How many processes (threads included) one container may have by default: room for any
/// task a Pi runs, not for a fork bomb.
pub const DEFAULT_PIDS_MAX: u64 = 512;

/// `PATH` every container starts with.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resource limits of one container. 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// CPU time as a number of cores (hard quota per 100 ms, plus proportional weight).
    pub cpus: f64,
    /// Memory in MiB; a hard limit without swap, enforced by the kernel OOM killer.
    pub mem_mib: u64,
}

/// Everything needed to start one executor.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Unique per running container; used as the cgroup directory name, so it must be a
    /// single path component: non-empty, at most 200 bytes, no `/`, no NUL, not `.`/`..`.
    pub container_id: String,
    /// Whose container this is (the framework's id): with per-framework task users, containers
    /// of different owners run as different users and cannot reach each other.
    pub owner: String,
    /// Created if missing; working directory, `HOME`, and home of the stdout/stderr files.
    pub sandbox: PathBuf,
    /// The executable; without a `/` it is looked up in the container's `PATH`.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the clean environment (see the module header); may override PATH and HOME.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Run under the exit-status supervisor (`/bin/sh` waiting for the program and writing
    /// its status here), so the status survives the agent: for command tasks. The file's
    /// directory must exist.
    pub exit_status_file: Option<PathBuf>,
    /// Run `program args` inside this container image, through the OCI runtime (`oci.rs`);
    /// needs the exit-status supervisor (a command task).
    pub image: Option<String>,
    /// Fetched into the sandbox before the program starts (`fetcher/`).
    pub artifacts: Vec<bramble_proto::task::Artifact>,
}

/// A container left running by a previous agent process, as checkpointed at its launch.
#[derive(Debug, Clone)]
pub struct RecoverSpec {
    pub container_id: String,
    pub pid: u32,
    /// `Container::start_time` at launch.
    pub start_time: u64,
    /// `Container::cgroup_dirs` at launch.
    pub cgroup_dirs: Vec<PathBuf>,
    pub memory_limit_mib: u64,
    pub exit_status_file: Option<PathBuf>,
}

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id}: invalid launch spec: {reason}")]
    InvalidSpec { id: String, reason: String },
    #[error("container {id}: {action} {}: {source}", .path.display())]
    Io {
        id: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: setting up its cgroup: {action} {}: {source}", .path.display())]
    Cgroup {
        id: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parent cgroup: {action} {}: {source}", .path.display())]
    ParentCgroup {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {id}: disk full on {}, {usage}", .path.display())]
    DiskFull {
        id: String,
        path: PathBuf,
        usage: crate::gc::DiskUsage,
    },
    #[error("container {id}: {source}")]
    TaskUser {
        id: String,
        #[source]
        source: framework_users::AllocError,
    },
    /// The task's image cannot run here: none, not on this agent, another architecture.
    #[error("container {id}: {reason}")]
    Image { id: String, reason: String },
    /// An artifact could not be fetched into the sandbox: says which, and why.
    #[error("{source}")]
    Fetch {
        id: String,
        #[source]
        source: crate::fetcher::FetchError,
    },
    #[error("container {id}: starting {}: {source}", .program.display())]
    Spawn {
        id: String,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Launches containers; one per agent, shared by reference.
#[derive(Debug)]
pub struct Containerizer {
    backend: Backend,
    /// Set only when the agent is root (see `user.rs`).
    task_user: Option<user::Switch>,
    /// Every container's `pids.max` (0: unlimited).
    pids_max: u64,
    /// What supervised (command task) containers watch to end once the agent is gone.
    orphan: Option<OrphanWatch>,
    /// The OCI runtime and image store, when the agent has one (`oci.rs`).
    images: Option<ImageRuntime>,
    /// Fetches tasks' artifacts into their sandboxes; `None`: a launch with artifacts fails.
    fetcher: Option<Arc<crate::fetcher::Fetcher>>,
}

impl Containerizer {
    /// Probes the machine's cgroups once and creates the parent cgroup `parent_name` (e.g.
    /// "bramble" or "bramble-<agent-id>"; same rules as a container id). Logs one line saying
    /// which mode it uses; when cgroups are unusable it says why and runs without limits.
    pub fn detect(parent_name: &str) -> Containerizer {
        let backend = match validate_id(parent_name) {
            Ok(()) => Backend::detect(parent_name),
            Err(e) => Backend::None {
                reason: format!("parent cgroup name: {e}"),
            },
        };
        let own = own_cgroup_path(&backend);
        match backend.mode() {
            CgroupMode::None => {
                warn!(mode = ?backend.mode(), agent_cgroup = %own, "containerizer: {}", backend.summary())
            }
            _ => {
                info!(mode = ?backend.mode(), agent_cgroup = %own, "containerizer: {}", backend.summary())
            }
        }
        Containerizer {
            backend,
            task_user: None,
            pids_max: DEFAULT_PIDS_MAX,
            orphan: None,
            images: None,
            fetcher: None,
        }
    }

    /// A containerizer that never touches cgroups (tests, or an operator's opt-out).
    pub fn without_cgroups() -> Containerizer {
        Containerizer {
            backend: Backend::None {
                reason: "disabled by configuration".into(),
            },
            task_user: None,
            pids_max: DEFAULT_PIDS_MAX,
            orphan: None,
            images: None,
            fetcher: None,
        }
    }

    /// Makes supervised containers (command tasks) end once the agent's heartbeat has stood
    /// still for the watch's timeout (see `liveness.rs`); the agent runs [`beat`] meanwhile.
    pub fn with_orphan_watch(mut self, watch: OrphanWatch) -> Containerizer {
        self.orphan = Some(watch);
        self
    }

    /// Caps every container at `pids_max` processes and threads (0: unlimited).
    pub fn with_pids_max(mut self, pids_max: u64) -> Containerizer {
        self.pids_max = pids_max;
        self
    }

    /// Runs tasks that name an image through `runtime` (see `oci.rs`).
    pub fn with_images(mut self, runtime: Option<ImageRuntime>) -> Containerizer {
        self.images = runtime;
        self
    }

    /// Fetches launches' artifacts through `fetcher` (see `fetcher/`).
    pub fn with_fetcher(mut self, fetcher: Arc<crate::fetcher::Fetcher>) -> Containerizer {
        self.fetcher = Some(fetcher);
        self
    }

    pub fn mode(&self) -> CgroupMode {
        self.backend.mode()
    }

    /// One line describing the cgroup setup (what `detect` logged).
    pub fn cgroup_summary(&self) -> String {
        self.backend.summary()
    }

    /// Removes the parent cgroup(s) `detect` created. Only succeeds when no container of this
    /// containerizer exists any more; for an agent leaving the machine for good, and tests.
    pub fn remove_parent_cgroups(&self) -> Result<(), ContainerError> {
        self.backend
            .remove_parent()
            .map_err(|e| ContainerError::ParentCgroup {
                action: e.action,
                path: e.path,
                source: e.source,
            })
    }

    /// Starts an executor. Returns once the process runs (or failed to exec); everything
    /// made for it (cgroup) is undone on failure. Needs a tokio runtime.
    /// Fetches `artifacts` into `sandbox` and hands them to the task's `user`.
    async fn fetch(
        &self,
        id: &str,
        sandbox: &Path,
        artifacts: &[bramble_proto::task::Artifact],
        user: Option<&TaskUser>,
    ) -> Result<(), ContainerError> {
        let fail = |source| ContainerError::Fetch {
            id: id.to_string(),
            source,
        };
        let Some(fetcher) = &self.fetcher else {
            return Err(fail(crate::fetcher::FetchError {
                uri: artifacts.first().map(|a| a.uri.clone()).unwrap_or_default(),
                cause: "this agent fetches no artifacts".into(),
            }));
        };
        let owner = user.map(|u| crate::fetcher::Owner {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        });
        fetcher
            .fetch_all(sandbox, artifacts, owner)
            .await
            .map_err(fail)
    }

    pub async fn launch(&self, spec: LaunchSpec) -> Result<Container, ContainerError> {
        let id = spec.container_id.as_str();
        validate_id(id).map_err(|reason| ContainerError::InvalidId {
            id: id.to_string(),
            reason,
        })?;
        validate_spec(&spec).map_err(|reason| ContainerError::InvalidSpec {
            id: id.to_string(),
            reason,
        })?;

        let io_err = |action: &'static str, path: &Path| {
            let (id, path) = (id.to_string(), path.to_path_buf());
            move |source| ContainerError::Io {
                id,
                action,
                path,
                source,
            }
        };
        let disk_full = |e: ContainerError| disk_full_or(e, id, &spec.sandbox);
        // Before anything is made for it: a framework with no uid left starts nothing.
        let user =
            match &self.task_user {
                Some(switch) => Some(switch.user_for(&spec.owner).map_err(|source| {
                    ContainerError::TaskUser {
                        id: id.to_string(),
                        source,
                    }
                })?),
                None => None,
            };
        check_room(id, &spec.sandbox)?;
        create_sandbox(&spec.sandbox)
            .await
            .map_err(io_err("creating sandbox", &spec.sandbox))
            .map_err(disk_full)?;
        // Absolute, so HOME and the working directory mean the same thing to the executor.
        let sandbox = tokio::fs::canonicalize(&spec.sandbox)
            .await
            .map_err(io_err("resolving sandbox", &spec.sandbox))?;
        if !spec.artifacts.is_empty() {
            self.fetch(id, &sandbox, &spec.artifacts, user.as_ref())
                .await?;
        }
        if let Some(user) = &user {
            user::prepare_sandbox(&sandbox, user)
                .map_err(io_err("handing to the task user", &sandbox))
                .map_err(disk_full)?;
        }

        let mut env = environment(&sandbox, &spec.env);
        let (mut program, mut args) = (spec.program.clone(), spec.args.clone());
        let mut hide_mount = None;
        if let Some(image) = &spec.image {
            let runtime = self.image_runtime(id, &spec)?;
            let ids = self
                .task_user
                .as_ref()
                .zip(user.as_ref())
                .map(|(switch, user)| user::Ids::of(user, switch));
            let task = oci::ImageTask {
                id,
                image,
                sandbox: &sandbox,
                program: &spec.program,
                args: &spec.args,
                env: &env,
                user: ids.as_ref(),
            };
            (program, args) = runtime.prepare(&task).map_err(disk_full)?;
            // The runtime itself gets the agent's plain environment, nothing of the task's.
            env = environment(&sandbox, &[]);
            hide_mount = runtime.hidden_mount();
        }
        if let Some(file) = &spec.exit_status_file {
            // A status left by an earlier run under the same name must not be read as ours.
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ContainerError::Io {
                        id: id.to_string(),
                        action: "removing a stale exit status",
                        path: file.clone(),
                        source: e,
                    })
                }
                _ => {}
            }
            // Under the supervisor a missing program would only show as the shell's exit 127:
            // keep the exact spawn error instead.
            check_program(&program, &env, &sandbox).map_err(|source| ContainerError::Spawn {
                id: id.to_string(),
                program: program.clone(),
                source,
            })?;
        }
        let limits = CgroupLimits {
            cpus: spec.limits.cpus,
            mem_mib: spec.limits.mem_mib,
            pids_max: self.pids_max,
        };
        let cgroup = self
            .backend
            .create(id, &limits)
            .map_err(|e| ContainerError::Cgroup {
                id: id.to_string(),
                action: e.action,
                path: e.path,
                source: e.source,
            })?;
        let prepared = process::Prepared {
            id,
            sandbox: &sandbox,
            program: &program,
            args: &args,
            env,
            memory_limit_mib: if cgroup.is_some() {
                spec.limits.mem_mib
            } else {
                0
            },
            // In an image the task user is the container's (its OCI config); the runtime
            // stays root.
            user: match spec.image {
                Some(_) => None,
                None => self
                    .task_user
                    .as_ref()
                    .zip(user.as_ref())
                    .map(|(switch, user)| user::Ids::of(user, switch)),
            },
            exit_status_file: spec.exit_status_file.clone(),
            orphan: self.orphan.clone(),
            hide_mount,
        };
        process::start(prepared, cgroup).await.map_err(disk_full)
    }

    /// The runtime for an image launch, or why there is none: no runtime configured, no
    /// cgroups (the container's processes are found and killed through them), no supervisor
    /// (its exit status would be lost), or not root (crun needs it without a user namespace).
    fn image_runtime(&self, id: &str, spec: &LaunchSpec) -> Result<&ImageRuntime, ContainerError> {
        let refuse = |reason: &str| ContainerError::Image {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        let runtime = self.images.as_ref().ok_or_else(|| {
            refuse("this agent has no container runtime ([containers] runtime in its config)")
        })?;
        if self.backend.mode() == CgroupMode::None {
            return Err(refuse(&format!(
                "container images need cgroups, and this agent has none: {}",
                self.backend.summary()
            )));
        }
        if spec.exit_status_file.is_none() {
            return Err(refuse(
                "a container image is for command tasks only, not custom executors",
            ));
        }
        if !nix::unistd::Uid::effective().is_root() {
            return Err(refuse("container images need the agent to run as root"));
        }
        Ok(runtime)
    }

    /// Re-adopts a container a previous agent process launched. Never fails: a process that
    /// is gone (or whose pid now belongs to another process) yields a container that has
    /// already ended, reporting the status its supervisor recorded, if any. Its cgroup is
    /// taken over as found (whatever mode this containerizer detected) and removed at its end.
    pub fn recover(&self, spec: RecoverSpec) -> Container {
        let cgroup = cgroups::ContainerCgroup::existing(&spec.cgroup_dirs, spec.memory_limit_mib);
        process::adopt_existing(
            &spec.container_id,
            spec.pid,
            spec.start_time,
            cgroup,
            spec.memory_limit_mib,
            spec.exit_status_file,
        )
    }
}

/// Below this much free space a new sandbox is refused: its logs would have nowhere to go.
pub const MIN_FREE_FOR_LAUNCH: u64 = 1024 * 1024;

/// Refuses a launch when the filesystem the sandbox would live on is (nearly) full.
fn check_room(id: &str, sandbox: &Path) -> Result<(), ContainerError> {
    // The sandbox does not exist yet: measure the nearest directory that does.
    let probe = sandbox.ancestors().find(|p| p.exists()).unwrap_or(sandbox);
    match crate::gc::DiskUsage::of(probe) {
        Ok(usage) if usage.available < MIN_FREE_FOR_LAUNCH => Err(ContainerError::DiskFull {
            id: id.to_string(),
            path: probe.to_path_buf(),
            usage,
        }),
        // Unmeasurable: let the launch itself find out.
        Ok(_) | Err(_) => Ok(()),
    }
}

/// Turns an error caused by ENOSPC into [`ContainerError::DiskFull`], measuring the disk.
fn disk_full_or(e: ContainerError, id: &str, sandbox: &Path) -> ContainerError {
    let enospc = match &e {
        ContainerError::Io { source, .. } | ContainerError::Spawn { source, .. } => {
            source.raw_os_error() == Some(nix::libc::ENOSPC)
        }
        _ => false,
    };
    let probe = sandbox.ancestors().find(|p| p.exists()).unwrap_or(sandbox);
    match crate::gc::DiskUsage::of(probe) {
        Ok(usage) if enospc => ContainerError::DiskFull {
            id: id.to_string(),
            path: probe.to_path_buf(),
            usage,
        },
        _ => e,
    }
}

/// Creates the sandbox directory, trying once more if the sandbox gc removed an empty parent
/// between the two steps of `create_dir_all`.
async fn create_sandbox(sandbox: &Path) -> io::Result<()> {
    match tokio::fs::create_dir_all(sandbox).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => tokio::fs::create_dir_all(sandbox).await,
        other => other,
    }
}

/// The container's whole environment: defaults first, then the spec's (later entries win).
fn environment(sandbox: &Path, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), sandbox.to_string_lossy().into_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// What `execvp` would find for `program` in the container's `PATH` (relative names with a
/// `/` resolve against the sandbox): an error when nothing executable is there.
fn check_program(program: &Path, env: &[(String, String)], sandbox: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let found = if program.as_os_str().to_string_lossy().contains('/') {
        executable(&sandbox.join(program))
    } else {
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        path.split(':')
            .filter(|d| !d.is_empty())
            .any(|d| executable(&Path::new(d).join(program)))
    };
    if found {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(nix::libc::ENOENT))
    }
}

/// A container id or parent name must be one safe path component.
fn validate_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("empty")
    } else if id.len() > 200 {
        Err("longer than 200 bytes")
    } else if id == "." || id == ".." || id.contains("..") {
        Err("contains \"..\"")
    } else if id.contains('/') {
        Err("contains '/'")
    } else if id.chars().any(|c| c.is_control()) {
        Err("contains a control character")
    } else {
        Ok(())
    }
}

fn validate_spec(spec: &LaunchSpec) -> Result<(), String> {
    let Limits { cpus, .. } = spec.limits;
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(format!(
            "cpus must be a finite number >= 0 (0 = unlimited), got {cpus}"
        ));
    }
    if spec.program.as_os_str().is_empty() {
        return Err("program is empty".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!(
                "environment variable name {k:?} is empty or contains '=' or NUL"
            ));
        }
        if v.contains('\0') {
            return Err(format!("environment variable {k} contains NUL"));
        }
    }
    if spec.args.iter().any(|a| a.contains('\0')) {
        return Err("an argument contains NUL".into());
    }
    Ok(())
}

/// The agent's own cgroup, for the startup log line (where limits would nest, what to check).
fn own_cgroup_path(backend: &Backend) -> String {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return "unknown".into();
    };
    let entries = cgroups::parse_proc_cgroup(&text);
    let controller = match backend.mode() {
        CgroupMode::V1 => Some("memory"),
        CgroupMode::V2 | CgroupMode::None => None,
    };
    cgroups::cgroup_path_of(&entries, controller)
        .or_else(|| cgroups::cgroup_path_of(&entries, None))
        .unwrap_or_else(|| "unknown".into())
}
