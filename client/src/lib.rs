//! `bramble-client`: the one place that talks to a master as an operator (Nomad's `api/`).
//! Find the master (an address, else mDNS for this cluster's CA), dial it with the operator
//! certificate, say hello, then make typed calls: state, kill, sandbox reads, the panel.
//!
//! The `bramble` CLI prints what these return; tests and tools use them directly. Errors are
//! typed ([`ClientError`]) so a caller can tell a refusal from a network failure from the
//! master's own answer; binaries add their context with `anyhow`.

mod error;
mod locate;
mod operator;
mod paging;

pub use error::ClientError;
pub use locate::{find_leader, locate_master, locate_masters, DISCOVERY_TIMEOUT};
pub use operator::{owner_of, OperatorClient, Panel, SEVERAL_CONNECT_TIMEOUT, STATE_PAGE};
