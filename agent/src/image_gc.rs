//! `[containers] images_budget_mb`: the image store is kept under a budget by removing the
//! least recently used images no task is using ([`ImageStore::gc`]). Run after each image the
//! master streams in and at start (after preloading).
//!
//! "In use" is read from the sandboxes, so it needs no bookkeeping that a restart could lose:
//! a container task's bundle (`<sandbox>/.oci-bundle`, `containerizer/oci.rs`) names its
//! image's root filesystem, and crun keeps the container's state under the bundle while it
//! runs. A bundle with state, or written in the last minute (crun may not have started yet),
//! holds its image. A crun killed outright leaves its state behind: the image is then kept,
//! never removed from under a task.

use crate::images::ImageStore;
use crate::paths::WorkDir;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

/// How recent a bundle with no container state yet still holds its image.
const STARTING: Duration = Duration::from_secs(60);

/// The root filesystems the work dir's container tasks are using.
pub fn in_use(work_dir: &WorkDir) -> HashSet<PathBuf> {
    let bundle = crate::containerizer::oci::BUNDLE_DIR;
    let mut used = HashSet::new();
    for sandbox in work_dir.sandboxes_on_disk() {
        let dir = sandbox.join(bundle);
        let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
            continue;
        };
        let running = std::fs::read_dir(dir.join("state")).is_ok_and(|mut d| d.next().is_some());
        let starting = std::fs::metadata(dir.join("config.json"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < STARTING);
        if !(running || starting) {
            continue;
        }
        let root = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/root/path")?.as_str().map(PathBuf::from));
        if let Some(root) = root {
            used.insert(root);
        }
    }
    used
}

/// Brings the store under `budget` bytes, logging what went; `keep` (the image just
/// installed) stays as if in use, or a budget smaller than it would remove it at once.
pub fn collect(store: &ImageStore, work_dir: &WorkDir, budget: u64, keep: Option<&str>) {
    let mut used = in_use(work_dir);
    if let Some(image) = keep.and_then(|name| store.resolve(name).ok()) {
        used.insert(image.rootfs);
    }
    match store.gc(budget, &used) {
        Ok(removed) => {
            for name in removed {
                info!(image = %name, budget_mb = budget >> 20, "image removed by gc (least recently used, not in use)");
            }
        }
        Err(e) => warn!("image gc: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tarball(dir: &std::path::Path, name: &str, bytes: usize) -> PathBuf {
        let src = dir.join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("blob"), vec![1u8; bytes]).unwrap();
        let out = dir.join(format!("{name}.tar"));
        let ok = Command::new("tar")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        out
    }

    /// A sandbox of `work` whose bundle runs in `image`'s root filesystem.
    fn running_in(work: &WorkDir, container: &str, rootfs: &std::path::Path) {
        let bundle = work
            .root()
            .join(format!(
                "frameworks/fw/executors/command-{container}/runs/{container}"
            ))
            .join(crate::containerizer::oci::BUNDLE_DIR);
        std::fs::create_dir_all(bundle.join("state").join(container)).unwrap();
        let config = serde_json::json!({ "root": { "path": rootfs } });
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    }

    #[test]
    fn unused_images_go_least_recently_used_first_and_used_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().join("work"));
        let store = ImageStore::new(dir.path().join("images"));
        let mib: u64 = 1 << 20;
        for name in ["old", "busy", "middle", "new"] {
            let t = tarball(dir.path(), name, mib as usize);
            store
                .import_rootfs(&t, name, crate::images::host_architecture())
                .unwrap();
        }
        // Least recently used first: "busy" is the oldest use, but a task runs in it.
        let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
        for (name, secs) in [
            ("busy", 1_000),
            ("old", 2_000),
            ("middle", 3_000),
            ("new", 4_000),
        ] {
            let image = store.resolve(name).unwrap();
            store.mark_used(&image);
            let used = image.rootfs.parent().unwrap().join("last-used");
            std::fs::File::options()
                .write(true)
                .open(used)
                .unwrap()
                .set_modified(at(secs))
                .unwrap();
        }
        running_in(&work, "c1", &store.resolve("busy").unwrap().rootfs);

        // Within budget: nothing goes.
        collect(&store, &work, 10 * mib, None);
        assert_eq!(store.list().unwrap().len(), 4);

        // Room for two: the two least recently used that no task uses go.
        let removed = store.gc(2 * mib + mib / 2, &in_use(&work)).unwrap();
        assert_eq!(removed, ["old:latest", "middle:latest"]);
        let left: Vec<String> = store.list().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(left, ["busy:latest", "new:latest"]);
        // No half-removed image is left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(names.len(), 2);

        // The image just installed stays too, even over budget.
        collect(&store, &work, 0, Some("new"));
        assert_eq!(store.list().unwrap().len(), 2);

        // A budget of nothing still keeps the image in use.
        let removed = store.gc(0, &in_use(&work)).unwrap();
        assert_eq!(removed, ["new:latest"]);
        assert!(store.resolve("busy").is_ok());
    }
}
