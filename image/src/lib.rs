//! `bramble-image`: bakes Bramble into a flashable Raspberry Pi image, inspects one, and
//! flashes one, all without mounting anything or needing loop devices.
//!
//! The image is a file with an MBR (`part.rs`, read with `mbrman`, never written), a FAT
//! boot partition (`fat.rs`, the `fatfs` crate through a window onto the partition) and an
//! ext4 root partition (`ext4.rs`, e2fsprogs' `debugfs` addressing the partition by offset).
//! `payload.rs` decides what goes in, `edits.rs` holds the idempotent text edits,
//! `bake.rs` runs a build, `inspect.rs` reads an image back, `flash.rs` and `devices.rs`
//! write one to a card safely. First boot on the card is `bramble node firstboot`
//! (`cli/src/node.rs`), which also owns the `bramble.toml` schema both sides use.

pub mod bake;
pub mod devices;
pub mod edits;
pub mod elf;
pub mod ext4;
pub mod fat;
pub mod flash;
pub mod imagefile;
pub mod inspect;
pub mod osrelease;
pub mod part;
pub mod payload;
pub mod settings;

use std::path::{Path, PathBuf};

/// Everything that can go wrong building, inspecting or flashing an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Base(String),
    #[error("cross build: {0}")]
    Cross(String),
    #[error("{0}")]
    Device(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Part(#[from] part::PartError),
    #[error(transparent)]
    Fat(#[from] fat::FatError),
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error(transparent)]
    Edit(#[from] edits::EditError),
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(transparent)]
    File(#[from] imagefile::FileError),
}

impl BuildError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> BuildError {
        BuildError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
