//! Benchmark: how long an agent takes from process start to registered with the master when
//! it has no master address and must find it by mDNS, on namespaced hosts joined by a bridge
//! (avahi-daemon running on every host when installed). Prints one JSON object on stdout.
//!
//! Each run starts a fresh agent (empty work dir, so a new agent id and a fresh mDNS cache)
//! and polls the master's state from the test process until that agent is listed connected.
//! Root only; run it with `bench/discovery.sh`.
//!
//! A first, separate run starts the agent together with the master (a cluster powering on):
//! the master is still probing its name, so that run includes the master's ~1 s mDNS start-up
//! and is reported apart as `with_master_starting`. The measured runs are spaced by
//! [`GAP`]: a responder multicasts a record at most once a second (RFC 6762 §6), so an agent
//! started right after the previous one registered would wait out that limit, which a Pi
//! booting next to an idle master never does.

use bramble_tests::netns::{self, HostCluster};
use bramble_tests::operator_state;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const RUNS: usize = 10;
const DEADLINE: Duration = Duration::from_secs(30);
const TARGET_MS: f64 = 1000.0;
/// Pause between runs (see the module header).
const GAP: Duration = Duration::from_millis(1500);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if netns::skip("bench-discovery") {
        return;
    }
    let mut hc = HostCluster::new(1).await;
    let mut seen: HashSet<String> = HashSet::new();
    let with_master_starting = run_once(&mut hc, &mut seen, "with the master starting").await;
    let mut samples_ms = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        tokio::time::sleep(GAP).await;
        samples_ms.push(run_once(&mut hc, &mut seen, &format!("run {run}")).await);
    }
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[RUNS / 2 - 1] + sorted[RUNS / 2]) / 2.0;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let samples: Vec<String> = samples_ms.iter().map(|v| round(*v).to_string()).collect();
    println!(
        "{{\"benchmark\":\"discovery_agent_start_to_registered\",\"unit\":\"ms\",\"runs\":{RUNS},\
         \"median\":{},\"min\":{},\"max\":{},\"target\":{TARGET_MS},\"meets_target\":{},\
         \"samples\":[{}],\"with_master_starting\":{},\"profile\":\"{}\",\"avahi\":{}}}",
        round(median),
        round(sorted[0]),
        round(sorted[RUNS - 1]),
        median <= TARGET_MS,
        samples.join(","),
        round(with_master_starting),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        hc.has_avahi(),
    );
}

/// Starts a fresh agent and returns the milliseconds until the master lists it connected.
async fn run_once(hc: &mut HostCluster, seen: &mut HashSet<String>, what: &str) -> f64 {
    if let Some(mut old) = hc.agents[0].take() {
        old.kill_hard();
    }
    hc.wipe_agent(0);
    let started = Instant::now();
    hc.start_agent(0);
    let id = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: the agent did not register within {DEADLINE:?}"
        );
        if let Ok(state) = operator_state(&hc.cluster, hc.master_addr()).await {
            if let Some(a) = state
                .agents
                .iter()
                .find(|a| a.connected && !seen.contains(a.id.as_str()))
            {
                break a.id.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("{what}: {id} registered {ms:.0} ms after its process started");
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("{}", hc.agent_log(0));
    }
    seen.insert(id);
    ms
}
