//! Progress bars for long work: drawn on a terminal, silent when output is piped.
//!
//! A bar never freezes silently: its clock keeps ticking, and once nothing has progressed
//! for [`STALL_AFTER`] its message says for how long and what the job is waiting for (an
//! offer, a relaunched chunk on some agent), as the job itself reports it.
//!
//! The whole line fits an 80-column terminal: the bar's fixed part is [`FIXED_WIDTH`] columns
//! and the message is cut to [`MESSAGE_WIDTH`]. It shows an ETA from the job's own rate.

use bramble_sdk::JobProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the bar may stand still before it says what the job waits for.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often the bar is redrawn when nothing changes, so its clock and stall notice move.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

/// The bar's template: clock (its ticking shows the bar is alive), bar, percentage, then the
/// message.
const TEMPLATE: &str = "{elapsed_precise} {bar:10} {percent:>3}% {msg}";
/// Columns the template takes before the message: 8 + 1 + 10 + 1 + 4 + 1.
pub const FIXED_WIDTH: usize = 25;
/// Columns left for the message on an 80-column terminal (one spare: a terminal wraps a line
/// that fills its last column).
pub const MESSAGE_WIDTH: usize = 80 - 1 - FIXED_WIDTH;

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
        ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar()),
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

/// The bar's message for `p` after `still_for` without progress, at most [`MESSAGE_WIDTH`]
/// characters.
pub fn message(p: &JobProgress, still_for: Duration) -> String {
    let line = if p.finished || still_for < STALL_AFTER {
        let estimate = p
            .estimate
            .map(|e| format!(" pi≈{e:.10}"))
            .unwrap_or_default();
        format!(
            "{}/{} ETA {} {:.1e}/s{estimate}",
            p.tasks_done,
            p.tasks_total,
            eta(p).map_or_else(|| "--".to_string(), short_duration),
            p.rate_per_s
        )
    } else {
        let (done, total, still) = (p.tasks_done, p.tasks_total, short_duration(still_for));
        match p.waiting_for.as_deref() {
            Some(w) => format!("{done}/{total} waiting {still} for {w}"),
            None => format!("{done}/{total} no progress for {still}"),
        }
    };
    fit(&line, MESSAGE_WIDTH)
}

/// Time left at the job's current rate; `None` before there is a rate.
pub fn eta(p: &JobProgress) -> Option<Duration> {
    if p.finished || p.done >= p.total {
        return Some(Duration::ZERO);
    }
    if !(p.rate_per_s.is_finite() && p.rate_per_s > 0.0) {
        return None;
    }
    let secs = (p.total - p.done) as f64 / p.rate_per_s;
    Duration::try_from_secs_f64(secs).ok()
}

/// `42s`, `3m05s`, `2h07m`: short enough for a bar.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `text` cut to `width` characters, the last one `…` when something was cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What `bramble pi` says when Ctrl-C stops it: the job is not lost, and how to go on.
pub fn interrupted_hint(journal: &std::path::Path, resume: &str, failover_secs: f64) -> String {
    format!(
        "interrupted: the job is journalled in {}; run `{resume}` to resume it (its tasks keep running for {failover_secs:.0}s meanwhile)",
        journal.display()
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
            "31/32 waiting 12s for chunk 31 attempt 21 on agent a1"
        );
        let unknown = message(&progress(None), STALL_AFTER);
        assert_eq!(unknown, "31/32 no progress for 10s");
    }

    #[test]
    fn the_bar_shows_an_eta_from_the_jobs_rate() {
        let mut p = progress(None);
        p.done = 1_000;
        p.total = 61_000;
        p.rate_per_s = 100.0;
        assert_eq!(eta(&p), Some(Duration::from_secs(600)));
        assert!(message(&p, Duration::ZERO).starts_with("31/32 ETA 10m00s 1.0e2/s"));
        p.rate_per_s = 0.0;
        assert_eq!(eta(&p), None);
        assert!(message(&p, Duration::ZERO).contains("ETA --"));
        p.finished = true;
        assert_eq!(eta(&p), Some(Duration::ZERO));
        assert_eq!(short_duration(Duration::from_secs(7_620)), "2h07m");
    }

    #[test]
    fn the_whole_line_fits_80_columns() {
        let mut p = progress(Some(&"a very long reason ".repeat(10)));
        p.done = 1;
        p.total = u64::MAX;
        p.tasks_done = 123_456;
        p.tasks_total = 1_000_000;
        p.rate_per_s = 1.234e12;
        p.estimate = Some(std::f64::consts::PI);
        for still in [Duration::ZERO, STALL_AFTER * 100] {
            let m = message(&p, still);
            assert!(m.chars().count() <= MESSAGE_WIDTH, "{m}");
            // The message starts right after the fixed part; column 80 stays free.
            assert!(FIXED_WIDTH + m.chars().count() < 80, "{m}");
        }
        // The template's fixed part is what FIXED_WIDTH says: each placeholder at its width.
        let fixed = TEMPLATE
            .replace("{elapsed_precise}", "00:00:00")
            .replace("{bar:10}", &"#".repeat(10))
            .replace("{percent:>3}", "100")
            .replace("{msg}", "");
        assert!(
            !fixed.contains('{'),
            "a placeholder not accounted for: {fixed}"
        );
        assert_eq!(fixed.chars().count(), FIXED_WIDTH, "{fixed:?}");
    }

    #[test]
    fn ctrl_c_says_where_the_job_is_and_how_to_resume_it() {
        let hint = interrupted_hint(
            std::path::Path::new("/tmp/pi.journal"),
            "bramble pi --terms 1e9 --tasks 32",
            120.0,
        );
        assert!(hint.contains("journalled in /tmp/pi.journal"), "{hint}");
        assert!(
            hint.contains("`bramble pi --terms 1e9 --tasks 32`"),
            "{hint}"
        );
        assert!(hint.contains("120s"), "{hint}");
    }
}
