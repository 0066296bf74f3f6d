//! The figures of a tiny-task run, computed from what the bench scheduler recorded per task:
//! latency percentiles, the warm-up split and the per-stage breakdown of launch → FINISHED.
//! Pure functions over [`Trace`]s, so the arithmetic is unit-tested apart from any cluster.
//!
//! Stages use the producer's timestamp inside each `TaskStatus` (seconds since the epoch, set
//! by whoever produced the update: the executor, or the agent's command executor) against the
//! framework's wall clock at launch and at the callback. That is only meaningful when the
//! framework and the agents share a clock: a throwaway cluster, or an existing one on this host.

use serde::Serialize;
use std::time::Instant;

/// One status update as the framework saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// The update's own timestamp (its producer's clock), seconds since the epoch.
    pub produced_unix: f64,
    /// When the framework's `status_update` callback got it, seconds since the epoch.
    pub seen_unix: f64,
}

/// One task from just before the driver's launch call to its terminal update.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Just before `launch_tasks` (monotonic, for the latency itself).
    pub launched: Instant,
    /// The same moment on the wall clock, for the stages.
    pub launched_unix: f64,
    /// The first task launched on its agent: it pays for the executor's start-up.
    pub first_on_agent: bool,
    pub running: Option<Seen>,
    pub ended: Option<Ended>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub seen: Seen,
    /// Launch → terminal update seen by the framework, on the monotonic clock.
    pub latency_ms: f64,
    pub finished: bool,
}

/// p50/p99/max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Percentiles by nearest rank over the sorted values (index `round((n-1)·p)`); all zero when
/// there are none.
pub fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        values
            .get(((values.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Spread {
        n: values.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: values.last().copied().unwrap_or(0.0),
    }
}

/// Where launch → FINISHED went, for tasks whose RUNNING and terminal updates both arrived.
/// The first, third and fourth stages add up to the whole (on the wall clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stages {
    pub clock: &'static str,
    /// Launch call → RUNNING produced: framework → master (its commit) → agent → executor.
    pub launch_to_running_produced: Spread,
    /// RUNNING produced → the framework's callback: the update path with nothing behind it.
    pub running_produced_to_seen: Spread,
    /// RUNNING produced → terminal update produced: the executor running the (no-op) task.
    pub running_to_finished_produced: Spread,
    /// Terminal update produced → the framework's callback: executor → agent (on disk) →
    /// master (committed) → framework.
    pub finished_produced_to_seen: Spread,
}

/// What the warm-up tasks cost and whether the percentiles leave them out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warmup {
    pub rule: &'static str,
    pub excluded_from_percentiles: bool,
    /// Launch → terminal update seen, of each agent's first task, in launch order.
    pub latency_ms: Vec<f64>,
}

/// The latency figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub latency: Spread,
    /// The very first task launched: the job's first result, executor start-up included.
    pub first_task_ms: Option<f64>,
    pub warmup: Warmup,
    pub stages: Stages,
}

const CLOCK: &str = "each update's producer timestamp against the framework's wall clock \
                     (valid when they share a host)";
const WARMUP_RULE: &str = "the first task launched on each agent (it waits for the executor \
                           to start)";

/// Summarises `traces` (in launch order). With `exclude_warmup`, each agent's first task is
/// left out of the percentiles and stages (and reported on its own either way).
pub fn summarize(traces: &[Trace], exclude_warmup: bool) -> Summary {
    let counted = || {
        traces
            .iter()
            .filter(move |t| !(exclude_warmup && t.first_on_agent))
    };
    let latency = spread(
        counted()
            .filter_map(|t| Some(t.ended?.latency_ms))
            .collect(),
    );
    let both = || counted().filter_map(|t| Some((t, t.running?, t.ended?.seen)));
    let ms = |a: f64, b: f64| (b - a) * 1000.0;
    let stages = Stages {
        clock: CLOCK,
        launch_to_running_produced: spread(
            both()
                .map(|(t, r, _)| ms(t.launched_unix, r.produced_unix))
                .collect(),
        ),
        running_produced_to_seen: spread(
            both()
                .map(|(_, r, _)| ms(r.produced_unix, r.seen_unix))
                .collect(),
        ),
        running_to_finished_produced: spread(
            both()
                .map(|(_, r, e)| ms(r.produced_unix, e.produced_unix))
                .collect(),
        ),
        finished_produced_to_seen: spread(
            both()
                .map(|(_, _, e)| ms(e.produced_unix, e.seen_unix))
                .collect(),
        ),
    };
    Summary {
        latency,
        first_task_ms: traces.first().and_then(|t| Some(t.ended?.latency_ms)),
        warmup: Warmup {
            rule: WARMUP_RULE,
            excluded_from_percentiles: exclude_warmup,
            latency_ms: traces
                .iter()
                .filter(|t| t.first_on_agent)
                .filter_map(|t| Some(t.ended?.latency_ms))
                .collect(),
        },
        stages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_nearest_ranks_of_the_sorted_values() {
        let s = spread((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (s.n, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 51.0, 99.0, 100.0)
        );
        assert_eq!(spread(vec![]).p99_ms, 0.0);
        assert_eq!(spread(vec![7.0]).p50_ms, 7.0);
    }

    fn trace(first: bool, launched_unix: f64, running: f64, finished: f64) -> Trace {
        let seen = |at: f64| Seen {
            produced_unix: at,
            seen_unix: at + 0.001,
        };
        Trace {
            launched: Instant::now(),
            launched_unix,
            first_on_agent: first,
            running: Some(seen(running)),
            ended: Some(Ended {
                seen: seen(finished),
                latency_ms: (finished + 0.001 - launched_unix) * 1000.0,
                finished: true,
            }),
        }
    }

    #[test]
    fn warmup_is_reported_and_left_out_only_when_asked() {
        // Agent a's first task waited 50 ms for its executor; the rest take 3 ms.
        let traces = vec![
            trace(true, 100.0, 100.049, 100.050),
            trace(false, 101.0, 101.001, 101.002),
            trace(false, 102.0, 102.001, 102.002),
        ];
        let warm = summarize(&traces, true);
        assert_eq!(warm.latency.n, 2);
        assert!((warm.latency.max_ms - 3.0).abs() < 1e-6, "{warm:?}");
        assert_eq!(warm.warmup.latency_ms.len(), 1);
        assert!((warm.first_task_ms.unwrap_or(0.0) - 51.0).abs() < 1e-6);
        let all = summarize(&traces, false);
        assert_eq!(all.latency.n, 3);
        assert!((all.latency.max_ms - 51.0).abs() < 1e-6);
    }

    #[test]
    fn stages_add_up_to_launch_to_finished_seen() {
        let traces = vec![trace(false, 10.0, 10.0004, 10.0010)];
        let s = summarize(&traces, false);
        let st = &s.stages;
        let sum = st.launch_to_running_produced.p50_ms
            + st.running_to_finished_produced.p50_ms
            + st.finished_produced_to_seen.p50_ms;
        assert!((sum - s.latency.p50_ms).abs() < 1e-6, "{st:?} vs {s:?}");
        assert!((st.launch_to_running_produced.p50_ms - 0.4).abs() < 1e-6);
        assert!((st.running_produced_to_seen.p50_ms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_task_without_running_counts_for_latency_but_not_for_stages() {
        let mut t = trace(false, 10.0, 10.001, 10.002);
        t.running = None;
        let s = summarize(&[t], false);
        assert_eq!((s.latency.n, s.stages.finished_produced_to_seen.n), (1, 0));
    }
}
