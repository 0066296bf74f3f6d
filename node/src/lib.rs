//! `bramble-node`: what a Bramble card is. The `bramble.toml` schema, the on-card paths, unit
//! and user names, the config files rendered for the daemons, and first boot, which
//! `bramble node firstboot` runs to turn a freshly flashed card into a named cluster node, once.
//!
//! `bramble-firstboot.service` runs this before the master and agent start. Everything it
//! touches is under a `root` directory (`/` on a Pi, a temp dir in tests) and the boot
//! partition's directory, so the whole first boot is testable without a Pi:
//!
//! 1. settings from `bramble.toml` on the boot partition (the one file a user edits from any
//!    computer before first boot; missing means defaults, malformed is an error and nothing
//!    is changed, so the next boot tries again);
//! 2. hostname `bramble-XXXX` from the board serial (machine id when there is none, e.g. under
//!    QEMU) unless `bramble.toml` names one;
//! 3. users from `/usr/lib/sysusers.d/bramble.conf` via `systemd-sysusers`, then the node key
//!    made readable to the `bramble` group (the master runs as `bramble`);
//! 4. the role: `master`, `agent`, or `auto` = master when an SSD1306 answers on I2C;
//! 5. `/etc/bramble/agent.toml` everywhere, `master.toml` on the master; the master's unit is
//!    enabled only there (the agent's is enabled by the image: every node runs an agent);
//! 6. the image's ssh key appended to root's `authorized_keys` (works whether the base sets
//!    users up with Bookworm's `userconf` or Trixie's cloud-init, because it needs neither);
//! 7. a marker file, written last: a failed first boot is retried on the next boot.
//!
//! `bramble-image` (which writes and inspects cards) and the `bramble` CLI (which runs first
//! boot on the card) both build on this crate, so they agree on every name and path, and the
//! image tool links neither the master nor the agent.
//!
//! Modules: `settings` (`bramble.toml`), `paths`, `units`, `users`, `templates` (the daemons'
//! config files), `identity` (the node's name), `firstboot` (the steps above), `files`.

mod error;
mod files;
mod firstboot;
mod identity;
mod paths;
mod settings;
mod templates;
mod units;
mod users;

pub use error::NodeError;
pub use firstboot::{
    firstboot, probe_panel_on_bus, set_hosts_name, FirstbootOptions, FirstbootReport,
};
pub use identity::{hostname_for, node_identity, NodeIdentity};
pub use paths::{
    CLUSTER_DIR, DONE_MARKER, IMAGE_AUTHORIZED_KEYS, SETTINGS_FILE, SYSUSERS_FILE, UNIT_DIR,
    WANTS_DIR,
};
pub use settings::{check_hostname, parse_settings, settings_template, NodeSettings, RoleSetting};
pub use templates::{agent_toml, master_toml};
pub use units::{AGENT_UNIT, FIRSTBOOT_UNIT, MASTER_UNIT, SERVICES_UNIT};
pub use users::{id_in, MASTER_USER, SYSUSERS_CONF, TASK_UIDS};
