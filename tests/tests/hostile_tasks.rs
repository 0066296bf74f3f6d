//! Issue 16, end to end in one process: what a task or a framework puts in front of the agent
//! cannot stall it or make it step outside its work dir. A FIFO in a sandbox is refused to
//! operators at once and stalls neither later reads nor later launches.
//! The symlink-swap race is hammered at the sandbox module level (`agent/src/sandbox/`).

use bramble_client::OperatorClient;
use bramble_proto::{Resources, TaskId, TaskState};
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
