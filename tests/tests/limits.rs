//! Every container is limited (root only: cgroups). A command task's container gets its
//! task's cpu and memory; a custom executor's gets its own declared share plus its tasks';
//! every container gets the agent's `pids.max`. Read from the cgroup files of the running
//! containers, v1 or v2, whichever the machine has.

use bramble_agent::checkpoint::Checkpoints;
use bramble_agent::paths::WorkDir;
use bramble_agent::AgentOptions;
use bramble_proto::identity::Role;
use bramble_proto::{Resources, TaskState};
use bramble_tests::framework::{shell_task, TestExecutor, TestFramework};
use bramble_tests::*;
use std::path::PathBuf;

/// The tests' custom executor (`tests/src/bin/test-executor.rs`): its own share is 0.1 cpu
/// and 32 MiB, each task 0.1 cpu and 16 MiB.
const EXECUTOR: TestExecutor = TestExecutor(env!("CARGO_BIN_EXE_test-executor"));

/// A container's limits as its cgroup files say: (cpus, memory MiB, pids), `None` where a
/// file is missing or says "unlimited".
#[derive(Debug, PartialEq)]
struct Limits {
    cpus: Option<f64>,
    mem_mib: Option<u64>,
    pids: Option<u64>,
}

fn read(dirs: &[PathBuf], file: &str) -> Option<String> {
    dirs.iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|s| s.trim().to_string())
}

fn limits_of(dirs: &[PathBuf]) -> Limits {
    let mem_mib = read(dirs, "memory.max")
        .or_else(|| read(dirs, "memory.limit_in_bytes"))
        .and_then(|s| s.parse::<u64>().ok())
        .map(|bytes| bytes >> 20)
        // v1 says "unlimited" with a number near 2^63.
        .filter(|mib| *mib < 1 << 40);
    let cpus = match read(dirs, "cpu.max") {
        Some(v2) => {
            let mut parts = v2.split_whitespace();
            let quota = parts.next().and_then(|q| q.parse::<f64>().ok());
            let period = parts.next().and_then(|p| p.parse::<f64>().ok());
            quota.zip(period).map(|(q, p)| q / p)
        }
        None => {
            let quota = read(dirs, "cpu.cfs_quota_us").and_then(|q| q.parse::<f64>().ok());
            let period = read(dirs, "cpu.cfs_period_us").and_then(|p| p.parse::<f64>().ok());
            quota
                .zip(period)
                .filter(|(q, _)| *q > 0.0)
                .map(|(q, p)| q / p)
        }
    };
    let pids = read(dirs, "pids.max").and_then(|p| p.parse().ok());
    Limits {
        cpus,
        mem_mib,
        pids,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_tasks_and_custom_executors_get_cpu_memory_and_pids_limits() {
    if !is_root() {
        eprintln!(
            "SKIP command_tasks_and_custom_executors_get_cpu_memory_and_pids_limits: needs root for cgroups"
        );
        return;
    }
    init_logs();
    let cluster = TestCluster::new();
    let master = start_master(&cluster, &fast_master_config(&cluster)).await;
    let opts = AgentOptions {
        cgroups: true,
        pids_max: 300,
        ..agent_options(&cluster, "pi-limits", master.addr, Resources::new(2.0, 512))
    };
    let work = opts.work_dir.clone();
    let agent = start_agent(&cluster, opts).await;
    wait_for_agents(&master, 1).await;
    let mut fw =
        TestFramework::start(master.addr, cluster.credentials(Role::Framework), "limits").await;
    let offer = fw.offer_from("pi-limits").await;
    fw.launch(
        &offer,
        vec![
            shell_task(&offer, "cmd", 0.5, 48, "exec sleep 600"),
            EXECUTOR.task(&offer, "exec", "sleep"),
        ],
    );
    fw.state("cmd", TaskState::Running).await;
    fw.state("exec", TaskState::Running).await;

    let runs = Checkpoints::open(&WorkDir::new(&work))
        .expect("open checkpoints")
        .load_runs()
        .expect("read run checkpoints");
    let dirs_of = |executor: bool| -> Vec<PathBuf> {
        runs.iter()
            .find(|r| r.executor.is_some() == executor)
            .map(|r| r.cgroup_dirs.clone())
            .unwrap_or_default()
    };
    let (command, executor) = (dirs_of(false), dirs_of(true));
    if command.is_empty() {
        eprintln!(
            "SKIP command_tasks_and_custom_executors_get_cpu_memory_and_pids_limits: the agent \
             found no usable cgroups here (see its startup line)"
        );
    } else {
        assert_eq!(
            limits_of(&command),
            Limits {
                cpus: Some(0.5),
                mem_mib: Some(48),
                pids: Some(300)
            },
            "command task's cgroup {command:?}"
        );
        // The executor's own 0.1 cpu and 32 MiB, and its task's 0.1 cpu and 16 MiB.
        let got = limits_of(&executor);
        assert_eq!(
            got.mem_mib,
            Some(48),
            "executor's cgroup {executor:?}: {got:?}"
        );
        assert_eq!(
            got.pids,
            Some(300),
            "executor's cgroup {executor:?}: {got:?}"
        );
        let cpus = got.cpus.expect("an executor's cpu limit");
        assert!((cpus - 0.2).abs() < 1e-6, "executor's cpus {cpus}");
    }
    fw.driver.kill_task("cmd".into()).expect("kill");
    fw.driver.kill_task("exec".into()).expect("kill");
    fw.terminal("cmd").await;
    fw.terminal("exec").await;
    fw.stop(false).await;
    agent.shutdown().await;
    master.shutdown().await;
}
