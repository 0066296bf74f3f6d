//! Throwaway system users for tests of the task user (root only): created with `useradd`,
//! removed with `userdel` on drop.

use std::process::Command;

/// A system user made for one test, removed when dropped.
pub struct ThrowawayUser(pub String);

impl ThrowawayUser {
    /// Creates `bramble-<tag><pid>` (no home, no login shell). Panics if `useradd` fails.
    pub fn create(tag: &str) -> ThrowawayUser {
        let name = format!("bramble-{tag}{}", std::process::id());
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .status()
            .expect("running useradd");
        assert!(status.success(), "useradd {name}: {status}");
        ThrowawayUser(name)
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}
