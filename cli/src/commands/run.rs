//! `bramble run CMD…`: one shell command on the cluster, its output streamed; the process
//! exits with the task's status, as if the command had run here. With `--json`, its final
//! status and output as one JSON object instead (the exit status is the same).

use super::{print_json, Target};
use bramble::run::Output;
use bramble_proto::Resources;

/// Runs `what` (a command joined with spaces, for `/bin/sh -c`; in an image, as program and
/// arguments; after fetching its artifacts) and returns the exit code to leave
/// with: the command's own when it failed with one, 1 for any other unhappy end.
pub async fn run(
    target: &Target<'_>,
    cpus: f64,
    mem: u64,
    what: bramble::run::What,
    json: bool,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        cpus > 0.0 && cpus.is_finite(),
        "--cpus must be a positive number"
    );
    let outcome = bramble::run::run(
        target.cluster,
        target.principal,
        target.master,
        what,
        Resources::new(cpus, mem),
        if json {
            Output::Capture
        } else {
            Output::Stream
        },
    )
    .await?;
    let (code, why) = outcome.verdict();
    if json {
        print_json(&outcome.json())?;
    } else if let Some(why) = why {
        eprintln!("{why}");
    }
    Ok(code)
}
