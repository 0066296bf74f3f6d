//! The other frameworks from the Mesos tutorials, each a small model of one way to use the
//! cluster:
//!
//! - [`factorial`]: a batch job with a custom executor; one task per number, exact results
//!   carried back in the reliable FINISHED update, lost tasks relaunched, results in input
//!   order;
//! - [`hello`]: a long-running *shell* task run by the agent's built-in command executor,
//!   killed when the caller says so;
//! - [`http`]: a long-running service on a port taken from the offer, serving a directory
//!   listing ([`serve_dir`]).
//!
//! `hello` and `http` are the same shape — one long-running task, relaunched if its agent is
//! lost, killed on request, framework torn down after — so that shape lives once, in
//! [`service`], and the two modules only say which task to build from an offer.
//!
//! # Wiring in `main.rs`
//!
//! The binary stays thin; these are the calls it makes (`config` is a `SchedulerConfig` for
//! the master, as for `pi`; `self_executor` and the exe path as `main.rs` already builds them):
//!
//! ```text
//! bramble factorial N…      let report = frameworks::factorial::run_factorial(
//!                               config, numbers, self_executor("factorial")?).await?;
//!                           for (n, value) in &report.results { println!("{n}! = {value}"); }
//! bramble hello             let outcome = frameworks::hello::run_hello(
//!                               config, ctrl_c(), frameworks::print_event).await?;
//! bramble http [--dir D]    let serve = CommandInfo::program(exe, vec!["serve-dir".into()]);
//!                           let outcome = frameworks::http::run_http(
//!                               config, HttpJob::new(serve), ctrl_c(),
//!                               frameworks::print_event).await?;
//! bramble executor factorial   (hidden, started by agents)
//!                           bramble_sdk::run_executor(
//!                               frameworks::factorial::FactorialExecutor::default()).await?;
//! bramble serve-dir --port P --dir D   (hidden, the http task's program; `--port` may come
//!                           from the `PORT` environment variable)
//!                           frameworks::http::serve_dir(port, dir).await?;
//! ```
//!
//! where `ctrl_c()` is `async { let _ = tokio::signal::ctrl_c().await; }`.

mod dir_server;
pub mod factorial;
pub mod hello;
pub mod http;
pub mod service;

pub use factorial::{run_factorial, FactorialExecutor, FactorialReport, MAX_FACTORIAL_INPUT};
pub use hello::{run_hello, HelloOutcome};
pub use http::{run_http, serve_dir, HttpJob, HttpOutcome};
pub use service::{ServiceEvent, ServiceOutcome};

/// Prints a service's events to stdout, one line each: the reporter `main.rs` passes to
/// [`run_hello`] and [`run_http`].
pub fn print_event(event: &ServiceEvent) {
    println!("{event}");
}
