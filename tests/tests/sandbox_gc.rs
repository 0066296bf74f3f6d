//! Sandbox lifecycle and the task user, end to end in one process: finished sandboxes are
//! removed by age and by disk pressure while running ones stay, a full disk fails launches
//! with a clear reason without taking the agent down, leftovers from before a restart are
//! collected, and tasks can run as an unprivileged user.
//!
//! The disk tests mount a 2 MiB tmpfs as the agent's work dir and the task-user test creates
//! a throwaway system user: both need root and print `SKIP ...: needs root` otherwise.

use bramble_agent::containerizer::{TaskUser, TaskUsers};
use bramble_agent::gc::{DiskUsage, GcPolicy};
use bramble_agent::AgentHandle;
use bramble_client::OperatorClient;
use bramble_master::server::MasterHandle;
use bramble_proto::identity::Role;
use bramble_proto::{FrameworkId, Resources, TaskId, TaskReason, TaskState};
use bramble_tests::framework::{shell_task, TestExecutor, TestFramework};
use bramble_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A master, one agent called `name` with `work_dir` and `gc`, and a framework.
struct Setup {
    master: MasterHandle,
    agent: AgentHandle,
    fw: TestFramework,
}

async fn setup(
    cluster: &TestCluster,
    name: &str,
    work_dir: &Path,
    gc: GcPolicy,
    task_user: Option<TaskUser>,
) -> Setup {
    init_logs();
    let master = start_master(cluster, &fast_master_config(cluster)).await;
    let mut opts = agent_options(cluster, name, master.addr, Resources::new(2.0, 512));
    opts.work_dir = work_dir.to_path_buf();
    opts.gc = gc;
    opts.task_user = task_user.map(TaskUsers::One);
    let agent = start_agent(cluster, opts).await;
    wait_for_agents(&master, 1).await;
    let fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "gc-test").await;
    Setup { master, agent, fw }
}

impl Setup {
    async fn shutdown(self) {
        self.fw.stop(false).await;
        self.agent.shutdown().await;
        self.master.shutdown().await;
    }
}

fn policy(max_age: Duration, high_watermark: f64) -> GcPolicy {
    GcPolicy {
        max_age,
        disk_headroom: 0.0,
        high_watermark,
        interval: Duration::from_millis(100),
    }
}

/// The directory holding every run of command task `task`.
fn executor_dir(work_dir: &Path, fw: &FrameworkId, task: &str) -> PathBuf {
    work_dir
        .join("frameworks")
        .join(fw.as_str())
        .join("executors")
        .join(format!("command-{task}"))
}

/// The one sandbox of command task `task`.
fn sandbox_of(work_dir: &Path, fw: &FrameworkId, task: &str) -> PathBuf {
    let runs = executor_dir(work_dir, fw, task).join("runs");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.remove(0)
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mount tmpfs on {}: {status}",
            dir.display()
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes `path` until the disk is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xA5u8; 16 * 1024];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
                return written;
            }
        }
    }
}

async fn read_stdout(
    cluster: &TestCluster,
    master: &MasterHandle,
    fw: &FrameworkId,
    task: &str,
) -> anyhow::Result<String> {
    let mut op = OperatorClient::connect(&cluster.cluster_dir(), master.addr).await?;
    let chunk = op
        .read_sandbox(fw, &TaskId(task.to_string()), "stdout", 0)
        .await;
    op.close();
    Ok(String::from_utf8_lossy(&chunk?.data).into_owned())
}

#[tokio::test]
async fn full_disk_fails_the_launch_with_its_reason_and_the_watermark_frees_it() {
    if !is_root() {
        eprintln!("SKIP full_disk_fails_the_launch_with_its_reason_and_the_watermark_frees_it: needs root");
        return;
    }
    let cluster = TestCluster::new();
    let tmpfs = Tmpfs::mount(cluster.path("full"), "2m");
    let work = tmpfs.0.clone();
    let mut s = setup(
        &cluster,
        "pi-full",
        &work,
        policy(Duration::from_secs(3600), 0.5),
        None,
    )
    .await;
    let fw_id = s.fw.id.clone();

    // Something other than a sandbox fills the disk: the launch must fail, not the agent.
    let filler = work.join("filler");
    let filled = fill(&filler);
    assert!(filled > 1024 * 1024, "{filled}");
    let offer = s.fw.offer_from("pi-full").await;
    s.fw.launch(&offer, vec![shell_task(&offer, "t1", 0.1, 16, "echo hi")]);
    // The launch fails on the agent. Its FAILED update may or may not fit on the full disk
    // (the update log's last page can have room left): either the agent holds it until it
    // can be written, or it already went out and was acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = s.agent.view().await.expect("agent answers");
        let on_agent = view.containers.iter().any(|c| {
            c.tasks
                .iter()
                .any(|(t, st)| t.as_str() == "t1" && *st == TaskState::Failed)
        });
        if on_agent || s.fw.seen_terminal("t1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "t1 neither failed on the agent nor reported within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Either way the agent keeps going.
    let view = s.agent.view().await.expect("agent still answers");
    assert!(view.connected);

    std::fs::remove_file(&filler).expect("free the disk");
    let t1 = s.fw.terminal("t1").await;
    assert_eq!(t1.state, TaskState::Failed, "{t1:?}");
    assert_eq!(t1.reason, Some(TaskReason::LaunchFailed), "{t1:?}");
    assert!(t1.message.contains("disk full on"), "{}", t1.message);
    assert!(t1.message.contains("of 2.0 MiB"), "{}", t1.message);

    // A task leaves 1.5 MB behind: the disk is then above the 50% high watermark, and its
    // sandbox, far younger than the ~15 min the age rule allows at that use, is the oldest
    // finished one, so the watermark removes it.
    let offer = s.fw.offer_from("pi-full").await;
    s.fw.launch(
        &offer,
        vec![shell_task(
            &offer,
            "hog",
            0.1,
            16,
            "echo hogging; head -c 1500000 /dev/zero > big",
        )],
    );
    let hog = s.fw.terminal("hog").await;
    assert_eq!(hog.state, TaskState::Finished, "{hog:?}");
    eventually("hog's sandbox removed", Duration::from_secs(10), || async {
        (!executor_dir(&work, &fw_id, "hog").exists()).then_some(())
    })
    .await;
    let usage = DiskUsage::of(&work).expect("statvfs");
    assert!(usage.used_fraction() < 0.5, "{usage}");
    let err = read_stdout(&cluster, &s.master, &fw_id, "hog")
        .await
        .expect_err("hog's sandbox is gone");
    let err = err.to_string();
    assert!(err.contains("sandbox of task hog removed by gc"), "{err}");
    assert!(err.contains("high watermark"), "{err}");

    // And the agent runs tasks again.
    let offer = s.fw.offer_from("pi-full").await;
    s.fw.launch(
        &offer,
        vec![shell_task(&offer, "after", 0.1, 16, "echo fine")],
    );
    let after = s.fw.terminal("after").await;
    assert_eq!(after.state, TaskState::Finished, "{after:?}");
    s.shutdown().await;
    drop(tmpfs);
}

#[tokio::test]
async fn short_max_age_removes_finished_sandboxes_but_never_a_running_one() {
    let cluster = TestCluster::new();
    let work = cluster.path("pi-age");
    // High watermark 1.0: only age decides, whatever the test machine's disk looks like.
    let mut s = setup(
        &cluster,
        "pi-age",
        &work,
        policy(Duration::from_secs(1), 1.0),
        None,
    )
    .await;
    let fw_id = s.fw.id.clone();
    let offer = s.fw.offer_from("pi-age").await;
    s.fw.launch(
        &offer,
        vec![
            shell_task(&offer, "long", 0.1, 16, "echo started; exec sleep 600"),
            shell_task(&offer, "quick", 0.1, 16, "echo quick done"),
        ],
    );
    s.fw.state("long", TaskState::Running).await;
    let quick = s.fw.terminal("quick").await;
    assert_eq!(quick.state, TaskState::Finished, "{quick:?}");
    let long_sandbox = sandbox_of(&work, &fw_id, "long");

    eventually(
        "quick's sandbox removed",
        Duration::from_secs(10),
        || async { (!executor_dir(&work, &fw_id, "quick").exists()).then_some(()) },
    )
    .await;
    // `long` started before `quick` ended, so it was already past max_age at that sweep: a
    // gc that looked at running sandboxes would have removed it first.
    assert!(long_sandbox.join("stdout").exists());
    let err = read_stdout(&cluster, &s.master, &fw_id, "quick")
        .await
        .expect_err("quick's sandbox is gone")
        .to_string();
    assert!(err.contains("sandbox of task quick removed by gc"), "{err}");
    assert!(err.contains("older than"), "{err}");
    assert!(!err.contains("No such file"), "{err}");
    let out = read_stdout(&cluster, &s.master, &fw_id, "long")
        .await
        .expect("long's sandbox is readable");
    assert_eq!(out, "started\n");

    s.fw.driver.kill_task("long".into()).expect("kill");
    assert_eq!(s.fw.terminal("long").await.state, TaskState::Killed);
    eventually(
        "long's sandbox removed once it ended",
        Duration::from_secs(10),
        || async { (!long_sandbox.exists()).then_some(()) },
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn leftover_sandboxes_from_before_a_restart_are_collected_by_their_age() {
    let cluster = TestCluster::new();
    let work = cluster.path("pi-left");
    let runs = work.join("frameworks/old-fw/executors/command-x/runs");
    let (old, fresh) = (runs.join("old"), runs.join("fresh"));
    for dir in [&old, &fresh] {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("stdout"), b"from before\n").expect("write");
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::open(&old)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("age the old sandbox");
    let s = setup(
        &cluster,
        "pi-left",
        &work,
        policy(Duration::from_secs(3600), 1.0),
        None,
    )
    .await;
    eventually(
        "the old leftover removed",
        Duration::from_secs(10),
        || async { (!old.exists()).then_some(()) },
    )
    .await;
    // The sweep that removed `old` weighed `fresh` too: younger than max_age, it stays.
    assert!(fresh.join("stdout").exists());
    assert!(work.join("meta").exists());
    s.shutdown().await;
}

#[tokio::test]
async fn tasks_run_as_the_task_user_and_cannot_write_the_agents_meta_dir() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        eprintln!(
            "SKIP tasks_run_as_the_task_user_and_cannot_write_the_agents_meta_dir: needs root"
        );
        return;
    }
    let user = bramble_tests::users::ThrowawayUser::create("t");
    let task_user = TaskUser::resolve(&user.0).expect("resolve the new user");
    let cluster = TestCluster::new();
    // The temp dir is private to root; the task user must be able to reach its sandbox.
    let open = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let work = open.path().join("agent");
    let mut s = setup(
        &cluster,
        "pi-user",
        &work,
        policy(Duration::from_secs(3600), 1.0),
        Some(task_user.clone()),
    )
    .await;
    let fw_id = s.fw.id.clone();
    let meta = work.join("meta");
    let line = format!(
        "id -u; touch {}/owned 2>/dev/null && echo wrote-meta || echo cannot-write-meta; \
         touch mine && echo wrote-sandbox",
        meta.display()
    );
    let offer = s.fw.offer_from("pi-user").await;
    s.fw.launch(&offer, vec![shell_task(&offer, "who", 0.1, 16, &line)]);
    let who = s.fw.terminal("who").await;
    assert_eq!(who.state, TaskState::Finished, "{who:?}");
    let sandbox = sandbox_of(&work, &fw_id, "who");
    let stdout = std::fs::read_to_string(sandbox.join("stdout")).expect("stdout");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            task_user.uid.to_string().as_str(),
            "cannot-write-meta",
            "wrote-sandbox"
        ],
        "{stdout}"
    );
    assert!(!meta.join("owned").exists());
    assert_eq!(
        std::fs::metadata(&sandbox).expect("sandbox").uid(),
        task_user.uid.as_raw()
    );
    assert_eq!(
        std::fs::metadata(sandbox.join("mine"))
            .expect("task's file")
            .uid(),
        task_user.uid.as_raw()
    );

    // A custom executor runs as the user too, and can still reach the agent's socket.
    let offer = s.fw.offer_from("pi-user").await;
    s.fw.launch(&offer, vec![EXECUTOR.task(&offer, "exec-sleep", "sleep")]);
    let running = s.fw.state("exec-sleep", TaskState::Running).await;
    let pid = running
        .message
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("RUNNING names the executor's pid: {running:?}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("executor status");
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    let expected = task_user.uid.to_string();
    assert!(
        uids.split_whitespace().all(|u| u == expected),
        "executor uids {uids:?}, expected {expected}"
    );
    s.fw.driver.kill_task("exec-sleep".into()).expect("kill");
    assert_eq!(s.fw.terminal("exec-sleep").await.state, TaskState::Killed);
    s.shutdown().await;
    drop(user);
}

/// The tests' custom executor (`tests/src/bin/test-executor.rs`).
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));
