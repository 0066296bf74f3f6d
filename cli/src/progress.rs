//! Progress bars for long work: drawn on a terminal, silent when output is piped.

use bramble_sdk::JobProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tokio::sync::watch;

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
    loop {
        {
            let p = progress.borrow_and_update();
            bar.set_position(p.done);
            let estimate = p
                .estimate
                .map(|e| format!("pi ≈ {e:.12} ({} digits)", p.correct_digits.unwrap_or(0)))
                .unwrap_or_default();
            bar.set_message(format!(
                "{}/{} tasks {:.3e} {}/s {estimate}",
                p.tasks_done, p.tasks_total, p.rate_per_s, p.unit
            ));
        }
        if progress.changed().await.is_err() {
            break;
        }
    }
    bar.finish_and_clear();
}
