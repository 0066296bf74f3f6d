//! `bramble new framework`: the generated crate builds, its own tests pass, and its binary
//! (scheduler and custom executor) runs its tasks on a throwaway cluster, a master and an
//! agent in this process on loopback.

use bramble_tests::processes::bin_dir;
use bramble_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs cargo in the generated crate with the workspace's lock and target dir, so the
/// dependencies it shares with the workspace are not built again.
fn cargo(krate: &Path, args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let status = Command::new(env!("CARGO"))
        .args(args)
        .arg("--quiet")
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .status()
        .expect("running cargo");
    assert!(
        status.success(),
        "cargo {args:?} in the generated crate failed"
    );
}

#[tokio::test]
async fn a_generated_framework_builds_passes_its_tests_and_runs_on_a_cluster() {
    init_logs();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let dir = tempfile::tempdir().expect("tempdir");
    let made = bramble::new_framework::generate(dir.path(), "hello-fw", true, &root.join("sdk"))
        .expect("generate");
    // The workspace's lock: the same dependency versions, already built.
    std::fs::copy(root.join("Cargo.lock"), made.dir.join("Cargo.lock")).expect("copy lock");
    let krate = made.dir.clone();
    tokio::task::spawn_blocking(move || {
        bin_dir();
        cargo(&krate, &["test"]);
        cargo(&krate, &["build"]);
    })
    .await
    .expect("building the generated crate");
    let exe = root.join("target/debug/hello-fw");
    assert!(exe.is_file(), "{} was built", exe.display());

    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let opts = agent_options(
        &cluster,
        "pi-new",
        master.addr,
        bramble_proto::Resources::new(1.0, 512),
    );
    let agent = start_agent(&cluster, opts).await;
    wait_for_agents(&master, 1).await;

    let run = tokio::process::Command::new(&exe)
        .args(["--tasks", "3"])
        .env("BRAMBLE_MASTER", master.addr.to_string())
        .env("BRAMBLE_CLUSTER", cluster.cluster_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the framework finished within 60 s")
        .expect("running the framework");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("hello-fw: 3 of 3 tasks finished, 0 failed"),
        "{stdout}\n{stderr}"
    );
    // Its tasks ran on its own executor, which the agent started from the generated binary.
    let state = master.state().await.expect("state");
    let finished = state
        .completed_tasks
        .iter()
        .filter(|t| t.id.as_str().starts_with("hello-fw-"))
        .count();
    assert_eq!(finished, 3, "{:?}", state.completed_tasks);
    agent.shutdown().await;
    master.shutdown().await;
}
