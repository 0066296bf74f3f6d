use super::legacy::{file_name, parse_file_name, CORRUPT_SUFFIX, SUFFIX};
use super::*;
use bramble_proto::task::UpdateSource;
use std::fs;
use tempfile::TempDir;

pub(super) fn update(fw: &str, task: &str, state: TaskState) -> TaskStatus {
    TaskStatus::new(fw.into(), task.into(), state, UpdateSource::Agent)
}

/// A task of executor run `c1`'s kind, as the log holds it: STAGING, not yet handed.
pub(super) fn logged_task(task: &str) -> crate::checkpoint::LoggedTask {
    use bramble_proto::task::{CommandInfo, ExecutorInfo, TaskInfo};
    crate::checkpoint::LoggedTask {
        framework_id: "fw".into(),
        info: TaskInfo {
            task_id: task.into(),
            name: format!("task {task}"),
            agent_id: "agent-1".into(),
            resources: bramble_proto::Resources::new(0.1, 16),
            command: None,
            executor: Some(ExecutorInfo {
                executor_id: "exec".into(),
                name: "exec".into(),
                command: CommandInfo::shell("./executor"),
                resources: Default::default(),
            }),
            data: vec![1, 2, 3],
            mesos: None,
            image: None,
            artifacts: Vec::new(),
        },
        handed: false,
        state: TaskState::Staging,
    }
}

pub(super) fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Unacknowledged updates in `dir`'s log, as a reader beside the agent sees them.
pub(super) fn on_disk(dir: &Path) -> usize {
    StatusUpdateManager::pending_on_disk(dir).unwrap()
}

/// A manager on a new, empty directory (kept alive by the returned guard).
fn fresh() -> (TempDir, StatusUpdateManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = StatusUpdateManager::open(dir.path()).unwrap();
    (dir, m)
}

fn states(updates: &[TaskStatus]) -> Vec<TaskState> {
    updates.iter().map(|u| u.state).collect()
}

#[test]
fn updates_recorded_together_go_out_together_in_order() {
    let (_dir, mut m) = fresh();
    let t0 = Instant::now();
    let running = m.record(update("fw", "t1", TaskState::Running)).unwrap();
    let finished = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    assert_eq!(m.pending(), 2);

    let sent = m.due(t0);
    assert_eq!(
        sent.iter().map(|s| s.uuid).collect::<Vec<_>>(),
        vec![Some(running), Some(finished)],
        "both, in order, without waiting for RUNNING's acknowledgement"
    );
    assert!(m.due(t0).is_empty(), "not resent before their backoff");

    assert!(m.acknowledge(&"fw".into(), &"t1".into(), running).unwrap());
    assert!(m.due(t0).is_empty(), "FINISHED is in flight already");
    assert!(m.acknowledge(&"fw".into(), &"t1".into(), finished).unwrap());
    assert_eq!(m.pending(), 0);
    assert_eq!(m.next_deadline(), None);
    assert!(m.due(t0 + Duration::from_secs(100)).is_empty());
}

#[test]
fn an_update_recorded_behind_one_in_flight_follows_it_at_once() {
    let (_dir, mut m) = fresh();
    let t0 = Instant::now();
    let running = m.record(update("fw", "t1", TaskState::Running)).unwrap();
    assert_eq!(m.due(t0).len(), 1);
    let finished = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    let sent = m.due(t0);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uuid, Some(finished));
    assert_eq!(
        m.next_deadline(),
        Some(t0 + INITIAL_BACKOFF),
        "RUNNING's resend"
    );

    // Unacknowledged: the resend is FINISHED alone (RUNNING after it would go backwards).
    let resent = m.due(t0 + INITIAL_BACKOFF);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].uuid, Some(finished));
    m.resend_all_now();
    let resent = m.due(t0 + INITIAL_BACKOFF);
    assert_eq!(states(&resent), vec![TaskState::Finished]);

    // FINISHED's acknowledgement settles RUNNING too; a late one for RUNNING is harmless.
    assert!(m.acknowledge(&"fw".into(), &"t1".into(), finished).unwrap());
    assert_eq!(m.pending(), 0);
    assert!(!m.acknowledge(&"fw".into(), &"t1".into(), running).unwrap());
}

#[test]
fn unacknowledged_head_is_resent_with_capped_exponential_backoff() {
    let (_dir, mut m) = fresh();
    m.record(update("fw", "t1", TaskState::Running)).unwrap();
    let t0 = Instant::now();
    let secs = |s: u64| t0 + Duration::from_secs(s);

    let mut sent_at = Vec::new();
    for s in 0..=200 {
        if !m.due(secs(s)).is_empty() {
            sent_at.push(s);
        }
    }
    assert_eq!(sent_at, vec![0, 1, 3, 7, 15, 31, 61, 91, 121, 151, 181]);
    assert_eq!(m.next_deadline(), Some(secs(211)));

    // Reconnecting makes it due at once and restarts the backoff.
    m.resend_all_now();
    assert!(m.next_deadline().unwrap() <= Instant::now());
    assert_eq!(m.due(secs(205)).len(), 1);
    assert_eq!(m.next_deadline(), Some(secs(206)));
    assert!(m.due(secs(205)).is_empty());
}

#[test]
fn tasks_progress_independently() {
    let (_dir, mut m) = fresh();
    let t0 = Instant::now();
    let a = m.record(update("fw", "a", TaskState::Running)).unwrap();
    m.record(update("fw", "b", TaskState::Running)).unwrap();
    assert_eq!(m.due(t0).len(), 2);
    m.acknowledge(&"fw".into(), &"a".into(), a).unwrap();
    m.record(update("fw", "a", TaskState::Finished)).unwrap();
    // a's next update is due now; b waits for its backoff.
    let sent = m.due(t0);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].task_id, TaskId::from("a"));
}

#[test]
fn order_per_task_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        for state in [TaskState::Staging, TaskState::Starting, TaskState::Running] {
            expected.push(m.record(update("fw", "t1", state)).unwrap());
            m.record(update("fw", "t2", state)).unwrap();
        }
        expected.push(m.record(update("fw", "t1", TaskState::Failed)).unwrap());
        let first = m.due(Instant::now());
        m.acknowledge(&"fw".into(), &"t1".into(), first[0].uuid.unwrap())
            .unwrap();
        expected.remove(0);
    }
    let mut m = StatusUpdateManager::open(dir.path()).unwrap();
    assert_eq!(m.pending(), 3 + 3);
    let latest: Vec<_> = m.latest().map(|s| (s.task_id.clone(), s.state)).collect();
    assert_eq!(
        latest,
        vec![
            ("t1".into(), TaskState::Failed),
            ("t2".into(), TaskState::Running)
        ]
    );
    // The previous process may have sent them all: t1 resends its end alone, t2 (no end
    // yet) everything in order.
    let t0 = Instant::now();
    let sent: Vec<_> = m
        .due(t0)
        .into_iter()
        .map(|s| (s.task_id, s.state))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("t1".into(), TaskState::Failed),
            ("t2".into(), TaskState::Staging),
            ("t2".into(), TaskState::Starting),
            ("t2".into(), TaskState::Running),
        ]
    );
    let failed = *expected.last().unwrap();
    assert!(m.acknowledge(&"fw".into(), &"t1".into(), failed).unwrap());
    assert_eq!(m.pending(), 3, "t1's end settles its earlier updates");
    drop(m);
    let mut m = StatusUpdateManager::open(dir.path()).unwrap();
    assert_eq!(m.pending(), 3);
    assert!(m.latest().all(|s| s.task_id.as_str() == "t2"));

    // New updates after the restart sort after the recovered ones.
    let seqs = |m: &StatusUpdateManager| -> Vec<u64> {
        m.streams
            .values()
            .flat_map(|s| s.queue.iter().map(|p| p.seq))
            .collect()
    };
    let before = seqs(&m).into_iter().max().unwrap();
    let t3 = m.record(update("fw", "t3", TaskState::Running)).unwrap();
    let key = ("fw".into(), "t3".into());
    assert!(m.streams[&key].queue[0].seq > before);
    assert_eq!(m.streams[&key].queue[0].uuid, t3);
}

#[test]
fn acknowledging_an_unknown_or_repeated_uuid_is_harmless() {
    let (_dir, mut m) = fresh();
    let (fw, t1) = (FrameworkId::from("fw"), TaskId::from("t1"));
    assert!(!m.acknowledge(&fw, &t1, Uuid::new_v4()).unwrap());
    let u = m.record(update("fw", "t1", TaskState::Running)).unwrap();
    let later = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    assert!(!m.acknowledge(&fw, &t1, Uuid::new_v4()).unwrap());
    assert!(!m.acknowledge(&fw, &t1, later).unwrap(), "not the head yet");
    assert!(!m.acknowledge(&"other".into(), &t1, u).unwrap());
    assert_eq!(m.pending(), 2);
    assert!(m.acknowledge(&fw, &t1, u).unwrap());
    assert!(!m.acknowledge(&fw, &t1, u).unwrap(), "already acknowledged");
    assert_eq!(m.pending(), 1);
}

#[test]
fn updates_are_on_disk_until_acknowledged() {
    let (dir, mut m) = fresh();
    let u = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    assert_eq!(on_disk(dir.path()), 1, "durable before record returns");

    m.acknowledge(&"fw".into(), &"t1".into(), u).unwrap();
    m.flush();
    assert_eq!(on_disk(dir.path()), 0);
    assert_eq!(StatusUpdateManager::open(dir.path()).unwrap().pending(), 0);
    assert_eq!(
        files(dir.path(), ".log").len(),
        1,
        "one segment, nothing else"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// An older agent's checkpoint of `status`: `<seq>-<uuid>.upd`, pretty JSON.
pub(super) fn write_legacy(dir: &Path, seq: u64, status: &TaskStatus) -> String {
    let name = file_name(seq, status.uuid.unwrap());
    fs::write(dir.join(&name), serde_json::to_vec_pretty(status).unwrap()).unwrap();
    name
}

#[test]
fn corrupt_legacy_file_is_moved_aside_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    let mut good = None;
    for (seq, task) in [(3, "t1"), (4, "t2")] {
        let mut u = update("fw", task, TaskState::Running);
        u.uuid = Some(Uuid::new_v4());
        good = u.uuid;
        names.push(write_legacy(dir.path(), seq, &u));
    }
    fs::write(dir.path().join(&names[0]), b"{\"task_id\": trunc").unwrap();
    fs::write(dir.path().join("junk.upd"), b"").unwrap();
    fs::write(dir.path().join(".00000000000000000009-x.upd.tmp"), b"{").unwrap();

    let m = StatusUpdateManager::open(dir.path()).unwrap();
    assert_eq!(m.pending(), 1);
    assert_eq!(m.latest().next().unwrap().uuid, good);
    assert_eq!(
        files(dir.path(), CORRUPT_SUFFIX),
        vec![
            format!("{}.corrupt", names[0]),
            "junk.upd.corrupt".to_owned()
        ]
    );
    assert!(
        files(dir.path(), ".tmp").is_empty(),
        "unfinished write removed"
    );
    assert!(files(dir.path(), SUFFIX).is_empty(), "moved into the log");
}

#[test]
fn updates_after_a_terminal_one_are_refused_but_resends_are_idempotent() {
    let (dir, mut m) = fresh();
    let done = m.record(update("fw", "t1", TaskState::Finished)).unwrap();
    let err = m.record(update("fw", "t1", TaskState::Failed)).unwrap_err();
    assert!(
        matches!(err, StatusUpdateError::AfterTerminal { terminal_uuid, .. } if terminal_uuid == done)
    );
    let mut resend = update("fw", "t1", TaskState::Finished);
    resend.uuid = Some(done);
    assert_eq!(m.record(resend).unwrap(), done);
    assert_eq!(m.pending(), 1);
    assert_eq!(on_disk(dir.path()), 1);
}

#[test]
fn batch_is_all_or_nothing_and_keeps_order() {
    let (dir, mut m) = fresh();
    let err = m.record_batch(vec![
        update("fw", "t1", TaskState::Running),
        update("fw", "t1", TaskState::Lost),
        update("fw", "t1", TaskState::Killed),
    ]);
    assert!(matches!(err, Err(StatusUpdateError::AfterTerminal { .. })));
    assert_eq!(m.pending(), 0);
    assert_eq!(on_disk(dir.path()), 0);
    let empty = m.log.len();

    let uuids = m
        .record_batch(vec![
            update("fw", "t1", TaskState::Running),
            update("fw", "t2", TaskState::Lost),
            update("fw", "t1", TaskState::Lost),
        ])
        .unwrap();
    assert_eq!(uuids.len(), 3);
    assert_eq!(on_disk(dir.path()), 3);
    assert!(m.log.len() > empty);
    let t0 = Instant::now();
    let sent: Vec<_> = m.due(t0).iter().map(|s| s.uuid.unwrap()).collect();
    assert_eq!(
        sent,
        vec![uuids[0], uuids[2], uuids[1]],
        "t1's in order, then t2's"
    );
    m.acknowledge(&"fw".into(), &"t1".into(), uuids[0]).unwrap();
    assert!(m.due(t0).is_empty());
}

#[test]
fn forgetting_a_framework_drops_its_updates_only() {
    let (dir, mut m) = fresh();
    m.record(update("fw-a", "t1", TaskState::Running)).unwrap();
    m.record(update("fw-a", "t1", TaskState::Finished)).unwrap();
    m.record(update("fw-a", "t2", TaskState::Running)).unwrap();
    let kept = m.record(update("fw-b", "t1", TaskState::Running)).unwrap();
    assert_eq!(m.forget_framework(&"fw-a".into()).unwrap(), 3);
    assert_eq!(m.forget_framework(&"fw-none".into()).unwrap(), 0);
    assert_eq!(m.pending(), 1);
    assert_eq!(on_disk(dir.path()), 1);
    drop(m);
    let m = StatusUpdateManager::open(dir.path()).unwrap();
    assert_eq!(m.latest().next().unwrap().uuid, Some(kept));
}

#[test]
fn recovered_updates_are_due_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut m = StatusUpdateManager::open(dir.path()).unwrap();
        m.record(update("fw", "t1", TaskState::Running)).unwrap();
        m.due(Instant::now());
    }
    let mut m = StatusUpdateManager::open(dir.path()).unwrap();
    assert!(m.next_deadline().unwrap() <= Instant::now());
    let t0 = Instant::now();
    assert_eq!(m.due(t0).len(), 1);
    assert_eq!(m.next_deadline(), Some(t0 + INITIAL_BACKOFF));
}

#[test]
fn file_names_round_trip_and_sort_by_sequence() {
    let u = Uuid::new_v4();
    let name = file_name(42, u);
    assert_eq!(parse_file_name(&name), Some((42, u)));
    assert!(file_name(9, u) < file_name(10, u));
    assert_eq!(parse_file_name("42-abc.upd"), None);
}
