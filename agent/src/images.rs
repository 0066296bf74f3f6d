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

/// The OCI name of this machine's architecture (what images declare).
pub fn host_architecture() -> &'static str {
    oci_architecture(std::env::consts::ARCH)
}

/// Rust's architecture names as OCI's (Go's) ones.
pub fn oci_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        other => other,
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

    /// Loads an OCI or docker-archive tarball (`docker save`, `podman save`, `skopeo copy
    /// ... docker-archive:`). `name` defaults to the archive's own tag.
    pub fn load_archive(
        &self,
        tarball: &Path,
        name: Option<&str>,
    ) -> Result<ImageConfig, ImageError> {
        self.load_archive_checked(tarball, name, None)
    }

    /// [`Self::load_archive`], refusing (before installing) an image for another
    /// architecture than `arch`.
    pub fn load_archive_for(
        &self,
        tarball: &Path,
        name: Option<&str>,
        arch: &str,
    ) -> Result<ImageConfig, ImageError> {
        self.load_archive_checked(tarball, name, Some(arch))
    }

    fn load_archive_checked(
        &self,
        tarball: &Path,
        name: Option<&str>,
        require_arch: Option<&str>,
    ) -> Result<ImageConfig, ImageError> {
        let members = archive_members(tarball)?;
        let transport = archive_transport(tarball, &members)?;
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                archive_tag(tarball, transport, &members)?.ok_or_else(|| ImageError::Malformed {
                    path: tarball.to_path_buf(),
                    detail:
                        "the archive names no image: give a name (`bramble images load FILE NAME`)"
                            .into(),
                })?
            }
        };
        let source = format!("{transport}:{}", tarball.display());
        self.copy_in(
            &source,
            &name,
            format!("loading {}", tarball.display()),
            require_arch,
        )
    }

    /// Pulls `name` from its registry (Docker Hub for a bare name) for this machine's
    /// architecture. Needs the network; offline, load a tarball instead.
    pub fn pull(&self, name: &str) -> Result<ImageConfig, ImageError> {
        let normalized = normalize(name)?;
        let reference = if normalized
            .split('/')
            .next()
            .is_some_and(|h| h.contains('.'))
        {
            normalized.clone()
        } else if normalized.contains('/') {
            format!("docker.io/{normalized}")
        } else {
            format!("docker.io/library/{normalized}")
        };
        self.copy_in(
            &format!("docker://{reference}"),
            &normalized,
            format!("pulling {reference} (no registry reachable? load it offline: `bramble images load FILE.tar`)"),
            None,
        )
    }

    /// skopeo copies `source` into an OCI layout, umoci unpacks it, skopeo reads its config.
    fn copy_in(
        &self,
        source: &str,
        name: &str,
        what: String,
        require_arch: Option<&str>,
    ) -> Result<ImageConfig, ImageError> {
        let normalized = normalize(name)?;
        let building = self.building()?;
        let layout = format!("oci:{}:image", building.path().join("layout").display());
        run_tool(
            Command::new("skopeo")
                .args(["copy", "--quiet", source])
                .arg(&layout),
            "skopeo",
            what.clone(),
        )?;
        let raw = run_tool(
            Command::new("skopeo").args(["inspect", "--config", &layout]),
            "skopeo",
            format!("{what}: reading its config"),
        )?;
        let mut config =
            image_config_from_oci(&raw, &normalized).map_err(|detail| ImageError::Malformed {
                path: PathBuf::from(source),
                detail,
            })?;
        if let Some(host) = require_arch.filter(|a| *a != config.architecture) {
            return Err(ImageError::Foreign {
                name: normalized,
                image: config.architecture,
                host: host.to_string(),
            });
        }
        let rootfs = building.path().join(ROOTFS);
        run_tool(
            Command::new("umoci")
                .args(["raw", "unpack", "--image"])
                .arg(format!(
                    "{}:image",
                    building.path().join("layout").display()
                ))
                .arg(&rootfs),
            "umoci",
            format!("{what}: unpacking"),
        )?;
        let layout_dir = building.path().join("layout");
        std::fs::remove_dir_all(&layout_dir).map_err(io_err("removing", &layout_dir))?;
        config.name = normalized;
        self.install(building, config)
    }

    /// A fresh directory to build an image in, removed unless installed.
    fn building(&self) -> Result<tempfile_dir::TempDir, ImageError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        tempfile_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
            .map_err(io_err("creating a directory in", &self.dir))
    }

    /// Writes `image.json` into `building` and renames it into place, replacing an image of
    /// the same name.
    fn install(
        &self,
        building: tempfile_dir::TempDir,
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
            let old = tempfile_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
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

/// Marks an image used by a task now (its mtime orders the gc, least recently used first).
const LAST_USED: &str = "last-used";

impl ImageStore {
    /// Records that a task is starting in `image` (best effort: only the gc's order rests on it).
    pub fn mark_used(&self, image: &Image) {
        if let Some(dir) = image.rootfs.parent() {
            let _ = std::fs::write(dir.join(LAST_USED), b"");
        }
    }

    /// Removes images, least recently used first (by a task, else since installed), until the
    /// store holds at most `budget` bytes; an image whose root filesystem is in `in_use` stays
    /// whatever the budget. Returns the names removed. An image disappears whole: it is moved
    /// to a `.tmp-` name first, then deleted.
    pub fn gc(
        &self,
        budget: u64,
        in_use: &std::collections::HashSet<PathBuf>,
    ) -> Result<Vec<String>, ImageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &self.dir)(e)),
        };
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        // (last used, directory, config)
        let mut images: Vec<(std::time::SystemTime, PathBuf, ImageConfig)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .filter_map(|e| {
                let dir = e.path();
                let text = std::fs::read_to_string(dir.join(IMAGE_JSON)).ok()?;
                let config: ImageConfig = serde_json::from_str(&text).ok()?;
                let used = mtime(&dir.join(LAST_USED))
                    .or_else(|| mtime(&dir.join(IMAGE_JSON)))
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((used, dir, config))
            })
            .collect();
        let mut total: u64 = images.iter().map(|(_, _, c)| c.size_bytes).sum();
        images.sort_by_key(|(used, _, _)| *used);
        let mut removed = Vec::new();
        for (_, dir, config) in images {
            if total <= budget {
                break;
            }
            if in_use.contains(&dir.join(ROOTFS)) {
                continue;
            }
            let aside = tempfile_dir::TempDir::new_in(&self.dir, TMP_PREFIX)
                .map_err(io_err("creating a directory in", &self.dir))?;
            std::fs::rename(&dir, aside.path().join("old"))
                .map_err(io_err("moving aside", &dir))?;
            drop(aside);
            total = total.saturating_sub(config.size_bytes);
            removed.push(config.name);
        }
        Ok(removed)
    }
}

/// What an image tarball holds.
#[derive(Debug, Clone, PartialEq)]
pub enum TarballKind {
    /// An OCI or docker archive, and the tag it carries (if any).
    Archive { tag: Option<String> },
    /// Anything else: a plain root filesystem.
    Rootfs,
}

/// Tells an archive from a plain root filesystem by its members (without unpacking it).
pub fn tarball_kind(tarball: &Path) -> Result<TarballKind, ImageError> {
    let members = archive_members(tarball)?;
    match archive_transport(tarball, &members) {
        Ok(transport) => Ok(TarballKind::Archive {
            tag: archive_tag(tarball, transport, &members)?,
        }),
        Err(ImageError::Malformed { .. }) => Ok(TarballKind::Rootfs),
        Err(e) => Err(e),
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

/// Runs a tool, its stdout back as text; its stderr in the error.
fn run_tool(cmd: &mut Command, tool: &'static str, what: String) -> Result<String, ImageError> {
    let out = cmd.output().map_err(|e| ImageError::Tool {
        tool,
        what: what.clone(),
        detail: if e.kind() == io::ErrorKind::NotFound {
            format!("{tool} is not installed (apt-get install {tool})")
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ImageError::Tool {
            tool,
            what,
            detail: format!("{} ({})", stderr.trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The member names of a tarball, as stored (`manifest.json`, or `./manifest.json` for one
/// made with `tar -C dir .`).
fn archive_members(tarball: &Path) -> Result<Vec<String>, ImageError> {
    let listing = run_tool(
        Command::new("tar").arg("-tf").arg(tarball),
        "tar",
        format!("reading {}", tarball.display()),
    )?;
    Ok(listing.lines().map(str::to_string).collect())
}

/// The stored name of the member the archive's format calls `name` (`manifest.json`): the
/// same path with any `./` (or `/`) in front, which `tar -x` needs spelled as stored.
fn find_member<'a>(members: &'a [String], name: &str) -> Option<&'a str> {
    members
        .iter()
        .map(String::as_str)
        .find(|m| m.trim_start_matches("./").trim_start_matches('/') == name)
}

/// skopeo's transport for a tarball: an OCI archive has `oci-layout` at its top, a docker
/// archive `manifest.json`.
fn archive_transport(tarball: &Path, members: &[String]) -> Result<&'static str, ImageError> {
    let has = |name: &str| find_member(members, name).is_some();
    if has("oci-layout") {
        Ok("oci-archive")
    } else if has("manifest.json") {
        Ok("docker-archive")
    } else {
        Err(ImageError::Malformed {
            path: tarball.to_path_buf(),
            detail: "neither an OCI archive (no oci-layout) nor a docker archive (no \
                     manifest.json); a plain root filesystem goes through `bramble images import`"
                .into(),
        })
    }
}

/// The tag an archive carries: a docker archive's first `RepoTags`, an OCI archive's
/// `org.opencontainers.image.ref.name` (with `io.containerd.image.name` preferred).
fn archive_tag(
    tarball: &Path,
    transport: &str,
    members: &[String],
) -> Result<Option<String>, ImageError> {
    let wanted = if transport == "docker-archive" {
        "manifest.json"
    } else {
        "index.json"
    };
    let member = find_member(members, wanted).ok_or_else(|| ImageError::Malformed {
        path: tarball.to_path_buf(),
        detail: format!("no {wanted} in the archive"),
    })?;
    let text = run_tool(
        Command::new("tar").arg("-xOf").arg(tarball).arg(member),
        "tar",
        format!("reading {member} of {}", tarball.display()),
    )?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ImageError::Malformed {
        path: tarball.to_path_buf(),
        detail: format!("{member}: {e}"),
    })?;
    let tag = if transport == "docker-archive" {
        v.pointer("/0/RepoTags/0").and_then(|t| t.as_str())
    } else {
        let ann = v.pointer("/manifests/0/annotations");
        ann.and_then(|a| a.get("io.containerd.image.name"))
            .or_else(|| ann.and_then(|a| a.get("org.opencontainers.image.ref.name")))
            .and_then(|t| t.as_str())
    };
    Ok(tag.map(str::to_string))
}

/// The parts of an OCI image config (`skopeo inspect --config`) a task needs.
fn image_config_from_oci(raw: &str, name: &str) -> Result<ImageConfig, String> {
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("image config: {e}"))?;
    let strings = |ptr: &str| -> Vec<String> {
        v.pointer(ptr)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let architecture = v
        .get("architecture")
        .and_then(|a| a.as_str())
        .ok_or("image config has no architecture")?;
    Ok(ImageConfig {
        name: name.to_string(),
        architecture: architecture.to_string(),
        env: strings("/config/Env"),
        entrypoint: strings("/config/Entrypoint"),
        cmd: strings("/config/Cmd"),
        working_dir: v
            .pointer("/config/WorkingDir")
            .and_then(|w| w.as_str())
            .unwrap_or_default()
            .to_string(),
        size_bytes: 0,
    })
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

/// A directory removed on drop unless kept: the half-built image a failed import leaves.
mod tempfile_dir {
    use std::io;
    use std::path::{Path, PathBuf};

    pub struct TempDir {
        path: Option<PathBuf>,
    }

    impl TempDir {
        pub fn new_in(parent: &Path, prefix: &str) -> io::Result<TempDir> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            for attempt in 0..100u32 {
                let path = parent.join(format!(
                    "{prefix}{}-{nanos:x}-{attempt}",
                    std::process::id()
                ));
                match std::fs::create_dir(&path) {
                    Ok(()) => return Ok(TempDir { path: Some(path) }),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "no free temporary name",
            ))
        }

        pub fn path(&self) -> &Path {
            self.path.as_deref().unwrap_or(Path::new(""))
        }

        /// Keeps the directory; returns its path.
        pub fn keep(mut self) -> PathBuf {
            self.path.take().unwrap_or_default()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if let Some(p) = self.path.take() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn members_are_found_with_or_without_a_leading_dot_slash() {
        let members: Vec<String> = ["./", "./manifest.json", "./layer.tar", "/index.json"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            find_member(&members, "manifest.json"),
            Some("./manifest.json")
        );
        assert_eq!(find_member(&members, "index.json"), Some("/index.json"));
        assert_eq!(find_member(&members, "oci-layout"), None);
        let plain = vec!["manifest.json".to_string()];
        assert_eq!(find_member(&plain, "manifest.json"), Some("manifest.json"));
    }

    /// A docker archive made with `tar -C dir .` (every member `./`-prefixed, as are the
    /// manifest's own paths) loads under the tag it carries. Needs skopeo and umoci.
    #[test]
    fn a_dot_slash_docker_archive_loads_under_its_own_tag() {
        let have = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("skopeo") || !have("umoci") {
            eprintln!("SKIP a_dot_slash_docker_archive_loads_under_its_own_tag: skopeo and umoci are not installed (apt-get install skopeo umoci)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tar_c = |from: &Path, out: &Path| {
            let ok = Command::new("tar")
                .arg("-cf")
                .arg(out)
                .arg("-C")
                .arg(from)
                .arg(".")
                .status()
                .unwrap();
            assert!(ok.success());
        };
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/greeting"), b"hello\n").unwrap();
        let archive = dir.path().join("archive");
        std::fs::create_dir_all(&archive).unwrap();
        tar_c(&root, &archive.join("layer.tar"));
        let sha = |path: &Path| {
            bramble_proto::image_transfer::file_digest(path)
                .map(|(d, _)| d)
                .unwrap()
        };
        let layer = sha(&archive.join("layer.tar"));
        let config = format!(
            r#"{{"architecture":"arm64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
        );
        std::fs::write(archive.join("config.json"), config).unwrap();
        let config_sha = sha(&archive.join("config.json"));
        std::fs::rename(
            archive.join("config.json"),
            archive.join(format!("{config_sha}.json")),
        )
        .unwrap();
        let manifest = format!(
            r#"[{{"Config":"./{config_sha}.json","RepoTags":["tiny:1"],"Layers":["./layer.tar"]}}]"#
        );
        std::fs::write(archive.join("manifest.json"), manifest).unwrap();
        let tarball = dir.path().join("dotted.tar");
        tar_c(&archive, &tarball);

        let store = ImageStore::new(dir.path().join("images"));
        let config = store.load_archive(&tarball, None).unwrap();
        assert_eq!(config.name, "tiny:1");
        assert_eq!(config.architecture, "arm64");
        let image = store.resolve("tiny:1").unwrap();
        assert_eq!(
            std::fs::read_to_string(image.rootfs.join("etc/greeting")).unwrap(),
            "hello\n"
        );
        // The same archive is refused where its architecture is required to be another.
        let err = store
            .load_archive_for(&tarball, Some("tiny:2"), "riscv64")
            .unwrap_err();
        assert!(matches!(err, ImageError::Foreign { .. }), "{err}");
        assert!(store.resolve("tiny:2").is_err());
    }

    #[test]
    fn oci_configs_give_architecture_env_and_command() {
        let raw = r#"{"architecture":"arm64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/w"}}"#;
        let c = image_config_from_oci(raw, "busybox:latest").unwrap();
        assert_eq!(c.architecture, "arm64");
        assert_eq!(c.env, vec!["PATH=/bin".to_string()]);
        assert_eq!(c.cmd, vec!["sh".to_string()]);
        assert_eq!(c.working_dir, "/w");
        assert!(image_config_from_oci("{}", "x").is_err());
    }
}
