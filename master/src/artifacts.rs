//! The master's artifacts directory (`artifacts_dir` in master.toml, default
//! `<state_dir>/artifacts`): files tasks fetch as `master:NAME` (`bramble_proto::artifact`),
//! served here at the edge to agents over their own connections, a piece at a time
//! (`AgentToMaster::ArtifactRead` → `MasterToAgent::ArtifactData`); the state task never
//! sees a byte.
//!
//! A name is a relative path of plain components (checked again here: no `..`, not
//! absolute), walked from the directory by file descriptor with `O_NOFOLLOW` on every
//! component, so neither `..` nor a symlink reaches a file outside it; only regular files are
//! read (opened non-blocking: a FIFO cannot hang a reader). Every agent of the cluster may
//! read every file there: put nothing secret in it.

use bramble_proto::artifact::check_master_name;
use bramble_proto::image_transfer::CHUNK_BYTES;
use bramble_proto::messages::{ArtifactChunk, MasterToAgent};
use bramble_proto::queue::QueueTx;
use rustix::fs::{Mode, OFlags};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info};

/// Where `master:` artifacts are served from.
#[derive(Debug, Clone)]
pub struct ArtifactsDir {
    root: Arc<PathBuf>,
}

impl ArtifactsDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: Arc::new(root.to_path_buf()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Reads up to [`CHUNK_BYTES`] of `name` from `offset` (blocking: file I/O).
    pub fn read(&self, name: &str, offset: u64) -> Result<ArtifactChunk, String> {
        check_master_name(name)?;
        let file = self.open(name)?;
        let meta = file
            .metadata()
            .map_err(|e| format!("artifact {name:?}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("artifact {name:?} is not a regular file"));
        }
        let size = meta.len();
        let want = size.saturating_sub(offset).min(CHUNK_BYTES as u64) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = file
                .read_at(&mut data[filled..], offset + filled as u64)
                .map_err(|e| format!("artifact {name:?}: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        data.truncate(filled);
        Ok(ArtifactChunk { size, data })
    }

    /// Opens `name` below the directory following no symlink on the way.
    fn open(&self, name: &str) -> Result<std::fs::File, String> {
        let missing = |e: rustix::io::Errno| match e {
            rustix::io::Errno::NOENT => format!("no artifact {name:?} on the master"),
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                format!("artifact {name:?}: symlinks are not followed in the artifacts directory")
            }
            e => format!("artifact {name:?}: {e}"),
        };
        let mut dir = rustix::fs::open(
            self.root.as_path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT => format!(
                "the master has no artifacts directory ({}): no artifact {name:?}",
                self.root.display()
            ),
            e => format!("the master's artifacts directory: {e}"),
        })?;
        let parts: Vec<&str> = name.split('/').collect();
        let (last, dirs) = parts.split_last().ok_or("no file named")?;
        for part in dirs {
            dir = rustix::fs::openat(
                &dir,
                *part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(missing)?;
        }
        let fd = rustix::fs::openat(
            &dir,
            *last,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(missing)?;
        Ok(std::fs::File::from(fd))
    }

    /// Answers an agent's read on `tx` once it is done, off the async threads.
    pub fn answer(&self, request: u64, name: String, offset: u64, tx: QueueTx<MasterToAgent>) {
        let dir = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = dir.read(&name, offset);
            match &result {
                Ok(chunk) if offset == 0 => {
                    info!(artifact = %name, bytes = chunk.size, "an agent fetches an artifact")
                }
                Ok(_) => {}
                Err(why) => info!(artifact = %name, "artifact refused to an agent: {why}"),
            }
            if tx
                .try_send(MasterToAgent::ArtifactData { request, result })
                .is_err()
            {
                debug!(artifact = %name, "agent's queue full or gone; artifact piece dropped");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_are_read_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let body: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| i as u8).collect();
        std::fs::write(dir.path().join("app/big.bin"), &body).unwrap();
        let served = ArtifactsDir::new(dir.path());
        let first = served.read("app/big.bin", 0).unwrap();
        assert_eq!(first.size, body.len() as u64);
        assert_eq!(first.data, body[..CHUNK_BYTES]);
        let rest = served.read("app/big.bin", CHUNK_BYTES as u64).unwrap();
        assert_eq!(rest.data, body[CHUNK_BYTES..]);
        let end = served.read("app/big.bin", body.len() as u64).unwrap();
        assert!(end.data.is_empty());
    }

    #[test]
    fn dot_dot_absolute_and_symlinks_out_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"key").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("artifacts");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();
        std::fs::write(dir.path().join("beside"), b"state").unwrap();
        std::fs::create_dir(root.join("fifo-dir")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo-dir/f"))
            .status()
            .unwrap();
        assert!(made.success());
        let served = ArtifactsDir::new(&root);
        for name in [
            "../beside",
            "a/../../beside",
            "/etc/passwd",
            "link",
            "linkdir/secret",
            "fifo-dir/f",
            "fifo-dir",
            "",
        ] {
            let e = served.read(name, 0).expect_err(name);
            assert!(!e.is_empty(), "{name}");
        }
        assert!(served.read("link", 0).unwrap_err().contains("symlink"));
        assert!(served
            .read("nothing", 0)
            .unwrap_err()
            .contains("no artifact"));
    }
}
