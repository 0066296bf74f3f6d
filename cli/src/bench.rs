//! `bramble bench …`: the controls and measurements behind `bench/`. Every number is printed
//! as JSON so the scripts under `bench/` can compute ratios against a control measured in the
//! same run (this machine is shared and noisy; absolute times mean little).
//!
//! Here: the kernel control (the pi job's chunks on plain threads). `tasks` times tiny tasks
//! through a cluster; `stats` turns its per-task records into the reported figures; `scale`
//! runs a real master against thousands of simulated agents; `state` times a framework's
//! key/value state writes.

pub mod scale;
mod state;
mod stats;
mod tasks;

pub use scale::{scale, ScaleOptions, ScaleReport};
pub use state::{state, StateReport};
pub use stats::{Spread, Stages, Warmup};
pub use tasks::{tasks, BenchCluster, TaskPath, TasksReport};

use bramble_frameworks::pi::kernel::{chunks, combine, leibniz_range};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct KernelReport {
    pub threads: usize,
    pub terms: u64,
    pub tasks: u64,
    pub wall_s: f64,
    pub terms_per_s: f64,
    pub pi: f64,
}

/// The no-scheduler control: the same chunks the pi job would run, on `threads` plain threads
/// in this process, combined the same way.
pub fn kernel(threads: usize, terms: u64, tasks: u64) -> KernelReport {
    let ranges = chunks(terms, tasks);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(vec![None; ranges.len()]));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let next = next.clone();
            let results = results.clone();
            let ranges = &ranges;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(b, e)) = ranges.get(i) else { break };
                let sum = leibniz_range(b, e);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(sum);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let sums: Vec<_> = results
        .lock()
        .map(|r| r.iter().flatten().copied().collect())
        .unwrap_or_default();
    KernelReport {
        threads,
        terms,
        tasks: ranges.len() as u64,
        wall_s: wall,
        terms_per_s: terms as f64 / wall,
        pi: combine(sums),
    }
}
