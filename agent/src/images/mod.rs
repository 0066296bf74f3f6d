//! The agent's image store: container images as unpacked root filesystems, one directory per
//! image under `[containers] images` (default `<work_dir>/images`):
//!
//! ```text
//! <images>/<key>/rootfs/       the image's files, owners and modes as in the image
//! <images>/<key>/image.json    name, architecture, env, entrypoint/cmd, working dir
//! ```
//!
//! Unpacked root filesystems rather than an OCI layout: a task sees its image through the
//! runtime's read-only root (`oci.rs`), so starting a task copies nothing and one unpacked copy
//! serves every task of that image; layers would only pay off for sharing between many
//! images, which a Pi holding a few does not need. Getting images in is left to Debian's
//! tools: a plain root filesystem tarball through `tar` (as `podman import`), OCI and
//! docker-archive tarballs and registry pulls through `skopeo` (to an OCI layout in a
//! temporary directory) and `umoci` (layout → root filesystem).
//!
//! An image appears whole or not at all: it is built in `<images>/.tmp-*` and renamed in.
//! A name is normalised the way Docker does (`busybox` = `docker.io/library/busybox:latest`),
//! so a task may name an image either way.

mod arch;
mod archive;
mod gc;
mod temp_dir;

pub use arch::{host_architecture, oci_architecture};
pub use archive::{tarball_kind, TarballKind};

use archive::run_tool;

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where an image's files are, inside its directory.
const ROOTFS: &str = "rootfs";
/// Its description, inside its directory.
const IMAGE_JSON: &str = "image.json";
/// Directories being built start with this; never an image.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// What the store knows about one image (its `image.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// The normalised name (`busybox:latest`, `ghcr.io/org/app:1`).
    pub name: String,
    /// OCI architecture name (`arm64`, `amd64`, `arm`).
    pub architecture: String,
    /// `KEY=VALUE` entries the image sets (PATH among them).
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    /// Bytes of the unpacked root filesystem, for `bramble images ls`.
    #[serde(default)]
    pub size_bytes: u64,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: ImageConfig,
    pub rootfs: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("image {name:?} is not on this agent (in {}): import or load it first (`bramble images import|load`)", .dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {tool} failed: {detail}")]
    Tool {
        tool: &'static str,
        what: String,
        detail: String,
    },
    #[error("{}: {detail}", .path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error(
        "image {name:?} is for {image} and this agent is {host}: its tasks could not run here"
    )]
    Foreign {
        name: String,
        image: String,
        host: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// `busybox` → `busybox:latest`; `docker.io/library/busybox` → `busybox:latest`; a registry
/// host and a digest are kept. Refuses what could not be a directory name safely.
pub fn normalize(name: &str) -> Result<String, ImageError> {
    let bad = |reason| ImageError::BadName {
        name: name.to_string(),
        reason,
    };
    let mut n = name.trim();
    n = n.strip_prefix("docker://").unwrap_or(n);
    for prefix in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
    ] {
        if let Some(rest) = n.strip_prefix(prefix) {
            n = rest;
            break;
        }
    }
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.len() > 200 {
        return Err(bad("longer than 200 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if !n.chars().all(allowed) {
        return Err(bad("only letters, digits and . _ - / : @ are allowed"));
    }
    if n.split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("empty, . or .. path segment"));
    }
    let last = n.rsplit('/').next().unwrap_or(n);
    if last.contains(':') || last.contains('@') {
        Ok(n.to_string())
    } else {
        Ok(format!("{n}:latest"))
    }
}

/// The directory name of a normalised image name: `/` (the only character a name has that a
/// file name cannot) becomes `+`, which names never contain.
fn key(normalized: &str) -> String {
    normalized.replace('/', "+")
}

/// One agent's images (see the module header).
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> ImageStore {
        ImageStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image `name` names, ready to run.
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        let normalized = normalize(name)?;
        let dir = self.dir.join(key(&normalized));
        let config_path = dir.join(IMAGE_JSON);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    name: normalized,
                    dir: self.dir.clone(),
                })
            }
            Err(e) => return Err(io_err("reading", &config_path)(e)),
        };
        let config: ImageConfig =
            serde_json::from_str(&text).map_err(|e| ImageError::Malformed {
                path: config_path.clone(),
                detail: e.to_string(),
            })?;
        Ok(Image {
            config,
            rootfs: dir.join(ROOTFS),
        })
    }

    /// Removes what an interrupted import or transfer left (`.tmp-*`): never an image.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = e.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(err) = removed {
                    tracing::warn!(path = %path.display(), "removing a leftover of an interrupted import: {err}");
                }
            }
        }
    }

    /// Every image, by name. A directory without a readable `image.json` is skipped.
    pub fn list(&self) -> Result<Vec<ImageConfig>, ImageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dir)(e)),
        };
        let mut images: Vec<ImageConfig> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .filter_map(|e| std::fs::read_to_string(e.path().join(IMAGE_JSON)).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect();
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Imports a plain root filesystem tarball as image `name` for `architecture` (the
    /// tarball cannot say; `podman import` takes the host's too). Replaces an image of the
    /// same name.
    pub fn import_rootfs(
        &self,
        tarball: &Path,
        name: &str,
        architecture: &str,
    ) -> Result<ImageConfig, ImageError> {
        let normalized = normalize(name)?;
        let building = self.building()?;
        let rootfs = building.path().join(ROOTFS);
        std::fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
        run_tool(
            Command::new("tar")
                .arg("-xf")
                .arg(tarball)
                .arg("-C")
                .arg(&rootfs)
                .arg("--numeric-owner"),
            "tar",
            format!("unpacking {}", tarball.display()),
        )?;
        let config = ImageConfig {
            name: normalized,
            architecture: architecture.to_string(),
            env: vec![format!("PATH={}", crate::containerizer::DEFAULT_PATH)],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            working_dir: String::new(),
            size_bytes: 0,
        };
        self.install(building, config)
    }

    /// A fresh directory to build an image in, removed unless installed.
    fn building(&self) -> Result<temp_dir::TempDir, ImageError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        temp_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
            .map_err(io_err("creating a directory in", &self.dir))
    }

    /// Writes `image.json` into `building` and renames it into place, replacing an image of
    /// the same name.
    fn install(
        &self,
        building: temp_dir::TempDir,
        mut config: ImageConfig,
    ) -> Result<ImageConfig, ImageError> {
        config.size_bytes = du(&building.path().join(ROOTFS));
        let json = serde_json::to_vec_pretty(&config).unwrap_or_default();
        let config_path = building.path().join(IMAGE_JSON);
        bramble_proto::durable::write(&config_path, &json).map_err(|e| ImageError::Io {
            action: "writing",
            path: config_path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let target = self.dir.join(key(&config.name));
        if target.exists() {
            // Moved aside first so the name never points at a half-removed image.
            let old = temp_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
                .map_err(io_err("creating a directory in", &self.dir))?;
            let aside = old.path().join("old");
            std::fs::rename(&target, &aside).map_err(io_err("moving aside", &target))?;
            drop(old);
        }
        let built = building.keep();
        std::fs::rename(&built, &target).map_err(io_err("installing", &target))?;
        Ok(config)
    }
}

impl ImageStore {
    /// When the image `name` was installed, if it is.
    pub fn installed_at(&self, name: &str) -> Option<std::time::SystemTime> {
        let normalized = normalize(name).ok()?;
        let path = self.dir.join(key(&normalized)).join(IMAGE_JSON);
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

/// Bytes under `dir` (files only, links not followed); best effort.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn names_normalise_as_docker_does() {
        assert_eq!(normalize("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize("docker.io/library/busybox:1.36").unwrap(),
            "busybox:1.36"
        );
        assert_eq!(normalize("ghcr.io/org/app:2").unwrap(), "ghcr.io/org/app:2");
        assert_eq!(
            normalize("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert!(normalize("../etc").is_err());
        assert!(normalize("a b").is_err());
        assert!(normalize("").is_err());
    }

    #[test]
    fn a_missing_image_says_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = ImageStore::new(dir.path()).resolve("busybox").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ImageError::NotFound { .. }), "{text}");
        assert!(
            text.contains("busybox:latest") && text.contains("bramble images"),
            "{text}"
        );
    }

    #[test]
    fn an_imported_rootfs_is_listed_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        let tarball = dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(ok.success());
        let store = ImageStore::new(dir.path().join("images"));
        let config = store.import_rootfs(&tarball, "tiny", "arm64").unwrap();
        assert_eq!(config.name, "tiny:latest");
        assert!(config.size_bytes > 0);
        let image = store.resolve("docker.io/library/tiny").unwrap();
        assert_eq!(image.config.architecture, "arm64");
        assert!(image.rootfs.join("bin/hello").is_file());
        // Importing again replaces it and leaves no temporary directory behind.
        store.import_rootfs(&tarball, "tiny", "amd64").unwrap();
        assert_eq!(store.resolve("tiny").unwrap().config.architecture, "amd64");
        let names: Vec<String> = store.list().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["tiny:latest".to_string()]);
        let leftovers = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn a_broken_tarball_leaves_no_image() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("junk.tar");
        std::fs::write(&tarball, b"not a tarball").unwrap();
        let store = ImageStore::new(dir.path().join("images"));
        let err = store.import_rootfs(&tarball, "junk", "arm64").unwrap_err();
        assert!(err.to_string().contains("tar failed"), "{err}");
        assert!(store.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0);
    }
}
