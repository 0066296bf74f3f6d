//! Offers and launches between the Mesos and native forms: a native offer as Mesos's `Offer`,
//! and an ACCEPT's operations as native tasks.
//!
//! A Mesos `TaskInfo` becomes a native `TaskInfo` with `mesos: Some(MesosTask)`, which carries
//! the Mesos JSON through to the agent's executor edge untouched (labels, discovery and the
//! like reach a Mesos executor even though Bramble has no use for them). Only LAUNCH and
//! LAUNCH_GROUP are performed; other operations are dropped (reported with
//! UPDATE_OPERATION_STATUS when they carry an id). What cannot be translated (an unknown
//! resource, a malformed command) becomes TASK_ERROR for that task alone.

use crate::http::Refusal;
use crate::v1::resources::{from_mesos, to_mesos as resources_to_mesos, Resource};
use crate::v1::{b64, lenient, DurationInfo, Id};
use bramble_proto::messages::Offer;
use bramble_proto::task::{Artifact, CommandInfo, ExecutorInfo, MesosTask, TaskInfo};
use bramble_proto::{AgentId, ExecutorId, TaskId};
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Mesos's default executor shutdown grace period (`DEFAULT_EXECUTOR_SHUTDOWN_GRACE_PERIOD`).
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 5000;

/// A native offer as Mesos's `Offer` (attributes as TEXT, or SCALAR when numeric).
pub fn to_mesos(o: &Offer) -> Value {
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|(name, value)| match value.parse::<f64>() {
            Ok(n) if n.is_finite() => {
                json!({"name": name, "type": "SCALAR", "scalar": {"value": n}})
            }
            _ => json!({"name": name, "type": "TEXT", "text": {"value": value}}),
        })
        .collect();
    let mut offer = json!({
        "id": {"value": o.id.as_str()},
        "framework_id": {"value": o.framework_id.as_str()},
        "agent_id": {"value": o.agent_id.as_str()},
        "hostname": o.hostname,
        "resources": resources_to_mesos(&o.resources),
        "allocation_info": {"role": crate::v1::resources::DEFAULT_ROLE},
    });
    if !attributes.is_empty() {
        offer["attributes"] = json!(attributes);
    }
    if !o.executor_ids.is_empty() {
        offer["executor_ids"] = json!(o
            .executor_ids
            .iter()
            .map(|e| json!({"value": e.as_str()}))
            .collect::<Vec<_>>());
    }
    offer
}

/// A list that a client may also send as a single object (pymesos does for one offer id).
pub fn one_or_many<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| T::deserialize(v).map_err(D::Error::custom))
            .collect(),
        one => Ok(vec![T::deserialize(one).map_err(D::Error::custom)?]),
    }
}

/// An ACCEPT's body, as read (the tasks are still Mesos JSON until [`Accept::to_native`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Accept {
    pub offer_ids: Vec<String>,
    pub operations: Vec<Operation>,
    pub refuse_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Launch(Vec<Value>),
    LaunchGroup {
        executor: Value,
        tasks: Vec<Value>,
    },
    /// RESERVE, CREATE and the rest: not performed.
    Other {
        kind: String,
        id: Option<String>,
    },
}

#[derive(Deserialize)]
struct RawAccept {
    #[serde(default, deserialize_with = "one_or_many")]
    offer_ids: Vec<Id>,
    #[serde(default, deserialize_with = "one_or_many")]
    operations: Vec<RawOperation>,
    filters: Option<RawFilters>,
}

#[derive(Deserialize)]
struct RawFilters {
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    refuse_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct RawOperation {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<Id>,
    launch: Option<RawLaunch>,
    launch_group: Option<RawLaunchGroup>,
}

#[derive(Deserialize)]
struct RawLaunch {
    #[serde(default, deserialize_with = "one_or_many")]
    task_infos: Vec<Value>,
}

#[derive(Deserialize)]
struct RawLaunchGroup {
    executor: Value,
    task_group: RawTaskGroup,
}

#[derive(Deserialize)]
struct RawTaskGroup {
    #[serde(default)]
    tasks: Vec<Value>,
}

/// Reads ACCEPT's payload; only a structurally broken call is refused (400), everything
/// about the tasks themselves is reported later as updates.
pub fn parse_accept(v: Value) -> Result<Accept, Refusal> {
    let raw: RawAccept = serde_json::from_value(v).map_err(|e| {
        Refusal::bad_request(format!(
            "Failed to convert JSON into Call protobuf: 'accept': {e}"
        ))
    })?;
    let mut operations = Vec::new();
    for op in raw.operations {
        let kind = op
            .kind
            .ok_or_else(|| Refusal::bad_request("Missing required fields: operations.type"))?;
        operations.push(match kind.as_str() {
            "LAUNCH" => Operation::Launch(op.launch.map(|l| l.task_infos).unwrap_or_default()),
            "LAUNCH_GROUP" => {
                let group = op.launch_group.ok_or_else(|| {
                    Refusal::bad_request("Expecting 'launch_group' to be present")
                })?;
                Operation::LaunchGroup {
                    executor: group.executor,
                    tasks: group.task_group.tasks,
                }
            }
            _ => Operation::Other {
                kind,
                id: op.id.map(|id| id.value),
            },
        });
    }
    Ok(Accept {
        offer_ids: raw.offer_ids.into_iter().map(|id| id.value).collect(),
        operations,
        refuse_seconds: crate::scheduler::refuse_seconds(
            raw.filters.and_then(|f| f.refuse_seconds),
        ),
    })
}

/// What the framework is, for the tasks it launches.
#[derive(Debug, Clone)]
pub struct LaunchContext<'a> {
    pub framework_id: &'a str,
    /// The framework's `FrameworkInfo`, compact JSON with its `id`.
    pub framework_json: &'a str,
    pub checkpoint: bool,
    /// The agent of the accepted offers (for tasks that leave `agent_id` out).
    pub offer_agent: Option<&'a str>,
}

/// An ACCEPT as native tasks, and what could not be translated.
#[derive(Debug, Clone, Default)]
pub struct Launches {
    pub tasks: Vec<TaskInfo>,
    /// Tasks refused here: (task id, why), each reported as TASK_ERROR.
    pub invalid: Vec<(String, String)>,
    /// Operations not performed that carried an id: (operation id, type), each reported as
    /// OPERATION_ERROR.
    pub dropped: Vec<(String, String)>,
}

impl Accept {
    pub fn to_native(&self, ctx: &LaunchContext<'_>) -> Launches {
        let mut out = Launches::default();
        let mut group = 0u32;
        for op in &self.operations {
            match op {
                Operation::Launch(tasks) => {
                    for task in tasks {
                        out.push(task_to_native(task, None, None, ctx), task);
                    }
                }
                Operation::LaunchGroup { executor, tasks } => {
                    for task in tasks {
                        out.push(task_to_native(task, Some(executor), Some(group), ctx), task);
                    }
                    group += 1;
                }
                Operation::Other { kind, id } => {
                    if let Some(id) = id {
                        out.dropped.push((id.clone(), kind.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Launches {
    fn push(&mut self, result: Result<TaskInfo, String>, task: &Value) {
        match result {
            Ok(t) => self.tasks.push(t),
            Err(why) => {
                let id = task
                    .pointer("/task_id/value")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.invalid.push((id.to_string(), why));
            }
        }
    }
}

#[derive(Deserialize)]
struct MesosTaskInfo {
    #[serde(default)]
    name: String,
    task_id: Id,
    agent_id: Option<Id>,
    slave_id: Option<Id>,
    #[serde(default)]
    resources: Vec<Resource>,
    command: Option<MesosCommand>,
    executor: Option<Value>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct MesosCommand {
    value: Option<String>,
    shell: Option<bool>,
    #[serde(default)]
    arguments: Vec<String>,
    environment: Option<MesosEnvironment>,
    /// Fetched into the sandbox before the command starts (Mesos's fetcher).
    #[serde(default)]
    uris: Vec<MesosUri>,
}

/// Mesos's `CommandInfo.URI`.
#[derive(Deserialize)]
struct MesosUri {
    value: String,
    executable: Option<bool>,
    extract: Option<bool>,
    cache: Option<bool>,
    output_file: Option<String>,
}

/// Most uris one command may fetch (the master's limit on a task's artifacts).
const MAX_URIS: usize = bramble_proto::artifact::MAX_ARTIFACTS;

/// A command's `uris` as the artifacts the agent fetches; a uri the agent cannot fetch
/// (`file://`, `hdfs://`…) refuses the task, naming it, rather than starting it without it.
fn uris_to_artifacts(uris: Vec<MesosUri>) -> Result<Vec<Artifact>, String> {
    if uris.len() > MAX_URIS {
        return Err(format!("at most {MAX_URIS} uris per command"));
    }
    uris.into_iter()
        .map(|u| {
            let artifact = Artifact {
                uri: u.value,
                executable: u.executable.unwrap_or(false),
                extract: u.extract.unwrap_or(true),
                cache: u.cache.unwrap_or(false),
                sha256: None,
                output_file: u.output_file.filter(|f| !f.is_empty()),
            };
            artifact.check().map_err(|e| match e.field {
                // The message names the uri already.
                "uri" => format!("CommandInfo.uris: {}", e.message),
                field => format!(
                    "CommandInfo.uris {:?}: {field}: {}",
                    artifact.uri, e.message
                ),
            })?;
            Ok(artifact)
        })
        .collect()
}

#[derive(Deserialize)]
struct MesosEnvironment {
    #[serde(default)]
    variables: Vec<MesosVariable>,
}

#[derive(Deserialize)]
struct MesosVariable {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
struct MesosExecutor {
    executor_id: Id,
    name: Option<String>,
    command: Option<MesosCommand>,
    #[serde(default)]
    resources: Vec<Resource>,
    shutdown_grace_period: Option<DurationInfo>,
}

/// A Mesos `CommandInfo` as a native one, and its `uris` as artifacts. With `shell: false`,
/// Mesos's `arguments` is the whole argv, argv[0] included; the native `arguments` leaves
/// argv[0] out.
fn command_to_native(c: MesosCommand) -> Result<(CommandInfo, Vec<Artifact>), String> {
    let artifacts = uris_to_artifacts(c.uris)?;
    let value = c.value.unwrap_or_default();
    let mut environment = BTreeMap::new();
    for var in c.environment.map(|e| e.variables).unwrap_or_default() {
        if var.kind.as_deref().is_some_and(|k| k != "VALUE") {
            return Err(format!(
                "environment variable {:?}: only VALUE variables are supported (no secrets)",
                var.name
            ));
        }
        environment.insert(var.name, var.value.unwrap_or_default());
    }
    let shell = c.shell.unwrap_or(true);
    if value.is_empty() {
        return Err("command has no value".into());
    }
    let arguments = if shell {
        Vec::new()
    } else {
        c.arguments.into_iter().skip(1).collect()
    };
    let command = CommandInfo {
        value,
        shell,
        arguments,
        environment,
    };
    Ok((command, artifacts))
}

/// One Mesos task as a native task. `group_executor` is LAUNCH_GROUP's executor: a DEFAULT
/// one (or one with no command) means Bramble runs each task of the group as a command task,
/// as Mesos's default executor would; a custom one runs the group.
fn task_to_native(
    task: &Value,
    group_executor: Option<&Value>,
    group: Option<u32>,
    ctx: &LaunchContext<'_>,
) -> Result<TaskInfo, String> {
    let t = MesosTaskInfo::deserialize(task).map_err(|e| format!("malformed TaskInfo: {e}"))?;
    let agent_id = t
        .agent_id
        .or(t.slave_id)
        .map(|id| id.value)
        .or_else(|| ctx.offer_agent.map(str::to_string))
        .unwrap_or_default();
    let resources = from_mesos(&t.resources)?;
    let data = match t.data.as_deref() {
        Some(text) => b64::decode(text).map_err(|e| format!("data: {e}"))?,
        None => Vec::new(),
    };
    let executor_json = match (group_executor, &t.executor) {
        (Some(group_exec), _) if !is_default_executor(group_exec) => Some(group_exec.clone()),
        (Some(_), _) => None,
        (None, Some(own)) => Some(own.clone()),
        (None, None) => None,
    };
    // Fetched into the sandbox of the container the task starts: its own (a command task) or
    // its executor's (the executor's uris, when the task starts it), as Mesos's fetcher does.
    let mut artifacts = Vec::new();
    let command = match (&executor_json, t.command, group_executor.is_some()) {
        (Some(_), Some(_), false) => {
            return Err("a task must have exactly one of command and executor, not both".into())
        }
        (Some(_), _, _) => None,
        (None, Some(c), _) => {
            let (command, uris) = command_to_native(c)?;
            artifacts = uris;
            Some(command)
        }
        (None, None, _) => {
            return Err("a task must have exactly one of command and executor".into())
        }
    };
    let (executor, executor_json, shutdown_grace_ms) = match executor_json {
        Some(json_exec) => {
            let e = MesosExecutor::deserialize(&json_exec)
                .map_err(|e| format!("malformed ExecutorInfo: {e}"))?;
            let (command, uris) = command_to_native(
                e.command
                    .ok_or("a custom executor needs a command (ExecutorInfo.command)")?,
            )?;
            artifacts = uris;
            let grace = e
                .shutdown_grace_period
                .map(|d| (d.nanoseconds.max(0) / 1_000_000) as u64)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS);
            let native = ExecutorInfo {
                executor_id: ExecutorId(e.executor_id.value.clone()),
                name: e.name.unwrap_or_else(|| e.executor_id.value.clone()),
                command,
                resources: from_mesos(&e.resources)?,
            };
            let mut with_fw = json_exec;
            with_fw["framework_id"] = json!({ "value": ctx.framework_id });
            (Some(native), Some(to_json(&with_fw)), grace)
        }
        None => (None, None, DEFAULT_SHUTDOWN_GRACE_MS),
    };
    let image = container_image(task)?;
    if image.is_some() && executor.is_some() {
        return Err(
            "a container image is supported for command tasks only, not with a custom executor"
                .into(),
        );
    }
    let mut task_json = task.clone();
    if let Value::Object(map) = &mut task_json {
        map.insert("agent_id".into(), json!({ "value": agent_id }));
    }
    Ok(TaskInfo {
        task_id: TaskId(t.task_id.value),
        name: t.name,
        agent_id: AgentId(agent_id),
        resources,
        command,
        executor,
        data,
        mesos: Some(Box::new(MesosTask {
            task_json: to_json(&task_json),
            group,
            executor_json,
            framework_json: ctx.framework_json.to_string(),
            checkpoint: ctx.checkpoint,
            shutdown_grace_ms,
        })),
        image,
        artifacts,
    })
}

/// The image of a task's `ContainerInfo`: `docker.image` for type DOCKER, `mesos.image`'s
/// docker name (or appc name) for type MESOS; `None` without a container or an image (a
/// MESOS container with no image runs on the agent's filesystem, as in Mesos).
fn container_image(task: &Value) -> Result<Option<String>, String> {
    let Some(container) = task.get("container").filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let kind = container
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("MESOS");
    let name = match kind {
        "DOCKER" => Some(
            container
                .pointer("/docker/image")
                .and_then(Value::as_str)
                .ok_or("a DOCKER container needs docker.image")?,
        ),
        "MESOS" => container.pointer("/mesos/image").and_then(|image| {
            image
                .pointer("/docker/name")
                .or_else(|| image.pointer("/appc/name"))
                .and_then(Value::as_str)
        }),
        other => {
            return Err(format!(
                "container type {other} is not supported (MESOS or DOCKER)"
            ))
        }
    };
    match name {
        Some("") => Err("the container image name is empty".into()),
        other => Ok(other.map(str::to_string)),
    }
}

fn is_default_executor(e: &Value) -> bool {
    e.get("type").and_then(Value::as_str) == Some("DEFAULT") || e.get("command").is_none()
}

fn to_json(v: &Value) -> String {
    crate::json::to_ascii_string(v).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod container_tests {
    use super::container_image;
    use serde_json::json;

    #[test]
    fn docker_and_mesos_containers_name_their_image() {
        let docker = json!({"container": {"type": "DOCKER", "docker": {"image": "busybox"}}});
        assert_eq!(
            container_image(&docker).unwrap().as_deref(),
            Some("busybox")
        );
        let mesos = json!({"container": {"type": "MESOS",
            "mesos": {"image": {"type": "DOCKER", "docker": {"name": "alpine:3"}}}}});
        assert_eq!(
            container_image(&mesos).unwrap().as_deref(),
            Some("alpine:3")
        );
    }

    #[test]
    fn no_container_or_no_image_runs_on_the_host() {
        assert_eq!(container_image(&json!({})).unwrap(), None);
        let bare = json!({"container": {"type": "MESOS"}});
        assert_eq!(container_image(&bare).unwrap(), None);
    }

    #[test]
    fn unusable_containers_say_why() {
        let no_image = json!({"container": {"type": "DOCKER", "docker": {}}});
        assert!(container_image(&no_image)
            .unwrap_err()
            .contains("docker.image"));
        let other = json!({"container": {"type": "APPC"}});
        assert!(container_image(&other)
            .unwrap_err()
            .contains("not supported"));
    }
}

#[cfg(test)]
mod uri_tests {
    use super::*;

    fn ctx() -> LaunchContext<'static> {
        LaunchContext {
            framework_id: "fw",
            framework_json: "{}",
            checkpoint: false,
            offer_agent: Some("a1"),
        }
    }

    #[test]
    fn command_uris_become_artifacts_with_mesos_defaults() {
        let task = json!({
            "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
            "resources": [],
            "command": {"value": "./run.sh", "uris": [
                {"value": "http://10.0.0.1/app.tgz"},
                {"value": "http://10.0.0.1/run.sh", "executable": true, "extract": false,
                 "cache": true, "output_file": "go.sh"}
            ]}
        });
        let native = task_to_native(&task, None, None, &ctx()).expect("valid");
        assert_eq!(native.artifacts.len(), 2);
        let (a, b) = (&native.artifacts[0], &native.artifacts[1]);
        assert!(a.extract && !a.executable && !a.cache && a.output_file.is_none());
        assert!(b.executable && !b.extract && b.cache);
        assert_eq!(b.output_file.as_deref(), Some("go.sh"));
    }

    #[test]
    fn a_uri_the_agent_cannot_fetch_refuses_the_task_naming_it() {
        let task = json!({
            "name": "t", "task_id": {"value": "t1"}, "resources": [],
            "command": {"value": "true", "uris": [{"value": "hdfs://nn/x.jar"}]}
        });
        let e = task_to_native(&task, None, None, &ctx()).expect_err("hdfs");
        assert!(e.contains("hdfs://nn/x.jar"), "{e}");
    }
}
