//! `bramble pi`: opens (or resumes) the job's journal, says what it found, runs the job
//! (`bramble_frameworks::pi`) with a progress bar and prints the answer.

use super::Target;
use anyhow::Context;
use bramble_frameworks::pi::journal::{self, JobSpec, Journal, Opening};
use bramble_frameworks::pi::scheduler::{
    initial_progress, run_pi_durable, Durable, PiJob, PiResult,
};
use bramble_sdk::{framework_info, CommandInfo, SchedulerConfig};
use std::path::PathBuf;

/// The failover timeout `bramble pi` asks for unless told otherwise: long enough to notice a
/// crash and start the command again.
pub const DEFAULT_FAILOVER_TIMEOUT_SECS: f64 = 120.0;

/// What `bramble pi` was asked to do.
#[derive(Debug, Clone)]
pub struct PiCommand {
    pub terms: u64,
    pub tasks: u64,
    pub executor: CommandInfo,
    /// `None`: [`journal::default_path`].
    pub journal: Option<PathBuf>,
    /// Discard an unfinished journal instead of resuming (or refusing) it.
    pub fresh: bool,
    pub failover_timeout_secs: f64,
    pub json: bool,
}

/// How agents start the pi executor: `PATH executor pi` when `--executor PATH` was given,
/// else this very program.
pub fn executor(path: Option<String>) -> anyhow::Result<CommandInfo> {
    match path {
        Some(path) => Ok(CommandInfo::program(path, super::executor::arguments("pi"))),
        None => super::self_executor("pi"),
    }
}

/// Runs the command; the result is printed by the caller's choice of format here.
pub async fn run(cmd: PiCommand, target: &Target<'_>) -> anyhow::Result<()> {
    let creds = target.framework_creds()?;
    anyhow::ensure!(
        cmd.terms >= 1 && cmd.tasks >= 1,
        "--terms and --tasks must be at least 1"
    );
    anyhow::ensure!(
        cmd.failover_timeout_secs.is_finite() && cmd.failover_timeout_secs >= 0.0,
        "--failover-timeout must be a number of seconds, 0 or more"
    );
    let path = match cmd.journal.clone() {
        Some(p) => p,
        None => journal::default_path().context(
            "no place for the job journal: set XDG_STATE_HOME or HOME, or pass --journal FILE",
        )?,
    };
    let spec = JobSpec::new(cmd.terms, cmd.tasks);
    let (journal, opening) = Journal::open(&path, spec, cmd.fresh)?;
    eprintln!("journal: {}", path.display());
    let recovered = match opening {
        Opening::New => None,
        Opening::ReplacedFinished { spec } => {
            eprintln!("the journal's previous job ({spec}) had finished; starting a new one");
            None
        }
        Opening::Discarded { spec } => {
            match spec {
                Some(spec) => eprintln!("--fresh: discarded an unfinished job ({spec}); its tasks run until its framework's failover timeout"),
                None => eprintln!("--fresh: discarded an unreadable journal"),
            }
            None
        }
        Opening::Resume(r) => {
            let done: std::collections::HashSet<usize> =
                r.results.iter().map(|(i, _)| *i).collect();
            eprintln!(
                "resuming job {spec}, framework id {}, {} of {} chunks done",
                r.framework_id
                    .as_ref()
                    .map_or_else(|| "(none yet)".to_string(), ToString::to_string),
                done.len(),
                spec.chunks
            );
            Some(r)
        }
    };
    let job = PiJob::new(cmd.terms, cmd.tasks, cmd.executor.clone());
    let mut info = framework_info(job.name());
    info.failover_timeout_secs = cmd.failover_timeout_secs;
    let (tx, rx) = tokio::sync::watch::channel(initial_progress(&job));
    let bar = tokio::spawn(bramble::progress::follow(rx, cmd.json));
    let running = run_pi_durable(
        target.follows(SchedulerConfig::new(target.master, creds, info)),
        job,
        Some(Durable { journal, recovered }),
        tx,
    );
    let result = tokio::select! {
        result = running => result,
        _ = super::ctrl_c() => {
            // Every launch and result is in the journal before it counts: stopping here
            // loses nothing. The job's sender is gone, so the bar clears itself.
            let _ = bar.await;
            let resume = resume_command(&cmd);
            eprintln!(
                "{}",
                bramble::progress::interrupted_hint(&path, &resume, cmd.failover_timeout_secs)
            );
            // 128 + SIGINT, as a shell reports a command Ctrl-C ended.
            std::process::exit(130);
        }
    };
    let _ = bar.await;
    print(&result?, cmd.json)
}

/// The command that resumes this job: the same job spec, and the journal if it was named.
fn resume_command(cmd: &PiCommand) -> String {
    let journal = cmd
        .journal
        .as_ref()
        .map(|p| format!(" --journal {}", p.display()))
        .unwrap_or_default();
    format!(
        "bramble pi --terms {} --tasks {}{journal}",
        cmd.terms, cmd.tasks
    )
}

fn print(r: &PiResult, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    print_answer(r.pi, r.correct_digits, r.abs_error);
    println!(
        "{} terms in {} tasks on {} agents: {:.2} s, {:.3e} terms/s, {} relaunched",
        r.terms, r.tasks, r.agents_used, r.wall_s, r.terms_per_s, r.relaunches
    );
    if r.resumed {
        println!(
            "resumed: {} chunks from the journal, {} counted now, {} repeated results ignored",
            r.chunks.restored, r.chunks.counted, r.chunks.duplicates_ignored
        );
    }
    Ok(())
}

/// The first line of a pi job's text output: the estimate and how good it is.
pub fn print_answer(pi: f64, correct_digits: u32, abs_error: f64) {
    println!("pi ≈ {pi:.15}  ({correct_digits} correct digits, error {abs_error:.3e})");
}
