//! Tasks in container images through crun, on a real agent (in-process) with cgroups: root
//! only, and crun and Debian's busybox-static installed (`.ci/run` installs them). The image
//! is built here from the host's static busybox, imported as a plain root filesystem, so no
//! registry is involved.
//!
//! One agent and one framework for every case (each case is seconds at most): output and exit
//! code, the sandbox mounted in the container, the image's filesystem rather than the host's,
//! the cgroup limits holding the container's processes, kill, the memory limit, an image of
//! another architecture and a missing image refused with TASK_FAILED and the reason, and a
//! container task that outlives an agent restart and is reported by the next agent.

use bramble_agent::images::{host_architecture, ImageStore};
use bramble_agent::{AgentOptions, ContainersOptions};
use bramble_master::config::MasterConfig;
use bramble_proto::identity::Role;
use bramble_proto::task::TaskInfo;
use bramble_proto::{Resources, TaskReason, TaskState};
use bramble_sdk::Offer;
use bramble_tests::busybox;
use bramble_tests::framework::{pid_of, shell_task, TestFramework};
use bramble_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn in_image(offer: &Offer, id: &str, mem_mib: u64, image: &str, line: &str) -> TaskInfo {
    let mut task = shell_task(offer, id, 0.1, mem_mib, line);
    task.image = Some(image.to_string());
    task
}

/// The sandbox of command task `task` under the agent's work dir.
fn sandbox_of(work: &Path, task: &str) -> Option<PathBuf> {
    let executor = format!("command-{task}");
    let mut dirs = vec![work.join("frameworks")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let is_run = path.parent().and_then(Path::parent).is_some_and(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == executor)
            });
            if is_run {
                return Some(path);
            }
            dirs.push(path);
        }
    }
    None
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The memory cgroup directory of `pid` (v1's memory controller, else v2's one hierarchy).
fn memory_cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let v1 = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| PathBuf::from(format!("/sys/fs/cgroup/memory{path}")))
    });
    v1.or_else(|| {
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(PathBuf::from(format!("/sys/fs/cgroup{path}")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_in_a_busybox_image_through_crun() {
    const NAME: &str = "tasks_run_in_a_busybox_image_through_crun";
    let Some(busybox::ContainerKit {
        crun,
        scratch,
        tarball,
    }) = busybox::container_kit(NAME)
    else {
        return;
    };
    init_logs();
    let images = scratch.path().join("images");
    let store = ImageStore::new(&images);
    store
        .import_rootfs(&tarball, "busybox", host_architecture())
        .expect("import busybox");
    store
        .import_rootfs(&tarball, "foreign", busybox::foreign_architecture())
        .expect("import the foreign image");

    let cluster = TestCluster::new();
    // The master keeps the silent agent (and its tasks) across the restart.
    let master = start_master(
        &cluster,
        &MasterConfig {
            agent_timeout_secs: 60.0,
            ..fast_master_config(&cluster)
        },
    )
    .await;
    let options = || AgentOptions {
        cgroups: true,
        containers: Some(ContainersOptions {
            runtime: crun.clone(),
            images: images.clone(),
            preload: None,
            images_budget: None,
        }),
        ..agent_options(&cluster, "pi-boxes", master.addr, Resources::new(2.0, 512))
    };
    let work = options().work_dir;
    let agent = start_agent(&cluster, options()).await;
    wait_for_agents(&master, 1).await;
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "boxes").await;
    let offer = fw.first_offer().await;
    assert_eq!(
        offer.attributes.get("containers").map(String::as_str),
        Some("crun"),
        "the agent advertises its runtime: {:?}",
        offer.attributes
    );
    let release = "release";
    fw.launch(
        &offer,
        vec![
            in_image(
                &offer,
                "hey",
                32,
                "busybox",
                "echo Hey Bramble; test -e /etc/os-release || echo no-host-files; \
                 echo made > \"$MESOS_SANDBOX/made\"; echo oops >&2; exit 3",
            ),
            in_image(
                &offer,
                "forever",
                24,
                "docker.io/library/busybox:latest",
                "while :; do sleep 1; done",
            ),
            in_image(
                &offer,
                "hog",
                16,
                "busybox",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
            ),
            in_image(&offer, "foreign", 16, "foreign", "true"),
            in_image(&offer, "missing", 16, "nosuchimage:1", "true"),
            in_image(
                &offer,
                "outlive",
                16,
                "busybox",
                &format!("while [ ! -e {release} ]; do sleep 0.05; done; echo done"),
            ),
        ],
    );

    // Refused before anything runs, each with its reason.
    let foreign = fw.terminal("foreign").await;
    assert_eq!(foreign.state, TaskState::Failed, "{foreign:?}");
    assert!(
        foreign.message.contains("built for") && foreign.message.contains(host_architecture()),
        "{}",
        foreign.message
    );
    let missing = fw.terminal("missing").await;
    assert_eq!(missing.state, TaskState::Failed, "{missing:?}");
    assert!(
        missing.message.contains("nosuchimage:1") && missing.message.contains("not on this agent"),
        "{}",
        missing.message
    );

    // Output, exit code, the sandbox mounted, the image's files and not the host's.
    let hey = fw.terminal("hey").await;
    assert_eq!(hey.state, TaskState::Failed, "{hey:?}");
    assert_eq!(hey.exit_code, Some(3), "{hey:?}");
    let hey_sandbox = sandbox_of(&work, "hey").expect("hey's sandbox");
    assert_eq!(
        read(&hey_sandbox.join("stdout")),
        "Hey Bramble\nno-host-files\n"
    );
    assert_eq!(read(&hey_sandbox.join("stderr")), "oops\n");
    assert_eq!(read(&hey_sandbox.join("made")), "made\n");

    // The memory limit holds the container's processes.
    let hog = fw.terminal("hog").await;
    assert_eq!(hog.state, TaskState::Failed, "{hog:?}");
    assert_eq!(hog.reason, Some(TaskReason::MemoryLimit), "{hog:?}");

    // The container's processes are in the task's cgroup, with its limit; a kill ends them.
    let forever = fw.state("forever", TaskState::Running).await;
    let supervisor = pid_of(&forever);
    let cgroup = memory_cgroup_of(supervisor).expect("the task's memory cgroup");
    let limit = read(&cgroup.join("memory.limit_in_bytes")) + &read(&cgroup.join("memory.max"));
    assert_eq!(
        limit.trim(),
        (24u64 << 20).to_string(),
        "{}",
        cgroup.display()
    );
    let our_pid_ns = std::fs::read_link("/proc/self/ns/pid").expect("our pid namespace");
    let in_container = eventually("the container's process in the task's cgroup", WAIT, || {
        let procs = read(&cgroup.join("cgroup.procs"));
        let our_pid_ns = our_pid_ns.clone();
        async move {
            procs
                .lines()
                .filter_map(|p| p.trim().parse::<i32>().ok())
                .find(|p| {
                    std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|ns| ns != our_pid_ns)
                })
        }
    })
    .await;
    fw.driver.kill_task("forever".into()).expect("kill");
    let killed = fw.terminal("forever").await;
    assert_eq!(killed.state, TaskState::Killed, "{killed:?}");
    eventually("the container's process is gone", WAIT, || async {
        (!Path::new(&format!("/proc/{in_container}")).exists()).then_some(())
    })
    .await;

    // A container task outlives the agent and is reported by the next one.
    let outlive = fw.state("outlive", TaskState::Running).await;
    let outlive_pid = pid_of(&outlive);
    agent.shutdown_leaving_tasks().await;
    assert!(
        Path::new(&format!("/proc/{outlive_pid}")).exists(),
        "the agent's stop left the container task running"
    );
    let again = start_agent(&cluster, options()).await;
    let sandbox = sandbox_of(&work, "outlive").expect("outlive's sandbox");
    std::fs::write(sandbox.join(release), "").expect("release");
    let done = fw.terminal("outlive").await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(read(&sandbox.join("stdout")), "done\n");

    fw.stop(false).await;
    again.shutdown().await;
    master.shutdown().await;
}
