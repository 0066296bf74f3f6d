//! Issue 16, end to end in one process: what a task or a framework puts in front of the agent
//! cannot stall it or make it step outside its work dir. A FIFO in a sandbox is refused to
//! operators at once and stalls neither later reads nor later launches; task ids that would
//! name directories outside the work dir are refused with a reason and create nothing.
//! The symlink-swap race is hammered at the sandbox module level (`agent/src/sandbox/`).

use bramble_client::OperatorClient;
use bramble_proto::{Resources, TaskId, TaskReason, TaskState};
use bramble_tests::framework::shell_task;
use bramble_tests::*;
use std::time::Duration;

/// How long one sandbox read may take before it counts as stalled.
const READ_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_fifo_in_a_sandbox_is_refused_at_once_and_stalls_no_later_read_or_launch() {
    const READS: usize = 40;
    let c = InProcessCluster::start(|_| {}, &["pi-fifo"], Resources::new(2.0, 512), false).await;
    let mut fw = c.framework("fifo").await;
    let offer = fw.offer_from("pi-fifo").await;
    let maker = "mkfifo pipe && echo ready && exec sleep 600";
    fw.launch_one(&offer, shell_task(&offer, "maker", 0.1, 16, maker))
        .await;
    let mut op = OperatorClient::connect(&c.cluster.cluster_dir(), c.master.addr)
        .await
        .expect("operator");
    let task = TaskId("maker".into());
    // Polled: the task says when its FIFO is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = op.read_sandbox(&fw.id, &task, "stdout", 0).await;
        if read.is_ok_and(|chunk| chunk.data.starts_with(b"ready")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "maker never said ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for i in 0..READS {
        let read = tokio::time::timeout(READ_DEADLINE, op.read_sandbox(&fw.id, &task, "pipe", 0))
            .await
            .unwrap_or_else(|_| panic!("read {i} of the FIFO still waiting after 5 s"));
        let err = read.expect_err("a FIFO is not read").to_string();
        assert!(err.contains("FIFO"), "read {i}: {err}");
    }
    let stdout = tokio::time::timeout(READ_DEADLINE, op.read_sandbox(&fw.id, &task, "stdout", 0))
        .await
        .expect("a normal read answers")
        .expect("stdout reads");
    assert_eq!(stdout.data, b"ready\n");
    op.close();

    let offer = fw.offer_from("pi-fifo").await;
    fw.launch(
        &offer,
        vec![shell_task(&offer, "after", 0.1, 16, "echo fine")],
    );
    let after = fw.terminal("after").await;
    assert_eq!(after.state, TaskState::Finished, "{after:?}");

    fw.stop(false).await;
    tokio::time::timeout(Duration::from_secs(30), c.shutdown())
        .await
        .expect("the cluster shuts down with no thread stuck on the FIFO");
}

#[tokio::test]
async fn task_ids_that_would_leave_the_work_dir_are_refused_and_create_nothing() {
    let c = InProcessCluster::start(|_| {}, &["pi-ids"], Resources::new(2.0, 512), false).await;
    let work_dir = c.cluster.path("pi-ids");
    let mut fw = c.framework("ids").await;
    let long = "x".repeat(10 * 1024);
    let bad = [
        "../../etc",
        "../../escaped",
        "..",
        "a/b",
        "nul\0byte",
        long.as_str(),
    ];
    let offer = fw.offer_from("pi-ids").await;
    // Each writes a marker if it ever runs, wherever its sandbox is.
    let tasks = bad
        .iter()
        .map(|id| shell_task(&offer, id, 0.1, 16, "touch ran-here"))
        .collect();
    fw.launch(&offer, tasks);
    for id in bad {
        let status = fw.terminal(id).await;
        assert_eq!(status.state, TaskState::Error, "{id:?}: {status:?}");
        assert_eq!(status.reason, Some(TaskReason::InvalidTask), "{id:?}");
        assert!(status.message.contains("task id"), "{}", status.message);
    }

    // Nothing was made for them, inside the work dir or next to it.
    let frameworks = work_dir.join("frameworks");
    let made: Vec<_> = std::fs::read_dir(&frameworks)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
    for outside in ["etc", "escaped", "ran-here"] {
        let path = c.cluster.path(outside);
        assert!(!path.exists(), "{} exists", path.display());
    }

    // A good id still runs.
    let offer = fw.offer_from("pi-ids").await;
    fw.launch(&offer, vec![shell_task(&offer, "good", 0.1, 16, "true")]);
    assert_eq!(fw.terminal("good").await.state, TaskState::Finished);
    fw.stop(false).await;
    c.shutdown().await;
}
