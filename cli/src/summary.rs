//! `bramble status` and `bramble agents` at any cluster size: the status comes from the
//! master's counts (`ClusterCounts`, one small reply whether there are 3 agents or 50,000),
//! never from every agent, and `agents` shows the first [`AGENTS_SHOWN`] unless `--all`.

use crate::ops::pct;
use bramble_proto::messages::{ClusterCounts, ClusterState, JobSummary};
use bramble_proto::TaskState;
use std::fmt::Write as _;

/// Agents `bramble agents` lists without `--all`.
pub const AGENTS_SHOWN: u32 = 50;

/// What `bramble status` prints: the counts, and from the head (the first page's rest of
/// the state) the jobs in flight.
pub fn status_text(counts: &ClusterCounts, head: &ClusterState) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
    let c = counts;
    line!("cluster   {}", head.cluster_id);
    line!("agents    {} up / {} known", c.agents_connected, c.agents);
    for (id, hostname, why) in &c.unhealthy {
        line!("unhealthy {hostname} ({id}): {why}");
    }
    let unlisted = c.agents_unhealthy.saturating_sub(c.unhealthy.len() as u64);
    if unlisted > 0 {
        line!("unhealthy ... and {unlisted} more (bramble agents --all)");
    }
    for (id, hostname) in &c.draining {
        line!("drained   {hostname} ({id}): offered nothing until `bramble agent undrain`");
    }
    let unlisted = c.agents_draining.saturating_sub(c.draining.len() as u64);
    if unlisted > 0 {
        line!("drained   ... and {unlisted} more (bramble agents --all)");
    }
    line!(
        "cpus      {:.1} / {:.1} allocated ({})",
        c.allocated.cpus(),
        c.total.cpus(),
        pct(c.allocated.cpus(), c.total.cpus())
    );
    line!(
        "memory    {} / {} MiB allocated ({})",
        c.allocated.mem_mib,
        c.total.mem_mib,
        pct(c.allocated.mem_mib as f64, c.total.mem_mib as f64)
    );
    line!(
        "frameworks {} ({} connected)",
        c.frameworks,
        c.frameworks_connected
    );
    let live: u64 = c
        .tasks_by_state
        .iter()
        .filter(|(s, _)| !s.is_terminal())
        .map(|(_, n)| n)
        .sum();
    line!("tasks     {live} live, {} listed{}", c.tasks(), by_state(c));
    line!("offers    {} outstanding", c.offers_outstanding);
    for job in &head.jobs {
        line!("{}", job_line(job));
    }
    out
}

/// " (3 running, 1 staging)", or nothing without tasks.
fn by_state(c: &ClusterCounts) -> String {
    let parts: Vec<String> = c
        .tasks_by_state
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {}", state_word(*s)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn state_word(s: TaskState) -> String {
    s.name().trim_start_matches("TASK_").to_lowercase()
}

/// A running job's line in `bramble status` (also the full-state status in `ops.rs`).
pub(crate) fn job_line(job: &JobSummary) -> String {
    let p = &job.progress;
    let estimate = p
        .estimate
        .map(|e| {
            format!(
                ", estimate {e:.12} ({} digits)",
                p.correct_digits.unwrap_or(0)
            )
        })
        .unwrap_or_default();
    format!(
        "job       {} ({}): {}/{} {} ({}){estimate}{}",
        p.job,
        job.framework_name,
        p.done,
        p.total,
        p.unit,
        pct(p.done as f64, p.total as f64),
        if p.finished { ", finished" } else { "" }
    )
}

/// The line after a shortened agent list, if it was shortened.
pub fn agents_left_out(shown: usize, counts: &ClusterCounts) -> Option<String> {
    let left = counts.agents.saturating_sub(shown as u64);
    (left > 0).then(|| {
        format!(
            "... {shown} of {} agents shown (first by id); bramble agents --all lists every one",
            counts.agents
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::messages::ClusterState;
    use bramble_proto::{AgentId, Resources};

    fn head() -> ClusterState {
        ClusterState {
            cluster_id: "c1".into(),
            agents: Vec::new(),
            frameworks: Vec::new(),
            tasks: Vec::new(),
            jobs: Vec::new(),
            offers_outstanding: 0,
            completed_tasks: Vec::new(),
            offers: Vec::new(),
        }
    }

    #[test]
    fn the_status_is_the_counts_and_names_a_bounded_few_unhealthy_agents() {
        let counts = ClusterCounts {
            agents: 10_000,
            agents_connected: 9_998,
            agents_unhealthy: 23,
            unhealthy: vec![(AgentId("a7".into()), "pi-7".into(), "executors fail".into())],
            frameworks: 10,
            frameworks_connected: 9,
            tasks_by_state: [(TaskState::Running, 4000), (TaskState::Staging, 12)].into(),
            offers_outstanding: 5,
            total: Resources::new(40_000.0, 40_960_000),
            allocated: Resources::new(10_000.0, 1_024_000),
            agents_draining: 1,
            draining: vec![(AgentId("a3".into()), "pi-3".into())],
        };
        let text = status_text(&counts, &head());
        assert!(text.contains("drained   pi-3 (a3)"), "{text}");
        assert!(text.contains("agents    9998 up / 10000 known"), "{text}");
        assert!(
            text.contains("unhealthy pi-7 (a7): executors fail"),
            "{text}"
        );
        assert!(text.contains("... and 22 more"), "{text}");
        assert!(
            text.contains("cpus      10000.0 / 40000.0 allocated (25%)"),
            "{text}"
        );
        assert!(
            text.contains("tasks     4012 live, 4012 listed (12 staging, 4000 running)"),
            "{text}"
        );
        assert!(text.contains("frameworks 10 (9 connected)"), "{text}");
        assert!(
            text.lines().count() < 15,
            "a summary, not a listing: {text}"
        );
    }

    #[test]
    fn a_shortened_agent_list_says_so_and_a_whole_one_does_not() {
        let counts = ClusterCounts {
            agents: 120,
            ..ClusterCounts::default()
        };
        let note = agents_left_out(50, &counts).expect("shortened");
        assert!(
            note.contains("50 of 120") && note.contains("--all"),
            "{note}"
        );
        let counts = ClusterCounts {
            agents: 50,
            ..ClusterCounts::default()
        };
        assert_eq!(agents_left_out(50, &counts), None);
    }
}
