//! `[containers] preload = DIR`: image tarballs shipped on the card (or copied there) are
//! imported when the agent starts, so a bramble with no network and no operator at hand
//! still has its images. Each `*.tar` in DIR is an OCI or docker archive (installed under its
//! own tag, else the file's name) or a plain root filesystem (installed as the file's name,
//! `busybox.tar` → `busybox`, for this machine's architecture). One already installed since
//! the file last changed is left alone, so a restart costs a directory listing. An image for
//! another architecture is refused (nothing here could run it).
//!
//! It runs in the background: the agent serves at once, and a task naming an image that is
//! not in yet fails with the store's "not on this agent" reason, as for any missing image.

use crate::images::{host_architecture, tarball_kind, ImageConfig, ImageStore, TarballKind};
use crate::paths::WorkDir;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// What preloading did with one file.
#[derive(Debug)]
pub enum Preloaded {
    Installed(ImageConfig),
    /// Installed already, and the file has not changed since.
    UpToDate(String),
    Failed(String),
}

/// Preloads `dir` (if any) into `store` off the async threads, logging each file's outcome,
/// then brings the store under its budget (`gc`: the work dir and the budget, if it has one).
pub fn spawn(store: ImageStore, dir: Option<PathBuf>, gc: Option<(WorkDir, u64)>) {
    tokio::task::spawn_blocking(move || {
        let preloaded = dir.map(|d| preload(&store, &d)).unwrap_or_default();
        for (file, outcome) in preloaded {
            match outcome {
                Preloaded::Installed(c) => {
                    info!(file = %file.display(), image = %c.name, arch = %c.architecture, "image preloaded")
                }
                Preloaded::UpToDate(name) => {
                    tracing::debug!(file = %file.display(), image = %name, "preloaded image up to date")
                }
                Preloaded::Failed(why) => {
                    warn!(file = %file.display(), "image not preloaded: {why}")
                }
            }
        }
        if let Some((work_dir, budget)) = gc {
            crate::image_gc::collect(&store, &work_dir, budget, None);
        }
    });
}

/// Imports every `*.tar` of `dir` not yet in `store` (or changed since), in name order.
pub fn preload(store: &ImageStore, dir: &Path) -> Vec<(PathBuf, Preloaded)> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
            .collect(),
        Err(e) => {
            warn!(dir = %dir.display(), "[containers] preload: cannot list it: {e}");
            return Vec::new();
        }
    };
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let outcome = one(store, &file);
            (file, outcome)
        })
        .collect()
}

fn one(store: &ImageStore, file: &Path) -> Preloaded {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = match tarball_kind(file) {
        Ok(k) => k,
        Err(e) => return Preloaded::Failed(e.to_string()),
    };
    let name = match &kind {
        TarballKind::Archive { tag: Some(tag) } => tag.clone(),
        _ => stem,
    };
    let changed = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let current = match (store.installed_at(&name), changed) {
        (Some(installed), Some(changed)) => installed >= changed,
        _ => false,
    };
    if current {
        return Preloaded::UpToDate(name);
    }
    let result = match kind {
        TarballKind::Archive { .. } => {
            store.load_archive_for(file, Some(&name), host_architecture())
        }
        TarballKind::Rootfs => store.import_rootfs(file, &name, host_architecture()),
    };
    match result {
        Ok(config) => Preloaded::Installed(config),
        Err(e) => Preloaded::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn rootfs_tar(dir: &Path, out: &Path) {
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), b"hi\n").unwrap();
        let ok = Command::new("tar")
            .arg("-cf")
            .arg(out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
    }

    #[test]
    fn tarballs_in_the_preload_directory_are_imported_once_and_again_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let preload_dir = dir.path().join("preload");
        std::fs::create_dir_all(&preload_dir).unwrap();
        rootfs_tar(dir.path(), &preload_dir.join("tiny.tar"));
        std::fs::write(preload_dir.join("README"), b"not an image").unwrap();
        std::fs::write(preload_dir.join("broken.tar"), b"not a tarball").unwrap();
        let store = ImageStore::new(dir.path().join("images"));

        let first = preload(&store, &preload_dir);
        let names: Vec<String> = first
            .iter()
            .map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["broken.tar", "tiny.tar"], "only *.tar, in order");
        assert!(
            matches!(&first[0].1, Preloaded::Failed(why) if why.contains("tar")),
            "{first:?}"
        );
        assert!(
            matches!(&first[1].1, Preloaded::Installed(c) if c.name == "tiny:latest" && c.architecture == host_architecture()),
            "{first:?}"
        );
        assert!(store
            .resolve("tiny")
            .unwrap()
            .rootfs
            .join("bin/hello")
            .is_file());

        // A restart finds it installed and leaves it.
        let again = preload(&store, &preload_dir);
        assert!(
            matches!(&again[1].1, Preloaded::UpToDate(n) if n == "tiny"),
            "{again:?}"
        );

        // A file changed after the install is imported again.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let f = std::fs::File::options()
            .write(true)
            .open(preload_dir.join("tiny.tar"))
            .unwrap();
        f.set_modified(later).unwrap();
        let changed = preload(&store, &preload_dir);
        assert!(
            matches!(&changed[1].1, Preloaded::Installed(_)),
            "{changed:?}"
        );
    }

    #[test]
    fn a_missing_preload_directory_is_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::new(dir.path().join("images"));
        assert!(preload(&store, &dir.path().join("absent")).is_empty());
    }
}
