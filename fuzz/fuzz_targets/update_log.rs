//! The agent's status-update log as found on disk after a crash, a bad SD card or tampering:
//! opening it recovers what is intact, sets damage aside, and never panics.
#![no_main]

use bramble_agent::status_updates::StatusUpdateManager;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // tmpfs keeps this fast; the log's fsyncs are no-ops there.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    let segment = dir.path().join(format!("updates-{:020}.log", 1));
    if std::fs::write(&segment, data).is_err() {
        return;
    }
    let _ = StatusUpdateManager::pending_on_disk(dir.path());
    let _ = StatusUpdateManager::open(dir.path());
});
