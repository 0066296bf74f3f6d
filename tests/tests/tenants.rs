//! Frameworks' tasks kept apart by per-framework task users (`task_uids`), end to end in one
//! process: a task of framework B cannot read A's sandbox, list it, signal A's task, read its
//! `/proc/PID/environ`, or find A's custom executor's token anywhere it can read; and each
//! framework keeps its uid across an agent restart, with the tasks left running re-adopted.
//!
//! Root only (the agent must switch users): otherwise each test prints `SKIP ...: needs root`.

use bramble_agent::containerizer::{TaskUsers, UidRange};
use bramble_agent::AgentOptions;
use bramble_master::config::MasterConfig;
use bramble_master::server::MasterHandle;
use bramble_proto::identity::Role;
use bramble_proto::messages::{Filters, Offer};
use bramble_proto::task::TaskInfo;
use bramble_proto::{FrameworkId, Resources, TaskState};
use bramble_tests::framework::{pid_of, shell_task, TestExecutor, TestFramework};
use bramble_tests::processes::{alive, kill_group};
use bramble_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The tests' custom executor (`tests/src/bin/test-executor.rs`).
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));

/// Kills a task's process group if the test fails before it ends (tasks outlive agents).
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// A uid range no account and no process of this machine uses, distinct per test (`slot`)
/// and per test process.
fn free_range(slot: u32) -> UidRange {
    let base = 30_000_000 + (std::process::id() % 100_000) * 100 + slot * 10;
    UidRange::new(base, base + 9).expect("a valid range")
}

/// A master, and an agent whose work dir the task users can reach, running each framework's
/// tasks as its own uid from `range`.
struct Setup {
    cluster: TestCluster,
    master: MasterHandle,
    /// World-searchable (the temp dir root makes is not), holding the agent's work dir.
    open: tempfile::TempDir,
    range: UidRange,
}

impl Setup {
    async fn new(range: UidRange) -> Setup {
        init_logs();
        let cluster = TestCluster::new();
        // The master keeps a silent agent (and its tasks) through a restart.
        let master = start_master(
            &cluster,
            &MasterConfig {
                agent_timeout_secs: 60.0,
                ..fast_master_config(&cluster)
            },
        )
        .await;
        let open = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Setup {
            cluster,
            master,
            open,
            range,
        }
    }

    fn work(&self) -> PathBuf {
        self.open.path().join("agent")
    }

    fn options(&self) -> AgentOptions {
        AgentOptions {
            work_dir: self.work(),
            task_user: Some(TaskUsers::PerFramework(self.range)),
            // Long enough for a probe to run while an executor that never registers is up.
            executor_registration_timeout: Duration::from_secs(120),
            ..agent_options(
                &self.cluster,
                "pi-tenants",
                self.master.addr,
                Resources::new(2.0, 512),
            )
        }
    }

    async fn framework(&self, name: &str) -> TestFramework {
        TestFramework::start(
            self.master.addr,
            self.cluster.credentials(Role::Framework),
            name,
        )
        .await
    }
}

/// The one run directory (sandbox) of executor `executor` of `fw`.
fn sandbox_of(work: &Path, fw: &FrameworkId, executor: &str) -> PathBuf {
    let runs = work
        .join("frameworks")
        .join(fw.as_str())
        .join("executors")
        .join(executor)
        .join("runs");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("{}: {e}", runs.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.pop().expect("one run")
}

/// Lets the next framework have the agent: `fw` waits for the offer of what it left unused
/// and declines it for an hour (a one-agent cluster re-offers it to `fw` alone otherwise).
async fn hand_over(fw: &mut TestFramework) {
    let offer = fw.first_offer().await;
    fw.driver
        .decline_offer(
            offer.id,
            Filters {
                refuse_seconds: 3600.0,
            },
        )
        .expect("decline");
}

/// Polls until `path` holds a line, and returns it.
async fn line_in(path: &Path) -> String {
    eventually(&format!("a line in {}", path.display()), WAIT, || async {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().next().map(str::to_string)
    })
    .await
}

/// Runs `line` as a command task of `fw` to its end and returns its stdout's lines.
async fn run_to_end(fw: &mut TestFramework, work: &Path, task: &str, line: &str) -> Vec<String> {
    let offer: Offer = fw.first_offer().await;
    fw.launch(&offer, vec![shell_task(&offer, task, 0.1, 16, line)]);
    let done = fw.terminal(task).await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    let stdout = sandbox_of(work, &fw.id, &format!("command-{task}")).join("stdout");
    std::fs::read_to_string(&stdout)
        .unwrap_or_else(|e| panic!("{}: {e}", stdout.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// A command task of framework A that keeps a secret in its sandbox and one in its
/// environment, prints its uid and waits for `release`.
fn secret_keeper(offer: &Offer, release: &Path) -> TaskInfo {
    let line = format!(
        "echo a-file-secret > secret; echo $$ > pid; id -u; \
         while [ ! -e '{}' ]; do sleep 0.05; done",
        release.display()
    );
    let mut task = shell_task(offer, "keeper", 0.1, 16, &line);
    if let Some(cmd) = task.command.as_mut() {
        cmd.environment
            .insert("A_SECRET".into(), "a-environ-secret".into());
    }
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_one_framework_cannot_read_list_or_signal_another_frameworks_task() {
    if !is_root() {
        eprintln!("SKIP a_task_of_one_framework_cannot_read_list_or_signal_another_frameworks_task: needs root");
        return;
    }
    let s = Setup::new(free_range(0)).await;
    let agent = start_agent(&s.cluster, s.options()).await;
    wait_for_agents(&s.master, 1).await;
    let work = s.work();

    let mut a = s.framework("tenant-a").await;
    let release = s.open.path().join("release");
    let offer = a.first_offer().await;
    let running = a.launch_one(&offer, secret_keeper(&offer, &release)).await;
    let _cleanup = KillGroup(pid_of(&running));
    let a_sandbox = sandbox_of(&work, &a.id, "command-keeper");
    // The task's own shell (not its supervisor, which stays root).
    let a_pid: i32 = line_in(&a_sandbox.join("pid"))
        .await
        .parse()
        .expect("a pid");
    let a_uid: u32 = line_in(&a_sandbox.join("stdout"))
        .await
        .parse()
        .expect("a uid");
    assert!(s.range.contains(a_uid), "A runs as {a_uid}");
    let meta = std::fs::metadata(&a_sandbox).expect("A's sandbox");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (a_uid, 0o700),
        "A's sandbox"
    );
    // Root sees what B will try to see: the probe below could find it if allowed.
    assert!(std::fs::read_to_string(format!("/proc/{a_pid}/environ"))
        .expect("environ")
        .contains("a-environ-secret"));

    hand_over(&mut a).await;
    let mut b = s.framework("tenant-b").await;
    let probe = format!(
        "id -u; \
         cat '{sandbox}/secret' 2>/dev/null || echo cannot-read-sandbox; \
         ls '{sandbox}' >/dev/null 2>&1 && echo listed-sandbox || echo cannot-list-sandbox; \
         kill -0 {a_pid} 2>/dev/null && echo signalled || echo cannot-signal; \
         cat /proc/{a_pid}/environ 2>/dev/null | tr '\\0' '\\n' | grep -q a-environ-secret \
           && echo read-environ || echo cannot-read-environ; \
         ls '{frameworks}' >/dev/null 2>&1 && echo listed-frameworks || echo cannot-list-frameworks",
        sandbox = a_sandbox.display(),
        frameworks = work.join("frameworks").display(),
    );
    let lines = run_to_end(&mut b, &work, "probe", &probe).await;
    let b_uid: u32 = lines.first().and_then(|l| l.parse().ok()).expect("B's uid");
    assert!(
        s.range.contains(b_uid) && b_uid != a_uid,
        "B runs as {b_uid}, A as {a_uid}"
    );
    assert_eq!(
        lines[1..],
        [
            "cannot-read-sandbox",
            "cannot-list-sandbox",
            "cannot-signal",
            "cannot-read-environ",
            "cannot-list-frameworks"
        ],
        "B's probe of A's task"
    );
    assert!(alive(a_pid), "A's task survived B's probe");

    std::fs::write(&release, "").expect("release");
    assert_eq!(a.terminal("keeper").await.state, TaskState::Finished);
    a.stop(false).await;
    b.stop(false).await;
    agent.shutdown().await;
    s.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_of_another_framework_can_find_a_custom_executors_token() {
    if !is_root() {
        eprintln!(
            "SKIP no_task_of_another_framework_can_find_a_custom_executors_token: needs root"
        );
        return;
    }
    let s = Setup::new(free_range(1)).await;
    let agent = start_agent(&s.cluster, s.options()).await;
    wait_for_agents(&s.master, 1).await;
    let work = s.work();

    let mut a = s.framework("tenant-a").await;
    let offer = a.first_offer().await;
    let running = a
        .launch_one(&offer, EXECUTOR.task(&offer, "held", "sleep"))
        .await;
    let executor_pid = pid_of(&running);
    let _cleanup = KillGroup(executor_pid);
    let environ =
        std::fs::read(format!("/proc/{executor_pid}/environ")).expect("the executor's environ");
    let token = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("BRAMBLE_EXECUTOR_TOKEN="))
        .expect("the executor has a token")
        .to_string();
    assert!(token.len() >= 16, "{token:?}");
    // The agent keeps it in the run's checkpoint (the place an open meta dir would show it).
    let runs = work.join("meta").join("runs");
    let kept = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&token)));
    assert!(
        kept,
        "the token is in a run checkpoint under {}",
        runs.display()
    );
    hand_over(&mut a).await;

    // B looks everywhere it can read: the work dir (meta included) and every process's
    // environment. `-D skip` so a socket or FIFO never stalls the probe.
    let mut b = s.framework("tenant-b").await;
    let probe = format!(
        "grep -rqs -D skip -- '{token}' '{work}' && echo found-in-work-dir; \
         for f in /proc/[0-9]*/environ; do \
           tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep -qs -- '{token}' && echo found-in-environ; \
         done; echo searched",
        work = work.display(),
    );
    let lines = run_to_end(&mut b, &work, "search", &probe).await;
    assert_eq!(lines, ["searched"], "B's search for A's executor's token");

    a.driver.kill_task("held".into()).expect("kill");
    assert_eq!(a.terminal("held").await.state, TaskState::Killed);
    a.stop(false).await;
    b.stop(false).await;
    agent.shutdown().await;
    s.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frameworks_keep_their_uids_across_an_agent_restart_and_its_tasks_are_recovered() {
    if !is_root() {
        eprintln!("SKIP frameworks_keep_their_uids_across_an_agent_restart_and_its_tasks_are_recovered: needs root");
        return;
    }
    let s = Setup::new(free_range(2)).await;
    let agent = start_agent(&s.cluster, s.options()).await;
    wait_for_agents(&s.master, 1).await;
    let work = s.work();

    let mut a = s.framework("tenant-a").await;
    let release = s.open.path().join("release");
    let offer = a.first_offer().await;
    let line = format!(
        "id -u; while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
        release.display()
    );
    let running = a
        .launch_one(&offer, shell_task(&offer, "long", 0.1, 16, &line))
        .await;
    let pid = pid_of(&running);
    let _cleanup = KillGroup(pid);
    let long_sandbox = sandbox_of(&work, &a.id, "command-long");
    let a_uid: u32 = line_in(&long_sandbox.join("stdout"))
        .await
        .parse()
        .expect("a uid");

    agent.shutdown_leaving_tasks().await;
    assert!(alive(pid), "the agent's stop left A's task running");
    // Offers of the stopped agent's connection are stale: take in what is queued, drop them.
    a.seen_terminal("long");
    a.offers.clear();
    let again = start_agent(&s.cluster, s.options()).await;

    // A's new task runs as A's uid; a framework new since the restart gets another.
    let after = run_to_end(&mut a, &work, "after", "id -u").await;
    assert_eq!(after, [a_uid.to_string()], "A's uid after the restart");
    hand_over(&mut a).await;
    let mut b = s.framework("tenant-b").await;
    let b_lines = run_to_end(&mut b, &work, "newcomer", "id -u").await;
    let b_uid: u32 = b_lines
        .first()
        .and_then(|l| l.parse().ok())
        .expect("B's uid");
    assert!(
        s.range.contains(b_uid) && b_uid != a_uid,
        "B {b_uid}, A {a_uid}"
    );

    // The task left running was re-adopted: it ends under the new agent with its status.
    std::fs::write(&release, "").expect("release");
    let done = a.terminal("long").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    let stdout = std::fs::read_to_string(long_sandbox.join("stdout")).expect("stdout");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [a_uid.to_string().as_str(), "done"]
    );
    a.stop(false).await;
    b.stop(false).await;
    again.shutdown().await;
    s.master.shutdown().await;
}
