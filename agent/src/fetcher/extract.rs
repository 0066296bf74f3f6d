//! Unpacking a fetched `.tar`, `.tar.gz` or `.tgz` into the sandbox, as root, before the task
//! exists — so nothing in the archive may reach outside the sandbox. Every entry is checked
//! before it is written: a relative path of plain components (no `..`, not absolute), a
//! regular file, a directory or a symlink whose target stays inside the sandbox; hard links,
//! devices and FIFOs are refused, and the tar crate's own `unpack_in` also refuses to write
//! through a link leaving the directory. Modes keep only their permission bits (no setuid),
//! owners are not taken from the archive (the fetcher hands everything to the task's user
//! afterwards), and the unpacked size, the number of entries, the bytes read between two
//! entries (GNU long names and PAX headers are read whole into memory by the tar crate) and
//! the time taken are bounded, so a small archive can neither fill the card nor its memory.
//!
//! Symlinks: a target is relative, climbs only at its start (`../../lib/x`, never
//! `a/../../x`), and climbs no higher than the link's directory *as it is on disk* (its
//! canonical path below the sandbox). A purely lexical count is not enough: with `p -> .`
//! already unpacked, `p/p/p/../../..` counts as staying inside but the kernel resolves it
//! above the sandbox. With every link held to this rule, every link's climb ends at a real
//! directory inside, and every name after it descends from there, through real directories
//! or through links that (by the same rule) stay inside.

use bramble_proto::artifact::ArchiveKind;
use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path};
use std::rc::Rc;
use std::time::Instant;

/// Most entries one archive may hold.
pub const MAX_ENTRIES: u64 = 100_000;
/// Bytes the tar crate may read beyond an entry's own contents before yielding the next one:
/// padding, headers and the GNU long-name and PAX entries it reads whole into memory.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// The decompressed stream, cut off when the current allowance or the deadline runs out.
struct Budgeted<R> {
    inner: R,
    allowance: Rc<Cell<u64>>,
    deadline: Instant,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::other(
                "unpacking took longer than `[fetch] timeout_secs`",
            ));
        }
        let left = self.allowance.get();
        if left == 0 {
            return Err(std::io::Error::other(format!(
                "more than {} KiB of headers between two entries",
                MAX_METADATA_BYTES >> 10
            )));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.allowance.set(left - n as u64);
        Ok(n)
    }
}

/// Unpacks `archive` into `dest`, at most `max_bytes` of file contents, by `deadline`; the
/// bytes unpacked.
pub(super) fn unpack(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
    max_bytes: u64,
    deadline: Instant,
) -> Result<u64, String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Tar => Box::new(std::io::BufReader::new(file)),
        ArchiveKind::TarGz => Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))),
    };
    let allowance = Rc::new(Cell::new(MAX_METADATA_BYTES));
    let reader = Budgeted {
        inner: reader,
        allowance: allowance.clone(),
        deadline,
    };
    let root = dest
        .canonicalize()
        .map_err(|e| format!("the sandbox {}: {e}", dest.display()))?;
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
        // This entry's contents (files only: anything else declaring a size is refused when
        // the tar crate skips it), its padding, and the next entry's headers.
        let contents = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => entry.size(),
            _ => 0,
        };
        allowance.set(
            contents
                .saturating_add(511)
                .saturating_add(MAX_METADATA_BYTES),
        );
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
                check_link_target(&root, &path, &target)?;
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

/// A symlink at `path` (below the sandbox `root`, canonical) pointing at `target` must stay
/// inside: relative, climbing only at its start, and no higher than the link's directory is
/// deep on disk (see the module's comment).
fn check_link_target(root: &Path, path: &Path, target: &Path) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{}: a symlink out of the sandbox (to {}): {why}",
            path.display(),
            target.display()
        ))
    };
    let mut climb = 0usize;
    let mut descended = false;
    for part in target.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if !descended => climb += 1,
            Component::ParentDir => return refuse("'..' after a name"),
            Component::Normal(_) => descended = true,
            Component::RootDir | Component::Prefix(_) => return refuse("absolute"),
        }
    }
    if climb == 0 {
        return Ok(());
    }
    // The link's directory as it is on disk. Earlier entries' links all stay inside (this
    // rule), so creating it cannot reach outside; the canonical path is checked anyway.
    let parent = root.join(path.parent().unwrap_or(Path::new("")));
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let real = parent
        .canonicalize()
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let Ok(below) = real.strip_prefix(root) else {
        return refuse("its directory is outside");
    };
    let depth = below.components().count();
    if climb > depth {
        return refuse("climbs above the sandbox");
    }
    Ok(())
}
