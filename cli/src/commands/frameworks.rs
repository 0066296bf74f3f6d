//! `bramble factorial|hello|http`: the small built-in frameworks (`bramble-frameworks`), run
//! against the cluster with their results or events printed; and `bramble serve-dir`
//! (hidden), the program the `http` service's task runs on an agent.

use super::{ctrl_c, print_json, self_executor, Target};
use anyhow::Context;
use bramble_frameworks::{run_factorial, run_hello_in, run_http, serve_dir, HttpJob, ServiceEvent};
use bramble_proto::task::CommandInfo;
use std::path::PathBuf;

/// The name of the hidden subcommand the `http` task runs.
pub const SERVE_DIR: &str = "serve-dir";

/// Prints a service's events to stdout, one line each, as they happen.
fn print_event(event: &ServiceEvent) {
    println!("{event}");
}

/// n! for each number, printed in the order given (`n! = …` lines, or one JSON report).
pub async fn factorial(target: &Target<'_>, numbers: Vec<u64>, json: bool) -> anyhow::Result<()> {
    let config = target.scheduler_config("factorial")?;
    let report = run_factorial(config, numbers, self_executor("factorial")?).await?;
    if json {
        print_json(&report)?;
    } else {
        for (n, value) in &report.results {
            println!("{n}! = {value}");
        }
    }
    Ok(())
}

/// The hello shell task (in `image` when given), until Ctrl-C.
pub async fn hello(target: &Target<'_>, image: Option<String>) -> anyhow::Result<()> {
    run_hello_in(
        target.scheduler_config("hello")?,
        image,
        ctrl_c(),
        print_event,
    )
    .await?;
    Ok(())
}

/// The directory-listing service, served by this binary's `serve-dir` on an agent, until
/// Ctrl-C.
pub async fn http(target: &Target<'_>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let serve = CommandInfo::program(exe.display().to_string(), vec![SERVE_DIR.into()]);
    let config = target.scheduler_config("http")?;
    run_http(config, HttpJob::new(serve), ctrl_c(), print_event).await?;
    Ok(())
}

/// `bramble serve-dir`: serves `dir` on `port` until SIGTERM.
pub fn serve(port: u16, dir: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve_dir(port, dir))
}
