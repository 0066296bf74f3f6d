//! The web UI's login sessions: random ids handed out as cookies, remembered here, forgotten
//! on logout, after an idle spell, or at an absolute age.
//!
//! Kept in memory only: a master restart logs every browser out (the page then shows the
//! login form). That is deliberate, it keeps no secret on the SD card and needs no store.
//!
//! The id is 256 bits from the OS's CSPRNG, so it cannot be guessed, and it is not derived
//! from the token, so it reveals nothing about it and can be revoked alone. The table holds
//! SHA-256 digests of ids, not the ids: a lookup's timing then says nothing about a live
//! cookie, and a memory dump holds nothing a browser could present. The table is bounded; when
//! full, the session used least recently is dropped (only a token holder can create one, so
//! this bound is against accidents such as a script logging in in a loop, not attackers).
//!
//! Pure apart from the random id: the caller passes `now`, so expiry is tested without waiting.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sessions held at once; a login beyond this drops the least recently used one.
pub const MAX_SESSIONS: usize = 256;
/// Random bytes in a session id (hex-encoded into the cookie).
const ID_BYTES: usize = 32;

type IdDigest = [u8; 32];

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// A session unused for this long is over.
    pub idle: Duration,
    /// A session this old is over however busy it is.
    pub lifetime: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    created: Instant,
    last_used: Instant,
}

/// The live sessions, by the digest of their id.
pub struct Sessions {
    live: HashMap<IdDigest, Session>,
    expiry: Expiry,
    max: usize,
}

/// The OS's random source failed; no session was created.
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomFailed;

impl Sessions {
    pub fn new(expiry: Expiry, max: usize) -> Self {
        Self {
            live: HashMap::new(),
            expiry,
            max: max.max(1),
        }
    }

    /// Starts a session and returns its id (the cookie's value).
    pub fn create(&mut self, rng: &SystemRandom, now: Instant) -> Result<String, RandomFailed> {
        let mut bytes = [0u8; ID_BYTES];
        rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.live.retain(|_, s| !expired(s, self.expiry, now));
        if self.live.len() >= self.max {
            if let Some(oldest) = self
                .live
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k)
            {
                self.live.remove(&oldest);
                tracing::info!(
                    max = self.max,
                    "HTTP session table full; logged out the least recently used session"
                );
            }
        }
        self.live.insert(
            id_digest(&id),
            Session {
                created: now,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// Whether `id` names a live session; if so it counts as used now. An expired one is
    /// forgotten.
    pub fn touch(&mut self, id: &str, now: Instant) -> bool {
        let key = id_digest(id);
        let expiry = self.expiry;
        match self.live.get_mut(&key) {
            Some(s) if !expired(s, expiry, now) => {
                s.last_used = now;
                true
            }
            Some(_) => {
                self.live.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Ends the session `id` names; whether there was one.
    pub fn revoke(&mut self, id: &str) -> bool {
        self.live.remove(&id_digest(id)).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len()
    }
}

fn expired(s: &Session, expiry: Expiry, now: Instant) -> bool {
    now.saturating_duration_since(s.last_used) >= expiry.idle
        || now.saturating_duration_since(s.created) >= expiry.lifetime
}

fn id_digest(id: &str) -> IdDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, id.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRY: Expiry = Expiry {
        idle: Duration::from_secs(60),
        lifetime: Duration::from_secs(300),
    };

    #[test]
    fn ids_are_random_and_long() {
        let rng = SystemRandom::new();
        let mut s = Sessions::new(EXPIRY, 8);
        let now = Instant::now();
        let a = s.create(&rng, now).expect("random");
        let b = s.create(&rng, now).expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 * ID_BYTES);
        assert!(s.touch(&a, now) && s.touch(&b, now));
        assert!(!s.touch("0000", now));
    }

    #[test]
    fn a_session_ends_when_idle_when_old_or_when_revoked() {
        let rng = SystemRandom::new();
        let mut s = Sessions::new(EXPIRY, 8);
        let t0 = Instant::now();
        let idle = s.create(&rng, t0).expect("random");
        assert!(s.touch(&idle, t0 + Duration::from_secs(59)));
        // Used at 59 s, so idle until 119 s.
        assert!(s.touch(&idle, t0 + Duration::from_secs(118)));
        assert!(!s.touch(&idle, t0 + Duration::from_secs(179)));
        assert!(!s.touch(&idle, t0 + Duration::from_secs(180)), "stays gone");

        let busy = s.create(&rng, t0).expect("random");
        let mut t = t0;
        while t + Duration::from_secs(30) < t0 + Duration::from_secs(300) {
            t += Duration::from_secs(30);
            assert!(s.touch(&busy, t), "used every 30 s, alive at {t:?}");
        }
        assert!(
            !s.touch(&busy, t0 + Duration::from_secs(300)),
            "over at its absolute age however busy"
        );

        let revoked = s.create(&rng, t0).expect("random");
        assert!(s.revoke(&revoked));
        assert!(!s.touch(&revoked, t0));
        assert!(!s.revoke(&revoked));
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_least_recently_used() {
        let rng = SystemRandom::new();
        let mut s = Sessions::new(EXPIRY, 3);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..3)
            .map(|i| s.create(&rng, t0 + Duration::from_secs(i)).expect("random"))
            .collect();
        assert!(s.touch(&ids[0], t0 + Duration::from_secs(10)));
        let newest = s
            .create(&rng, t0 + Duration::from_secs(11))
            .expect("random");
        assert_eq!(s.len(), 3);
        let now = t0 + Duration::from_secs(12);
        assert!(!s.touch(&ids[1], now), "least recently used dropped");
        assert!(s.touch(&ids[0], now) && s.touch(&ids[2], now) && s.touch(&newest, now));
    }
}
