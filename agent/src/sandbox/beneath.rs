//! Opening a path beneath a directory by file descriptor, never following a symlink.
//!
//! Checking a path and then opening it by name is a race a task can win: it swaps a directory
//! it owns for a symlink between the check and the open, and the root agent opens whatever the
//! symlink names. Here nothing is checked and then reopened: every component is resolved from
//! the directory fd before it, and a symlink anywhere on the way is an error, not a detour.
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does the whole walk in the kernel; on
//! kernels without it (before 5.6, or a seccomp filter that answers ENOSYS) each component is
//! opened with `openat(O_NOFOLLOW)` from the fd of the one before.
//!
//! The last component is opened `O_NONBLOCK`: opening a FIFO otherwise waits for a writer, and
//! a task could park every blocking-pool thread of the agent on one. The caller checks the
//! type of what was opened (`fstat`) before reading; `O_NONBLOCK` changes nothing for a
//! regular file or a directory.

use rustix::fs::{openat, openat2, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// How the final component is opened: read only, without waiting (see the module header),
/// never becoming our controlling terminal, never inherited by a task launched meanwhile.
pub const OPEN_LEAF: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// How a directory on the way is opened in the fallback walk: a handle for lookups only
/// (`O_PATH` reads nothing, so it needs no read permission and has no side effects).
const OPEN_STEP: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The two ways of walking; [`open`] picks one, tests run both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// One `openat2` call, the kernel refusing symlinks and escapes.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component.
    PerComponent,
}

/// Set once `openat2` turned out to be missing, so later opens go straight to the fallback.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `components` (plain names: no `/`, `.` or `..`; empty means `dir` itself) beneath
/// `dir` without following any symlink. A symlink on the way fails with `ELOOP`.
pub fn open(dir: BorrowedFd<'_>, components: &[&OsStr]) -> Result<OwnedFd, Errno> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match open_with(Walk::Openat2, dir, components) {
            // EPERM: older container seccomp profiles refuse unknown syscalls with it.
            Err(Errno::NOSYS | Errno::PERM) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                tracing::info!(
                    "openat2 unavailable; sandbox reads open one path component at a time"
                );
            }
            other => return other,
        }
    }
    open_with(Walk::PerComponent, dir, components)
}

/// [`open`] with the walk chosen by the caller.
pub fn open_with(walk: Walk, dir: BorrowedFd<'_>, components: &[&OsStr]) -> Result<OwnedFd, Errno> {
    match walk {
        Walk::Openat2 => {
            let path: PathBuf = if components.is_empty() {
                PathBuf::from(".")
            } else {
                components.iter().collect()
            };
            openat2(
                dir,
                path.as_path(),
                OPEN_LEAF,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
        }
        Walk::PerComponent => {
            let Some((leaf, steps)) = components.split_last() else {
                return openat(dir, ".", OPEN_LEAF, Mode::empty());
            };
            let mut at: Option<OwnedFd> = None;
            for step in steps {
                let from = at.as_ref().map_or(dir, |fd| fd.as_fd());
                at = Some(openat(from, *step, OPEN_STEP, Mode::empty()).map_err(|e| {
                    // `O_DIRECTORY` wins over `O_NOFOLLOW`: a symlink fails as "not a
                    // directory". Say what it is, as openat2 would.
                    let is_link = statat(from, *step, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    if e == Errno::NOTDIR && is_link {
                        Errno::LOOP
                    } else {
                        e
                    }
                })?);
            }
            let from = at.as_ref().map_or(dir, |fd| fd.as_fd());
            openat(from, *leaf, OPEN_LEAF | OFlags::NOFOLLOW, Mode::empty())
        }
    }
}

/// Opens a subdirectory `name` of `dir` for listing, refusing a symlink (`ELOOP`) and anything
/// that is not a directory (`ENOTDIR`, checked before a FIFO would be opened).
pub fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OPEN_LEAF | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
    )
}

/// Opens the sandbox directory itself. Its path is the agent's own
/// (`paths::WorkDir::sandbox`), under directories a task cannot write; the last component is
/// still not followed if it is a symlink.
pub fn open_root(sandbox: &Path) -> Result<OwnedFd, Errno> {
    openat(
        rustix::fs::CWD,
        sandbox,
        OPEN_LEAF | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        Mode::empty(),
    )
}
