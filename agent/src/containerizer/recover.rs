//! What lets a container outlive its agent: the exit-status wrapper of command tasks, the
//! identity of a process across an agent restart, and waiting for a process that is not our
//! child.
//!
//! * **Exit status.** A restarted agent is no longer the parent of the containers it
//!   re-adopts, so it cannot `waitpid` them. A container launched with an exit-status file runs
//!   under a tiny `/bin/sh` supervisor ([`wrap`]): the shell runs the real program as its child,
//!   waits for it and writes `$?` (128 + n for a signal n) to the file, then exits with the
//!   same status. It ignores nothing its child could inherit: it only *traps* SIGTERM/INT/HUP
//!   (handlers are reset on `exec`), and POSIX shells run a trap only after the foreground
//!   child has ended, so a kill of the whole process group still lets it record the status.
//!   Only SIGKILL (after the kill grace, or the OOM killer choosing the shell) leaves no file.
//!   One race remains: a signal reaching the forked child between fork and exec meets the
//!   inherited trap and is lost; a kill that early is finished by the SIGKILL after the grace.
//!   A shell rather than a Rust helper because the agent is also a library inside other
//!   binaries (`bramble demo`, tests), where `current_exe()` is not the agent, and `/bin/sh`
//!   is on every host.
//! * **Under a task user** the supervisor stays the agent's user (root) and only the task is
//!   switched, by `setpriv` (util-linux) between the shell and the program: so the status
//!   file lives in the root-owned `meta/` and is written by root, the task cannot write (or
//!   forge) it, nor signal its supervisor, and the supervisor never has anything to complain
//!   about into the task's output. A root-owned parent waiting on its child is the one
//!   arrangement where the status comes from the kernel (`$?`) and nothing of the task's
//!   user can reach where it is written.
//! * **Orphans.** With an [`OrphanWatch`](super::liveness::OrphanWatch) the supervisor also
//!   runs a watcher that ends the task once the agent's heartbeat has stood still for the
//!   recovery timeout (see `liveness.rs`).
//! * **Identity.** A pid alone may be reused; (pid, start time in clock ticks since boot, from
//!   `/proc/<pid>/stat` field 22) is unique within one boot. The agent checkpoints both and
//!   compares the boot id itself (a reboot means nothing survived).
//! * **Waiting.** `pidfd_open` + poll (Linux 5.3+) wakes exactly when the process exits;
//!   without it (older kernels, seccomp) `/proc` is polled every [`POLL_INTERVAL`].

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::libc;
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// How often a process is checked when pidfd is unavailable.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The supervisor script: `$1` is the status file, the rest is the command and its arguments.
/// A trap (not an ignore) so the child starts with default signal handling. The shell's own
/// stderr is /dev/null (the command gets the real one back), so nothing of the supervisor's,
/// such as "Terminated" for a child killed by a signal, ends up in the task's output; the
/// command runs as `( exec ... )` so it is still the shell's direct child.
const WRAPPER: &str = concat!(
    "f=$1; shift; trap : TERM INT HUP; exec 3>&2 2>/dev/null; ",
    "( exec \"$@\" 2>&3 3>&- ); c=$?; echo \"$c\" > \"$f\"; exit \"$c\""
);

/// The supervisor with an orphan watcher (`liveness.rs`): `$1` the status file, `$2` the
/// agent's heartbeat file, `$3` the timeout and `$4` the tick in seconds, then the command.
/// The watcher (a subshell, in the background, its output nowhere) ignores the group's
/// SIGTERM it may send itself; it samples the heartbeat's mtime every tick and, once that has
/// stood still for the timeout, SIGTERMs the process group, then SIGKILLs it 5 s later. The
/// supervisor ends it once the command is over. Without `stat` it watches nothing: a missing
/// tool must never look like a dead agent.
const WATCHED_WRAPPER: &str = concat!(
    "f=$1; hb=$2; t=$3; k=$4; shift 4; trap : TERM INT HUP; exec 3>&2 2>/dev/null; ",
    "( trap '' TERM INT HUP; command -v stat || exit 0; ",
    "l=$(stat -c %Y \"$hb\"); q=0; ",
    "while [ \"$q\" -lt \"$t\" ]; do sleep \"$k\"; n=$(stat -c %Y \"$hb\"); ",
    "if [ \"$n\" = \"$l\" ]; then q=$((q+k)); else l=$n; q=0; fi; done; ",
    "kill -TERM -$$; sleep 5; kill -KILL -$$ ) </dev/null >/dev/null 2>&1 3>&- & ",
    "w=$!; ( exec \"$@\" 2>&3 3>&- ); c=$?; kill -KILL \"$w\"; ",
    "echo \"$c\" > \"$f\"; exit \"$c\""
);

/// How a supervised program is run: where its status goes, what watches for its agent, and
/// who it runs as.
#[derive(Debug, Clone)]
pub(crate) struct Supervision<'a> {
    pub status_file: &'a Path,
    /// End the task once the agent has been gone this long (`liveness.rs`).
    pub orphan: Option<&'a super::liveness::OrphanWatch>,
    /// Run the program as this user (the supervisor stays who it is).
    pub user: Option<SwitchTo<'a>>,
}

/// Who the supervised program runs as, when not as the supervisor: `setpriv`'s path and the
/// ids it switches to (see the module header).
#[derive(Debug, Clone)]
pub(crate) struct SwitchTo<'a> {
    pub setpriv: &'a Path,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included); empty clears them.
    pub groups: &'a [u32],
}

impl SwitchTo<'_> {
    /// `setpriv --reuid=U --regid=G --groups=... --`: real, effective and saved ids all
    /// switched (so the task cannot switch back), then exec of what follows `--`.
    fn args(&self) -> Vec<String> {
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_string()
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        vec![
            self.setpriv.to_string_lossy().into_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            groups,
            "--".to_string(),
        ]
    }
}

/// The program and arguments that run `program args` under the exit-status supervisor.
pub(crate) fn wrap(
    how: &Supervision<'_>,
    program: &Path,
    args: &[String],
) -> (PathBuf, Vec<String>) {
    let script = if how.orphan.is_some() {
        WATCHED_WRAPPER
    } else {
        WRAPPER
    };
    let mut wrapped = vec![
        "-c".to_string(),
        script.to_string(),
        // $0 of the supervisor: what `ps` and the shell's own messages show.
        "bramble-supervise".to_string(),
        how.status_file.to_string_lossy().into_owned(),
    ];
    if let Some(watch) = how.orphan {
        wrapped.extend([
            watch.heartbeat.to_string_lossy().into_owned(),
            watch.timeout_secs.to_string(),
            watch.tick_secs().to_string(),
        ]);
    }
    if let Some(user) = &how.user {
        wrapped.extend(user.args());
    }
    wrapped.push(program.to_string_lossy().into_owned());
    wrapped.extend(args.iter().cloned());
    (PathBuf::from("/bin/sh"), wrapped)
}

/// The recorded exit status as (code, signal), decoded the shell's way: 128 + n is signal n.
/// `None` when the file is missing or unreadable (the supervisor itself was SIGKILLed).
pub(crate) fn read_exit_status(path: &Path) -> Option<(Option<i32>, Option<i32>)> {
    let text = fs::read_to_string(path).ok()?;
    let status: i32 = text.trim().parse().ok()?;
    Some(decode_status(status))
}

fn decode_status(status: i32) -> (Option<i32>, Option<i32>) {
    if (129..=128 + 64).contains(&status) {
        (None, Some(status - 128))
    } else {
        (Some(status), None)
    }
}

/// Start time of `pid` in clock ticks since boot, or `None` when there is no such process or
/// it is a zombie (dead for our purposes: it only waits to be reaped).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

/// Field 22 (starttime) of a `/proc/<pid>/stat` line; `None` for zombies and garbage. The
/// command name (field 2) may contain spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state), so starttime is the 19th field after it.
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is still the very process that had `start_time`.
pub fn is_same_process(pid: u32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// Resolves once the process (pid, start_time) is gone (exited, or never was this one).
pub(crate) async fn wait_gone(pid: u32, start_time: u64) {
    match pidfd_open(pid) {
        Ok(fd) => {
            // Checked after opening: the pidfd now pins this pid, so a match here means the
            // fd refers to the process we checkpointed, not to a later one with the same pid.
            if !is_same_process(pid, start_time) {
                return;
            }
            // SAFETY: `fd` is an owned pidfd that the AsyncFd owns and closes; nothing else
            // reads, replaces or closes it while registered.
            match unsafe { AsyncFd::register(fd) } {
                Ok(fd) => {
                    // A pidfd polls readable once the process has exited.
                    if let Ok(mut guard) = fd.readable().await {
                        guard.retain_ready();
                    }
                    return;
                }
                Err(e) => debug!(pid, "polling a pidfd failed ({e}); polling /proc instead"),
            }
        }
        Err(e) => debug!(pid, "pidfd_open failed ({e}); polling /proc instead"),
    }
    while is_same_process(pid, start_time) {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(status_file: &Path) -> Supervision<'_> {
        Supervision {
            status_file,
            orphan: None,
            user: None,
        }
    }

    #[test]
    fn stat_start_time_survives_odd_command_names() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat_start_time(line), Some(987654));
        let zombie = "4242 (sh) Z 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_stat_start_time(zombie), None);
        assert_eq!(parse_stat_start_time("garbage"), None);
        assert_eq!(parse_stat_start_time("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_start_time_is_stable_and_identifies_us() {
        let me = std::process::id();
        let t = process_start_time(me).expect("our own stat");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
    }

    #[test]
    fn statuses_decode_the_shell_way() {
        assert_eq!(decode_status(0), (Some(0), None));
        assert_eq!(decode_status(3), (Some(3), None));
        assert_eq!(decode_status(128), (Some(128), None));
        assert_eq!(decode_status(137), (None, Some(9)));
        assert_eq!(decode_status(143), (None, Some(15)));
        assert_eq!(decode_status(255), (Some(255), None));
    }

    #[tokio::test]
    async fn supervisor_records_exit_codes_and_signals() {
        let dir = tempfile::tempdir().unwrap();
        for (script, expected) in [
            ("exit 3", (Some(3), None)),
            ("true", (Some(0), None)),
            ("kill -TERM $$", (None, Some(15))),
        ] {
            let file = dir.path().join("status");
            let _ = fs::remove_file(&file);
            let (program, args) = wrap(
                &plain(&file),
                Path::new("/bin/sh"),
                &["-c".to_string(), script.to_string()],
            );
            let out = tokio::process::Command::new(program)
                .args(args)
                .status()
                .await
                .unwrap();
            assert_eq!(read_exit_status(&file), Some(expected), "{script}");
            // The supervisor exits with the child's status, as the shell saw it.
            let code = out.code().unwrap();
            assert_eq!(decode_status(code), expected, "{script}");
        }
    }

    #[tokio::test]
    async fn supervisor_survives_a_group_sigterm_long_enough_to_record_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status");
        let (program, args) = wrap(&plain(&file), Path::new("sleep"), &["30".to_string()]);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let start = process_start_time(pid).unwrap();
        // Wait until the supervisor's child has exec'd `sleep` (see the module header).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| {
                fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "sleep")
            })
        {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), wait_gone(pid, start))
            .await
            .expect("pidfd wakes when the process exits");
        let _ = child.wait().await;
        assert_eq!(read_exit_status(&file), Some((None, Some(15))));
    }
}
