//! The scale simulator in CI (issue 17): a real `bramble-master` process against 200
//! simulated agents (each its own QUIC connection, mutual TLS, the normal hello, register and
//! heartbeats) and two SDK frameworks launching tasks, then a SIGKILL of the master and a
//! restart on its store. Short and with deadlines: the 10,000- and 50,000-agent runs are
//! `bench/scale.sh`'s.

use bramble::bench::{scale, ScaleOptions};
use bramble_tests::processes::bin_dir;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_agents_register_run_tasks_and_come_back_after_a_master_kill() {
    let mut opts = ScaleOptions::new(200, bin_dir().join("bramble-master"));
    opts.frameworks = 2;
    opts.task_rate = 100.0;
    opts.duration = Duration::from_secs(3);
    opts.idle = Duration::from_secs(1);
    // Tasks of 1–3 s: some are running when the master is killed.
    opts.mean_task = Duration::from_secs(2);
    opts.register_deadline = Duration::from_secs(40);
    let report = tokio::time::timeout(Duration::from_secs(150), scale(opts))
        .await
        .expect("the run finished within its deadline")
        .expect("the run succeeded");
    let json = serde_json::to_string_pretty(&report).expect("report as JSON");
    eprintln!("{json}");

    // Every agent registered (scale() fails otherwise); the master admitted them all.
    assert_eq!(report.agents, 200);
    // The operator client read every agent, in pages.
    assert_eq!(report.operator_state_idle.agents, 200, "{json}");
    // The frameworks were offered resources and launched, and saw their tasks run.
    assert!(report.launch.launched >= 100, "{json}");
    assert!(report.launch.latency.n >= 100, "{json}");
    assert!(report.allocation_cycle.passes > 0, "{json}");
    // The master came back and took every agent back under its id, tasks and all.
    let restart = report.restart.as_ref().expect("the master was restarted");
    assert_eq!(restart.agents_forgotten, 0, "{json}");
    assert!(restart.tasks_live_at_kill > 0, "{json}");
    assert_eq!(report.tasks.lost, 0, "{json}");
    assert_eq!(report.tasks.other_terminal, 0, "{json}");
    assert_eq!(report.tasks.unfinished, 0, "{json}");
    assert_eq!(
        report.tasks.finished, report.tasks.launched,
        "every task launched finished: {json}"
    );
}

/// The master's answer to more agents than it admits at once (issue 17): with room for one
/// admission at a time, agents dialling together are told "busy, retry in N ms", come back
/// at their appointments, and all get in — none gives up, none times out waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_admitting_one_at_a_time_answers_busy_and_everyone_gets_in() {
    let mut opts = ScaleOptions::new(150, bin_dir().join("bramble-master"));
    opts.master_env = vec![("BRAMBLE_MASTER_MAX_ADMITTING".into(), "1".into())];
    opts.frameworks = 1;
    opts.task_rate = 10.0;
    opts.duration = Duration::from_secs(1);
    opts.idle = Duration::from_millis(500);
    opts.mean_task = Duration::from_millis(500);
    opts.restart = false;
    opts.register_deadline = Duration::from_secs(60);
    let report = tokio::time::timeout(Duration::from_secs(120), scale(opts))
        .await
        .expect("the run finished within its deadline")
        .expect("the run succeeded: every agent registered");
    let json = serde_json::to_string_pretty(&report).expect("report as JSON");
    eprintln!("{json}");
    assert_eq!(report.operator_state_idle.agents, 150, "{json}");
    assert!(
        report.registration.busy > 0,
        "150 agents dialling at once into one admission slot: some were told busy: {json}"
    );
    assert_eq!(report.tasks.lost, 0, "{json}");
}
