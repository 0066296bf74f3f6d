//! The users Bramble runs as: their `systemd-sysusers` declaration, creating them on a card (with
//! the shadow tools where sysusers is missing), and sharing the node key with the master's
//! group.

use crate::error::{io_err, NodeError};
use crate::files::write_file;
use crate::firstboot::FirstbootOptions;
use crate::paths::{CLUSTER_DIR, SYSUSERS_FILE};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The master's user (in group `i2c` for the panel). Tasks need no account: each framework's
/// run as its own uid from [`TASK_UIDS`], which no account holds.
pub const MASTER_USER: &str = "bramble";

/// The uid range the card's agent gives frameworks' tasks (`task_uids`): past Debian's login
/// users (up to 59999), systemd's DynamicUser range (61184-65519) and `nobody` (65534), and
/// below the ranges container managers take (524288 up); the agent skips any uid an account
/// or a process has anyway.
pub const TASK_UIDS: &str = "70000-70999";

/// `systemd-sysusers` input: declarative, idempotent, and it picks free system ids on the
/// card itself, so the image never edits `/etc/passwd`, `shadow`, `group` and `gshadow` by
/// hand (four files that must agree, with id ranges the base chose).
pub const SYSUSERS_CONF: &str = "\
# Bramble's users (systemd-sysusers, see sysusers.d(5)). Applied by bramble-firstboot.
# i2c exists on Raspberry Pi OS already; plain Debian needs it for /dev/i2c-*.
g i2c -
u bramble - \"Bramble master\" /var/lib/bramble /usr/sbin/nologin
m bramble i2c
";

pub(crate) fn create_users(opts: &FirstbootOptions) -> Result<(), NodeError> {
    if !opts.root.join(SYSUSERS_FILE).exists() {
        // Not from our image: the admin's sysusers directory (/usr may be read-only here).
        let conf = opts.root.join("etc/sysusers.d/bramble.conf");
        write_file(&conf, SYSUSERS_CONF.as_bytes(), 0o644)?;
    }
    if opts.live {
        if run_tool("systemd-sysusers", &[], "creating users").is_ok() {
            return Ok(());
        }
        // Without systemd-sysusers (a trimmed base): the shadow tools do the same.
        tracing::warn!("systemd-sysusers failed; creating users with groupadd/useradd");
        return create_users_with_shadow_tools();
    }
    let root = opts.root.display().to_string();
    run_tool(
        "systemd-sysusers",
        &["--root", &root],
        "creating users under the root directory",
    )
}

fn create_users_with_shadow_tools() -> Result<(), NodeError> {
    let known = |db: &str, name: &str| {
        std::process::Command::new("getent")
            .args([db, name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !known("group", "i2c") {
        run_tool("groupadd", &["--system", "i2c"], "creating group i2c")?;
    }
    if !known("passwd", MASTER_USER) {
        run_tool(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--groups",
                "i2c",
                "--home-dir",
                "/var/lib/bramble",
                "--shell",
                "/usr/sbin/nologin",
                MASTER_USER,
            ],
            "creating user bramble",
        )?;
    }
    Ok(())
}

pub(crate) fn run_tool(program: &str, args: &[&str], what: &str) -> Result<(), NodeError> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NodeError::Users(format!("{what}: running {program}: {e}")))?;
    if !out.status.success() {
        return Err(NodeError::Users(format!(
            "{what}: {program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The id of `name` in a `/etc/group`-style file (name:x:id:...).
pub fn id_in(db_text: &str, name: &str) -> Option<u32> {
    db_text.lines().find_map(|l| {
        let mut fields = l.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The master runs as `bramble`: it needs the node key, nobody else does.
pub(crate) fn share_node_key(root: &Path) -> Result<(), NodeError> {
    let group_path = root.join("etc/group");
    let groups = std::fs::read_to_string(&group_path).map_err(io_err("reading", &group_path))?;
    let gid = id_in(&groups, MASTER_USER).ok_or_else(|| {
        NodeError::Users(format!(
            "group {MASTER_USER} missing from {} after creating users",
            group_path.display()
        ))
    })?;
    let dir = root.join(CLUSTER_DIR);
    for (path, mode) in [(dir.clone(), 0o750), (dir.join("node.key"), 0o640)] {
        if !path.exists() {
            continue;
        }
        std::os::unix::fs::chown(&path, Some(0), Some(gid)).map_err(io_err("chown", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_group_files() {
        let groups = "root:x:0:\ni2c:x:998:bramble\nbramble:x:997:\n";
        assert_eq!(id_in(groups, "bramble"), Some(997));
        assert_eq!(id_in(groups, "i2c"), Some(998));
        assert_eq!(id_in(groups, "bramble-task"), None);
    }
}
