//! The deny list: principals the master refuses although their certificates are valid
//! (`bramble cluster revoke DIR NAME` writes `DIR/revoked`).
//!
//! A certificate cannot be recalled from whoever holds it, so the master keeps the list and
//! checks it twice: when a connection is admitted, and whenever the file changes, for the
//! connections already open (closed with the reason). The file is polled by its mtime and size
//! rather than watched with inotify: it is edited by hand or copied over from the operator's
//! machine, and a poll every second sees every way of doing that. A list that cannot be read
//! keeps the last one that could (and says so): failing open on a typo would let revoked
//! principals back in.

use bramble_proto::identity::parse_revoked;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use tracing::{info, warn};

/// How often the deny list's file is looked at.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The deny list and the certificate connections open now, by principal.
pub struct Revocations {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    revoked: BTreeSet<String>,
    /// What the file looked like when last read: (mtime, length), `None` if absent.
    seen: Option<(SystemTime, u64)>,
    open: HashMap<u64, (String, quinn::Connection)>,
}

/// Why a principal may not connect, as its peer is told.
pub fn refusal(principal: &str) -> String {
    format!("principal {principal} is revoked (bramble cluster revoke)")
}

impl Revocations {
    /// The deny list at `path` (absent: nobody is revoked). Read once now; a file that is
    /// there but unreadable stops the master, for the reason in the module header.
    pub fn load(path: &Path) -> Result<Self, String> {
        let me = Self {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner::default()),
        };
        if let Some((revoked, seen)) = me.read()? {
            if !revoked.is_empty() {
                info!(deny_list = %path.display(), revoked = revoked.len(), "revoked principals will be refused");
            }
            let mut inner = me.lock();
            inner.revoked = revoked;
            inner.seen = seen;
        }
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's names and stamp, or `None` when it has not changed since last read.
    #[allow(clippy::type_complexity)]
    fn read(&self) -> Result<Option<(BTreeSet<String>, Option<(SystemTime, u64)>)>, String> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        if self.lock().seen == stamp && stamp.is_some() {
            return Ok(None);
        }
        let revoked = match stamp {
            None => BTreeSet::new(),
            Some(_) => match std::fs::read_to_string(&self.path) {
                Ok(text) => parse_revoked(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
                Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
            },
        };
        Ok(Some((revoked, stamp)))
    }

    /// Re-reads the file if it changed and closes the open connections of every principal
    /// it now lists. Returns how many connections were closed.
    pub fn reload(&self) -> usize {
        let (revoked, stamp) = match self.read() {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return 0,
            Err(e) => {
                warn!("keeping the previous deny list: {e}");
                return 0;
            }
        };
        let mut inner = self.lock();
        let added: Vec<&String> = revoked.difference(&inner.revoked).collect();
        if !added.is_empty() || revoked.len() != inner.revoked.len() {
            info!(deny_list = %self.path.display(), revoked = ?revoked, "deny list reloaded");
        }
        let mut closed = 0;
        for (principal, conn) in inner.open.values() {
            if revoked.contains(principal) {
                warn!(peer = %conn.remote_address(), %principal, "closing the connection of a revoked principal");
                conn.close(quinn::VarInt::from_u32(1), refusal(principal).as_bytes());
                closed += 1;
            }
        }
        inner.revoked = revoked;
        inner.seen = stamp;
        closed
    }

    /// Admits connection `id` of `principal`, or says why not. Checked and recorded under one
    /// lock, so a reload cannot slip between the check and the record. Forget the connection
    /// with [`Revocations::forget`] when it ends.
    pub fn admit(&self, id: u64, principal: &str, conn: &quinn::Connection) -> Result<(), String> {
        let mut inner = self.lock();
        if inner.revoked.contains(principal) {
            return Err(refusal(principal));
        }
        inner.open.insert(id, (principal.to_string(), conn.clone()));
        Ok(())
    }

    pub fn forget(&self, id: u64) {
        self.lock().open.remove(&id);
    }

    /// Whether `principal` is on the list as last read.
    pub fn is_revoked(&self, principal: &str) -> bool {
        self.lock().revoked.contains(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read_at_start_and_again_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked");
        let revs = Revocations::load(&path).expect("absent is empty");
        assert!(!revs.is_revoked("alice"));
        std::fs::write(&path, "# comment\nalice  # revoked today\n\n").expect("write");
        revs.reload();
        assert!(revs.is_revoked("alice"));
        assert!(!revs.is_revoked("bob"));
        std::fs::write(&path, "alice\nbob\n").expect("write");
        revs.reload();
        assert!(revs.is_revoked("bob"));
        std::fs::remove_file(&path).expect("rm");
        revs.reload();
        assert!(!revs.is_revoked("alice"), "a removed list revokes nobody");
        std::fs::write(&path, "carol\n").expect("write");
        let fresh = Revocations::load(&path).expect("load");
        assert!(fresh.is_revoked("carol"));
    }
}
