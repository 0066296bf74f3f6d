//! Files the agent makes in a task's sandbox before the task starts: the sandbox handed to the
//! task user (`user.rs`), its `stdout`/`stderr` (`process.rs`), the OCI bundle (`oci.rs`).
//!
//! The agent is root and the sandbox belongs to the task (its user, its fetched artifacts, an
//! earlier run in the same sandbox, another task of the same framework's uid), so a name in it
//! may already be a symlink to `/etc/shadow`, a FIFO, or a hard link. Nothing here follows a
//! symlink in the sandbox: the sandbox itself is opened `O_DIRECTORY | O_NOFOLLOW` (its own
//! path is the agent's, under directories a task cannot write) and every name in it with
//! `openat(O_NOFOLLOW)` from that fd, and ownership and mode are set on the fd (`fchown`,
//! `fchmod`), never by path. A log that is a symlink, or not a regular file, fails the launch
//! saying so; nothing is written or chowned through it, and it is left as it is (the
//! operator sees what the task left). Opening is `O_NONBLOCK`, so a FIFO named `stdout` is
//! refused at once instead of parking the agent until a reader comes.

use rustix::fs::{mkdirat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const NOT_FOLLOWED: OFlags = OFlags::NOFOLLOW
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// Opens the sandbox directory itself, not following it if it is a symlink.
pub(super) fn open_dir(sandbox: &Path) -> io::Result<File> {
    openat(
        rustix::fs::CWD,
        sandbox,
        OFlags::RDONLY | OFlags::DIRECTORY | NOT_FOLLOWED,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| refused(rustix::fs::CWD, sandbox.as_os_str(), e))
}

/// Opens (creating it, mode 0666 less the umask, as before) the task's log `name` in `dir` for
/// appending. Refused: a symlink, anything but a regular file, and a file with other hard
/// links that is not already `owner`'s (a hard link to a file of root's).
pub(super) fn open_log(dir: BorrowedFd<'_>, name: &str, owner: Option<u32>) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NONBLOCK | NOT_FOLLOWED,
        Mode::from_raw_mode(0o666),
    )
    .map_err(|e| refused(dir, OsStr::new(name), e))?;
    let file = regular(fd, name)?;
    let meta = file.metadata()?;
    if meta.nlink() > 1 && owner.is_some_and(|uid| uid != meta.uid()) {
        return Err(io::Error::other(format!(
            "{name} in the sandbox has {} hard links and belongs to uid {}: the agent does not write through links in a task's sandbox",
            meta.nlink(),
            meta.uid()
        )));
    }
    // The task writes to it blocking, as to any file (it shares this open file description).
    rustix::fs::fcntl_setfl(&file, OFlags::APPEND)?;
    Ok(file)
}

/// Makes the directory `name` in `dir` (mode 0755 less the umask) or opens it when it is
/// already there and ours (owned by the agent's user); a symlink, or one the task made, is
/// refused: whoever made it could have planted files in it.
pub(super) fn make_own_dir(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    match mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let file = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | NOT_FOLLOWED,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| refused(dir, OsStr::new(name), e))?;
    let uid = file.metadata()?.uid();
    if uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{name} in the sandbox belongs to uid {uid}, not to the agent: it was not made by the agent"
        )));
    }
    Ok(file)
}

/// Writes `bytes` as a new file `name` in `dir`, replacing (unlinking, not following) whatever
/// had that name.
pub(super) fn write_new(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | NOT_FOLLOWED,
        Mode::from_raw_mode(0o644),
    )?;
    io::Write::write_all(&mut File::from(fd), bytes)
}

/// `fd` as a file if it is a regular file.
fn regular(fd: OwnedFd, name: &str) -> io::Result<File> {
    let file = File::from(fd);
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::other(format!(
            "{name} in the sandbox is not a regular file ({kind:?}): the agent writes task logs only to regular files"
        )));
    }
    Ok(file)
}

/// An open that failed: a symlink where none may be, or a FIFO or socket where a file should
/// be (`O_NONBLOCK` makes that `ENXIO`), is said in words; anything else as it is.
fn refused(dir: impl AsFd, name: &OsStr, e: Errno) -> io::Error {
    let kind = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| FileType::from_raw_mode(st.st_mode));
    let name = Path::new(name).display();
    match (kind, e) {
        (Some(FileType::Symlink), Errno::LOOP | Errno::NOTDIR) => io::Error::other(format!(
            "{name} is a symbolic link: the agent does not follow links in a task's sandbox"
        )),
        (Some(kind @ (FileType::Fifo | FileType::Socket)), Errno::NXIO) => {
            io::Error::other(format!(
                "{name} in the sandbox is not a regular file ({kind:?}): the agent writes task logs only to regular files"
            ))
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OCI bundle's writes: a bundle directory that is a link (or, as root, one the task
    /// made) is refused; a `config.json` left as a link is replaced, the file it named kept.
    #[test]
    fn the_bundle_is_the_agents_own_directory_and_its_config_replaces_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("config.json"), "theirs").unwrap();
        let sandbox_path = tmp.path().join("sandbox");
        std::fs::create_dir(&sandbox_path).unwrap();
        let sandbox = open_dir(&sandbox_path).unwrap();
        let bundle = sandbox_path.join(".oci-bundle");
        std::os::unix::fs::symlink(&outside, &bundle).unwrap();
        let err = make_own_dir(sandbox.as_fd(), ".oci-bundle").unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        std::fs::remove_file(&bundle).unwrap();

        if nix::unistd::geteuid().is_root() {
            std::fs::create_dir(&bundle).unwrap();
            std::os::unix::fs::chown(&bundle, Some(54_321), Some(54_321)).unwrap();
            let err = make_own_dir(sandbox.as_fd(), ".oci-bundle").unwrap_err();
            assert!(err.to_string().contains("not made by the agent"), "{err}");
            std::fs::remove_dir(&bundle).unwrap();
        } else {
            eprintln!("SKIP the task-made bundle half: needs root (chown)");
        }

        let dir = make_own_dir(sandbox.as_fd(), ".oci-bundle").unwrap();
        std::os::unix::fs::symlink(outside.join("config.json"), bundle.join("config.json"))
            .unwrap();
        write_new(dir.as_fd(), "config.json", b"{}").unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("config.json")).unwrap(),
            "theirs"
        );
        let meta = std::fs::symlink_metadata(bundle.join("config.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            std::fs::read_to_string(bundle.join("config.json")).unwrap(),
            "{}"
        );
        // Made again for a later run in the same sandbox: the agent's own directory is reused.
        make_own_dir(sandbox.as_fd(), ".oci-bundle").unwrap();
    }
}
