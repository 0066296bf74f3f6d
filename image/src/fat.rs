//! The FAT boot partition (`bootfs`), read and written with the `fatfs` crate through a
//! [`PartitionIo`] window: no mount, no loop device, no root.
//!
//! Only whole small files at the top level are read or written (`config.txt`,
//! `cmdline.txt`, `ssh`, `bramble.toml`), which is all the boot partition needs from us.
//! [`BootFs::close`] must be called: it flushes and clears the volume's dirty flag, so
//! `fsck.vfat -n` finds the volume clean.

use crate::part::{Partition, PartitionIo};
use std::fs::File;
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("boot partition: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn fat_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let what = what.into();
    move |source| FatError::Io { what, source }
}

pub struct BootFs {
    fs: fatfs::FileSystem<PartitionIo>,
}

impl BootFs {
    pub fn open(file: &File, part: Partition) -> Result<BootFs, FatError> {
        let io = PartitionIo::new(file, part).map_err(fat_err("opening the image"))?;
        let fs = fatfs::FileSystem::new(io, fatfs::FsOptions::new())
            .map_err(fat_err("not a FAT filesystem"))?;
        Ok(BootFs { fs })
    }

    /// The volume label (`bootfs` on Raspberry Pi OS).
    pub fn label(&self) -> String {
        self.fs.volume_label().trim().to_owned()
    }

    /// The contents of `name` in the root directory, `None` when it is absent.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FatError> {
        match self.fs.root_dir().open_file(name) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)
                    .map_err(fat_err(format!("reading {name}")))?;
                Ok(Some(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fat_err(format!("opening {name}"))(e)),
        }
    }

    /// Replaces (or creates) `name` in the root directory with `contents`.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<(), FatError> {
        let mut f = self
            .fs
            .root_dir()
            .create_file(name)
            .map_err(fat_err(format!("creating {name}")))?;
        f.truncate()
            .map_err(fat_err(format!("truncating {name}")))?;
        f.write_all(contents)
            .and_then(|_| f.flush())
            .map_err(fat_err(format!("writing {name}")))
    }

    /// Names in the root directory.
    pub fn list(&self) -> Result<Vec<String>, FatError> {
        self.fs
            .root_dir()
            .iter()
            .map(|e| e.map(|e| e.file_name()))
            .filter(|n| !matches!(n.as_deref(), Ok(".") | Ok("..")))
            .collect::<Result<_, _>>()
            .map_err(fat_err("listing the root directory"))
    }

    /// Flushes and marks the volume clean.
    pub fn close(self) -> Result<(), FatError> {
        self.fs.unmount().map_err(fat_err("flushing"))
    }
}
