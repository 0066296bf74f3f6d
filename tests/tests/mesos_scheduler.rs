//! The Mesos v1 scheduler API on a real in-process cluster, driven with a plain HTTP client as
//! pymesos or mesoshttp would: every status code of the contract's table, a command task from
//! offer to acknowledged end, failover by id, a slow reader cut, an oversized body, and HTTP
//! Basic credentials (right, wrong, another principal). Every wait has a deadline.

use bramble_mesos::recordio::Decoder;
use bramble_proto::Resources;
use bramble_tests::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(30);
const PATH: &str = "/api/v1/scheduler";

// ---------------------------------------------------------------------------------------------
// A plain HTTP/1 client

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// One HTTP/1 connection, reusable for several requests (as pymesos keeps its calls' one).
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the master's HTTP port");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        Self { sender, addr }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> hyper::Response<Incoming> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        tokio::time::timeout(DEADLINE, self.sender.send_request(req))
            .await
            .expect("an answer in time")
            .expect("HTTP request")
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let res = self.send(method, path, headers, body).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = tokio::time::timeout(DEADLINE, res.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    Conn::open(addr)
        .await
        .request(method, path, headers, body)
        .await
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// A scheduler's view of one subscription: the stream and what it needs to make calls.
struct Stream {
    body: Incoming,
    decoder: Decoder,
    events: VecDeque<Value>,
    stream_id: String,
    framework_id: String,
    addr: SocketAddr,
    auth: Option<String>,
}

fn basic(principal: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        bramble_mesos::v1::b64::encode(format!("{principal}:{secret}").as_bytes())
    )
}

fn framework_info(name: &str, id: Option<&str>) -> Value {
    let mut info = json!({"user": "pi", "name": name, "failover_timeout": 60,
        "capabilities": [{"type": "GPU_RESOURCES"}]});
    if let Some(id) = id {
        info["id"] = json!({ "value": id });
    }
    info
}

fn subscribe_body(info: &Value) -> String {
    let mut call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
    if let Some(id) = info.get("id") {
        call["framework_id"] = id.clone();
    }
    call.to_string()
}

/// Opens a subscription and returns the response's status and headers and the stream (its
/// first event not yet read).
async fn open(
    addr: SocketAddr,
    info: &Value,
    auth: Option<&str>,
) -> (StatusCode, HeaderMap, Stream) {
    let mut headers = vec![
        JSON,
        ("accept", "application/json"),
        ("connection", "close"),
    ];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let res = Conn::open(addr)
        .await
        .send("POST", PATH, &headers, &subscribe_body(info))
        .await;
    let status = res.status();
    let headers = res.headers().clone();
    let stream_id = headers
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let stream = Stream {
        body: res.into_body(),
        decoder: Decoder::new(1 << 20),
        events: VecDeque::new(),
        stream_id,
        framework_id: String::new(),
        addr,
        auth: auth.map(str::to_string),
    };
    (status, headers, stream)
}

/// Subscribes and reads SUBSCRIBED.
async fn subscribe(addr: SocketAddr, info: &Value, auth: Option<&str>) -> Stream {
    let (status, _, mut s) = open(addr, info, auth).await;
    assert_eq!(status, StatusCode::OK);
    let first = s.next().await.expect("a first event");
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    s.framework_id = first["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("framework id")
        .to_string();
    s
}

impl Stream {
    /// The next event, or `None` when the stream ends (panics past the deadline).
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                .await
                .expect("an event within the deadline");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        for record in self.decoder.push(&data).expect("RecordIO") {
                            assert!(record.is_ascii(), "events are ASCII-only");
                            self.events
                                .push_back(serde_json::from_slice(&record).expect("JSON event"));
                        }
                    }
                }
                _ => return None,
            }
        }
    }

    /// Reads events until one of `kind` satisfies `pred`.
    async fn until(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended while waiting for {kind}"));
            if e["type"] == kind && pred(&e) {
                return e;
            }
        }
    }

    /// Whether the stream ends (after any events still in it) within the deadline.
    async fn ends(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(e) = self.next().await {
            seen.push(e);
        }
        seen
    }

    async fn call(&self, call: Value) -> Reply {
        self.call_with(call, Some(&self.stream_id), self.auth.as_deref())
            .await
    }

    async fn call_with(&self, mut call: Value, stream: Option<&str>, auth: Option<&str>) -> Reply {
        call["framework_id"] = json!({ "value": self.framework_id });
        let mut headers = vec![JSON];
        if let Some(s) = stream {
            headers.push(("mesos-stream-id", s));
        }
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        request(self.addr, "POST", PATH, &headers, &call.to_string()).await
    }
}

async fn cluster(names: &[&str], credentials: Option<&str>) -> (InProcessCluster, SocketAddr) {
    let file = credentials.map(|text| {
        let dir = std::env::temp_dir().join(format!("bramble-mesos-creds-{}", uuid_like()));
        std::fs::create_dir_all(&dir).expect("creds dir");
        let path = dir.join("credentials");
        std::fs::write(&path, text).expect("write credentials");
        path
    });
    let c = InProcessCluster::start(
        |cfg| cfg.mesos.credentials = file,
        names,
        Resources::new(2.0, 512),
        false,
    )
    .await;
    let http = c.master.http_addr.expect("the master serves HTTP");
    (c, http)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

async fn master_state(addr: SocketAddr) -> Value {
    let r = request(addr, "GET", "/master/state", &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    serde_json::from_str(&r.body).expect("state JSON")
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn every_status_code_of_the_contract() {
    let (c, addr) = cluster(&["mesos-a"], None).await;

    // The stream: 200, JSON, chunked, a stream id; SUBSCRIBED then HEARTBEAT at once.
    let info = framework_info("codes", None);
    let (status, headers, mut s) = open(addr, &info, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert!(headers.get("content-length").is_none());
    assert_eq!(s.stream_id.len(), 36, "a uuid");
    let subscribed = s.next().await.expect("SUBSCRIBED");
    assert_eq!(subscribed["type"], "SUBSCRIBED");
    assert_eq!(subscribed["subscribed"]["heartbeat_interval_seconds"], 15.0);
    assert_eq!(subscribed["subscribed"]["master_info"]["version"], "1.11.0");
    s.framework_id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.next().await.expect("HEARTBEAT")["type"], "HEARTBEAT");

    let body = subscribe_body(&info);
    let code = |r: Reply| r.status;
    assert_eq!(
        code(request(addr, "GET", PATH, &[], "").await),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = request(addr, "POST", PATH, &[], &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Content-Type"), "{}", r.body);
    let text = [("content-type", "text/plain")];
    assert_eq!(
        code(request(addr, "POST", PATH, &text, &body).await),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let r = request(addr, "POST", PATH, &[JSON], "{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.body.is_empty(), "a reason in the body");
    let html = [JSON, ("accept", "text/html")];
    assert_eq!(
        code(request(addr, "POST", PATH, &html, &body).await),
        StatusCode::NOT_ACCEPTABLE
    );
    let with_id = [JSON, ("mesos-stream-id", s.stream_id.as_str())];
    assert_eq!(
        code(request(addr, "POST", PATH, &with_id, &body).await),
        StatusCode::BAD_REQUEST
    );

    // Calls: unknown framework 400, missing or stale stream id 400, valid 202.
    let revive = json!({"type": "REVIVE"});
    let mut stranger = json!({"type": "REVIVE", "framework_id": {"value": "nobody"}});
    let r = request(
        addr,
        "POST",
        PATH,
        &[JSON, ("mesos-stream-id", "x")],
        &stranger.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Framework cannot be found"), "{}", r.body);
    assert_eq!(
        s.call_with(revive.clone(), None, None).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        s.call_with(revive.clone(), Some("stale"), None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // A well-formed call is 202 with an empty body and Content-Length: 0, and the connection
    // stays usable (pymesos keeps one).
    let mut conn = Conn::open(addr).await;
    let call = json!({"type": "REVIVE", "framework_id": {"value": s.framework_id}}).to_string();
    let charset = ("content-type", "application/json; charset=utf-8");
    for _ in 0..2 {
        let r = conn
            .request(
                "POST",
                PATH,
                &[charset, ("mesos-stream-id", &s.stream_id)],
                &call,
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(r.headers["content-length"], "0");
        assert!(r.body.is_empty());
    }
    // Calls Bramble ignores are still 202.
    let request_call = json!({"type": "REQUEST", "requests": [{"resources": []}]});
    assert_eq!(s.call(request_call).await.status, StatusCode::ACCEPTED);
    // Validation failures are 400: a bad uuid in ACKNOWLEDGE.
    let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {"agent_id": {"value": "a"},
        "task_id": {"value": "t"}, "uuid": "c2hvcnQ="}});
    assert_eq!(s.call(ack).await.status, StatusCode::BAD_REQUEST);
    // An oversized body is refused by its declared length, before it is read.
    let huge = [JSON, ("content-length", "5000000")];
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: {addr}\r\n{}: {}\r\n{}: {}\r\n\r\n",
        huge[0].0, huge[0].1, huge[1].0, huge[1].1
    );
    raw.write_all(head.as_bytes()).await.expect("write head");
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(DEADLINE, raw.read(&mut answer))
        .await
        .expect("an answer without sending the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Not subscribed: the stream is closed, the framework waits out its failover timeout.
    drop(s.body);
    let fw = s.framework_id.clone();
    stranger["framework_id"] = json!({ "value": fw });
    eventually(
        "the framework to count as disconnected",
        DEADLINE,
        || async {
            let r = request(
                addr,
                "POST",
                PATH,
                &[JSON, ("mesos-stream-id", &s.stream_id)],
                &stranger.to_string(),
            )
            .await;
            (r.status == StatusCode::FORBIDDEN).then_some(())
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_command_task_runs_to_its_end_and_every_update_is_acknowledged() {
    let (c, addr) = cluster(&["mesos-a"], None).await;
    let mut s = subscribe(addr, &framework_info("hello", None), None).await;
    let offers = s.until("OFFERS", |_| true).await;
    let offer = &offers["offers"]["offers"][0];
    assert_eq!(offer["hostname"], "mesos-a");
    // mesoshttp leaves agent_id out and sends slave_id; pymesos sends agent_id. Leave both out:
    // the master fills it from the offer.
    let accept = json!({"type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "hello", "task_id": {"value": "hello-1"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}],
            "command": {"value": "echo hello π"}}]}}],
        "filters": {"refuse_seconds": 4294967295u64}}});
    assert_eq!(s.call(accept).await.status, StatusCode::ACCEPTED);

    // Whatever states the agent reports on the way (TASK_STARTING once the Mesos agent side is
    // in), each update with a uuid names its agent and executor and is acknowledged.
    let mut states = Vec::new();
    loop {
        let u = s.until("UPDATE", |_| true).await;
        let st = &u["update"]["status"];
        assert_eq!(st["task_id"]["value"], "hello-1", "{u}");
        let state = st["state"].as_str().unwrap().to_string();
        if let Some(uuid) = st.get("uuid") {
            assert_eq!(st["agent_id"], offer["agent_id"], "{u}");
            assert!(st["executor_id"]["value"].is_string(), "{u}");
            let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid}});
            assert_eq!(s.call(ack).await.status, StatusCode::ACCEPTED);
        }
        states.push(state.clone());
        if state != "TASK_STARTING" && state != "TASK_RUNNING" && state != "TASK_STAGING" {
            break;
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("TASK_FINISHED"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "TASK_RUNNING"), "{states:?}");

    // Acknowledged: the master forgets it; /master/state shows it completed, and the Mesos
    // framework beside the agent as any framework.
    eventually("the finished task to be forgotten", DEADLINE, || async {
        let state = master_state(addr).await;
        let fw = state["frameworks"]
            .as_array()?
            .iter()
            .find(|f| f["name"] == "hello")?
            .clone();
        let done = fw["completed_tasks"]
            .as_array()?
            .iter()
            .any(|t| t["id"] == "hello-1" && t["state"] == "TASK_FINISHED");
        (done && fw["tasks"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let state = master_state(addr).await;
    assert_eq!(state["version"], "1.11.0");
    assert_eq!(state["slaves"][0]["hostname"], "mesos-a");
    assert!(state["slaves"][0]["resources"]["gpus"].is_number());
    let fw = &state["frameworks"][0];
    assert_eq!(fw["bramble_api"], "mesos-v1");
    assert_eq!(fw["user"], "pi");
    assert_eq!(fw["active"], true);
    assert_eq!(
        fw["id"],
        s.framework_id.as_str(),
        "ids are plain strings here"
    );

    // Reconciliation: implicit (no live tasks, no answers needed) and explicit (unknown → LOST,
    // no uuid, REASON_RECONCILIATION).
    let rec =
        json!({"type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "ghost"}}]}});
    assert_eq!(s.call(rec).await.status, StatusCode::ACCEPTED);
    let u = s
        .until("UPDATE", |u| {
            u["update"]["status"]["task_id"]["value"] == "ghost"
        })
        .await;
    assert_eq!(u["update"]["status"]["state"], "TASK_LOST");
    assert_eq!(u["update"]["status"]["reason"], "REASON_RECONCILIATION");
    assert!(u["update"]["status"].get("uuid").is_none());
    // A KILL of an unknown task is answered with TASK_LOST, never a 4xx.
    let kill = json!({"type": "KILL", "kill": {"task_id": {"value": "nope"}}});
    assert_eq!(s.call(kill).await.status, StatusCode::ACCEPTED);
    s.until("UPDATE", |u| {
        u["update"]["status"]["task_id"]["value"] == "nope"
    })
    .await;

    // The metrics and the summary count it like any framework.
    let m: Value = serde_json::from_str(
        &request(addr, "GET", "/metrics/snapshot", &[], "")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(m["master/frameworks_connected"], 1.0);
    assert_eq!(m["master/slaves_active"], 1.0);
    assert!(m["master/cpus_total"].as_f64().unwrap() >= 2.0);

    // TEARDOWN: the stream ends without an ERROR, and the id stays removed.
    assert_eq!(
        s.call(json!({"type": "TEARDOWN"})).await.status,
        StatusCode::ACCEPTED
    );
    let tail = s.ends().await;
    assert!(tail.iter().all(|e| e["type"] != "ERROR"), "{tail:?}");
    let (status, _, mut again) =
        open(addr, &framework_info("hello", Some(&s.framework_id)), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refusals are 200 + ERROR, never 4xx"
    );
    let e = again.next().await.expect("an ERROR");
    assert_eq!(e["error"]["message"], "Framework has been removed");
    assert!(again.ends().await.is_empty(), "then the stream closes");
    c.shutdown().await;
}

#[tokio::test]
async fn failover_by_id_moves_the_framework_to_a_new_stream() {
    let (c, addr) = cluster(&["mesos-a"], None).await;
    let mut first = subscribe(addr, &framework_info("fo", None), None).await;
    let id = first.framework_id.clone();
    // framework_info.id and framework_id must agree.
    let mut mismatched = json!({"type": "SUBSCRIBE", "framework_id": {"value": "other"},
        "subscribe": {"framework_info": framework_info("fo", Some(&id))}});
    let r = request(addr, "POST", PATH, &[JSON], &mismatched.to_string()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("differs"), "{}", r.body);
    mismatched["framework_id"] = json!({ "value": id });

    let second = subscribe(addr, &framework_info("fo", Some(&id)), None).await;
    assert_eq!(second.framework_id, id, "same framework");
    assert_ne!(second.stream_id, first.stream_id, "a new stream id");
    let e = first.until("ERROR", |_| true).await;
    assert_eq!(e["error"]["message"], "Framework failed over");
    first.ends().await;
    // The old stream id is stale now; the new one works.
    let revive = json!({"type": "REVIVE"});
    assert_eq!(
        first.call(revive.clone()).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(second.call(revive).await.status, StatusCode::ACCEPTED);
    let state = master_state(addr).await;
    assert_eq!(state["frameworks"].as_array().map(Vec::len), Some(1));

    // An id the master never saw (say, after a master restart) is accepted and kept.
    let unknown = subscribe(
        addr,
        &framework_info("new", Some("fw-from-elsewhere")),
        None,
    )
    .await;
    assert_eq!(unknown.framework_id, "fw-from-elsewhere");
    c.shutdown().await;
}

#[tokio::test]
async fn a_slow_reader_is_cut_and_its_framework_fails_over_later() {
    let (c, addr) = cluster(&["mesos-a"], None).await;
    // A raw connection that reads SUBSCRIBED and then stops reading.
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = subscribe_body(&framework_info("slow", None));
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let (stream_id, fw) = loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(DEADLINE, raw.read(&mut buf))
            .await
            .expect("SUBSCRIBED in time")
            .expect("read");
        assert!(n > 0, "stream closed early");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        let id = text.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mesos-stream-id: ")
                .map(|v| v.trim().to_string())
        });
        let fw = text
            .split("\"framework_id\":{\"value\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        if let (Some(id), Some(fw)) = (id, fw) {
            break (id, fw.to_string());
        }
    };
    // Each explicit reconciliation of unknown tasks makes one event per task. Keep asking
    // (the master must stay responsive) until the stream is cut: the framework is then known
    // but not subscribed (403).
    let ids: Vec<Value> = (0..4000)
        .map(|i| json!({"task_id": {"value": format!("ghost-with-a-long-name-{i:05}")}}))
        .collect();
    let call =
        json!({"type": "RECONCILE", "framework_id": {"value": fw}, "reconcile": {"tasks": ids}})
            .to_string();
    let mut conn = Conn::open(addr).await;
    let started = tokio::time::Instant::now();
    loop {
        let r = conn
            .request(
                "POST",
                PATH,
                &[JSON, ("mesos-stream-id", &stream_id)],
                &call,
            )
            .await;
        if r.status == StatusCode::FORBIDDEN || r.status == StatusCode::BAD_REQUEST {
            break;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the stuck stream was never cut"
        );
    }
    // The master still answers everyone, and keeps the framework for its failover timeout.
    let state = master_state(addr).await;
    let f = state["frameworks"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["id"] == fw.as_str()).cloned())
        .expect("the framework stays within its failover timeout");
    assert_eq!(f["connected"], false);
    // It can fail over onto a new stream.
    let back = subscribe(addr, &framework_info("slow", Some(&fw)), None).await;
    assert_eq!(back.framework_id, fw);
    c.shutdown().await;
}

#[tokio::test]
async fn credentials_are_required_and_bind_a_framework_to_its_principal() {
    let creds = r#"{"credentials":[{"principal":"alice","secret":"s1"},{"principal":"bob","secret":"s2"}]}"#;
    let (c, addr) = cluster(&["mesos-a"], Some(creds)).await;
    let alice = basic("alice", "s1");
    let bob = basic("bob", "s2");
    let info = framework_info("alice-fw", None);
    for auth in [
        None,
        Some(basic("alice", "wrong")),
        Some(basic("carol", "s1")),
    ] {
        let (status, headers, _) = open(addr, &info, auth.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
    }
    // /version needs no credentials (pymesos sends none).
    let v = request(addr, "GET", "/version", &[], "").await;
    assert_eq!(v.status, StatusCode::OK);
    let v: Value = serde_json::from_str(&v.body).unwrap();
    assert_eq!(v["version"], "1.11.0");
    assert_eq!(v["bramble_version"], bramble_proto::SOFTWARE_VERSION);

    let s = subscribe(addr, &info, Some(&alice)).await;
    let state = master_state(addr).await;
    assert_eq!(state["frameworks"][0]["principal"], "alice");
    // Bob may neither call for alice's framework nor take it over.
    let revive = json!({"type": "REVIVE"});
    let r = s
        .call_with(revive.clone(), Some(&s.stream_id), Some(&bob))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = s.call_with(revive.clone(), Some(&s.stream_id), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.call(revive.clone()).await.status, StatusCode::ACCEPTED);
    let (status, _, mut stolen) = open(
        addr,
        &framework_info("x", Some(&s.framework_id)),
        Some(&bob),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let e = stolen.next().await.expect("an ERROR");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("alice"),
        "{e}"
    );
    assert!(stolen.ends().await.is_empty());
    assert_eq!(
        s.call(revive.clone()).await.status,
        StatusCode::ACCEPTED,
        "alice keeps her stream"
    );
    // A framework naming a principal other than the one it proved is refused the same way.
    let mut claims = framework_info("claims", None);
    claims["principal"] = json!("alice");
    let (status, _, mut refused) = open(addr, &claims, Some(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refused.next().await.expect("an ERROR")["type"], "ERROR");
    // Alice herself may fail over.
    let back = subscribe(
        addr,
        &framework_info("alice-fw", Some(&s.framework_id)),
        Some(&alice),
    )
    .await;
    assert_eq!(back.framework_id, s.framework_id);
    c.shutdown().await;
}

#[tokio::test]
async fn a_malformed_credentials_file_stops_the_master_naming_file_and_line() {
    let cluster = TestCluster::new();
    let path = cluster.path("mesos-credentials");
    std::fs::write(&path, "alice s1\nbob\n").expect("write");
    let mut cfg = fast_master_config(&cluster);
    cfg.mesos.credentials = Some(path.clone());
    let err = match bramble_master::server::start(
        &cluster.credentials(bramble_proto::identity::Role::Node),
        &cfg,
    )
    .await
    {
        Ok(_) => panic!("a master must not start with a broken credentials file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("mesos-credentials") && err.contains("line 2"),
        "{err}"
    );
}

/// Issue 16: `/master/redirect` must not send a client wherever its request's `Host` says
/// (a cache or a proxy in between would hand that redirect to others).
#[tokio::test]
async fn the_redirect_ignores_a_foreign_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_c, addr) = cluster(&["mesos-a"], None).await;
    for host in ["attacker.test:80", "user@attacker.test", "attacker.test"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req =
            format!("GET /master/redirect HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(DEADLINE, s.read_to_string(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        let location = answer
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("no location in {answer}"));
        assert!(!location.contains("attacker"), "{host}: {location}");
        assert!(
            location.ends_with(&format!(":{}", addr.port())),
            "{location}"
        );
    }
}

#[tokio::test]
async fn read_only_endpoints_answer_in_mesos_shape() {
    let (c, addr) = cluster(&["mesos-a"], None).await;
    let r = request(addr, "GET", "/master/redirect", &[], "").await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers["location"], format!("http://{addr}").as_str());
    assert_eq!(
        request(addr, "GET", "/redirect", &[], "").await.status,
        StatusCode::TEMPORARY_REDIRECT
    );
    let h = request(addr, "GET", "/master/health", &[], "").await;
    assert_eq!((h.status, h.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(
        request(addr, "GET", "/health", &[], "").await.status,
        StatusCode::OK
    );
    let a = master_state(addr).await;
    let b: Value =
        serde_json::from_str(&request(addr, "GET", "/state", &[], "").await.body).unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["activated_slaves"], 1.0);
    let slave = &a["slaves"][0];
    for key in ["cpus", "gpus", "mem", "disk"] {
        assert!(slave["resources"][key].is_number(), "{key}: {slave}");
    }
    assert!(slave["id"].is_string(), "plain string ids");
    let jsonp = request(addr, "GET", "/master/state?jsonp=cb", &[], "").await;
    assert!(
        jsonp.body.starts_with("cb({"),
        "{}",
        &jsonp.body[..20.min(jsonp.body.len())]
    );
    let summary: Value = serde_json::from_str(
        &request(addr, "GET", "/master/state-summary", &[], "")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(summary["slaves"][0]["TASK_RUNNING"], 0);
    let m: Value = serde_json::from_str(
        &request(addr, "GET", "/metrics/snapshot", &[], "")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(m["master/elected"], 1.0);
    assert!(
        m.as_object().unwrap().values().all(Value::is_number),
        "flat name → number"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn command_uris_are_fetched_into_the_sandbox_or_fail_the_task_saying_why() {
    let base = bramble_tests::file_server::serve_files(HashMap::from([(
        "/hello.txt".to_string(),
        b"hello from a uri\n".to_vec(),
    )]));
    let artifacts = std::env::temp_dir().join(format!("bramble-mesos-artifacts-{}", uuid_like()));
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("greet.sh"), "echo greeted\n").expect("greet.sh");
    let dir = artifacts.clone();
    let c = InProcessCluster::start(
        move |cfg| cfg.artifacts_dir = Some(dir),
        &["mesos-fetch"],
        Resources::new(2.0, 512),
        false,
    )
    .await;
    let addr = c.master.http_addr.expect("the master serves HTTP");
    let mut s = subscribe(addr, &framework_info("fetching", None), None).await;
    let offers = s.until("OFFERS", |_| true).await;
    let offer = &offers["offers"]["offers"][0];
    let task = |id: &str, command: Value| {
        json!({"name": id, "task_id": {"value": id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
            "command": command})
    };
    let accept = json!({"type": "ACCEPT", "accept": {
    "offer_ids": [offer["id"]],
    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
        task("fetched", json!({
            "value": "grep -q 'from a uri' hello.txt && test -x greet.sh && ./greet.sh",
            "uris": [{"value": format!("{base}/hello.txt")},
                     {"value": "master:greet.sh", "executable": true}]})),
        task("missing", json!({"value": "true",
            "uris": [{"value": format!("{base}/missing.tgz")}]})),
        task("hdfs", json!({"value": "true", "uris": [{"value": "hdfs://nn/app.jar"}]})),
    ]}}]}});
    assert_eq!(s.call(accept).await.status, StatusCode::ACCEPTED);
    let mut ended = std::collections::BTreeMap::new();
    while ended.len() < 3 {
        let u = s.until("UPDATE", |_| true).await;
        let st = &u["update"]["status"];
        if let Some(uuid) = st.get("uuid") {
            let ack = json!({"type": "ACKNOWLEDGE", "acknowledge": {
                "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid}});
            assert_eq!(s.call(ack).await.status, StatusCode::ACCEPTED);
        }
        let state = st["state"].as_str().unwrap_or_default().to_string();
        if !["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"].contains(&state.as_str()) {
            let id = st["task_id"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let message = st["message"].as_str().unwrap_or_default().to_string();
            ended.insert(id, (state, message));
        }
    }
    assert_eq!(ended["fetched"].0, "TASK_FINISHED", "{ended:?}");
    let (state, message) = &ended["missing"];
    assert_eq!(state, "TASK_FAILED", "{ended:?}");
    assert!(
        message.contains(&format!("fetching {base}/missing.tgz: HTTP 404")),
        "{message}"
    );
    let (state, message) = &ended["hdfs"];
    assert_eq!(state, "TASK_ERROR", "{ended:?}");
    assert!(message.contains("hdfs://nn/app.jar"), "{message}");
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(artifacts);
}
