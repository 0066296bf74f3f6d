//! Replication benchmark: write latency of a 3-node group on loopback QUIC (p50/p99), against
//! a 1-node group as the control (same code, same fsyncs, no replication), and the failover
//! time over N leader kills (each killed leader restarted from its directory). Prints one
//! JSON object. Run through `bench/replica.sh`.
//!
//! Usage: write_latency [WRITES] [KILLS]   (defaults 500 and 20)

#[path = "../tests/common/mod.rs"]
mod common;

use common::{put, Cluster};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn write_latencies(c: &Cluster, writes: usize) -> Vec<Duration> {
    let (leader, _) = c.wait_leader(Duration::from_secs(10)).await;
    let mut out = Vec::with_capacity(writes);
    for i in 0..writes {
        let value = vec![b'x'; 256];
        let started = Instant::now();
        c.node(leader)
            .write(put("bench", &format!("k{i:06}"), &value))
            .await
            .expect("write");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let kills: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let tuning = bramble_replica::Tuning::default();

    let single = Cluster::start(1, tuning.clone()).await;
    let control = write_latencies(&single, writes).await;
    for id in single.alive() {
        single.node(id).shutdown().await.expect("shutdown");
    }

    let mut c = Cluster::start(3, tuning.clone()).await;
    let replicated = write_latencies(&c, writes).await;

    let mut failovers = Vec::with_capacity(kills);
    for _ in 0..kills {
        let (leader, _) = c.wait_leader(Duration::from_secs(10)).await;
        let killed = Instant::now();
        let stopping = c.kill_async(leader);
        c.wait_leader(Duration::from_secs(10)).await;
        failovers.push(killed.elapsed());
        stopping.await.expect("shutdown");
        c.start_node(leader, true).await;
        // Back to three before the next kill: the group agrees on a leader, the restarted
        // node included, and has everything.
        let (leader, _) = c.wait_leader(Duration::from_secs(10)).await;
        c.node(leader)
            .write(put("bench", "sync", b""))
            .await
            .expect("write");
        c.wait_applied(leader, Duration::from_secs(10)).await;
    }
    failovers.sort();
    for id in c.alive() {
        c.node(id).shutdown().await.expect("shutdown");
    }

    let p50 = percentile(&replicated, 0.5);
    let p50_control = percentile(&control, 0.5);
    let report = serde_json::json!({
        "benchmark": "replica",
        "nodes": 3,
        "writes": writes,
        "write_latency_ms": {
            "p50": p50,
            "p99": percentile(&replicated, 0.99),
            "max": percentile(&replicated, 1.0),
        },
        "control_single_node_write_latency_ms": {
            "p50": p50_control,
            "p99": percentile(&control, 0.99),
        },
        "replication_cost_ratio_p50": p50 / p50_control,
        "kills": kills,
        "failover_ms": {
            "median": if failovers.is_empty() { 0.0 } else { percentile(&failovers, 0.5) },
            "max": if failovers.is_empty() { 0.0 } else { percentile(&failovers, 1.0) },
            "target": 2000,
        },
        "tuning": {
            "heartbeat_ms": tuning.heartbeat.as_millis() as u64,
            "election_ms": [tuning.election_min.as_millis() as u64, tuning.election_max.as_millis() as u64],
        },
    });
    println!("{report}");
}
