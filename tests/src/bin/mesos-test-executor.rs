//! A Mesos-style custom executor for tests, speaking the v1 executor HTTP API by hand (raw
//! HTTP/1.1 over `TcpStream`, chunked RecordIO decoded here), as a pymesos executor would:
//! it reads `MESOS_AGENT_ENDPOINT`, `MESOS_FRAMEWORK_ID`, `MESOS_EXECUTOR_ID`, SUBSCRIBEs, and
//! answers events. Each task's `data` (base64 in the LAUNCH's TaskInfo) says what to do:
//! `echo:TEXT` → RUNNING then FINISHED with TEXT as data; `sleep` → RUNNING until KILL.
//! Framework messages are echoed back prefixed with `echo:`. SHUTDOWN → exit 0. When its
//! stream ends it exits, unless `MESOS_CHECKPOINT` is set: then it subscribes again (every
//! 100 ms, for up to 30 s) with the tasks it was given and never saw acknowledged, as a
//! checkpointing pymesos executor does across an agent restart.
//!
//! What it sees is written to its sandbox (its working directory) for the test to check:
//! `env.txt` (its `MESOS_*` environment) and `events.log` (one line per event: the type, and
//! for LAUNCH/ACKNOWLEDGED the task). It exits non-zero on anything a pymesos executor would
//! assert on: a SUBSCRIBED whose ids are not exactly `{"value":..}`, a second LAUNCH of one
//! task, an ACKNOWLEDGED uuid that is not 16 bytes.

use bramble_mesos::recordio::Decoder;
use bramble_mesos::v1::b64;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::exit;

struct Executor {
    endpoint: String,
    framework_id: String,
    executor_id: String,
    launched: HashSet<String>,
    /// TaskInfos given and not yet acknowledged (`unacknowledged_tasks` on re-subscription).
    unacknowledged: Vec<Value>,
    checkpoint: bool,
    log: std::fs::File,
}

fn main() {
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| fail(&format!("{k} is not set")));
    let mut dump: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MESOS_") || k.starts_with("LIBPROCESS_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    dump.sort();
    let _ = std::fs::write("env.txt", dump.join("\n") + "\n");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("events.log")
        .unwrap_or_else(|e| fail(&format!("events.log: {e}")));
    let mut ex = Executor {
        endpoint: env("MESOS_AGENT_ENDPOINT"),
        framework_id: env("MESOS_FRAMEWORK_ID"),
        executor_id: env("MESOS_EXECUTOR_ID"),
        launched: HashSet::new(),
        unacknowledged: Vec::new(),
        checkpoint: std::env::var("MESOS_CHECKPOINT").is_ok_and(|v| !v.is_empty()),
        log,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        ex.run();
        ex.note("STREAM_ENDED");
        if !ex.checkpoint || std::time::Instant::now() > deadline {
            exit(1);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn fail(why: &str) -> ! {
    eprintln!("mesos-test-executor: {why}");
    exit(2)
}

impl Executor {
    fn envelope(&self, kind: &str) -> Value {
        json!({"type": kind, "framework_id": {"value": self.framework_id},
            "executor_id": {"value": self.executor_id}})
    }

    fn note(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    /// One subscription, until its stream ends (or the agent cannot be reached).
    fn run(&mut self) {
        let mut call = self.envelope("SUBSCRIBE");
        call["subscribe"] = json!({"unacknowledged_tasks": self.unacknowledged,
            "unacknowledged_updates": []});
        let Ok(mut stream) = TcpStream::connect(&self.endpoint) else {
            return;
        };
        let body = call.to_string();
        let request = format!(
            "POST /api/v1/executor HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.endpoint,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| fail(&e.to_string()));
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        if status == 503 && self.checkpoint {
            return;
        }
        if status != 200 {
            fail(&format!("SUBSCRIBE answered {status}"));
        }
        if !headers.contains("transfer-encoding: chunked") || headers.contains("mesos-stream-id") {
            fail(&format!(
                "SUBSCRIBE must be chunked without a stream id: {headers}"
            ));
        }
        let mut decoder = Decoder::new(1 << 20);
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let size =
                usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| fail("bad chunk size"));
            if size == 0 {
                return;
            }
            let mut chunk = vec![0u8; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            chunk.truncate(size);
            let records = decoder
                .push(&chunk)
                .unwrap_or_else(|e| fail(&e.to_string()));
            for record in records {
                let event: Value = serde_json::from_slice(&record)
                    .unwrap_or_else(|e| fail(&format!("event is not JSON: {e}")));
                self.on_event(&event);
            }
        }
    }

    fn on_event(&mut self, event: &Value) {
        let kind = event["type"].as_str().unwrap_or("").to_string();
        match kind.as_str() {
            "SUBSCRIBED" => {
                let s = &event["subscribed"];
                if s["executor_info"]["executor_id"] != json!({"value": self.executor_id})
                    || s["framework_info"]["id"] != json!({"value": self.framework_id})
                    || s["agent_info"]["id"]["value"].as_str().is_none()
                {
                    fail(&format!("SUBSCRIBED with the wrong ids: {s}"));
                }
                self.note("SUBSCRIBED");
            }
            "LAUNCH" => self.launch(&event["launch"]["task"]),
            "LAUNCH_GROUP" => {
                for task in event["launch_group"]["task_group"]["tasks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    self.launch(&task);
                }
            }
            "KILL" => {
                let task = event["kill"]["task_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                self.note(&format!("KILL {task}"));
                self.update(&task, "TASK_KILLED", None);
            }
            "ACKNOWLEDGED" => {
                let a = &event["acknowledged"];
                let uuid = b64::decode(a["uuid"].as_str().unwrap_or("")).unwrap_or_default();
                if uuid.len() != 16 {
                    fail(&format!("ACKNOWLEDGED uuid is not 16 bytes: {a}"));
                }
                let task = a["task_id"]["value"].as_str().unwrap_or("").to_string();
                self.unacknowledged
                    .retain(|t| t["task_id"]["value"] != json!(task));
                self.note(&format!("ACKNOWLEDGED {task}"));
            }
            "MESSAGE" => {
                let data = b64::decode(event["message"]["data"].as_str().unwrap_or(""))
                    .unwrap_or_else(|e| fail(&e));
                self.note("MESSAGE");
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&data);
                let mut call = self.envelope("MESSAGE");
                call["message"] = json!({"data": b64::encode(&reply)});
                self.post(&call);
            }
            "SHUTDOWN" => {
                self.note("SHUTDOWN");
                exit(0);
            }
            "HEARTBEAT" => {}
            other => self.note(&format!("UNEXPECTED {other}")),
        }
    }

    fn launch(&mut self, task: &Value) {
        let id = task["task_id"]["value"].as_str().unwrap_or("").to_string();
        if !self.launched.insert(id.clone()) {
            fail(&format!("LAUNCH twice for task {id}"));
        }
        self.note(&format!("LAUNCH {id}"));
        self.unacknowledged.push(task.clone());
        let data = task["data"]
            .as_str()
            .and_then(|d| b64::decode(d).ok())
            .unwrap_or_default();
        let what = String::from_utf8_lossy(&data).to_string();
        self.update(&id, "TASK_RUNNING", None);
        if let Some(text) = what.strip_prefix("echo:") {
            self.update(&id, "TASK_FINISHED", Some(text.as_bytes()));
        }
    }

    fn update(&mut self, task: &str, state: &str, data: Option<&[u8]>) {
        let uuid = uuid_bytes();
        let mut status = json!({"task_id": {"value": task}, "state": state,
            "source": "SOURCE_EXECUTOR", "uuid": b64::encode(&uuid), "timestamp": 1718000100});
        if let Some(d) = data {
            status["data"] = json!(b64::encode(d));
        }
        let mut call = self.envelope("UPDATE");
        call["update"] = json!({"status": status});
        self.post(&call);
    }

    /// One call on a connection of its own; anything but 202 is fatal (as in pymesos).
    fn post(&self, call: &Value) {
        let body = call.to_string();
        let mut stream =
            TcpStream::connect(&self.endpoint).unwrap_or_else(|e| fail(&e.to_string()));
        let request = format!(
            "POST /api/v1/executor HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.endpoint,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| fail(&e.to_string()));
        let mut reader = BufReader::new(stream);
        let (status, _) = read_head(&mut reader);
        if status != 202 {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            fail(&format!("{} answered {status}: {rest}", call["type"]));
        }
    }
}

/// The status code and the lowercased header block of a response.
fn read_head(reader: &mut impl BufRead) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fail(&format!("no status line in {head:?}")));
    (status, head)
}

fn uuid_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}
