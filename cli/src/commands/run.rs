//! `bramble run CMD…`: one shell command on the cluster, its output streamed; the process
//! exits with the task's status, as if the command had run here.

use super::Target;
use bramble_proto::Resources;

/// Runs `command` (joined with spaces, for `/bin/sh -c`; in an image, as program and
/// arguments) and returns the exit code to leave
/// with: the command's own when it failed with one, 1 for any other unhappy end.
pub async fn run(
    target: &Target<'_>,
    cpus: f64,
    mem: u64,
    image: Option<String>,
    command: Vec<String>,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        cpus > 0.0 && cpus.is_finite(),
        "--cpus must be a positive number"
    );
    let what = bramble::run::What::new(command, image);
    let outcome = bramble::run::run(
        target.cluster,
        target.principal,
        target.master,
        what,
        Resources::new(cpus, mem),
    )
    .await?;
    let (code, why) = outcome.verdict();
    if let Some(why) = why {
        eprintln!("{why}");
    }
    Ok(code)
}
