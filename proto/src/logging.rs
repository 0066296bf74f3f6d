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

/// Installs the subscriber for a command a person types (the `bramble` CLI): lines read as the
/// command's own output, `warning: …`/`error: …` with no timestamp, level column or ANSI codes,
/// so a warning interleaves with tables and progress without looking like a daemon's log.
/// `filter` as for [`init`].
pub fn init_cli(filter: Option<&str>) {
    let _ = tracing::subscriber::set_global_default(cli_subscriber(filter, std::io::stderr));
}

fn cli_subscriber<W>(filter: Option<&str>, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let env = std::env::var("RUST_LOG").ok();
    let directive = env.as_deref().or(filter).unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_new(directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .event_format(Plain)
        .finish()
}

/// `warning: message key=value`: the level as a word only where it matters, nothing else.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        match *event.metadata().level() {
            tracing::Level::ERROR => write!(writer, "error: ")?,
            tracing::Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn cli_lines_carry_no_timestamp_or_level_column() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = cli_subscriber(Some("info"), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(agent = "a1", "agent a1 is unhealthy");
            tracing::error!("the master refused this operator");
            tracing::info!("3 tasks");
            tracing::debug!("not shown");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            text,
            "warning: agent a1 is unhealthy agent=\"a1\"\nerror: the master refused this operator\n3 tasks\n"
        );
    }
}
