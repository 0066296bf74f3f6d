//! Bramble's systemd units by name, and enabling one the way `systemctl enable` would (a link
//! in `multi-user.target.wants`), so it works on a root that is not the running system.

use crate::error::{io_err, NodeError};
use crate::files::remove_if_present;
use crate::paths::{UNIT_DIR, WANTS_DIR};
use std::path::Path;

pub const MASTER_UNIT: &str = "bramble-master.service";
pub const AGENT_UNIT: &str = "bramble-agent.service";
pub const FIRSTBOOT_UNIT: &str = "bramble-firstboot.service";
/// The service framework's scheduler (`bramble service scheduler`): on the master node only,
/// beside the master.
pub const SERVICES_UNIT: &str = "bramble-services.service";

/// Links `unit` into `multi-user.target.wants` under `root` (idempotent).
pub(crate) fn enable_unit(root: &Path, unit: &str) -> Result<(), NodeError> {
    let link = root.join(WANTS_DIR).join(unit);
    let target = Path::new("/").join(UNIT_DIR).join(unit);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    remove_if_present(&link)?;
    let dir = root.join(WANTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    std::os::unix::fs::symlink(&target, &link).map_err(io_err("linking", &link))
}
