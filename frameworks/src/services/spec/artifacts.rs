//! `[[artifacts]]`: files fetched into each instance's sandbox before it starts.

use super::MAX_ARTIFACTS;
use bramble_proto::task::Artifact;
use serde::{Deserialize, Serialize};

/// A file fetched into each instance's sandbox before it starts (`[[artifacts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    /// `http://…`, `https://…` or `master:NAME` (a file of the master's artifacts directory).
    pub uri: String,
    /// Unpack `.tar`, `.tar.gz` and `.tgz` files into the sandbox.
    #[serde(default = "default_extract")]
    pub extract: bool,
    /// `chmod 0755` once fetched.
    #[serde(default)]
    pub executable: bool,
    /// The expected SHA-256 (hex); a different download fails the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Keep it in the agent's fetch cache, keyed by uri and sha256.
    #[serde(default)]
    pub cache: bool,
    /// The file's name in the sandbox; `None`: the uri's last segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn default_extract() -> bool {
    true
}

impl ArtifactSpec {
    /// What the task carries.
    pub fn to_artifact(&self) -> Artifact {
        Artifact {
            uri: self.uri.clone(),
            executable: self.executable,
            extract: self.extract,
            cache: self.cache,
            sha256: self.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            output_file: self.output.clone(),
        }
    }
}

/// The artifacts' part of [`super::Spec`]'s check: how many, each one's fields, and no two
/// saved under one name.
pub(super) fn check(artifacts: &[ArtifactSpec]) -> Result<(), (&'static str, String)> {
    if artifacts.len() > MAX_ARTIFACTS {
        return Err((
            "artifacts",
            format!("at most {MAX_ARTIFACTS} artifacts per service"),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for artifact in artifacts {
        let task = artifact.to_artifact();
        task.check().map_err(|e| {
            let key = match e.field {
                "sha256" => "artifacts.sha256",
                "output_file" => "artifacts.output",
                _ => "artifacts.uri",
            };
            (key, e.message)
        })?;
        // Checked above: a name can be derived.
        let name = task.file_name().unwrap_or_default();
        if task.unpacks().ok().flatten().is_none() && !names.insert(name.clone()) {
            return Err((
                "artifacts.output",
                format!("two artifacts would both be saved as {name:?}: give one an output name"),
            ));
        }
    }
    Ok(())
}
