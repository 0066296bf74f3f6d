//! The layout of the agent's work dir: every path the agent makes under it, and the parsing of
//! those paths back into what they name. The one place that knows the layout, so that the code
//! that builds a sandbox path and the gc that must recognise one cannot drift apart.
//!
//! ```text
//! <work_dir>/
//!   agent.sock                          the executor socket (custom executors connect back)
//!   meta/ (0700)                        the agent's own state; tasks never read or write here
//!     agent_id                          the id the master gave this agent
//!     agent.json                        boot id, resources, attributes at the last start
//!     task_uids.json                    the uid each framework's tasks run as, with
//!                                       per-framework task users (`framework_users.rs`)
//!     alive                             touched while the agent runs (its mtime is the
//!                                       heartbeat command tasks' supervisors watch)
//!     runs/<container>.json             one checkpoint per executor run (`checkpoint.rs`)
//!     runs/<container>.exit             a command task's exit status, from its supervisor
//!     updates/updates-<gen>.log         the log of unacknowledged status updates and of
//!                                       the runs' task lists (`status_updates/`)
//!   images/<image>/{rootfs,image.json} container images, unless `[containers] images`
//!                                       puts them elsewhere (`images.rs`; the
//!                                       sandbox gc never touches them, `image_gc.rs` may)
//!   frameworks/<fw>/executors/<executor>/runs/<container>/
//!                                       a sandbox: the run's working directory, with its
//!                                       `stdout` and `stderr`
//! ```
//!
//! Pure but for [`WorkDir::sandboxes_on_disk`], which lists the sandboxes dir.

use bramble_proto::{check_id, ExecutorId, FrameworkId, InvalidId};
use std::path::{Component, Path, PathBuf};
use tracing::warn;

/// A sandbox's captured standard output, inside the sandbox.
pub const STDOUT: &str = "stdout";
/// A sandbox's captured standard error, inside the sandbox.
pub const STDERR: &str = "stderr";

const SOCKET: &str = "agent.sock";
const META: &str = "meta";
const AGENT_ID: &str = "agent_id";
const AGENT_INFO: &str = "agent.json";
const HEARTBEAT: &str = "alive";
const TASK_UIDS: &str = "task_uids.json";
const RUNS: &str = "runs";
const RUN_SUFFIX: &str = ".json";
const EXIT_SUFFIX: &str = ".exit";
const UPDATES: &str = "updates";
const FRAMEWORKS: &str = "frameworks";
const EXECUTORS: &str = "executors";

/// An agent's work dir (see the module header for the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDir {
    root: PathBuf,
}

/// What a sandbox path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub container: String,
}

impl WorkDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Unix socket custom executors connect back to.
    pub fn executor_socket(&self) -> PathBuf {
        self.root.join(SOCKET)
    }

    /// The agent's own state (checkpoints, id, updates).
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META)
    }

    /// The id the master gave this agent.
    pub fn agent_id_file(&self) -> PathBuf {
        self.meta_dir().join(AGENT_ID)
    }

    /// What the agent started with last time.
    pub fn agent_info_file(&self) -> PathBuf {
        self.meta_dir().join(AGENT_INFO)
    }

    /// Touched while the agent runs: the heartbeat command tasks' supervisors watch
    /// (`containerizer/liveness.rs`).
    pub fn heartbeat_file(&self) -> PathBuf {
        self.meta_dir().join(HEARTBEAT)
    }

    /// Which uid each framework's tasks run as (`containerizer/framework_users.rs`).
    pub fn task_uids_file(&self) -> PathBuf {
        self.meta_dir().join(TASK_UIDS)
    }

    /// The executor run checkpoints.
    pub fn runs_dir(&self) -> PathBuf {
        self.meta_dir().join(RUNS)
    }

    /// The checkpoint of executor run `container`.
    pub fn run_file(&self, container: &str) -> PathBuf {
        self.runs_dir().join(run_file_name(container))
    }

    /// Where the supervisor of command task run `container` records its exit status.
    pub fn exit_status_file(&self, container: &str) -> PathBuf {
        self.runs_dir().join(format!("{container}{EXIT_SUFFIX}"))
    }

    /// The unacknowledged status updates.
    /// The default image store (`images.rs`).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn updates_dir(&self) -> PathBuf {
        self.meta_dir().join(UPDATES)
    }

    /// Where every sandbox lives; nothing else is ever under it.
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join(FRAMEWORKS)
    }

    /// The sandbox of run `container` of `executor` of `framework`. The ids come from peers:
    /// one that could name another directory (`..`, a `/`, too long...) is refused here even if
    /// whoever let it in forgot to check (see `bramble_proto::ids`).
    pub fn sandbox(
        &self,
        framework: &FrameworkId,
        executor: &ExecutorId,
        container: &str,
    ) -> Result<PathBuf, InvalidId> {
        framework.check()?;
        executor.check()?;
        check_id("container", container)?;
        Ok(self
            .sandboxes_dir()
            .join(framework.as_str())
            .join(EXECUTORS)
            .join(executor.as_str())
            .join(RUNS)
            .join(container))
    }

    /// Every directory entry that has the shape of a sandbox (see
    /// [`parse_sandbox`](Self::parse_sandbox)), found by listing the sandboxes dir. Levels
    /// that cannot be listed are skipped with a warning; a missing dir holds none.
    pub fn sandboxes_on_disk(&self) -> Vec<PathBuf> {
        let children = |dir: &Path| -> Vec<PathBuf> {
            match std::fs::read_dir(dir) {
                Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    warn!(dir = %dir.display(), "listing sandboxes: {e}");
                    Vec::new()
                }
            }
        };
        let mut found = Vec::new();
        for fw in children(&self.sandboxes_dir()) {
            for executor in children(&fw.join(EXECUTORS)) {
                found.extend(
                    children(&executor.join(RUNS))
                        .into_iter()
                        .filter(|run| self.is_sandbox(run)),
                );
            }
        }
        found
    }

    /// What `path` names if it has exactly the shape of a sandbox under this work dir
    /// (`frameworks/<fw>/executors/<executor>/runs/<container>`), lexically: no `..`, no `.`,
    /// nothing more or less. Symlinks are not resolved; the gc checks those itself.
    pub fn parse_sandbox(&self, path: &Path) -> Option<SandboxPath> {
        let rest = path.strip_prefix(self.sandboxes_dir()).ok()?;
        let parts: Vec<&str> = rest
            .components()
            .map(|c| match c {
                Component::Normal(name) => name.to_str(),
                _ => None,
            })
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [fw, EXECUTORS, executor, RUNS, container] => Some(SandboxPath {
                framework_id: FrameworkId(fw.to_string()),
                executor_id: ExecutorId(executor.to_string()),
                container: container.to_string(),
            }),
            _ => None,
        }
    }

    /// Whether `path` has exactly the shape of a sandbox (see [`parse_sandbox`](Self::parse_sandbox)).
    pub fn is_sandbox(&self, path: &Path) -> bool {
        self.parse_sandbox(path).is_some()
    }
}

/// The file name of run `container`'s checkpoint in [`WorkDir::runs_dir`].
pub fn run_file_name(container: &str) -> String {
    format!("{container}{RUN_SUFFIX}")
}

/// Whether a file name in [`WorkDir::runs_dir`] is a run checkpoint.
pub fn is_run_file_name(name: &str) -> bool {
    name.ends_with(RUN_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_the_root() {
        let w = WorkDir::new("/w");
        assert_eq!(w.root(), Path::new("/w"));
        assert_eq!(w.executor_socket(), Path::new("/w/agent.sock"));
        assert_eq!(w.agent_id_file(), Path::new("/w/meta/agent_id"));
        assert_eq!(w.agent_info_file(), Path::new("/w/meta/agent.json"));
        assert_eq!(w.runs_dir(), Path::new("/w/meta/runs"));
        assert_eq!(w.run_file("k1"), Path::new("/w/meta/runs/k1.json"));
        assert_eq!(w.exit_status_file("k1"), Path::new("/w/meta/runs/k1.exit"));
        assert_eq!(w.updates_dir(), Path::new("/w/meta/updates"));
        assert!(is_run_file_name(&run_file_name("k1")));
        assert!(!is_run_file_name("k1.exit"));
    }

    #[test]
    fn a_built_sandbox_parses_back_to_its_ids() {
        let w = WorkDir::new("/w");
        let (fw, ex) = (FrameworkId("fw-1".into()), ExecutorId("ex-1".into()));
        let sandbox = w.sandbox(&fw, &ex, "k1").unwrap();
        assert_eq!(
            sandbox,
            Path::new("/w/frameworks/fw-1/executors/ex-1/runs/k1")
        );
        assert_eq!(
            w.parse_sandbox(&sandbox),
            Some(SandboxPath {
                framework_id: fw,
                executor_id: ex,
                container: "k1".into(),
            })
        );
    }

    #[test]
    fn ids_that_would_leave_the_work_dir_make_no_sandbox_path() {
        let w = WorkDir::new("/w");
        let ok = (FrameworkId("fw".into()), ExecutorId("ex".into()));
        let long = "x".repeat(10 * 1024);
        for bad in ["..", ".", "../../etc", "a/b", "nul\0", long.as_str(), ""] {
            assert!(
                w.sandbox(&FrameworkId(bad.into()), &ok.1, "k").is_err(),
                "{bad:?}"
            );
            assert!(
                w.sandbox(&ok.0, &ExecutorId(bad.into()), "k").is_err(),
                "{bad:?}"
            );
            assert!(w.sandbox(&ok.0, &ok.1, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_exact_sandbox_shape_parses() {
        let w = WorkDir::new("/w");
        for bad in [
            "/w/frameworks/f/executors/e/runs",
            "/w/frameworks/f/executors/e/runs/k/extra",
            "/w/frameworks/f/execs/e/runs/k",
            "/w/frameworks/f/executors/e/other/k",
            "/w/frameworks/f/executors/../runs/k",
            "/w/frameworks/f/executors/e/runs/..",
            "/w/meta/runs/k",
            "/elsewhere/frameworks/f/executors/e/runs/k",
            "frameworks/f/executors/e/runs/k",
        ] {
            assert!(!w.is_sandbox(Path::new(bad)), "{bad}");
        }
        assert!(w.is_sandbox(Path::new("/w/frameworks/f/executors/e/runs/k")));
    }

    /// Moved from the gc's tests: the gc refuses to remove anything else.
    #[test]
    fn only_sandbox_shaped_paths_are_sandboxes() {
        let w = WorkDir::new("/w");
        assert!(w.is_sandbox(Path::new("/w/frameworks/f/executors/e/runs/k")));
        for bad in [
            "/w/frameworks/f/executors/e/runs",
            "/w/frameworks/f/executors/e/runs/k/x",
            "/w/frameworks/f/executors/e/runs/../../../meta",
            "/w/frameworks/f/other/e/runs/k",
            "/w/meta/updates",
            "/etc",
        ] {
            assert!(!w.is_sandbox(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn sandboxes_on_disk_lists_only_sandbox_shaped_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let w = WorkDir::new(tmp.path());
        assert!(w.sandboxes_on_disk().is_empty(), "no work dir yet");
        let (fw, ex) = (FrameworkId("f".into()), ExecutorId("e".into()));
        let (a, b) = (
            w.sandbox(&fw, &ex, "a").unwrap(),
            w.sandbox(&fw, &ex, "b").unwrap(),
        );
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(w.sandboxes_dir().join("f/junk/e/runs/c")).unwrap();
        std::fs::create_dir_all(w.runs_dir()).unwrap();
        let mut found = w.sandboxes_on_disk();
        found.sort();
        assert_eq!(found, vec![a, b]);
    }
}
