//! Run task lists in the update log: what survives a reopen, a crash at any byte of a burst's
//! write and a compaction; the states the log keeps for each task; and that nothing of a
//! removed task or run is kept, in memory or on disk.

use super::tests::{logged_task, update};
use super::*;
use crate::checkpoint::LoggedTask;
use std::fs;
use std::mem;

fn open(dir: &Path) -> StatusUpdateManager {
    StatusUpdateManager::open(dir).unwrap()
}

fn logged(c: &str) -> TaskChange {
    TaskChange::RunLogged {
        container: c.into(),
    }
}

fn added(c: &str, task: LoggedTask) -> TaskChange {
    TaskChange::TaskAdded {
        container: c.into(),
        task,
    }
}

fn removed(c: &str, task: &str) -> TaskChange {
    TaskChange::TaskRemoved {
        container: c.into(),
        task_id: task.into(),
    }
}

fn run_removed(c: &str) -> TaskChange {
    TaskChange::RunRemoved {
        container: c.into(),
    }
}

fn handed(task: &str) -> LoggedTask {
    LoggedTask {
        handed: true,
        ..logged_task(task)
    }
}

/// A logged run's tasks as (id, handed, state).
type TaskList = Vec<(String, bool, TaskState)>;

/// Each logged run's tasks.
fn lists(m: &StatusUpdateManager) -> Vec<(String, TaskList)> {
    m.logged_runs()
        .into_iter()
        .map(|(c, tasks)| {
            let tasks = tasks
                .into_iter()
                .map(|t| (t.info.task_id.to_string(), t.handed, t.state))
                .collect();
            (c, tasks)
        })
        .collect()
}

/// What the log counts live is exactly its live frames, updates and task lists.
fn assert_live_accounting(m: &StatusUpdateManager) {
    let (members, live) = m.log.members();
    let updates: usize = m
        .streams
        .values()
        .flat_map(|s| s.queue.iter())
        .map(|p| p.frame_len)
        .sum();
    assert_eq!(live, (updates + members.live_bytes()) as u64);
}

#[test]
fn run_task_lists_survive_reopens_and_a_later_entry_replaces_an_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let first = [
        logged("c1"),
        added("c1", logged_task("t1")),
        added("c1", logged_task("t2")),
        logged("c2"),
        added("c2", logged_task("u1")),
    ];
    m.record_burst(&first, vec![]).unwrap();
    let second = [
        added("c1", handed("t1")),
        removed("c1", "t2"),
        added("c1", logged_task("t3")),
        removed("c2", "u1"),
        removed("c9", "nothing"),
    ];
    m.record_burst(&second, vec![]).unwrap();
    let expected = vec![
        (
            "c1".to_string(),
            vec![
                ("t1".to_string(), true, TaskState::Staging),
                ("t3".to_string(), false, TaskState::Staging),
            ],
        ),
        // A run without tasks stays logged.
        ("c2".to_string(), vec![]),
    ];
    assert_eq!(lists(&m), expected);
    assert_live_accounting(&m);
    mem::forget(m);
    for _ in 0..2 {
        let m = open(dir.path());
        assert_eq!(lists(&m), expected);
        assert_live_accounting(&m);
    }
    let mut m = open(dir.path());
    m.record_burst(&[run_removed("c1"), run_removed("c2")], vec![])
        .unwrap();
    assert!(m.logged_runs().is_empty());
    drop(m);
    assert!(open(dir.path()).logged_runs().is_empty());
}

#[test]
fn a_tasks_state_is_its_latest_recorded_update_even_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let t1 = vec![update("fw", "t1", TaskState::Running)];
    let uuids = m
        .record_burst(&[logged("c1"), added("c1", handed("t1"))], t1)
        .unwrap();
    // Another framework's task of the same id is not this one.
    m.record(update("other", "t1", TaskState::Failed)).unwrap();
    assert_eq!(
        lists(&m)[0].1,
        vec![("t1".into(), true, TaskState::Running)]
    );
    assert!(m.acknowledge(&"fw".into(), &"t1".into(), uuids[0]).unwrap());
    m.flush();
    mem::forget(m);
    // Reopened: the acknowledged update is gone, the segment rewritten, the state kept.
    let mut m = open(dir.path());
    assert_eq!(m.pending(), 1);
    assert_eq!(
        lists(&m)[0].1,
        vec![("t1".into(), true, TaskState::Running)]
    );
    // States only move forward.
    m.record(update("fw", "t1", TaskState::Starting)).unwrap();
    m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    drop(m);
    let m = open(dir.path());
    assert_eq!(
        lists(&m)[0].1,
        vec![("t1".into(), true, TaskState::Finished)]
    );
}

#[test]
fn a_task_id_reused_in_another_run_moves_on_there_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    let changes = [
        logged("c1"),
        added("c1", handed("t1")),
        removed("c1", "t1"),
        logged("c2"),
        added("c2", handed("t1")),
    ];
    m.record_burst(&changes, vec![update("fw", "t1", TaskState::Running)])
        .unwrap();
    assert_eq!(
        lists(&m),
        vec![
            ("c1".into(), vec![]),
            ("c2".into(), vec![("t1".into(), true, TaskState::Running)])
        ]
    );
    // Removing it from the old run again does not unlink it from the new one.
    m.record_burst(
        &[removed("c1", "t1")],
        vec![update("fw", "t1", TaskState::Killed)],
    )
    .unwrap();
    assert_eq!(lists(&m)[1].1, vec![("t1".into(), true, TaskState::Killed)]);
}

/// A burst whose changes come before its updates in one write, and where that write starts.
fn one_burst(dir: &Path) -> (Vec<u8>, usize) {
    let mut m = open(dir);
    m.record_burst(&[logged("c1"), added("c1", handed("t0"))], vec![])
        .unwrap();
    let start = m.log.len() as usize;
    let changes = [
        added("c1", handed("t1")),
        added("c1", handed("t2")),
        removed("c1", "t0"),
    ];
    let updates = vec![
        update("fw", "t1", TaskState::Running),
        update("fw", "t2", TaskState::Running),
    ];
    m.record_burst(&changes, updates).unwrap();
    drop(m);
    let segment = super::tests::files(dir, ".log");
    assert_eq!(segment.len(), 1, "one write, no new segment: {segment:?}");
    (fs::read(dir.join(&segment[0])).unwrap(), start)
}

#[test]
fn a_crash_at_any_byte_of_a_bursts_write_keeps_its_tasks_ahead_of_their_updates() {
    let src = tempfile::tempdir().unwrap();
    let (bytes, start) = one_burst(src.path());
    let name = super::tests::files(src.path(), ".log").remove(0);
    let mut seen_partial = false;
    for cut in start..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(&name), &bytes[..cut]).unwrap();
        let m = open(dir.path());
        let tasks: Vec<String> = lists(&m)[0].1.iter().map(|t| t.0.clone()).collect();
        // Every update that survived has its task in the run.
        for u in m.latest() {
            assert!(
                tasks.contains(&u.task_id.to_string()),
                "cut at {cut}: update of {} without its task in {tasks:?}",
                u.task_id
            );
        }
        seen_partial |= tasks.contains(&"t1".to_string()) && m.pending() == 0;
        if cut == bytes.len() {
            assert_eq!(tasks, ["t1", "t2"]);
            assert_eq!(m.pending(), 2);
        }
    }
    assert!(seen_partial, "some cut keeps changes without the updates");
}

#[test]
fn a_long_lived_run_leaves_no_memory_or_disk_behind_its_finished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.log.compact_min = 64 << 10;
    let fw = FrameworkId::from("fw");
    m.record_burst(&[logged("c1")], vec![]).unwrap();
    let mut biggest = 0;
    let mut previous: Vec<(String, Uuid)> = Vec::new();
    for round in 0..100 {
        // Each burst: this round's tasks join with their RUNNING; last round's end.
        let ids: Vec<String> = (0..64).map(|i| format!("r{round}-{i}")).collect();
        let mut changes: Vec<TaskChange> = ids.iter().map(|id| added("c1", handed(id))).collect();
        changes.extend(previous.iter().map(|(id, _)| removed("c1", id)));
        let mut updates: Vec<TaskStatus> = ids
            .iter()
            .map(|id| update("fw", id, TaskState::Running))
            .collect();
        updates.extend(ids.iter().map(|id| update("fw", id, TaskState::Finished)));
        let uuids = m.record_burst(&changes, updates).unwrap();
        let (running, finished) = uuids.split_at(ids.len());
        for (id, u) in ids.iter().zip(running) {
            assert!(m.acknowledge(&fw, &id.as_str().into(), *u).unwrap());
        }
        previous = ids.into_iter().zip(finished.iter().copied()).collect();
        for (id, u) in &previous {
            assert!(m.acknowledge(&fw, &id.as_str().into(), *u).unwrap());
        }
        m.flush();
        biggest = biggest.max(m.log.len());
        assert_live_accounting(&m);
    }
    let removals: Vec<TaskChange> = previous.iter().map(|(id, _)| removed("c1", id)).collect();
    m.record_burst(&removals, vec![]).unwrap();
    assert_eq!(lists(&m), vec![("c1".to_string(), vec![])]);
    assert!(m.streams.is_empty());
    assert!(biggest < 2 * (64 << 10), "log bounded: {biggest} bytes");
    drop(m);
    let m = open(dir.path());
    assert_eq!(lists(&m), vec![("c1".to_string(), vec![])]);
    assert!(m.log.len() < 256, "{} bytes left", m.log.len());
}

#[test]
fn a_compaction_keeps_the_live_task_lists_with_their_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = open(dir.path());
    m.log.compact_min = 16 << 10;
    let gen = m.log.gen();
    let keep = [
        logged("keep"),
        added("keep", handed("k1")),
        added("keep", logged_task("k2")),
    ];
    m.record_burst(&keep, vec![update("fw", "k1", TaskState::Running)])
        .unwrap();
    let mut n = 0;
    while m.log.gen() == gen {
        let c = format!("gone{n}");
        m.record_burst(&[logged(&c), added(&c, handed("x"))], vec![])
            .unwrap();
        m.record_burst(&[run_removed(&c)], vec![]).unwrap();
        n += 1;
    }
    let expected = vec![(
        "keep".to_string(),
        vec![
            ("k1".to_string(), true, TaskState::Running),
            ("k2".to_string(), false, TaskState::Staging),
        ],
    )];
    assert_eq!(lists(&m), expected);
    assert_live_accounting(&m);
    mem::forget(m);
    assert_eq!(lists(&open(dir.path())), expected);
}
