//! The executor process: spawning it into its own session and cgroup, reaping it, killing it.
//!
//! Shape: `start` spawns the child and hands it to a reaper task that owns it for life. The
//! reaper waits for the leader, kills what is left of the process group and the cgroup, reads
//! the OOM counter, removes the cgroup and only then publishes the `ExitReport` on a watch
//! channel. So:
//! * `Container::wait` just watches that channel: cancel-safe, callable from many tasks, and
//!   when it returns the cgroup is already gone;
//! * dropping a `Container` neither kills the executor (it may outlive us on purpose) nor
//!   leaves a zombie (the reaper still reaps);
//! * a `Killer` needs no access to the child: it signals the process group and watches the
//!   same channel to learn when the leader is gone.
//!
//! Entering the cgroup without a race and without file I/O in the forked child: the parent
//! opens each `cgroup.procs` for writing before the fork; in `pre_exec` the child calls
//! `setsid()` and then `write(fd, "0")` on each (writing 0 moves the writer itself, in v1 and
//! v2). Both are raw, async-signal-safe syscalls: no allocation, no locks, no path lookup, so
//! they are safe in a child forked from the multi-threaded runtime. The process is therefore
//! limited before `exec`, i.e. before any user code runs. The fds are close-on-exec, so the
//! executor never sees them, and a failure becomes an ordinary spawn error (std reports
//! `pre_exec` errors back through its exec pipe). This avoids a `/bin/sh` wrapper and its
//! quoting, keeps argv[0] and exec errors (e.g. "No such file or directory") exact, and
//! works for programs that are not shell-friendly.
//!
//! Re-adoption after an agent restart: [`adopt_existing`] builds the same `Container` around a
//! process that is not our child. Its watcher waits on a pidfd instead of `waitpid` and takes
//! the exit status from the supervisor's status file (see `recover.rs`); everything after the
//! leader's end (group kill, OOM check, cgroup removal, report) is shared with `reap`.
//!
//! Known limit: signalling by pgid/pid (not pidfd) can in theory hit a recycled id in the
//! microseconds between the leader being reaped and the group being killed; the cgroup path
//! (`cgroup.kill` on v2) has no such window.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::cgroups::ContainerCgroup;
use super::recover;
use super::report::ExitReport;
use super::ContainerError;

/// How long the reaper keeps trying to empty and remove a cgroup after the leader exited.
const CGROUP_REMOVE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum State {
    Running,
    /// Leader reaped; the reaper is cleaning up.
    LeaderExited,
    Done(ExitReport),
}

/// State shared by the container handle, its killers and the reaper task.
#[derive(Debug)]
struct Shared {
    id: String,
    pgid: Pid,
    killed: AtomicBool,
    cgroup: Option<ContainerCgroup>,
    /// Where the exit-status supervisor records the status (command tasks).
    exit_status_file: Option<PathBuf>,
    memory_limit_mib: u64,
    state: watch::Sender<State>,
}

/// What `start` needs; validated by `Containerizer::launch`.
pub(crate) struct Prepared<'a> {
    pub id: &'a str,
    pub sandbox: &'a Path,
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: Vec<(String, String)>,
    pub memory_limit_mib: u64,
    /// Switch to this user before exec (see `user.rs`).
    pub user: Option<super::user::Ids>,
    /// Run under the exit-status supervisor, recording the status here.
    pub exit_status_file: Option<PathBuf>,
    /// What the supervisor watches to end the task once its agent is gone for good.
    pub orphan: Option<super::liveness::OrphanWatch>,
    /// Start in a private mount namespace without this mount (the OCI runtime on a hybrid
    /// cgroup host, `oci.rs`).
    pub hide_mount: Option<std::ffi::CString>,
}

/// A running (or finished) executor. See the module header for lifetime rules.
#[derive(Debug)]
pub struct Container {
    /// Pid of the leader; also its session id and process group id.
    pub pid: u32,
    /// The leader's start time (clock ticks since boot): with `pid`, its identity across an
    /// agent restart. 0 when it could not be read (it already exited).
    pub start_time: u64,
    shared: Arc<Shared>,
}

/// Kills one container; cheap to clone, usable while another task awaits `wait()`.
#[derive(Debug, Clone)]
pub struct Killer {
    shared: Arc<Shared>,
}

/// Spawns the executor. Must run inside a tokio runtime (the reaper is a task).
/// On failure the cgroup is removed again.
pub(crate) async fn start(
    p: Prepared<'_>,
    cgroup: Option<ContainerCgroup>,
) -> Result<Container, ContainerError> {
    match spawn_child(&p, cgroup.as_ref()) {
        Ok(child) => Ok(adopt(
            p.id,
            child,
            cgroup,
            p.memory_limit_mib,
            p.exit_status_file.clone(),
        )),
        Err(e) => {
            if let Some(cg) = cgroup {
                for (dir, err) in cg.destroy(Duration::from_secs(1)).await {
                    warn!(container = p.id, cgroup = %dir.display(), "removing cgroup after failed start: {err}");
                }
            }
            Err(e)
        }
    }
}

fn spawn_child(
    p: &Prepared<'_>,
    cgroup: Option<&ContainerCgroup>,
) -> Result<tokio::process::Child, ContainerError> {
    let io_err = |action: &'static str, path: PathBuf| {
        let id = p.id.to_string();
        move |source| ContainerError::Io {
            id,
            action,
            path,
            source,
        }
    };
    let stdout_path = p.sandbox.join(crate::paths::STDOUT);
    let stderr_path = p.sandbox.join(crate::paths::STDERR);
    // Root opening files a task may have named: by fd, following no symlink
    // (`sandbox_files.rs`).
    let sandbox = super::sandbox_files::open_dir(p.sandbox)
        .map_err(io_err("opening", p.sandbox.to_path_buf()))?;
    let owner = p.user.as_ref().map(super::user::Ids::uid);
    let open_log = |name| super::sandbox_files::open_log(sandbox.as_fd(), name, owner);
    let stdout = open_log(crate::paths::STDOUT).map_err(io_err("opening", stdout_path.clone()))?;
    let stderr = open_log(crate::paths::STDERR).map_err(io_err("opening", stderr_path.clone()))?;
    let procs: Vec<File> = match cgroup {
        Some(cg) => cg.open_procs().map_err(|e| ContainerError::Cgroup {
            id: p.id.to_string(),
            action: e.action,
            path: e.path,
            source: e.source,
        })?,
        None => Vec::new(),
    };
    let procs_fds: Vec<RawFd> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let hide_mount = p.hide_mount.clone();
    // A supervised task is switched by `setpriv` under its supervisor, which stays the
    // agent's user (see `recover.rs`); anything else switches itself before exec.
    let (program, args, user) = match &p.exit_status_file {
        Some(status_file) => {
            let how = recover::Supervision {
                status_file,
                orphan: p.orphan.as_ref(),
                user: p.user.as_ref().map(|ids| ids.as_setpriv()),
            };
            let (program, args) = recover::wrap(&how, p.program, p.args);
            (program, args, None)
        }
        None => (p.program.to_path_buf(), p.args.to_vec(), p.user.clone()),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(p.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    // SAFETY: the closure only makes async-signal-safe syscalls (setsid, write, and the
    // user switch's setgroups/setgid/setuid) on fds that stay open in the parent until spawn
    // returns and on memory moved in before the fork; it allocates nothing, takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            enter_container(&procs_fds)?;
            if let Some(mount) = &hide_mount {
                hide(mount)?;
            }
            // After joining the cgroup (root-only), before exec.
            user.as_ref().map_or(Ok(()), |ids| ids.switch())
        });
    }
    let child = cmd.spawn().map_err(|source| ContainerError::Spawn {
        id: p.id.to_string(),
        program: p.program.to_path_buf(),
        source,
    })?;
    drop(procs);
    Ok(child)
}

/// Runs in the forked child, before exec. Async-signal-safe syscalls only.
fn enter_container(procs_fds: &[RawFd]) -> io::Result<()> {
    nix::unistd::setsid()?;
    for &fd in procs_fds {
        // SAFETY: the parent keeps these files open across the fork (see spawn_child).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        nix::unistd::write(fd, b"0")?;
    }
    Ok(())
}

/// Runs in the forked child, before exec: a mount namespace of its own in which `mount` is
/// detached, changing nothing the host sees. Plain syscalls on memory made before the fork.
fn hide(mount: &std::ffi::CStr) -> io::Result<()> {
    use nix::mount::{mount as mount_fs, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount_fs(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    umount2(mount, MntFlags::MNT_DETACH)?;
    Ok(())
}

fn shared(
    id: &str,
    pid: u32,
    cgroup: Option<ContainerCgroup>,
    memory_limit_mib: u64,
    exit_status_file: Option<PathBuf>,
) -> Arc<Shared> {
    let (state, _) = watch::channel(State::Running);
    Arc::new(Shared {
        id: id.to_string(),
        pgid: Pid::from_raw(pid as i32),
        killed: AtomicBool::new(false),
        cgroup,
        exit_status_file,
        memory_limit_mib,
        state,
    })
}

fn adopt(
    id: &str,
    child: tokio::process::Child,
    cgroup: Option<ContainerCgroup>,
    memory_limit_mib: u64,
    exit_status_file: Option<PathBuf>,
) -> Container {
    // A spawned, not yet awaited child always has an id.
    let pid = child.id().unwrap_or_default();
    let start_time = recover::process_start_time(pid).unwrap_or_default();
    let shared = shared(id, pid, cgroup, memory_limit_mib, exit_status_file);
    tokio::spawn(reap(child, Arc::clone(&shared)));
    Container {
        pid,
        start_time,
        shared,
    }
}

/// A container around a process this agent did not start (it survived an agent restart).
/// If (pid, start_time) is no longer that process, the container is reported ended at once,
/// with the status its supervisor recorded if any.
pub(crate) fn adopt_existing(
    id: &str,
    pid: u32,
    start_time: u64,
    cgroup: Option<ContainerCgroup>,
    memory_limit_mib: u64,
    exit_status_file: Option<PathBuf>,
) -> Container {
    // Gone already: its pid (and so its group id) may belong to someone else by now.
    let alive = pid > 1 && recover::is_same_process(pid, start_time);
    let shared = shared(
        id,
        if alive { pid } else { 0 },
        cgroup,
        memory_limit_mib,
        exit_status_file,
    );
    let watched = Arc::clone(&shared);
    tokio::spawn(async move {
        if alive {
            recover::wait_gone(pid, start_time).await;
        }
        finish(watched, None, None, true).await;
    });
    Container {
        pid,
        start_time,
        shared,
    }
}

async fn reap(mut child: tokio::process::Child, shared: Arc<Shared>) {
    let status = child.wait().await;
    let (code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(e) => {
            warn!(container = %shared.id, "waiting for the executor failed: {e}");
            (None, None)
        }
    };
    finish(shared, code, signal, false).await;
}

/// After the leader's end: kill what is left, check for OOM, remove the cgroup, publish the
/// report. The supervisor's recorded status (if any) wins over the leader's own, which for a
/// supervised container is the shell's. `unobserved`: nobody could `waitpid` the leader.
async fn finish(shared: Arc<Shared>, code: Option<i32>, signal: Option<i32>, unobserved: bool) {
    shared.state.send_replace(State::LeaderExited);
    // The container ends with its leader: nothing it started may linger.
    signal_group(&shared, Signal::SIGKILL);
    let recorded = shared
        .exit_status_file
        .as_deref()
        .and_then(recover::read_exit_status);
    let (code, signal) = match recorded {
        Some(status) => status,
        // The supervisor died before recording (SIGKILL): the leader's own status says so.
        None => (code, signal),
    };
    let unobserved = unobserved && recorded.is_none();
    // A custom executor's limit may have been raised since its launch.
    let memory_limit_mib = shared
        .cgroup
        .as_ref()
        .map_or(shared.memory_limit_mib, |cg| cg.mem_mib());
    let mut memory_limit_exceeded = false;
    if let Some(cg) = &shared.cgroup {
        cg.kill_all();
        memory_limit_exceeded = cg.memory_limit_exceeded(signal);
        for (dir, err) in cg.destroy(CGROUP_REMOVE_DEADLINE).await {
            warn!(container = %shared.id, cgroup = %dir.display(), "cgroup left behind: {err}");
        }
    }
    let report = ExitReport {
        code,
        signal,
        memory_limit_exceeded,
        killed: shared.killed.load(Ordering::SeqCst),
        memory_limit_mib,
        unobserved,
    };
    debug!(container = %shared.id, "container ended: {}", report.describe());
    shared.state.send_replace(State::Done(report));
}

fn signal_group(shared: &Shared, sig: Signal) {
    // pgid 0 is "my own group" to the kernel, 1 is init's: a container that has no live
    // leader of its own (found dead on recovery) signals nobody.
    if shared.pgid.as_raw() <= 1 {
        return;
    }
    match killpg(shared.pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            warn!(container = %shared.id, "sending {sig} to process group {}: {e}", shared.pgid)
        }
    }
}

impl Container {
    /// The container id it was launched with.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Waits for the end of the container (leader exited, leftovers killed, cgroup removed).
    /// Cancel-safe; any number of tasks may wait at once.
    pub async fn wait(&self) -> ExitReport {
        let mut rx = self.shared.state.subscribe();
        loop {
            if let State::Done(report) = &*rx.borrow_and_update() {
                return report.clone();
            }
            // The sender lives in `self.shared`, so this only fails if the runtime is gone.
            if rx.changed().await.is_err() {
                return ExitReport {
                    code: None,
                    signal: None,
                    memory_limit_exceeded: false,
                    killed: false,
                    memory_limit_mib: 0,
                    unobserved: false,
                };
            }
        }
    }

    /// The report if the container has ended, without waiting.
    pub fn try_wait(&self) -> Option<ExitReport> {
        match &*self.shared.state.borrow() {
            State::Done(report) => Some(report.clone()),
            State::Running | State::LeaderExited => None,
        }
    }

    /// A handle that can kill this container from another task.
    pub fn killer(&self) -> Killer {
        Killer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Changes the container's cpu and memory limits (memory is only raised; see
    /// `ContainerCgroup::set_limits`). A no-op without cgroups.
    pub fn set_limits(&self, cpus: f64, mem_mib: u64) -> Result<(), ContainerError> {
        let Some(cg) = &self.shared.cgroup else {
            return Ok(());
        };
        cg.set_limits(cpus, mem_mib)
            .map_err(|e| ContainerError::Cgroup {
                id: self.shared.id.clone(),
                action: e.action,
                path: e.path,
                source: e.source,
            })
    }

    /// The container's cgroup directories (empty without cgroups); gone once `wait` returns.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        self.shared.cgroup.as_ref().map_or(&[], |cg| cg.dirs())
    }
}

impl Killer {
    /// SIGTERM to the process group; after `grace` without the leader exiting, SIGKILL to the
    /// group and to everything in the cgroup. Idempotent: a no-op once the leader has exited
    /// (the reaper then kills the rest). Returns when the leader is gone or SIGKILL is sent;
    /// await `Container::wait` for the report.
    pub async fn kill(&self, grace: Duration) {
        let mut rx = self.shared.state.subscribe();
        if !matches!(*rx.borrow_and_update(), State::Running) {
            return;
        }
        self.shared.killed.store(true, Ordering::SeqCst);
        signal_group(&self.shared, Signal::SIGTERM);
        let leader_gone = rx.wait_for(|s| !matches!(s, State::Running));
        if tokio::time::timeout(grace, leader_gone).await.is_ok() {
            return;
        }
        signal_group(&self.shared, Signal::SIGKILL);
        if let Some(cg) = &self.shared.cgroup {
            cg.kill_all();
        }
    }
}
