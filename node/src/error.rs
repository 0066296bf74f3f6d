//! What can go wrong setting a node up. Every I/O error names what was being done and to which
//! path, so a failed first boot says so in the journal.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    File(#[from] bramble_proto::durable::FileError),
    #[error(transparent)]
    Config(#[from] bramble_proto::config::ConfigError),
    #[error(
        "no board serial ({0}/proc/device-tree/serial-number, /proc/cpuinfo) and no machine id \
         (/etc/machine-id): cannot make a unique hostname; set hostname in bramble.toml"
    )]
    NoIdentity(String),
    #[error("{0}")]
    Users(String),
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NodeError {
    let path = path.to_path_buf();
    move |source| NodeError::Io { what, path, source }
}
