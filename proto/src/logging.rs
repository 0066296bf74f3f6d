//! Process-wide logging and signal handling shared by every Bramble binary.
//!
//! Logs go to stderr (journald collects them under systemd) without ANSI colours when stderr
//! is not a terminal, one line per event.

use std::io::IsTerminal;

/// Installs the tracing subscriber. `filter` (from config) is used unless `RUST_LOG` is set.
pub fn init(filter: Option<&str>) {
    let env = std::env::var("RUST_LOG").ok();
    let directive = env.as_deref().or(filter).unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM (systemd's stop).
pub async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
