//! Writing files on the card: whole and durable, with the mode they need, and
//! removing ones that may be absent.

use crate::error::{io_err, NodeError};
use bramble_proto::durable::{self, WriteOptions};
use std::io;
use std::path::Path;

/// Writes `path` whole and durably (`bramble_proto::durable`: a power cut leaves the old file
/// or the new one) with exactly `mode`, creating its directory.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    durable::write_with(path, contents, WriteOptions::default().mode(mode))?;
    Ok(())
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), NodeError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}
