//! Loading TOML configuration with errors an operator can act on over ssh.
//!
//! Shared by the master, agent and CLI so that every config file reports problems the same
//! way: `PATH: line N: key "K": MESSAGE`, with the parts that are known. Unknown keys are
//! errors (structs use `deny_unknown_fields`): a misspelt key silently ignored is found at
//! 2 a.m.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config file that could not be used. Displayed as `PATH: line N: key "K": MESSAGE`, with
/// the parts that are known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (including: it was asked for explicitly and is missing).
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not fit the expected shape.
    #[error("{}: {}", .path.display(), located(.line, .key.as_deref(), .message))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// The file parsed, but a value is unacceptable.
    #[error("{}: {}", .path.display(), located(.line, Some(.key.as_str()), .message))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

struct Located<'a> {
    line: Option<usize>,
    key: Option<&'a str>,
    message: &'a str,
}

fn located<'a>(line: &Option<usize>, key: Option<&'a str>, message: &'a str) -> Located<'a> {
    Located {
        line: *line,
        key,
        message,
    }
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = self.key {
            write!(f, "key \"{key}\": ")?;
        }
        f.write_str(self.message)
    }
}

impl ConfigError {
    /// A value error for `key`, located in `text` (the file's contents) when the key is there.
    pub fn invalid(path: &Path, text: &str, key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Reads a config file: `Ok(None)` when it is missing and was not asked for explicitly.
pub fn read_optional(path: &Path, explicit: bool) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Deserializes TOML `text` (the contents of `path`) into `T`, turning toml's byte spans into
/// a line number and naming the key whose value is wrong.
pub fn load_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let start = e.span().map(|s| s.start.min(text.len()));
        let line = start.map(|s| text[..s].matches('\n').count() + 1);
        let key = start.and_then(|s| key_of_value_at(text, s));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            key,
            message: humanize_toml_message(e.message()),
        }
    })
}

/// Rewrites serde/toml wording for operators: "unknown field `cpu`, expected one of `a`, `b`"
/// becomes `unknown key "cpu" (expected one of "a", "b")`; multi-line messages become one line.
fn humanize_toml_message(message: &str) -> String {
    let one_line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace('`', "\"");
    if let Some(rest) = one_line.strip_prefix("unknown field ") {
        return match rest.split_once(", ") {
            Some((name, "there are no fields")) => format!("unknown key {name}"),
            Some((name, expected)) => format!("unknown key {name} ({expected})"),
            None => format!("unknown key {rest}"),
        };
    }
    one_line
}

/// When `offset` points into the value of a `key = value` line, the (table-qualified) key.
/// Offsets inside the key itself, or in a header, give `None`: those messages name it already.
fn key_of_value_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let eq = line.find('=')?;
    if offset < line_start + eq {
        return None;
    }
    let key = unquote(line[..eq].trim());
    if key.is_empty() || key.starts_with('#') || key.starts_with('[') {
        return None;
    }
    match table_at(&text[..line_start]) {
        Some(table) => Some(format!("{table}.{key}")),
        None => Some(key.to_owned()),
    }
}

/// The `[table]` header in force at the end of `before`, if any.
fn table_at(before: &str) -> Option<&str> {
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let l = l.split('#').next().unwrap_or(l).trim();
            l.trim_start_matches('[').trim_end_matches(']').trim()
        })
}

fn unquote(key: &str) -> &str {
    key.trim_matches(|c| c == '"' || c == '\'')
}

/// The line where top-level `key` is set in `text` (for value errors found after parsing).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (Some(t), l),
        None => (None, key),
    };
    let mut current: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            current = table_at(line);
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        if current == table && unquote(lhs.trim()) == leaf {
            return Some(i + 1);
        }
    }
    // A key that is a whole table (e.g. `attributes`) is located at its header.
    text.lines()
        .position(|l| table_at(l.trim()) == Some(key) && l.trim().starts_with('['))
        .map(|i| i + 1)
}

/// Reads and parses `path`, returning the value and the file's text (for locating keys in
/// errors found later by validation). A missing file that was not asked for explicitly (the
/// default path) yields `T::default()` and empty text.
pub fn load_optional<T: DeserializeOwned + Default>(
    path: &Path,
    explicit: bool,
) -> Result<(T, String), ConfigError> {
    match read_optional(path, explicit)? {
        Some(text) => Ok((load_toml(path, &text)?, text)),
        None => Ok((T::default(), String::new())),
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
        let err = load_toml::<Sample>(Path::new("/etc/x.toml"), "name = \"a\"\n\ncpu = 2\n")
            .expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/x.toml: line 3: unknown key \"cpu\""),
            "{msg}"
        );
        assert!(msg.contains("cpu"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err =
            load_toml::<Sample>(Path::new("a.toml"), "cpus = \"four\"\n").expect_err("wrong type");
        let msg = err.to_string();
        assert!(msg.contains("line 1"), "{msg}");
        assert!(msg.contains("key \"cpus\""), "{msg}");
    }
}
