//! Identifier newtypes. They are plain strings on the wire; the types keep an agent id from
//! being passed where a task id is expected.
//!
//! Ids come from peers (a framework names its tasks and executors; a scheduler names the
//! framework it fails over; an agent names itself) and end up as map keys and as path
//! components of an agent's work dir (`frameworks/<fw>/executors/<executor>/...`). So every id
//! is checked with [`check_id`] where it enters (the master's subscribe, register and accept;
//! the agent's `RunTasks`) and in `paths`, before it becomes a path. The rule is Mesos's
//! (`common/validation.cpp`: not empty, not `.` or `..`, no `/`, `\\` or control characters)
//! with a tighter length, so every id a Mesos framework may use works here too.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether this id may become a path component or a key (see [`check_id`]).
            pub fn check(&self) -> Result<(), InvalidId> {
                check_id($kind, &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// Assigned by the master when an agent first registers; kept by the agent across restarts.
    AgentId,
    "agent id"
);
string_id!(
    /// Assigned by the master when a framework first subscribes; reused on failover.
    FrameworkId,
    "framework id"
);
string_id!(
    /// Chosen by the framework; unique within that framework.
    TaskId,
    "task id"
);
string_id!(
    /// Assigned by the master to each offer.
    OfferId,
    "offer id"
);
string_id!(
    /// Chosen by the framework for a custom executor; unique per framework on an agent.
    ExecutorId,
    "executor id"
);

/// The longest id accepted, in bytes. Ids become path components on agents, which Linux bounds
/// at 255 bytes (`NAME_MAX`), and a command task's executor directory is `command-<task id>`.
pub const MAX_ID_LEN: usize = 200;

/// An id that may not be used, and why. Its text names the id's kind and shows the id escaped
/// and cut short, so a hostile one cannot flood a log line or a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {shown} is not allowed: {problem}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub shown: String,
    pub problem: &'static str,
}

/// Checks `id` (a `kind`, e.g. "task id") against the rule in the module header.
pub fn check_id(kind: &'static str, id: &str) -> Result<(), InvalidId> {
    let problem = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_ID_LEN {
        "it is longer than 200 bytes"
    } else if id == "." || id == ".." {
        "it must not be \".\" or \"..\""
    } else if id.contains(['/', '\\']) {
        "it must not contain '/' or '\\'"
    } else if id.chars().any(char::is_control) {
        "it must not contain control characters"
    } else {
        return Ok(());
    };
    const SHOWN: usize = 40;
    let cut: String = id.chars().take(SHOWN).collect();
    let more = if id.chars().nth(SHOWN).is_some() {
        "…"
    } else {
        ""
    };
    Err(InvalidId {
        kind,
        shown: format!("{cut:?}{more}"),
        problem,
    })
}

/// A fresh random identifier with a readable prefix, e.g. `agent-6f1c…`.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_leave_a_directory_or_flood_a_log_are_refused() {
        let long = "x".repeat(10 * 1024);
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "/abs",
            "a\\b",
            "nul\0x",
            "tab\tx",
            "del\u{7f}",
            long.as_str(),
        ] {
            let err = TaskId::from(bad).check().expect_err(bad);
            assert!(err.to_string().starts_with("task id "), "{err}");
            assert!(err.to_string().len() < 200, "{err}");
        }
        assert_eq!(
            check_id("task id", &"x".repeat(MAX_ID_LEN + 1)).map_err(|e| e.problem),
            Err("it is longer than 200 bytes")
        );
    }

    #[test]
    fn ids_frameworks_use_today_are_accepted() {
        for good in [
            fresh("fw").as_str(),
            fresh("agent").as_str(),
            "t-1",
            "task_1.attempt-2",
            "...",
            ".hidden",
            "with space",
            "ünïcode",
            "a:b@c",
            &"x".repeat(MAX_ID_LEN),
        ] {
            check_id("task id", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
