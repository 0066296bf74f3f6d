use super::*;
use crate::services::status::RolloutState;
use bramble_proto::task::{TaskInfo, CONTAINERS_ATTRIBUTE};
use bramble_proto::{PortRange, Resources, TaskReason, TaskState};
use bramble_sdk::Offer;
use bramble_sdk::{status, TaskStatusExt};
use std::time::Duration;

fn spec(name: &str, instances: u32) -> Spec {
    Spec::parse(
        "t.toml",
        &format!(
            "name = \"{name}\"\ninstances = {instances}\ncmd = \"exec sleep 100\"\ncpus = 0.5\nmem = 32\nports = 1\n[env]\nA = \"b\"\n"
        ),
    )
    .expect("valid")
}

fn offer_on(agent: &str, host: &str, cpus: f64) -> Offer {
    Offer {
        id: format!("o-{agent}").into(),
        framework_id: "fw".into(),
        agent_id: agent.into(),
        hostname: host.into(),
        resources: Resources::new(cpus, 1024).with_ports([PortRange::new(31000, 31009)]),
        attributes: [("rack".to_string(), "a".to_string())]
            .into_iter()
            .collect(),
        executor_ids: vec![],
    }
}

fn running(book: &mut Book, task: &TaskInfo, now: Instant) {
    let s = status(task, TaskState::Running);
    assert!(matches!(book.update(&s, now), Seen::Running { .. }));
}

#[test]
fn an_offer_takes_as_many_instances_as_fit_each_with_its_own_ports_and_env() {
    let now = Instant::now();
    let mut book = Book::default();
    book.set_spec("web", Some(spec("web", 3)));
    assert!(book.wants_offers());
    let tasks = book.place(&offer_on("a1", "pi-1", 1.0), now).expect("fits");
    assert_eq!(tasks.len(), 2, "1 cpu holds two 0.5-cpu instances");
    let env = |t: &TaskInfo, k: &str| {
        t.command
            .as_ref()
            .and_then(|c| c.environment.get(k).cloned())
    };
    assert_eq!(env(&tasks[0], "PORT0").as_deref(), Some("31000"));
    assert_eq!(env(&tasks[1], "PORT0").as_deref(), Some("31001"));
    assert_eq!(env(&tasks[1], "PORT").as_deref(), Some("31001"));
    assert_eq!(env(&tasks[0], "A").as_deref(), Some("b"));
    assert_eq!(tasks[0].resources.ports, vec![PortRange::new(31000, 31000)]);
    for t in &tasks {
        let (service, fp) = parse_task_id(&t.task_id).expect("ours");
        assert_eq!(service, "web");
        assert_eq!(fp, spec("web", 3).fingerprint());
    }
    let more = book.place(&offer_on("a2", "pi-2", 4.0), now).expect("fits");
    assert_eq!(more.len(), 1, "only the third is still missing");
    assert!(!book.wants_offers());
    assert!(book
        .place(&offer_on("a3", "pi-3", 4.0), now)
        .expect("ok")
        .is_empty());
}

#[test]
fn constraints_refuse_offers_with_the_reason() {
    let now = Instant::now();
    let mut s = spec("web", 2);
    s.constraints.unique_hostname = true;
    let mut book = Book::default();
    book.set_spec("web", Some(s.clone()));
    let tasks = book
        .place(&offer_on("a1", "pi-1", 4.0), now)
        .expect("one fits");
    assert_eq!(tasks.len(), 1);
    let refused = book
        .place(&offer_on("a1", "pi-1", 4.0), now)
        .expect_err("unique");
    assert!(refused.contains("unique_hostname"), "{refused}");
    // Another agent on the same host counts as the same host.
    book.saw_agent(&"a1b".into(), "pi-1");
    assert!(book.place(&offer_on("a1b", "pi-1", 4.0), now).is_err());

    s.constraints.unique_hostname = false;
    s.constraints.hostname_like = Some("pi-*".into());
    s.constraints.attributes = [("rack".to_string(), "b".to_string())]
        .into_iter()
        .collect();
    let mut book = Book::default();
    book.set_spec("web", Some(s.clone()));
    let refused = book
        .place(&offer_on("a1", "pi-1", 4.0), now)
        .expect_err("attr");
    assert!(refused.contains("rack=a, not b"), "{refused}");
    s.constraints.attributes.clear();
    book.set_spec("web", Some(s.clone()));
    let refused = book
        .place(&offer_on("a1", "nas", 4.0), now)
        .expect_err("like");
    assert!(refused.contains("not like"), "{refused}");
    s.constraints.max_per_agent = Some(1);
    book.set_spec("web", Some(s));
    assert_eq!(
        book.place(&offer_on("a1", "pi-1", 4.0), now)
            .expect("one")
            .len(),
        1
    );
    let refused = book
        .place(&offer_on("a1", "pi-1", 4.0), now)
        .expect_err("max");
    assert!(refused.contains("max_per_agent"), "{refused}");
    let mut no_ports = offer_on("a9", "pi-9", 4.0);
    no_ports.resources.ports.clear();
    let refused = book.place(&no_ports, now).expect_err("ports");
    assert!(refused.contains("free ports"), "{refused}");
}

#[test]
fn a_failed_instance_is_replaced_after_a_growing_backoff_reset_by_a_long_run() {
    let t0 = Instant::now();
    let mut book = Book::default();
    book.set_spec("web", Some(spec("web", 1)));
    let task = book
        .place(&offer_on("a1", "pi-1", 4.0), t0)
        .expect("fits")
        .remove(0);
    running(&mut book, &task, t0);
    let failed = status(&task, TaskState::Failed).message("exited 137");
    let seen = book.update(&failed, t0 + Duration::from_secs(1));
    assert_eq!(
        seen,
        Seen::Ended {
            service: "web".into(),
            state: TaskState::Failed,
            message: "exited 137".into(),
            backoff: Some(Duration::from_secs(1))
        }
    );
    let t1 = t0 + Duration::from_secs(1);
    assert!(book.wants_offers());
    assert_eq!(
        book.backing_off_until(t1),
        Some(t1 + Duration::from_secs(1))
    );
    assert!(book
        .place(&offer_on("a1", "pi-1", 4.0), t1)
        .expect("gated")
        .is_empty());
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(book.backing_off_until(t2), None);
    let second = book
        .place(&offer_on("a1", "pi-1", 4.0), t2)
        .expect("fits")
        .remove(0);
    // It dies at once again: the backoff doubles.
    let seen = book.update(&status(&second, TaskState::Failed), t2);
    assert!(matches!(seen, Seen::Ended { backoff: Some(d), .. } if d == Duration::from_secs(2)));
    let t3 = t2 + Duration::from_secs(2);
    let third = book
        .place(&offer_on("a1", "pi-1", 4.0), t3)
        .expect("fits")
        .remove(0);
    running(&mut book, &third, t3);
    // A run past min_uptime resets the count: back to the first delay.
    let t4 = t3 + Duration::from_secs(11);
    let seen = book.update(&status(&third, TaskState::Failed), t4);
    assert!(matches!(seen, Seen::Ended { backoff: Some(d), .. } if d == Duration::from_secs(1)));
}

#[test]
fn lost_instances_are_replaced_at_once_and_killed_ones_not_counted_as_failures() {
    let now = Instant::now();
    let mut book = Book::default();
    book.set_spec("web", Some(spec("web", 2)));
    let tasks = book.place(&offer_on("a1", "pi-1", 4.0), now).expect("fits");
    let lost = status(&tasks[0], TaskState::Lost).reason(TaskReason::AgentRemoved);
    assert!(matches!(book.update(&lost, now), Seen::Ended { backoff: Some(d), .. } if d.is_zero()));
    assert_eq!(book.backing_off_until(now), None);
    // Scaled down to none: the other is killed, and its end is no failure.
    book.set_spec("web", Some(spec("web", 0)));
    let killed = book.kills();
    assert_eq!(killed, vec![tasks[1].task_id.clone()]);
    assert!(book.kills().is_empty(), "asked once");
    let end = status(&tasks[1], TaskState::Killed);
    assert!(matches!(
        book.update(&end, now),
        Seen::Ended { backoff: None, .. }
    ));
    assert!(!book.wants_offers());
}

#[test]
fn scaling_down_kills_starting_then_newest_and_a_new_version_replaces_all() {
    let t0 = Instant::now();
    let mut book = Book::default();
    book.set_spec("web", Some(spec("web", 3)));
    let a = book.place(&offer_on("a1", "pi-1", 0.5), t0).expect("fits");
    let b = book
        .place(&offer_on("a2", "pi-2", 0.5), t0 + Duration::from_secs(1))
        .expect("fits");
    let c = book
        .place(&offer_on("a3", "pi-3", 0.5), t0 + Duration::from_secs(2))
        .expect("fits");
    running(&mut book, &a[0], t0);
    running(&mut book, &c[0], t0);
    book.set_spec("web", Some(spec("web", 1)));
    let mut killed = book.kills();
    killed.sort();
    let mut expected = vec![b[0].task_id.clone(), c[0].task_id.clone()];
    expected.sort();
    assert_eq!(
        killed, expected,
        "the starting one, then the newest running one"
    );
    // Scaling changed no fingerprint; a changed command does.
    let mut v2 = spec("web", 1);
    v2.cmd = "exec sleep 200".into();
    book.set_spec("web", Some(v2));
    // The old one keeps serving (min_healthy 1.0) until its replacement runs (surge 1).
    assert!(book.kills().is_empty());
    assert!(book.wants_offers());
    let t3 = t0 + Duration::from_secs(3);
    let new = book.place(&offer_on("a4", "pi-4", 0.5), t3).expect("fits");
    assert_eq!(new.len(), 1);
    assert!(book.kills().is_empty(), "not before the new one runs");
    running(&mut book, &new[0], t3);
    assert_eq!(book.kills(), vec![a[0].task_id.clone()]);
    book.set_spec("web", None);
    assert!(!book.wants_offers());
}

#[test]
fn after_a_restart_live_tasks_are_adopted_and_strays_reported() {
    let now = Instant::now();
    let mut book = Book::default();
    let web = spec("web", 1);
    book.set_spec("web", Some(web.clone()));
    let id = TaskId(format!("web.{}.abc", web.fingerprint()));
    let mut live = status(&id, TaskState::Running);
    live.agent_id = Some("a1".into());
    assert_eq!(book.update(&live, now), Seen::Nothing);
    assert!(!book.wants_offers(), "the adopted instance counts");
    assert!(book.kills().is_empty());
    let mut other = status(&TaskId::from("gone.0000.x"), TaskState::Running);
    other.agent_id = Some("a1".into());
    assert_eq!(book.update(&other, now), Seen::Stray);
    assert!(
        book.kills().is_empty(),
        "a stray is the caller's to kill, once"
    );
    let weird = status(&TaskId::from("not-ours"), TaskState::Running);
    assert_eq!(book.update(&weird, now), Seen::Stray);
}

fn checked(name: &str, instances: u32, cmd: &str) -> Spec {
    Spec::parse(
        "t.toml",
        &format!(
            "name = \"{name}\"\ninstances = {instances}\ncmd = \"{cmd}\"\ncpus = 0.1\nmem = 32\nports = 1\n[[health]]\nprotocol = \"http\"\npath = \"/\"\ngrace_secs = 0.0\ninterval_secs = 1.0\nmax_failures = 2\n[rollout]\nmin_healthy = 1.0\nmax_surge = 1\nrollback_after = 2\n"
        ),
    )
    .expect("valid")
}

/// Every due probe of the book answered with `outcome`; the kills they led to.
fn answer_all(book: &mut Book, now: Instant, outcome: Result<(), String>) -> Vec<String> {
    let mut killed = Vec::new();
    for p in book.due_probes(now) {
        if let HealthEvent::Kill { reason, .. } =
            book.probe_result(&p.task_id, p.index, outcome.clone(), now, 0.0)
        {
            killed.push(reason);
        }
    }
    killed
}

/// A book with `checked("web", 2, "v1")` placed on agent a1 at `t0`: both instances RUNNING
/// and healthy. Returns the book and the two tasks.
fn two_healthy_on_a1(t0: Instant) -> (Book, Vec<TaskInfo>) {
    let mut book = Book::default();
    book.set_spec("web", Some(checked("web", 2, "v1")));
    let old = book.place(&offer_on("a1", "pi-1", 4.0), t0).expect("fits");
    assert_eq!(old.len(), 2);
    for t in &old {
        running(&mut book, t, t0);
    }
    answer_all(&mut book, t0, Ok(()));
    (book, old)
}

#[test]
fn a_failing_health_check_kills_the_instance_with_the_reason_and_it_is_replaced() {
    let t0 = Instant::now();
    let mut book = Book::default();
    book.set_spec("web", Some(checked("web", 1, "v1")));
    let task = book
        .place(&offer_on("a1", "pi-1", 4.0), t0)
        .expect("fits")
        .remove(0);
    assert!(book.due_probes(t0).is_empty(), "not probed before RUNNING");
    running(&mut book, &task, t0);
    let probes = book.due_probes(t0);
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].host, "pi-1");
    assert_eq!(probes[0].ports, vec![31000]);
    book.probe_result(&probes[0].task_id, 0, Ok(()), t0, 0.0);
    assert!(book.status_of("web").expect("known").instances[0].healthy);
    let t1 = t0 + Duration::from_secs(1);
    assert!(
        answer_all(&mut book, t1, Err("answered 500".into())).is_empty(),
        "1 of 2"
    );
    let status = book.status_of("web").expect("known");
    assert!(status.instances[0].healthy, "not condemned by one failure");
    assert!(status.instances[0]
        .last_failure
        .as_deref()
        .is_some_and(|f| f.contains("500")));
    let t2 = t1 + Duration::from_secs(1);
    let killed = answer_all(&mut book, t2, Err("answered 500".into()));
    assert_eq!(killed.len(), 1);
    assert!(
        killed[0].contains("http GET / on PORT0") && killed[0].contains("500"),
        "{killed:?}"
    );
    assert!(
        book.kills().is_empty(),
        "the scheduler kills it, not kills()"
    );
    let status = book.status_of("web").expect("known");
    assert_eq!(status.kills.len(), 1);
    assert_eq!(status.kills[0].task_id, task.task_id.to_string());
    // Replaced after the restart backoff (1 s by default).
    assert!(book.wants_offers());
    assert!(book
        .place(&offer_on("a1", "pi-1", 4.0), t2)
        .expect("gated")
        .is_empty());
    let t3 = t2 + Duration::from_secs(1);
    assert_eq!(
        book.place(&offer_on("a1", "pi-1", 4.0), t3)
            .expect("fits")
            .len(),
        1
    );
}

#[test]
fn a_draining_agents_instances_move_one_at_a_time_keeping_min_healthy() {
    let t0 = Instant::now();
    let (mut book, old) = two_healthy_on_a1(t0);
    assert!(!book.wants_offers());
    book.set_draining(&AgentId::from("a1"), true);
    assert!(book.wants_offers(), "replacements are wanted elsewhere");
    assert!(
        book.kills().is_empty(),
        "both are needed healthy (min_healthy = 1.0)"
    );
    let refused = book.place(&offer_on("a1", "pi-1", 4.0), t0);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("drained")),
        "{refused:?}"
    );
    let t1 = t0 + Duration::from_secs(1);
    let first = book.place(&offer_on("a2", "pi-2", 4.0), t1).expect("fits");
    assert_eq!(
        first.len(),
        1,
        "one above the count at most (max_surge = 1)"
    );
    running(&mut book, &first[0], t1);
    assert!(book.kills().is_empty(), "RUNNING is not yet healthy");
    answer_all(&mut book, t1, Ok(()));
    let killed = book.kills();
    assert_eq!(
        killed.len(),
        1,
        "one leaves once its replacement is healthy"
    );
    assert!(old.iter().any(|t| t.task_id == killed[0]));
    let ended = book.update(&status(&killed[0], TaskState::Killed), t1);
    assert!(
        matches!(ended, Seen::Ended { backoff: None, .. }),
        "a move is no failure: {ended:?}"
    );
    let second = book.place(&offer_on("a2", "pi-2", 4.0), t1).expect("fits");
    assert_eq!(second.len(), 1);
    running(&mut book, &second[0], t1);
    let t2 = t1 + Duration::from_secs(1);
    answer_all(&mut book, t2, Ok(()));
    let last = book.kills();
    assert_eq!(last.len(), 1);
    book.update(&status(&last[0], TaskState::Killed), t2);
    assert!(book.kills().is_empty());
    assert!(!book.wants_offers(), "both run on a2 now");
    assert!(book.instances().all(|i| i.agent_id == AgentId::from("a2")));
    assert_eq!(
        book.status_of("web").and_then(|s| s.rollout),
        None,
        "a move is not a new version"
    );
    // Undrained: a1 takes instances again.
    book.set_draining(&AgentId::from("a1"), false);
    book.set_spec("web", Some(checked("web", 3, "v1")));
    assert_eq!(
        book.place(&offer_on("a1", "pi-1", 4.0), t2)
            .expect("fits")
            .len(),
        1
    );
}

#[test]
fn a_rollout_keeps_min_healthy_and_surge_and_finishes() {
    let t0 = Instant::now();
    let (mut book, old) = two_healthy_on_a1(t0);
    let change = book.set_spec("web", Some(checked("web", 2, "v2")));
    assert!(
        matches!(change, SpecChange::NewVersion { .. }),
        "{change:?}"
    );
    assert!(book.kills().is_empty(), "both old ones are needed healthy");
    let t1 = t0 + Duration::from_secs(1);
    let new = book.place(&offer_on("a1", "pi-1", 4.0), t1).expect("fits");
    assert_eq!(new.len(), 1, "one above the count at most (max_surge = 1)");
    running(&mut book, &new[0], t1);
    assert!(book.kills().is_empty(), "RUNNING is not yet healthy");
    answer_all(&mut book, t1, Ok(()));
    let killed = book.kills();
    assert_eq!(
        killed.len(),
        1,
        "one old one goes once the new one is healthy"
    );
    assert!(old.iter().any(|t| t.task_id == killed[0]));
    book.update(
        &status(&TaskId(killed[0].to_string()), TaskState::Killed),
        t1,
    );
    let rollout = book
        .status_of("web")
        .and_then(|s| s.rollout)
        .expect("rolling");
    assert_eq!(rollout.state, RolloutState::InProgress);
    let second = book.place(&offer_on("a1", "pi-1", 4.0), t1).expect("fits");
    assert_eq!(second.len(), 1);
    running(&mut book, &second[0], t1);
    let t2 = t1 + Duration::from_secs(1);
    answer_all(&mut book, t2, Ok(()));
    let last = book.kills();
    assert_eq!(last.len(), 1);
    book.update(&status(&TaskId(last[0].to_string()), TaskState::Killed), t2);
    book.kills();
    let rollout = book
        .status_of("web")
        .and_then(|s| s.rollout)
        .expect("rolled");
    assert_eq!(rollout.state, RolloutState::Done);
    assert_eq!((rollout.healthy, rollout.wanted), (2, 2));
    assert!(book.take_rollbacks().is_empty());
}

#[test]
fn a_new_version_that_fails_its_checks_asks_for_a_rollback_and_the_old_ones_keep_serving() {
    let t0 = Instant::now();
    let (mut book, _) = two_healthy_on_a1(t0);
    let v1 = checked("web", 2, "v1");
    book.set_spec("web", Some(checked("web", 2, "v2")));
    let mut now = t0;
    for round in 0..2 {
        now += Duration::from_secs(5);
        let new = book.place(&offer_on("a1", "pi-1", 4.0), now).expect("fits");
        assert_eq!(new.len(), 1, "round {round}");
        running(&mut book, &new[0], now);
        // The old ones pass, the new one fails twice: killed.
        for _ in 0..2 {
            now += Duration::from_secs(1);
            for p in book.due_probes(now) {
                let bad = p.task_id == new[0].task_id;
                let outcome = if bad {
                    Err("answered 500".into())
                } else {
                    Ok(())
                };
                book.probe_result(&p.task_id, p.index, outcome, now, 0.0);
            }
        }
        assert!(book.kills().is_empty(), "no old one is given up");
        book.update(&status(&new[0], TaskState::Killed), now);
    }
    let rollbacks = book.take_rollbacks();
    assert_eq!(rollbacks.len(), 1, "after rollback_after = 2 failures");
    assert_eq!(rollbacks[0].spec, v1);
    assert!(
        rollbacks[0].reason.contains("answered 500"),
        "{}",
        rollbacks[0].reason
    );
    // The scheduler writes v1 back; it arrives as a spec change.
    assert_eq!(book.set_spec("web", Some(v1)), SpecChange::RolledBack);
    assert!(
        book.kills().is_empty(),
        "the old instances are current again"
    );
    assert!(!book.wants_offers());
    let rollout = book
        .status_of("web")
        .and_then(|s| s.rollout)
        .expect("recorded");
    assert_eq!(rollout.state, RolloutState::RolledBack);
    assert!(
        rollout.message.contains("rolled back"),
        "{}",
        rollout.message
    );
}

#[test]
fn image_services_go_only_to_agents_that_run_images() {
    let now = Instant::now();
    let mut s = spec("web", 1);
    s.image = Some("docker.io/library/busybox".into());
    let mut book = Book::default();
    book.set_spec("web", Some(s));
    let refused = book
        .place(&offer_on("a1", "pi-1", 4.0), now)
        .expect_err("no runtime");
    assert!(refused.contains("cannot run images"), "{refused}");
    let mut able = offer_on("a2", "pi-2", 4.0);
    able.attributes
        .insert(CONTAINERS_ATTRIBUTE.into(), "crun".into());
    let tasks = book.place(&able, now).expect("fits");
    assert_eq!(tasks[0].image.as_deref(), Some("docker.io/library/busybox"));
}
