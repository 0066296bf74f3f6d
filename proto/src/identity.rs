//! Cluster identity: the CA that defines a cluster, and the role certificates it signs.
//!
//! `init` writes a cluster directory once; everything at run time only *reads* it and never
//! needs the CA key. Each leaf certificate carries its role in a private, non-critical X.509
//! extension so that the role travels with the TLS handshake and cannot be claimed by a peer
//! in a message. The cluster id is the SHA-256 fingerprint of the CA certificate, which is
//! what agents compare against mDNS advertisements.
//!
//! Principals: who a certificate speaks for, carried the same way (a second extension) so the
//! master learns it from the verified handshake, never from a message. `add_principal` issues
//! one leaf per principal (`principals/NAME.pem`); the shared role certificates `init` made
//! carry none and are one principal each, named after their role (`framework`, `operator`,
//! `node`). `revoke` adds a name to the deny list the master reloads (`revoked`), and `renew`
//! issues new leaves under the same CA: the old ones stay valid until they expire, so nodes
//! and frameworks move to the new files one restart at a time. Those three live in `principals.rs`.

mod principals;

pub use principals::{
    add_principal, check_principal_name, issued_principals, parse_revoked, read_revoked, renew,
    revoke,
};

use crate::durable::{self, WriteOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Private OID arc for Bramble extensions; `.1` is the role.
pub const ROLE_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 61_337, 1, 1];
/// `.2` is the principal a leaf speaks for (absent on the shared role certificates).
pub const PRINCIPAL_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 61_337, 1, 2];
/// Longest principal name: it travels in certificates, logs and the deny list.
pub const MAX_PRINCIPAL_LEN: usize = 64;
/// The DNS name every node certificate carries and every client verifies the master against.
/// Masters are found by mDNS or configured by address, so the name is a constant of the
/// cluster rather than a hostname.
pub const NODE_SERVER_NAME: &str = "bramble-node";

/// Validity of the CA: long, because rotating it means re-flashing every card.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of role certificates.
pub const LEAF_VALIDITY_DAYS: i64 = 825;
/// Certificates start a day in the past: a Pi without a real-time clock may boot with its
/// clock slightly behind until NTP catches up.
pub const BACKDATE_DAYS: i64 = 1;

/// What a certificate allows its holder to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May register as an agent and serve as master.
    Node,
    /// May subscribe, launch and kill its own tasks.
    Framework,
    /// May do everything, read and write.
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Node, Role::Framework, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Framework => "framework",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{dir} already holds a cluster ({file} exists); refusing to overwrite it. Use another directory or remove the old cluster first")]
    AlreadyExists { dir: PathBuf, file: PathBuf },
    // The io error is shown in the message and not chained as a source, so a report
    // does not say it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("writing the cluster: {0}")]
    Write(#[from] durable::FileError),
    #[error("{path}: not a usable PEM {what}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate carries no Bramble role")]
    NoRole,
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    #[error("{0}")]
    Principal(String),
}

impl IdentityError {
    /// Whether the cluster's CA certificate is missing: there is no cluster in that directory.
    pub fn is_missing_cluster(&self) -> bool {
        matches!(self, IdentityError::Io { path, error }
            if error.kind() == std::io::ErrorKind::NotFound
                && path.file_name().is_some_and(|f| f == files::CA_CERT))
    }
}

/// What to do when `error` says there is no cluster in the directory: nothing to add for
/// other errors.
pub fn missing_cluster_hint(error: &IdentityError) -> &'static str {
    if error.is_missing_cluster() {
        " (no cluster there: create one with `bramble cluster init DIR`, or point --cluster or BRAMBLE_CLUSTER at an existing one)"
    } else {
        ""
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// File names inside a cluster directory.
pub mod files {
    pub const CA_CERT: &str = "ca.pem";
    pub const CA_KEY: &str = "ca.key";
    pub fn cert(role: super::Role) -> String {
        format!("{role}.pem")
    }
    pub fn key(role: super::Role) -> String {
        format!("{role}.key")
    }
    /// Where the certificates `add-principal` issues live.
    pub const PRINCIPALS_DIR: &str = "principals";
    pub fn principal_cert(name: &str) -> String {
        format!("{PRINCIPALS_DIR}/{name}.pem")
    }
    pub fn principal_key(name: &str) -> String {
        format!("{PRINCIPALS_DIR}/{name}.key")
    }
    /// The deny list: one revoked principal per line (`#` starts a comment).
    pub const REVOKED: &str = "revoked";
}

/// Facts about one certificate, for `bramble cluster show` and logs.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub file: PathBuf,
    pub subject: String,
    pub role: Option<Role>,
    /// Who the certificate speaks for (`None` for the CA).
    pub principal: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Creates a new cluster in `dir`: CA plus one certificate per role. Refuses when `dir`
/// already contains any of the files it would write.
pub fn init_cluster(dir: &Path, name: &str) -> Result<String, IdentityError> {
    let mut planned = vec![dir.join(files::CA_CERT), dir.join(files::CA_KEY)];
    for role in Role::ALL {
        planned.push(dir.join(files::cert(role)));
        planned.push(dir.join(files::key(role)));
    }
    if let Some(existing) = planned.iter().find(|p| p.exists()) {
        return Err(IdentityError::AlreadyExists {
            dir: dir.to_path_buf(),
            file: existing.clone(),
        });
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = dn(&format!("Bramble cluster CA ({name})"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::days(BACKDATE_DAYS);
    ca_params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    for role in Role::ALL {
        let leaf = issue_leaf(
            &issuer,
            role,
            None,
            &format!("{role}@{name}"),
            LEAF_VALIDITY_DAYS,
        )?;
        write_file(&dir.join(files::cert(role)), leaf.cert.as_bytes(), false)?;
        write_file(&dir.join(files::key(role)), leaf.key.as_bytes(), true)?;
    }
    // The CA certificate last: its presence marks a complete cluster directory.
    write_file(
        &dir.join(files::CA_KEY),
        ca_key.serialize_pem().as_bytes(),
        true,
    )?;
    write_file(&dir.join(files::CA_CERT), ca_cert.pem().as_bytes(), false)?;
    Ok(cluster_id(ca_cert.der()))
}

/// A leaf certificate and its new private key, both PEM.
pub(crate) struct Leaf {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// Issues a leaf for `role` (and `principal`, when it is not a shared role certificate),
/// valid from a day ago for `validity_days`.
pub(crate) fn issue_leaf(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    role: Role,
    principal: Option<&str>,
    common_name: &str,
    validity_days: i64,
) -> Result<Leaf, IdentityError> {
    let now = OffsetDateTime::now_utc();
    let key = KeyPair::generate()?;
    let sans = match role {
        Role::Node => vec![NODE_SERVER_NAME.to_string()],
        _ => Vec::new(),
    };
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.not_before = now - Duration::days(BACKDATE_DAYS);
    params.not_after = now + Duration::days(validity_days);
    params.custom_extensions = vec![utf8_extension(ROLE_EXTENSION_OID, role.as_str())];
    if let Some(name) = principal {
        params
            .custom_extensions
            .push(utf8_extension(PRINCIPAL_EXTENSION_OID, name));
    }
    let cert = params.signed_by(&key, issuer)?;
    Ok(Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Bramble");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A private, non-critical extension holding one short string (role names and principal
/// names are at most `MAX_PRINCIPAL_LEN` bytes, within DER's short length form).
fn utf8_extension(oid: &[u64], value: &str) -> CustomExtension {
    // DER UTF8String: tag 0x0c, short length, bytes.
    let bytes = value.as_bytes();
    let mut content = vec![0x0c, bytes.len() as u8];
    content.extend_from_slice(bytes);
    let mut ext = CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(false);
    ext
}

/// Writes one file of a new cluster durably, never over an existing one.
pub(crate) fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), IdentityError> {
    let mode = if secret { 0o600 } else { 0o644 };
    let options = WriteOptions::default().mode(mode).create_new();
    Ok(durable::write_with(path, contents, options)?)
}

/// The cluster id: lowercase hex SHA-256 of the CA certificate's DER encoding.
pub fn cluster_id(ca_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, ca_der))
}

/// Reads the role extension from a DER certificate.
pub fn role_of(cert_der: &[u8]) -> Result<Role, IdentityError> {
    utf8_extension_of(cert_der, ROLE_EXTENSION_OID)?
        .as_deref()
        .and_then(Role::parse)
        .ok_or(IdentityError::NoRole)
}

/// The principal a DER certificate speaks for: its principal extension, else (a shared role
/// certificate) its role's name.
pub fn principal_of(cert_der: &[u8]) -> Result<String, IdentityError> {
    match utf8_extension_of(cert_der, PRINCIPAL_EXTENSION_OID)? {
        Some(name) => {
            check_principal_name(&name)?;
            Ok(name)
        }
        None => Ok(role_of(cert_der)?.as_str().to_string()),
    }
}

/// The string in extension `oid` (`None` if absent); a malformed value is an error.
fn utf8_extension_of(cert_der: &[u8], oid: &[u64]) -> Result<Option<String>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    let oid = x509_parser::oid_registry::Oid::from(oid)
        .map_err(|_| IdentityError::Parse("bad extension OID".into()))?;
    let Some(ext) = cert.extensions().iter().find(|e| e.oid == oid) else {
        return Ok(None);
    };
    let v = ext.value;
    if v.len() < 2 || v[0] != 0x0c || v[1] as usize != v.len() - 2 || v[1] >= 0x80 {
        return Err(IdentityError::Parse(format!("malformed extension {oid}")));
    }
    std::str::from_utf8(&v[2..])
        .map(|s| Some(s.to_string()))
        .map_err(|_| IdentityError::Parse(format!("extension {oid} is not UTF-8")))
}

/// When a DER certificate stops being valid.
pub fn not_after_of(cert_der: &[u8]) -> Result<OffsetDateTime, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Subject common name, for log lines.
pub fn subject_of(cert_der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(cert_der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_else(|| "<unnamed>".into())
}

fn summarize(file: PathBuf, der: &[u8]) -> Result<CertSummary, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Parse(e.to_string()))?;
    Ok(CertSummary {
        file,
        subject: subject_of(der),
        role: role_of(der).ok(),
        principal: principal_of(der).ok(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Everything `bramble cluster show` prints.
pub fn describe_cluster(dir: &Path) -> Result<(String, Vec<CertSummary>), IdentityError> {
    let ca_path = dir.join(files::CA_CERT);
    let ca = load_cert(&ca_path)?;
    let mut certs = vec![summarize(ca_path, &ca)?];
    for role in Role::ALL {
        let path = dir.join(files::cert(role));
        if path.exists() {
            let der = load_cert(&path)?;
            certs.push(summarize(path, &der)?);
        }
    }
    for name in issued_principals(dir)? {
        let path = dir.join(files::principal_cert(&name));
        let der = load_cert(&path)?;
        certs.push(summarize(path, &der)?);
    }
    Ok((cluster_id(&ca), certs))
}

pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    CertificateDer::from_pem_slice(&pem).map_err(|e| IdentityError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        detail: e.to_string(),
    })
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| IdentityError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        detail: e.to_string(),
    })
}

/// What a process needs at run time: the CA to trust, and its own certificate and key.
#[derive(Debug)]
pub struct Credentials {
    pub ca: CertificateDer<'static>,
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub role: Role,
    /// Who the certificate speaks for (see the module header).
    pub principal: String,
    pub cluster_id: String,
}

impl Credentials {
    /// Loads the CA certificate and the `role` certificate and key from a cluster directory.
    pub fn load(dir: &Path, role: Role) -> Result<Self, IdentityError> {
        let ca = load_cert(&dir.join(files::CA_CERT))?;
        let cert = load_cert(&dir.join(files::cert(role)))?;
        let key = load_key(&dir.join(files::key(role)))?;
        let actual = role_of(&cert)?;
        if actual != role {
            return Err(IdentityError::Parse(format!(
                "{} carries role {actual}, expected {role}",
                dir.join(files::cert(role)).display()
            )));
        }
        Ok(Self {
            cluster_id: cluster_id(&ca),
            principal: principal_of(&cert)?,
            ca,
            cert,
            key,
            role,
        })
    }

    /// The credentials of `principal` for a command that needs `role`: `None` (or the role's
    /// own name) is the shared role certificate, any other name the certificate
    /// `add_principal` issued for it. An operator principal may also act as a framework, as
    /// the master allows.
    pub fn load_as(dir: &Path, principal: Option<&str>, role: Role) -> Result<Self, IdentityError> {
        let name = match principal {
            None => return Self::load(dir, role),
            Some(name) => name,
        };
        if let Some(shared) = Role::parse(name) {
            if shared == role || (role == Role::Framework && shared == Role::Operator) {
                return Self::load(dir, shared);
            }
            return Err(IdentityError::Principal(format!(
                "principal {name} is the shared {shared} certificate; this needs a {role} certificate"
            )));
        }
        check_principal_name(name)?;
        let cert_path = dir.join(files::principal_cert(name));
        if !cert_path.exists() {
            return Err(IdentityError::Principal(format!(
                "no certificate for principal {name} in {} (make one with `bramble cluster add-principal {} {name} --role {role}`)",
                dir.display(),
                dir.display()
            )));
        }
        let ca = load_cert(&dir.join(files::CA_CERT))?;
        let cert = load_cert(&cert_path)?;
        let key = load_key(&dir.join(files::principal_key(name)))?;
        let actual = role_of(&cert)?;
        if actual != role && !(role == Role::Framework && actual == Role::Operator) {
            return Err(IdentityError::Principal(format!(
                "principal {name} is a {actual}; this needs a {role} certificate"
            )));
        }
        Ok(Self {
            cluster_id: cluster_id(&ca),
            principal: principal_of(&cert)?,
            ca,
            cert,
            key,
            role: actual,
        })
    }

    pub fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_role_certificates_with_private_keys_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = init_cluster(dir.path(), "test").expect("init");
        assert_eq!(id.len(), 64);
        for role in Role::ALL {
            let creds = Credentials::load(dir.path(), role).expect("load");
            assert_eq!(creds.role, role);
            assert_eq!(creds.cluster_id, id);
            let mode = fs::metadata(dir.path().join(files::key(role)))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{role} key mode");
        }
        let ca_key_mode = fs::metadata(dir.path().join(files::CA_KEY))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(ca_key_mode & 0o777, 0o600);
    }

    #[test]
    fn init_refuses_an_existing_cluster_and_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = init_cluster(dir.path(), "a").expect("init");
        let err = init_cluster(dir.path(), "b").expect_err("second init must refuse");
        assert!(matches!(err, IdentityError::AlreadyExists { .. }), "{err}");
        let (still, _) = describe_cluster(dir.path()).expect("describe");
        assert_eq!(still, first);
    }

    #[test]
    fn validity_windows_are_explicit() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), "v").expect("init");
        let (_, certs) = describe_cluster(dir.path()).expect("describe");
        assert_eq!(certs.len(), 4);
        let now = OffsetDateTime::now_utc();
        for c in certs {
            assert!(c.not_before <= now && c.not_before > now - Duration::days(2));
            let days = (c.not_after - now).whole_days();
            let expected = if c.role.is_some() {
                LEAF_VALIDITY_DAYS
            } else {
                CA_VALIDITY_DAYS
            };
            assert!((expected - 1..=expected).contains(&days), "{:?}", c.file);
        }
    }
}
