//! Conformance of the scheduler API's JSON with Mesos's definitions (`scheduler.proto`,
//! `mesos.proto`, contract §2): every call the clients send parses (leniently where pitfall 11
//! says so) or is refused with 400 and a reason; every event has its type, its lowercase
//! payload key and the nesting the proto has; launches carry the Mesos JSON through.

use bramble_mesos::offer::{parse_accept, LaunchContext};
use bramble_mesos::recordio;
use bramble_mesos::scheduler::{self, parse_call, CallKind, MasterInfo, MAX_REFUSE_SECONDS};
use bramble_proto::messages::{MasterEvent, Offer};
use bramble_proto::task::{TaskStatus, UpdateSource};
use bramble_proto::{
    AgentId, ExecutorId, FrameworkId, OfferId, Resources, TaskId, TaskReason, TaskState,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn call(v: Value) -> CallKind {
    parse_call(v.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{v} refused: {e}"))
        .kind
}

fn refused(v: &str) -> String {
    let r = parse_call(v.as_bytes()).expect_err(v);
    assert_eq!(r.status, 400, "{v}: {r}");
    r.message
}

#[test]
fn subscribe_as_pymesos_and_mesoshttp_send_it() {
    let pymesos = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "pi", "name": "t", "capabilities": [{"type": "GPU_RESOURCES"}],
        "failover_timeout": 100}}});
    let CallKind::Subscribe(s) = call(pymesos) else {
        panic!("not a subscribe")
    };
    assert_eq!((s.user.as_str(), s.name.as_str()), ("pi", "t"));
    assert_eq!(s.failover_timeout, 100.0);
    assert_eq!(s.role, "*");
    assert!(!s.checkpoint);
    assert_eq!(s.id, None);

    // mesoshttp: empty hostname/webui_url, `credentials` (not in the proto), both ids set,
    // numbers as strings.
    let mesoshttp = json!({"type": "SUBSCRIBE", "framework_id": {"value": "fw-1"},
        "subscribe": {"framework_info": {"user": "root", "name": "m", "hostname": "",
            "webui_url": "", "id": {"value": "fw-1"}, "failover_timeout": "30",
            "principal": "p", "role": "web"},
        "credentials": [{"principal": "p", "secret": "s"}]}});
    let CallKind::Subscribe(s) = call(mesoshttp) else {
        panic!("not a subscribe")
    };
    assert_eq!(s.id.as_deref(), Some("fw-1"));
    assert_eq!(s.failover_timeout, 30.0);
    assert_eq!(s.webui_url, None);
    assert_eq!(s.principal.as_deref(), Some("p"));
    assert_eq!(s.role, "web");
    let with_id: Value = serde_json::from_str(&s.framework_json("fw-1")).unwrap();
    assert_eq!(with_id["id"], json!({"value": "fw-1"}));
    assert_eq!(with_id["user"], "root");
}

#[test]
fn subscribe_refusals_say_why() {
    let m = refused(r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x"}}}"#);
    assert!(
        m.contains("Missing required fields") && m.contains("user"),
        "{m}"
    );
    let m = refused(
        r#"{"type":"SUBSCRIBE","framework_id":{"value":"a"},"subscribe":{"framework_info":{"user":"u","name":"x","id":{"value":"b"}}}}"#,
    );
    assert!(m.contains("differs"), "{m}");
    let m = refused(
        r#"{"type":"SUBSCRIBE","framework_id":{"value":"a"},"subscribe":{"framework_info":{"user":"u","name":"x"}}}"#,
    );
    assert!(m.contains("differs"), "{m}");
    let m = refused(r#"{"type":"SUBSCRIBE"}"#);
    assert!(m.contains("'subscribe'"), "{m}");
}

#[test]
fn every_call_has_its_payload_key_and_a_framework_id() {
    let fw = json!({"value": "fw-1"});
    let with = |t: &str, key: &str, payload: Value| {
        let mut v = json!({"type": t, "framework_id": fw});
        if !key.is_empty() {
            v[key] = payload;
        }
        v
    };
    assert_eq!(call(with("TEARDOWN", "", Value::Null)), CallKind::Teardown);
    assert_eq!(
        call(with("REVIVE", "revive", json!({"roles": ["*"]}))),
        CallKind::Revive
    );
    assert_eq!(call(with("REVIVE", "", Value::Null)), CallKind::Revive);
    assert_eq!(call(with("SUPPRESS", "", Value::Null)), CallKind::Suppress);
    assert_eq!(
        call(with("KILL", "kill", json!({"task_id": {"value": "t1"}}))),
        CallKind::Kill {
            task_id: "t1".into()
        }
    );
    assert_eq!(
        call(with(
            "SHUTDOWN",
            "shutdown",
            json!({"executor_id": {"value": "e"}, "agent_id": {"value": "a"}})
        )),
        CallKind::Shutdown {
            executor_id: "e".into(),
            agent_id: "a".into()
        }
    );
    let uuid = uuid::Uuid::from_bytes([9; 16]);
    assert_eq!(
        call(with(
            "ACKNOWLEDGE",
            "acknowledge",
            json!({"agent_id": {"value": "a"},
            "task_id": {"value": "t"}, "uuid": bramble_mesos::v1::encode_uuid(&uuid)})
        )),
        CallKind::Acknowledge {
            agent_id: "a".into(),
            task_id: "t".into(),
            uuid
        }
    );
    assert_eq!(
        call(with("RECONCILE", "reconcile", json!({"tasks": []}))),
        CallKind::Reconcile { task_ids: vec![] }
    );
    assert_eq!(
        call(with(
            "RECONCILE",
            "reconcile",
            json!({"tasks": [{"task_id": {"value": "t"}}]})
        )),
        CallKind::Reconcile {
            task_ids: vec!["t".into()]
        }
    );
    assert_eq!(
        call(with(
            "MESSAGE",
            "message",
            json!({"agent_id": {"value": "a"},
            "executor_id": {"value": "e"}, "data": "cGluZw=="})
        )),
        CallKind::Message {
            agent_id: "a".into(),
            executor_id: "e".into(),
            data: b"ping".to_vec()
        }
    );
    // mesoshttp's REQUEST puts `requests` at the top level; Mesos ignores REQUEST anyway.
    for t in [
        "REQUEST",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE_OPERATIONS",
    ] {
        assert_eq!(call(with(t, "", Value::Null)), CallKind::Ignored(t.into()));
    }
    // A non-subscribe call without framework_id, a missing payload, a bad uuid, bad JSON.
    assert!(refused(r#"{"type":"TEARDOWN"}"#).contains("framework_id"));
    assert!(refused(r#"{"type":"KILL","framework_id":{"value":"f"}}"#).contains("'kill'"));
    assert!(refused(r#"{"framework_id":{"value":"f"}}"#).contains("'type'"));
    assert!(refused(r#"{"type":"NAP","framework_id":{"value":"f"}}"#).contains("NAP"));
    assert!(refused("{not json").contains("JSON"));
    let short = json!({"type": "ACKNOWLEDGE", "framework_id": fw, "acknowledge": {
        "agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "c2hvcnQ="}});
    assert!(refused(&short.to_string()).contains("16 bytes"));
}

#[test]
fn decline_and_accept_filters_are_lenient_and_capped() {
    // One offer id as an object (pymesos), refuse_seconds as a string.
    let d = call(json!({"type": "DECLINE", "framework_id": {"value": "f"},
        "decline": {"offer_ids": {"value": "o1"}, "filters": {"refuse_seconds": "60"}}}));
    assert_eq!(
        d,
        CallKind::Decline {
            offer_ids: vec!["o1".into()],
            refuse_seconds: 60.0
        }
    );
    let d = call(json!({"type": "DECLINE", "framework_id": {"value": "f"},
        "decline": {"offer_ids": [{"value": "o1"}], "filters": {"refuse_seconds": 4294967295u64}}}));
    assert_eq!(
        d,
        CallKind::Decline {
            offer_ids: vec!["o1".into()],
            refuse_seconds: MAX_REFUSE_SECONDS
        }
    );
    let d = call(json!({"type": "DECLINE", "framework_id": {"value": "f"},
        "decline": {"offer_ids": [{"value": "o1"}]}}));
    assert_eq!(
        d,
        CallKind::Decline {
            offer_ids: vec!["o1".into()],
            refuse_seconds: 5.0
        }
    );
}

fn ctx<'a>(framework_json: &'a str) -> LaunchContext<'a> {
    LaunchContext {
        framework_id: "fw-1",
        framework_json,
        checkpoint: true,
        offer_agent: Some("agent-1"),
    }
}

#[test]
fn a_command_task_becomes_a_native_command_task_carrying_its_mesos_json() {
    let accept = parse_accept(json!({"offer_ids": [{"value": "o1"}], "operations": [{"type": "LAUNCH",
        "launch": {"task_infos": [
            {"name": "hello", "task_id": {"value": "t1"},
             "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                           {"name": "mem", "type": "SCALAR", "scalar": {"value": "64"}}],
             "command": {"value": "echo hello", "environment": {"variables": [{"name": "A", "value": "1"}]}},
             "labels": {"labels": [{"key": "k", "value": "v"}]}, "data": "cGF5bG9hZA=="},
            {"name": "argv", "task_id": {"value": "t2"}, "slave_id": {"value": "agent-1"},
             "command": {"shell": false, "value": "/bin/echo", "arguments": ["echo", "a", "b"]}}
        ]}}], "filters": {"refuse_seconds": 1}}))
    .unwrap();
    assert_eq!(accept.refuse_seconds, 1.0);
    let fw_json = r#"{"id":{"value":"fw-1"},"name":"n","user":"u"}"#;
    let out = accept.to_native(&ctx(fw_json));
    assert!(out.invalid.is_empty() && out.dropped.is_empty(), "{out:?}");
    let [t1, t2] = &out.tasks[..] else {
        panic!("{out:?}")
    };
    assert_eq!(t1.agent_id.as_str(), "agent-1", "filled from the offer");
    assert_eq!(t1.resources, Resources::new(0.5, 64));
    assert_eq!(t1.data, b"payload");
    let cmd = t1.command.as_ref().unwrap();
    assert!(cmd.shell && cmd.value == "echo hello");
    assert_eq!(cmd.environment.get("A").map(String::as_str), Some("1"));
    let mesos = t1.mesos.as_ref().unwrap();
    let task_json: Value = serde_json::from_str(&mesos.task_json).unwrap();
    assert_eq!(task_json["agent_id"], json!({"value": "agent-1"}));
    assert_eq!(
        task_json["labels"]["labels"][0]["key"], "k",
        "unknown-to-us fields carried"
    );
    assert_eq!(mesos.framework_json, fw_json);
    assert!(mesos.checkpoint);
    assert_eq!((mesos.group, mesos.executor_json.as_ref()), (None, None));
    // shell=false: Mesos's arguments are the whole argv; the native ones leave argv[0] out.
    let argv = t2.command.as_ref().unwrap();
    assert!(!argv.shell);
    assert_eq!(argv.value, "/bin/echo");
    assert_eq!(argv.arguments, vec!["a", "b"]);
}

#[test]
fn custom_executors_and_task_groups() {
    let executor = json!({"executor_id": {"value": "pyexec"}, "name": "py",
        "command": {"value": "python3 my_executor.py"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "shutdown_grace_period": {"nanoseconds": 2000000000u64}});
    let task = |id: &str| {
        json!({"name": id, "task_id": {"value": id}, "agent_id": {"value": "agent-1"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]})
    };
    let mut with_exec = task("w1");
    with_exec["executor"] = executor.clone();
    let mut cmd_task = task("g2");
    cmd_task["command"] = json!({"value": "true"});
    let accept = parse_accept(json!({"offer_ids": [{"value": "o1"}], "operations": [
        {"type": "LAUNCH", "launch": {"task_infos": [with_exec]}},
        {"type": "LAUNCH_GROUP", "launch_group": {"executor": executor,
            "task_group": {"tasks": [task("g0"), task("g1")]}}},
        {"type": "LAUNCH_GROUP", "launch_group": {
            "executor": {"type": "DEFAULT", "executor_id": {"value": "default"}},
            "task_group": {"tasks": [cmd_task]}}},
        {"type": "RESERVE", "id": {"value": "op-1"}, "reserve": {}},
        {"type": "CREATE", "create": {}}
    ]}))
    .unwrap();
    let out = accept.to_native(&ctx("{}"));
    assert!(out.invalid.is_empty(), "{out:?}");
    assert_eq!(
        out.dropped,
        vec![("op-1".to_string(), "RESERVE".to_string())]
    );
    let ids: Vec<&str> = out.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["w1", "g0", "g1", "g2"]);
    for t in &out.tasks[..3] {
        let e = t.executor.as_ref().expect("custom executor");
        assert_eq!(e.executor_id.as_str(), "pyexec");
        assert_eq!(e.command.value, "python3 my_executor.py");
        assert!(t.command.is_none());
        let m = t.mesos.as_ref().unwrap();
        let ej: Value = serde_json::from_str(m.executor_json.as_ref().unwrap()).unwrap();
        assert_eq!(ej["framework_id"], json!({"value": "fw-1"}));
        assert_eq!(ej["executor_id"], json!({"value": "pyexec"}));
        assert_eq!(m.shutdown_grace_ms, 2000);
    }
    assert_eq!(out.tasks[0].mesos.as_ref().unwrap().group, None);
    assert_eq!(out.tasks[1].mesos.as_ref().unwrap().group, Some(0));
    assert_eq!(out.tasks[2].mesos.as_ref().unwrap().group, Some(0));
    // The default executor's group: Bramble runs the task as a command task itself.
    let g2 = &out.tasks[3];
    assert!(g2.executor.is_none() && g2.command.is_some());
    let m = g2.mesos.as_ref().unwrap();
    assert_eq!((m.group, m.executor_json.as_ref()), (Some(1), None));
}

#[test]
fn untranslatable_tasks_are_refused_one_by_one() {
    let accept = parse_accept(
        json!({"offer_ids": [{"value": "o1"}], "operations": [{"type": "LAUNCH",
        "launch": {"task_infos": [
            {"name": "gpu", "task_id": {"value": "t-gpu"}, "command": {"value": "x"},
             "resources": [{"name": "gpus", "type": "SCALAR", "scalar": {"value": 1}}]},
            {"name": "none", "task_id": {"value": "t-none"}},
            {"name": "both", "task_id": {"value": "t-both"}, "command": {"value": "x"},
             "executor": {"executor_id": {"value": "e"}, "command": {"value": "y"}}},
            {"name": "ok", "task_id": {"value": "t-ok"}, "command": {"value": "x"}}
        ]}}]}),
    )
    .unwrap();
    let out = accept.to_native(&ctx("{}"));
    let refused: Vec<&str> = out.invalid.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(refused, ["t-gpu", "t-none", "t-both"]);
    assert!(out.invalid[0].1.contains("GPU"), "{:?}", out.invalid);
    assert_eq!(out.tasks.len(), 1);
}

fn master_info() -> MasterInfo {
    MasterInfo {
        id: "cluster".into(),
        hostname: "pi-master".into(),
        ip: std::net::Ipv4Addr::new(127, 0, 0, 1),
        port: 5050,
    }
}

/// Every event is `{"type": T, "<t>": payload}` (HEARTBEAT alone has none).
fn check_envelope(v: &Value) {
    let t = v["type"].as_str().expect("type");
    let obj = v.as_object().unwrap();
    if t == "HEARTBEAT" {
        assert_eq!(obj.len(), 1, "{v}");
    } else {
        assert_eq!(obj.len(), 2, "{v}");
        assert!(obj.contains_key(&t.to_ascii_lowercase()), "{v}");
    }
}

#[test]
fn events_have_their_type_payload_key_and_proto_nesting() {
    let s = scheduler::subscribed("fw-1", &master_info());
    check_envelope(&s);
    assert_eq!(s["subscribed"]["framework_id"], json!({"value": "fw-1"}));
    assert_eq!(s["subscribed"]["heartbeat_interval_seconds"], json!(15.0));
    let mi = &s["subscribed"]["master_info"];
    assert_eq!(mi["ip"], 16777343, "s_addr of 127.0.0.1");
    assert_eq!(mi["port"], 5050);
    assert_eq!(mi["version"], "1.11.0");
    assert_eq!(mi["pid"], "master@127.0.0.1:5050");
    assert_eq!(
        mi["address"],
        json!({"hostname": "pi-master", "ip": "127.0.0.1", "port": 5050})
    );
    check_envelope(&scheduler::heartbeat());
    let e = scheduler::error("Framework failed over");
    check_envelope(&e);
    assert_eq!(e["error"]["message"], "Framework failed over");

    let offer = Offer {
        id: OfferId::from("o1"),
        framework_id: FrameworkId::from("fw-1"),
        agent_id: AgentId::from("a1"),
        hostname: "pi-1".into(),
        resources: Resources::new(4.0, 3072).with_disk(100),
        attributes: BTreeMap::from([("rack".into(), "r1".into()), ("gen".into(), "4".into())]),
        executor_ids: vec![ExecutorId::from("pyexec")],
    };
    let o = scheduler::from_native(&MasterEvent::Offers(vec![offer])).unwrap();
    check_envelope(&o);
    let first = &o["offers"]["offers"][0];
    assert_eq!(first["id"], json!({"value": "o1"}));
    assert_eq!(first["agent_id"], json!({"value": "a1"}));
    assert_eq!(first["framework_id"], json!({"value": "fw-1"}));
    assert_eq!(first["hostname"], "pi-1");
    assert_eq!(first["executor_ids"], json!([{"value": "pyexec"}]));
    assert_eq!(first["resources"][0]["name"], "cpus");
    assert_eq!(first["resources"][0]["type"], "SCALAR");
    assert_eq!(first["resources"][0]["role"], "*");
    assert_eq!(
        first["resources"][0]["allocation_info"],
        json!({"role": "*"})
    );
    let attrs = first["attributes"].as_array().unwrap();
    assert!(attrs.contains(&json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}})));
    assert!(attrs.contains(&json!({"name": "gen", "type": "SCALAR", "scalar": {"value": 4.0}})));

    let r = scheduler::from_native(&MasterEvent::Rescind {
        offer_id: OfferId::from("o1"),
    })
    .unwrap();
    check_envelope(&r);
    assert_eq!(r["rescind"]["offer_id"], json!({"value": "o1"}));

    let m = scheduler::from_native(&MasterEvent::Message {
        agent_id: AgentId::from("a1"),
        executor_id: ExecutorId::from("e1"),
        data: b"result=42".to_vec(),
    })
    .unwrap();
    check_envelope(&m);
    assert_eq!(m["message"]["data"], "cmVzdWx0PTQy");

    let lost = scheduler::from_native(&MasterEvent::AgentLost {
        agent_id: AgentId::from("a1"),
    })
    .unwrap();
    check_envelope(&lost);
    assert_eq!(lost["failure"], json!({"agent_id": {"value": "a1"}}));
    for status in [Some(9), None] {
        let f = scheduler::from_native(&MasterEvent::ExecutorLost {
            agent_id: AgentId::from("a1"),
            executor_id: ExecutorId::from("e1"),
            status,
        })
        .unwrap();
        assert!(
            f["failure"]["status"].is_i64(),
            "executor_id needs status: {f}"
        );
        assert_eq!(f["failure"]["executor_id"], json!({"value": "e1"}));
    }
    assert!(scheduler::from_native(&MasterEvent::HeartbeatAck).is_none());

    let op = scheduler::operation_error("op-1", Some("a1"), "no");
    check_envelope(&op);
    assert_eq!(
        op["update_operation_status"]["status"]["state"],
        "OPERATION_ERROR"
    );
    let te = scheduler::task_error("t1", "bad");
    check_envelope(&te);
    assert_eq!(te["update"]["status"]["state"], "TASK_ERROR");
    assert!(te["update"]["status"].get("uuid").is_none());
}

#[test]
fn updates_with_a_uuid_name_their_agent_and_executor() {
    let mut s = TaskStatus::new(
        FrameworkId::from("fw-1"),
        TaskId::from("t1"),
        TaskState::Running,
        UpdateSource::Executor,
    );
    s.agent_id = Some(AgentId::from("a1"));
    s.uuid = Some(uuid::Uuid::from_bytes([1; 16]));
    let u = scheduler::from_native(&MasterEvent::Update(s.clone())).unwrap();
    check_envelope(&u);
    let st = &u["update"]["status"];
    assert_eq!(st["state"], "TASK_RUNNING");
    assert_eq!(st["agent_id"], json!({"value": "a1"}));
    assert_eq!(
        st["executor_id"],
        json!({"value": "t1"}),
        "a command task's executor is itself"
    );
    assert_eq!(st["uuid"].as_str().map(str::len), Some(24));
    assert_eq!(st["source"], "SOURCE_EXECUTOR");

    // Master-made answers (reconciliation) carry no uuid and need no ack.
    let rec = TaskStatus::new(
        FrameworkId::from("fw-1"),
        TaskId::from("t9"),
        TaskState::Lost,
        UpdateSource::Master,
    )
    .with_reason(TaskReason::Reconciliation, "task unknown to the master");
    let u = scheduler::update(&rec);
    assert!(u["update"]["status"].get("uuid").is_none());
    assert_eq!(u["update"]["status"]["reason"], "REASON_RECONCILIATION");
    assert_eq!(u["update"]["status"]["source"], "SOURCE_MASTER");

    // A launch on a stale offer is TASK_LOST with REASON_INVALID_OFFERS, as Mesos says it.
    let stale = TaskStatus::new(
        FrameworkId::from("fw-1"),
        TaskId::from("t2"),
        TaskState::Error,
        UpdateSource::Master,
    )
    .with_reason(TaskReason::InvalidOffer, "offer o1 is unknown");
    let u = scheduler::update(&stale);
    assert_eq!(u["update"]["status"]["state"], "TASK_LOST");
    assert_eq!(u["update"]["status"]["reason"], "REASON_INVALID_OFFERS");
}

#[test]
fn events_are_compact_ascii_recordio_records() {
    let mut s = TaskStatus::new(
        FrameworkId::from("fw-1"),
        TaskId::from("π-task"),
        TaskState::Failed,
        UpdateSource::Executor,
    );
    s.message = "line one\nline two ✓".into();
    let v = scheduler::update(&s);
    let bytes = bramble_mesos::json::to_ascii_vec(&v).unwrap();
    assert!(bytes.is_ascii() && !bytes.contains(&b'\n'));
    let framed = recordio::encode(&bytes);
    let prefix = format!("{}\n", bytes.len());
    assert!(framed.starts_with(prefix.as_bytes()));
    assert_eq!(
        &framed[prefix.len()..],
        &bytes[..],
        "nothing after the data"
    );
    let mut d = recordio::Decoder::new(1 << 20);
    let back = d.push(&framed).unwrap();
    let parsed: Value = serde_json::from_slice(&back[0]).unwrap();
    assert_eq!(parsed["update"]["status"]["task_id"]["value"], "π-task");
}
