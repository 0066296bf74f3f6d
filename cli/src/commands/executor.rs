//! `bramble executor pi|factorial|serve` (hidden): the built-in frameworks' executors, started
//! by an agent with the arguments [`arguments`] builds (or, for `serve`, named in a service's
//! `[executor]`), never by hand. The executors themselves
//! are in `bramble-frameworks`; this only picks one and runs it until its agent is done.

use bramble_frameworks::{FactorialExecutor, PiExecutor, ServeExecutor};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ExecutorKind {
    /// The pi job's executor.
    Pi,
    /// The factorial job's executor.
    Factorial,
    /// Serves each task's directory (its data; default the sandbox) over HTTP on the task's
    /// first port until the task is killed: a service's `[executor]`.
    Serve,
}

/// The arguments that make this binary run the executor `kind` (`pi`, `factorial`).
pub fn arguments(kind: &str) -> Vec<String> {
    vec!["executor".into(), kind.into()]
}

/// Runs the executor until its agent lets it go.
pub fn run(kind: ExecutorKind) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match kind {
            ExecutorKind::Pi => {
                bramble_sdk::run_executor(PiExecutor::default()).await?;
            }
            ExecutorKind::Factorial => {
                bramble_sdk::run_executor(FactorialExecutor::default()).await?;
            }
            ExecutorKind::Serve => {
                bramble_sdk::run_executor(ServeExecutor::default()).await?;
            }
        }
        Ok(())
    })
}
