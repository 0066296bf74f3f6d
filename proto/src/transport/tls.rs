//! The TLS side: the cluster CA as the only root, the verifier that names a foreign cluster,
//! and the server and client configurations shared by the master and the replication.

use super::TransportError;
use crate::identity::Credentials;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// A master whose certificate chain leads to another cluster's CA.
#[derive(Clone, PartialEq, Eq)]
pub struct ForeignCluster {
    /// The fingerprint (cluster id) of the CA the master presented.
    pub theirs: String,
    /// Ours.
    pub ours: String,
}

/// How a [`ForeignCluster`] travels through quinn, which keeps only the text of the TLS error
/// (rustls prints our error with `Debug`): a marker, then both fingerprints.
const FOREIGN_MARKER: &str = "bramble-foreign-cluster:";

impl std::fmt::Display for ForeignCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this master belongs to a different cluster (CA fingerprint {}, ours {})",
            short(&self.theirs),
            short(&self.ours)
        )
    }
}

impl std::fmt::Debug for ForeignCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{FOREIGN_MARKER}{}/{}", self.theirs, self.ours)
    }
}

impl std::error::Error for ForeignCluster {}

impl ForeignCluster {
    /// Finds one in the text of a TLS error (see [`FOREIGN_MARKER`]).
    pub(super) fn from_reason(reason: &str) -> Option<Self> {
        let rest = &reason[reason.find(FOREIGN_MARKER)? + FOREIGN_MARKER.len()..];
        let is_hex = |c: char| c.is_ascii_hexdigit();
        let end = rest
            .find(|c: char| !is_hex(c) && c != '/')
            .unwrap_or(rest.len());
        let (theirs, ours) = rest[..end].split_once('/')?;
        if theirs.is_empty() || ours.is_empty() {
            return None;
        }
        Some(Self {
            theirs: theirs.to_string(),
            ours: ours.to_string(),
        })
    }
}

/// The first 16 hex digits of a fingerprint: enough to tell clusters apart in a log line.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// The TLS alert a master sent when it refused *our* certificate, by name, if that is how
/// `err` ended the connection.
pub fn refused_certificate(err: &quinn::ConnectionError) -> Option<&'static str> {
    let code = match err {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        _ => return None,
    };
    // QUIC carries a TLS alert as the CRYPTO_ERROR 0x100 + alert (RFC 9001, 4.8).
    match code.checked_sub(0x100)? {
        42 => Some("bad_certificate"),
        45 => Some("certificate_expired"),
        46 => Some("certificate_unknown"),
        48 => Some("unknown_ca"),
        51 => Some("decrypt_error"),
        _ => None,
    }
}

/// Whether `creds`' own certificate was issued by the CA beside it. A card flashed with one
/// cluster's CA and another's certificate fails only at the master's end of the handshake;
/// this says why without asking the master.
pub fn issued_by_own_ca(creds: &Credentials) -> bool {
    let verifier = roots(creds).ok().and_then(|roots| {
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .ok()
    });
    verifier.is_some_and(|v| {
        v.verify_client_cert(&creds.cert, &[], UnixTime::now())
            .is_ok()
    })
}

/// The server verifier every dialer uses: the cluster CA's webpki verifier, which on failure
/// looks at the CA the master sent after its certificate to say which cluster it belongs to.
#[derive(Debug)]
struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ours: String,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (&verified, intermediates.last()) {
            (Err(rustls::Error::InvalidCertificate(_)), Some(ca)) => {
                let theirs = crate::identity::cluster_id(ca);
                if theirs == self.ours {
                    return verified;
                }
                let foreign = ForeignCluster {
                    theirs,
                    ours: self.ours.clone(),
                };
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(foreign)),
                )))
            }
            _ => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(creds: &Credentials) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(creds.ca.clone())?;
    Ok(roots)
}

/// The listening side's TLS: TLS 1.3 only, a client certificate from the cluster CA required,
/// the CA sent after our certificate (a dialer of another cluster can then name ours), and
/// `alpn` the one protocol spoken. Shared by the master's endpoint (`bramble/1`) and the
/// masters' replication (`bramble-raft/1`).
pub fn server_tls(
    creds: &Credentials,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(creds)?), provider.clone())
            .build()
            .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![creds.cert.clone(), creds.ca.clone()],
            creds.clone_key(),
        )?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The dialing side's TLS: TLS 1.3 only, trusting only the cluster CA (naming a foreign
/// cluster's CA on failure), presenting `creds`, speaking `alpn`.
pub fn client_tls(
    creds: &Credentials,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(creds)?), provider.clone())
            .build()
            .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let verifier = ClusterServerVerifier {
        inner,
        ours: creds.cluster_id.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![creds.cert.clone()], creds.clone_key())?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}
