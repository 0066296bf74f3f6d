//! Where things are on a card, relative to its root (`/` on a Pi, a directory in tests and in
//! `bramble-image`, which writes them into an image). One list, so the image and the node
//! agree on every path.

/// The settings file on the boot partition.
pub const SETTINGS_FILE: &str = "bramble.toml";
/// Written (relative to the root) when first boot has completed; the unit is conditioned on
/// its absence.
pub const DONE_MARKER: &str = "var/lib/bramble/firstboot.done";
/// Where the image keeps the ssh public keys first boot installs for root.
pub const IMAGE_AUTHORIZED_KEYS: &str = "etc/bramble/ssh_authorized_keys";
/// The users and groups Bramble needs, created by `systemd-sysusers`.
pub const SYSUSERS_FILE: &str = "usr/lib/sysusers.d/bramble.conf";
/// Where the image installs Bramble's units (the admin's unit directory: it wins over
/// anything a package ships, and a package upgrade never touches it).
pub const UNIT_DIR: &str = "etc/systemd/system";
/// Directory of the units `multi-user.target` pulls in.
pub const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
/// The cluster's certificates and the node key.
pub const CLUSTER_DIR: &str = "etc/bramble/cluster";
