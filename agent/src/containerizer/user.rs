//! Running tasks as unprivileged users: one per framework (`task_uids` in the agent's config,
//! allocated in `framework_users.rs`), or one for all (`task_user`, the single-user mode).
//!
//! The agent runs as root on a Pi (it needs cgroups); its tasks should not. With task users
//! set, and only when the agent is root, every container:
//! * gets its sandbox directory (0700) and its `stdout`/`stderr` chowned to its user, so the
//!   task can write its own files but nothing else of the agent's (the meta dir is root's,
//!   0700) and, with per-framework users, nothing of another framework's;
//! * drops privileges in the forked child *after* setsid and joining its cgroup (which need
//!   root) and *before* exec: `setgroups(user's groups)`, `setgid`, `setuid`, in that order
//!   (after setuid the others are no longer allowed). All three are plain syscalls on data
//!   resolved before the fork, so they are safe in the child of a multi-threaded process.
//!
//! Command tasks are the exception: their exit-status supervisor stays root and the task alone
//! is switched, by `setpriv` (util-linux), so the status is written where the task cannot
//! (see `recover.rs`). The agent finds `setpriv` at startup and refuses to start without it.
//!
//! A named user is resolved once, when the config is loaded ([`TaskUser::resolve`]): an
//! unknown name is a config error, not a failure of every launch. An agent that is not root
//! cannot switch users; it says so once at startup and runs tasks as itself (tests, the demo).
//! At startup the agent also checks that the users can reach the work dir (every directory on
//! the way must be searchable by them) and lets them connect to the executor socket.

use super::framework_users::{AllocError, FrameworkUsers, UidRange};
use super::Containerizer;
use crate::paths::WorkDir;
use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// A user tasks run as, resolved from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<Gid>,
}

impl TaskUser {
    /// Looks `name` up in the user database (and its groups).
    pub fn resolve(name: &str) -> Result<TaskUser, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("looking up user {name:?}: {e}"))?
            .ok_or_else(|| format!("no user {name:?} on this machine (see /etc/passwd)"))?;
        let cname = CString::new(name).map_err(|_| format!("user name {name:?} contains NUL"))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("looking up the groups of user {name:?}: {e}"))?;
        Ok(TaskUser {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
            groups,
        })
    }

    /// Whether directory metadata `meta` lets this user search (enter) it.
    fn can_search(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid.as_raw() {
            mode & 0o100 != 0
        } else if self.groups.iter().any(|g| g.as_raw() == meta.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// Checks that every directory from `/` down to `dir` is searchable by this user, so its
    /// tasks can reach their sandboxes by absolute path (`HOME`, `BRAMBLE_SANDBOX`).
    pub fn check_can_reach(&self, dir: &Path) -> Result<(), String> {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        for d in dir.ancestors() {
            let meta = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
            if !self.can_search(&meta) {
                return Err(format!(
                    "task_user {:?} cannot reach the work dir {}: {} is mode {:04o}, owner uid {} \
                     gid {}; let others search it (chmod o+x) or choose another work_dir",
                    self.name,
                    dir.display(),
                    d.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
        Ok(())
    }
}

/// Who tasks run as when the agent is root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskUsers {
    /// Every task as this one user (`task_user` in the config): the single-user mode. Tasks of
    /// different frameworks can then signal each other and read each other's files.
    One(TaskUser),
    /// Each framework's tasks as their own uid from this range (`task_uids`), allocated and
    /// kept per framework (`framework_users.rs`).
    PerFramework(UidRange),
}

impl TaskUsers {
    /// Someone these users' rights stand for when checking the work dir: the one user, or a
    /// uid of the range (all of them are in no group but their own).
    fn representative(&self) -> TaskUser {
        match self {
            TaskUsers::One(user) => user.clone(),
            TaskUsers::PerFramework(range) => UidRange::user(range.first()),
        }
    }
}

impl Containerizer {
    /// Makes containers run as `users` (see the module header). A non-root agent keeps running
    /// tasks as itself and says so. `work_dir` must be reachable by the users; the executor
    /// socket is opened to them so custom executors can connect back (to the one user's group;
    /// with per-framework users to everyone, as each executor proves itself by its token).
    pub fn with_task_user(
        mut self,
        users: Option<TaskUsers>,
        work_dir: &Path,
        executor_socket: &Path,
    ) -> Result<Containerizer, String> {
        let Some(users) = users else {
            return Ok(self);
        };
        let me = Uid::effective();
        let reach = users.representative();
        if !me.is_root() {
            if me != reach.uid {
                warn!(task_user = %reach.name, agent_uid = %me, "task users are configured but the agent is not root: tasks run as the agent's own user");
            }
            return Ok(self);
        }
        reach.check_can_reach(work_dir)?;
        let setpriv = find_setpriv().ok_or_else(|| {
            format!(
                "task users ({}) need setpriv (util-linux) to run command tasks as them \
                 while their exit-status supervisor stays root; none in {}: install util-linux",
                reach.name,
                SETPRIV_PATHS.join(", ")
            )
        })?;
        let socket_mode = match &users {
            TaskUsers::One(user) => {
                nix::unistd::chown(executor_socket, None, Some(user.gid)).map_err(|e| {
                    format!(
                        "giving group {} the executor socket {}: {e}",
                        user.gid,
                        executor_socket.display()
                    )
                })?;
                0o660
            }
            TaskUsers::PerFramework(_) => 0o666,
        };
        std::fs::set_permissions(
            executor_socket,
            std::fs::Permissions::from_mode(socket_mode),
        )
        .map_err(|e| format!("{}: {e}", executor_socket.display()))?;
        // Tasks may pass through the sandboxes dir to their own sandbox, not list it.
        let work = WorkDir::new(work_dir);
        let sandboxes = work.sandboxes_dir();
        std::fs::create_dir_all(&sandboxes)
            .and_then(|()| {
                std::fs::set_permissions(&sandboxes, std::fs::Permissions::from_mode(0o711))
            })
            .map_err(|e| format!("{}: {e}", sandboxes.display()))?;
        let who = match users {
            TaskUsers::One(user) => {
                info!(task_user = %user.name, uid = %user.uid, gid = %user.gid, "tasks run as an unprivileged user (one for every framework)");
                Who::One(user)
            }
            TaskUsers::PerFramework(range) => {
                let users = FrameworkUsers::open(range, &work)?;
                info!(task_uids = %range, "each framework's tasks run as their own unprivileged uid");
                Who::PerFramework(users)
            }
        };
        self.task_user = Some(Switch { who, setpriv });
        Ok(self)
    }
}

/// Where `setpriv` is looked for (absolute: the agent's own `PATH` is not the tasks').
const SETPRIV_PATHS: [&str; 4] = [
    "/usr/bin/setpriv",
    "/bin/setpriv",
    "/usr/sbin/setpriv",
    "/sbin/setpriv",
];

fn find_setpriv() -> Option<PathBuf> {
    SETPRIV_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// The task users as the containerizer holds them, and the `setpriv` that switches supervised
/// tasks to them.
#[derive(Debug)]
pub(super) struct Switch {
    who: Who,
    setpriv: PathBuf,
}

#[derive(Debug)]
enum Who {
    One(TaskUser),
    PerFramework(FrameworkUsers),
}

impl Switch {
    /// The user the containers of `owner` (a framework id) run as.
    pub(super) fn user_for(&self, owner: &str) -> Result<TaskUser, AllocError> {
        match &self.who {
            Who::One(user) => Ok(user.clone()),
            Who::PerFramework(users) => users.user_for(owner),
        }
    }
}

/// Hands the sandbox and its log files to the task user (before the process starts), and
/// closes the sandbox to everyone else (0700: root, the agent, still reads it).
pub(super) fn prepare_sandbox(sandbox: &Path, user: &TaskUser) -> io::Result<()> {
    // By fd, never by path: nothing in the sandbox is followed (see `sandbox_files.rs`).
    let chown = |file: &std::fs::File| {
        std::os::unix::fs::fchown(file, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
    };
    let dir = super::sandbox_files::open_dir(sandbox)?;
    chown(&dir)?;
    dir.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    for log in [crate::paths::STDOUT, crate::paths::STDERR] {
        let file = super::sandbox_files::open_log(dir.as_fd(), log, Some(user.uid.as_raw()))?;
        chown(&file)?;
    }
    Ok(())
}

/// The ids the forked child switches to, resolved before the fork; or, for a supervised
/// task, the ids `setpriv` switches the task to under its supervisor.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    setpriv: PathBuf,
    raw_groups: Vec<u32>,
}

impl Ids {
    pub(super) fn of(user: &TaskUser, switch: &Switch) -> Ids {
        Ids {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            setpriv: switch.setpriv.clone(),
            raw_groups: user.groups.iter().map(|g| g.as_raw()).collect(),
        }
    }

    /// The uid switched to.
    pub(super) fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The same switch made by `setpriv` in front of the program (see `recover.rs`).
    pub(super) fn as_setpriv(&self) -> super::recover::SwitchTo<'_> {
        super::recover::SwitchTo {
            setpriv: &self.setpriv,
            uid: self.uid.as_raw(),
            gid: self.gid.as_raw(),
            groups: &self.raw_groups,
        }
    }

    /// Runs in the forked child: raw syscalls on memory allocated before the fork only.
    pub(super) fn switch(&self) -> io::Result<()> {
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Someone who owns nothing here and is in none of its groups.
    fn stranger() -> TaskUser {
        TaskUser {
            name: "stranger".into(),
            uid: Uid::from_raw(54_321),
            gid: Gid::from_raw(54_321),
            groups: vec![Gid::from_raw(54_321)],
        }
    }

    /// A sandbox whose log is already a symlink out of it (left by an earlier run's task, a
    /// task of the same framework's uid, an artifact): handing the sandbox to the task user
    /// must neither chown nor create through it. It fails naming the link, and leaves the
    /// link, and the file it names, as they were.
    #[test]
    fn a_log_that_is_a_symlink_out_of_the_sandbox_is_refused_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP a_log_that_is_a_symlink_out_of_the_sandbox_is_refused_not_followed: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // `stdout` naming a file of root's; `stderr` naming one that does not exist yet.
        let shadow = tmp.path().join("shadow");
        std::fs::write(&shadow, "root's\n").unwrap();
        let missing = tmp.path().join("made-by-root");
        for (log, target) in [("stdout", &shadow), ("stderr", &missing)] {
            let sandbox = tmp.path().join(format!("sandbox-{log}"));
            std::fs::create_dir(&sandbox).unwrap();
            std::os::unix::fs::symlink(target, sandbox.join(log)).unwrap();
            let err = prepare_sandbox(&sandbox, &stranger()).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("{log} is a symbolic link")),
                "{err}"
            );
            assert!(std::fs::symlink_metadata(sandbox.join(log))
                .unwrap()
                .file_type()
                .is_symlink());
        }
        let meta = std::fs::metadata(&shadow).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "chowned through the link");
        assert_eq!(std::fs::read_to_string(&shadow).unwrap(), "root's\n");
        assert!(!missing.exists(), "created through the link");
    }

    /// A FIFO named `stdout` would park the root agent in `open` until a reader came: refused
    /// at once instead.
    #[test]
    fn a_log_that_is_a_fifo_is_refused_without_waiting() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP a_log_that_is_a_fifo_is_refused_without_waiting: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let sandbox = tmp.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        nix::unistd::mkfifo(
            &sandbox.join("stdout"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = sandbox.clone();
        std::thread::spawn(move || tx.send(prepare_sandbox(&dir, &stranger())));
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("prepare_sandbox still waiting on the FIFO after 10 s");
        let err = result.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(std::fs::symlink_metadata(sandbox.join("stdout"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn root_resolves_and_unknown_users_are_named() {
        let root = TaskUser::resolve("root").expect("root exists");
        assert!(root.uid.is_root());
        assert!(root.groups.contains(&root.gid));
        let err = TaskUser::resolve("no-such-user-bramble").unwrap_err();
        assert_eq!(
            err,
            "no user \"no-such-user-bramble\" on this machine (see /etc/passwd)"
        );
    }

    #[test]
    fn a_private_directory_on_the_way_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("private");
        let work = private.join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stranger = stranger();
        let err = stranger.check_can_reach(&work).unwrap_err();
        assert!(err.contains("is mode 0700"), "{err}");
        assert!(err.contains(&private.display().to_string()), "{err}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
        // tempdir's own parents (/tmp) are searchable by everyone.
        stranger.check_can_reach(&work).unwrap();
    }
}
