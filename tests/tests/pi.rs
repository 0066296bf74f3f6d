//! The pi job on an in-process cluster with real executor processes: the answer is
//! bit-identical whatever the number of agents and however many chunks were lost and run again.

use bramble::pi::scheduler::{initial_progress, run_pi, PiJob, PiResult};
use bramble_proto::identity::Role;
use bramble_proto::task::CommandInfo;
use bramble_proto::Resources;
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::processes::bin_dir;
use bramble_tests::*;
use std::time::Duration;

const TERMS: u64 = 3_000_000_000;
const TASKS: u64 = 24;

fn executor() -> CommandInfo {
    CommandInfo::program(
        bin_dir().join("bramble").display().to_string(),
        vec!["executor".into(), "pi".into()],
    )
}

/// The pi job's cluster: the shared fixture plus the job to run on it.
struct PiCluster(InProcessCluster);

impl std::ops::Deref for PiCluster {
    type Target = InProcessCluster;
    fn deref(&self) -> &InProcessCluster {
        &self.0
    }
}

async fn pi_cluster(agents: usize, cpus: f64) -> PiCluster {
    let names: Vec<String> = (0..agents).map(|i| format!("pi-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    PiCluster(InProcessCluster::start(|_| {}, &names, Resources::new(cpus, 512), false).await)
}

impl PiCluster {
    fn job(&self) -> (SchedulerConfig, PiJob) {
        let config = SchedulerConfig::new(
            self.master.addr,
            self.cluster.credentials(Role::Framework),
            framework_info("pi"),
        );
        (config, PiJob::new(TERMS, TASKS, executor()))
    }

    async fn run(&self) -> PiResult {
        let (config, job) = self.job();
        let (tx, _rx) = tokio::sync::watch::channel(initial_progress(&job));
        tokio::time::timeout(Duration::from_secs(120), run_pi(config, job, tx))
            .await
            .expect("pi job finishes")
            .expect("pi job succeeds")
    }

    async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_is_bit_identical_on_one_agent_and_on_three() {
    let one = pi_cluster(1, 2.0).await;
    let a = one.run().await;
    one.shutdown().await;
    let three = pi_cluster(3, 1.0).await;
    let b = three.run().await;
    assert_eq!(b.agents_used, 3, "{b:?}");
    three.shutdown().await;

    assert_eq!(a.pi.to_bits(), b.pi.to_bits(), "{} vs {}", a.pi, b.pi);
    // The Leibniz partial sum's error is about 1/N.
    assert!((a.abs_error * TERMS as f64 - 1.0).abs() < 1e-3, "{a:?}");
    assert_eq!(a.correct_digits, 9);
    assert_eq!(a.relaunches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_lost_with_a_killed_executor_are_run_again_without_changing_the_answer() {
    let reference = {
        let c = pi_cluster(1, 2.0).await;
        let r = c.run().await;
        c.shutdown().await;
        r
    };
    let c = pi_cluster(2, 1.0).await;
    let (config, job) = c.job();
    let (tx, _rx) = tokio::sync::watch::channel(initial_progress(&job));
    let run = tokio::spawn(run_pi(config, job, tx));
    // SIGKILL the first executor process seen running a chunk.
    let victim = eventually(
        "an executor running a chunk",
        Duration::from_secs(30),
        || async {
            for agent in &c.agents {
                let view = agent.view().await?;
                if let Some(pid) = view
                    .containers
                    .iter()
                    .find(|k| k.pid.is_some() && !k.tasks.is_empty())
                    .and_then(|k| k.pid)
                {
                    return Some(pid);
                }
            }
            None
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill executor");
    let result = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("job finishes")
        .expect("join")
        .expect("job succeeds");
    assert!(
        result.relaunches >= 1,
        "the killed executor's chunk ran again: {result:?}"
    );
    assert_eq!(
        result.pi.to_bits(),
        reference.pi.to_bits(),
        "{} vs {}",
        result.pi,
        reference.pi
    );
    c.shutdown().await;
}
