//! What the master checks about certificates beyond the TLS handshake: principals on the
//! deny list (`revocation.rs`) and certificates close to their end (`expiry.rs`).
//!
//! The handshake proves a certificate is the cluster CA's and in date; these checks run right
//! after it, in the connection's task, before the hello. Both are shared with the edges that
//! report on them (`/health`, the front panel) and kept fresh by [`watch`].

pub mod expiry;
pub mod revocation;

use bramble_proto::identity::files;
use bramble_proto::transport::PeerIdentity;
use expiry::Expiry;
use revocation::Revocations;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// How often the daily expiry warnings are looked at again.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

pub struct CertificateChecks {
    pub revocations: Revocations,
    pub expiry: Expiry,
}

impl CertificateChecks {
    /// The checks for the cluster in `cluster_dir` (its deny list), starting from the master's
    /// own certificate `own`.
    pub fn load(cluster_dir: &Path, own: &[u8]) -> Result<Arc<Self>, String> {
        let checks = Self {
            revocations: Revocations::load(&cluster_dir.join(files::REVOKED))?,
            expiry: Expiry::default(),
        };
        checks.expiry.observe(own, OffsetDateTime::now_utc());
        Ok(Arc::new(checks))
    }

    /// Admits connection `id`, whose certificate is `cert`, or says why not. The returned
    /// guard keeps the connection known to the deny list until it drops.
    pub fn admit(
        self: &Arc<Self>,
        id: u64,
        conn: &quinn::Connection,
        identity: &PeerIdentity,
        cert: &[u8],
    ) -> Result<Admitted, String> {
        self.expiry.observe(cert, OffsetDateTime::now_utc());
        // Certificate peers always carry a principal (see `transport::peer_identity`).
        let principal = identity.principal.as_deref().unwrap_or_default();
        self.revocations.admit(id, principal, conn)?;
        Ok(Admitted {
            checks: self.clone(),
            id,
        })
    }
}

/// An admitted connection, known to the deny list while this lives.
pub struct Admitted {
    checks: Arc<CertificateChecks>,
    id: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.checks.revocations.forget(self.id);
    }
}

/// Reloads the deny list when its file changes (closing revoked principals' connections)
/// and repeats due expiry warnings, until shutdown.
pub async fn watch(checks: Arc<CertificateChecks>, mut shutdown: watch::Receiver<bool>) {
    let mut reload = tokio::time::interval(revocation::RELOAD_EVERY);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warn = tokio::time::interval(EXPIRY_CHECK_EVERY);
    warn.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = reload.tick() => {
                let checks = checks.clone();
                // A stat (and now and then a small read) on the blocking pool.
                let _ = tokio::task::spawn_blocking(move || checks.revocations.reload()).await;
            }
            _ = warn.tick() => checks.expiry.warn_due(OffsetDateTime::now_utc()),
        }
    }
}
