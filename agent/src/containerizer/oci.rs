//! Tasks in container images, through an existing OCI runtime: crun.
//!
//! Why crun: a Pi has little memory and an SD card, and the agent already owns what a
//! container engine would add (cgroups, supervision, recovery, logs). crun is one small C
//! binary (≈0.5 MB) with no daemon: nothing runs while no container task runs, and each
//! running container task costs one small monitor process. On this repository's CI machine
//! it starts a container in about 22 ms with a 3.4 MB peak RSS, against runc's 53 ms and
//! 10 MB (see `bench/containers.sh` and the commit that added this file).
//!
//! How a container task runs, so it keeps every guarantee of a command task:
//! * The agent writes an OCI bundle per task, `<sandbox>/.oci-bundle/config.json` (gone with
//!   the sandbox when gc removes it), whose root is the image's unpacked root filesystem,
//!   read-only and shared by every task of that image (`images.rs`), with a tmpfs on `/tmp`
//!   and the sandbox bind-mounted read-write at [`SANDBOX_IN_CONTAINER`] (Mesos's path) as
//!   working directory and `HOME`.
//! * `crun run` is the program of an ordinary supervised command container: it starts in the
//!   task's cgroup (joined before exec, as any container), and runs with
//!   `--cgroup-manager=disabled`, so the container's processes stay in that cgroup and its
//!   limits, OOM accounting and kill-everything apply unchanged on cgroup v1 and v2. crun runs
//!   in the foreground and exits with the container's status, which the exit-status
//!   supervisor records: exit codes, kills, OOMs and agent restarts (re-adopting the
//!   supervisor) work exactly as for a process. stdout and stderr are the sandbox files the
//!   supervisor already writes to.
//! * The container has its own pid, mount, ipc and uts namespaces and the host's network (as a
//!   Mesos container without a network isolator), crun's default capability set and
//!   `noNewPrivileges`. Under a task user the container's process runs as that user (the
//!   OCI `process.user`), crun itself stays root, like the supervisor.
//! * crun 1.8 refuses hybrid cgroup hosts whose v2 hierarchy has controllers (it cannot know
//!   we manage cgroups ourselves). There the runtime is started in a private mount namespace
//!   with `/sys/fs/cgroup/unified` unmounted (`process.rs`), which crun then never looks at.
//!
//! The bundle's crun state (`--root`) is in the bundle too, so a crun killed outright leaves
//! nothing outside the sandbox.

use super::user::Ids;
use super::ContainerError;
use crate::images::{Image, ImageStore};
use serde_json::{json, Value};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the sandbox appears inside a container (Mesos's `MESOS_SANDBOX`).
pub const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";
/// The bundle's directory inside the sandbox.
pub const BUNDLE_DIR: &str = ".oci-bundle";
/// The hierarchy crun refuses on a hybrid host.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The runtime the agent found at start, and its images.
#[derive(Debug, Clone)]
pub struct ImageRuntime {
    runtime: PathBuf,
    /// First line of `--version` (`crun version 1.8.1`).
    version: String,
    store: ImageStore,
    /// The v2 hierarchy to hide from the runtime on a hybrid host (see the module header).
    hide: Option<CString>,
}

impl ImageRuntime {
    /// Checks that `runtime` is a working crun and notes what this host needs. An operator
    /// who configured a runtime wants to hear at start that it cannot work.
    pub fn probe(runtime: &Path, images: &Path) -> Result<ImageRuntime, String> {
        let out = Command::new(runtime)
            .arg("--version")
            .output()
            .map_err(|e| format!("container runtime {}: {e}", runtime.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().next().unwrap_or_default().trim().to_string();
        if !out.status.success() || !version.starts_with("crun") {
            return Err(format!(
                "container runtime {}: expected crun (apt-get install crun), its --version says {version:?}",
                runtime.display()
            ));
        }
        Ok(ImageRuntime {
            runtime: runtime.to_path_buf(),
            version,
            store: ImageStore::new(images),
            hide: hybrid_unified_with_controllers()
                .then(|| CString::new(UNIFIED).ok())
                .flatten(),
        })
    }

    /// The runtime's name, the value of the agent's `containers` attribute.
    pub fn name(&self) -> String {
        self.runtime
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "crun".into())
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// What the runtime process must not see (see the module header).
    pub(super) fn hidden_mount(&self) -> Option<CString> {
        self.hide.clone()
    }

    /// Writes the task's bundle and returns the runtime's program and arguments for it.
    pub(super) fn prepare(
        &self,
        task: &ImageTask<'_>,
    ) -> Result<(PathBuf, Vec<String>), ContainerError> {
        let image_err = |reason: String| ContainerError::Image {
            id: task.id.to_string(),
            reason,
        };
        let image = self
            .store
            .resolve(task.image)
            .map_err(|e| image_err(e.to_string()))?;
        let host = crate::images::host_architecture();
        if image.config.architecture != host {
            return Err(image_err(format!(
                "image {} is built for {}, this agent runs {host}: load the {host} variant of it",
                image.config.name, image.config.architecture
            )));
        }
        self.store.mark_used(&image);
        let bundle = task.sandbox.join(BUNDLE_DIR);
        let io = |action: &'static str, path: &Path| {
            let (id, path) = (task.id.to_string(), path.to_path_buf());
            move |source| ContainerError::Io {
                id,
                action,
                path,
                source,
            }
        };
        // Root writing into the task's sandbox: by fd, following no symlink, in a directory
        // the agent made (`sandbox_files.rs`).
        let sandbox = super::sandbox_files::open_dir(task.sandbox)
            .map_err(io("opening the sandbox", task.sandbox))?;
        let bundle_dir = super::sandbox_files::make_own_dir(sandbox.as_fd(), BUNDLE_DIR)
            .map_err(io("creating the bundle", &bundle))?;
        let config = config(&image, task);
        let path = bundle.join("config.json");
        let text = serde_json::to_vec(&config).unwrap_or_default();
        super::sandbox_files::write_new(bundle_dir.as_fd(), "config.json", &text)
            .map_err(io("writing", &path))?;
        let args = vec![
            "--root".to_string(),
            bundle.join("state").to_string_lossy().into_owned(),
            "--cgroup-manager=disabled".to_string(),
            "run".to_string(),
            "--bundle".to_string(),
            bundle.to_string_lossy().into_owned(),
            task.id.to_string(),
        ];
        Ok((self.runtime.clone(), args))
    }
}

/// One task to run in an image.
pub(super) struct ImageTask<'a> {
    pub id: &'a str,
    pub image: &'a str,
    /// Absolute, on the host.
    pub sandbox: &'a Path,
    pub program: &'a Path,
    pub args: &'a [String],
    /// The task's environment as for a process (host paths of the sandbox are rewritten).
    pub env: &'a [(String, String)],
    pub user: Option<&'a Ids>,
}

/// The task's OCI runtime config.
fn config(image: &Image, task: &ImageTask<'_>) -> Value {
    let host_sandbox = task.sandbox.to_string_lossy();
    let mut env: Vec<(String, String)> = image
        .config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), super::DEFAULT_PATH.into()));
    }
    let mut set = |k: &str, v: String| {
        env.retain(|(existing, _)| existing != k);
        env.push((k.to_string(), v));
    };
    for (k, v) in task.env {
        // The image's PATH fits its files; the agent's default one is only for processes.
        if k == "PATH" && v == super::DEFAULT_PATH {
            continue;
        }
        let v = if v.as_str() == host_sandbox {
            SANDBOX_IN_CONTAINER.to_string()
        } else {
            v.clone()
        };
        set(k, v);
    }
    set("HOME", SANDBOX_IN_CONTAINER.into());
    set("MESOS_SANDBOX", SANDBOX_IN_CONTAINER.into());
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut argv = vec![task.program.to_string_lossy().into_owned()];
    argv.extend(task.args.iter().cloned());
    let (uid, gid, groups) = match task.user {
        Some(ids) => {
            let to = ids.as_setpriv();
            (to.uid, to.gid, to.groups.to_vec())
        }
        None => (0, 0, Vec::new()),
    };
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid, "additionalGids": groups },
            "args": argv,
            "env": env,
            "cwd": SANDBOX_IN_CONTAINER,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
                "inheritable": []
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": image.rootfs, "readonly": true },
        "hostname": "bramble",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] },
            { "destination": SANDBOX_IN_CONTAINER, "type": "bind", "source": task.sandbox,
              "options": ["rbind", "rw"] }
        ],
        "linux": {
            // The host's network, as a Mesos container without a network isolator.
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// A hybrid host (v1 controllers under a tmpfs `/sys/fs/cgroup`, v2 at `unified`) whose v2
/// hierarchy has controllers: what crun 1.8 refuses.
fn hybrid_unified_with_controllers() -> bool {
    let Ok(root) = nix::sys::statfs::statfs("/sys/fs/cgroup") else {
        return false;
    };
    if root.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return false;
    }
    let Ok(unified) = nix::sys::statfs::statfs(UNIFIED) else {
        return false;
    };
    unified.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC
        && std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
            .is_ok_and(|c| !c.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageConfig;

    fn image() -> Image {
        Image {
            config: ImageConfig {
                name: "busybox:latest".into(),
                architecture: "arm64".into(),
                env: vec!["PATH=/bin".into(), "LANG=C".into()],
                entrypoint: vec![],
                cmd: vec![],
                working_dir: String::new(),
                size_bytes: 0,
            },
            rootfs: PathBuf::from("/images/busybox/rootfs"),
        }
    }

    #[test]
    fn the_config_runs_the_command_in_the_sandbox_with_the_images_path() {
        let args = vec!["-c".to_string(), "echo hi".to_string()];
        let env = vec![
            ("PATH".to_string(), super::super::DEFAULT_PATH.to_string()),
            ("HOME".to_string(), "/w/sb".to_string()),
            ("BRAMBLE_SANDBOX".to_string(), "/w/sb".to_string()),
            ("FOO".to_string(), "bar".to_string()),
        ];
        let task = ImageTask {
            id: "c1",
            image: "busybox",
            sandbox: Path::new("/w/sb"),
            program: Path::new("/bin/sh"),
            args: &args,
            env: &env,
            user: None,
        };
        let c = config(&image(), &task);
        assert_eq!(c["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["process"]["cwd"], SANDBOX_IN_CONTAINER);
        let env: Vec<&str> = c["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"PATH=/bin"), "{env:?}");
        assert!(env.contains(&"LANG=C"), "{env:?}");
        assert!(env.contains(&"FOO=bar"), "{env:?}");
        assert!(env.contains(&"HOME=/mnt/mesos/sandbox"), "{env:?}");
        assert!(
            env.contains(&"BRAMBLE_SANDBOX=/mnt/mesos/sandbox"),
            "{env:?}"
        );
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["root"]["path"], "/images/busybox/rootfs");
        let sandbox_mount = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == SANDBOX_IN_CONTAINER)
            .unwrap();
        assert_eq!(sandbox_mount["source"], "/w/sb");
        let namespaces: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            !namespaces.contains(&"network"),
            "host network: {namespaces:?}"
        );
        assert_eq!(c["process"]["user"]["uid"], 0);
    }
}
