//! One unprivileged user per framework (`task_uids` in the agent's config), the way systemd's
//! `DynamicUser=` allocates them: a uid from a configured range, with the gid of the same
//! number as its only group, and no entry in `/etc/passwd`.
//!
//! Why: tasks of one framework must not reach another's. Sandboxes are 0700 and owned by
//! their framework's uid, and the kernel lets a process signal another, or read its
//! `/proc/PID/environ` (where a custom executor's `BRAMBLE_EXECUTOR_TOKEN` lives), only under
//! the same uid. One shared task user (`task_user`, the single-user mode) gives none of that.
//!
//! Allocation rules:
//! * a framework keeps its uid on this agent: the table is written durably to
//!   `meta/task_uids.json` (root's, 0600) *before* any process runs under a newly allocated
//!   uid, and read back at start, so a restarted agent gives a framework's new tasks the uid of
//!   the tasks it re-adopts;
//! * a uid is never root (the range may not hold 0, nor 65535 or the top two 32-bit values,
//!   which tools read as "no uid"), never one the user or group database knows, never one a
//!   process runs under and never the owner of a sandbox on disk (so a table lost with a
//!   damaged card cannot hand another framework's leftovers to a newcomer);
//! * when the range is used up, entries whose uid owns no sandbox and runs no process are
//!   forgotten and their uids reused; if none, the launch fails saying so.
//!
//! The pure part ([`UidTable`]) decides; [`FrameworkUsers`] adds the file and the machine's
//! facts. Two agents on one host need disjoint ranges (each only sees its own table).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use bramble_proto::durable::{self, FileError, WriteOptions};
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::TaskUser;
use crate::paths::WorkDir;

/// An inclusive range of uids (`"70000-70999"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    first: u32,
    last: u32,
}

impl UidRange {
    /// `first..=last`; refused when it holds a uid no task may run as (see the module header).
    pub fn new(first: u32, last: u32) -> Result<UidRange, String> {
        if first > last {
            return Err(format!("the range {first}-{last} is empty (first > last)"));
        }
        if first == 0 {
            return Err("the range may not hold uid 0 (root)".into());
        }
        for reserved in [65_535, u32::MAX - 1, u32::MAX] {
            if (first..=last).contains(&reserved) {
                return Err(format!(
                    "the range {first}-{last} holds {reserved}, which tools read as \"no uid\""
                ));
            }
        }
        Ok(UidRange { first, last })
    }

    pub fn first(&self) -> u32 {
        self.first
    }

    pub fn last(&self) -> u32 {
        self.last
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    /// The user a task of uid `uid` runs as: that uid, the gid of the same number, no other
    /// group.
    pub fn user(uid: u32) -> TaskUser {
        TaskUser {
            name: format!("uid {uid}"),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(uid),
            groups: vec![Gid::from_raw(uid)],
        }
    }
}

impl FromStr for UidRange {
    type Err = String;

    fn from_str(text: &str) -> Result<UidRange, String> {
        let bad = || format!("expected FIRST-LAST such as \"70000-70999\", got {text:?}");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let first = a.trim().parse().map_err(|_| bad())?;
        let last = b.trim().parse().map_err(|_| bad())?;
        UidRange::new(first, last)
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Which uid each framework (by id) has: the pure allocation rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidTable {
    /// Framework id → uid.
    pub uids: BTreeMap<String, u32>,
}

/// Why no uid could be given.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error(
        "no free task uid in {range}: {held} held by frameworks with sandboxes or processes on \
         this agent, the rest taken by accounts or processes of this machine; widen task_uids \
         in agent.toml or let the sandbox gc catch up"
    )]
    Exhausted { range: UidRange, held: usize },
    #[error("recording the task uid of framework {framework}: {source}")]
    Save {
        framework: String,
        #[source]
        source: FileError,
    },
}

impl UidTable {
    /// The uid `owner` already has, if it is in `range`.
    pub fn get(&self, owner: &str, range: UidRange) -> Option<u32> {
        self.uids.get(owner).copied().filter(|u| range.contains(*u))
    }

    /// Gives `owner` the lowest uid of `range` that no one in the table holds and `usable`
    /// accepts (nothing of the machine's uses it). `None` when there is none.
    pub fn allocate(
        &mut self,
        owner: &str,
        range: UidRange,
        usable: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let held: BTreeSet<u32> = self.uids.values().copied().collect();
        let uid = (range.first..=range.last).find(|u| !held.contains(u) && usable(*u))?;
        self.uids.insert(owner.to_string(), uid);
        Some(uid)
    }

    /// Forgets every entry `idle` says nothing holds any more (no sandbox, no process), or whose
    /// uid is outside `range` (the range was changed); returns how many went.
    pub fn forget_idle(&mut self, range: UidRange, idle: impl Fn(u32) -> bool) -> usize {
        let before = self.uids.len();
        self.uids
            .retain(|_, uid| range.contains(*uid) && !idle(*uid));
        before - self.uids.len()
    }
}

/// The per-framework users of one agent: the range, the table and where it is kept.
#[derive(Debug)]
pub struct FrameworkUsers {
    range: UidRange,
    work_dir: WorkDir,
    table: Mutex<UidTable>,
}

impl FrameworkUsers {
    /// Loads the table from `work_dir`'s meta dir (none yet: empty). A file that does not
    /// parse is moved aside with a warning: the uids it named are still protected by the
    /// sandboxes they own and the processes they run (see the module header).
    pub fn open(range: UidRange, work_dir: &WorkDir) -> Result<FrameworkUsers, String> {
        let path = work_dir.task_uids_file();
        let table = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<UidTable>(&bytes) {
                Ok(table) => table,
                Err(e) => {
                    let aside = path.with_extension("json.bad");
                    warn!(file = %path.display(), moved_to = %aside.display(), "the task uid table does not parse ({e}); starting a new one");
                    std::fs::rename(&path, &aside)
                        .map_err(|e| format!("moving {} aside: {e}", path.display()))?;
                    UidTable::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UidTable::default(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let outside = table.uids.values().filter(|u| !range.contains(**u)).count();
        if outside > 0 {
            info!(range = %range, outside, "task uids outside the configured range are no longer given out");
        }
        Ok(FrameworkUsers {
            range,
            work_dir: work_dir.clone(),
            table: Mutex::new(table),
        })
    }

    pub fn range(&self) -> UidRange {
        self.range
    }

    /// The user `framework`'s tasks run as, allocated (and recorded durably) on first use.
    pub fn user_for(&self, framework: &str) -> Result<TaskUser, AllocError> {
        // A poisoned lock only means a panic elsewhere mid-allocation; the table is still whole
        // (it is changed by single inserts and retains).
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uid) = table.get(framework, self.range) {
            return Ok(UidRange::user(uid));
        }
        let busy = self.busy_uids();
        let free = |uid: u32| !busy.contains(&uid) && !known_account(uid);
        let uid = match table.allocate(framework, self.range, free) {
            Some(uid) => uid,
            None => {
                let forgotten = table.forget_idle(self.range, |uid| !busy.contains(&uid));
                if forgotten > 0 {
                    info!(range = %self.range, forgotten, "task uid range used up: reusing uids of frameworks with nothing left on this agent");
                }
                table
                    .allocate(framework, self.range, free)
                    .ok_or(AllocError::Exhausted {
                        range: self.range,
                        held: table.uids.len(),
                    })?
            }
        };
        let path = self.work_dir.task_uids_file();
        let saved = serde_json::to_vec(&*table)
            .map_err(std::io::Error::other)
            .map_err(FileError::at("encoding", &path))
            .and_then(|bytes| durable::write_with(&path, &bytes, WriteOptions::secret()));
        if let Err(source) = saved {
            table.uids.remove(framework);
            return Err(AllocError::Save {
                framework: framework.to_string(),
                source,
            });
        }
        info!(
            framework,
            uid, "framework's tasks run as their own uid on this agent"
        );
        Ok(UidRange::user(uid))
    }

    /// Uids in the range that something on this machine holds: a running process, or a
    /// sandbox on disk.
    fn busy_uids(&self) -> BTreeSet<u32> {
        let mut busy = process_uids();
        for sandbox in self.work_dir.sandboxes_on_disk() {
            if let Ok(meta) = std::fs::symlink_metadata(&sandbox) {
                busy.insert(meta.uid());
            }
        }
        busy.retain(|u| self.range.contains(*u));
        busy
    }
}

/// Whether the user or group database names `uid` (as a user, or as a group's gid).
fn known_account(uid: u32) -> bool {
    // A failed lookup counts as known: better to skip a uid than to hand out someone's.
    !matches!(User::from_uid(Uid::from_raw(uid)), Ok(None))
        || !matches!(Group::from_gid(Gid::from_raw(uid)), Ok(None))
}

/// The owners of every process's `/proc/PID` (its effective uid, or root while it is not
/// dumpable, which only hides a uid in the middle of switching).
fn process_uids() -> BTreeSet<u32> {
    let proc = Path::new("/proc");
    let Ok(entries) = std::fs::read_dir(proc) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.uid())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> UidRange {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_refuse_root_and_the_no_uid_values() {
        assert_eq!(range("70000-70999").to_string(), "70000-70999");
        assert_eq!(range(" 5 - 5 ").first(), 5);
        for (text, why) in [
            ("0-10", "root"),
            ("65000-66000", "65535"),
            ("4294967290-4294967295", "4294967294"),
            ("10-5", "empty"),
            ("70000", "FIRST-LAST"),
            ("a-b", "FIRST-LAST"),
            ("-1-5", "FIRST-LAST"),
        ] {
            let err = text.parse::<UidRange>().unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn each_owner_gets_its_own_uid_and_keeps_it() {
        let r = range("100-102");
        let mut t = UidTable::default();
        assert_eq!(t.allocate("a", r, |_| true), Some(100));
        assert_eq!(t.allocate("b", r, |_| true), Some(101));
        assert_eq!(t.get("a", r), Some(100));
        assert_eq!(t.get("b", r), Some(101));
        assert_eq!(t.get("c", r), None);
        // Out of the range after a config change: not given any more.
        assert_eq!(t.get("a", range("200-300")), None);
    }

    #[test]
    fn uids_the_machine_uses_are_skipped_and_a_full_range_says_so() {
        let r = range("100-103");
        let mut t = UidTable::default();
        let machine_uses = |u: u32| u == 100 || u == 102;
        assert_eq!(t.allocate("a", r, |u| !machine_uses(u)), Some(101));
        assert_eq!(t.allocate("b", r, |u| !machine_uses(u)), Some(103));
        assert_eq!(t.allocate("c", r, |u| !machine_uses(u)), None);
        assert_eq!(t.uids.len(), 2, "a failed allocation records nothing");
    }

    #[test]
    fn only_idle_or_out_of_range_entries_are_forgotten() {
        let r = range("100-101");
        let mut t = UidTable::default();
        t.allocate("a", r, |_| true);
        t.allocate("b", r, |_| true);
        t.uids.insert("old".into(), 5);
        // b's uid still owns a sandbox or runs a process; a's does not.
        assert_eq!(t.forget_idle(r, |u| u == 100), 2);
        assert_eq!(t.uids.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(t.allocate("c", r, |_| true), Some(100));
    }

    /// A range of uids no account and no process of this machine uses, unique to this test
    /// process (uids above 2^24 are far from any distribution's allocations).
    fn free_range(offset: u32) -> UidRange {
        let base = 20_000_000 + (std::process::id() % 100_000) * 100 + offset;
        UidRange::new(base, base + 9).unwrap()
    }

    #[test]
    fn the_table_survives_a_restart_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path());
        std::fs::create_dir_all(work.meta_dir()).unwrap();
        let r = free_range(0);
        let users = FrameworkUsers::open(r, &work).unwrap();
        let a = users.user_for("fw-a").unwrap();
        let b = users.user_for("fw-b").unwrap();
        assert_ne!(a.uid, b.uid);
        assert!(r.contains(a.uid.as_raw()) && r.contains(b.uid.as_raw()));
        assert_eq!(a.groups, vec![a.gid]);
        assert_eq!(users.user_for("fw-a").unwrap(), a);
        let mode = std::fs::metadata(work.task_uids_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let again = FrameworkUsers::open(r, &work).unwrap();
        assert_eq!(again.user_for("fw-b").unwrap(), b);
        assert_eq!(again.user_for("fw-a").unwrap(), a);
        let c = again.user_for("fw-c").unwrap();
        assert!(c.uid != a.uid && c.uid != b.uid);
    }

    #[test]
    fn a_uid_owning_a_sandbox_is_not_handed_out_even_without_the_table() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP a_uid_owning_a_sandbox_is_not_handed_out_even_without_the_table: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path());
        std::fs::create_dir_all(work.meta_dir()).unwrap();
        let r = free_range(10);
        let fw: bramble_proto::FrameworkId = "old-fw".into();
        let sandbox = work.sandbox(&fw, &"e".into(), "c1").unwrap();
        std::fs::create_dir_all(&sandbox).unwrap();
        nix::unistd::chown(&sandbox, Some(Uid::from_raw(r.first())), None).unwrap();
        // The table that named old-fw's uid is gone (a damaged card): the sandbox still says.
        let users = FrameworkUsers::open(r, &work).unwrap();
        let new = users.user_for("new-fw").unwrap();
        assert_eq!(new.uid.as_raw(), r.first() + 1);
    }

    #[test]
    fn a_damaged_table_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path());
        std::fs::create_dir_all(work.meta_dir()).unwrap();
        std::fs::write(work.task_uids_file(), b"{not json").unwrap();
        let users = FrameworkUsers::open(free_range(20), &work).unwrap();
        users.user_for("fw").unwrap();
        assert!(work.task_uids_file().with_extension("json.bad").exists());
    }

    #[test]
    fn known_accounts_are_not_free() {
        assert!(known_account(0));
        // The range check keeps tasks far from here; the lookup itself must see root.
        assert!(!known_account(free_range(30).first()));
    }
}
