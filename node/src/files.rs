//! Writing files on the card: whole (temp file, then rename) with the mode they need, and
//! removing ones that may be absent.

use crate::error::{io_err, NodeError};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `path` whole (temp file + rename), creating its directory.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), NodeError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = path.with_extension("bramble-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("writing", &tmp))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(io_err("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), NodeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}
