use super::subscribe::{FAILED_OVER, FRAMEWORK_REMOVED};
use crate::state::testing::*;
use bramble_proto::identity::Role;
use bramble_proto::messages::{
    FrameworkApi, FrameworkInfo, MasterEvent, MasterToAgent, SchedulerCall,
};
use bramble_proto::{TaskId, TaskState};
use std::time::{Duration, Instant};

#[test]
fn a_framework_web_ui_is_kept_durably_replaced_when_published_and_dropped_when_hostile() {
    let now = Instant::now();
    let mut m = master(now);
    let info = FrameworkInfo {
        webui_url: Some("http://pi-a:31000/".into()),
        ..framework_info(Some("fw1"))
    };
    let _fw = connect_framework_as(&mut m, 2, info, now);
    let writes = m.take_writes();
    let stored = |w: &crate::store::Batch| {
        w.frameworks
            .iter()
            .find_map(|(_, r)| r.as_ref().map(|r| r.info.webui_url.clone()))
    };
    assert_eq!(stored(&writes), Some(Some("http://pi-a:31000/".into())));
    settle(&mut m, now);
    let shown = |m: &crate::state::Master| m.snapshot().frameworks[0].webui_url.clone();
    assert_eq!(shown(&m).as_deref(), Some("http://pi-a:31000/"));

    // Published later (a service learning its port): replaces it, durably.
    call(
        &mut m,
        2,
        SchedulerCall::SetWebuiUrl(Some("https://pi-b/ui".into())),
        now,
    );
    let writes = m.take_writes();
    assert_eq!(stored(&writes), Some(Some("https://pi-b/ui".into())));
    assert_eq!(shown(&m).as_deref(), Some("https://pi-b/ui"));
    // A master restarted from its store shows it again.
    let mut restarted = master(now);
    restarted.recover(
        crate::store::Recovered {
            frameworks: writes
                .frameworks
                .iter()
                .filter_map(|(_, r)| r.clone())
                .collect(),
            agents: Vec::new(),
            tasks: Vec::new(),
            framework_state: Vec::new(),
            draining: Vec::new(),
            fences: Vec::new(),
            fence_high: 0,
            kills: Vec::new(),
        },
        now,
    );
    assert_eq!(shown(&restarted).as_deref(), Some("https://pi-b/ui"));

    // Terminal escapes, absurd lengths and Mesos's "" for none are not kept.
    let long = format!("http://x/{}", "a".repeat(4096));
    for hostile in ["http://x/\u{1b}[2J\u{1b}]0;owned\u{7}", &long, "", "  "] {
        call(
            &mut m,
            2,
            SchedulerCall::SetWebuiUrl(Some("http://ok/".into())),
            now,
        );
        call(
            &mut m,
            2,
            SchedulerCall::SetWebuiUrl(Some(hostile.to_string())),
            now,
        );
        assert_eq!(shown(&m), None, "{hostile:?}");
    }
    let escaping = FrameworkInfo {
        webui_url: Some("http://x/\n".into()),
        ..framework_info(Some("fw2"))
    };
    let _fw2 = connect_framework_as(&mut m, 3, escaping, now);
    settle(&mut m, now);
    let fw2 = m
        .snapshot()
        .frameworks
        .into_iter()
        .find(|f| f.id.as_str() == "fw2");
    assert_eq!(fw2.map(|f| f.webui_url), Some(None));
}

#[test]
fn a_framework_failing_over_keeps_its_id_and_its_old_connection_is_told_fatally() {
    let now = Instant::now();
    let mut m = master(now);
    let mut old = connect_framework(&mut m, 2, Some("fw1"), now);
    settle(&mut m, now);
    drain(&mut old);
    let mut new = connect_framework(&mut m, 3, Some("fw1"), now);
    settle(&mut m, now);
    let told = drain(&mut old);
    assert!(
        told.iter()
            .any(|e| matches!(e, MasterEvent::Error { fatal: true, .. })),
        "{told:?}"
    );
    let events = drain(&mut new);
    assert!(
        matches!(events.first(), Some(MasterEvent::Subscribed { framework_id, .. }) if framework_id.as_str() == "fw1"),
        "{events:?}"
    );
    assert_eq!(m.snapshot().frameworks.len(), 1);
}

#[test]
fn a_framework_not_back_within_its_failover_timeout_is_removed() {
    let now = Instant::now();
    let mut m = master(now);
    let _fw = connect_framework(&mut m, 2, Some("fw1"), now);
    settle(&mut m, now);
    disconnect(&mut m, 2, now);
    // The test frameworks' failover timeout is 60 s.
    m.tick(now + Duration::from_secs(59));
    assert_eq!(m.snapshot().frameworks.len(), 1);
    m.tick(now + Duration::from_secs(61));
    assert!(m.snapshot().frameworks.is_empty());
    let batch = m.take_writes();
    assert!(
        batch
            .frameworks
            .iter()
            .any(|(id, r)| id.as_str() == "fw1" && r.is_none()),
        "{batch:?}"
    );
}

fn mesos_info(id: Option<&str>, principal: Option<&str>) -> FrameworkInfo {
    FrameworkInfo {
        principal: principal.map(str::to_string),
        api: FrameworkApi::MesosV1,
        ..framework_info(id)
    }
}

fn fatal_errors(events: &[MasterEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            MasterEvent::Error {
                message,
                fatal: true,
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Issue 16: a framework id a scheduler names becomes a directory on agents.
#[test]
fn a_subscription_naming_an_id_that_cannot_be_a_directory_is_refused() {
    let now = Instant::now();
    let mut m = master(now);
    let long = "f".repeat(10 * 1024);
    for (conn, bad) in [
        (2, "../../etc"),
        (3, "a/b"),
        (4, ".."),
        (5, "nul\0"),
        (6, &long),
    ] {
        let mut fw = connect_framework(&mut m, conn, Some(bad), now);
        settle(&mut m, now);
        let errors = fatal_errors(&drain(&mut fw));
        assert!(
            errors.len() == 1 && errors[0].contains("framework id"),
            "{bad:?}: {errors:?}"
        );
    }
    assert!(m.snapshot().frameworks.is_empty());
}

#[test]
fn a_framework_bound_to_a_principal_is_not_failed_over_by_another() {
    let now = Instant::now();
    let mut m = master(now);
    let mut owner = connect_framework_as(&mut m, 2, mesos_info(Some("fw1"), Some("alice")), now);
    settle(&mut m, now);
    drain(&mut owner);
    for (conn, intruder) in [(3, Some("mallory")), (4, None)] {
        let mut other = connect_framework_as(&mut m, conn, mesos_info(Some("fw1"), intruder), now);
        settle(&mut m, now);
        let told = drain(&mut other);
        assert_eq!(fatal_errors(&told).len(), 1, "{told:?}");
        assert!(
            fatal_errors(&told)[0].contains("bound to principal 'alice'"),
            "{told:?}"
        );
        assert!(
            !told
                .iter()
                .any(|e| matches!(e, MasterEvent::Subscribed { .. })),
            "{told:?}"
        );
        assert!(drain(&mut owner).is_empty(), "the owner keeps its stream");
    }
    // The owner itself may fail over.
    let mut again = connect_framework_as(&mut m, 5, mesos_info(Some("fw1"), Some("alice")), now);
    settle(&mut m, now);
    assert!(matches!(
        drain(&mut again).first(),
        Some(MasterEvent::Subscribed { .. })
    ));
    assert_eq!(
        fatal_errors(&drain(&mut owner)),
        vec![FAILED_OVER.to_string()]
    );
}

/// Finding 1 of issue 16: every framework used to share one certificate, and `subscribe`
/// handed a framework to whoever named its id.
#[test]
fn another_principal_can_neither_take_over_nor_kill_nor_tear_down_a_framework() {
    let now = Instant::now();
    let mut m = master(now);
    let mut agent = connect_agent(&mut m, 1, now);
    register(&mut m, 1, "a1", Vec::new(), now);
    let alice = identity_of(Role::Framework, Some("alice"));
    let mut owner = connect_scheduler(&mut m, 2, alice, framework_info(Some("fw1")), now);
    settle(&mut m, now);
    let offer = offers(&drain(&mut owner)).remove(0);
    accept(&mut m, &offer, vec![task_info("t1")], now);
    drain(&mut agent);
    drain(&mut owner);
    // What reaches the agent against alice's task or framework.
    let kills = |msgs: &[MasterToAgent]| {
        msgs.iter()
            .filter(|msg| match msg {
                MasterToAgent::KillTask { task_id, .. } => task_id.as_str() == "t1",
                MasterToAgent::ShutdownFramework { framework_id } => framework_id.as_str() == "fw1",
                _ => false,
            })
            .count()
    };

    // Bob names alice's framework, and even claims her principal in his info.
    let bob = identity_of(Role::Framework, Some("bob"));
    let claim = FrameworkInfo {
        principal: Some("alice".into()),
        ..framework_info(Some("fw1"))
    };
    let mut intruder = connect_scheduler(&mut m, 3, bob.clone(), claim, now);
    settle(&mut m, now);
    let told = drain(&mut intruder);
    let refusal = fatal_errors(&told);
    assert_eq!(refusal.len(), 1, "{told:?}");
    assert!(
        refusal[0].contains("bound to principal 'alice'")
            && refusal[0].contains("principal 'bob' may not"),
        "{refusal:?}"
    );
    assert!(
        !told
            .iter()
            .any(|e| matches!(e, MasterEvent::Subscribed { .. })),
        "{told:?}"
    );
    call(
        &mut m,
        3,
        SchedulerCall::Kill {
            task_id: TaskId("t1".into()),
        },
        now,
    );
    call(&mut m, 3, SchedulerCall::Teardown, now);
    settle(&mut m, now);
    assert!(drain(&mut owner).is_empty(), "the owner keeps its stream");

    // As a framework of his own, bob still cannot reach alice's task or framework.
    let mut own = connect_scheduler(&mut m, 4, bob, framework_info(Some("fw2")), now);
    call(
        &mut m,
        4,
        SchedulerCall::Kill {
            task_id: TaskId("t1".into()),
        },
        now,
    );
    call(&mut m, 4, SchedulerCall::Teardown, now);
    settle(&mut m, now);
    assert_eq!(
        updates(&drain(&mut own)),
        vec![("t1".to_string(), TaskState::Lost)],
        "a kill of another framework's task is answered as unknown"
    );
    assert_eq!(kills(&drain(&mut agent)), 0, "nothing reaches alice's task");
    let state = m.snapshot();
    assert_eq!(state.frameworks.len(), 1);
    assert_eq!(state.frameworks[0].principal.as_deref(), Some("alice"));
    assert_eq!(state.tasks.len(), 1);

    // An operator may fail it over and kill its tasks; the framework stays alice's.
    let operator = identity_of(Role::Operator, Some("operator"));
    let mut op = connect_scheduler(&mut m, 5, operator, framework_info(Some("fw1")), now);
    settle(&mut m, now);
    assert!(matches!(
        drain(&mut op).first(),
        Some(MasterEvent::Subscribed { .. })
    ));
    assert_eq!(
        fatal_errors(&drain(&mut owner)),
        vec![FAILED_OVER.to_string()]
    );
    call(
        &mut m,
        5,
        SchedulerCall::Kill {
            task_id: TaskId("t1".into()),
        },
        now,
    );
    settle(&mut m, now);
    assert_eq!(
        kills(&drain(&mut agent)),
        1,
        "the operator's kill reaches the agent"
    );
    assert_eq!(
        m.snapshot().frameworks[0].principal.as_deref(),
        Some("alice")
    );
}

#[test]
fn a_framework_stays_bound_to_its_principal_across_a_master_restart() {
    let now = Instant::now();
    let mut m = master(now);
    let alice = identity_of(Role::Framework, Some("alice"));
    let _owner = connect_scheduler(&mut m, 2, alice.clone(), framework_info(Some("fw1")), now);
    settle(&mut m, now);
    disconnect(&mut m, 2, now);
    settle(&mut m, now);
    // What the store would hold (the subscription wrote it).
    let mut rec = recovered(&[]);
    rec.frameworks[0].info.principal = Some("alice".into());
    let mut restarted = master(now);
    restarted.recover(rec, now);
    let bob = identity_of(Role::Framework, Some("bob"));
    let mut intruder = connect_scheduler(&mut restarted, 3, bob, framework_info(Some("fw1")), now);
    settle(&mut restarted, now);
    assert_eq!(fatal_errors(&drain(&mut intruder)).len(), 1);
    let mut back = connect_scheduler(&mut restarted, 4, alice, framework_info(Some("fw1")), now);
    settle(&mut restarted, now);
    assert!(matches!(
        drain(&mut back).first(),
        Some(MasterEvent::Subscribed { .. })
    ));
}

#[test]
fn the_principal_a_framework_is_stored_under_is_its_certificates_not_its_claim() {
    let now = Instant::now();
    let mut m = master(now);
    let alice = identity_of(Role::Framework, Some("alice"));
    let claim = FrameworkInfo {
        principal: Some("mallory".into()),
        ..framework_info(Some("fw1"))
    };
    let _owner = connect_scheduler(&mut m, 2, alice, claim, now);
    m.end_burst(now);
    let batch = m.take_writes();
    let stored: Vec<_> = batch
        .frameworks
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .map(|r| r.info.principal.clone())
        .collect();
    assert_eq!(stored, vec![Some("alice".to_string())]);
}

#[test]
fn a_removed_mesos_framework_stays_removed_but_a_native_one_comes_back_new() {
    let now = Instant::now();
    let mut m = master(now);
    let _fw = connect_framework_as(&mut m, 2, mesos_info(Some("fw1"), None), now);
    call(&mut m, 2, SchedulerCall::Teardown, now);
    settle(&mut m, now);
    assert!(m.snapshot().frameworks.is_empty());
    let mut back = connect_framework_as(&mut m, 3, mesos_info(Some("fw1"), None), now);
    settle(&mut m, now);
    assert_eq!(
        fatal_errors(&drain(&mut back)),
        vec![FRAMEWORK_REMOVED.to_string()]
    );
    assert!(m.snapshot().frameworks.is_empty());

    let _native = connect_framework(&mut m, 4, Some("fw2"), now);
    call(&mut m, 4, SchedulerCall::Teardown, now);
    settle(&mut m, now);
    let mut native = connect_framework(&mut m, 5, Some("fw2"), now);
    settle(&mut m, now);
    assert!(matches!(
        drain(&mut native).first(),
        Some(MasterEvent::Subscribed { .. })
    ));
}
