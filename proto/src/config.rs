//! Loading TOML configuration with errors an operator can act on.
//!
//! Shared by the master, agent and CLI so that every config file reports problems the same
//! way: `PATH: line N: MESSAGE`, naming the key.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: key \"{key}\": {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Parses `text` (the contents of `path`) as `T`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            message: e.message().trim().replace('`', "\""),
        }
    })
}

/// Reads and parses `path`. When the file does not exist and was not asked for explicitly
/// (it is the default path), the defaults of `T` are used.
pub fn load_optional<T: DeserializeOwned + Default>(
    path: &Path,
    explicit: bool,
) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_toml(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(T::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        cpus: f64,
        name: String,
    }

    #[test]
    fn unknown_key_reports_its_line() {
        let err = parse_toml::<Sample>(Path::new("/etc/x.toml"), "name = \"a\"\n\ncpu = 2\n")
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/x.toml: line 3:"), "{msg}");
        assert!(msg.contains("cpu"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err =
            parse_toml::<Sample>(Path::new("a.toml"), "cpus = \"four\"\n").expect_err("wrong type");
        let msg = err.to_string();
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("cpus") || msg.contains("f64"), "{msg}");
    }
}
