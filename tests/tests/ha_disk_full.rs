//! A replicated master whose disk fills up (issue 18's "a follower's disk full: it is rebuilt
//! from the leader"), on real `bramble-master` processes: a follower's state directory is a
//! small tmpfs, filled by a file until 256 KiB are left, and the leader takes 2.4 MB of
//! framework state writes. Every write is acknowledged (the leader and the other follower are a
//! majority); the full follower's replica stops on the write that does not fit and the process
//! exits non-zero naming the cause (its service manager restarts it). With the space freed it
//! is restarted, and with the other follower then SIGKILLed a write still commits: the
//! restarted follower caught up from the leader.
//!
//! Mounting a tmpfs needs root: elsewhere the test says so and passes without running.

use bramble_client::OperatorClient;
use bramble_proto::framework_state::StateWrite;
use bramble_proto::identity::Role;
use bramble_sdk::{framework_info, SchedulerConfig};
use bramble_tests::framework::TestFramework;
use bramble_tests::ha::state_json;
use bramble_tests::processes::*;
use bramble_tests::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Shell;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// The master whose state directory is the small tmpfs.
const FULL: usize = 3;
const VALUE_BYTES: usize = 60 * 1024;
const WRITES_WHILE_FULL: usize = 40;
/// Keys the writes rotate over: 8 × 60 KiB stays under a framework's 512 KiB quota.
const KEYS: usize = 8;

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed, e.g. a container.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("the mount point");
        let out = Shell::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("running mount");
        if !out.status.success() {
            eprintln!(
                "skipped: mounting a tmpfs on {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Shell::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with a file until a write fails for lack of space, then
/// gives `leave` bytes back. Returns the file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("creating the filler");
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}"); // ENOSPC
                break;
            }
        }
    }
    f.set_len(written.saturating_sub(leave))
        .expect("giving space back");
    path
}

/// The master among `alive` that serves as leader, if every other one of `alive` names it.
async fn agreed_now(group: &HaGroup, alive: &[usize]) -> Option<usize> {
    let mut leaders = Vec::new();
    let mut serving = Vec::new();
    for &id in alive {
        let s = state_json(group.http(id)).await?;
        leaders.push(s.get("leader")?.as_u64()? as usize);
        if s.get("standby").is_none() {
            serving.push(id);
        }
    }
    let leader = *serving.first()?;
    (serving.len() == 1 && leaders.iter().all(|l| *l == leader)).then_some(leader)
}

/// Waits for [`agreed_now`].
async fn agreed_leader(group: &HaGroup, alive: &[usize]) -> usize {
    eventually("one master serves, the others name it", WAIT, || {
        agreed_now(group, alive)
    })
    .await
}

fn put(i: usize) -> StateWrite {
    StateWrite::Put {
        key: format!("k{}", i % KEYS),
        value: vec![b'a' + (i % 26) as u8; VALUE_BYTES],
        expected_version: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_disk_fills_up_exits_and_catches_up_once_restarted_with_space() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs for a master's disk needs root (CI runs as root)");
        return;
    }
    let net = LoopbackCluster::new();
    let group = HaGroup::new(3);
    let cmd = MasterCmd::default();
    let dir = net.test.path(&format!("master-state-{FULL}"));
    let Some(_tmpfs) = Tmpfs::mount(&dir, "32m") else {
        return;
    };
    let mut masters: Vec<Option<Proc>> = (1..=3)
        .map(|id| Some(net.start_ha_master(&format!("m{id}"), &cmd, &group, id)))
        .collect();
    let mut leader = agreed_leader(&group, &[1, 2, 3]).await;
    if leader == FULL {
        // The tmpfs master must be a follower: it steps aside until another leads (restarted
        // at once, it would still be the leader of its term).
        masters[FULL - 1].take().expect("running").kill_hard();
        let elsewhere = agreed_leader(&group, &[1, 2]).await;
        masters[FULL - 1] = Some(net.start_ha_master("m3-follower", &cmd, &group, FULL));
        leader = agreed_leader(&group, &[1, 2, 3]).await;
        assert_eq!(leader, elsewhere);
    }
    let other = (1..=3)
        .find(|&i| i != leader && i != FULL)
        .expect("a third master");
    let all: Vec<SocketAddr> = (1..=3).map(|id| group.quic(id)).collect();

    let mut info = framework_info("disk-full");
    info.failover_timeout_secs = 120.0;
    let config = SchedulerConfig::new(
        group.quic(leader),
        net.test.credentials(Role::Framework),
        info,
    )
    .with_masters(&all);
    let fw = TestFramework::start_with(config).await;
    let mut op = OperatorClient::connect(&net.test.cluster_dir(), group.quic(leader))
        .await
        .expect("an operator connection to the leader");

    // The follower's disk full; the writes go on being acknowledged.
    let filler = fill(&dir, 256 * 1024);
    for i in 0..WRITES_WHILE_FULL {
        op.write_framework_state(&fw.id, put(i))
            .await
            .unwrap_or_else(|e| panic!("write {i} with a follower's disk full: {e}"));
    }
    let mut full = masters[FULL - 1].take().expect("the full master");
    let status = full.exited("the full master exits", WAIT).await;
    assert!(!status.success(), "{status:?}");
    let log = full.log_text();
    assert!(
        log.contains("the replicated store stopped") && log.contains("No space left on device"),
        "the full master's log names the cause:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );

    // Space freed, restarted: it catches up. With the other follower gone, a write commits
    // only through it.
    std::fs::remove_file(&filler).expect("removing the filler");
    masters[FULL - 1] = Some(net.start_ha_master("m3-restarted", &cmd, &group, FULL));
    assert_eq!(agreed_leader(&group, &[1, 2, 3]).await, leader);
    masters[other - 1]
        .take()
        .expect("the other follower")
        .kill_hard();
    op.close();
    // While the restarted follower catches up the leader has no majority confirming it and
    // may stand down for a moment (and either of the two may lead after): each attempt goes
    // to whichever serves.
    let cluster_dir = net.test.cluster_dir();
    let fw_id = fw.id.clone();
    let entries = eventually(
        "a write committed by the leader and the restarted follower",
        WAIT,
        || async {
            let serving = agreed_now(&group, &[leader, FULL]).await?;
            let mut op = OperatorClient::connect(&cluster_dir, group.quic(serving))
                .await
                .ok()?;
            op.write_framework_state(&fw_id, put(WRITES_WHILE_FULL))
                .await
                .ok()??;
            let entries = op.read_framework_state(&fw_id, "k").await.ok();
            op.close();
            entries
        },
    )
    .await;
    assert_eq!(entries.len(), KEYS);
    assert!(entries.iter().all(|e| e.value.len() == VALUE_BYTES));
    drop(fw);
}
