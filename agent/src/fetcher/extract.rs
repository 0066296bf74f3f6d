//! Unpacking a fetched `.tar`, `.tar.gz` or `.tgz` into the sandbox, as root, before the task
//! exists — so nothing in the archive may reach outside the sandbox. Every entry is checked
//! before it is written: a relative path of plain components (no `..`, not absolute), a
//! regular file, a directory or a symlink whose target stays inside the sandbox (relative,
//! never climbing above it); hard links, devices and FIFOs are refused, and the tar crate's
//! own `unpack_in` also refuses to write through a link leaving the directory. Modes keep
//! only their permission bits (no setuid), owners are not taken from the archive (the
//! fetcher hands everything to the task's user afterwards), and the unpacked size and the
//! number of entries are bounded, so a small archive cannot fill the card.

use bramble_proto::artifact::ArchiveKind;
use std::io::Read;
use std::path::{Component, Path};

/// Most entries one archive may hold.
pub const MAX_ENTRIES: u64 = 100_000;

/// Unpacks `archive` into `dest`, at most `max_bytes` of file contents; the bytes unpacked.
pub(super) fn unpack(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
    max_bytes: u64,
) -> Result<u64, String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Tar => Box::new(std::io::BufReader::new(file)),
        ArchiveKind::TarGz => Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))),
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(false);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut total = 0u64;
    let mut count = 0u64;
    for entry in tar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let path = entry
            .path()
            .map_err(|e| format!("an entry's name: {e}"))?
            .into_owned();
        check_entry_path(&path)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                total = total.saturating_add(entry.size());
                if total > max_bytes {
                    return Err(format!(
                        "unpacks to more than {} MiB (four times `[fetch] max_mb`)",
                        max_bytes >> 20
                    ));
                }
            }
            tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("{}: link target: {e}", path.display()))?
                    .ok_or_else(|| format!("{}: a symlink with no target", path.display()))?
                    .into_owned();
                check_link_target(&path, &target)?;
            }
            // PAX and GNU extension headers are read by the tar crate itself.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::Link => {
                return Err(format!(
                    "{}: hard links in archives are not supported",
                    path.display()
                ))
            }
            other => {
                return Err(format!(
                    "{}: {other:?} entries (devices, FIFOs…) are not unpacked",
                    path.display()
                ))
            }
        }
        let written = entry
            .unpack_in(dest)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !written {
            return Err(format!("{}: leaves the sandbox", path.display()));
        }
    }
    Ok(total)
}

/// An entry's path: relative, plain components (a leading `./` is fine).
fn check_entry_path(path: &Path) -> Result<(), String> {
    for part in path.components() {
        if let Component::ParentDir | Component::RootDir | Component::Prefix(_) = part {
            return Err(format!(
                "{}: an entry outside the sandbox (absolute or with '..')",
                path.display()
            ));
        }
    }
    Ok(())
}

/// A symlink at `path` pointing at `target` must stay inside the sandbox: relative, and never
/// climbing above the sandbox from the link's directory.
fn check_link_target(path: &Path, target: &Path) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "{}: a symlink out of the sandbox (to {})",
            path.display(),
            target.display()
        ))
    };
    // The link's own directory, as a depth below the sandbox.
    let mut depth: i64 = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as i64
        - 1;
    for part in target.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return refuse();
                }
            }
            Component::RootDir | Component::Prefix(_) => return refuse(),
        }
    }
    Ok(())
}
