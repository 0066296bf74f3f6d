//! Tasks under a task user across an agent restart, in one process (root only: the test makes
//! a throwaway user). A command task's exit-status supervisor stays root while the task runs
//! as the user, so a task that ends while no agent runs is reported with its real status, and
//! nothing of the supervisor's ends up in the task's output.

use bramble_agent::containerizer::{TaskUser, TaskUsers};
use bramble_agent::AgentOptions;
use bramble_master::config::MasterConfig;
use bramble_proto::identity::Role;
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::{pid_of, shell_task, TestFramework};
use bramble_tests::processes::{alive, kill_group};
use bramble_tests::users::ThrowawayUser;
use bramble_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Kills the task's process group if the test fails before it ends (tasks outlive agents).
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// Every file named `name` under `dir`, read.
fn read_all_named(dir: &Path, name: &str) -> String {
    let mut out = String::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_user_task_ending_while_the_agent_is_down_is_reported_finished() {
    if !is_root() {
        eprintln!(
            "SKIP a_task_user_task_ending_while_the_agent_is_down_is_reported_finished: needs root"
        );
        return;
    }
    init_logs();
    let user = ThrowawayUser::create("r");
    let task_user = TaskUser::resolve(&user.0).expect("resolve the new user");
    let cluster = TestCluster::new();
    // The master keeps the silent agent (and its task) well past the restart.
    let master = start_master(
        &cluster,
        &MasterConfig {
            agent_timeout_secs: 60.0,
            ..fast_master_config(&cluster)
        },
    )
    .await;
    // The task user must be able to reach its sandbox, and to see the release file.
    let open = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let work: PathBuf = open.path().join("agent");
    let options = || AgentOptions {
        work_dir: work.clone(),
        task_user: Some(TaskUsers::One(task_user.clone())),
        ..agent_options(&cluster, "pi-user", master.addr, Resources::new(2.0, 512))
    };
    let agent = start_agent(&cluster, options()).await;
    wait_for_agents(&master, 1).await;
    let mut fw = TestFramework::start(
        master.addr,
        cluster.credentials(Role::Framework),
        "task-user",
    )
    .await;
    let offer = fw.first_offer().await;
    let release = open.path().join("release");
    let line = format!(
        "id -u; while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
        release.display()
    );
    let running = fw
        .launch_one(&offer, shell_task(&offer, "down", 0.1, 16, &line))
        .await;
    let pid = pid_of(&running);
    let _cleanup = KillGroup(pid);

    agent.shutdown_leaving_tasks().await;
    assert!(alive(pid), "the agent's stop left the task running");
    // The task ends (exit 0) while no agent runs.
    std::fs::write(&release, "").expect("release");
    eventually("the task ends while no agent runs", WAIT, || async {
        (!alive(pid)).then_some(())
    })
    .await;

    let again = start_agent(&cluster, options()).await;
    let done = fw.terminal("down").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert_eq!(done.exit_code, Some(0), "{done:?}");

    let sandboxes = work.join("frameworks");
    let stdout = read_all_named(&sandboxes, "stdout");
    let stderr = read_all_named(&sandboxes, "stderr");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [task_user.uid.to_string().as_str(), "done"],
        "the task ran as the task user; stdout {stdout:?}, stderr {stderr:?}"
    );
    assert!(
        !stdout.contains("bramble-supervise") && !stderr.contains("bramble-supervise"),
        "the supervisor wrote into the task's output: stdout {stdout:?}, stderr {stderr:?}"
    );
    fw.stop(false).await;
    again.shutdown().await;
    master.shutdown().await;
    drop(user);
}
