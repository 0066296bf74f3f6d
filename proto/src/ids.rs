//! Identifier newtypes. They are plain strings on the wire; the types keep an agent id from
//! being passed where a task id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
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
    AgentId
);
string_id!(
    /// Assigned by the master when a framework first subscribes; reused on failover.
    FrameworkId
);
string_id!(
    /// Chosen by the framework; unique within that framework.
    TaskId
);
string_id!(
    /// Assigned by the master to each offer.
    OfferId
);
string_id!(
    /// Chosen by the framework for a custom executor; unique per framework on an agent.
    ExecutorId
);

/// A fresh random identifier with a readable prefix, e.g. `agent-6f1c…`.
pub fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
