//! `bramble display --png FILE`: what the master's OLED shows, as a picture — from a running
//! master (exactly the frame on the glass), or offline from a saved panel state.

use anyhow::{bail, Context};
use bramble_client::OperatorClient;
use bramble_firmware::{render_png, PanelSize, PanelState, Screen};
use std::net::SocketAddr;
use std::path::Path;

/// PNG scale for offline renders (128×64 → 512×256), as the master serves.
const SCALE: u32 = 4;

/// Fetches the panel from a running master; writes the PNG and, when asked, the state it shows.
pub async fn from_master(
    cluster: &Path,
    principal: Option<&str>,
    master: SocketAddr,
    png_out: &Path,
    state_out: Option<&Path>,
) -> anyhow::Result<()> {
    let mut op = OperatorClient::connect_as(cluster, principal, master).await?;
    let panel = op.panel().await;
    op.close();
    let panel = panel?;
    std::fs::write(png_out, panel.png).with_context(|| format!("writing {}", png_out.display()))?;
    if let Some(path) = state_out {
        std::fs::write(path, panel.state_json)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Renders a saved panel state (JSON, as `--save-state` writes it) without any master.
pub fn offline(
    state_file: &Path,
    png_out: &Path,
    size: &str,
    screen: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(state_file)
        .with_context(|| format!("reading {}", state_file.display()))?;
    let state: PanelState = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a panel state", state_file.display()))?;
    let size = match size {
        "128x64" => PanelSize::W128xH64,
        "128x32" => PanelSize::W128xH32,
        other => bail!("--size {other}: use 128x64 or 128x32"),
    };
    let screen = match screen {
        None => None,
        Some("cluster") => Some(Screen::Cluster),
        Some("pi") => Some(Screen::Pi),
        Some(other) => bail!("--screen {other}: use cluster or pi"),
    };
    std::fs::write(png_out, render_png(&state, size, screen, SCALE))
        .with_context(|| format!("writing {}", png_out.display()))
}
