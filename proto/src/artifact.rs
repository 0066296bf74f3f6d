//! Artifacts: files the agent fetches into a task's sandbox before the task starts (Mesos's
//! fetcher, `CommandInfo.uris`). What a `TaskInfo` carries and the checks every side shares —
//! the service spec refuses a bad one before storing it, the Mesos edge before launching, the
//! agent before fetching — so all three say the same thing about the same uri.
//!
//! Sources: `http://` and `https://` URLs, and files of the master's artifacts directory,
//! named `master:NAME` (also `master:/NAME` and `bramble://master/NAME`), streamed over the
//! agent's own authenticated connection to the master. `NAME` is a relative path of plain
//! components (no `..`, `.` or empty ones).

use serde::{Deserialize, Serialize};

/// One file fetched into a task's sandbox before it starts (Mesos's `CommandInfo.URI`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Artifact {
    /// `http://…`, `https://…` or `master:NAME` (see the module header).
    pub uri: String,
    /// Made executable (0755) once fetched.
    pub executable: bool,
    /// Unpacked into the sandbox when it is a `.tar`, `.tar.gz` or `.tgz` archive (the archive
    /// itself is not kept); other files are saved as they are.
    pub extract: bool,
    /// Kept in the agent's fetch cache (keyed by uri and sha256) for the next task asking for
    /// it.
    pub cache: bool,
    /// The file's SHA-256 (hex) when known: a different download fails the task.
    pub sha256: Option<String>,
    /// The name it gets in the sandbox (one path component); `None`: the uri's last segment.
    pub output_file: Option<String>,
}

impl Artifact {
    /// An artifact with Mesos's defaults: extracted if it is an archive, not executable, not
    /// cached, no digest, named after the uri.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            executable: false,
            extract: true,
            cache: false,
            sha256: None,
            output_file: None,
        }
    }

    /// Where the bytes come from; an error says what is wrong with the uri.
    pub fn source(&self) -> Result<Source, ArtifactError> {
        parse_uri(&self.uri)
    }

    /// The file name in the sandbox: `output_file`, else the uri's last path segment.
    pub fn file_name(&self) -> Result<String, ArtifactError> {
        if let Some(name) = &self.output_file {
            check_file_name(name).map_err(|message| ArtifactError {
                field: "output_file",
                message,
            })?;
            return Ok(name.clone());
        }
        let path = match self.source()? {
            Source::Http { url } => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.split(['?', '#']).next().unwrap_or("");
                rest.split_once('/').map_or("", |(_, p)| p).to_string()
            }
            Source::Master { name } => name,
        };
        let last = path.rsplit('/').next().unwrap_or("").to_string();
        check_file_name(&last).map_err(|_| ArtifactError {
            field: "uri",
            message: format!(
                "{:?} names no file to save it as: give an output file name",
                self.uri
            ),
        })?;
        Ok(last)
    }

    /// Whether the fetched file is unpacked: asked to, and named like an archive.
    pub fn unpacks(&self) -> Result<Option<ArchiveKind>, ArtifactError> {
        if !self.extract {
            return Ok(None);
        }
        Ok(ArchiveKind::of(&self.file_name()?))
    }

    /// Everything about the artifact that can be checked without fetching it.
    pub fn check(&self) -> Result<(), ArtifactError> {
        self.source()?;
        self.file_name()?;
        if let Some(sha) = &self.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ArtifactError {
                    field: "sha256",
                    message: format!("{sha:?} is not a SHA-256 (64 hex digits)"),
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with an artifact: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ArtifactError {
    /// `uri`, `sha256` or `output_file`.
    pub field: &'static str,
    pub message: String,
}

/// Where an artifact's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL, as given.
    Http { url: String },
    /// A file of the master's artifacts directory: a relative path of plain components.
    Master { name: String },
}

/// Most artifacts one task may name (Mesos's edge allows as many `uris` per command).
pub const MAX_ARTIFACTS: usize = 64;

/// A task's artifacts: at most [`MAX_ARTIFACTS`], each passing [`Artifact::check`]. The
/// master checks every task with this before it reaches an agent.
pub fn check_artifacts(artifacts: &[Artifact]) -> Result<(), String> {
    if artifacts.len() > MAX_ARTIFACTS {
        return Err(format!(
            "{} artifacts: a task may fetch at most {MAX_ARTIFACTS}",
            artifacts.len()
        ));
    }
    for a in artifacts {
        a.check().map_err(|e| match e.field {
            // The message names the uri already.
            "uri" => format!("artifact: {}", e.message),
            field => format!("artifact {:?}: {field}: {}", a.uri, e.message),
        })?;
    }
    Ok(())
}

/// Longest uri an artifact may have.
pub const MAX_URI_LEN: usize = 4096;

/// Reads an artifact uri (see the module header).
pub fn parse_uri(uri: &str) -> Result<Source, ArtifactError> {
    let bad = |message: String| ArtifactError {
        field: "uri",
        message,
    };
    if uri.len() > MAX_URI_LEN {
        return Err(bad(format!("longer than {MAX_URI_LEN} bytes")));
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(format!("{uri:?} holds spaces or control characters")));
    }
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let rest = &uri[uri.find("://").map_or(0, |i| i + 3)..];
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains('@') {
            return Err(bad(format!(
                "{uri:?} names no host (credentials in the URL are not supported)"
            )));
        }
        return Ok(Source::Http {
            url: uri.to_string(),
        });
    }
    let name = if let Some(rest) = uri.strip_prefix("bramble://master/") {
        rest
    } else if let Some(rest) = uri.strip_prefix("master:") {
        rest.strip_prefix('/').unwrap_or(rest)
    } else {
        return Err(bad(format!(
            "{uri:?}: only http://, https:// and master:NAME (a file of the master's artifacts \
             directory) can be fetched"
        )));
    };
    check_master_name(name).map_err(|m| bad(format!("{uri:?}: {m}")))?;
    Ok(Source::Master {
        name: name.to_string(),
    })
}

/// A name in the master's artifacts directory: a relative path of plain components, so it can
/// never reach outside the directory by `..` or by being absolute.
pub fn check_master_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no file named".into());
    }
    if name.len() > 1024 {
        return Err("the name is longer than 1024 bytes".into());
    }
    if name.starts_with('/') {
        return Err("the name must be relative to the master's artifacts directory".into());
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "{name:?} has an empty, '.' or '..' component: names stay inside the master's \
                 artifacts directory"
            ));
        }
        if part.contains('\\') || part.chars().any(char::is_control) {
            return Err(format!("{name:?} holds a backslash or a control character"));
        }
    }
    Ok(())
}

/// A file name in the sandbox: one plain component.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if name.len() > 255 {
        return Err("longer than 255 bytes".into());
    }
    if name.contains('/') || name.contains('\\') || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} must be one file name (no '/', '\\' or control characters)"
        ));
    }
    Ok(())
}

/// The archives the agent unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
}

impl ArchiveKind {
    /// By the file name, as Mesos does: `.tar`, `.tar.gz`, `.tgz`.
    pub fn of(name: &str) -> Option<ArchiveKind> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else if lower.ends_with(".tar") {
            Some(ArchiveKind::Tar)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_may_name_up_to_max_artifacts_each_checked() {
        let many = |n: usize| -> Vec<Artifact> {
            (0..n)
                .map(|i| Artifact::new(format!("master:f{i}")))
                .collect()
        };
        assert_eq!(check_artifacts(&[]), Ok(()));
        assert_eq!(check_artifacts(&many(MAX_ARTIFACTS)), Ok(()));
        let e = check_artifacts(&many(MAX_ARTIFACTS + 1)).unwrap_err();
        assert!(e.contains(&format!("at most {MAX_ARTIFACTS}")), "{e}");
        let mut bad = many(2);
        bad[1].uri = "file:///etc/passwd".into();
        assert!(check_artifacts(&bad)
            .unwrap_err()
            .contains("file:///etc/passwd"));
        bad[1] = Artifact::new("https://example.org/a.tgz");
        bad[1].sha256 = Some("nope".into());
        let e = check_artifacts(&bad).unwrap_err();
        assert!(e.contains("sha256") && e.contains("example.org"), "{e}");
    }

    #[test]
    fn uris_name_their_source() {
        assert_eq!(
            parse_uri("http://10.0.0.1:8080/a/b.tgz?x=1"),
            Ok(Source::Http {
                url: "http://10.0.0.1:8080/a/b.tgz?x=1".into()
            })
        );
        for uri in [
            "master:app/run.sh",
            "master:/app/run.sh",
            "bramble://master/app/run.sh",
        ] {
            assert_eq!(
                parse_uri(uri),
                Ok(Source::Master {
                    name: "app/run.sh".into()
                }),
                "{uri}"
            );
        }
    }

    #[test]
    fn escapes_and_strangers_are_refused() {
        for uri in [
            "master:../etc/passwd",
            "master:a/../../x",
            "master://etc/passwd",
            "master:a//b",
            "master:",
            "bramble://master/./x",
            "file:///etc/passwd",
            "ftp://h/x",
            "/etc/passwd",
            "http:///x",
            "http://user:pw@h/x",
            "http://h/a b",
        ] {
            let e = parse_uri(uri).expect_err(uri);
            assert_eq!(e.field, "uri", "{uri}");
        }
    }

    #[test]
    fn file_names_come_from_the_uri_or_the_output_file() {
        let mut a = Artifact::new("https://h/dl/app-1.0.tar.gz?token=x");
        assert_eq!(a.file_name().unwrap(), "app-1.0.tar.gz");
        assert_eq!(a.unpacks().unwrap(), Some(ArchiveKind::TarGz));
        a.extract = false;
        assert_eq!(a.unpacks().unwrap(), None);
        assert_eq!(
            Artifact::new("master:x/run.sh").file_name().unwrap(),
            "run.sh"
        );
        let e = Artifact::new("http://h/").file_name().expect_err("no name");
        assert_eq!(e.field, "uri");
        let mut named = Artifact::new("http://h/");
        named.output_file = Some("index.html".into());
        assert_eq!(named.file_name().unwrap(), "index.html");
        for bad in ["../x", "a/b", "", ".."] {
            named.output_file = Some(bad.into());
            assert_eq!(named.check().expect_err(bad).field, "output_file");
        }
        let mut sha = Artifact::new("http://h/x");
        sha.sha256 = Some("abc".into());
        assert_eq!(sha.check().expect_err("short").field, "sha256");
        sha.sha256 = Some("a".repeat(64));
        assert!(sha.check().is_ok());
    }
}
