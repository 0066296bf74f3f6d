//! `bramble demo`: the throwaway loopback cluster (`bramble::demo`) computing pi, and its
//! answer printed as text or JSON.

use super::{pi::print_answer, print_json, self_executor};
use bramble::demo::{self, DemoOptions};

/// What `bramble demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoCommand {
    pub agents: usize,
    pub terms: u64,
    pub tasks: u64,
    pub cpus_per_agent: Option<f64>,
    pub json: bool,
}

pub fn run(cmd: DemoCommand) -> anyhow::Result<()> {
    anyhow::ensure!(cmd.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(
        cmd.terms >= 1 && cmd.tasks >= 1,
        "--terms and --tasks must be at least 1"
    );
    let opts = DemoOptions {
        agents: cmd.agents,
        terms: cmd.terms,
        tasks: cmd.tasks,
        executor: self_executor("pi")?,
        quiet: cmd.json,
        cpus_per_agent: cmd.cpus_per_agent,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(demo::run(opts))?;
    if cmd.json {
        return print_json(&report);
    }
    print_answer(report.pi, report.correct_digits, report.abs_error);
    println!(
        "{} terms in {} tasks on {} agents: {:.2} s, {:.3e} terms/s (cluster up in {:.2} s)",
        report.terms,
        report.tasks,
        report.agents,
        report.wall_s,
        report.terms_per_s,
        report.startup_s
    );
    Ok(())
}
