//! Behaviour tests: real processes, real signals and, where the machine allows (root with a
//! writable cgroupfs), real cgroups. Every wait has a deadline; cgroup tests print why they
//! skip when cgroups are unusable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn spec(id: &str, sandbox: &Path, program: &str, args: &[&str]) -> LaunchSpec {
    LaunchSpec {
        container_id: id.to_string(),
        owner: "fw".to_string(),
        sandbox: sandbox.to_path_buf(),
        program: PathBuf::from(program),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        limits: Limits::default(),
        exit_status_file: None,
        image: None,
        artifacts: Vec::new(),
    }
}

fn sh(id: &str, sandbox: &Path, script: &str) -> LaunchSpec {
    spec(id, sandbox, "/bin/sh", &["-c", script])
}

async fn wait_for_exit(c: &Container) -> ExitReport {
    tokio::time::timeout(DEADLINE, c.wait())
        .await
        .expect("container did not end within the deadline")
}

/// Polls for a condition the kernel or a child will make true; fails at the deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (state, pgrp, session) from /proc/<pid>/stat, or None once the pid is gone.
fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &text[text.rfind(')')? + 2..];
    let mut fields = after_comm.split(' ');
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, pgrp, session))
}

fn is_dead(pid: u32) -> bool {
    matches!(proc_stat(pid), None | Some(('Z', _, _)) | Some(('X', _, _)))
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.as_ref().display()))
}

#[tokio::test]
async fn stdout_and_stderr_are_appended_to_sandbox_files() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("not-yet-created");
    let cz = Containerizer::without_cgroups();
    for round in 1..=2 {
        let c = cz
            .launch(sh(
                &unique("out"),
                &sandbox,
                &format!("echo out{round}; echo err{round} >&2"),
            ))
            .await
            .unwrap();
        let report = wait_for_exit(&c).await;
        assert_eq!(report.code, Some(0), "{}", report.describe());
        assert!(report.success());
    }
    assert_eq!(read(sandbox.join("stdout")), "out1\nout2\n");
    assert_eq!(read(sandbox.join("stderr")), "err1\nerr2\n");
}

/// A sandbox whose `stdout` is already a symlink to a file outside it: the launch fails,
/// naming the link, and nothing of the task's reaches the file it names.
#[tokio::test]
async fn a_log_that_is_a_symlink_fails_the_launch_and_nothing_is_written_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "untouched\n").unwrap();
    let sandbox = dir.path().join("sandbox");
    std::fs::create_dir(&sandbox).unwrap();
    std::os::unix::fs::symlink(&outside, sandbox.join("stdout")).unwrap();
    let cz = Containerizer::without_cgroups();
    let launched = cz
        .launch(sh(
            &unique("link"),
            &sandbox,
            "echo written-through-the-link",
        ))
        .await;
    match launched {
        Err(e) => assert!(e.to_string().contains("stdout is a symbolic link"), "{e}"),
        Ok(c) => {
            wait_for_exit(&c).await;
            panic!("launched through a symlinked stdout: {:?}", read(&outside));
        }
    }
    assert_eq!(read(&outside), "untouched\n");
}

#[tokio::test]
async fn exit_code_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let c = Containerizer::without_cgroups()
        .launch(sh(&unique("exit"), dir.path(), "exit 3"))
        .await
        .unwrap();
    let report = wait_for_exit(&c).await;
    assert_eq!(
        (report.code, report.signal, report.killed),
        (Some(3), None, false)
    );
    assert_eq!(report.describe(), "exited with status 3");
    assert_eq!(c.try_wait(), Some(report), "the report stays available");
}

#[tokio::test]
async fn kill_sends_sigterm_first_and_it_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(
        Containerizer::without_cgroups()
            .launch(spec(&unique("term"), dir.path(), "sleep", &["600"]))
            .await
            .unwrap(),
    );
    let waiter = tokio::spawn({
        let c = Arc::clone(&c);
        async move { c.wait().await }
    });
    let grace = Duration::from_secs(20);
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, c.killer().kill(grace))
        .await
        .expect("kill returned");
    assert!(
        started.elapsed() < grace,
        "SIGTERM alone should have ended sleep"
    );
    let report = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("waiter ended")
        .expect("waiter task");
    assert_eq!(
        report.signal,
        Some(Signal::SIGTERM as i32),
        "{}",
        report.describe()
    );
    assert!(report.killed && !report.success());
    // Idempotent: killing a finished container is a no-op that returns at once.
    tokio::time::timeout(Duration::from_secs(5), c.killer().kill(grace))
        .await
        .expect("second kill returned");
    assert_eq!(wait_for_exit(&c).await, report);
}

#[tokio::test]
async fn sigterm_trapping_group_is_sigkilled_after_grace_with_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap '' TERM; sleep 600 & echo $! > gc.tmp; mv gc.tmp grandchild.pid; wait";
    let c = Containerizer::without_cgroups()
        .launch(sh(&unique("trap"), dir.path(), script))
        .await
        .unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    eventually("the grandchild pid file", || pid_file.exists()).await;
    let grandchild: u32 = read(&pid_file).trim().parse().expect("grandchild pid");
    assert_eq!(
        proc_stat(grandchild).map(|s| s.1),
        Some(c.pid),
        "grandchild in the container's group"
    );

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, c.killer().kill(grace))
        .await
        .expect("kill returned");
    assert!(
        started.elapsed() >= grace,
        "SIGKILL must wait for the grace period"
    );
    let report = wait_for_exit(&c).await;
    assert_eq!(
        report.signal,
        Some(Signal::SIGKILL as i32),
        "{}",
        report.describe()
    );
    assert!(report.killed);
    eventually("the grandchild to die", || is_dead(grandchild)).await;
}

#[tokio::test]
async fn container_leads_its_own_session_and_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let c = Containerizer::without_cgroups()
        .launch(spec(&unique("sid"), dir.path(), "sleep", &["600"]))
        .await
        .unwrap();
    let (_, pgrp, session) = proc_stat(c.pid).expect("container is running");
    let ours = std::process::id();
    c.killer().kill(Duration::from_secs(5)).await;
    wait_for_exit(&c).await;
    assert_eq!(
        (pgrp, session),
        (c.pid, c.pid),
        "pid {} (test process {ours})",
        c.pid
    );
}

#[tokio::test]
async fn environment_is_clean_apart_from_path_home_and_given_vars() {
    let leaked = std::env::vars().find(|(k, _)| k != "PATH" && k != "HOME");
    assert!(
        leaked.is_some(),
        "the test process should have some variable that could leak"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&unique("env"), dir.path(), "env", &[]);
    s.env = vec![("BRAMBLE_GREETING".into(), "hello world".into())];
    let c = Containerizer::without_cgroups().launch(s).await.unwrap();
    assert_eq!(wait_for_exit(&c).await.code, Some(0));
    let got: BTreeSet<String> = read(dir.path().join("stdout"))
        .lines()
        .map(str::to_string)
        .collect();
    let home = std::fs::canonicalize(dir.path()).unwrap();
    let want: BTreeSet<String> = [
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={}", home.display()),
        "BRAMBLE_GREETING=hello world".to_string(),
    ]
    .into();
    assert_eq!(got, want);
}

#[tokio::test]
async fn working_directory_is_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let c = Containerizer::without_cgroups()
        .launch(spec(&unique("cwd"), dir.path(), "pwd", &["-P"]))
        .await
        .unwrap();
    assert_eq!(wait_for_exit(&c).await.code, Some(0));
    assert_eq!(
        read(dir.path().join("stdout")).trim(),
        std::fs::canonicalize(dir.path()).unwrap().to_str().unwrap()
    );
}

#[tokio::test]
async fn unsafe_ids_and_specs_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cz = Containerizer::without_cgroups();
    for id in ["", ".", "..", "a/b", "../escape", "x\ny"] {
        let err = cz.launch(sh(id, dir.path(), "true")).await.expect_err(id);
        assert!(
            matches!(err, ContainerError::InvalidId { .. }),
            "{id:?}: {err}"
        );
    }
    let mut s = sh("ok", dir.path(), "true");
    s.limits.cpus = f64::NAN;
    assert!(matches!(
        cz.launch(s).await,
        Err(ContainerError::InvalidSpec { .. })
    ));
    let mut s = sh("ok", dir.path(), "true");
    s.env = vec![("A=B".into(), "c".into())];
    assert!(matches!(
        cz.launch(s).await,
        Err(ContainerError::InvalidSpec { .. })
    ));
    assert!(!dir.path().join("stdout").exists(), "nothing was started");
}

#[tokio::test]
async fn missing_program_is_a_spawn_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Containerizer::without_cgroups()
        .launch(spec("missing", dir.path(), "/nonexistent/executor", &[]))
        .await
        .expect_err("must not start");
    assert!(matches!(err, ContainerError::Spawn { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("missing") && msg.contains("/nonexistent/executor"),
        "{msg}"
    );
}

// ----- with real cgroups -----

/// A containerizer with its own parent cgroup, removed on drop; None (with the reason on
/// stderr) where cgroups can't be used, e.g. not root or a read-only cgroupfs.
struct CgroupFixture {
    cz: Containerizer,
}

impl CgroupFixture {
    fn new(test: &str) -> Option<CgroupFixture> {
        let cz = Containerizer::detect(&unique("bramble-test"));
        if cz.mode() == CgroupMode::None {
            eprintln!(
                "SKIP {test} (euid {}): {}",
                nix::unistd::geteuid(),
                cz.cgroup_summary()
            );
            return None;
        }
        Some(CgroupFixture { cz })
    }
}

impl Drop for CgroupFixture {
    fn drop(&mut self) {
        if let Err(e) = self.cz.remove_parent_cgroups() {
            eprintln!("cleanup: {e}");
        }
    }
}

#[tokio::test]
async fn memory_limit_kills_the_offender_and_spares_its_sibling() {
    let Some(fx) = CgroupFixture::new("memory_limit_kills_the_offender_and_spares_its_sibling")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    let mut sibling_spec = spec(
        &unique("sibling"),
        &dir.path().join("sibling"),
        "sleep",
        &["600"],
    );
    sibling_spec.limits = Limits {
        cpus: 0.5,
        mem_mib: 64,
    };
    let sibling = fx.cz.launch(sibling_spec).await.unwrap();

    // `tail` must keep the whole newline-free stream: ~300 MiB against a 64 MiB limit.
    let mut hog = sh(
        &unique("hog"),
        &dir.path().join("hog"),
        "head -c 300M /dev/zero | tail >/dev/null",
    );
    hog.limits = Limits {
        cpus: 1.0,
        mem_mib: 64,
    };
    let hog = fx.cz.launch(hog).await.unwrap();
    let report = wait_for_exit(&hog).await;
    let sibling_unaffected = sibling.try_wait().is_none() && !is_dead(sibling.pid);
    // Stop the sibling before asserting, so a failure leaves nothing running.
    sibling.killer().kill(Duration::from_secs(5)).await;
    let sibling_report = wait_for_exit(&sibling).await;

    assert!(
        report.memory_limit_exceeded,
        "{report:?}: {}",
        report.describe()
    );
    assert!(!report.success() && !report.killed);
    assert!(
        report
            .describe()
            .starts_with("memory limit of 64 MiB exceeded"),
        "{}",
        report.describe()
    );
    assert!(
        sibling_unaffected,
        "the sibling was still running when the hog ended"
    );
    assert!(
        sibling_report.killed && !sibling_report.memory_limit_exceeded,
        "{sibling_report:?}"
    );
}

#[tokio::test]
async fn process_runs_inside_its_limited_cgroup_which_is_removed_after_exit() {
    let Some(fx) =
        CgroupFixture::new("process_runs_inside_its_limited_cgroup_which_is_removed_after_exit")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // The very first user code (cat itself) already sees the container's cgroup.
    let id = unique("where");
    let mut s = spec(&id, dir.path(), "cat", &["/proc/self/cgroup"]);
    s.limits = Limits {
        cpus: 0.5,
        mem_mib: 64,
    };
    let c = fx.cz.launch(s).await.unwrap();
    let dirs = c.cgroup_dirs().to_vec();
    assert!(!dirs.is_empty());
    assert_eq!(wait_for_exit(&c).await.code, Some(0));
    let own = read(dir.path().join("stdout"));
    for d in &dirs {
        let tail = format!(
            "/{}/{id}",
            d.parent().unwrap().file_name().unwrap().to_str().unwrap()
        );
        assert!(
            own.lines().any(|l| l.ends_with(&tail)),
            "no line ending in {tail} in:\n{own}"
        );
        assert!(!d.exists(), "{} removed after exit", d.display());
    }

    // While running: in cgroup.procs, with the limits written.
    let mut s = spec(&unique("limits"), dir.path(), "sleep", &["600"]);
    s.limits = Limits {
        cpus: 0.5,
        mem_mib: 64,
    };
    let c = fx.cz.launch(s).await.unwrap();
    let dirs = c.cgroup_dirs().to_vec();
    for d in &dirs {
        let procs = read(d.join("cgroup.procs"));
        assert!(
            procs.lines().any(|l| l.trim() == c.pid.to_string()),
            "{} lists {procs:?}",
            d.display()
        );
    }
    let limit = (64u64 << 20).to_string();
    match fx.cz.mode() {
        CgroupMode::V2 => {
            assert_eq!(read(dirs[0].join("memory.max")).trim(), limit);
            assert_eq!(read(dirs[0].join("cpu.max")).trim(), "50000 100000");
        }
        CgroupMode::V1 => {
            for d in &dirs {
                if d.join("memory.limit_in_bytes").exists() {
                    assert_eq!(read(d.join("memory.limit_in_bytes")).trim(), limit);
                } else if d.join("cpu.cfs_quota_us").exists() {
                    assert_eq!(read(d.join("cpu.cfs_quota_us")).trim(), "50000");
                }
            }
        }
        CgroupMode::None => unreachable!("fixture only exists with cgroups"),
    }
    // Every container is capped in processes too, where the pids controller exists.
    if fx.cz.cgroup_summary().contains("pids") {
        let pids_max = super::DEFAULT_PIDS_MAX.to_string();
        assert!(
            dirs.iter()
                .any(|d| std::fs::read_to_string(d.join("pids.max"))
                    .is_ok_and(|p| p.trim() == pids_max)),
            "pids.max of {pids_max} in {dirs:?}"
        );
    }
    c.killer().kill(Duration::from_secs(5)).await;
    let report = wait_for_exit(&c).await;
    assert!(report.killed && !report.memory_limit_exceeded, "{report:?}");
    for d in &dirs {
        assert!(!d.exists(), "{} removed after exit", d.display());
    }
}

#[tokio::test]
async fn leftovers_outside_the_group_die_with_the_container() {
    let Some(fx) = CgroupFixture::new("leftovers_outside_the_group_die_with_the_container") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The escapee starts its own session: only the cgroup still knows it belongs here.
    let script =
        "setsid sh -c 'echo $$ > escapee.tmp; mv escapee.tmp escapee.pid; exec sleep 600' & \
                  while [ ! -e escapee.pid ]; do sleep 0.01; done";
    let c = fx
        .cz
        .launch(sh(&unique("escape"), dir.path(), script))
        .await
        .unwrap();
    let report = wait_for_exit(&c).await;
    assert_eq!(report.code, Some(0), "{}", report.describe());
    let escapee: u32 = read(dir.path().join("escapee.pid"))
        .trim()
        .parse()
        .expect("escapee pid");
    eventually("the escaped process to die", || is_dead(escapee)).await;
    for d in c.cgroup_dirs() {
        assert!(!d.exists(), "{} removed", d.display());
    }
}

/// Until the supervisor's child runs `sleep` (a signal that reaches the forked shell before
/// its exec would meet the supervisor's trap and be lost).
async fn child_started(pid: u32) {
    eventually("the supervised program starts", || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|n| n.trim() == "sleep")
            })
    })
    .await
}

fn supervised(id: &str, sandbox: &Path, status: &Path, script: &str) -> LaunchSpec {
    LaunchSpec {
        exit_status_file: Some(status.to_path_buf()),
        image: None,
        ..sh(id, sandbox, script)
    }
}

#[tokio::test]
async fn supervised_containers_report_like_plain_ones_and_record_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let cz = Containerizer::without_cgroups();
    let c = cz
        .launch(supervised(&unique("sup"), dir.path(), &status, "exit 3"))
        .await
        .unwrap();
    let report = wait_for_exit(&c).await;
    assert_eq!((report.code, report.signal), (Some(3), None));
    assert_eq!(read(&status).trim(), "3");

    // A killed supervised container still reads "killed by signal 15".
    let c = cz
        .launch(supervised(
            &unique("sup"),
            dir.path(),
            &status,
            "exec sleep 600",
        ))
        .await
        .unwrap();
    child_started(c.pid).await;
    c.killer().kill(Duration::from_secs(20)).await;
    let report = wait_for_exit(&c).await;
    assert_eq!(
        report.signal,
        Some(Signal::SIGTERM as i32),
        "{}",
        report.describe()
    );
    assert!(report.killed);

    // A missing program is still a launch error, not the shell's 127.
    let missing = LaunchSpec {
        exit_status_file: Some(status.clone()),
        image: None,
        ..spec(&unique("sup"), dir.path(), "no-such-program-here", &[])
    };
    let err = cz.launch(missing).await.unwrap_err().to_string();
    assert!(err.contains("No such file or directory"), "{err}");
}

#[tokio::test]
async fn a_recovered_container_is_watched_without_being_our_child() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let cz = Containerizer::without_cgroups();
    let id = unique("adopt");
    let original = cz
        .launch(supervised(&id, dir.path(), &status, "exec sleep 600"))
        .await
        .unwrap();
    assert!(process_start_time(original.pid).is_some());
    child_started(original.pid).await;
    // What a restarted agent does with the checkpointed (pid, start time).
    let recovered = cz.recover(RecoverSpec {
        container_id: id.clone(),
        pid: original.pid,
        start_time: original.start_time,
        cgroup_dirs: Vec::new(),
        memory_limit_mib: 0,
        exit_status_file: Some(status.clone()),
    });
    assert_eq!(recovered.try_wait(), None, "still running");
    recovered.killer().kill(Duration::from_secs(20)).await;
    let report = wait_for_exit(&recovered).await;
    assert_eq!(
        report.signal,
        Some(Signal::SIGTERM as i32),
        "{}",
        report.describe()
    );
    assert!(report.killed && !report.unobserved);
    wait_for_exit(&original).await;

    // A pid whose start time does not match is not ours: ended at once, nobody signalled.
    let other = cz
        .launch(sh(&unique("other"), dir.path(), "exec sleep 600"))
        .await
        .unwrap();
    let stale = cz.recover(RecoverSpec {
        container_id: unique("stale"),
        pid: other.pid,
        start_time: other.start_time + 1,
        cgroup_dirs: Vec::new(),
        memory_limit_mib: 0,
        exit_status_file: Some(dir.path().join("never-written")),
    });
    let report = wait_for_exit(&stale).await;
    assert!(report.unobserved, "{report:?}");
    assert_eq!(
        report.describe(),
        "ended while the agent was down; its exit status was not recorded"
    );
    assert!(!is_dead(other.pid), "a reused pid must not be signalled");
    other.killer().kill(Duration::from_secs(20)).await;
    wait_for_exit(&other).await;
}
