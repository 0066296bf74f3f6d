//! Progress bars for long work: drawn on a terminal, silent when output is piped.
//!
//! A bar never freezes silently: its clock keeps ticking, and once nothing has progressed
//! for [`STALL_AFTER`] its message says for how long and what the job is waiting for (an
//! offer, a relaunched chunk on some agent), as the job itself reports it.

use bramble_sdk::JobProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the bar may stand still before it says what the job waits for.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often the bar is redrawn when nothing changes, so its clock and stall notice move.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

/// Follows `progress` on a bar until the sender is dropped. A no-op off a terminal.
pub async fn follow(mut progress: watch::Receiver<JobProgress>, quiet: bool) {
    let draw = !quiet && std::io::stderr().is_terminal();
    let total = progress.borrow().total;
    let bar = if draw {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_done = progress.borrow().done;
    let mut moved_at = Instant::now();
    let mut redraw = tokio::time::interval(REDRAW_EVERY);
    loop {
        {
            let p = progress.borrow_and_update();
            if p.done != last_done {
                last_done = p.done;
                moved_at = Instant::now();
            }
            bar.set_position(p.done);
            bar.set_message(message(&p, moved_at.elapsed()));
            bar.tick();
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = redraw.tick() => {}
        }
    }
    bar.finish_and_clear();
}

/// The bar's message for `p` after `still_for` without progress.
pub fn message(p: &JobProgress, still_for: Duration) -> String {
    let estimate = p
        .estimate
        .map(|e| format!(" pi ≈ {e:.12} ({} digits)", p.correct_digits.unwrap_or(0)))
        .unwrap_or_default();
    let line = format!(
        "{}/{} tasks {:.3e} {}/s{estimate}",
        p.tasks_done, p.tasks_total, p.rate_per_s, p.unit
    );
    if p.finished || still_for < STALL_AFTER {
        return line;
    }
    let waiting = p
        .waiting_for
        .as_deref()
        .map(|w| format!(", waiting for {w}"))
        .unwrap_or_default();
    format!(
        "{}/{} tasks, no progress for {}s{waiting}",
        p.tasks_done,
        p.tasks_total,
        still_for.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(waiting_for: Option<&str>) -> JobProgress {
        JobProgress {
            job: "pi".into(),
            done: 31,
            total: 32,
            unit: "terms".into(),
            rate_per_s: 0.0,
            tasks_done: 31,
            tasks_total: 32,
            estimate: None,
            correct_digits: None,
            elapsed_s: 600.0,
            finished: false,
            waiting_for: waiting_for.map(str::to_string),
        }
    }

    /// Issue 22: the bar stood at 97% 31/32 for ten minutes with no word of why.
    #[test]
    fn a_stalled_bar_says_how_long_and_what_the_job_waits_for() {
        let p = progress(Some("chunk 31 attempt 21 on agent a1"));
        assert!(!message(&p, STALL_AFTER / 2).contains("waiting"));
        let stalled = message(&p, STALL_AFTER + Duration::from_secs(2));
        assert_eq!(
            stalled,
            "31/32 tasks, no progress for 12s, waiting for chunk 31 attempt 21 on agent a1"
        );
        let unknown = message(&progress(None), STALL_AFTER);
        assert_eq!(unknown, "31/32 tasks, no progress for 10s");
    }
}
