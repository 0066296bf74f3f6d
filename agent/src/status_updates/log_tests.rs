//! The update log on disk: what survives a reopen or a crash, torn and damaged segments,
//! compaction and its interruption, failed writes, and the upgrade from `.upd` files.
//!
//! A crash is simulated by `mem::forget`ting the manager: nothing buffered reaches the file,
//! as if the process had been killed (the page cache survives, as it does when only the
//! process dies; what a power cut loses is what was never fsync'd, which the torn-tail tests
//! cover byte by byte).

use super::legacy::SUFFIX as LEGACY_SUFFIX;
use super::tests::{files, on_disk, update, write_legacy};
use super::*;
use bramble_proto::task::TaskReason;
use std::fs;
use std::mem;
use std::path::PathBuf;
use std::process::Command;

fn open(dir: &Path) -> StatusUpdateManager {
    StatusUpdateManager::open(dir).unwrap()
}

/// The process dies: buffered acknowledgements are lost, files stay as they are.
fn crash(m: StatusUpdateManager) {
    mem::forget(m);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files(dir, ".log").iter().map(|n| dir.join(n)).collect()
}

fn only_segment(dir: &Path) -> PathBuf {
    let s = segments(dir);
    assert_eq!(s.len(), 1, "{s:?}");
    s[0].clone()
}

/// Every queued update, each task's queue in order, tasks in key order.
fn queued(m: &StatusUpdateManager) -> Vec<TaskStatus> {
    m.streams
        .values()
        .flat_map(|s| s.queue.iter().map(|p| p.status.clone()))
        .collect()
}

/// A varied update: data bytes, reason, message, exit code.
fn rich(task: &str, state: TaskState, n: u8) -> TaskStatus {
    let mut u = update("fw", task, state).with_reason(
        TaskReason::ExecutorTerminated,
        format!("message {n} ünïcode"),
    );
    u.data = (0..=n).collect();
    u.exit_code = Some(i32::from(n) - 3);
    u
}

#[test]
fn updates_round_trip_across_reopens_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.record(rich("a", TaskState::Starting, 0)).unwrap();
    m.record_batch(vec![
        rich("a", TaskState::Running, 200),
        rich("b", TaskState::Running, 1),
        rich("a", TaskState::Finished, 7),
    ])
    .unwrap();
    let expected = queued(&m);
    assert_eq!(expected.len(), 4);
    assert!(expected.iter().all(|s| s.uuid.is_some()));
    crash(m);
    for _ in 0..3 {
        let m = open(dir.path());
        assert_eq!(queued(&m), expected);
        assert_eq!(m.next_seq, 5, "sequence numbers continue");
    }
    only_segment(dir.path());
}

#[test]
fn flushed_acknowledgements_survive_a_crash_and_lost_ones_mean_a_resend() {
    let dir = tempfile::tempdir().unwrap();
    let (fw, t) = (FrameworkId::from("fw"), TaskId::from("t"));
    let mut m = open(dir.path());
    let uuids: Vec<Uuid> = (0..10)
        .map(|i| {
            m.record(update("fw", &format!("t{i}"), TaskState::Running))
                .unwrap()
        })
        .collect();
    for (i, u) in uuids.iter().enumerate().take(5) {
        assert!(m.acknowledge(&fw, &format!("t{i}").into(), *u).unwrap());
    }
    m.flush();
    assert_eq!(on_disk(dir.path()), 5);
    crash(m);
    let mut m = open(dir.path());
    assert_eq!(m.pending(), 5);

    // Acknowledged but never handed to the file before the crash: resent after it.
    for (i, u) in uuids.iter().enumerate().skip(5) {
        assert!(m.acknowledge(&fw, &format!("t{i}").into(), *u).unwrap());
    }
    assert_eq!(m.pending(), 0);
    crash(m);
    let mut m = open(dir.path());
    assert_eq!(m.pending(), 5);
    assert_eq!(m.due(Instant::now()).len(), 5, "resent");
    // ...and acknowledged again.
    for (i, u) in uuids.iter().enumerate().skip(5) {
        assert!(m.acknowledge(&fw, &format!("t{i}").into(), *u).unwrap());
    }
    drop(m);
    assert_eq!(open(dir.path()).pending(), 0, "a clean stop keeps its acks");
    let _ = t;
}

/// Writes a log of three updates and returns the segment's bytes and where the last
/// update's frame starts.
fn three_updates(dir: &Path) -> (Vec<u8>, usize, Vec<TaskStatus>) {
    let mut m = open(dir);
    m.record(rich("a", TaskState::Running, 1)).unwrap();
    m.record(rich("b", TaskState::Running, 2)).unwrap();
    let last_start = m.log.len() as usize;
    m.record(rich("a", TaskState::Finished, 3)).unwrap();
    let all = queued(&m);
    drop(m);
    (fs::read(only_segment(dir)).unwrap(), last_start, all)
}

#[test]
fn a_torn_tail_at_every_offset_of_the_last_record_is_dropped() {
    let src = tempfile::tempdir().unwrap();
    let (bytes, last_start, all) = three_updates(src.path());
    let name = only_segment(src.path());
    let name = name.file_name().unwrap();
    let last_uuid = all
        .iter()
        .find(|s| s.state == TaskState::Finished)
        .unwrap()
        .uuid;
    let kept: Vec<TaskStatus> = all
        .iter()
        .filter(|s| s.uuid != last_uuid)
        .cloned()
        .collect();
    for cut in last_start..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(name), &bytes[..cut]).unwrap();
        let mut m = open(dir.path());
        assert_eq!(queued(&m), kept, "cut at {cut}");
        assert!(
            files(dir.path(), ".corrupt").is_empty(),
            "cut at {cut}: a torn tail is no damage"
        );
        // The fresh segment carries no garbage: appending after it reads back.
        m.record(rich("c", TaskState::Running, 9)).unwrap();
        crash(m);
        let m = open(dir.path());
        assert_eq!(m.pending(), kept.len() + 1, "cut at {cut}");
        assert!(files(dir.path(), ".corrupt").is_empty());
    }
}

#[test]
fn damage_in_the_middle_record_loses_only_it_and_moves_the_segment_aside() {
    let src = tempfile::tempdir().unwrap();
    let mut m = open(src.path());
    m.record(rich("a", TaskState::Running, 1)).unwrap();
    let middle_start = m.log.len() as usize;
    m.record(rich("b", TaskState::Running, 2)).unwrap();
    let middle_end = m.log.len() as usize;
    m.record(rich("c", TaskState::Running, 3)).unwrap();
    let all = queued(&m);
    drop(m);
    let segment = only_segment(src.path());
    let bytes = fs::read(&segment).unwrap();
    let name = segment.file_name().unwrap();
    let expected: Vec<TaskStatus> = all
        .iter()
        .filter(|s| s.task_id.as_str() != "b")
        .cloned()
        .collect();

    // The length, the checksum, and the payload's first, middle and last bytes.
    let mid = (middle_start + middle_end) / 2;
    for byte in [
        middle_start,
        middle_start + 2,
        middle_start + 5,
        middle_start + 8,
        mid,
        middle_end - 1,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = bytes.clone();
        bad[byte] ^= 0x04;
        fs::write(dir.path().join(name), &bad).unwrap();
        let m = open(dir.path());
        assert_eq!(queued(&m), expected, "flip in byte {byte}");
        drop(m);
        assert_eq!(
            files(dir.path(), ".corrupt"),
            vec![format!("{}.corrupt", name.to_string_lossy())],
            "flip in byte {byte}"
        );
        assert_eq!(
            fs::read(
                dir.path()
                    .join(format!("{}.corrupt", name.to_string_lossy()))
            )
            .unwrap(),
            bad
        );
        // The salvage is durable and clean: a second open finds nothing wrong.
        assert_eq!(queued(&open(dir.path())), expected);
        assert_eq!(files(dir.path(), ".corrupt").len(), 1);
    }
}

#[test]
fn a_segment_with_a_damaged_header_is_moved_aside_and_an_older_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.record(update("fw", "t1", TaskState::Running)).unwrap();
    drop(m);
    let older = only_segment(dir.path());
    let kept = fs::read(&older).unwrap();
    let mut m = open(dir.path());
    m.record(update("fw", "t2", TaskState::Running)).unwrap();
    drop(m);
    let newest = only_segment(dir.path());
    assert!(newest > older);
    // An interrupted rewrite left the older one; then the newest's header was damaged.
    fs::write(&older, &kept).unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    bytes[3] ^= 0xff;
    fs::write(&newest, &bytes).unwrap();

    let m = open(dir.path());
    let tasks: Vec<_> = m.latest().map(|s| s.task_id.as_str().to_owned()).collect();
    assert_eq!(tasks, vec!["t1"], "what the older segment held");
    let aside = format!("{}.corrupt", newest.file_name().unwrap().to_string_lossy());
    assert_eq!(files(dir.path(), ".corrupt"), vec![aside]);
    assert!(only_segment(dir.path()) > newest);
}

/// Records `n` updates of one-update tasks and acknowledges all but every `keep`-th task;
/// returns the kept tasks' updates, two per task.
fn churn(m: &mut StatusUpdateManager, tag: &str, n: usize, keep: usize) -> Vec<TaskStatus> {
    let fw = FrameworkId::from("fw");
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let batch: Vec<TaskStatus> = chunk
            .iter()
            .flat_map(|i| {
                let task = format!("{tag}{i:05}");
                [
                    rich(&task, TaskState::Running, (*i % 50) as u8),
                    rich(&task, TaskState::Finished, 1),
                ]
            })
            .collect();
        let uuids = m.record_batch(batch).unwrap();
        for (i, pair) in chunk.iter().zip(uuids.chunks(2)) {
            if i % keep != 0 {
                let task = TaskId(format!("{tag}{i:05}"));
                assert!(m.acknowledge(&fw, &task, pair[0]).unwrap());
                assert!(m.acknowledge(&fw, &task, pair[1]).unwrap());
            }
        }
    }
    queued(m)
        .into_iter()
        .filter(|s| s.task_id.as_str().starts_with(tag))
        .collect()
}

#[test]
fn compaction_keeps_exactly_the_live_updates_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.log.compact_min = 16 << 10;
    let first = only_segment(dir.path());
    let kept = churn(&mut m, "x", 600, 25);
    assert_eq!(kept.len(), 2 * 24);
    let segment = only_segment(dir.path());
    assert!(segment > first, "compacted at least once");
    assert!(
        m.log.len() < 2 * (16 << 10),
        "bounded: {} bytes",
        m.log.len()
    );
    assert_eq!(queued(&m), kept);
    m.flush();
    crash(m);
    let m = open(dir.path());
    assert_eq!(queued(&m), kept);
    // Each kept task still sends RUNNING before FINISHED.
    let states: Vec<TaskState> = kept.iter().map(|s| s.state).collect();
    assert!(states
        .chunks(2)
        .all(|c| c == [TaskState::Running, TaskState::Finished]));
}

#[test]
fn a_compaction_interrupted_at_any_step_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.log.compact_min = 16 << 10;
    churn(&mut m, "a", 100, 10);
    m.flush();
    let before = only_segment(dir.path());
    let before_bytes = fs::read(&before).unwrap();
    let gen_before = m.log.gen();
    // Grow until a compaction starts a new segment.
    let mut n = 0;
    while m.log.gen() == gen_before {
        churn(&mut m, &format!("b{n}-"), 16, 1000);
        n += 1;
    }
    let expected = queued(&m);
    m.flush();
    let after = only_segment(dir.path());
    crash(m);

    // 1. Crashed while writing the new segment: its temp file is left, the old one complete.
    let d1 = tempfile::tempdir().unwrap();
    let old_name = before.file_name().unwrap();
    fs::write(d1.path().join(old_name), &before_bytes).unwrap();
    fs::write(
        bramble_proto::durable::temp_path(&d1.path().join(after.file_name().unwrap())),
        b"half a segment",
    )
    .unwrap();
    let m1 = open(d1.path());
    assert_eq!(m1.pending(), 2 * 10, "the old segment's state");
    drop(m1);
    assert!(files(d1.path(), ".tmp").is_empty());
    only_segment(d1.path());

    // 2. Crashed after the rename, before the old segment was deleted: the newer one wins.
    fs::write(&before, &before_bytes).unwrap();
    assert_eq!(segments(dir.path()).len(), 2);
    let m2 = open(dir.path());
    assert_eq!(queued(&m2), expected);
    drop(m2);
    let last = only_segment(dir.path());
    assert!(last > after);
}

#[test]
fn a_failed_batch_leaves_nothing_queued_and_the_log_repairs_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.record(update("fw", "t1", TaskState::Running)).unwrap();
    let ack = m.record(update("fw", "t2", TaskState::Running)).unwrap();
    m.acknowledge(&"fw".into(), &"t2".into(), ack).unwrap();
    let before = queued(&m);

    m.log.fail_writes();
    let err = m
        .record_batch(vec![
            update("fw", "t1", TaskState::Finished),
            update("fw", "t3", TaskState::Running),
        ])
        .unwrap_err();
    assert!(matches!(err, StatusUpdateError::Io { .. }), "{err}");
    assert_eq!(queued(&m), before, "nothing queued");
    assert!(m.has_pending(&"fw".into(), &"t1".into()));
    assert!(!m.has_pending(&"fw".into(), &"t3".into()));
    assert_eq!(on_disk(dir.path()), 2, "nothing written");

    // The next write starts a fresh segment from memory (the ack included) and succeeds.
    let finished = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    crash(m);
    let m = open(dir.path());
    let got: Vec<_> = queued(&m)
        .iter()
        .map(|s| (s.task_id.clone(), s.state))
        .collect();
    assert_eq!(
        got,
        vec![
            ("t1".into(), TaskState::Running),
            ("t1".into(), TaskState::Finished)
        ]
    );
    assert_eq!(m.latest().next().unwrap().uuid, Some(finished));
}

/// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(kib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a crashed manager in the test may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_fails_the_batch_whole_and_recording_resumes_once_there_is_room() {
    let Some(disk) = SmallDisk::mount(256) else {
        eprintln!("skipped: mounting a small tmpfs needs root (CAP_SYS_ADMIN)");
        return;
    };
    let dir = disk.0.path().join("updates");
    let mut m = open(&dir);
    let early = m.record(rich("t0", TaskState::Running, 5)).unwrap();
    // Fill the disk: the filler gets whatever room there is.
    let filler = disk.0.path().join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let before = queued(&m);
    let batch: Vec<TaskStatus> = (0..64)
        .map(|i| rich(&format!("big{i}"), TaskState::Running, 250))
        .collect();
    assert!(matches!(
        m.record_batch(batch.clone()),
        Err(StatusUpdateError::Io { .. })
    ));
    assert_eq!(queued(&m), before);

    fs::remove_file(&filler).unwrap();
    m.record_batch(batch).unwrap();
    crash(m);
    let m = open(&dir);
    assert_eq!(m.pending(), 65);
    let t0 = m.latest().find(|s| s.task_id.as_str() == "t0").unwrap();
    assert_eq!(t0.uuid, Some(early));
    assert!(files(&dir, ".corrupt").is_empty());
}

#[test]
fn legacy_upd_files_are_moved_into_the_log_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for (seq, task, state) in [
        (7, "t1", TaskState::Running),
        (8, "t2", TaskState::Running),
        (9, "t1", TaskState::Finished),
    ] {
        let mut u = rich(task, state, seq as u8);
        u.uuid = Some(Uuid::new_v4());
        // One JSON can print and parse back exactly (serde_json may be an ulp off otherwise).
        u.timestamp = 1_700_000_000.25;
        write_legacy(dir.path(), seq, &u);
        written.push(u);
    }
    let mut m = open(dir.path());
    assert!(
        files(dir.path(), LEGACY_SUFFIX).is_empty(),
        "deleted once in the log"
    );
    let t1: Vec<_> = written
        .iter()
        .filter(|s| s.task_id.as_str() == "t1")
        .cloned()
        .collect();
    let t2: Vec<_> = written
        .iter()
        .filter(|s| s.task_id.as_str() == "t2")
        .cloned()
        .collect();
    assert_eq!(queued(&m), [t1.clone(), t2.clone()].concat());
    let fresh = m.record(update("fw", "t3", TaskState::Running)).unwrap();
    let key = ("fw".into(), "t3".into());
    assert!(
        m.streams[&key].queue[0].seq > 9,
        "after the legacy sequence numbers"
    );
    crash(m);
    let m = open(dir.path());
    assert_eq!(m.pending(), 4);
    assert_eq!(queued(&m)[..3], [t1, t2].concat());
    assert_eq!(m.latest().last().unwrap().uuid, Some(fresh));
}

#[test]
fn legacy_files_resurrected_by_a_crash_are_not_loaded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut u = update("fw", "t1", TaskState::Running);
    u.uuid = Some(Uuid::new_v4());
    let name = write_legacy(dir.path(), 1, &u);
    let bytes = fs::read(dir.path().join(&name)).unwrap();
    drop(open(dir.path()));
    // The deletion did not reach the disk before a crash.
    fs::write(dir.path().join(&name), bytes).unwrap();
    assert_eq!(open(dir.path()).pending(), 1);
}

#[test]
fn forgetting_a_framework_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.record(update("fw-a", "t1", TaskState::Running)).unwrap();
    let b = m.record(update("fw-b", "t1", TaskState::Running)).unwrap();
    m.record(update("fw-a", "t2", TaskState::Running)).unwrap();
    assert_eq!(m.forget_framework(&"fw-a".into()).unwrap(), 2);
    crash(m);
    let m = open(dir.path());
    assert_eq!(m.pending(), 1);
    assert_eq!(m.latest().next().unwrap().uuid, Some(b));
}

#[test]
fn a_long_run_leaves_no_memory_or_disk_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let fw = FrameworkId::from("fw");
    let mut biggest = 0;
    for round in 0..120 {
        let batch: Vec<TaskStatus> = (0..128)
            .map(|i| update("fw", &format!("r{round}-{i}"), TaskState::Finished))
            .collect();
        let uuids = m.record_batch(batch).unwrap();
        for (i, u) in uuids.into_iter().enumerate() {
            m.acknowledge(&fw, &format!("r{round}-{i}").into(), u)
                .unwrap();
        }
        m.flush();
        biggest = biggest.max(m.log.len());
    }
    assert_eq!(m.pending(), 0);
    assert!(m.streams.is_empty(), "finished tasks forgotten");
    assert!(m.log.buffer_capacity() <= 1 << 20);
    assert!(biggest < COMPACT_LIMIT, "log bounded: {biggest} bytes");
    drop(m);
    assert_eq!(open(dir.path()).pending(), 0);
}

/// The default compaction threshold plus one burst.
const COMPACT_LIMIT: u64 = log::COMPACT_MIN_BYTES + (256 << 10);
