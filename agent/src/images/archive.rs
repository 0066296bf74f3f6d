//! Getting OCI and docker-archive tarballs (and registry images) into the store through
//! Debian's tools: `skopeo` copies to an OCI layout, `umoci` unpacks it; `tar` reads an
//! archive's members to tell its format and tag without unpacking it.

use super::{io_err, normalize, ImageConfig, ImageError, ImageStore, ROOTFS};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

impl ImageStore {
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

/// Runs a tool, its stdout back as text; its stderr in the error.
pub(super) fn run_tool(
    cmd: &mut Command,
    tool: &'static str,
    what: String,
) -> Result<String, ImageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{ImageError, ImageStore};
    use std::path::Path;

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
