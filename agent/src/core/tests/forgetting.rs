//! What the core keeps of tasks that are over: once acknowledged, nothing per task beyond a
//! bounded list of recent sandboxes, however many tasks a long-lived executor has run.

use super::*;

/// The sandbox the core names for a read of `task`'s stdout, if any.
fn sandbox_read(agent: &mut Agent, task: &str) -> Option<(PathBuf, bool)> {
    let read = Input::FromMaster(MasterToAgent::ReadSandbox {
        request: 1,
        read: bramble_proto::messages::SandboxRead {
            framework_id: fw(),
            task_id: tid(task),
            path: "stdout".into(),
            offset: 0,
            max_bytes: 10,
        },
    });
    match agent.handle(read, Instant::now()).as_slice() {
        [Effect::ServeSandbox { sandbox, .. }] => sandbox.clone(),
        other => panic!("one sandbox answer expected, got {other:?}"),
    }
}

#[test]
fn acknowledged_tasks_leave_only_a_bounded_list_of_recent_sandboxes() {
    let mut agent = connected_agent();
    let key = registered_executor(&mut agent, &["t0"], 1);
    let total = 3 * FINISHED_SANDBOXES;
    for i in 0..total {
        let id = format!("t{i}");
        if i > 0 {
            agent.handle(run_tasks(vec![executor_task(&id)]), Instant::now());
        }
        let (finished, _) = executor_update(&key, &id, TaskState::Finished);
        agent.handle(finished, Instant::now());
        commit(&mut agent);
        agent.handle(acknowledged(&id), Instant::now());
    }
    commit(&mut agent);

    let run = agent.runs.get(&key).expect("the executor still runs");
    assert!(
        run.tasks.is_empty(),
        "{} finished tasks kept",
        run.tasks.len()
    );
    assert!(agent.unacknowledged.is_empty());
    assert_eq!(agent.finished_sandboxes.len(), FINISHED_SANDBOXES);
    let newest = format!("t{}", total - 1);
    let oldest_kept = format!("t{}", total - FINISHED_SANDBOXES);
    let forgotten = format!("t{}", total - FINISHED_SANDBOXES - 1);
    assert!(matches!(sandbox_read(&mut agent, &newest), Some((_, true))));
    assert!(matches!(
        sandbox_read(&mut agent, &oldest_kept),
        Some((_, true))
    ));
    assert_eq!(sandbox_read(&mut agent, &forgotten), None);
}
