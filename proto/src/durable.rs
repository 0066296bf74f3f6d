//! Durable file writes: the one place Bramble makes a file survive a crash or a power cut.
//!
//! A Pi loses power without warning, so every file a restarted process must trust (the
//! agent's id and checkpoints, status updates, the card's configuration, the cluster's keys)
//! is written the same way: a hidden temp file in the same directory (`.<name>.tmp`), its data
//! flushed, renamed over the target, and the directory flushed so the rename itself is on disk.
//! A crash leaves either the old file or the whole new one, never a torn one; a temp file left
//! behind belongs to a write that never returned, and readers may delete it
//! ([`is_temp_file_name`]).
//!
//! [`write_batch`] is the group commit: several files in one directory share one directory
//! flush, which on an SD card is the expensive part. Every file's data is flushed before any
//! rename, so no file of the batch becomes visible with unflushed data.
//!
//! [`FileError`] is the error for file I/O here and in the callers' own file handling: what was
//! being done, to which path, and the OS error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TEMP_PREFIX: &str = ".";
const TEMP_SUFFIX: &str = ".tmp";

/// An I/O error on a file: the step that failed (`"syncing"`, `"renaming into place"`...),
/// the path it failed on, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", .path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    /// For `map_err`: the error of `action` on `path`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}

/// How [`write_with`] creates the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Permission bits, set exactly (the umask does not narrow them). `None`: the process's
    /// default for new files.
    pub mode: Option<u32>,
    /// Refuse to replace an existing file (the write fails with `AlreadyExists` and leaves the
    /// existing file alone).
    pub create_new: bool,
}

impl WriteOptions {
    /// A file only its owner can read (keys, secrets).
    pub fn secret() -> Self {
        Self {
            mode: Some(0o600),
            create_new: false,
        }
    }

    pub fn mode(self, mode: u32) -> Self {
        Self {
            mode: Some(mode),
            ..self
        }
    }

    pub fn create_new(self) -> Self {
        Self {
            create_new: true,
            ..self
        }
    }
}

/// Replaces `path` with `contents` durably (temp file, fsync, rename, directory fsync). The
/// directory must exist.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    write_with(path, contents, WriteOptions::default())
}

/// [`write`] with a mode, or refusing to replace an existing file.
pub fn write_with(path: &Path, contents: &[u8], options: WriteOptions) -> Result<(), FileError> {
    let tmp = temp_path(path);
    if let Err(e) = write_temp(&tmp, contents, options.mode) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if options.create_new {
        // A hard link fails if the target exists, where a rename would replace it.
        let linked = fs::hard_link(&tmp, path).map_err(FileError::at("linking into place", path));
        let _ = fs::remove_file(&tmp);
        linked?;
    } else {
        rename_into_place(&tmp, path)?;
    }
    sync_dir(parent_dir(path))
}

/// Writes every `(file name, contents)` into `dir` durably with one directory flush (see the
/// module header). A failure removes the temp files it made; files already renamed into place
/// stay (they may have replaced older versions that are gone).
pub fn write_batch<N: AsRef<str>, C: AsRef<[u8]>>(
    dir: &Path,
    files: &[(N, C)],
) -> Result<(), FileError> {
    let targets: Vec<(PathBuf, PathBuf)> = files
        .iter()
        .map(|(name, _)| {
            let path = dir.join(name.as_ref());
            (temp_path(&path), path)
        })
        .collect();
    let staged = targets
        .iter()
        .zip(files)
        .try_for_each(|((tmp, _), (_, contents))| write_temp(tmp, contents.as_ref(), None));
    let renamed = staged.and_then(|()| {
        targets
            .iter()
            .try_for_each(|(tmp, path)| rename_into_place(tmp, path))
    });
    if renamed.is_err() {
        for (tmp, _) in &targets {
            let _ = fs::remove_file(tmp);
        }
    }
    renamed?;
    sync_dir(dir)
}

/// Flushes `dir` itself, making the renames, creations and removals in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::at("syncing directory", dir))
}

/// The temp file a durable write of `path` goes through: `.<name>.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    parent_dir(path).join(format!("{TEMP_PREFIX}{name}{TEMP_SUFFIX}"))
}

/// Whether `name` is the temp file of a durable write (one that never returned, if it is
/// still there when nothing is writing).
pub fn is_temp_file_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_temp(tmp: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), FileError> {
    let mut open = OpenOptions::new();
    open.write(true).create(true).truncate(true);
    if let Some(mode) = mode {
        open.mode(mode);
    }
    let mut file = open.open(tmp).map_err(FileError::at("creating", tmp))?;
    if let Some(mode) = mode {
        // A left-over temp file keeps its old bits, and the umask narrows new ones.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(FileError::at("setting permissions of", tmp))?;
    }
    file.write_all(contents)
        .map_err(FileError::at("writing", tmp))?;
    // The data and the size; the name is made durable by the directory flush after the rename.
    file.sync_data().map_err(FileError::at("syncing", tmp))
}

fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), FileError> {
    fs::rename(tmp, path).map_err(FileError::at("renaming into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path` holds exactly `contents` and is the only file in its directory (no temp file).
    fn assert_only_file(path: &Path, contents: &[u8]) {
        assert_eq!(fs::read(path).unwrap(), contents);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(names(path.parent().unwrap()), vec![name]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_leaves_the_whole_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent_id");
        write(&path, b"a-1").unwrap();
        assert_only_file(&path, b"a-1");
    }

    #[test]
    fn write_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        fs::write(&path, b"a much longer old content").unwrap();
        write(&path, b"new").unwrap();
        assert_only_file(&path, b"new");
    }

    #[test]
    fn a_left_over_temp_file_does_not_leak_into_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(temp_path(&path), b"torn write from a crashed process").unwrap();
        write(&path, b"ok").unwrap();
        assert_only_file(&path, b"ok");
    }

    #[test]
    fn mode_is_set_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_with(&path, b"k", WriteOptions::secret()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_with(&path, b"k", WriteOptions::default().mode(0o640)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn create_new_refuses_to_replace_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        let once = WriteOptions::secret().create_new();
        write_with(&path, b"first", once).unwrap();
        let err = write_with(&path, b"second", once).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(err.path, path);
        assert_only_file(&path, b"first");
    }

    #[test]
    fn batch_writes_every_file_and_replaces_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), b"old").unwrap();
        write_batch(
            dir.path(),
            &[("a.json", b"A".to_vec()), ("b.json", b"B".to_vec())],
        )
        .unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"A");
        assert_eq!(fs::read(dir.path().join("b.json")).unwrap(), b"B");
        assert_eq!(names(dir.path()), vec!["a.json", "b.json"]);
        write_batch::<&str, &[u8]>(dir.path(), &[]).unwrap();
    }

    #[test]
    fn errors_name_the_step_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f");
        let err = write(&missing, b"x").unwrap_err();
        assert_eq!(err.action, "creating");
        assert_eq!(err.path, temp_path(&missing));
        let text = err.to_string();
        assert!(text.starts_with("creating "), "{text}");
        assert!(text.contains("no-such-dir/.f.tmp"), "{text}");

        let err = write_batch(&dir.path().join("gone"), &[("x", b"1")]).unwrap_err();
        assert_eq!(err.action, "creating");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn temp_names_are_recognised() {
        let tmp = temp_path(Path::new("/w/meta/runs/k.json"));
        assert_eq!(tmp, Path::new("/w/meta/runs/.k.json.tmp"));
        assert!(is_temp_file_name(".k.json.tmp"));
        assert!(!is_temp_file_name("k.json"));
        assert!(!is_temp_file_name("k.json.tmp"));
        assert_eq!(temp_path(Path::new("f")), Path::new("./.f.tmp"));
    }
}
