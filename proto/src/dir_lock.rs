//! One daemon per directory. An agent's work dir and a master's state dir each hold a `LOCK`
//! file that the running daemon keeps `flock`ed and stamps with its pid. A second daemon
//! started on the same directory is refused with the holder's pid, instead of both running and
//! silently replacing each other's socket and files (a second agent on one work dir flapped
//! with the first and left it unable to reach its executors).
//!
//! `flock` locks die with the process, so a crashed daemon never leaves a stale lock; the pid
//! in the file is only there to name the holder.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The name of the lock file inside the locked directory.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, Error)]
pub enum DirLockError {
    #[error("{dir} is in use by another {what} (pid {pid}); stop it first, or give this one a different directory")]
    HeldBy {
        dir: PathBuf,
        what: String,
        pid: String,
    },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process, `what` naming the daemon in errors
    /// ("bramble-agent").
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DirLockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DirLockError::HeldBy {
                    dir: dir.to_path_buf(),
                    what: what.to_string(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "bramble-agent").unwrap();
        // A second open file description conflicts even within one process, as a second
        // daemon's would.
        let err = DirLock::acquire(dir.path(), "bramble-agent").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("bramble-agent"),
            "{msg}"
        );
        drop(first);
        let again = DirLock::acquire(dir.path(), "bramble-agent").unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }
}
