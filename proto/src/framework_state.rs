//! A framework's own small key/value store, kept by the master: what a framework (its
//! scheduler through the SDK, or an operator on its behalf) needs to survive the scheduler's
//! restart, such as the service framework's specs. The master holds one [`FrameworkState`]
//! per framework, durable in its store and gone with the framework.
//!
//! Every entry carries a version (1 when created, +1 per write), so writers can compare and
//! swap: a write naming `expected_version` is refused unless the entry is at that version
//! (`Some(0)`: it must not exist). The store is bounded so no framework can make the master
//! hold more than a frame's worth for it: the whole state is sent to the framework in one
//! message when it subscribes. Refusals say which key and which limit.
//!
//! This module is pure (no I/O): the master applies writes here, then commits the changed
//! entries with the rest of its burst.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Keys plus values of one framework, in bytes: the whole state rides one frame on subscribe.
pub const MAX_FRAMEWORK_BYTES: usize = 512 * 1024;
/// Most keys one framework may hold.
pub const MAX_FRAMEWORK_KEYS: usize = 1024;

/// One key's value and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    pub key: String,
    pub value: Vec<u8>,
    /// 1 when created, +1 per write.
    pub version: u64,
}

/// A change to a framework's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateWrite {
    /// Sets `key` to `value`. With `expected_version`, only if the entry is at that version
    /// now (`Some(0)`: only if it does not exist).
    Put {
        key: String,
        value: Vec<u8>,
        expected_version: Option<u64>,
    },
    /// Removes `key` (removing a key that does not exist is not an error unless a version is
    /// expected).
    Delete {
        key: String,
        expected_version: Option<u64>,
    },
}

impl StateWrite {
    pub fn key(&self) -> &str {
        match self {
            StateWrite::Put { key, .. } | StateWrite::Delete { key, .. } => key,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    #[error("key {key:?} is not a valid state key: {why}")]
    InvalidKey { key: String, why: &'static str },
    #[error("value for key {key:?} is {len} bytes; at most {MAX_VALUE_BYTES} are kept per key")]
    ValueTooLarge { key: String, len: usize },
    #[error("writing key {key:?} would make the framework's state {total} bytes; at most {MAX_FRAMEWORK_BYTES} are kept per framework (delete keys first)")]
    FrameworkFull { key: String, total: usize },
    #[error("writing key {key:?} would make {MAX_FRAMEWORK_KEYS} keys too many for one framework (delete keys first)")]
    TooManyKeys { key: String },
    #[error(
        "key {key:?} is at version {found}, not {expected} (someone else wrote it; read it again)"
    )]
    VersionMismatch {
        key: String,
        expected: u64,
        found: u64,
    },
    /// The writer's fencing token is not the framework's current epoch: another instance
    /// became the active scheduler since the writer did, so the write is stale.
    #[error("fenced: this write carries fencing token {held}, but the framework's active scheduler holds {current} (another instance took over since; this one is no longer the leader)")]
    Fenced { held: u64, current: u64 },
}

/// Whether a write carrying `held` (if any) may land on a framework whose epoch is `current`:
/// a write without a token always may (operators, schedulers that do not fence); one with a
/// token only if it is the current epoch.
pub fn check_fence(held: Option<u64>, current: u64) -> Result<(), StateRefusal> {
    match held {
        Some(held) if held != current => Err(StateRefusal::Fenced { held, current }),
        _ => Ok(()),
    }
}

/// Keys are printable text without control characters, so they read well in the CLI and
/// sort the way they look.
pub fn check_key(key: &str) -> Result<(), StateRefusal> {
    let why = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("it is longer than 256 bytes")
    } else if key.chars().any(char::is_control) {
        Some("it holds control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(StateRefusal::InvalidKey {
            key: key.chars().take(64).collect(),
            why,
        }),
        None => Ok(()),
    }
}

/// One framework's entries, with the size accounting the limits need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameworkState {
    entries: BTreeMap<String, StateEntry>,
    bytes: usize,
}

fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

impl FrameworkState {
    /// Puts back an entry read from the store, as it was written (limits were checked then).
    pub fn restore(&mut self, entry: StateEntry) {
        self.bytes += cost(&entry.key, &entry.value);
        if let Some(old) = self.entries.insert(entry.key.clone(), entry) {
            self.bytes -= cost(&old.key, &old.value);
        }
    }

    /// Applies `write`: the entry as it is now (`None` once deleted), or why it was refused
    /// (and nothing changed).
    pub fn apply(&mut self, write: StateWrite) -> Result<Option<StateEntry>, StateRefusal> {
        check_key(write.key())?;
        let current = self
            .entries
            .get(write.key())
            .map(|e| e.version)
            .unwrap_or(0);
        let expected = match &write {
            StateWrite::Put {
                expected_version, ..
            }
            | StateWrite::Delete {
                expected_version, ..
            } => *expected_version,
        };
        if let Some(expected) = expected {
            if expected != current {
                return Err(StateRefusal::VersionMismatch {
                    key: write.key().to_string(),
                    expected,
                    found: current,
                });
            }
        }
        match write {
            StateWrite::Put { key, value, .. } => {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(StateRefusal::ValueTooLarge {
                        key,
                        len: value.len(),
                    });
                }
                let old_cost = self
                    .entries
                    .get(&key)
                    .map(|e| cost(&e.key, &e.value))
                    .unwrap_or(0);
                let total = self.bytes - old_cost + cost(&key, &value);
                if total > MAX_FRAMEWORK_BYTES {
                    return Err(StateRefusal::FrameworkFull { key, total });
                }
                if current == 0 && self.entries.len() >= MAX_FRAMEWORK_KEYS {
                    return Err(StateRefusal::TooManyKeys { key });
                }
                let entry = StateEntry {
                    key: key.clone(),
                    value,
                    version: current + 1,
                };
                self.bytes = total;
                self.entries.insert(key, entry.clone());
                Ok(Some(entry))
            }
            StateWrite::Delete { key, .. } => {
                if let Some(old) = self.entries.remove(&key) {
                    self.bytes -= cost(&old.key, &old.value);
                }
                Ok(None)
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&StateEntry> {
        self.entries.get(key)
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> Vec<StateEntry> {
        self.entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys plus values, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8], expected: Option<u64>) -> StateWrite {
        StateWrite::Put {
            key: key.into(),
            value: value.to_vec(),
            expected_version: expected,
        }
    }

    #[test]
    fn versions_count_writes_and_compare_and_swap_refuses_a_stale_writer() {
        let mut s = FrameworkState::default();
        let e = s.apply(put("spec/web", b"v1", Some(0))).expect("create");
        assert_eq!(e.map(|e| e.version), Some(1));
        assert!(matches!(
            s.apply(put("spec/web", b"again", Some(0))),
            Err(StateRefusal::VersionMismatch {
                expected: 0,
                found: 1,
                ..
            })
        ));
        let e = s.apply(put("spec/web", b"v2", Some(1))).expect("swap");
        assert_eq!(e.map(|e| e.version), Some(2));
        assert!(s.apply(put("spec/web", b"v3", Some(1))).is_err());
        assert_eq!(
            s.get("spec/web").map(|e| e.value.as_slice()),
            Some(&b"v2"[..])
        );
        let e = s.apply(put("spec/web", b"v3", None)).expect("blind write");
        assert_eq!(e.map(|e| e.version), Some(3));
        assert!(matches!(
            s.apply(StateWrite::Delete {
                key: "spec/web".into(),
                expected_version: Some(2)
            }),
            Err(StateRefusal::VersionMismatch { found: 3, .. })
        ));
        assert_eq!(
            s.apply(StateWrite::Delete {
                key: "spec/web".into(),
                expected_version: Some(3)
            }),
            Ok(None)
        );
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn limits_refuse_with_the_key_and_leave_the_state_unchanged() {
        let mut s = FrameworkState::default();
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        let refused = s.apply(put("k", &big, None)).expect_err("too big");
        assert!(refused.to_string().contains("\"k\""), "{refused}");
        assert!(matches!(
            s.apply(put("", b"x", None)),
            Err(StateRefusal::InvalidKey { .. })
        ));
        assert!(matches!(
            s.apply(put("a\nb", b"x", None)),
            Err(StateRefusal::InvalidKey { .. })
        ));
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(s.apply(put(&long_key, b"x", None)).is_err());
        // Fill the framework's budget with maximal values, then one more is refused.
        let value = vec![1u8; MAX_VALUE_BYTES];
        let mut i = 0;
        loop {
            match s.apply(put(&format!("blob/{i}"), &value, None)) {
                Ok(_) => i += 1,
                Err(StateRefusal::FrameworkFull { total, .. }) => {
                    assert!(total > MAX_FRAMEWORK_BYTES);
                    break;
                }
                Err(other) => panic!("unexpected refusal {other}"),
            }
        }
        assert!(s.bytes() <= MAX_FRAMEWORK_BYTES);
        assert_eq!(s.list("blob/").len(), i);
        // Overwriting an existing key with a smaller value still fits.
        assert!(s.apply(put("blob/0", b"small", None)).is_ok());
    }

    #[test]
    fn too_many_keys_are_refused_but_existing_ones_stay_writable() {
        let mut s = FrameworkState::default();
        for i in 0..MAX_FRAMEWORK_KEYS {
            s.apply(put(&format!("k{i:05}"), b"", None)).expect("fits");
        }
        assert!(matches!(
            s.apply(put("one-more", b"", None)),
            Err(StateRefusal::TooManyKeys { .. })
        ));
        assert!(s.apply(put("k00000", b"x", None)).is_ok());
    }

    #[test]
    fn only_the_current_fencing_token_or_none_passes() {
        assert_eq!(check_fence(None, 7), Ok(()));
        assert_eq!(check_fence(Some(7), 7), Ok(()));
        let stale = check_fence(Some(6), 7).expect_err("stale");
        assert_eq!(
            stale,
            StateRefusal::Fenced {
                held: 6,
                current: 7
            }
        );
        assert!(stale.to_string().contains("6") && stale.to_string().contains("7"));
        // A token the master never gave this framework (a previous life's, or made up).
        assert!(check_fence(Some(8), 7).is_err());
    }

    #[test]
    fn list_takes_a_prefix_in_key_order_and_restore_keeps_versions() {
        let mut s = FrameworkState::default();
        for k in ["spec/b", "spec/a", "status/a", "spe"] {
            s.apply(put(k, k.as_bytes(), None)).expect("fits");
        }
        let keys: Vec<String> = s.list("spec/").into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["spec/a", "spec/b"]);
        assert_eq!(s.list("").len(), 4);
        let mut restored = FrameworkState::default();
        for e in s.list("") {
            restored.restore(e);
        }
        assert_eq!(restored, s);
    }
}
