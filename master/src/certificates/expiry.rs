//! Certificates about to expire: the master's own and every peer's it admits.
//!
//! A cluster whose leaves expire stops working all at once (every handshake fails), and the
//! only fix is `bramble cluster renew` and a restart of what uses them. So from
//! [`WARN_WITHIN`] before a certificate's end the master says so: a log line once per
//! certificate per day, a field on `/health`, and a short line on the front panel.
//! Certificates are remembered by fingerprint only while they are inside that window, so the
//! table holds at most the cluster's expiring certificates; a renewed one (same subject and
//! principal, a later end) replaces the entries of the ones it renews, so after
//! `bramble cluster renew` the warning goes once the renewed peer reconnects.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use time::{Duration, OffsetDateTime};
use tracing::warn;

/// How long before its end a certificate is reported.
pub const WARN_WITHIN: Duration = Duration::days(30);
/// How often the log repeats the warning for one certificate.
const WARN_EVERY: Duration = Duration::days(1);

/// One certificate inside the warning window, as `/health` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExpiringCert {
    pub subject: String,
    pub principal: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

struct Seen {
    subject: String,
    principal: String,
    not_after: OffsetDateTime,
    warned_at: Option<OffsetDateTime>,
}

/// The expiring certificates seen, by SHA-256 fingerprint.
#[derive(Default)]
pub struct Expiry {
    seen: Mutex<HashMap<[u8; 32], Seen>>,
}

impl Expiry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a certificate the master presents or was presented; warns (at most daily) if it
    /// ends within [`WARN_WITHIN`] of `now`.
    pub fn observe(&self, der: &[u8], now: OffsetDateTime) {
        let Ok(not_after) = bramble_proto::identity::not_after_of(der) else {
            return; // the handshake already parsed it; nothing to add here
        };
        let subject = bramble_proto::identity::subject_of(der);
        let principal = bramble_proto::identity::principal_of(der).unwrap_or_default();
        let mut seen = self.lock();
        seen.retain(|_, s| {
            let renewed =
                s.subject == subject && s.principal == principal && s.not_after < not_after;
            !renewed
        });
        if not_after - now > WARN_WITHIN {
            return;
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
        let entry = seen.entry(fingerprint).or_insert_with(|| Seen {
            subject,
            principal,
            not_after,
            warned_at: None,
        });
        warn_if_due(entry, now);
    }

    /// Repeats the daily warning for certificates seen earlier (called now and then).
    pub fn warn_due(&self, now: OffsetDateTime) {
        for entry in self.lock().values_mut() {
            warn_if_due(entry, now);
        }
    }

    /// The certificates inside the warning window, soonest first.
    pub fn expiring(&self, now: OffsetDateTime) -> Vec<ExpiringCert> {
        let mut out: Vec<ExpiringCert> = self
            .lock()
            .values()
            .map(|s| ExpiringCert {
                subject: s.subject.clone(),
                principal: s.principal.clone(),
                not_after: s
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                days_left: (s.not_after - now).whole_days(),
            })
            .collect();
        out.sort_by(|a, b| {
            a.days_left
                .cmp(&b.days_left)
                .then(a.subject.cmp(&b.subject))
        });
        out
    }

    /// The front panel's line: the soonest expiry, short enough for 21 columns.
    pub fn panel_line(&self, now: OffsetDateTime) -> Option<String> {
        let soonest = self.expiring(now).into_iter().next()?;
        let mut line = if soonest.days_left < 0 {
            format!("CERT EXPIRED {}", soonest.principal)
        } else {
            format!("CERT {}d {}", soonest.days_left, soonest.principal)
        };
        line.truncate(21);
        Some(line)
    }
}

fn warn_if_due(entry: &mut Seen, now: OffsetDateTime) {
    if entry.warned_at.is_some_and(|t| now - t < WARN_EVERY) {
        return;
    }
    entry.warned_at = Some(now);
    let days_left = (entry.not_after - now).whole_days();
    warn!(subject = %entry.subject, principal = %entry.principal, days_left,
        "certificate expires {}; run `bramble cluster renew DIR` and restart what uses it",
        entry.not_after.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_proto::identity::{add_principal, init_cluster, load_cert, Role};

    #[test]
    fn only_certificates_within_thirty_days_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), "t").expect("init");
        let soon = add_principal(dir.path(), "soon", Role::Framework, 10).expect("soon");
        let later = add_principal(dir.path(), "later", Role::Framework, 90).expect("later");
        let expiry = Expiry::default();
        let now = OffsetDateTime::now_utc();
        for path in [soon, later] {
            let der = load_cert(&path).expect("cert");
            expiry.observe(&der, now);
            expiry.observe(&der, now);
        }
        let listed = expiry.expiring(now);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].principal, "soon");
        assert!((9..=10).contains(&listed[0].days_left), "{listed:?}");
        assert_eq!(
            expiry.panel_line(now).as_deref(),
            Some(&*format!("CERT {}d soon", listed[0].days_left))
        );
    }

    #[test]
    fn a_renewed_certificate_clears_the_warning_for_the_one_it_renews() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_cluster(dir.path(), "t").expect("init");
        let now = OffsetDateTime::now_utc();
        let expiry = Expiry::default();
        let old = load_cert(&add_principal(dir.path(), "app", Role::Framework, 10).expect("old"))
            .expect("cert");
        expiry.observe(&old, now);
        assert_eq!(expiry.expiring(now).len(), 1);
        // The same principal reissued for a year, as `bramble cluster renew` does (issued
        // here from a second directory of the same cluster name: same subject, same principal).
        let again = tempfile::tempdir().expect("tempdir");
        init_cluster(again.path(), "t").expect("init");
        let renewed =
            load_cert(&add_principal(again.path(), "app", Role::Framework, 365).expect("new"))
                .expect("cert");
        expiry.observe(&renewed, now);
        assert_eq!(
            expiry.expiring(now),
            vec![],
            "the renewed leaf supersedes the old"
        );
        assert_eq!(expiry.panel_line(now), None);
        // Another principal's expiring leaf is not cleared by it.
        let other = load_cert(&add_principal(dir.path(), "b", Role::Framework, 5).expect("b"))
            .expect("cert");
        expiry.observe(&other, now);
        expiry.observe(&renewed, now);
        assert_eq!(expiry.expiring(now).len(), 1);
    }
}
