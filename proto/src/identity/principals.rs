//! Principals' certificates, the deny list and renewal: everything that signs or lists leaves
//! after `init_cluster` made the cluster (see the parent module's header). All of it needs the
//! operator's copy of the cluster directory (`ca.key`), never a node's.

use super::{
    files, io_err, issue_leaf, load_cert, role_of, subject_of, write_file, IdentityError, Role,
    LEAF_VALIDITY_DAYS, MAX_PRINCIPAL_LEN,
};
use crate::durable::{self, WriteOptions};
use rcgen::{Issuer, KeyPair};
use std::fs;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The CA of the cluster in `dir`, able to sign (needs `ca.key`, which only the operator's
/// copy of the cluster directory holds).
fn load_issuer(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), IdentityError> {
    let ca_path = dir.join(files::CA_CERT);
    let ca = load_cert(&ca_path)?;
    let key_path = dir.join(files::CA_KEY);
    let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
    let pem_err = |detail: String| IdentityError::Pem {
        path: key_path.clone(),
        what: "CA private key",
        detail,
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| pem_err(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_der(&ca, key).map_err(|e| IdentityError::Pem {
        path: ca_path.clone(),
        what: "CA certificate",
        detail: e.to_string(),
    })?;
    // "Bramble cluster CA (NAME)": the name leaves are issued under.
    let subject = subject_of(&ca);
    let name = subject
        .strip_prefix("Bramble cluster CA (")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or("bramble")
        .to_string();
    Ok((issuer, name))
}

/// Checks a principal name: it becomes a file name, a log field and a deny-list line, and the
/// role names are taken by the shared certificates.
pub fn check_principal_name(name: &str) -> Result<(), IdentityError> {
    let fail = |why: &str| {
        Err(IdentityError::Principal(format!(
            "principal name {name:?} {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_PRINCIPAL_LEN {
        return fail(&format!("must be 1 to {MAX_PRINCIPAL_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || name.starts_with(['.', '-'])
    {
        return fail(
            "may hold only letters, digits, '-', '_' and '.', and not start with '.' or '-'",
        );
    }
    if Role::parse(name).is_some() {
        return fail("is the shared role certificate's principal; pick another name");
    }
    Ok(())
}

/// Issues a certificate for principal `name` with `role` under the cluster CA in `dir`
/// (`principals/NAME.pem` and `.key`), valid for `validity_days`. Refuses a name already issued
/// or revoked: a revoked name stays revoked, whatever certificate carries it.
pub fn add_principal(
    dir: &Path,
    name: &str,
    role: Role,
    validity_days: i64,
) -> Result<PathBuf, IdentityError> {
    check_principal_name(name)?;
    if role == Role::Node {
        return Err(IdentityError::Principal(
            "principals are frameworks or operators; nodes share the node certificate".into(),
        ));
    }
    if read_revoked(dir)?.contains(name) {
        return Err(IdentityError::Principal(format!(
            "principal {name} is revoked (listed in {}); pick another name",
            dir.join(files::REVOKED).display()
        )));
    }
    let cert_path = dir.join(files::principal_cert(name));
    if cert_path.exists() {
        return Err(IdentityError::AlreadyExists {
            dir: dir.to_path_buf(),
            file: cert_path,
        });
    }
    let (issuer, cluster) = load_issuer(dir)?;
    let principals = dir.join(files::PRINCIPALS_DIR);
    fs::create_dir_all(&principals).map_err(io_err(&principals))?;
    let leaf = issue_leaf(
        &issuer,
        role,
        Some(name),
        &format!("{name}@{cluster}"),
        validity_days,
    )?;
    // The key first: a certificate on disk always has its key beside it.
    write_file(
        &dir.join(files::principal_key(name)),
        leaf.key.as_bytes(),
        true,
    )?;
    write_file(&cert_path, leaf.cert.as_bytes(), false)?;
    Ok(cert_path)
}

/// The principals `add_principal` issued, by name (from `principals/*.pem`).
pub fn issued_principals(dir: &Path) -> Result<Vec<String>, IdentityError> {
    let principals = dir.join(files::PRINCIPALS_DIR);
    let entries = match fs::read_dir(&principals) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&principals)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&principals))?;
        let file = entry.file_name();
        if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".pem")) {
            if check_principal_name(name).is_ok() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The deny list in `dir` (empty when there is none).
pub fn read_revoked(dir: &Path) -> Result<std::collections::BTreeSet<String>, IdentityError> {
    let path = dir.join(files::REVOKED);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_revoked(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The names in a deny list: one per line, `#` to the end of a line is a comment.
pub fn parse_revoked(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.split('#').next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// Adds `name` to the deny list in `dir` (rewritten whole, durably). Returns false if it was
/// already there. The node principal cannot be revoked: every node and the master share it.
pub fn revoke(dir: &Path, name: &str) -> Result<bool, IdentityError> {
    if name == Role::Node.as_str() {
        return Err(IdentityError::Principal(
            "the node certificate is every node's and the master's own: revoking it would cut \
             the whole cluster off; make a new cluster instead"
                .into(),
        ));
    }
    let known = Role::parse(name).is_some() || issued_principals(dir)?.iter().any(|p| p == name);
    if !known {
        return Err(IdentityError::Principal(format!(
            "no principal {name} in {} (see `bramble cluster show`)",
            dir.display()
        )));
    }
    let path = dir.join(files::REVOKED);
    let mut text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Principals the master refuses (bramble cluster revoke); one per line.\n".into()
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    if parse_revoked(&text).contains(name) {
        return Ok(false);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let when = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    text.push_str(&format!("{name}  # revoked {when}\n"));
    durable::write_with(&path, text.as_bytes(), WriteOptions::default().mode(0o644))?;
    Ok(true)
}

/// Issues new leaves under the same CA for every role and every principal not revoked,
/// replacing the files in `dir`. Old leaves stay valid until they expire, so daemons and
/// frameworks pick the new ones up at their next start with no moment where nothing works.
/// Each leaf is independent of the old one: an interrupted renew is finished by running it
/// again. Returns the files renewed.
pub fn renew(dir: &Path) -> Result<Vec<PathBuf>, IdentityError> {
    let (issuer, cluster) = load_issuer(dir)?;
    let revoked = read_revoked(dir)?;
    let mut renewed = Vec::new();
    let mut replace = |cert_file: String,
                       key_file: String,
                       role: Role,
                       principal: Option<&str>,
                       cn: String|
     -> Result<(), IdentityError> {
        let leaf = issue_leaf(&issuer, role, principal, &cn, LEAF_VALIDITY_DAYS)?;
        let secret = WriteOptions::default().mode(0o600);
        durable::write_with(&dir.join(&key_file), leaf.key.as_bytes(), secret)?;
        let public = WriteOptions::default().mode(0o644);
        durable::write_with(&dir.join(&cert_file), leaf.cert.as_bytes(), public)?;
        renewed.push(dir.join(cert_file));
        Ok(())
    };
    for role in Role::ALL {
        if dir.join(files::cert(role)).exists() && !revoked.contains(role.as_str()) {
            replace(
                files::cert(role),
                files::key(role),
                role,
                None,
                format!("{role}@{cluster}"),
            )?;
        }
    }
    for name in issued_principals(dir)? {
        if revoked.contains(&name) {
            continue;
        }
        let cert_file = files::principal_cert(&name);
        let role = role_of(&load_cert(&dir.join(&cert_file))?)?;
        replace(
            cert_file,
            files::principal_key(&name),
            role,
            Some(&name),
            format!("{name}@{cluster}"),
        )?;
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{describe_cluster, init_cluster, Credentials};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_principal_certificate_names_its_principal_and_shared_ones_their_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = init_cluster(dir.path(), "p").expect("init");
        add_principal(dir.path(), "alice", Role::Framework, 30).expect("alice");
        add_principal(dir.path(), "admin", Role::Operator, 30).expect("admin");
        let alice = Credentials::load_as(dir.path(), Some("alice"), Role::Framework).expect("a");
        assert_eq!(
            (alice.principal.as_str(), alice.role),
            ("alice", Role::Framework)
        );
        assert_eq!(alice.cluster_id, id);
        let shared = Credentials::load_as(dir.path(), None, Role::Framework).expect("shared");
        assert_eq!(shared.principal, "framework");
        // An operator may act as a framework, a framework never as an operator.
        let admin = Credentials::load_as(dir.path(), Some("admin"), Role::Framework).expect("op");
        assert_eq!(
            (admin.principal.as_str(), admin.role),
            ("admin", Role::Operator)
        );
        let err = Credentials::load_as(dir.path(), Some("alice"), Role::Operator).expect_err("no");
        assert!(err.to_string().contains("alice is a framework"), "{err}");
        let err = Credentials::load_as(dir.path(), Some("nobody"), Role::Framework).expect_err("?");
        assert!(err.to_string().contains("add-principal"), "{err}");
        let mode = fs::metadata(dir.path().join(files::principal_key("alice")))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            add_principal(dir.path(), "alice", Role::Framework, 30),
            Err(IdentityError::AlreadyExists { .. })
        ));
        for bad in ["", "framework", "../x", "a b", ".hidden", &"x".repeat(65)] {
            assert!(
                add_principal(dir.path(), bad, Role::Framework, 30).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_revoked_name_stays_revoked_and_renew_skips_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), "r").expect("init");
        add_principal(dir.path(), "alice", Role::Framework, 30).expect("alice");
        add_principal(dir.path(), "bob", Role::Framework, 30).expect("bob");
        assert!(revoke(dir.path(), "alice").expect("revoke"));
        assert!(
            !revoke(dir.path(), "alice").expect("again"),
            "already there"
        );
        assert!(
            revoke(dir.path(), "node").is_err(),
            "the node certificate is everyone's"
        );
        assert!(revoke(dir.path(), "carol").is_err(), "unknown principal");
        assert!(read_revoked(dir.path()).expect("read").contains("alice"));
        let before = load_cert(&dir.path().join(files::principal_cert("alice"))).expect("a");
        let renewed = renew(dir.path()).expect("renew");
        assert_eq!(renewed.len(), 4, "{renewed:?}");
        let after = load_cert(&dir.path().join(files::principal_cert("alice"))).expect("a");
        assert_eq!(before, after, "a revoked principal is not renewed");
        let bob = Credentials::load_as(dir.path(), Some("bob"), Role::Framework).expect("bob");
        assert_eq!(bob.principal, "bob");
        let (_, certs) = describe_cluster(dir.path()).expect("describe");
        assert_eq!(certs.len(), 6, "CA, three roles, two principals");
    }
}
