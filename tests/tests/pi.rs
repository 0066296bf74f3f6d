//! The pi job on an in-process cluster with real executor processes: the answer is
//! bit-identical whatever the number of agents and however many chunks were lost and run again.

use bramble_frameworks::pi::scheduler::{initial_progress, run_pi, PiJob, PiResult};
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

/// `bramble pi` as a real process against `master`, stdout and stderr to files in `dir`.
struct PiProcess {
    child: std::process::Child,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl PiProcess {
    fn spawn(c: &PiCluster, dir: &std::path::Path, name: &str, args: &[String]) -> PiProcess {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = std::process::Command::new(bin_dir().join("bramble"))
            .arg("--master")
            .arg(c.master.addr.to_string())
            .arg("--cluster")
            .arg(c.cluster.cluster_dir())
            .arg("pi")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("starting bramble pi");
        PiProcess {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit; its status, stdout and stderr.
    async fn wait(mut self, deadline: Duration) -> (std::process::ExitStatus, String, String) {
        let status = eventually("bramble pi exits", deadline, || {
            let exited = self.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        (status, out, self.stderr())
    }

    /// Its JSON result, after checking it succeeded.
    async fn result(self) -> (serde_json::Value, String) {
        let (status, out, err) = self.wait(Duration::from_secs(180)).await;
        assert!(status.success(), "bramble pi failed ({status}): {err}");
        let json = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("bramble pi --json printed {out:?}: {e}; stderr {err}"));
        (json, err)
    }
}

impl Drop for PiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bramble_pi_killed_mid_job_resumes_from_its_journal_with_identical_bits() {
    use bramble_frameworks::pi::journal;
    const TERMS: &str = "4800000000";
    const CHUNKS: u64 = 48;
    let c = pi_cluster(2, 1.0).await;
    let dir = c.cluster.path("pi-runs");
    std::fs::create_dir_all(&dir).expect("dir");
    let args = |journal: &std::path::Path, tasks: u64| -> Vec<String> {
        vec![
            "--terms".into(),
            TERMS.into(),
            "--tasks".into(),
            tasks.to_string(),
            "--journal".into(),
            journal.display().to_string(),
            "--failover-timeout".into(),
            "60".into(),
            "--json".into(),
        ]
    };

    let t0 = std::time::Instant::now();
    // The fault-free run.
    let reference_journal = dir.join("reference.journal");
    let (reference, _) = PiProcess::spawn(&c, &dir, "reference", &args(&reference_journal, CHUNKS))
        .result()
        .await;
    let ref_bits = reference["pi_bits"].as_str().expect("pi_bits").to_string();
    assert_eq!(reference["resumed"], false, "{reference}");
    assert_eq!(reference["chunks"]["counted"], CHUNKS, "{reference}");
    let done = journal::read(&reference_journal).expect("reference journal");
    assert!(
        done.recovered.finished.is_some(),
        "the journal is marked finished"
    );

    // The same job, killed with SIGKILL once a few chunks are counted.
    let path = dir.join("job.journal");
    let mut first = PiProcess::spawn(&c, &dir, "first", &args(&path, CHUNKS));
    let counted_before_kill = eventually(
        "a few chunks counted in the journal",
        Duration::from_secs(60),
        || async {
            let n = journal::read(&path).ok()?.recovered.results.len();
            (n >= 3).then_some(n)
        },
    )
    .await;
    eprintln!(
        "{:?}: SIGKILL after {counted_before_kill} chunks",
        t0.elapsed()
    );
    first.child.kill().expect("SIGKILL bramble pi");
    let _ = first.child.wait();
    let at_kill = journal::read(&path).expect("journal after the kill");
    let restored = at_kill.recovered.results.len() as u64;
    assert!(restored >= counted_before_kill as u64);
    assert!(
        restored < CHUNKS && at_kill.recovered.finished.is_none(),
        "the job finished before it could be killed; make it longer"
    );
    let framework_id = at_kill
        .recovered
        .framework_id
        .clone()
        .expect("the framework id is journaled");

    // Another job on the same journal is refused and the journal is left as it was.
    let before = std::fs::read(&path).expect("journal bytes");
    let (status, _, err) = PiProcess::spawn(&c, &dir, "other", &args(&path, CHUNKS + 1))
        .wait(Duration::from_secs(30))
        .await;
    assert!(!status.success(), "a different job was not refused: {err}");
    assert!(err.contains("--fresh"), "{err}");
    assert_eq!(std::fs::read(&path).expect("journal bytes"), before);

    // Started again with the same journal: resumes the same framework and finishes the job.
    let (resumed, err) = PiProcess::spawn(&c, &dir, "second", &args(&path, CHUNKS))
        .result()
        .await;
    eprintln!(
        "{:?}: reference: {reference}\nresumed after SIGKILL: {resumed}",
        t0.elapsed()
    );
    assert!(
        err.contains(&format!(
            "framework id {framework_id}, {restored} of {CHUNKS} chunks done"
        )) && err.contains("resuming job"),
        "{err}"
    );
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["framework_id"], framework_id.as_str(), "{resumed}");
    assert_eq!(
        resumed["pi_bits"],
        ref_bits.as_str(),
        "{resumed} vs {reference}"
    );
    let counts = &resumed["chunks"];
    assert_eq!(counts["restored"], restored, "{resumed}");
    assert_eq!(
        counts["counted"],
        CHUNKS - restored,
        "no chunk counted twice: {resumed}"
    );
    assert_eq!(counts["duplicates_disagreeing"], 0, "{resumed}");
    let end = journal::read(&path).expect("final journal");
    assert_eq!(
        end.recovered.results.len() as u64,
        CHUNKS,
        "every chunk once"
    );
    assert_eq!(
        end.recovered.finished.map(|b| format!("{b:016x}")),
        Some(ref_bits)
    );
    // Finished means torn down: the master forgets the framework.
    eventually(
        "the framework is torn down",
        Duration::from_secs(10),
        || async {
            let s = c.master.state().await.ok()?;
            s.frameworks
                .iter()
                .all(|f| f.id != framework_id)
                .then_some(())
        },
    )
    .await;
    c.shutdown().await;
}
