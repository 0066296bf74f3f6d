//! `bramble display --png FILE`: saves what the master's front panel shows, from a running
//! master or offline from a saved panel state (`bramble::display` does the work).

use super::Target;
use std::path::Path;

/// Fetches the panel from the master; says where the picture went.
pub async fn from_master(
    target: &Target<'_>,
    png: &Path,
    save_state: Option<&Path>,
) -> anyhow::Result<()> {
    bramble::display::from_master(
        target.cluster,
        target.principal,
        target.master,
        png,
        save_state,
    )
    .await?;
    eprintln!("wrote {}", png.display());
    Ok(())
}
