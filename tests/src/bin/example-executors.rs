//! The example frameworks' programs that agents start, as one binary of the test crate, so
//! the example tests do not depend on how `bramble`'s `main.rs` spells its subcommands:
//!
//! - `example-executors factorial` — what `bramble executor factorial` runs;
//! - `example-executors serve-dir --port P --dir D` — what `bramble serve-dir` runs
//!   (`--port` falls back to `$PORT`, `--dir` to `.`).

use anyhow::{bail, Context};
use bramble_frameworks::{factorial::FactorialExecutor, http::serve_dir};
use std::path::PathBuf;

fn serve_dir_args(args: &[String]) -> anyhow::Result<(u16, PathBuf)> {
    let mut port = std::env::var("PORT").ok();
    let mut dir = PathBuf::from(".");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.clone()),
            "--dir" => dir = PathBuf::from(value),
            other => bail!("unknown argument {other:?} (expected --port P --dir D)"),
        }
    }
    let port = port.context("no --port and no PORT in the environment")?;
    let port = port
        .parse()
        .with_context(|| format!("port {port:?} is not a number"))?;
    Ok((port, dir))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bramble_proto::logging::init(None);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("factorial") => {
            bramble_sdk::run_executor(FactorialExecutor::default()).await?;
            Ok(())
        }
        Some("serve-dir") => {
            let (port, dir) = serve_dir_args(&args[1..])?;
            serve_dir(port, dir).await
        }
        _ => bail!("usage: example-executors factorial | serve-dir --port P --dir D"),
    }
}
