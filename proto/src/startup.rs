//! What every Bramble binary does before its library takes over, said once: choose the
//! config file and load the certificate it presents, with errors that say where it looked.
//! (Logging setup is `logging::init`.)

use crate::identity::{Credentials, IdentityError, Role};
use std::path::{Path, PathBuf};

/// The config file to read, and whether the operator named it: `--config PATH` (`flag`) must
/// exist; without it `default` is read if it is there and all defaults apply if not.
pub fn config_file(flag: Option<&Path>, default: &str) -> (PathBuf, bool) {
    match flag {
        Some(path) => (path.to_path_buf(), true),
        None => (PathBuf::from(default), false),
    }
}

/// Errors returned from `main` are reported as their message and causes, without the
/// `Stack backtrace:` anyhow adds when `RUST_BACKTRACE` is set: an operator's mistake is not a
/// bug. Panics keep their backtraces (they read `RUST_BACKTRACE`, not `RUST_LIB_BACKTRACE`).
/// Call first thing in `main`, before any thread starts; an explicit `RUST_LIB_BACKTRACE`
/// is left alone.
pub fn plain_error_reports() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Single-threaded still: nothing reads the environment concurrently.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// The certificates a binary could not load, and from where.
#[derive(Debug, thiserror::Error)]
#[error("loading the {role} certificate from {}{}", dir.display(), crate::identity::missing_cluster_hint(source))]
pub struct CredentialsError {
    pub role: Role,
    pub dir: PathBuf,
    #[source]
    pub source: IdentityError,
}

/// Loads the `role` certificate, its key and the CA from the cluster directory `dir`.
pub fn credentials(dir: &Path, role: Role) -> Result<Credentials, CredentialsError> {
    Credentials::load(dir, role).map_err(|source| CredentialsError {
        role,
        dir: dir.to_path_buf(),
        source,
    })
}

/// Loads `principal`'s certificate for a command that needs `role` (`None`: the shared role
/// certificate; see `Credentials::load_as`).
pub fn credentials_as(
    dir: &Path,
    principal: Option<&str>,
    role: Role,
) -> Result<Credentials, CredentialsError> {
    Credentials::load_as(dir, principal, role).map_err(|source| CredentialsError {
        role,
        dir: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_config_file_is_explicit_and_the_default_is_not() {
        let named = config_file(
            Some(Path::new("/tmp/agent.toml")),
            "/etc/bramble/agent.toml",
        );
        assert_eq!(named, (PathBuf::from("/tmp/agent.toml"), true));
        let default = config_file(None, "/etc/bramble/agent.toml");
        assert_eq!(default, (PathBuf::from("/etc/bramble/agent.toml"), false));
    }

    #[test]
    fn a_missing_certificate_says_which_role_and_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = credentials(dir.path(), Role::Node).expect_err("no certificates there");
        // An empty directory is no cluster at all: the message says where and what to do.
        assert_eq!(
            err.to_string(),
            format!(
                "loading the node certificate from {}{}",
                dir.path().display(),
                crate::identity::missing_cluster_hint(&err.source)
            )
        );
        assert!(
            err.to_string().contains("bramble cluster init DIR"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
