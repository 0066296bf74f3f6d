//! Reading files out of task sandboxes for operators (`bramble logs`, the web UI).
//!
//! The path comes from a remote operator and the tree belongs to a task, so both are hostile.
//! The path must be relative and must not climb out with `..` (checked lexically); the tree is
//! then walked by file descriptor without following any symlink ([`beneath`]), so a task
//! swapping a directory for a symlink mid-read gets an error, never a file outside its sandbox.
//! Only regular files are read and only directories listed, decided by `fstat` on what was
//! opened; anything else (a FIFO, a socket, a device) is refused without waiting on it. Reads
//! are bounded by [`MAX_SANDBOX_READ`], listings by [`MAX_SANDBOX_ENTRIES`].

mod beneath;

use bramble_proto::messages::{
    SandboxChunk, SandboxEntry, SandboxListing, MAX_SANDBOX_ENTRIES, MAX_SANDBOX_READ,
};
use rustix::fs::{statat, AtFlags, Dir, FileType};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

/// Why a sandbox read or listing was refused; its text goes back to the operator.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("empty path")]
    Empty,
    #[error("{0}: absolute paths are not allowed")]
    Absolute(String),
    #[error("{0}: path leaves the sandbox")]
    Leaves(String),
    #[error("path contains a NUL byte")]
    Nul,
    // The wording is matched by the master's HTTP API to pick a status code
    // (`master/src/http/api.rs`, `sandbox_error`): "outside the sandbox" is 403, "not a
    // regular file" and "not a directory" are 400.
    #[error(
        "{0}: is or passes through a symbolic link, which could lead outside the sandbox; \
         sandbox reads follow no symlinks"
    )]
    Symlink(String),
    #[error("{path}: is a {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: is a {kind}, not a directory")]
    NotDirectory { path: String, kind: &'static str },
    #[error("sandbox {}: {source}", path.display())]
    Sandbox { path: PathBuf, source: Errno },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl SandboxError {
    fn io(path: &str, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: source.into(),
        }
    }

    fn open(path: &str, e: Errno) -> Self {
        if e == Errno::LOOP {
            Self::Symlink(path.to_owned())
        } else {
            Self::io(path, e)
        }
    }
}

/// The components of `relative` once it is known to stay inside: plain names only.
fn components(relative: &str) -> Result<Vec<&OsStr>, SandboxError> {
    if relative.is_empty() {
        return Err(SandboxError::Empty);
    }
    if relative.as_bytes().contains(&0) {
        return Err(SandboxError::Nul);
    }
    let rel = Path::new(relative);
    if rel.is_absolute() {
        return Err(SandboxError::Absolute(relative.to_owned()));
    }
    rel.components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(SandboxError::Leaves(relative.to_owned())),
        })
        .collect()
}

/// Opens `relative` inside `sandbox` (see the module header), with `fstat`'s word on what it is.
fn open(
    sandbox: &Path,
    relative: &str,
    walk: Option<beneath::Walk>,
) -> Result<(File, std::fs::Metadata), SandboxError> {
    let names = components(relative)?;
    let root = beneath::open_root(sandbox).map_err(|source| SandboxError::Sandbox {
        path: sandbox.to_owned(),
        source,
    })?;
    let fd: OwnedFd = match walk {
        None => beneath::open(root.as_fd(), &names),
        Some(walk) => beneath::open_with(walk, root.as_fd(), &names),
    }
    .map_err(|e| SandboxError::open(relative, e))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| SandboxError::io(relative, e))?;
    Ok((file, meta))
}

/// What a file type is called in a refusal.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Reads up to `max` bytes at `offset` of `relative` in `sandbox`.
pub fn read(
    sandbox: &Path,
    relative: &str,
    offset: u64,
    max: u32,
    task_ended: bool,
) -> Result<SandboxChunk, SandboxError> {
    read_with(sandbox, relative, offset, max, task_ended, None)
}

fn read_with(
    sandbox: &Path,
    relative: &str,
    offset: u64,
    max: u32,
    task_ended: bool,
    walk: Option<beneath::Walk>,
) -> Result<SandboxChunk, SandboxError> {
    let (mut file, meta) = open(sandbox, relative, walk)?;
    if !meta.is_file() {
        return Err(SandboxError::NotRegular {
            path: relative.to_owned(),
            kind: kind(meta.file_type()),
        });
    }
    let size = meta.len();
    let want = u64::from(max.min(MAX_SANDBOX_READ)).min(size.saturating_sub(offset));
    // `want` is at most MAX_SANDBOX_READ, so the capacity is bounded whatever the file says.
    let mut data = Vec::with_capacity(want as usize);
    if want > 0 {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| SandboxError::io(relative, e))?;
        // A file that shrank meanwhile gives what is left rather than an error.
        file.take(want)
            .read_to_end(&mut data)
            .map_err(|e| SandboxError::io(relative, e))?;
    }
    Ok(SandboxChunk {
        offset,
        data,
        size,
        task_ended,
    })
}

/// How deep a listing descends below the directory asked for.
const MAX_LIST_DEPTH: usize = 8;

/// Lists `relative` (a directory in `sandbox`) recursively, depth first, up to
/// [`MAX_SANDBOX_ENTRIES`]. Symlinks are listed but never followed, nor is any directory
/// entered other than through the fd of its parent.
pub fn list(
    sandbox: &Path,
    relative: &str,
    task_ended: bool,
) -> Result<SandboxListing, SandboxError> {
    let (dir, meta) = open(sandbox, relative, None)?;
    if !meta.is_dir() {
        return Err(SandboxError::NotDirectory {
            path: relative.to_owned(),
            kind: kind(meta.file_type()),
        });
    }
    let mut listing = SandboxListing {
        entries: Vec::new(),
        truncated: false,
        task_ended,
    };
    // Entries are named from the sandbox's root, as reads take them.
    let prefix: PathBuf = components(relative)?.into_iter().collect();
    list_dir(OwnedFd::from(dir), &prefix, 0, &mut listing)
        .map_err(|e| SandboxError::io(relative, e))?;
    listing.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// Appends the entries of the open directory `dir` (named `prefix`) and, below
/// [`MAX_LIST_DEPTH`], of its subdirectories.
fn list_dir(
    dir: OwnedFd,
    prefix: &Path,
    depth: usize,
    listing: &mut SandboxListing,
) -> Result<(), Errno> {
    let mut names = Vec::new();
    let mut reader = Dir::new(dir)?;
    while let Some(entry) = reader.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        // A task can make a directory of millions of entries; never hold more than a listing
        // can return.
        if names.len() >= MAX_SANDBOX_ENTRIES {
            listing.truncated = true;
            break;
        }
        names.push(name);
    }
    names.sort();
    let dir = reader.fd()?;
    for name in names {
        if listing.entries.len() >= MAX_SANDBOX_ENTRIES {
            listing.truncated = true;
            return Ok(());
        }
        let name = OsStr::from_bytes(&name);
        let Ok(stat) = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = prefix.join(name);
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        let is_file = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile;
        let modified = stat.st_mtime as f64 + stat.st_mtime_nsec as f64 / 1e9;
        listing.entries.push(SandboxEntry {
            path: path.to_string_lossy().into_owned(),
            size: if is_file {
                u64::try_from(stat.st_size).unwrap_or(0)
            } else {
                0
            },
            is_dir,
            modified,
        });
        if is_dir && depth + 1 < MAX_LIST_DEPTH {
            // A subdirectory that changed under us is listed but not entered.
            if let Ok(sub) = beneath::open_subdir(dir, name) {
                let _ = list_dir(sub, &path, depth + 1, listing);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    #[test]
    fn reads_ranges_of_sandbox_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("stdout"), b"hello world").expect("write");
        let chunk = read(dir.path(), "stdout", 6, 100, false).expect("read");
        assert_eq!(chunk.data, b"world");
        assert_eq!(chunk.size, 11);
        let past_end = read(dir.path(), "stdout", 50, 100, true).expect("read");
        assert!(past_end.data.is_empty());
        let nested = read(dir.path(), "./stdout", 0, 5, false).expect("read ./");
        assert_eq!(nested.data, b"hello");
    }

    #[test]
    fn paths_that_escape_the_sandbox_are_refused() {
        let outer = tempfile::tempdir().expect("tempdir");
        let sandbox = outer.path().join("sb");
        std::fs::create_dir(&sandbox).expect("mkdir");
        std::fs::write(outer.path().join("secret"), b"key").expect("write");
        std::os::unix::fs::symlink(outer.path().join("secret"), sandbox.join("link"))
            .expect("symlink");
        for bad in [
            "../secret",
            "/etc/passwd",
            "a/../../secret",
            "link",
            "",
            "a\0b",
        ] {
            let err = read(&sandbox, bad, 0, 10, false).expect_err(bad);
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!(read(&sandbox, "link", 0, 10, false)
            .expect_err("symlink out")
            .to_string()
            .contains("symbolic link"));
    }

    #[test]
    fn symlinks_are_not_followed_even_inside_the_sandbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("d/f"), b"x").expect("write");
        std::os::unix::fs::symlink("d", dir.path().join("alias")).expect("symlink");
        for walk in [
            None,
            Some(beneath::Walk::Openat2),
            Some(beneath::Walk::PerComponent),
        ] {
            let err = read_with(dir.path(), "alias/f", 0, 10, false, walk).expect_err("alias");
            assert!(matches!(err, SandboxError::Symlink(_)), "{walk:?}: {err}");
            let ok = read_with(dir.path(), "d/f", 0, 10, false, walk).expect("d/f");
            assert_eq!(ok.data, b"x", "{walk:?}");
        }
    }

    #[test]
    fn listing_shows_files_without_following_symlinks_out() {
        let outer = tempfile::tempdir().expect("tempdir");
        let sandbox = outer.path().join("sb");
        std::fs::create_dir_all(sandbox.join("out")).expect("mkdir");
        std::fs::write(sandbox.join("stdout"), b"hi\n").expect("write");
        std::fs::write(sandbox.join("out/result.txt"), b"42").expect("write");
        std::fs::create_dir(outer.path().join("secret")).expect("mkdir");
        std::fs::write(outer.path().join("secret/key"), b"k").expect("write");
        std::os::unix::fs::symlink(outer.path().join("secret"), sandbox.join("link"))
            .expect("symlink");
        let listing = list(&sandbox, ".", false).expect("list");
        let paths: Vec<&str> = listing.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["link", "out", "out/result.txt", "stdout"]);
        assert_eq!(listing.entries[3].size, 3);
        assert!(listing.entries[1].is_dir);
        let sub = list(&sandbox, "out", false).expect("list out");
        let paths: Vec<&str> = sub.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["out/result.txt"]);
        assert!(list(&sandbox, "link", false).is_err(), "symlinked dir out");
        assert!(list(&sandbox, "..", false).is_err());
        assert!(
            list(&sandbox, "stdout", false).is_err(),
            "a file is not listed"
        );
    }

    /// Finding 2 of issue 16: the old code checked the canonical path, then opened it by name,
    /// so a task swapping a directory for a symlink in between got the agent to read (as root)
    /// whatever the symlink named. Here a thread swaps `d` (a directory holding `f`) with a
    /// symlink to a directory outside holding a secret `f`, as fast as it can, while `d/f` is
    /// read over and over: every read returns the sandbox's own file or an error.
    fn swapped_symlink_never_reads_outside(read: impl Fn(&Path) -> Option<Vec<u8>>) {
        const READS: usize = 2_000;
        let outer = tempfile::tempdir().expect("tempdir");
        let sandbox = outer.path().join("sb");
        std::fs::create_dir_all(sandbox.join("d")).expect("mkdir");
        std::fs::write(sandbox.join("d/f"), b"public").expect("write");
        std::fs::create_dir(outer.path().join("secret")).expect("mkdir");
        std::fs::write(outer.path().join("secret/f"), b"SECRET").expect("write");
        std::fs::write(outer.path().join("secret/secret-only"), b"x").expect("write");
        std::os::unix::fs::symlink(outer.path().join("secret"), sandbox.join("swap"))
            .expect("symlink");

        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let (stop, d, swap) = (stop.clone(), sandbox.join("d"), sandbox.join("swap"));
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        None,
                        &d,
                        None,
                        &swap,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .expect("exchange d and swap");
                    swaps += 1;
                }
                swaps
            })
        };
        let (mut answered, mut leaked) = (0, 0);
        for _ in 0..READS {
            match read(&sandbox) {
                Some(data) if data == b"public" => answered += 1,
                Some(_) => leaked += 1,
                None => {}
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = racer.join().expect("racer");
        assert_eq!(
            leaked, 0,
            "the secret was read {leaked} times in {READS} reads"
        );
        assert!(swaps > 0, "the racer never swapped");
        assert!(
            answered > 0,
            "no read ever answered: the test proves nothing"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_read_never_yields_outside_files() {
        swapped_symlink_never_reads_outside(|sandbox| {
            read(sandbox, "d/f", 0, 100, false).ok().map(|c| c.data)
        });
    }

    #[test]
    fn the_per_component_fallback_also_never_yields_outside_files() {
        swapped_symlink_never_reads_outside(|sandbox| {
            read_with(
                sandbox,
                "d/f",
                0,
                100,
                false,
                Some(beneath::Walk::PerComponent),
            )
            .ok()
            .map(|c| c.data)
        });
    }

    #[test]
    fn listing_a_directory_being_swapped_never_lists_outside_files() {
        swapped_symlink_never_reads_outside(|sandbox| {
            let listing = list(sandbox, ".", false).ok()?;
            // `f` exists on both sides; an entry only the secret dir has would show a leak
            // (under `d` or `swap`, whichever is the symlink at the time).
            let leaked = listing
                .entries
                .iter()
                .any(|e| e.path.ends_with("secret-only"));
            Some(if leaked {
                b"leak".to_vec()
            } else {
                b"public".to_vec()
            })
        });
    }

    /// Finding 2 of issue 16: opening a FIFO waits for a writer, and the old code opened before
    /// looking at the type, so every read of one parked a blocking-pool thread of the agent for
    /// good. Now each read is refused at once and later reads still answer.
    #[test]
    fn a_fifo_is_refused_at_once_and_blocks_nothing() {
        const READS: usize = 40;
        let dir = tempfile::tempdir().expect("tempdir");
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        std::fs::write(dir.path().join("stdout"), b"still here").expect("write");
        let (tx, rx) = mpsc::channel();
        for _ in 0..READS {
            let (tx, sandbox) = (tx.clone(), dir.path().to_owned());
            std::thread::spawn(move || {
                let _ = tx.send(read(&sandbox, "fifo", 0, 100, false).map(|c| c.data));
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for i in 0..READS {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let answer = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("read {i} of the FIFO still blocked after 10 s"));
            let err = answer.expect_err("a FIFO is not read");
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
        let chunk = read(dir.path(), "stdout", 0, 100, false).expect("normal read");
        assert_eq!(chunk.data, b"still here");
        let listing = list(dir.path(), ".", false).expect("a dir with a FIFO lists");
        assert_eq!(listing.entries.len(), 2);
        assert!(list(dir.path(), "fifo", false).is_err());
    }
}
