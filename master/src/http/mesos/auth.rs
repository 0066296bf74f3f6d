//! HTTP Basic authentication for the Mesos scheduler API, with the principal/secret pairs of
//! a credentials file named in `master.toml` (`[mesos] credentials = "PATH"`), as Mesos's
//! `--credentials` flag takes them: either the JSON form
//! `{"credentials":[{"principal":"p","secret":"s"}]}` or plain text, one `principal secret`
//! per line (blank lines and `#` comments skipped).
//!
//! The file is read once at start; a malformed one stops the master with the file and the
//! line or key at fault, since a master that silently accepted anyone because of a typo in
//! its credentials would be found out far too late. Without a file the API is open, as in
//! Mesos, and the master says so once when it starts.
//!
//! Secrets are kept only as SHA-256 digests, and a request's secret is checked by comparing
//! its digest with the stored one in constant time (`subtle`): fixed-size inputs, so neither
//! the stored secret's bytes nor its length show in how long a wrong guess takes. An unknown
//! principal costs the same digest and comparison (against a digest no secret has), so the
//! timing does not say which principals exist either.

use axum::http::HeaderMap;
use bramble_mesos::v1::b64;
use ring::digest::{digest, SHA256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// A secret as it is kept and compared.
type SecretDigest = [u8; 32];

/// Why a credentials file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading the Mesos credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Mesos credentials file {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// The principals allowed to use the scheduler API, and their secrets' digests.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: HashMap<String, SecretDigest>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut principals: Vec<&String> = self.secrets.keys().collect();
        principals.sort();
        f.debug_struct("Credentials")
            .field("principals", &principals)
            .finish_non_exhaustive()
    }
}

/// What the `Authorization` header of a request proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// No credentials are configured: anyone may call, and no principal is bound.
    Open,
    Principal(String),
}

impl Authenticated {
    pub fn principal(&self) -> Option<&str> {
        match self {
            Authenticated::Open => None,
            Authenticated::Principal(p) => Some(p),
        }
    }
}

impl Credentials {
    /// Reads and checks `path` (JSON if it starts with `{`, else text lines).
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|what| CredentialsError::Invalid {
            path: path.to_path_buf(),
            what,
        })
    }

    /// Parses a credentials file's text; the error says where it is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pairs = if text.trim_start().starts_with('{') {
            parse_json(text)?
        } else {
            parse_lines(text)?
        };
        if pairs.is_empty() {
            return Err("no credentials in the file (an empty file would lock every framework out; remove `credentials` from master.toml to run without authentication)".into());
        }
        let mut secrets = HashMap::new();
        for (where_, principal, secret) in pairs {
            if principal.is_empty() || principal.contains(':') {
                return Err(format!(
                    "{where_}: the principal must be non-empty and contain no ':'"
                ));
            }
            if secret.is_empty() {
                return Err(format!(
                    "{where_}: empty secret for principal '{principal}'"
                ));
            }
            if secrets
                .insert(principal.clone(), secret_digest(secret.as_bytes()))
                .is_some()
            {
                return Err(format!("{where_}: principal '{principal}' appears twice"));
            }
        }
        Ok(Self { secrets })
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Checks `Authorization: Basic …`; `None` when it is missing, malformed or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = b64::decode(encoded).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (principal, secret) = decoded.split_once(':')?;
        self.secret_matches(principal, secret.as_bytes())
            .then(|| principal.to_string())
    }

    /// Whether `secret` is `principal`'s, in time that depends on neither the stored secret
    /// nor whether the principal exists (see the module header).
    fn secret_matches(&self, principal: &str, secret: &[u8]) -> bool {
        let given = secret_digest(secret);
        let (expected, known) = match self.secrets.get(principal) {
            Some(expected) => (expected, true),
            // SHA-256 of no input is not all ones: nothing matches this.
            None => (&[0xff; 32], false),
        };
        let same: bool = given.ct_eq(expected).into();
        same && known
    }
}

fn parse_json(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "line {}, column {}: not valid JSON: {e}",
            e.line(),
            e.column()
        )
    })?;
    let list = value
        .get("credentials")
        .ok_or("key \"credentials\" is missing (expected {\"credentials\":[{\"principal\":…,\"secret\":…}]})")?
        .as_array()
        .ok_or("key \"credentials\" must be a list")?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!("key \"credentials[{i}].{name}\" is missing or not a string")
                    })
            };
            Ok((
                format!("key \"credentials[{i}]\""),
                field("principal")?,
                field("secret")?,
            ))
        })
        .collect()
}

fn parse_lines(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [principal, secret] = words[..] else {
            return Err(format!(
                "line {}: expected `principal secret` (two words), found {} word(s)",
                n + 1,
                words.len()
            ));
        };
        pairs.push((
            format!("line {}", n + 1),
            principal.to_string(),
            secret.to_string(),
        ));
    }
    Ok(pairs)
}

fn secret_digest(secret: &[u8]) -> SecretDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, secret).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", b64::encode(user_pass.as_bytes()));
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&v).expect("header"),
        );
        h
    }

    #[test]
    fn both_mesos_forms_are_read_and_checked() {
        let json = r#"{"credentials":[{"principal":"alice","secret":"s1"},{"principal":"bob","secret":"s2"}]}"#;
        let text = "# frameworks\nalice s1\n\nbob   s2\n";
        for file in [json, text] {
            let c = Credentials::parse(file).expect("valid");
            assert_eq!(c.len(), 2);
            assert_eq!(c.check(&basic("alice:s1")), Some("alice".into()));
            assert_eq!(c.check(&basic("bob:s2")), Some("bob".into()));
            assert_eq!(c.check(&basic("alice:s2")), None, "wrong secret");
            assert_eq!(c.check(&basic("carol:s1")), None, "unknown principal");
            assert_eq!(c.check(&HeaderMap::new()), None, "no header");
        }
    }

    #[test]
    fn secrets_are_kept_as_fixed_size_digests_and_every_wrong_guess_is_refused() {
        let secret = "correct-horse-battery";
        let c = Credentials::parse(&format!("alice {secret}\n")).expect("valid");
        // Only digests are kept: nothing of the secret, nor its length, is there to compare
        // byte by byte, and it never reaches a log through Debug.
        let stored = c.secrets.get("alice").expect("alice");
        assert_eq!(stored, &secret_digest(secret.as_bytes()));
        assert!(!format!("{c:?}").contains(secret), "{c:?}");
        assert!(format!("{c:?}").contains("alice"), "{c:?}");
        assert!(c.secret_matches("alice", secret.as_bytes()));
        for wrong in [
            "",
            "c",
            "correct-horse-battery-staple",
            "correct-horse-batterY",
            &secret[..secret.len() - 1],
        ] {
            assert!(!c.secret_matches("alice", wrong.as_bytes()), "{wrong:?}");
        }
        // An unknown principal goes through the same comparison, and is refused whatever the
        // secret (alice's included).
        assert!(!c.secret_matches("mallory", secret.as_bytes()));
        assert!(!c.secret_matches("mallory", b""));
    }

    #[test]
    fn a_malformed_file_names_the_line_or_key() {
        let e = Credentials::parse("alice s1\nbob\n").expect_err("one word");
        assert!(e.contains("line 2"), "{e}");
        let e =
            Credentials::parse(r#"{"credentials":[{"principal":"a"}]}"#).expect_err("no secret");
        assert!(e.contains("credentials[0].secret"), "{e}");
        let e = Credentials::parse(r#"{"credentials": 3}"#).expect_err("not a list");
        assert!(e.contains("\"credentials\""), "{e}");
        let e = Credentials::parse("{\n\"credentials\": [,]}").expect_err("bad JSON");
        assert!(e.contains("line 2"), "{e}");
        let e = Credentials::parse("a s\na t\n").expect_err("twice");
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
        assert!(Credentials::parse("# nothing\n").is_err());
    }
}
