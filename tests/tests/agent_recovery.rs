//! Level 3: agent recovery with real processes. A `bramble-agent` is SIGKILLed while a command
//! task and a custom executor run, and restarted on the same work dir: it re-adopts the same
//! processes, the master keeps them RUNNING, and every update (including those produced while
//! the agent was down) reaches the framework. A simulated reboot makes the old tasks LOST
//! without touching their pids; changed resources make the restart refuse with what changed.
//!
//! The boot id comes from a file the test controls (`BRAMBLE_BOOT_ID_FILE`), so a "reboot" is
//! a changed line in it.

use bramble_proto::messages::Offer;
use bramble_proto::{TaskReason, TaskState};
use bramble_tests::framework::{pid_of, shell_task, TestExecutor, TestFramework};
use bramble_tests::processes::*;
use bramble_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A master on loopback that keeps a silent agent for 60 s: restarts happen well within that,
/// so the master still expects the agent's tasks when it comes back.
struct Setup {
    net: LoopbackCluster,
    boot_id: PathBuf,
    _master: Proc,
}

impl Setup {
    /// Where every test here starts: the master, the first agent process (offering 2 cpus)
    /// registered, and a framework holding its offer.
    async fn start() -> (Setup, Proc, TestFramework, Offer) {
        let net = LoopbackCluster::new();
        let boot_id = net.test.path("boot_id");
        std::fs::write(&boot_id, "boot-1\n").expect("boot id file");
        let master = net.start_master("master", &MasterCmd::default().agent_timeout_secs(60.0));
        let setup = Setup {
            net,
            boot_id,
            _master: master,
        };
        let agent = setup.agent("agent", "2");
        setup.agent_connected().await;
        let mut fw = setup.net.framework("recovery").await;
        let offer = fw.first_offer().await;
        (setup, agent, fw, offer)
    }

    /// The agent's settings, offering `cpus`: always the same work dir, and executors and
    /// their reconnection kept for 60 s so they outlast any outage here.
    fn agent_cmd(&self, cpus: &str) -> AgentCmd {
        AgentCmd::new("agent")
            .cpus(cpus)
            .mem_mib(512)
            .disk_mib(1000)
            .config(
                "executor_idle_timeout_secs = 60\n\
                 [recovery]\nexecutor_reconnect_timeout_secs = 60\n",
            )
            .env(bramble_agent::checkpoint::BOOT_ID_ENV, &self.boot_id)
    }

    fn work_dir(&self) -> PathBuf {
        self.net.work_dir(&self.agent_cmd("2"))
    }

    /// Starts `bramble-agent` on the shared work dir, offering `cpus`.
    fn agent(&self, name: &str, cpus: &str) -> Proc {
        self.net.start_agent(name, &self.agent_cmd(cpus))
    }

    async fn agent_connected(&self) {
        self.net.connected_agent(WAIT).await;
    }

    /// Every agent log and every sandbox's stderr, for failure messages.
    fn dump(&self) -> String {
        let mut out = String::new();
        let mut files = Vec::new();
        let mut dirs = vec![self.net.logs.clone(), self.work_dir().join("frameworks")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "log")
                    || path.file_name().is_some_and(|n| n == "stderr")
                {
                    files.push(path);
                }
            }
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            out.push_str(&format!("\n===== {} =====\n{text}", f.display()));
        }
        out
    }

    /// The master's view of `task`'s state.
    async fn master_state_of(&self, task: &str) -> Option<TaskState> {
        let s = self.net.state().await?;
        s.tasks
            .iter()
            .find(|t| t.id.as_str() == task)
            .map(|t| t.state)
    }
}

/// The test executor: every task on it runs on one executor process.
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));

/// A shell line that waits for `release` to exist, then exits with `code`.
fn wait_then_exit(release: &Path, code: i32) -> String {
    format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exit {code}",
        release.display()
    )
}

/// Kills these process groups when dropped: tasks outlive their agents on purpose, so a
/// failing test must not leave them behind.
struct KillGroups(Vec<i32>);

impl Drop for KillGroups {
    fn drop(&mut self) {
        for &pid in &self.0 {
            kill_group(pid);
        }
    }
}

async fn until_dead(pid: i32) {
    eventually(&format!("process {pid} ends"), WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_readopts_its_tasks_and_every_update_reaches_the_framework() {
    let (setup, mut agent, mut fw, offer) = Setup::start().await;

    let release = |name: &str| setup.net.test.path(name);
    fw.launch(
        &offer,
        vec![
            // Survives the restart, then exits 3.
            shell_task(&offer, "cmd", 0.2, 16, &wait_then_exit(&release("cmd"), 3)),
            // Exits 5 while the agent is down.
            shell_task(
                &offer,
                "cmd-down",
                0.2,
                16,
                &wait_then_exit(&release("cmd-down"), 5),
            ),
            // On the custom executor: finishes after the restart, and while the agent is down.
            EXECUTOR.task(
                &offer,
                "exec",
                &format!("wait:{}", release("exec").display()),
            ),
            EXECUTOR.task(
                &offer,
                "exec-down",
                &format!("wait:{}", release("exec-down").display()),
            ),
        ],
    );
    let cmd_pid = pid_of(&fw.state("cmd", TaskState::Running).await);
    let cmd_down_pid = pid_of(&fw.state("cmd-down", TaskState::Running).await);
    let executor_pid = pid_of(&fw.state("exec", TaskState::Running).await);
    let _cleanup = KillGroups(vec![cmd_pid, cmd_down_pid, executor_pid]);
    assert_eq!(
        pid_of(&fw.state("exec-down", TaskState::Running).await),
        executor_pid,
        "both tasks run on one executor"
    );

    agent.kill_hard();
    assert!(
        alive(cmd_pid) && alive(cmd_down_pid) && alive(executor_pid),
        "{}",
        setup.dump()
    );
    // Produced while no agent runs: a command's exit status and an executor's update.
    std::fs::write(release("cmd-down"), "").expect("release cmd-down");
    until_dead(cmd_down_pid).await;
    std::fs::write(release("exec-down"), "").expect("release exec-down");
    eventually(
        "the executor reports exec-down (it removes the file after reporting)",
        WAIT,
        || async { (!release("exec-down").exists()).then_some(()) },
    )
    .await;

    let agent_again = setup.agent("agent-again", "2");
    let log = agent_again.log.clone();
    eventually(
        "the restarted agent's executor reconnects",
        WAIT,
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("recovered executor reconnected")
                .then_some(())
        },
    )
    .await;
    // The same processes, still RUNNING at the master.
    assert!(alive(cmd_pid), "the command task survived the agent");
    assert!(alive(executor_pid), "the executor survived the agent");
    for task in ["cmd", "exec"] {
        assert_eq!(
            setup.master_state_of(task).await,
            Some(TaskState::Running),
            "{task} at the master after the restart"
        );
    }

    // What happened while the agent was down reaches the framework.
    let down = fw.terminal("cmd-down").await;
    assert_eq!(down.state, TaskState::Failed, "{down:?}");
    assert_eq!(down.exit_code, Some(5), "{down:?}");
    assert_eq!(down.reason, Some(TaskReason::CommandExited), "{down:?}");
    let exec_down = fw.terminal("exec-down").await;
    assert_eq!(exec_down.state, TaskState::Finished, "{exec_down:?}");

    // The re-adopted command task's real exit code, after the restart.
    std::fs::write(release("cmd"), "").expect("release cmd");
    let cmd = fw.terminal("cmd").await;
    assert_eq!(cmd.state, TaskState::Failed, "{cmd:?}");
    assert_eq!(cmd.exit_code, Some(3), "{cmd:?}");
    assert!(cmd.message.contains("status 3"), "{}", cmd.message);
    // The reconnected executor still runs tasks both ways.
    std::fs::write(release("exec"), "").expect("release exec");
    let exec = fw.terminal("exec").await;
    assert_eq!(exec.state, TaskState::Finished, "{exec:?}");

    // Every task's updates reached the framework, each state once per uuid.
    for task in ["cmd", "cmd-down", "exec", "exec-down"] {
        let states: Vec<TaskState> = fw
            .updates
            .iter()
            .filter(|u| u.task_id.as_str() == task)
            .map(|u| u.state)
            .collect();
        assert!(states.contains(&TaskState::Running), "{task}: {states:?}");
        assert!(states.iter().any(|s| s.is_terminal()), "{task}: {states:?}");
    }
    fw.stop(false).await;
    assert!(
        agent_again
            .log_text()
            .contains("re-adopted a running command task"),
        "{}",
        agent_again.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reboot_the_old_tasks_are_lost_and_their_pids_left_alone() {
    let (setup, mut agent, mut fw, offer) = Setup::start().await;
    fw.launch(
        &offer,
        vec![
            shell_task(&offer, "sleeper", 0.2, 16, "exec sleep 600"),
            EXECUTOR.task(&offer, "exec", "sleep"),
        ],
    );
    let sleeper_pid = pid_of(&fw.state("sleeper", TaskState::Running).await);
    let executor_pid = pid_of(&fw.state("exec", TaskState::Running).await);
    let _cleanup = KillGroups(vec![sleeper_pid, executor_pid]);

    agent.kill_hard();
    // The "reboot": the same processes are still here (a real reboot would have ended them),
    // so a restarted agent that waited on or signalled old pids would show it.
    std::fs::write(&setup.boot_id, "boot-2\n").expect("new boot id");
    let agent_again = setup.agent("agent-again", "2");
    for task in ["sleeper", "exec"] {
        let lost = fw.terminal(task).await;
        assert_eq!(lost.state, TaskState::Lost, "{lost:?}");
        assert_eq!(lost.reason, Some(TaskReason::HostRebooted), "{lost:?}");
        assert!(lost.message.contains("rebooted"), "{}", lost.message);
        assert!(
            lost.message.contains("boot-1") && lost.message.contains("boot-2"),
            "{}",
            lost.message
        );
    }
    assert!(
        alive(sleeper_pid),
        "the agent must not signal a pid from before the reboot"
    );
    let log = agent_again.log_text();
    assert!(!log.contains("re-adopted"), "{log}");
    fw.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_resources_refuse_recovery_and_say_what_changed() {
    let (setup, mut agent, mut fw, offer) = Setup::start().await;
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "sleeper", 0.2, 16, "exec sleep 600"),
        )
        .await,
    );
    let _cleanup = KillGroups(vec![pid]);
    agent.kill_hard();

    let mut refused = setup.agent("agent-fewer-cpus", "1");
    let status = refused.exited("the agent exits", WAIT).await;
    assert!(!status.success(), "refusal exits non-zero: {status:?}");
    let log = refused.log_text();
    assert!(log.contains("refusing to recover"), "{log}");
    assert!(log.contains("cpus: 2 → 1"), "{log}");
    let runs = setup.work_dir().join("meta").join("runs");
    assert!(log.contains(&format!("remove {}", runs.display())), "{log}");
    assert!(log.contains(&pid.to_string()), "names the live pid: {log}");
    assert!(alive(pid), "a refused start touches nothing");

    // The old settings still recover.
    let again = setup.agent("agent-same", "2");
    eventually(
        "the agent with the old settings re-adopts the task",
        WAIT,
        || async {
            again
                .log_text()
                .contains("re-adopted a running command task")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        setup.master_state_of("sleeper").await,
        Some(TaskState::Running)
    );
    fw.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_tasks_running_for_the_next_agent() {
    let (setup, mut agent, mut fw, offer) = Setup::start().await;
    let release = setup.net.test.path("release");
    let pid = pid_of(
        &fw.launch_one(
            &offer,
            shell_task(&offer, "cmd", 0.2, 16, &wait_then_exit(&release, 0)),
        )
        .await,
    );
    let _cleanup = KillGroups(vec![pid]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the agent");
    let status = agent.exited("the agent exits on SIGTERM", WAIT).await;
    assert!(status.success(), "{status:?}");
    assert!(alive(pid), "SIGTERM left the task running");
    let _again = setup.agent("agent-again", "2");
    setup.agent_connected().await;
    std::fs::write(&release, "").expect("release");
    let done = fw.terminal("cmd").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    fw.stop(false).await;
}

/// A second agent started on a work dir already in use is refused at start, naming the
/// running agent's pid, and leaves the first one alone (it used to replace the first one's
/// executor socket and agent id file, and the two flapped on the master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_a_work_dir_in_use_is_refused_naming_the_holder() {
    let (setup, agent, _fw, _offer) = Setup::start().await;
    let socket = setup.work_dir().join("agent.sock");
    let socket_before = std::fs::metadata(&socket).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let mut intruder = setup.agent("intruder", "2");
    let status = intruder.exited("the second agent to give up", WAIT).await;
    assert!(!status.success(), "the second agent must refuse to run");
    let log = intruder.log_text();
    assert!(
        log.contains("in use by another bramble-agent")
            && log.contains(&format!("pid {}", agent.pid())),
        "the refusal names the holder's pid:\n{log}"
    );
    let socket_after = std::fs::metadata(&socket).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    assert_eq!(
        socket_before.ok(),
        socket_after.ok(),
        "the first agent's socket is untouched"
    );
    let state = setup.net.state().await.expect("state");
    assert_eq!(state.agents.len(), 1, "{:?}", state.agents);
    assert!(alive(agent.pid()));
}
