//! `bramble-image flash IMG DEVICE`: write an image to a card, read it back to verify, then
//! write this card's own settings (role, hostname) into its `bramble.toml`.
//!
//! Every check happens before the first byte is written: the device is safe to overwrite
//! (see `devices.rs`), big enough, and the per-card settings are valid. The read-back
//! bypasses the page cache (`POSIX_FADV_DONTNEED` after `fsync`), so it reads the card and
//! not our own memory of what we sent.

use crate::devices::{self, HostView, Refusal, Target};
use crate::fat::BootFs;
use crate::imagefile::{self, read_full};
use crate::part::Table;
use crate::settings::{self, SettingsUpdate};
use crate::BuildError;
use bramble_node::{self as node, RoleSetting};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CHUNK: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct FlashOptions {
    pub image: PathBuf,
    pub device: PathBuf,
    pub role: Option<RoleSetting>,
    pub hostname: Option<String>,
    pub force: bool,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub device: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    pub write_seconds: f64,
    pub verify_seconds: f64,
    pub role: Option<String>,
    pub hostname: Option<String>,
}

/// Checks that `device` may be written; the refusals that `force` does not lift.
pub fn check_device(device: &Path, force: bool, view: &HostView) -> Result<Target, BuildError> {
    let target = devices::classify(device, view).map_err(BuildError::Device)?;
    if let Target::Block { name, .. } = &target {
        let refusals: Vec<Refusal> = devices::refusals(name, view)
            .into_iter()
            .filter(|r| !(force && r.forceable()))
            .collect();
        if !refusals.is_empty() {
            let msgs: Vec<String> = refusals.iter().map(|r| r.message(device)).collect();
            return Err(BuildError::Device(format!(
                "refusing to write: {}",
                msgs.join("; ")
            )));
        }
    }
    Ok(target)
}

pub fn flash(opts: &FlashOptions) -> Result<FlashReport, BuildError> {
    if let Some(h) = &opts.hostname {
        node::check_hostname(h).map_err(BuildError::Usage)?;
    }
    if std::fs::canonicalize(&opts.image).ok() == std::fs::canonicalize(&opts.device).ok() {
        return Err(BuildError::Usage("the device is the image itself".into()));
    }
    let target = check_device(&opts.device, opts.force, &HostView::system())?;
    let mut input = imagefile::open_image(&opts.image)?;
    let known_len = if imagefile::is_xz(&opts.image) {
        None
    } else {
        Some(
            std::fs::metadata(&opts.image)
                .map_err(|e| BuildError::io("reading", &opts.image, e))?
                .len(),
        )
    };

    let mut out = match &target {
        Target::File(p) => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p),
        Target::Block { path, .. } => OpenOptions::new().write(true).open(path),
    }
    .map_err(|e| BuildError::io("opening", &opts.device, e))?;
    if let (Target::Block { .. }, Some(len)) = (&target, known_len) {
        let capacity = out
            .seek(SeekFrom::End(0))
            .and_then(|c| out.seek(SeekFrom::Start(0)).map(|_| c))
            .map_err(|e| BuildError::io("sizing", &opts.device, e))?;
        if capacity < len {
            return Err(BuildError::Device(format!(
                "{} holds {} MiB, the image needs {} MiB",
                opts.device.display(),
                capacity >> 20,
                len.div_ceil(1 << 20)
            )));
        }
    }

    tracing::info!(image = %opts.image.display(), device = %opts.device.display(), "writing");
    let bar = progress_bar(opts.progress, known_len, "writing");
    let started = Instant::now();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    loop {
        let n = read_full(&mut input, &mut buf)
            .map_err(|e| BuildError::io("reading", &opts.image, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| BuildError::io("writing", &opts.device, e))?;
        ctx.update(&buf[..n]);
        written += n as u64;
        bar.set_position(written);
    }
    out.sync_all()
        .map_err(|e| BuildError::io("syncing", &opts.device, e))?;
    drop_cache(&out);
    drop(out);
    bar.finish_and_clear();
    let write_seconds = started.elapsed().as_secs_f64();
    let sha256 = hex::encode(ctx.finish());

    let started = Instant::now();
    let bar = progress_bar(opts.progress, Some(written), "verifying");
    let mut dev =
        File::open(&opts.device).map_err(|e| BuildError::io("opening", &opts.device, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = written;
    while left > 0 {
        let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = read_full(&mut dev, &mut buf[..want])
            .map_err(|e| BuildError::io("reading back", &opts.device, e))?;
        if n == 0 {
            return Err(BuildError::Device(format!(
                "{} ended after {} of {written} bytes while verifying",
                opts.device.display(),
                written - left
            )));
        }
        ctx.update(&buf[..n]);
        left -= n as u64;
        bar.set_position(written - left);
    }
    bar.finish_and_clear();
    let read_back = hex::encode(ctx.finish());
    if read_back != sha256 {
        return Err(BuildError::Device(format!(
            "verification failed: {} reads back different bytes than were written (sha256 {read_back} vs {sha256}); the card may be faulty or fake",
            opts.device.display()
        )));
    }
    let verify_seconds = started.elapsed().as_secs_f64();

    if opts.role.is_some() || opts.hostname.is_some() {
        per_card_settings(&opts.device, opts.role, opts.hostname.as_deref())?;
    }
    Ok(FlashReport {
        device: opts.device.clone(),
        bytes: written,
        sha256,
        write_seconds,
        verify_seconds,
        role: opts.role.map(|r| r.as_str().to_owned()),
        hostname: opts.hostname.clone(),
    })
}

/// Writes `role`/`hostname` into the card's `bramble.toml` and reads it back.
pub fn per_card_settings(
    device: &Path,
    role: Option<RoleSetting>,
    hostname: Option<&str>,
) -> Result<(), BuildError> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| BuildError::io("opening", device, e))?;
    let len = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| BuildError::io("sizing", device, e))?;
    let table = Table::read(&mut dev, device)?;
    let (boot_part, _) = table.pi_layout(device, len)?;
    let update = SettingsUpdate {
        cluster_name: None,
        role,
        hostname,
    };
    let boot = BootFs::open(&dev, boot_part)?;
    let existing = boot.read(node::SETTINGS_FILE)?.ok_or_else(|| {
        BuildError::Device(
            "the card has no bramble.toml on its boot partition: not a Bramble image, so --role/--hostname cannot be set".into(),
        )
    })?;
    let (text, _) = settings::update(Some(&String::from_utf8_lossy(&existing)), &update)?;
    boot.write(node::SETTINGS_FILE, text.as_bytes())?;
    boot.close()?;
    dev.sync_all()
        .map_err(|e| BuildError::io("syncing", device, e))?;
    drop_cache(&dev);
    let boot = BootFs::open(&dev, boot_part)?;
    let back = boot.read(node::SETTINGS_FILE)?.unwrap_or_default();
    boot.close()?;
    if back != text.as_bytes() {
        return Err(BuildError::Device(format!(
            "{}: bramble.toml reads back different from what was written",
            device.display()
        )));
    }
    Ok(())
}

/// Drops the device's pages from the cache so the next read goes to the card.
fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

fn progress_bar(show: bool, len: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(l) => indicatif::ProgressBar::new(l),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = if len.is_some() {
        "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg:>9} {spinner} {bytes} {bytes_per_sec}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Reads a little of a device or file (for tests and inspection of what was written).
pub fn read_prefix(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; n];
    let got = read_full(&mut f, &mut buf)?;
    buf.truncate(got);
    Ok(buf)
}
