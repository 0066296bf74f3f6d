//! Bramble's built-in frameworks and the executors they run, written against `bramble-sdk`
//! only, as any outside framework would be: nothing here knows the master's or the agent's
//! insides. The `bramble` CLI parses arguments and prints; it calls in here to run a job,
//! and its hidden `bramble executor …` / `bramble serve-dir` subcommands are these executors.
//!
//! - [`pi`]: the showcase job — pi from the Leibniz series, chunks on every agent, a
//!   bit-reproducible answer, a journal so a restarted scheduler resumes the same job;
//! - [`factorial`]: a batch job with a custom executor; one task per number, exact results
//!   carried back in the reliable FINISHED update, lost tasks relaunched, results in input
//!   order;
//! - [`hello`]: a long-running *shell* task run by the agent's built-in command executor,
//!   killed when the caller says so;
//! - [`http`]: a long-running service on a port taken from the offer, serving a directory
//!   listing ([`serve_dir`]);
//! - [`services`]: the service framework — many services from stored TOML specs, each kept
//!   at its instance count (`bramble service …`);
//! - [`serve_executor`]: a custom executor whose tasks are web servers until killed
//!   (`bramble executor serve`), what a service's `[executor]` can name.
//!
//! `hello` and `http` are the same shape — one long-running task, relaunched if its agent is
//! lost, killed on request, framework torn down after — so that shape lives once, in
//! [`service`], and the two modules only say which task to build from an offer. Likewise the
//! pi and factorial executors are one [`compute_executor`] fed two computations, and their
//! task ids come from one [`attempt_id`] scheme.

pub mod attempt_id;
pub mod compute_executor;
mod dir_server;
pub mod factorial;
pub mod hello;
pub mod http;
pub mod offers;
pub mod pi;
pub mod serve_executor;
pub mod service;
pub mod services;
#[cfg(test)]
mod test_support;

pub use factorial::{run_factorial, FactorialExecutor, FactorialReport, MAX_FACTORIAL_INPUT};
pub use hello::{run_hello, run_hello_in, HelloOutcome};
pub use http::{run_http, serve_dir, HttpJob, HttpOutcome};
pub use pi::executor::PiExecutor;
pub use serve_executor::ServeExecutor;
pub use service::{ServiceEvent, ServiceOutcome};
